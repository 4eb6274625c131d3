//! Test support: a PostgreSQL that starts itself, a fresh database for
//! every test, and a kit for testing an application's operations.
//!
//! The kit:
//! - [`published`] and [`assert_published!`](crate::assert_published): what
//!   the transaction under test published, typed;
//! - [`Harness::run_inline`]: one operation through a real worker, with
//!   everything recorded about it returned;
//! - [`Harness::run_until_idle`]: a worker run until nothing it handles is
//!   running or ready, follow-ups included;
//! - [`wait_until_finished`]: for a system the program started itself,
//!   a wait until its operations have finished, later ones included;
//! - [`Harness::crash_at`]: the worker vanishes before the external call,
//!   after it, or before the commit, so a test can see the in-doubt path
//!   (`lost` attempt, then `stalled` or retried) end to end.
//!
//! Enabled by the `testing` feature. When `DATABASE_URL` is set, that server
//! is used. Otherwise the local PostgreSQL installation (`initdb` and
//! `pg_ctl` on `PATH`, or Debian's `/usr/lib/postgresql/<version>/bin`) is
//! started as a private throwaway cluster under `/tmp`: trust
//! authentication, a free loopback port, `fsync=off`, server output in a log
//! file, run as the `postgres` user when the tests run as root. All test
//! binaries of one `cargo test` share that cluster, and it stops by itself a
//! few seconds after the last of them exits.
//!
//! Each [`TestDatabase`] is a new database cloned from a template that has
//! pgoutbox's migrations applied, so tests never see each other's rows and
//! need no clean-up between them.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let db = pgoutbox::testing::TestDatabase::new().await?;
//! let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pgoutbox.operations")
//!     .fetch_one(db.pool())
//!     .await?;
//! assert_eq!(n, 0);
//! # Ok(())
//! # }
//! ```

mod cluster;
mod kit;
mod shared;

pub use crate::assert_published;
pub use cluster::{Cluster, ShutdownMode};
pub use kit::{CrashPoint, Harness, Idle, KitError, published, published_in, wait_until_finished};

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions as _, Connection as _, PgConnection, PgPool};
use tokio::sync::OnceCell;

use pgoutbox_migrate::Identifier;

/// Why a test database could not be had.
///
/// ```
/// use pgoutbox::testing::TestDbError;
///
/// let err = TestDbError::NoPostgres("no `initdb` on PATH".into());
/// assert_eq!(
///     err.to_string(),
///     "no `initdb` on PATH: install PostgreSQL (`apt-get install postgresql`) or set DATABASE_URL to a server to use"
/// );
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestDbError {
    /// No PostgreSQL to start and no `DATABASE_URL`.
    #[error(
        "{0}: install PostgreSQL (`apt-get install postgresql`) or set DATABASE_URL to a server to use"
    )]
    NoPostgres(String),
    /// The private cluster could not be set up or started.
    #[error("test cluster: {0}")]
    Cluster(String),
    /// `DATABASE_URL` is not a valid PostgreSQL URL.
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    InvalidUrl(sqlx::Error),
    /// The server refused a statement or could not be reached.
    #[error("test database: {0}")]
    Database(#[from] sqlx::Error),
    /// The template could not be migrated.
    #[error("test database: {0}")]
    Migrate(#[from] pgoutbox_migrate::Error),
}

/// The server that test databases are created on, once chosen.
static SERVER_URL: OnceCell<String> = OnceCell::const_new();

/// Chooses the server that every later [`TestDatabase`] of this process is
/// created on, instead of `DATABASE_URL` or the shared private cluster: for
/// a program that starts a [`Cluster`] of its own, such as the benchmark,
/// which needs PostgreSQL's default durability rather than the tests'
/// `fsync = off`. Fails if a server was already chosen (by this function or
/// by a first [`TestDatabase`]).
///
/// ```no_run
/// use pgoutbox::testing::{Cluster, TestDatabase, use_server};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let cluster = Cluster::start_private()?;
/// use_server(cluster.url("postgres"))?;
/// let db = TestDatabase::new().await?; // on `cluster`
/// # let _ = db;
/// # Ok(())
/// # }
/// ```
pub fn use_server(url: String) -> Result<(), TestDbError> {
    SERVER_URL.set(url).map_err(|_| {
        TestDbError::Cluster("the test server was already chosen for this process".to_owned())
    })
}

/// The connection URL of the server that test databases are created on:
/// the one named by [`use_server`], else `DATABASE_URL` when set, otherwise
/// the shared private cluster, started on first use.
///
/// ```no_run
/// # async fn example() -> Result<(), pgoutbox::testing::TestDbError> {
/// let url = pgoutbox::testing::server_url().await?;
/// assert!(url.starts_with("postgres://") || url.starts_with("postgresql://"));
/// // Started once: every later call names the same server.
/// assert_eq!(pgoutbox::testing::server_url().await?, url);
/// # Ok(())
/// # }
/// ```
pub async fn server_url() -> Result<String, TestDbError> {
    SERVER_URL
        .get_or_try_init(|| async {
            match std::env::var("DATABASE_URL") {
                Ok(url) if !url.is_empty() => Ok(url),
                _ => tokio::task::spawn_blocking(shared::shared_cluster_url)
                    .await
                    .map_err(|e| TestDbError::Cluster(format!("cluster start-up panicked: {e}")))?,
            }
        })
        .await
        .cloned()
}

/// A database of its own for one test, cloned from a migrated template.
///
/// Databases are named `pgoutbox_test_…`. On the private cluster they vanish
/// with it; on a server named by `DATABASE_URL` they stay until dropped (for
/// example with `dropdb`), so that a failed test can be inspected.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use pgoutbox::testing::TestDatabase;
///
/// let (a, b) = (TestDatabase::new().await?, TestDatabase::new().await?);
/// assert_ne!(a.name(), b.name());
/// sqlx::query("CREATE TABLE invoices (id bigint)").execute(a.pool()).await?;
/// let seen: Option<String> = sqlx::query_scalar("SELECT to_regclass('invoices')::text")
///     .fetch_one(b.pool())
///     .await?;
/// assert_eq!(seen, None); // tests never see each other's tables or rows
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TestDatabase {
    name: String,
    options: PgConnectOptions,
    pool: PgPool,
}

impl TestDatabase {
    /// Creates a fresh database holding pgoutbox's storage in the default
    /// schema, `pgoutbox`.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let db = pgoutbox::testing::TestDatabase::new().await?;
    /// pgoutbox::migrate::check(db.pool(), &pgoutbox::Identifier::default()).await?; // already migrated
    /// # Ok(())
    /// # }
    /// ```
    pub async fn new() -> Result<TestDatabase, TestDbError> {
        let template = template().await?;
        Self::create(Some(template)).await
    }

    /// Creates a fresh, empty database (cloned from `template0`), for tests of
    /// the migrations themselves.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// use pgoutbox::Identifier;
    ///
    /// let db = pgoutbox::testing::TestDatabase::empty().await?;
    /// let schema = Identifier::new("outbox")?;
    /// assert!(pgoutbox::migrate::check(db.pool(), &schema).await.is_err());
    /// assert_eq!(pgoutbox::migrate::run(db.pool(), &schema).await?, [1]);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn empty() -> Result<TestDatabase, TestDbError> {
        Self::create(None).await
    }

    async fn create(template: Option<&str>) -> Result<TestDatabase, TestDbError> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let server = server_options().await?;
        let name = format!(
            "pgoutbox_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        let template = template.unwrap_or("template0");
        let mut conn = server.connect().await?;
        let sql = format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"");
        // A background process (autovacuum, another test's clone) briefly
        // connected to the template makes CREATE DATABASE fail; it is retried.
        let mut tries = 0;
        loop {
            match sqlx::raw_sql(AssertSqlSafe(sql.clone()))
                .execute(&mut conn)
                .await
            {
                Ok(_) => break,
                Err(e) if tries < 50 && is_template_busy(&e) => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        conn.close().await?;
        let options = server.clone().database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect_with(options.clone())
            .await?;
        Ok(TestDatabase {
            name,
            options,
            pool,
        })
    }

    /// The database's name.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let db = pgoutbox::testing::TestDatabase::new().await?;
    /// assert!(db.name().starts_with("pgoutbox_test_"));
    /// let current: String = sqlx::query_scalar("SELECT current_database()").fetch_one(db.pool()).await?;
    /// assert_eq!(current, db.name());
    /// # Ok(())
    /// # }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A pool of up to 10 connections to the database.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let db = pgoutbox::testing::TestDatabase::new().await?;
    /// let mut tx = db.pool().begin().await?;
    /// let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut *tx).await?;
    /// assert_eq!(one, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Connection options for the database, to build pools of other sizes.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// use sqlx::postgres::PgPoolOptions;
    ///
    /// let db = pgoutbox::testing::TestDatabase::new().await?;
    /// // A pool big enough for a system with 16 workers.
    /// let pool = PgPoolOptions::new().max_connections(18).connect_with(db.connect_options().clone()).await?;
    /// assert_eq!(pool.options().get_max_connections(), 18);
    /// # Ok(())
    /// # }
    /// ```
    pub fn connect_options(&self) -> &PgConnectOptions {
        &self.options
    }

    /// The database's connection URL.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let db = pgoutbox::testing::TestDatabase::new().await?;
    /// let mut settings = pgoutbox::Settings::default();
    /// settings.database.url = Some(db.url());
    /// assert_eq!(settings.connect_options()?.get_database(), Some(db.name()));
    /// # Ok(())
    /// # }
    /// ```
    pub fn url(&self) -> String {
        self.options.to_url_lossy().to_string()
    }
}

fn is_template_busy(e: &sqlx::Error) -> bool {
    // 55006: object_in_use ("source database … is being accessed by other users").
    e.as_database_error()
        .and_then(sqlx::error::DatabaseError::code)
        .is_some_and(|code| code == "55006")
}

async fn server_options() -> Result<PgConnectOptions, TestDbError> {
    let url = server_url().await?;
    url.parse::<PgConnectOptions>()
        .map(|o| o.application_name("pgoutbox-testing"))
        .map_err(TestDbError::InvalidUrl)
}

/// Creates (once per server and migration set) the template database that
/// [`TestDatabase::new`] clones, and returns its name.
async fn template() -> Result<&'static str, TestDbError> {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_try_init(|| async {
            let server = server_options().await?;
            let fingerprint: String = pgoutbox_migrate::migrations()
                .iter()
                .map(pgoutbox_migrate::Migration::checksum)
                .collect();
            let name = format!(
                "pgoutbox_template_{}",
                &sha2_hex(fingerprint.as_bytes())[..12]
            );
            let mut conn = server.connect().await?;
            // Test binaries and parallel tests race to build it: one builds,
            // the others wait on this lock and then find it ready.
            sqlx::query("SELECT pg_advisory_lock(hashtextextended('pgoutbox-test-template', 0))")
                .execute(&mut conn)
                .await?;
            let built = build_template(&mut conn, &server, &name).await;
            sqlx::query("SELECT pg_advisory_unlock(hashtextextended('pgoutbox-test-template', 0))")
                .execute(&mut conn)
                .await?;
            conn.close().await?;
            built.map(|()| name)
        })
        .await
        .map(String::as_str)
}

async fn build_template(
    conn: &mut PgConnection,
    server: &PgConnectOptions,
    name: &str,
) -> Result<(), TestDbError> {
    // `datistemplate` is set last, so a template left half-built by a killed
    // process is recognised and rebuilt.
    let ready: Option<bool> =
        sqlx::query_scalar("SELECT datistemplate FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    match ready {
        Some(true) => return Ok(()),
        Some(false) => {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP DATABASE \"{name}\" WITH (FORCE)"
            )))
            .execute(&mut *conn)
            .await?;
        }
        None => {}
    }
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE DATABASE \"{name}\" TEMPLATE template0"
    )))
    .execute(&mut *conn)
    .await?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(server.clone().database(name))
        .await?;
    pgoutbox_migrate::run(&pool, &Identifier::default()).await?;
    pool.close().await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "ALTER DATABASE \"{name}\" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
    )))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn sha2_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
