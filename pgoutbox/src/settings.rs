//! Settings: the database to use and how the workflow system behaves,
//! from code, `PGOUTBOX_*` environment variables and a TOML or YAML file.

use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml, Yaml};
use pgoutbox_migrate::Identifier;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::duration;

/// The attempts an operation gets when neither its attribute nor the
/// settings say otherwise.
///
/// ```
/// assert_eq!(pgoutbox::DEFAULT_MAX_ATTEMPTS, 5);
/// assert_eq!(pgoutbox::Settings::default().workflow_system.max_attempts, pgoutbox::DEFAULT_MAX_ATTEMPTS);
/// ```
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// The NOTIFY channel used when the settings name none.
///
/// ```
/// let settings = pgoutbox::Settings::default();
/// assert_eq!(settings.channel()?.as_str(), pgoutbox::DEFAULT_CHANNEL);
/// # Ok::<(), pgoutbox::SettingsError>(())
/// ```
pub const DEFAULT_CHANNEL: &str = "pgoutbox";

/// The most handlers one process runs at once (`workflow_system.n_workers`):
/// each holds a connection, and a process with more is better split.
///
/// ```
/// let mut settings = pgoutbox::Settings::default();
/// settings.workflow_system.n_workers = pgoutbox::MAX_N_WORKERS + 1;
/// assert_eq!(settings.validate().unwrap_err().key(), "workflow_system.n_workers");
/// ```
pub const MAX_N_WORKERS: usize = 1024;

/// The largest connection pool (`database.pool_min`, `database.pool_max`):
/// the pool allocates room for all of them up front.
///
/// ```
/// let mut settings = pgoutbox::Settings::default();
/// settings.database.pool_max = pgoutbox::MAX_POOL + 1;
/// assert_eq!(settings.validate().unwrap_err().key(), "database.pool_max");
/// ```
pub const MAX_POOL: u32 = 4096;

/// The longest duration any setting takes (ten years): beyond it, timers
/// and the database's intervals could overflow.
///
/// ```
/// let mut settings = pgoutbox::Settings::default();
/// settings.workflow_system.lease = pgoutbox::MAX_DURATION * 2;
/// assert_eq!(settings.validate().unwrap_err().key(), "workflow_system.lease");
/// ```
pub const MAX_DURATION: Duration = Duration::from_hours(24 * 3650);

/// Everything pgoutbox can be told, in two groups as in the original
/// project.
///
/// Built in code (`Settings::default()` and its public fields), or loaded
/// with [`Settings::load`]: defaults, then the TOML or YAML file named by
/// `PGOUTBOX_CONFIG_FILE`, then `PGOUTBOX_*` environment variables, where
/// `__` separates levels:
///
/// ```text
/// PGOUTBOX_DATABASE__URL=postgres://app@db/app
/// PGOUTBOX_WORKFLOW_SYSTEM__N_WORKERS=16
/// PGOUTBOX_WORKFLOW_SYSTEM__POLL_INTERVAL=500ms
/// ```
///
/// Durations are written as `humantime` reads them: an integer and a unit
/// (`ms`, `s`, `m`, `h`, `d`, or longer names such as `minutes`), several
/// of them adding up (`1h 30m`), or a bare number of milliseconds. An
/// invalid value is one error naming its key. Every key, its environment
/// variable and its default are listed in `docs/operating.md`; what each
/// costs or buys in `docs/tuning.md`.
///
/// ```
/// let mut settings = pgoutbox::Settings::default();
/// settings.workflow_system.n_workers = 4;
/// settings.validate()?;
/// # Ok::<(), pgoutbox::SettingsError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where the database is.
    pub database: DatabaseSettings,
    /// How workers behave.
    pub workflow_system: WorkflowSettings,
}

/// Where the database is and how to connect to it.
///
/// ```
/// let mut settings = pgoutbox::Settings::default();
/// settings.database.host = "db.internal".into();
/// settings.database.database = "app".into();
/// settings.database.pool_max = 32;
/// let options = settings.connect_options()?;
/// assert_eq!(options.get_host(), "db.internal");
/// assert_eq!(options.get_database(), Some("app"));
/// // A URL, when set, wins over the separate fields.
/// settings.database.url = Some("postgres://app@primary:6432/billing".into());
/// assert_eq!(settings.connect_options()?.get_port(), 6432);
/// # Ok::<(), pgoutbox::SettingsError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// A full connection URL; when set, `host`, `port`, `user`, `password`
    /// and `database` are ignored.
    pub url: Option<String>,
    /// Server host name or address.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// User name.
    pub user: String,
    /// Password, if any.
    pub password: Option<String>,
    /// Database name.
    pub database: String,
    /// `application_name` of every connection.
    pub application_name: String,
    /// The schema holding pgoutbox's tables.
    pub schema: String,
    /// Connections the pool keeps open.
    pub pool_min: u32,
    /// Most connections the pool opens; at least `n_workers` + 2.
    pub pool_max: u32,
    /// How long to wait for a pooled connection.
    #[serde(with = "duration")]
    pub acquire_timeout: Duration,
    /// A separate URL for the LISTEN connection: behind pgbouncer in
    /// transaction mode, point it at PostgreSQL directly. The listener is
    /// one connection per worker process, outside the pool.
    pub listen_url: Option<String>,
    /// Use prepared statements (turn off behind pgbouncer in transaction
    /// mode, which does not keep them between transactions). Off, pgoutbox
    /// sends its statements unnamed and the pools built by
    /// [`Settings::pool`] keep no statement cache; publish through
    /// [`Publisher::from_settings`](crate::Publisher::from_settings), not
    /// the free [`publish`](crate::publish), which prepares.
    pub prepared_statements: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: None,
            host: "localhost".to_owned(),
            port: 5432,
            user: "postgres".to_owned(),
            password: None,
            database: "postgres".to_owned(),
            application_name: "pgoutbox".to_owned(),
            schema: pgoutbox_migrate::DEFAULT_SCHEMA.to_owned(),
            pool_min: 0,
            pool_max: 20,
            acquire_timeout: Duration::from_secs(30),
            listen_url: None,
            prepared_statements: true,
        }
    }
}

/// How the workflow system behaves.
///
/// ```
/// use std::time::Duration;
///
/// let mut settings = pgoutbox::Settings::default();
/// let ws = &mut settings.workflow_system;
/// assert_eq!((ws.n_workers, ws.lease), (10, Duration::from_secs(30)));
/// ws.n_workers = 32;
/// ws.queues = vec!["mail".into()]; // this process claims only from the `mail` queue
/// settings.database.pool_max = 34; // `n_workers` + 2
/// settings.validate()?;
/// # Ok::<(), pgoutbox::SettingsError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkflowSettings {
    /// The NOTIFY channel publishers wake workers on.
    pub channel: String,
    /// Whether publishers send NOTIFY at all; without it workers find work
    /// by polling alone.
    pub notify: bool,
    /// Handlers a process runs at once; also the largest claim. The pool
    /// must allow `n_workers` + 2 connections.
    pub n_workers: usize,
    /// How often workers look for work when no notification arrives; each
    /// wait is jittered by ±20%.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// How long a claim stays valid without renewal (at least 300 ms).
    /// Heartbeats renew it every third of it; a worker that could not renew
    /// for five sixths of it aborts its handlers.
    #[serde(with = "duration")]
    pub lease: Duration,
    /// How long `stop()` waits for running handlers before aborting them.
    #[serde(with = "duration")]
    pub shutdown_wait: Duration,
    /// Attempts per operation, unless its attribute says otherwise.
    pub max_attempts: u32,
    /// First retry delay, unless the operation's attribute says otherwise.
    #[serde(with = "duration")]
    pub backoff_initial: Duration,
    /// Longest retry delay, unless the operation's attribute says otherwise.
    #[serde(with = "duration")]
    pub backoff_max: Duration,
    /// How long one attempt may run, unless its attribute says otherwise.
    #[serde(with = "duration")]
    pub handler_timeout: Duration,
    /// Claim only from these queues (all queues when empty).
    pub queues: Vec<String>,
    /// Off by default. When on, a claim whose operations are all
    /// `idempotent`, and a batch of plain successes of `idempotent`
    /// operations only, commit with `synchronous_commit = off`: faster at
    /// production durability, but a database crash can erase the record
    /// of attempts that ran (see `docs/consistency.md`). A non-idempotent
    /// operation's attempt start and outcome stay durable whatever is set.
    pub idempotent_async_commit: bool,
    /// The janitor: how long finished operations and their history stay.
    pub retention: RetentionSettings,
}

/// The janitor's settings. Every worker process runs it; batches are taken
/// with `SKIP LOCKED`, so many janitors share the work without colliding.
/// `dead` and `stalled` operations are never purged automatically.
///
/// ```
/// use std::time::Duration;
///
/// let mut settings = pgoutbox::Settings::default();
/// let retention = &mut settings.workflow_system.retention;
/// assert_eq!(retention.operations, Duration::from_secs(7 * 24 * 3600));
/// retention.operations = Duration::from_secs(24 * 3600); // keep finished operations a day
/// retention.enabled = false; // and leave the janitor to other processes
/// settings.validate()?;
/// # Ok::<(), pgoutbox::SettingsError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Whether this process runs the janitor.
    pub enabled: bool,
    /// How long `succeeded` and `cancelled` operations stay after they
    /// finish (an idempotency key is remembered that long too).
    #[serde(with = "duration")]
    pub operations: Duration,
    /// How long attempts and operator actions stay once their operation is
    /// gone: the audit trail outlives the operations.
    #[serde(with = "duration")]
    pub history: Duration,
    /// How often the janitor runs.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Rows deleted per statement.
    pub batch_size: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            enabled: true,
            operations: Duration::from_hours(24 * 7),
            history: Duration::from_hours(24 * 90),
            interval: Duration::from_hours(1),
            batch_size: 1000,
        }
    }
}

impl Default for WorkflowSettings {
    fn default() -> Self {
        WorkflowSettings {
            channel: DEFAULT_CHANNEL.to_owned(),
            notify: true,
            n_workers: 10,
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(30),
            shutdown_wait: Duration::from_secs(30),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_hours(1),
            handler_timeout: Duration::from_mins(5),
            queues: Vec::new(),
            idempotent_async_commit: false,
            retention: RetentionSettings::default(),
        }
    }
}

/// An invalid setting, named by its key.
///
/// ```
/// let mut settings = pgoutbox::Settings::default();
/// settings.database.pool_min = 30; // above `pool_max` (20)
/// let err = settings.validate().unwrap_err();
/// assert_eq!(err.to_string(), "invalid setting `database.pool_min`: must not exceed `pool_max`");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `{key}`: {reason}")]
pub struct SettingsError {
    key: String,
    reason: String,
}

impl SettingsError {
    fn new(key: &str, reason: impl Into<String>) -> Self {
        SettingsError {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    /// The offending key, such as `workflow_system.n_workers`.
    ///
    /// ```
    /// let mut settings = pgoutbox::Settings::default();
    /// settings.workflow_system.lease = std::time::Duration::from_millis(100);
    /// assert_eq!(settings.validate().unwrap_err().key(), "workflow_system.lease");
    /// ```
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// The runtime's own connections beside the handlers': one for claims and
/// completions, one for heartbeats and rescues.
pub(crate) const RUNTIME_CONNECTIONS: u32 = 2;

impl Settings {
    /// Defaults, then the file named by `PGOUTBOX_CONFIG_FILE` (`.toml`,
    /// `.yaml` or `.yml`), then `PGOUTBOX_*` environment variables; checked
    /// with [`Settings::validate`].
    ///
    /// Only `PGOUTBOX_DATABASE__…` and `PGOUTBOX_WORKFLOW_SYSTEM__…`
    /// variables are read as settings; an unknown key among them is an
    /// error.
    ///
    /// ```
    /// // With nothing in the environment, these are the defaults.
    /// let settings = pgoutbox::Settings::load()?;
    /// println!(
    ///     "{} workers, polling every {:?}, schema {}",
    ///     settings.workflow_system.n_workers,
    ///     settings.workflow_system.poll_interval,
    ///     settings.database.schema,
    /// );
    /// # Ok::<(), pgoutbox::SettingsError>(())
    /// ```
    pub fn load() -> Result<Settings, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = std::env::var_os("PGOUTBOX_CONFIG_FILE") {
            let path = Path::new(&file);
            if !path.is_file() {
                return Err(SettingsError::new(
                    "PGOUTBOX_CONFIG_FILE",
                    format!("no such file: {}", path.display()),
                ));
            }
            figment = match path.extension().and_then(|e| e.to_str()) {
                Some("toml") => figment.merge(Toml::file_exact(path)),
                Some("yaml" | "yml") => figment.merge(Yaml::file_exact(path)),
                _ => {
                    return Err(SettingsError::new(
                        "PGOUTBOX_CONFIG_FILE",
                        format!(
                            "{}: expected a `.toml`, `.yaml` or `.yml` file",
                            path.display()
                        ),
                    ));
                }
            };
        }
        // Only the two groups: other PGOUTBOX_* variables (the test
        // support's, the CLI's) are not settings.
        figment = figment.merge(
            Env::prefixed("PGOUTBOX_")
                .split("__")
                .filter(|k| k.starts_with("database.") || k.starts_with("workflow_system.")),
        );
        let settings: Settings = figment.extract().map_err(|e| {
            let key = e.path.join(".");
            let key = if key.is_empty() {
                "settings".to_owned()
            } else {
                key
            };
            SettingsError::new(&key, e.kind.to_string())
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value that the types alone do not.
    ///
    /// ```
    /// let mut settings = pgoutbox::Settings::default();
    /// settings.workflow_system.n_workers = 0;
    /// let err = settings.validate().unwrap_err();
    /// assert_eq!(err.key(), "workflow_system.n_workers");
    /// assert_eq!(err.to_string(), "invalid setting `workflow_system.n_workers`: must be at least 1");
    /// ```
    pub fn validate(&self) -> Result<(), SettingsError> {
        let db = &self.database;
        let ws = &self.workflow_system;
        self.schema()?;
        self.channel()?;
        if let Some(url) = &db.url {
            parse_url(url).map_err(|reason| SettingsError::new("database.url", reason))?;
        }
        if let Some(url) = &db.listen_url {
            parse_url(url).map_err(|reason| SettingsError::new("database.listen_url", reason))?;
        }
        if db.pool_max == 0 {
            return Err(SettingsError::new(
                "database.pool_max",
                "must be at least 1",
            ));
        }
        if db.pool_max > MAX_POOL {
            return Err(SettingsError::new(
                "database.pool_max",
                format!("must be at most {MAX_POOL}"),
            ));
        }
        if db.pool_min > db.pool_max {
            return Err(SettingsError::new(
                "database.pool_min",
                "must not exceed `pool_max`",
            ));
        }
        if ws.n_workers == 0 {
            return Err(SettingsError::new(
                "workflow_system.n_workers",
                "must be at least 1",
            ));
        }
        if ws.n_workers > MAX_N_WORKERS {
            return Err(SettingsError::new(
                "workflow_system.n_workers",
                format!("must be at most {MAX_N_WORKERS}"),
            ));
        }
        self.validate_durations()?;
        if ws.lease < Duration::from_millis(300) {
            return Err(SettingsError::new(
                "workflow_system.lease",
                "must be at least 300ms (heartbeats renew it every third of it)",
            ));
        }
        if ws.retention.batch_size == 0 {
            return Err(SettingsError::new(
                "workflow_system.retention.batch_size",
                "must be at least 1",
            ));
        }
        if ws.max_attempts == 0 || i32::try_from(ws.max_attempts).is_err() {
            return Err(SettingsError::new(
                "workflow_system.max_attempts",
                "must be from 1 to 2147483647",
            ));
        }
        if ws.backoff_max < ws.backoff_initial {
            return Err(SettingsError::new(
                "workflow_system.backoff_max",
                "must not be shorter than `backoff_initial`",
            ));
        }
        for queue in &ws.queues {
            if !crate::name::is_valid(queue) {
                return Err(SettingsError::new(
                    "workflow_system.queues",
                    format!("invalid queue name `{queue}`"),
                ));
            }
        }
        Ok(())
    }

    /// Every duration: longer than zero (where zero makes no sense), at
    /// most [`MAX_DURATION`]; the history kept at least as long as the
    /// operations.
    fn validate_durations(&self) -> Result<(), SettingsError> {
        let db = &self.database;
        let ws = &self.workflow_system;
        for (key, value) in [
            ("workflow_system.shutdown_wait", ws.shutdown_wait),
            ("workflow_system.backoff_max", ws.backoff_max),
            ("workflow_system.poll_interval", ws.poll_interval),
            ("workflow_system.lease", ws.lease),
            ("workflow_system.backoff_initial", ws.backoff_initial),
            ("workflow_system.handler_timeout", ws.handler_timeout),
            ("database.acquire_timeout", db.acquire_timeout),
            (
                "workflow_system.retention.operations",
                ws.retention.operations,
            ),
            ("workflow_system.retention.history", ws.retention.history),
            ("workflow_system.retention.interval", ws.retention.interval),
        ] {
            if value.is_zero()
                && !matches!(
                    key,
                    "workflow_system.shutdown_wait" | "workflow_system.backoff_max"
                )
            {
                return Err(SettingsError::new(key, "must be longer than zero"));
            }
            if value > MAX_DURATION {
                return Err(SettingsError::new(key, "must be at most 3650d (ten years)"));
            }
        }
        if ws.retention.history < ws.retention.operations {
            return Err(SettingsError::new(
                "workflow_system.retention.history",
                "must not be shorter than `retention.operations` (attempts and actions would go \
                 before their operations)",
            ));
        }
        Ok(())
    }

    /// The validated schema.
    ///
    /// ```
    /// let mut settings = pgoutbox::Settings::default();
    /// assert_eq!(settings.schema()?.quoted(), "\"pgoutbox\"");
    /// settings.database.schema = "billing; drop".into();
    /// assert_eq!(settings.schema().unwrap_err().key(), "database.schema");
    /// # Ok::<(), pgoutbox::SettingsError>(())
    /// ```
    pub fn schema(&self) -> Result<Identifier, SettingsError> {
        Identifier::new(self.database.schema.clone())
            .map_err(|e| SettingsError::new("database.schema", e.to_string()))
    }

    /// The validated channel.
    ///
    /// ```
    /// let mut settings = pgoutbox::Settings::default();
    /// settings.workflow_system.channel = "billing_events".into();
    /// assert_eq!(settings.channel()?.as_str(), "billing_events");
    /// # Ok::<(), pgoutbox::SettingsError>(())
    /// ```
    pub fn channel(&self) -> Result<Identifier, SettingsError> {
        Identifier::new(self.workflow_system.channel.clone())
            .map_err(|e| SettingsError::new("workflow_system.channel", e.to_string()))
    }

    /// Connection options for the main pool.
    ///
    /// ```
    /// let mut settings = pgoutbox::Settings::default();
    /// settings.database.url = Some("postgres://app@db:5433/app".into());
    /// let options = settings.connect_options()?;
    /// assert_eq!((options.get_host(), options.get_port()), ("db", 5433));
    /// assert_eq!(options.get_application_name(), Some("pgoutbox"));
    ///
    /// settings.database.url = Some("mysql://db/app".into());
    /// assert_eq!(settings.connect_options().unwrap_err().key(), "database.url");
    /// # Ok::<(), pgoutbox::SettingsError>(())
    /// ```
    pub fn connect_options(&self) -> Result<PgConnectOptions, SettingsError> {
        let db = &self.database;
        let options = if let Some(url) = &db.url {
            parse_url(url).map_err(|reason| SettingsError::new("database.url", reason))?
        } else {
            let mut options = PgConnectOptions::new_without_pgpass()
                .host(&db.host)
                .port(db.port)
                .username(&db.user)
                .database(&db.database);
            if let Some(password) = &db.password {
                options = options.password(password);
            }
            options
        };
        let options = options.application_name(&db.application_name);
        Ok(if db.prepared_statements {
            options
        } else {
            options.statement_cache_capacity(0)
        })
    }

    /// Connection options for the LISTEN connection.
    ///
    /// ```
    /// let mut settings = pgoutbox::Settings::default();
    /// // The pool goes through pgbouncer; LISTEN needs PostgreSQL itself.
    /// settings.database.url = Some("postgres://app@pgbouncer:6432/app".into());
    /// settings.database.listen_url = Some("postgres://app@db:5432/app".into());
    /// assert_eq!(settings.connect_options()?.get_port(), 6432);
    /// assert_eq!(settings.listen_options()?.get_port(), 5432);
    /// # Ok::<(), pgoutbox::SettingsError>(())
    /// ```
    pub fn listen_options(&self) -> Result<PgConnectOptions, SettingsError> {
        match &self.database.listen_url {
            Some(url) => Ok(parse_url(url)
                .map_err(|reason| SettingsError::new("database.listen_url", reason))?
                .application_name(&self.database.application_name)),
            None => self.connect_options(),
        }
    }

    /// A pool built from `database`: what the original project's session
    /// manager was; the application keeps using sqlx transactions on it.
    /// Connections open lazily.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let settings = pgoutbox::Settings::load()?;
    /// let pool = settings.pool()?;
    /// let mut tx = pool.begin().await?;
    /// // … the application's writes, and `publish(&mut tx, …)` …
    /// tx.commit().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn pool(&self) -> Result<sqlx::PgPool, SettingsError> {
        self.validate()?;
        Ok(PgPoolOptions::new()
            .min_connections(self.database.pool_min)
            .max_connections(self.database.pool_max)
            .acquire_timeout(self.database.acquire_timeout)
            .connect_lazy_with(self.connect_options()?))
    }

    /// The connections the system needs: `n_workers` + the runtime's own.
    pub(crate) fn required_connections(&self) -> u64 {
        self.workflow_system.n_workers as u64 + u64::from(RUNTIME_CONNECTIONS)
    }
}

fn parse_url(url: &str) -> Result<PgConnectOptions, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("expected a `postgres://` or `postgresql://` URL".to_owned());
    }
    url.parse::<PgConnectOptions>().map_err(|e| e.to_string())
}
