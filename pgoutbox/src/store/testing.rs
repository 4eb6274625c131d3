//! The test kit's statements: what a transaction published, and whether
//! a worker's operations have settled.

use sqlx::PgConnection;

use super::Store;
use crate::definition::OperationId;
use crate::state::Status;

impl Store {
    /// The (id, payload) of the operations named `name` that the
    /// transaction `conn` is in inserted, in id order.
    pub(crate) async fn published_in_transaction(
        &self,
        conn: &mut PgConnection,
        name: &str,
    ) -> Result<Vec<(OperationId, serde_json::Value)>, sqlx::Error> {
        let rows: Vec<(i64, serde_json::Value)> = query!(self, query_as, published_in_transaction)
            .bind(name)
            .fetch_all(&mut *conn)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, payload)| (OperationId::from_i64(id), payload))
            .collect())
    }

    /// How many operations of `names` (or only `id`) run, and how many
    /// are ready to run, counting retries due within `retry_horizon_ms`.
    pub(crate) async fn busy(
        &self,
        conn: &mut PgConnection,
        names: &[String],
        id: Option<OperationId>,
        retry_horizon_ms: i64,
    ) -> Result<(i64, i64), sqlx::Error> {
        query!(self, query_as, busy)
            .bind(names)
            .bind(id.map(OperationId::as_i64))
            .bind(retry_horizon_ms)
            .fetch_one(&mut *conn)
            .await
    }

    /// How many operations of `names` are in each state.
    pub(crate) async fn count_by_status(
        &self,
        conn: &mut PgConnection,
        names: &[String],
    ) -> Result<Vec<(Status, i64)>, sqlx::Error> {
        query!(self, query_as, count_by_status)
            .bind(names)
            .fetch_all(&mut *conn)
            .await
    }
}
