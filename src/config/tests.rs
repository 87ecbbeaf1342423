use super::*;

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dialtone.toml");
    std::fs::write(&path, text).unwrap();
    Config::load_from(
        Some(&path),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

#[test]
fn defaults_need_no_file() {
    let c = Config::load_from(None, std::iter::empty()).unwrap();
    assert_eq!(c.database.url, "sqlite://./dialtone.db");
    assert_eq!(c.key_file().unwrap(), PathBuf::from("./dialtone.key"));
    assert_eq!(c.snapshot_path(), PathBuf::from("./dialtone.snapshot"));
}

/// The monitoring listener is one of this node's own: no source a
/// tenant configures may reach it.
#[test]
fn the_monitoring_listener_is_one_of_the_nodes_own() {
    let c = load(
        "[http]\nlisten = \"127.0.0.1:8080\"\n",
        &[("DIALTONE_HTTP__MONITORING_LISTEN", "10.0.0.5:9464")],
    )
    .unwrap();
    let monitoring: SocketAddr = "10.0.0.5:9464".parse().unwrap();
    assert_eq!(c.http.monitoring_listen, Some(monitoring));
    assert!(c.own_listeners().contains(&monitoring));
    let unset = Config::load_from(None, std::iter::empty()).unwrap();
    assert_eq!(unset.http.monitoring_listen, None);
}

/// PostgreSQL reads a lock timeout of 0 as none: the migration would
/// wait, and every query behind it, for as long as the table is busy.
#[test]
fn a_migration_lock_wait_of_zero_is_refused() {
    let err = load("[database]\nmigration_lock_wait_ms = 0\n", &[])
        .and_then(|c| c.validate())
        .unwrap_err()
        .to_string();
    assert!(err.contains("database.migration_lock_wait_ms"), "{err}");
    let c = load("[database]\nmigration_lock_wait_ms = 500\n", &[]).unwrap();
    assert!(c.validate().is_ok());
    assert_eq!(c.database.migration_retry_s, 60);
}

/// "Keep forever" written as the largest number, and other durations
/// past what the clock or a cache can hold, are refused by name, not
/// wrapped (the history cutoff went into the future: every row pruned)
/// and not left to panic at start or at shutdown.
#[test]
fn durations_past_their_bounds_are_refused_by_name() {
    for (section, key, value) in [
        ("mirror", "history_retention_days", "9223372036854775807"),
        ("mirror", "history_retention_days", "0"),
        ("mirror", "audit_retention_days", "0"),
        ("mirror", "audit_retention_days", "36601"),
        ("mirror", "change_log_retention_s", "9223372036854775807"),
        ("provisioning", "ban_s", "40000000000"),
        ("provisioning", "http_header_timeout_s", "0"),
        ("http", "shutdown_grace_s", "9223372036854775807"),
        ("lookup", "max_stale_s", "9223372036854775807"),
        ("mirror", "max_catch_up_rows", "0"),
        ("mirror", "max_catch_up_rows", "-1"),
        ("mirror", "change_log_max_rows", "0"),
        ("http", "shutdown_grace_s", "2001"),
        ("mirror", "history_queue", "0"),
        ("mirror", "history_queue", "2305843009213693952"),
        ("provisioning", "unclaimed_queue", "1000001"),
        ("provisioning", "render_queue", "1000001"),
        ("provisioning", "render_tenant_queue", "1000001"),
        ("provisioning", "render_cache_mb", "65537"),
        ("supervision", "max_restarts", "9223372036854775807"),
        ("provisioning", "tftp_max_transfers", "9223372036854775807"),
        ("provisioning", "http_max_connections", "0"),
        ("provisioning", "render_threads", "1000000"),
        ("lookup", "cache_mb", "17592186044416"),
        ("lookup", "indexed_tenants", "9223372036854775807"),
    ] {
        let err = load(&format!("[{section}]\n{key} = {value}\n"), &[])
            .and_then(|c| c.validate())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("{section}.{key} must be between")),
            "{err}"
        );
    }
    assert!(load("[mirror]\nhistory_retention_days = 3650\n", &[])
        .unwrap()
        .validate()
        .is_ok());
    assert!(Config::default().validate().is_ok());
    for key in ["queue", "tenant_queue"] {
        let err = load(&format!("[resync]\n{key} = 1000001\n"), &[])
            .and_then(|c| c.validate())
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be at most 1000000"), "{err}");
    }
    // A render queue of 0 started before and still does.
    assert!(load(
        "[provisioning]\nrender_queue = 0\nrender_tenant_queue = 0\n",
        &[]
    )
    .unwrap()
    .validate()
    .is_ok());
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let err = load(
        "[database]\nurl = \"sqlite://x.db\"\nmax_conections = 3\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("max_conections"), "{err}");
}

#[test]
fn wrong_type_is_named_with_its_line() {
    let err = load("[http]\n\nlisten = 8080\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 3"), "{err}");
    assert!(
        err.contains("listen") || err.contains("invalid type"),
        "{err}"
    );
}

#[test]
fn tftp_source_limits_are_checked() {
    let err = load(
        "[provisioning]\ntftp_per_source_exempt = [\"10.0.0.0/8\", \"office\"]\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("tftp_per_source_exempt") && err.contains("office"),
        "{err}"
    );
    assert!(load("[provisioning]\ntftp_max_per_source = 0\n", &[]).is_err());
    assert!(load("[provisioning]\ntftp_max_timeout_s = 300\n", &[]).is_err());
    // A window past half the block numbers would take an old ACK for a
    // new one; a block past RFC 2348's largest cannot be negotiated.
    for refused in [
        "tftp_windowsize_limit = 0",
        "tftp_windowsize_limit = 40000",
        "tftp_blksize_limit = 7",
        "tftp_blksize_limit = 65465",
    ] {
        let err = load(&format!("[provisioning]\n{refused}\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("tftp_windowsize_limit"), "{refused}: {err}");
    }
    assert!(load(
        "[provisioning]\ntftp_windowsize_limit = 1024\ntftp_blksize_limit = 65464\n",
        &[]
    )
    .is_ok());
}

#[test]
fn resync_section_reads_from_file_and_environment() {
    let c = load(
        "[resync]\nproxy = \"sip.example.net:5060\"\nt1_ms = 100\n",
        &[("DIALTONE_RESYNC__TENANT_RATE_PER_S", "3")],
    )
    .unwrap();
    assert!(c.resync.enabled());
    assert_eq!((c.resync.t1_ms, c.resync.tenant_rate_per_s), (100, 3));
    assert_eq!(c.resync.sender_host(), "sip.example.net");
    assert!(!Config::default().resync.enabled());
    assert!(load("[resync]\nproxy = \"sip.example.net\"\n", &[]).is_err());
    assert!(load("[resync]\nt1_ms = 500\nt2_ms = 100\n", &[]).is_err());
    assert!(load("[resync]\nfrom_domain = \"a b\"\n", &[]).is_err());
    // A proxy's host that is no SIP host is named as such, not as a
    // from_domain the operator never set; from_domain mends it.
    let refused = load("[resync]\nproxy = \"sip_proxy:5060\"\n", &[]).unwrap_err();
    assert!(
        format!("{refused:#}").contains("\"sip_proxy\""),
        "{refused:#}"
    );
    let named = "[resync]\nproxy = \"sip_proxy:5060\"\nfrom_domain = \"sip.example.net\"\n";
    assert_eq!(
        load(named, &[]).unwrap().resync.sender_host(),
        "sip.example.net"
    );
    assert!(load("[resync]\nphone_spacing_s = 3601\n", &[]).is_err());
    assert_eq!(
        load("[resync]\nphone_spacing_s = 0\n", &[])
            .unwrap()
            .resync
            .phone_spacing_s,
        0
    );
    assert!(load("[resync]\nqueu = 1\n", &[]).is_err());
}

#[test]
fn a_bad_log_filter_is_named() {
    for bad in ["info,dialtone_sync=loud", "dialtone=verbose", "[{x"] {
        let err = load(&format!("[log]\nfilter = {bad:?}\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.filter"), "{bad:?}: {err}");
    }
    let err = load("", &[("DIALTONE_LOG__FILTER", "debug,ldap3=chatty")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("log.filter"), "{err}");
    for good in [
        "info",
        "",
        "warn,dialtone_sync=debug,ldap3=error",
        "dialtone=trace",
    ] {
        let c = load(&format!("[log]\nfilter = {good:?}\n"), &[]).unwrap();
        assert_eq!(c.log.filter, good);
    }
}

#[test]
fn environment_beats_file() {
    let c = load(
        "[database]\nmax_connections = 3\n",
        &[
            ("DIALTONE_DATABASE__MAX_CONNECTIONS", "12"),
            ("DIALTONE_HTTP__LISTEN", "127.0.0.1:9"),
        ],
    )
    .unwrap();
    assert_eq!(c.database.max_connections, 12);
    assert_eq!(c.http.listen.port(), 9);
}

#[test]
fn bad_environment_names_the_variable() {
    let err = load("", &[("DIALTONE_DATABASE__MAX_CONNECTIONS", "lots")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("DIALTONE_DATABASE__MAX_CONNECTIONS"), "{err}");
    let err = load("", &[("DIALTONE_NOPE", "1")]).unwrap_err().to_string();
    assert!(
        err.contains("DIALTONE_NOPE") && err.contains("nope"),
        "{err}"
    );
}

#[test]
fn postgres_requires_a_key_and_masks_it() {
    let err = load("[database]\nurl = \"postgres://u:pw@db/dialtone\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("secrets.key"), "{err}");
    let c = load(
        "[database]\nurl = \"postgres://u:pw@db/dialtone\"\n[secrets]\nkey = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"\n",
        &[],
    )
    .unwrap();
    let shown = c.to_masked_toml();
    assert!(
        !shown.contains("pw@") && !shown.contains("00112233"),
        "{shown}"
    );
    assert!(shown.contains("u:********@db"), "{shown}");
}

/// Wherever the password is (the user part, the query, with an `@` in
/// it), and whatever the scheme, `check-config` and the errors for a
/// database URL never show it.
#[test]
fn database_passwords_are_masked_in_every_form() {
    let key =
        "[secrets]\nkey = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"\n";
    for url in [
        "postgres://u@db/x?password=s3cret",
        // The old masking showed what follows the first `@`.
        "postgres://u:hunter@s3cret@db/x",
        "postgres://u:s3cret@db:99999/x",
    ] {
        let c = load(&format!("[database]\nurl = {url:?}\n{key}"), &[]).unwrap();
        let shown = c.to_masked_toml();
        assert!(
            !shown.contains("s3cret") && shown.contains("********"),
            "{url}: {shown}"
        );
    }
    let err = load("[database]\nurl = \"postgress://u:s3cret@db/x\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("database.url"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

/// Past tokio's semaphore limit the node would panic at start; past a
/// few hundred, mirror work would take the blocking threads name
/// resolution needs.
#[test]
fn mirror_threads_are_bounded_and_zero_means_half_the_cores() {
    let err = load("[lookup]\nmirror_threads = 4611686018427387904\n", &[])
        .and_then(|c| c.validate())
        .unwrap_err()
        .to_string();
    assert!(err.contains("lookup.mirror_threads"), "{err}");
    let auto = Config::default().lookup_options().unwrap();
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(auto.mirror_threads, (cores / 2).max(1));
    let set = load("[lookup]\nmirror_threads = 3\n", &[]).unwrap();
    assert!(set.validate().is_ok());
    assert_eq!(set.lookup_options().unwrap().mirror_threads, 3);
}

/// Every tenant's lookups run under a budget: 0 is no "unlimited".
#[test]
fn a_tenant_lookup_rate_of_zero_is_refused() {
    let refused = |text: &str| {
        load(text, &[])
            .and_then(|c| c.validate())
            .unwrap_err()
            .to_string()
    };
    let err = refused("[lookup]\ntenant_rate = 0\n");
    assert!(
        err.contains("lookup.tenant_rate must be between 1 and 1000000")
            && err.contains("no unlimited"),
        "{err}"
    );
    assert!(refused("[lookup]\ntenant_rate = 1000001\n").contains("lookup.tenant_rate"));
    let err = refused("[lookup]\ntenant_burst = 0\n");
    assert!(
        err.contains("lookup.tenant_burst must be at least 1"),
        "{err}"
    );
    let options = Config::default().lookup_options().unwrap();
    assert_eq!((options.tenant_rate, options.tenant_burst), (200, 2000));
    let set = load("", &[("DIALTONE_LOOKUP__TENANT_RATE", "5")]).unwrap();
    assert!(set.validate().is_ok());
    assert_eq!(set.lookup_options().unwrap().tenant_rate, 5);
}

/// Phones keep the URL they are given to fetch from: a wildcard listen
/// address, or loopback while TFTP or HTTPS listen where phones are, would
/// give them one they cannot reach, so `base_url` must then be set, and
/// when set be a URL of a host.
#[test]
fn phones_are_never_given_a_base_url_they_cannot_reach() {
    for (text, refused) in [
        ("[provisioning]\nhttp_listen = \"0.0.0.0:8081\"\n", true),
        ("[provisioning]\nhttp_listen = \"[::]:8081\"\n", true),
        (
            "[provisioning]\nhttp_listen = \"127.0.0.1:8081\"\ntftp_listen = \"192.0.2.1:69\"\n",
            true,
        ),
        (
            "[provisioning]\nhttp_listen = \"127.0.0.1:8081\"\ntftp_listen = \"127.0.0.2:69\"\n",
            false,
        ),
        ("[provisioning]\nhttp_listen = \"192.0.2.1:8081\"\n", false),
        (
            "[provisioning]\nhttp_listen = \"0.0.0.0:8081\"\nbase_url = \"http://prov.example.net\"\n",
            false,
        ),
        (
            "[provisioning]\nhttp_listen = \"0.0.0.0:8081\"\nbase_url = \"http://0.0.0.0:8081\"\n",
            true,
        ),
        ("[provisioning]\nbase_url = \"prov.example.net\"\n", true),
        ("[provisioning]\nbase_url = \"ftp://prov.example.net\"\n", true),
        (
            "[provisioning]\nbase_url = \"https://prov.example.net/p?x=1\"\n",
            true,
        ),
        (
            "[provisioning]\nbase_url = \"https://prov.example.net/phones/\"\n",
            false,
        ),
        // Loopback, named or not, while phones reach this node elsewhere.
        (
            "[provisioning]\ntftp_listen = \"192.0.2.1:69\"\nbase_url = \"http://127.0.0.1:8081\"\n",
            true,
        ),
        (
            "[provisioning]\ntftp_listen = \"192.0.2.1:69\"\nbase_url = \"http://localhost:8081\"\n",
            true,
        ),
        ("[provisioning]\nbase_url = \"http://127.0.0.1:8081\"\n", false),
        // A link-local listener's zone makes no URL.
        ("[provisioning]\nhttp_listen = \"[fe80::1%2]:8081\"\n", true),
        // Port 0 is a port chosen at bind, no port phones can be told.
        ("[provisioning]\nhttp_listen = \"127.0.0.1:0\"\n", true),
        ("[provisioning]\nbase_url = \"http://prov.example.net:0\"\n", true),
        (
            "[provisioning]\nhttp_listen = \"127.0.0.1:0\"\nbase_url = \"http://prov.example.net\"\n",
            false,
        ),
    ] {
        let checked = load(text, &[]).and_then(|c| c.check_base_url());
        match (refused, checked) {
            (true, Err(e)) => assert!(e.to_string().contains("base_url"), "{text}: {e}"),
            (false, Ok(())) => {}
            (_, result) => panic!("{text}: {result:?}"),
        }
    }
}

/// An IPv4-mapped address is judged as its IPv4 address: a mapped
/// loopback or wildcard `http_listen` passed where `127.0.0.1` and
/// `0.0.0.0` were refused, and phones were told to fetch from it.
#[test]
fn a_mapped_address_is_judged_as_its_ipv4_address() {
    let elsewhere = "tftp_listen = \"192.0.2.1:69\"\n";
    for (text, refused) in [
        (
            format!("[provisioning]\n{elsewhere}http_listen = \"[::ffff:127.0.0.1]:18091\"\n"),
            true,
        ),
        (
            "[provisioning]\nhttp_listen = \"[::ffff:0.0.0.0]:18091\"\n".to_string(),
            true,
        ),
        (
            format!("[provisioning]\n{elsewhere}base_url = \"http://[::ffff:127.0.0.1]:18091\"\n"),
            true,
        ),
        (
            "[provisioning]\nbase_url = \"http://[::ffff:0.0.0.0]:18091\"\n".to_string(),
            true,
        ),
        // A mapped loopback listener is not where phones reach this node.
        (
            "[provisioning]\nhttp_listen = \"127.0.0.1:18091\"\ntftp_listen = \"[::ffff:127.0.0.2]:69\"\n"
                .to_string(),
            false,
        ),
    ] {
        let checked = load(&text, &[]).and_then(|c| c.check_base_url());
        match (refused, checked) {
            (true, Err(e)) => assert!(e.to_string().contains("base_url"), "{text}: {e}"),
            (false, Ok(())) => {}
            (_, result) => panic!("{text}: {result:?}"),
        }
    }
}

#[test]
fn resync_in_flight_past_its_bound_is_refused() {
    let err = load("[resync]\nmax_inflight = 9223372036854775807\n", &[])
        .and_then(|c| c.validate())
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_inflight"), "{err}");
}

/// The command line's listeners count: a flag opening TFTP to the network
/// while the file keeps HTTP on loopback is refused without `base_url`,
/// and a file's wildcard that a flag replaces with a real address is not.
#[test]
fn base_url_is_checked_with_the_command_lines_listeners() {
    let mut opened = load("[provisioning]\nhttp_listen = \"127.0.0.1:8081\"\n", &[]).unwrap();
    Overrides {
        tftp_listen: Some(Some("0.0.0.0:69".parse().unwrap())),
        ..Overrides::default()
    }
    .apply(&mut opened);
    let err = opened.check_base_url().unwrap_err().to_string();
    assert!(err.contains("base_url"), "{err}");
    let mut narrowed = load("[provisioning]\nhttp_listen = \"0.0.0.0:8081\"\n", &[]).unwrap();
    Overrides {
        provisioning_listen: Some("192.0.2.1:8081".parse().unwrap()),
        ..Overrides::default()
    }
    .apply(&mut narrowed);
    narrowed.check_base_url().unwrap();
}

/// TOML has no null and a key left out takes its default: "off" is how
/// TFTP is turned off, in the file, the environment and on the command
/// line, and `check-config` shows it so.
#[test]
fn tftp_is_turned_off_by_off() {
    let off = load("[provisioning]\ntftp_listen = \"off\"\n", &[]).unwrap();
    assert_eq!(off.provisioning.tftp_listen, None);
    assert!(off.to_masked_toml().contains("tftp_listen = \"off\""));
    let env = load("", &[("DIALTONE_PROVISIONING__TFTP_LISTEN", "OFF")]).unwrap();
    assert_eq!(env.provisioning.tftp_listen, None);
    let left_out = load("[provisioning]\n", &[]).unwrap();
    assert!(left_out.provisioning.tftp_listen.is_some());
    let err = format!(
        "{:#}",
        load("[provisioning]\ntftp_listen = \"\"\n", &[]).unwrap_err()
    );
    assert!(err.contains("\"off\""), "{err}");
    let mut on = left_out;
    Overrides {
        tftp_listen: Some("off".parse::<listen_or_off::Listen>().unwrap().0),
        ..Overrides::default()
    }
    .apply(&mut on);
    assert_eq!(on.provisioning.tftp_listen, None);
}

/// Two of the node's own listeners on one address: `serve`'s second bind
/// said "Address already in use", as if another program held the port.
#[test]
fn two_listeners_on_one_address_are_refused_by_both_keys() {
    for (text, keys) in [
        (
            "[http]\nlisten = \"127.0.0.1:8081\"\n",
            Some(("http.listen", "provisioning.http_listen")),
        ),
        (
            "[http]\nmonitoring_listen = \"127.0.0.1:8080\"\n",
            Some(("http.listen", "http.monitoring_listen")),
        ),
        (
            "[http]\nlisten = \"0.0.0.0:8081\"\n",
            Some(("http.listen", "provisioning.http_listen")),
        ),
        // `[::]` is bound dual-stack, and a mapped address is IPv4.
        (
            "[http]\nlisten = \"[::]:8081\"\n",
            Some(("http.listen", "provisioning.http_listen")),
        ),
        (
            "[http]\nlisten = \"[::ffff:127.0.0.1]:8081\"\n",
            Some(("http.listen", "provisioning.http_listen")),
        ),
        (
            "[resync]\nproxy = \"sip.example.net:5060\"\nlisten = \"0.0.0.0:6969\"\n",
            Some(("provisioning.tftp_listen", "resync.listen")),
        ),
        // Not bound while resync is off.
        ("[resync]\nlisten = \"127.0.0.1:6969\"\n", None),
        // TCP and UDP ports are apart.
        ("[http]\nlisten = \"127.0.0.1:6969\"\n", None),
        // A fresh port each.
        (
            "[http]\nlisten = \"127.0.0.1:0\"\nmonitoring_listen = \"127.0.0.1:0\"\n",
            None,
        ),
        ("[http]\nlisten = \"[::1]:8081\"\n", None),
        ("[http]\nlisten = \"127.0.0.2:8081\"\n", None),
    ] {
        match (keys, load(text, &[])) {
            (Some((first, second)), Err(e)) => {
                let e = e.to_string();
                assert!(e.contains(first) && e.contains(second), "{text}: {e}");
            }
            (None, Ok(_)) => {}
            (_, result) => panic!("{text}: {:?}", result.map(|_| ())),
        }
    }
    let mut config = Config::default();
    config.provisioning.https_listen = Some(config.http.listen);
    config.provisioning.tls_cert = Some("c.pem".into());
    config.provisioning.tls_key = Some("k.pem".into());
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("provisioning.https_listen"), "{err}");
}

/// `key` wins, which nothing said; warned of, not refused, so that a node
/// running with both starts after an upgrade.
#[test]
fn a_key_and_a_key_file_together_are_warned_of() {
    let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let both = load(
        "[secrets]\nkey_file = \"/etc/dialtone/key\"\n",
        &[("DIALTONE_SECRETS__KEY", key)],
    )
    .unwrap();
    let warnings = both.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("secrets.key and secrets.key_file")),
        "{warnings:?}"
    );
    let file_only = load("[secrets]\nkey_file = \"/etc/dialtone/key\"\n", &[]).unwrap();
    assert!(file_only.warnings().is_empty());
}

/// Certificate files with no HTTPS listener to use them are accepted,
/// and said to be unused.
#[test]
fn tls_files_without_an_https_listener_are_warned_of() {
    let unused = load(
        "[provisioning]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
        &[],
    )
    .unwrap();
    let warnings = unused.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("https_listen"), "{warnings:?}");
    assert!(Config::default().warnings().is_empty());
}

/// Below 100 ms no connection opens in time; a node configured so is
/// raised and warned of rather than refused, so that it starts after an
/// upgrade.
#[test]
fn an_acquire_timeout_too_short_is_raised_and_warned_of() {
    let short = load("[database]\nacquire_timeout_ms = 0\n", &[]).unwrap();
    assert_eq!(
        short.database.acquire_timeout(),
        std::time::Duration::from_millis(100)
    );
    let warnings = short.warnings();
    assert!(
        warnings.iter().any(|w| w.contains("acquire_timeout_ms")),
        "{warnings:?}"
    );
    assert_eq!(
        Config::default().database.acquire_timeout(),
        std::time::Duration::from_secs(3)
    );
}

#[test]
fn host_names_are_dns_names_or_wildcards() {
    let c = load(
        "[provisioning]\nhost_names = [\"legacy-prov.example.net\", \"*.prov.example.net\"]\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.provisioning.host_names.len(), 2);
    assert!(load("[provisioning]\nhost_names = [\"*\"]\n", &[]).is_ok());
    for bad in [
        "",
        "prov example",
        "*.",
        "prov.example.net:8081",
        "a*.example.net",
    ] {
        let err = load(&format!("[provisioning]\nhost_names = [{bad:?}]\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("provisioning.host_names"), "{bad}: {err}");
    }
}

/// An IPv4 octet with a leading zero is read as decimal here and as octal
/// by inet_aton-style tools: every network list refuses it by name, as
/// `check-config` and `serve` load it.
#[test]
fn a_leading_zero_octet_in_a_network_list_is_refused() {
    for (section, key, network) in [
        ("resync", "direct_networks", "010.0.0.0/8"),
        ("lookup", "source_networks", "127.0.0.010/32"),
        ("provisioning", "tftp_per_source_exempt", "192.168.01.0/24"),
        ("provisioning", "http_per_source_exempt", "::ffff:010.0.0.1"),
    ] {
        let err = load(
            &format!("[{section}]\n{key} = [\"10.0.0.0/8\", \"{network}\"]\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&format!("{section}.{key}"))
                && err.contains(network)
                && err.contains("leading zero"),
            "{key}: {err}"
        );
        load(&format!("[{section}]\n{key} = [\"10.0.0.0/8\"]\n"), &[]).unwrap();
    }
}

/// A file valid only with the command line's settings over it is not
/// refused for what they replace: its listener clashed with the default
/// provisioning one that `--provisioning-listen` moves.
#[test]
fn a_file_is_validated_with_the_command_lines_settings_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dialtone.toml");
    let clashing = Config::default().provisioning.http_listen;
    std::fs::write(&path, format!("[http]\nlisten = \"{clashing}\"\n")).unwrap();
    assert!(Config::load_from(Some(&path), std::iter::empty()).is_err());
    let mut config = Config::load(Some(&path)).unwrap();
    Overrides {
        provisioning_listen: Some("127.0.0.1:9000".parse().unwrap()),
        ..Overrides::default()
    }
    .apply(&mut config);
    config.validate().unwrap();
}
