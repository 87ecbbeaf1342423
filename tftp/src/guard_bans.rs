//! A node's bans as its operator sees them: listed, and lifted one source
//! at a time. An office locked out by a phone with a stale password, or by
//! a forger of its address, should not have to wait out the ban or have
//! the node restarted (which also forgets every known phone source).

use std::net::IpAddr;
use std::time::Duration;

use super::{source_key, Guard};

/// A source banned on this node: an IPv4 address, or an IPv6 /64 (named by
/// its first address), and how long it stays banned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub source: IpAddr,
    pub left: Duration,
}

impl Guard {
    /// This node's bans, the newest first, at most `most` of them, and how
    /// many there are in all.
    pub fn bans(&self, most: usize) -> (Vec<Ban>, usize) {
        let length = self.options.ban;
        let mut bans: Vec<Ban> = self
            .bans
            .iter()
            .map(|(source, began)| Ban {
                source: *source,
                left: length.saturating_sub(began.elapsed()),
            })
            .filter(|ban| !ban.left.is_zero())
            .collect();
        let all = bans.len();
        bans.sort_unstable_by(|a, b| b.left.cmp(&a.left).then(a.source.cmp(&b.source)));
        bans.truncate(most);
        (bans, all)
    }

    /// Lifts this node's ban on `source` (for IPv6, on its /64); the source
    /// then starts with a whole allowance of misses, as the ban had taken
    /// over its debt. False when it was not banned.
    pub fn lift_ban(&self, source: IpAddr) -> bool {
        let source = source_key(source);
        let lifted = self.bans.remove(&source).is_some();
        if lifted {
            // Its refused credential tries end with the ban they belong to:
            // a ban later in the same window starts with none.
            self.failed_while_banned
                .invalidate_entries_if(move |(banned, _), _| *banned == source)
                .ok();
            self.debts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .forget(source);
        }
        lifted
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::super::{Guard, GuardOptions};

    fn guard() -> Guard {
        Guard::new(GuardOptions {
            burst: 2,
            per_minute: 1,
            ..GuardOptions::default()
        })
    }

    fn ban(guard: &Guard, source: &str) {
        let source: IpAddr = source.parse().unwrap();
        for _ in 0..10 {
            if guard.miss(source) {
                return;
            }
        }
        panic!("{source} was never banned");
    }

    #[test]
    fn bans_are_listed_newest_first_and_capped() {
        let guard = guard();
        ban(&guard, "192.0.2.1");
        std::thread::sleep(std::time::Duration::from_millis(20));
        ban(&guard, "2001:db8:1:2::5");
        let (bans, all) = guard.bans(10);
        assert_eq!(all, 2);
        let sources: Vec<String> = bans.iter().map(|b| b.source.to_string()).collect();
        assert_eq!(sources, ["2001:db8:1:2::", "192.0.2.1"]);
        assert!(bans[0].left > bans[1].left);
        assert!(bans[0].left <= GuardOptions::default().ban);
        let (one, all) = guard.bans(1);
        assert_eq!((one.len(), all), (1, 2));
    }

    #[test]
    fn a_lifted_source_is_served_again_with_a_whole_allowance() {
        let guard = guard();
        let office: IpAddr = "198.51.100.7".parse().unwrap();
        ban(&guard, "198.51.100.7");
        assert!(guard.is_banned(office));
        assert!(guard.lift_ban(office));
        assert!(!guard.is_banned(office));
        assert!(!guard.lift_ban(office), "a second lift finds no ban");
        // The burst again, not a ban at the first miss.
        assert!(!guard.miss(office));
        assert!(guard.bans(10).0.is_empty());
    }

    /// A phone whose credentials a banned source failed gets no pass
    /// there for that ban; once it is lifted, a later ban starts clean.
    #[test]
    fn a_lift_forgets_the_credentials_failed_during_its_ban() {
        let guard = guard();
        let office: IpAddr = "198.51.100.7".parse().unwrap();
        let phone = dialtone_sync::Phone {
            id: 1,
            tenant_id: 1,
            mac: "001565aabbcc".parse().unwrap(),
            family: dialtone_sync::Family::Yealink,
            model: None,
            label: None,
            variables: "{}".into(),
            http_user: None,
            http_password: None,
            updated_at: 0,
        };
        let identity = crate::identify::identify("001565aabbcc.cfg", None);
        let passes = |guard: &Guard| guard.lets_through(office, &identity, Some(&phone), |_| true);
        ban(&guard, "198.51.100.7");
        assert!(passes(&guard));
        guard.credentials_failed(office, &phone);
        assert!(!passes(&guard));
        assert!(guard.lift_ban(office));
        ban(&guard, "198.51.100.7");
        assert!(passes(&guard), "the lifted ban's failure carried over");
    }

    #[test]
    fn any_address_of_a_banned_ipv6_network_lifts_its_ban() {
        let guard = guard();
        ban(&guard, "2001:db8:1:2::5");
        assert!(guard.lift_ban("2001:db8:1:2:ffff::1".parse().unwrap()));
        assert!(!guard.is_banned("2001:db8:1:2::5".parse().unwrap()));
    }
}
