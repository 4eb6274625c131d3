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

/// Settings for a system on `db`: small pools, leases and polls under a
/// second, so that tests stay fast.
pub(crate) fn settings(db: &TestDatabase) -> pgoutbox::Settings {
    let mut settings = pgoutbox::Settings::default();
    settings.database.url = Some(db.url());
    settings.database.pool_max = 8;
    settings.workflow_system.n_workers = 4;
    settings.workflow_system.poll_interval = std::time::Duration::from_millis(200);
    settings.workflow_system.lease = std::time::Duration::from_secs(1);
    settings.workflow_system.shutdown_wait = std::time::Duration::from_secs(2);
    settings.workflow_system.backoff_initial = std::time::Duration::from_millis(50);
    settings.workflow_system.backoff_max = std::time::Duration::from_millis(100);
    settings
}

/// Waits until `sql` (a `SELECT count(*)`) returns `expected`, or fails the
/// test after `within`.
pub(crate) async fn wait_for_count(
    db: &TestDatabase,
    sql: &'static str,
    expected: i64,
    within: std::time::Duration,
) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let n = count(db, sql).await;
        if n == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after {within:?}: `{sql}` is {n}, expected {expected}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// Publishes `payload` in its own transaction.
pub(crate) async fn publish_one<O: pgoutbox::Operation>(
    db: &TestDatabase,
    payload: O,
) -> pgoutbox::OperationId {
    let mut tx = db.pool().begin().await.unwrap();
    let id = pgoutbox::publish(&mut tx, payload).await.unwrap();
    tx.commit().await.unwrap();
    id
}

/// The status of operation `id`.
pub(crate) async fn status(db: &TestDatabase, id: pgoutbox::OperationId) -> String {
    sqlx::query_scalar("SELECT status FROM pgoutbox.operations WHERE id = $1")
        .bind(id.as_i64())
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// The status of operation `id` once it is neither waiting nor ready nor
/// running, within `within`.
pub(crate) async fn settled(
    db: &TestDatabase,
    id: pgoutbox::OperationId,
    within: std::time::Duration,
) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let s = status(db, id).await;
        if !matches!(s.as_str(), "waiting" | "pending" | "running" | "retrying") {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "{id:?} still {s}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// The outcomes of operation `id`'s attempts, in order.
pub(crate) async fn outcomes(db: &TestDatabase, id: pgoutbox::OperationId) -> Vec<Option<String>> {
    sqlx::query_scalar("SELECT outcome FROM pgoutbox.attempts WHERE operation_id = $1 ORDER BY id")
        .bind(id.as_i64())
        .fetch_all(db.pool())
        .await
        .unwrap()
}

/// How a test's system and publishers reach PostgreSQL: straight, or
/// through pgbouncer in transaction pooling mode. The test itself always
/// counts rows on a direct connection (`db`).
pub(crate) struct Setup {
    /// The test's database.
    pub(crate) db: TestDatabase,
    /// What the test publishes with.
    pool: sqlx::PgPool,
    bouncer: Option<crate::pgbouncer::Pgbouncer>,
}

impl Setup {
    /// Everything straight to PostgreSQL.
    pub(crate) async fn direct() -> Setup {
        let db = test_db().await;
        Setup {
            pool: db.pool().clone(),
            db,
            bouncer: None,
        }
    }

    /// The system and the publishers through a pgbouncer of the test's own
    /// (transaction pooling); LISTEN on a direct connection.
    pub(crate) async fn through_pgbouncer() -> Setup {
        let db = test_db().await;
        let bouncer = crate::pgbouncer::Pgbouncer::start().await;
        let mut setup = Setup {
            pool: db.pool().clone(),
            db,
            bouncer: Some(bouncer),
        };
        setup.pool = setup.settings().pool().expect("settings through pgbouncer");
        setup
    }

    /// [`settings`] for this setup: behind pgbouncer, `database.url` is
    /// pgbouncer's, `database.listen_url` PostgreSQL's, and
    /// `database.prepared_statements` is off.
    pub(crate) fn settings(&self) -> pgoutbox::Settings {
        let mut settings = settings(&self.db);
        if let Some(bouncer) = &self.bouncer {
            settings.database.url = Some(bouncer.url(self.db.name()));
            settings.database.listen_url = Some(self.db.url());
            settings.database.prepared_statements = false;
        }
        settings
    }

    /// The pool the test publishes with: the database's, or one through
    /// pgbouncer built from [`Setup::settings`].
    pub(crate) fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }

    /// A publisher for [`Setup::settings`] (unnamed statements behind
    /// pgbouncer).
    pub(crate) fn publisher(&self) -> pgoutbox::Publisher {
        pgoutbox::Publisher::from_settings(&self.settings()).expect("valid settings")
    }

    /// Publishes `payload` in its own transaction, through this setup.
    pub(crate) async fn publish_one<O: pgoutbox::Operation>(
        &self,
        payload: O,
    ) -> pgoutbox::OperationId {
        let mut tx = self.pool.begin().await.unwrap();
        let id = self.publisher().publish(&mut tx, payload).await.unwrap();
        tx.commit().await.unwrap();
        id
    }
}

/// The soak factor: `PGOUTBOX_SOAK=<n>` multiplies the fault tests' kills,
/// restarts and operations by `n` (and their time limits with them); unset,
/// they run their short variant (factor 1).
pub(crate) fn soak() -> u32 {
    std::env::var("PGOUTBOX_SOAK")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1)
}
