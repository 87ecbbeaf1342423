//! The addresses this node's interfaces hold, which a source under
//! `public` may never reach: read from the system, and read again once
//! the last read is a few seconds old.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use super::canonical;

/// How long the node's interface addresses are trusted before read again:
/// an address added to an interface becomes the node's within this.
const INTERFACES_REREAD: Duration = Duration::from_secs(5);

struct InterfaceCache {
    /// `None` until a read succeeds.
    addresses: Option<Arc<[IpAddr]>>,
    read_at: Option<Instant>,
    failure_logged: bool,
}

static INTERFACES: LazyLock<Mutex<InterfaceCache>> = LazyLock::new(|| {
    Mutex::new(InterfaceCache {
        addresses: None,
        read_at: None,
        failure_logged: false,
    })
});

/// The addresses the node's interfaces hold, read again once the last
/// read is [`INTERFACES_REREAD`] old, outside the lock (the first read
/// under it, so no caller finds the list missing while it is made). A
/// failed read keeps the last list, logged once: the list barely changes,
/// and sources connect often. `None` until a read has succeeded: the
/// caller then takes every address for the node's own.
pub(super) fn interface_addresses() -> Option<Arc<[IpAddr]>> {
    let lock = || INTERFACES.lock().unwrap_or_else(|e| e.into_inner());
    let mut cache = lock();
    if cache
        .read_at
        .is_some_and(|at| at.elapsed() < INTERFACES_REREAD)
    {
        return cache.addresses.clone();
    }
    cache.read_at = Some(Instant::now());
    let first = cache.addresses.is_none();
    let read = if first {
        read_interfaces()
    } else {
        // Others use the list read before meanwhile.
        drop(cache);
        let read = read_interfaces();
        cache = lock();
        read
    };
    match read {
        Ok(addresses) => cache.addresses = Some(addresses),
        Err(e) if !cache.failure_logged => {
            cache.failure_logged = true;
            tracing::error!(error = %e, "cannot read this node's interface addresses; sources are checked against the last ones read (none read yet: no public address is allowed)");
        }
        Err(_) => {}
    }
    cache.addresses.clone()
}

fn read_interfaces() -> Result<Arc<[IpAddr]>, nix::Error> {
    Ok(nix::ifaddrs::getifaddrs()?
        .filter_map(|i| i.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| canonical(v6.ip().into())))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read from the system: loopback is an interface's address too.
    #[test]
    fn the_nodes_interface_addresses_are_read() {
        let addresses = interface_addresses().expect("the interfaces are read");
        assert!(
            addresses.contains(&IpAddr::from([127, 0, 0, 1])),
            "{addresses:?}"
        );
    }
}
