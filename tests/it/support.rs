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

/// A fresh database with pgoutbox's storage.
pub(crate) async fn test_db() -> TestDatabase {
    TestDatabase::new().await.expect("test database")
}

/// Runs a `SELECT count(*) …`.
pub(crate) async fn count(db: &TestDatabase, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(db.pool())
        .await
        .expect(sql)
}
