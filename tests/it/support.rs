//! Helpers shared by the test modules.

use pgoutbox::testing::TestDatabase;

/// A fresh, empty database (no pgoutbox schema yet).
pub(crate) async fn empty_db() -> TestDatabase {
    TestDatabase::empty().await.expect("test database")
}

/// The names of the tables in `schema`.
pub(crate) async fn tables(db: &TestDatabase, schema: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(db.pool())
    .await
    .expect("list tables")
}
