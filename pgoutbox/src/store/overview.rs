//! The dashboard's reads: the pace of the last hour, the work in flight,
//! the in-doubt queue and a bounded view of a workflow. Each reads through
//! an index, so its cost follows what it shows, not the table's size.

use sqlx::PgConnection;
use uuid::Uuid;

use super::Store;
use super::admin::FromPgRow;
use crate::definition::OperationId;
use crate::state::Status;

impl Store {
    /// Attempt ends per minute over the last `minutes` minutes.
    pub(crate) async fn throughput<R: FromPgRow>(
        &self,
        conn: &mut PgConnection,
        minutes: i32,
    ) -> Result<Vec<R>, sqlx::Error> {
        query!(self, query_as::<R>, throughput)
            .bind(minutes)
            .fetch_all(&mut *conn)
            .await
    }

    /// Exact counts of the unfinished, stalled and dead operations.
    pub(crate) async fn active_counts(
        &self,
        conn: &mut PgConnection,
    ) -> Result<Vec<(Status, String, i64)>, sqlx::Error> {
        query!(self, query_as, active_counts)
            .fetch_all(&mut *conn)
            .await
    }

    /// Estimated counts of the finished states, from the statistics.
    pub(crate) async fn estimated_counts(
        &self,
        conn: &mut PgConnection,
    ) -> Result<Vec<(Status, i64)>, sqlx::Error> {
        query!(self, query_as, estimated_counts)
            .fetch_all(&mut *conn)
            .await
    }

    /// Exact counts of the finished states, if there are at most `limit`
    /// finished operations (`None` otherwise); reads at most `limit + 1`
    /// rows.
    pub(crate) async fn finished_counts(
        &self,
        conn: &mut PgConnection,
        limit: i64,
    ) -> Result<Option<Vec<(Status, i64)>>, sqlx::Error> {
        let rows: Vec<(Status, i64, bool)> = query!(self, query_as, finished_counts)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?;
        Ok(rows
            .iter()
            .all(|(_, _, exact)| *exact)
            .then(|| rows.into_iter().map(|(s, n, _)| (s, n)).collect()))
    }

    /// Running operations per lease owner.
    pub(crate) async fn in_flight(
        &self,
        conn: &mut PgConnection,
    ) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
        query!(self, query_as, in_flight)
            .fetch_all(&mut *conn)
            .await
    }

    /// Up to `limit` stalled operations with ids above `after`, oldest
    /// first, with their last attempt.
    pub(crate) async fn stalled<R: FromPgRow>(
        &self,
        conn: &mut PgConnection,
        after: i64,
        limit: i64,
    ) -> Result<Vec<R>, sqlx::Error> {
        query!(self, query_as::<R>, stalled)
            .bind(after)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await
    }

    /// How many operations are stalled.
    pub(crate) async fn stalled_count(&self, conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
        query!(self, query_scalar, stalled_count)
            .fetch_one(&mut *conn)
            .await
    }

    /// Up to `limit` operations of the workflow rooted at `root`.
    pub(crate) async fn workflow_page<R: FromPgRow>(
        &self,
        conn: &mut PgConnection,
        root: OperationId,
        limit: i64,
    ) -> Result<Vec<R>, sqlx::Error> {
        query!(self, query_as::<R>, workflow_page)
            .bind(root.as_i64())
            .bind(limit)
            .fetch_all(&mut *conn)
            .await
    }
}
