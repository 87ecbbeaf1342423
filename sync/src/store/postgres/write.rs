//! A write: `Store::apply_with_progress` on one pool connection, its
//! COMMIT sent by `commit.rs`.

use super::bulk_read::{self, SecondReader};
use super::closing::ClosedUnlessReleased;
use super::{commit, latest_known, sql, PgStore};
use crate::error::SyncError;
use crate::store::rekey::KEY_CHECK_NOW_HELD;
use crate::store::{Audit, Ending, Mutation, Progress, WriteReport};

/// One try of [`Store::apply_with_progress`](crate::store::Store::apply_with_progress).
pub(super) async fn apply(
    store: &PgStore,
    mutations: &[Mutation],
    audit: &Audit,
    progress: Option<Progress>,
    ending: Ending,
) -> Result<WriteReport, SyncError> {
    let mut conn = ClosedUnlessReleased::acquire(&store.pool).await?;
    let written = async {
        let mut tx = conn.begin().await?;
        sql::check_once(&mut tx, &store.key, latest_known(), &store.key_checked).await?;
        let writes_before = if SecondReader::wanted(mutations) {
            Some(bulk_read::writes_counted(&mut tx).await?.0)
        } else {
            None
        };
        let second = SecondReader {
            connect: store.connect.clone(),
            timeout: store.connect_timeout,
            writes_before,
        };
        let report = sql::apply_all(
            &mut tx, &store.key, &second, mutations, audit, progress, ending,
        )
        .await?;
        // Last, with every lock the write takes held (`rekey.rs` says
        // why this cannot deadlock with a re-key).
        sql::confirm_key_unchanged(&mut tx, &store.key, KEY_CHECK_NOW_HELD).await?;
        let lost = match ending {
            Ending::Commit => commit::send(tx).await?,
            Ending::RollBack => {
                tx.rollback().await?;
                None
            }
        };
        Ok((report, lost))
    }
    .await;
    commit::finish(&store.pool, conn, written).await
}
