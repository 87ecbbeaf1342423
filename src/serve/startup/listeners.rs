//! The sockets `serve` listens on, and the open-file limit they need.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use dialtone_tftp::tftp::TftpOptions;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;

/// Every TFTP transfer and HTTP connection is an open file, and a boot
/// storm needs thousands; the usual soft limit is 1024. Raise it to the
/// hard limit (as Go and nginx do), and say so when even that is short.
pub(in crate::serve) fn raise_open_file_limit(config: &Config) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    let (Some(current), maximum) = (limit.current, limit.maximum) else {
        return; // unlimited
    };
    let target = maximum.unwrap_or(u64::MAX).min(1 << 20);
    let mut effective = current;
    if target > current {
        let raised = rustix::process::Rlimit {
            current: Some(target),
            maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => effective = target,
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
        }
    }
    let needed = open_files_needed(config);
    if effective < needed {
        tracing::warn!(
            limit = effective,
            needed,
            "open-file limit below what provisioning.tftp_max_transfers and the HTTP listeners' \
             connection caps need; raise LimitNOFILE"
        );
    }
}

/// Descriptors the node may hold at once: every TFTP transfer (its socket,
/// and a static file's own while it sends one: `tftp/src/tftp/read_ahead.rs`),
/// every HTTP listener's connections (a provisioning download may stream a static
/// file, one more descriptor each) and refusals, and 1024 for the rest
/// (database pool, LDAP, logs).
fn open_files_needed(config: &Config) -> u64 {
    use crate::http_server::{descriptors_needed, HttpServerOptions};
    let p = &config.provisioning;
    let api = HttpServerOptions::default().max_connections;
    let monitoring = config
        .http
        .monitoring_listen
        .map_or(0, |_| descriptors_needed(api, 0));
    let provisioning = descriptors_needed(p.http_max_connections, 1);
    let https = p.https_listen.map_or(0, |_| provisioning);
    let per_transfer = if p.static_dir.is_some() { 2 } else { 1 };
    p.tftp_max_transfers as u64 * per_transfer
        + descriptors_needed(api, 0)
        + monitoring
        + provisioning
        + https
        + 1024
}

/// Every socket `serve` listens on, bound.
pub(in crate::serve) struct Sockets {
    pub api: TcpListener,
    pub monitoring: Option<TcpListener>,
    pub provisioning: TcpListener,
    pub https: Option<(TcpListener, TlsAcceptor, Arc<crate::http_server::TlsFiles>)>,
    pub tftp: Option<dialtone_tftp::tftp::Bound>,
    pub tftp_options: TftpOptions,
}

impl Sockets {
    pub async fn bind(config: &Config) -> Result<Sockets> {
        let api = bind_tcp(config.http.listen, "http.listen").await?;
        let monitoring = match config.http.monitoring_listen {
            Some(addr) => Some(bind_tcp(addr, "http.monitoring_listen").await?),
            None => None,
        };
        let provisioning =
            bind_tcp(config.provisioning.http_listen, "provisioning.http_listen").await?;
        let p = &config.provisioning;
        let tftp_options = TftpOptions {
            max_transfers: p.tftp_max_transfers,
            blksize_limit: p.tftp_blksize_limit,
            windowsize_limit: p.tftp_windowsize_limit,
            timeout: Duration::from_millis(p.tftp_timeout_ms),
            max_send_retries: p.tftp_max_send_retries,
            max_timeout: Duration::from_secs(p.tftp_max_timeout_s.into()),
            stall: Duration::from_secs(p.tftp_stall_s),
            min_rate: p.tftp_min_rate,
            min_rate_slack: Duration::from_secs(p.tftp_min_rate_slack_s),
            max_per_source: p.tftp_max_per_source,
            max_unacked_per_source: p.tftp_max_unacked_per_source,
            // Checked by Config::validate.
            per_source_exempt: dialtone_tftp::tftp::parse_networks(&p.tftp_per_source_exempt)
                .unwrap_or_default(),
            shutdown_grace: Duration::from_secs(config.http.shutdown_grace_s),
            single_port: p.tftp_single_port,
            listeners: p.tftp_listeners,
            ..Default::default()
        };
        let tftp = match p.tftp_listen {
            Some(addr) => Some(dialtone_tftp::tftp::bind(addr, &tftp_options).with_context(
                || format!("cannot listen on {addr}/udp (provisioning.tftp_listen)"),
            )?),
            None => None,
        };
        let https = match (p.https_listen, &p.tls_cert, &p.tls_key) {
            (Some(addr), Some(cert), Some(key)) => {
                let (tls, files) = crate::http_server::tls_acceptor(cert, key).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot use the TLS certificate {} with key {} (provisioning.tls_cert/tls_key): {e}",
                        cert.display(),
                        key.display()
                    )
                })?;
                Some((
                    bind_tcp(addr, "provisioning.https_listen").await?,
                    tls,
                    files,
                ))
            }
            _ => None,
        };
        Ok(Sockets {
            api,
            monitoring,
            provisioning,
            https,
            tftp,
            tftp_options,
        })
    }
}

/// Binds a TCP listener, dual-stack on `[::]`; the error names the config
/// key, and for a privileged port the capability that is missing.
async fn bind_tcp(addr: SocketAddr, key: &str) -> Result<TcpListener> {
    let listener = dialtone_tftp::dual_stack::listen_tcp(addr).and_then(TcpListener::from_std);
    listener.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied && addr.port() < 1024 {
            format!(
                ": port {} is privileged: run with CAP_NET_BIND_SERVICE \
                 (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE) or use a port above 1023",
                addr.port()
            )
        } else {
            String::new()
        };
        anyhow::anyhow!("cannot listen on {addr} ({key}): {e}{hint}")
    })
}

#[cfg(test)]
mod open_file_tests {
    use super::*;

    /// Every HTTP listener's cap counts, not only TFTP's: at the defaults
    /// the API and provisioning listeners alone hold 12,288 descriptors.
    #[test]
    fn the_open_file_need_counts_every_listeners_connections() {
        let mut config = Config::default();
        let tftp = config.provisioning.tftp_max_transfers as u64;
        let base = open_files_needed(&config);
        assert!(base >= tftp + 1024 + 4096 + 2 * 4096, "{base}");
        config.provisioning.https_listen = Some("127.0.0.1:8443".parse().unwrap());
        config.http.monitoring_listen = Some("127.0.0.1:9100".parse().unwrap());
        let with_all = open_files_needed(&config);
        assert!(with_all >= base + 2 * 4096 + 4096, "{with_all}");
        // A static file's transfer holds the file open besides its socket.
        config.provisioning.static_dir = Some("/srv/firmware".into());
        assert_eq!(open_files_needed(&config), with_all + tftp);
    }
}

#[cfg(test)]
mod listener_tests {
    /// `[::]` serves IPv4 clients too whatever the host's
    /// `net.ipv6.bindv6only`: read back, not left to the host, where at 1
    /// every IPv4 phone was shut out.
    #[tokio::test]
    async fn an_ipv6_wildcard_listener_is_dual_stack() {
        let listener = super::bind_tcp("[::]:0".parse().unwrap(), "http.listen")
            .await
            .unwrap_or_else(|e| panic!("is IPv6 available on this machine (`ip -6 addr`)? {e:#}"));
        assert!(!socket2::SockRef::from(&listener).only_v6().unwrap());
    }
}
