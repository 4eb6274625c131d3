//! The statements of operators' bulk actions: count and page through the
//! rows a filter selects (ids and a few columns, never payloads), and act
//! on one row only when, under its row lock, it still matches the whole
//! filter. And the operator's purge of `dead` and `stalled` operations,
//! recorded.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::Store;
use crate::definition::OperationId;
use crate::state::Status;

/// A bulk action's filter; `statuses` is never empty (the caller puts in
/// the action's own states when the operator named none).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BulkFilter<'a> {
    pub(crate) statuses: &'a [Status],
    pub(crate) name: Option<&'a str>,
    pub(crate) queue: Option<&'a str>,
    pub(crate) since_ms: Option<i64>,
    /// Text the last error contains, in any case.
    pub(crate) error_text: Option<&'a str>,
    /// The root of the workflow (the root itself included).
    pub(crate) root: Option<i64>,
}

/// One target as the bulk statements list it: (id, name, status, queue,
/// published at).
pub(crate) type TargetRow = (i64, String, Status, String, DateTime<Utc>);

/// What one step found: `None` for a row that is gone, else (status read
/// under the lock, still matches the filter, applied / the new operation).
pub(crate) type Step<T> = Option<(Status, bool, T)>;

impl Store {
    /// How many rows match `filter`, and the highest id among them.
    pub(crate) async fn bulk_count(
        &self,
        conn: &mut PgConnection,
        filter: BulkFilter<'_>,
    ) -> Result<(i64, Option<i64>), sqlx::Error> {
        query!(self, query_as, bulk_count)
            .bind(filter.statuses)
            .bind(filter.name)
            .bind(filter.queue)
            .bind(filter.since_ms)
            .bind(filter.error_text)
            .bind(filter.root)
            .fetch_one(&mut *conn)
            .await
    }

    /// Up to `limit` rows matching `filter` with ids in `(after, upto]`,
    /// in id order.
    pub(crate) async fn bulk_targets(
        &self,
        conn: &mut PgConnection,
        filter: BulkFilter<'_>,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<TargetRow>, sqlx::Error> {
        query!(self, query_as, bulk_targets)
            .bind(filter.statuses)
            .bind(filter.name)
            .bind(filter.queue)
            .bind(filter.since_ms)
            .bind(after)
            .bind(upto)
            .bind(limit)
            .bind(filter.error_text)
            .bind(filter.root)
            .fetch_all(&mut *conn)
            .await
    }

    /// Retry, cancel or resolve operation `id` if it still matches
    /// `filter` and its state is in `allowed`; recorded only when applied.
    #[allow(clippy::too_many_arguments)] // One bind per column.
    pub(crate) async fn bulk_transition(
        &self,
        conn: &mut PgConnection,
        id: OperationId,
        action: &str,
        actor: &str,
        reason: &str,
        allowed: &[Status],
        to: Status,
        filter: BulkFilter<'_>,
    ) -> Result<Step<bool>, sqlx::Error> {
        query!(self, query_as, bulk_transition)
            .bind(id.as_i64())
            .bind(action)
            .bind(actor)
            .bind(reason)
            .bind(allowed)
            .bind(to)
            .bind(filter.statuses)
            .bind(filter.name)
            .bind(filter.queue)
            .bind(filter.since_ms)
            .bind(filter.error_text)
            .bind(filter.root)
            .fetch_optional(&mut *conn)
            .await
    }

    /// Replay operation `id` if it still matches `filter` and its state is
    /// in `allowed`; recorded only when applied.
    pub(crate) async fn bulk_replay(
        &self,
        conn: &mut PgConnection,
        id: OperationId,
        actor: &str,
        reason: &str,
        allowed: &[Status],
        filter: BulkFilter<'_>,
    ) -> Result<Step<Option<OperationId>>, sqlx::Error> {
        let row: Option<(Status, bool, Option<i64>)> = query!(self, query_as, bulk_replay)
            .bind(id.as_i64())
            .bind("replay")
            .bind(actor)
            .bind(reason)
            .bind(allowed)
            .bind(filter.statuses)
            .bind(filter.name)
            .bind(filter.queue)
            .bind(filter.since_ms)
            .bind(filter.error_text)
            .bind(filter.root)
            .fetch_optional(&mut *conn)
            .await?;
        Ok(row.map(|(status, matches, new)| (status, matches, new.map(OperationId::from_i64))))
    }

    /// Deletes one batch of old operations in `statuses`, recording a
    /// `purge` action for each deleted `dead` or `stalled` one; returns how
    /// many operations were deleted.
    pub(crate) async fn purge_recorded(
        &self,
        conn: &mut PgConnection,
        statuses: &[Status],
        older_than_ms: i64,
        batch: i64,
        actor: &str,
        reason: &str,
    ) -> Result<i64, sqlx::Error> {
        self.pinned(conn, async |conn| {
            query!(self, query_scalar, purge_recorded)
                .bind(statuses)
                .bind(older_than_ms)
                .bind(batch)
                .bind(actor)
                .bind(reason)
                .fetch_one(conn)
                .await
        })
        .await
    }
}
