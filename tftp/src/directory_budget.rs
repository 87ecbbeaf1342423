//! What a phone directory the render cache will not keep costs its source.
//!
//! Such a build (a search, a page from `CACHED_PAGES` on) reads, lowercases
//! and sorts the tenant's whole directory on the render pool, under the
//! tenant's share, and anyone who knows one of its phones' MACs can ask for
//! a new one each request: free, a single source filled the tenant's slots
//! and queue, and its phones' own renders waited or were refused.
//!
//! So each costs its source [`BUILDS_PER_MISS`]-th of a miss from the same
//! allowance as any other miss, charged before the build is queued (a
//! thousand at once are charged as they come, not once they end), and a
//! banned source gets none, even for a phone known there (it still gets
//! the directory's kept pages and unsearched file).
//!
//! A fraction, not a whole miss: a person paging a large directory or
//! searching it asks for many in a row, often from an office whose phones
//! share one address. With the default allowance (30 misses at once, then
//! 10 a minute) a source may build 120 at once, then 40 a minute: a page
//! every two seconds never runs out, a page a second lasts six minutes
//! (past page 370, some 12,000 rows), while a flood is banned within seconds
//! like any scan. Sources known for the phone pay too: fetching a phone's
//! own file without credentials is all it takes to be known. Nor is there
//! a cache of recent searches: each new term would still be a build, and
//! the entries would be whatever the busiest asker chose.

use crate::error::ProvisionError;
use crate::phonebook::DirectoryJob;
use crate::provision::{Protocol, Provisioner, Request};

/// Directory builds the render cache does not keep that cost one miss.
pub(crate) const BUILDS_PER_MISS: u32 = 4;

impl Provisioner {
    /// Charges `request`'s source for `job` unless the render cache keeps
    /// it; refused when the source is banned, or this charge banned it.
    pub(crate) fn charge_directory_build(
        &self,
        request: &Request<'_>,
        job: &DirectoryJob,
        banned: bool,
    ) -> Result<(), ProvisionError> {
        let Some(ip) = request.remote else {
            return Ok(());
        };
        if job.kept() || request.protocol == Protocol::Render {
            return Ok(());
        }
        if banned
            || self
                .guard()
                .part_of_a_miss(ip, BUILDS_PER_MISS, request.protocol.via())
        {
            return Err(ProvisionError::Banned);
        }
        metrics::counter!("dialtone_directory_uncached_builds_total").increment(1);
        Ok(())
    }
}

#[cfg(test)]
#[path = "directory_budget_tests.rs"]
mod tests;
