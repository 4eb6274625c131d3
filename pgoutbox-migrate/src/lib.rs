//! The SQL migrations of pgoutbox's storage, and the code that applies them.
//!
//! pgoutbox keeps everything in one PostgreSQL schema (default `pgoutbox`):
//! `operations`, `attempts`, `operation_types`, `workers` and
//! `operator_actions`. This crate holds the numbered, reviewable SQL files
//! that create them and applies them safely:
//!
//! - the applied versions are recorded in the schema's own
//!   `pgoutbox_migrations` table, never in the application's
//!   `_sqlx_migrations`;
//! - [`run`] takes a transaction-scoped advisory lock keyed on the schema
//!   before any DDL, so several processes may migrate at once: one applies,
//!   the others wait and find nothing left to do;
//! - [`check`] refuses a database whose version differs from this binary's,
//!   naming both;
//! - [`script`] exports the whole SQL for teams that apply migrations with
//!   their own tool (the script records its versions too, so [`check`] passes
//!   afterwards).
//!
//! The `pgoutbox migrate up|status|sql` command wraps the same functions;
//! the repository's `docs/operating.md` describes both.
//!
//! ```no_run
//! # async fn example() -> Result<(), pgoutbox_migrate::Error> {
//! use pgoutbox_migrate::Identifier;
//!
//! let pool = sqlx::PgPool::connect("postgres://localhost/app").await?;
//! let schema = Identifier::new("pgoutbox")?;
//! let applied = pgoutbox_migrate::run(&pool, &schema).await?;
//! println!("applied {} migration(s)", applied.len());
//! pgoutbox_migrate::check(&pool, &schema).await?; // what a worker does at start-up
//! # Ok(())
//! # }
//! ```

mod ident;

pub use ident::{Identifier, InvalidIdentifier, MAX_IDENTIFIER_BYTES};

use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};

/// The schema pgoutbox uses unless told otherwise.
///
/// ```
/// assert_eq!(pgoutbox_migrate::DEFAULT_SCHEMA, "pgoutbox");
/// assert_eq!(pgoutbox_migrate::Identifier::default().as_str(), pgoutbox_migrate::DEFAULT_SCHEMA);
/// ```
pub const DEFAULT_SCHEMA: &str = "pgoutbox";

/// The table, inside the configured schema, that records applied versions.
///
/// ```
/// let sql = pgoutbox_migrate::script(&pgoutbox_migrate::Identifier::default());
/// assert!(sql.contains(&format!("\"pgoutbox\".{}", pgoutbox_migrate::VERSION_TABLE)));
/// ```
pub const VERSION_TABLE: &str = "pgoutbox_migrations";

/// One numbered SQL migration.
///
/// ```
/// for migration in pgoutbox_migrate::migrations() {
///     assert!(migration.version() >= 1);
///     assert_eq!(migration.checksum().len(), 64);
///     assert!(!migration.sql(&pgoutbox_migrate::Identifier::default()).is_empty());
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    version: i64,
    name: &'static str,
    template: &'static str,
}

/// The placeholder that migration files use for the schema.
const SCHEMA_PLACEHOLDER: &str = "{schema}";

static MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "storage",
        template: include_str!("../migrations/0001_storage.sql"),
    },
    Migration {
        version: 2,
        name: "hardening",
        template: include_str!("../migrations/0002_hardening.sql"),
    },
    Migration {
        version: 3,
        name: "schedules",
        template: include_str!("../migrations/0003_schedules.sql"),
    },
    Migration {
        version: 4,
        name: "dashboard",
        template: include_str!("../migrations/0004_dashboard.sql"),
    },
    Migration {
        version: 5,
        name: "relay",
        template: include_str!("../migrations/0005_relay.sql"),
    },
    Migration {
        version: 6,
        name: "claim_walks",
        template: include_str!("../migrations/0006_claim_walks.sql"),
    },
    Migration {
        version: 7,
        name: "claim_due",
        template: include_str!("../migrations/0007_claim_due.sql"),
    },
    Migration {
        version: 8,
        name: "schedule_decisions",
        template: include_str!("../migrations/0008_schedule_decisions.sql"),
    },
    Migration {
        version: 9,
        name: "outputs",
        template: include_str!("../migrations/0009_outputs.sql"),
    },
    Migration {
        version: 10,
        name: "workflows",
        template: include_str!("../migrations/0010_workflows.sql"),
    },
    Migration {
        version: 11,
        name: "sagas",
        template: include_str!("../migrations/0011_sagas.sql"),
    },
    Migration {
        version: 12,
        name: "workflow_keys",
        template: include_str!("../migrations/0012_workflow_keys.sql"),
    },
    Migration {
        version: 13,
        name: "wake_at_commit",
        template: include_str!("../migrations/0013_wake_at_commit.sql"),
    },
];

/// Every migration this binary knows, in version order.
///
/// ```
/// let all = pgoutbox_migrate::migrations();
/// assert_eq!(all.last().unwrap().version(), pgoutbox_migrate::latest_version());
/// ```
pub fn migrations() -> &'static [Migration] {
    MIGRATIONS
}

/// The version a database must be at for this binary to use it.
///
/// ```
/// assert!(pgoutbox_migrate::latest_version() >= 1);
/// ```
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

impl Migration {
    /// The migration's number; versions start at 1 and have no gaps.
    ///
    /// ```
    /// let versions: Vec<i64> = pgoutbox_migrate::migrations().iter().map(|m| m.version()).collect();
    /// assert_eq!(versions, (1..=pgoutbox_migrate::latest_version()).collect::<Vec<_>>());
    /// ```
    pub fn version(&self) -> i64 {
        self.version
    }

    /// A short description, the file name without its number.
    ///
    /// ```
    /// assert_eq!(pgoutbox_migrate::migrations()[0].name(), "storage"); // 0001_storage.sql
    /// ```
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The migration's SQL for `schema`.
    ///
    /// ```
    /// let schema = pgoutbox_migrate::Identifier::new("outbox").unwrap();
    /// let sql = pgoutbox_migrate::migrations()[0].sql(&schema);
    /// assert!(sql.contains("CREATE TABLE \"outbox\".operations"));
    /// ```
    pub fn sql(&self, schema: &Identifier) -> String {
        substitute_schema(self.template, &schema.quoted())
    }

    /// SHA-256 (hex) of the migration's text before the schema is put in, so
    /// an edited migration is noticed whatever schema it was applied to.
    ///
    /// ```
    /// let first = &pgoutbox_migrate::migrations()[0];
    /// assert_eq!(first.checksum().len(), 64);
    /// assert_eq!(first.name(), "storage");
    /// ```
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.template.as_bytes()))
    }
}

/// What can go wrong while migrating or checking a database.
///
/// ```
/// use pgoutbox_migrate::{Error, Identifier};
///
/// let err = Error::VersionMismatch { schema: Identifier::default(), database: 0, binary: 1 };
/// assert_eq!(
///     err.to_string(),
///     "schema `pgoutbox` is at migration version 0, but this binary expects version 1; \
///      run `pgoutbox migrate up` (or `pgoutbox_migrate::run`) first"
/// );
/// let invalid: Error = Identifier::new("Outbox").unwrap_err().into();
/// assert!(matches!(invalid, Error::InvalidIdentifier(_)));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The schema name is not an acceptable identifier; no SQL was run.
    #[error(transparent)]
    InvalidIdentifier(#[from] InvalidIdentifier),
    /// The database's version differs from the binary's.
    #[error(
        "schema `{schema}` is at migration version {database}, but this binary expects version {binary}{hint}",
        hint = if database < binary {
            "; run `pgoutbox migrate up` (or `pgoutbox_migrate::run`) first"
        } else {
            "; this binary is older than the database: upgrade it"
        }
    )]
    VersionMismatch {
        /// The schema that was checked.
        schema: Identifier,
        /// The highest version applied to the database (0: none).
        database: i64,
        /// The version this binary expects.
        binary: i64,
    },
    /// A migration applied to the database is not the one this binary has.
    #[error(
        "migration {version} applied to schema `{schema}` differs from this binary's \
         (checksum {database} in the database, {binary} in the binary): migrations must never be edited once released"
    )]
    ChecksumMismatch {
        /// The schema that was checked.
        schema: Identifier,
        /// The migration whose text differs.
        version: i64,
        /// Its checksum as recorded in the database.
        database: String,
        /// Its checksum in this binary.
        binary: String,
    },
    /// The database refused or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// One row of the version table.
///
/// ```no_run
/// # async fn example(pool: sqlx::PgPool) -> Result<(), pgoutbox_migrate::Error> {
/// let status = pgoutbox_migrate::status(&pool, &pgoutbox_migrate::Identifier::default()).await?;
/// for (applied, known) in status.applied.iter().zip(pgoutbox_migrate::migrations()) {
///     assert_eq!(applied.version, known.version());
///     assert_eq!(applied.checksum, known.checksum(), "migration {} was edited", applied.name);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    /// The migration's number.
    pub version: i64,
    /// Its name when it was applied.
    pub name: String,
    /// Its checksum when it was applied.
    pub checksum: String,
}

/// Where a database's schema stands relative to this binary.
///
/// ```
/// use pgoutbox_migrate::{AppliedMigration, Status};
///
/// // What `status` reports for a database one migration behind a binary at version 2.
/// let status = Status {
///     applied: vec![AppliedMigration { version: 1, name: "storage".into(), checksum: "…".into() }],
///     pending: vec![2],
///     binary_version: 2,
/// };
/// assert_eq!(status.database_version(), 1);
/// assert!(!status.pending.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The migrations recorded in the database, in version order.
    pub applied: Vec<AppliedMigration>,
    /// The versions this binary would apply.
    pub pending: Vec<i64>,
    /// The version this binary expects.
    pub binary_version: i64,
}

impl Status {
    /// The highest version applied to the database, 0 for none.
    ///
    /// ```
    /// let fresh = pgoutbox_migrate::Status { applied: vec![], pending: vec![1], binary_version: 1 };
    /// assert_eq!(fresh.database_version(), 0);
    /// ```
    pub fn database_version(&self) -> i64 {
        self.applied.last().map_or(0, |m| m.version)
    }
}

/// Applies the pending migrations to `schema`, creating it if needed, and
/// returns the versions it applied (empty when the database was current).
///
/// All of it happens in one transaction that first takes an advisory lock
/// keyed on the schema, so concurrent callers serialize and a failure leaves
/// the database as it was.
///
/// ```no_run
/// # async fn example(pool: sqlx::PgPool) -> Result<(), pgoutbox_migrate::Error> {
/// let schema = pgoutbox_migrate::Identifier::default();
/// let applied = pgoutbox_migrate::run(&pool, &schema).await?;
/// println!("applied {applied:?}");
/// // A second run finds nothing left to do.
/// assert!(pgoutbox_migrate::run(&pool, &schema).await?.is_empty());
/// # Ok(())
/// # }
/// ```
pub async fn run(pool: &PgPool, schema: &Identifier) -> Result<Vec<i64>, Error> {
    let mut tx = pool.begin().await?;
    lock(&mut tx, schema).await?;
    let applied = applied(&mut tx, schema).await?;
    verify_applied(schema, &applied)?;
    let current = applied.last().map_or(0, |m| m.version);
    if current > latest_version() {
        return Err(Error::VersionMismatch {
            schema: schema.clone(),
            database: current,
            binary: latest_version(),
        });
    }
    let pending: Vec<&Migration> = MIGRATIONS.iter().filter(|m| m.version > current).collect();
    if pending.is_empty() {
        tx.rollback().await?;
        return Ok(Vec::new());
    }
    sqlx::raw_sql(AssertSqlSafe(prelude_sql(schema)))
        .execute(&mut *tx)
        .await?;
    for migration in &pending {
        sqlx::raw_sql(AssertSqlSafe(migration.sql(schema)))
            .execute(&mut *tx)
            .await?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {}.{VERSION_TABLE} (version, name, checksum) VALUES ($1, $2, $3)",
            schema.quoted()
        )))
        .bind(migration.version)
        .bind(migration.name)
        .bind(migration.checksum())
        .persistent(false)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(pending.iter().map(|m| m.version).collect())
}

/// Reports the applied and pending migrations of `schema` without changing
/// anything.
///
/// ```no_run
/// # async fn example(pool: sqlx::PgPool) -> Result<(), pgoutbox_migrate::Error> {
/// let schema = pgoutbox_migrate::Identifier::default();
/// let status = pgoutbox_migrate::status(&pool, &schema).await?;
/// println!(
///     "database at version {}, binary at {}, {} pending",
///     status.database_version(),
///     status.binary_version,
///     status.pending.len()
/// );
/// # Ok(())
/// # }
/// ```
pub async fn status(pool: &PgPool, schema: &Identifier) -> Result<Status, Error> {
    let mut tx = pool.begin().await?;
    let applied = applied(&mut tx, schema).await?;
    tx.rollback().await?;
    let current = applied.last().map_or(0, |m| m.version);
    Ok(Status {
        pending: MIGRATIONS
            .iter()
            .map(Migration::version)
            .filter(|v| *v > current)
            .collect(),
        applied,
        binary_version: latest_version(),
    })
}

/// Succeeds only when `schema` is exactly at this binary's version with the
/// same migration texts; what a process runs before it uses the storage.
///
/// ```no_run
/// # async fn example(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// use pgoutbox_migrate::{Error, Identifier};
///
/// match pgoutbox_migrate::check(&pool, &Identifier::default()).await {
///     Ok(()) => println!("storage at version {}", pgoutbox_migrate::latest_version()),
///     Err(e @ Error::VersionMismatch { .. }) => return Err(format!("not migrated: {e}").into()),
///     Err(e) => return Err(e.into()),
/// }
/// # Ok(())
/// # }
/// ```
pub async fn check(pool: &PgPool, schema: &Identifier) -> Result<(), Error> {
    let status = status(pool, schema).await?;
    verify_applied(schema, &status.applied)?;
    if status.database_version() == latest_version() {
        Ok(())
    } else {
        Err(Error::VersionMismatch {
            schema: schema.clone(),
            database: status.database_version(),
            binary: latest_version(),
        })
    }
}

/// The whole SQL that [`run`] would apply to an empty database, as one
/// transaction, for teams that apply migrations with their own tool.
/// Each migration is guarded by the version table, so the script applies
/// twice (or over a database [`run`] migrated) without error; the
/// migrations' comments are left as written.
///
/// ```
/// let schema = pgoutbox_migrate::Identifier::default();
/// let sql = pgoutbox_migrate::script(&schema);
/// assert!(sql.starts_with("-- pgoutbox migrations"));
/// assert!(sql.contains("INSERT INTO \"pgoutbox\".pgoutbox_migrations"));
/// ```
pub fn script(schema: &Identifier) -> String {
    let mut out = format!(
        "-- pgoutbox migrations 1 to {latest} for schema {quoted}\n\
         BEGIN;\n\
         SELECT pg_advisory_xact_lock(hashtextextended('{key}', 0));\n{prelude}\n",
        latest = latest_version(),
        quoted = schema.quoted(),
        key = lock_key(schema),
        prelude = prelude_sql(schema),
    );
    for migration in MIGRATIONS {
        // Each migration runs only when the version table does not record
        // it yet, so the script applies twice, or over a database that
        // `run` migrated, without error.
        let _ = write!(
            out,
            "\n-- migration {version:04}_{name}\n\
             DO {SCRIPT_QUOTE}\nBEGIN\n\
             IF NOT EXISTS (SELECT 1 FROM {quoted}.{VERSION_TABLE} WHERE version = {version}) THEN\n\
             EXECUTE {tag}\n{sql}\n{tag};\n\
             INSERT INTO {quoted}.{VERSION_TABLE} (version, name, checksum) \
             VALUES ({version}, '{name}', '{checksum}');\n\
             END IF;\nEND\n{SCRIPT_QUOTE};\n",
            version = migration.version,
            name = migration.name,
            quoted = schema.quoted(),
            tag = "$pgoutbox_sql$",
            sql = migration.sql(schema),
            checksum = migration.checksum()
        );
    }
    out.push_str("\nCOMMIT;\n");
    out
}

/// Puts `quoted` in for the schema placeholder in SQL code, leaving `--`
/// comments as written (they explain the placeholder itself). A `--` inside
/// a single-quoted literal does not start a comment.
fn substitute_schema(template: &str, quoted: &str) -> String {
    let mut out = String::with_capacity(template.len());
    for line in template.split_inclusive('\n') {
        let mut in_literal = false;
        let mut comment_at = line.len();
        let bytes = line.as_bytes();
        for (i, b) in bytes.iter().enumerate() {
            match b {
                b'\'' => in_literal = !in_literal,
                b'-' if !in_literal && bytes.get(i + 1) == Some(&b'-') => {
                    comment_at = i;
                    break;
                }
                _ => {}
            }
        }
        let (code, comment) = line.split_at(comment_at);
        out.push_str(&code.replace(SCHEMA_PLACEHOLDER, quoted));
        out.push_str(comment);
    }
    out
}

/// The dollar-quote tag that wraps a migration's text in [`script`]; no
/// migration may contain it (a unit test checks).
const SCRIPT_QUOTE: &str = "$pgoutbox_migration$";

fn prelude_sql(schema: &Identifier) -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS {q};\n\
         CREATE TABLE IF NOT EXISTS {q}.{VERSION_TABLE} (\n    \
             version    bigint PRIMARY KEY,\n    \
             name       text NOT NULL,\n    \
             checksum   text NOT NULL,\n    \
             applied_at timestamptz NOT NULL DEFAULT now()\n\
         );",
        q = schema.quoted()
    )
}

/// The advisory lock's key: fixed text plus the schema name, which the
/// grammar of [`Identifier`] keeps free of quotes.
fn lock_key(schema: &Identifier) -> String {
    format!("pgoutbox-migrate:{schema}")
}

async fn lock(tx: &mut Transaction<'_, Postgres>, schema: &Identifier) -> Result<(), Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(lock_key(schema))
        .persistent(false)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn applied(
    tx: &mut Transaction<'_, Postgres>,
    schema: &Identifier,
) -> Result<Vec<AppliedMigration>, Error> {
    let table = format!("{}.{VERSION_TABLE}", schema.quoted());
    // Every statement here is unnamed (`persistent(false)`): each runs
    // once per process, and a named one would outlive the transaction on
    // the server, where behind pgbouncer in transaction mode another
    // client's statement of the same name collides with it ("prepared
    // statement `sqlx_s_1` already exists").
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(&table)
        .persistent(false)
        .fetch_one(&mut **tx)
        .await?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    let rows: Vec<(i64, String, String)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT version, name, checksum FROM {table} ORDER BY version"
    )))
    .persistent(false)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(version, name, checksum)| AppliedMigration {
            version,
            name,
            checksum,
        })
        .collect())
}

fn verify_applied(schema: &Identifier, applied: &[AppliedMigration]) -> Result<(), Error> {
    for row in applied {
        if let Some(ours) = MIGRATIONS.iter().find(|m| m.version == row.version) {
            let binary = ours.checksum();
            if binary != row.checksum {
                return Err(Error::ChecksumMismatch {
                    schema: schema.clone(),
                    version: row.version,
                    database: row.checksum.clone(),
                    binary,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_start_at_one_without_gaps() {
        for (i, m) in migrations().iter().enumerate() {
            assert_eq!(m.version(), i64::try_from(i).unwrap() + 1);
        }
    }

    #[test]
    fn no_migration_contains_the_script_quotes() {
        for m in migrations() {
            assert!(!m.template.contains(SCRIPT_QUOTE), "{}", m.name());
            assert!(!m.template.contains("$pgoutbox_sql$"), "{}", m.name());
        }
    }

    #[test]
    fn comments_keep_the_placeholder() {
        let sql = substitute_schema(
            "-- `{schema}` stands for the schema\nCREATE TABLE {schema}.t (a text DEFAULT '--{schema}'); -- in {schema}\n",
            "\"s\"",
        );
        assert_eq!(
            sql,
            "-- `{schema}` stands for the schema\nCREATE TABLE \"s\".t (a text DEFAULT '--\"s\"'); -- in {schema}\n"
        );
        let script = script(&Identifier::new("exported").unwrap());
        assert!(
            script.contains("-- `{schema}` stands for the configured schema"),
            "{script}"
        );
    }

    #[test]
    fn every_statement_is_schema_qualified() {
        let sql = script(&Identifier::new("s").unwrap());
        for line in sql.lines() {
            // Comments keep the placeholder: they explain it.
            let line = line.split("--").next().unwrap_or_default().trim_start();
            assert!(!line.contains(SCHEMA_PLACEHOLDER), "{line}");
            if line.starts_with("CREATE TABLE") || line.starts_with("CREATE INDEX") {
                assert!(line.contains("\"s\"."), "unqualified: {line}");
            }
        }
    }
}
