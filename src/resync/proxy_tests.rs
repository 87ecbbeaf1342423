use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::FutureExt;
use tokio::sync::Semaphore;

use super::*;

/// A resolver that answers `answer` once the test opens `gate`, counting
/// the lookups asked of it.
fn gated(answer: SocketAddr) -> (Lookup, Arc<Semaphore>, Arc<AtomicUsize>) {
    let gate = Arc::new(Semaphore::new(0));
    let asked = Arc::new(AtomicUsize::new(0));
    let (g, a) = (gate.clone(), asked.clone());
    let lookup: Lookup = Arc::new(move |_| {
        a.fetch_add(1, Ordering::SeqCst);
        let gate = g.clone();
        Box::pin(async move {
            gate.acquire().await.unwrap().forget();
            Ok(vec![answer])
        })
    });
    (lookup, gate, asked)
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn make_stale(proxy: &ProxyAddress, found: Vec<SocketAddr>) {
    let mut held = lock(&proxy.shared.held);
    held.found = found;
    held.until = Some(Instant::now() - Duration::from_secs(1));
}

#[tokio::test]
async fn an_address_resolves_and_is_held() {
    let proxy = ProxyAddress::new("127.0.0.1:5060");
    let first = proxy.addresses().await;
    assert_eq!(first, vec![addr("127.0.0.1:5060")]);
    assert!(lock(&proxy.shared.held).until.is_some());
    assert_eq!(proxy.addresses().await, first);
}

#[tokio::test]
async fn a_failed_resolution_keeps_the_last_good_answer() {
    let proxy = ProxyAddress::new("a name without a port");
    assert!(proxy.addresses().await.is_empty());
    let good = addr("127.0.0.5:5060");
    make_stale(&proxy, vec![good]);
    assert_eq!(proxy.addresses().await, vec![good]);
    // The refresh runs in the background; its end releases the turn.
    drop(proxy.shared.resolving.lock().await);
    assert_eq!(proxy.addresses().await, vec![good]);
    assert!(lock(&proxy.shared.held).until.unwrap() <= Instant::now() + RETRY);
}

/// With an answer held, a stale one is refreshed behind the NOTIFYs'
/// backs: each goes at once, to the last good answer, and one lookup runs.
#[tokio::test]
async fn a_slow_lookup_does_not_hold_up_notifies() {
    let (old, new) = (addr("192.0.2.1:5060"), addr("192.0.2.2:5060"));
    let (lookup, gate, asked) = gated(new);
    let proxy = ProxyAddress::with_lookup("proxy:5060", lookup);
    make_stale(&proxy, vec![old]);
    for _ in 0..3 {
        let now = proxy.addresses().now_or_never();
        assert_eq!(now, Some(vec![old]), "a NOTIFY waited for the lookup");
        tokio::task::yield_now().await;
    }
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    gate.add_permits(1);
    drop(proxy.shared.resolving.lock().await);
    assert_eq!(proxy.addresses().now_or_never(), Some(vec![new]));
}

/// Before the first answer there is nothing to send to: NOTIFYs wait for
/// the one lookup, and all get its answer.
#[tokio::test]
async fn the_first_answer_is_waited_for_once() {
    let found = addr("192.0.2.3:5060");
    let (lookup, gate, asked) = gated(found);
    let proxy = ProxyAddress::with_lookup("proxy:5060", lookup);
    let (a, b, _) = tokio::join!(proxy.addresses(), proxy.addresses(), async {
        tokio::task::yield_now().await;
        gate.add_permits(1);
    });
    assert_eq!((a, b), (vec![found], vec![found]));
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}

/// NOTIFYs stay on one address until one sent there goes unanswered,
/// then move to the next; more silence from the one left is no reason to
/// move again.
#[test]
fn an_unanswered_address_hands_over_to_the_next() {
    let proxy = ProxyAddress::new("proxy:5060");
    let set = [addr("192.0.2.1:5060"), addr("192.0.2.2:5060")];
    let silence = RefCell::new(HashMap::<SocketAddr, u64>::new());
    let pick = || proxy.pick(&set, |a| silence.borrow().get(&a).copied().unwrap_or(0));
    let fail = |a: SocketAddr| *silence.borrow_mut().entry(a).or_default() += 1;
    assert_eq!(pick(), Some(set[0]));
    assert_eq!(pick(), Some(set[0]));
    fail(set[0]);
    assert_eq!(pick(), Some(set[1]));
    fail(set[0]);
    assert_eq!(pick(), Some(set[1]));
    fail(set[1]);
    assert_eq!(pick(), Some(set[0]));
    assert_eq!(pick(), Some(set[0]));
    // An address that left the set: the first of the new set.
    assert_eq!(proxy.pick(&set[1..], |_| 0), Some(set[1]));
    assert_eq!(proxy.pick(&[], |_| 0), None);
}
