//! Requests dropped before their render ended: what their decision already
//! knew they cost is still charged.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::Context;

use dialtone_sync::Dataset;

use crate::guard::GuardOptions;
use crate::provision::{Protocol, ProvisionOptions, Provisioner, Request};
use crate::templates::Shipped;

/// Renders for models nobody here has (each name a new render) cost a miss
/// each; a client that hangs up before each render ends pays the same and
/// is banned past the burst, like one that waits for its answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_render_dropped_midway_still_costs_its_miss() {
    const BURST: u32 = 3;
    let mirror = dialtone_sync::testing::build::mirror_of(Dataset::default());
    let provisioner = Arc::new(Provisioner::new(
        mirror,
        dialtone_sync::testing::test_key(),
        Shipped::built_in(1),
        ProvisionOptions {
            guard: GuardOptions {
                burst: BURST,
                per_minute: 1,
                ..GuardOptions::default()
            },
            ..ProvisionOptions::default()
        },
    ));
    let source: IpAddr = "192.0.2.77".parse().unwrap();
    let waker = futures::task::noop_waker();
    let mut dropped = 0;
    for n in 0..=BURST {
        // Cisco SPA model-common names: any model, no phone of it here.
        let path = format!("spa{n}x9.cfg");
        let request = Request {
            path: &path,
            protocol: Protocol::Http,
            remote: Some(source),
            ..Default::default()
        };
        let mut fetch = Box::pin(provisioner.provision_async(&request));
        if fetch
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
        {
            dropped += 1;
        }
        drop(fetch);
    }
    assert!(dropped > 0, "every render ended within its first poll");
    assert!(
        provisioner.guard().is_banned(source),
        "{} misses ({dropped} of them dropped mid-render) left the source unbanned",
        BURST + 1
    );
}
