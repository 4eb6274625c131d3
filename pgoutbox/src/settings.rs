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

/// The most idempotent operations one process claims ahead of its free
/// handler slots (`workflow_system.idempotent_claim_ahead`).
pub const MAX_CLAIM_AHEAD: usize = 10_000;

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
    /// The operators' web dashboard (`pgoutbox dashboard`).
    pub dashboard: DashboardSettings,
    /// Where relays publish (`pgoutbox::relay`, the `pgoutbox relay`
    /// command).
    pub relay: RelaySettings,
}

/// The operators' web dashboard, as `pgoutbox dashboard` serves it.
///
/// `Debug` masks the token:
///
/// ```
/// let mut settings = pgoutbox::Settings::default();
/// settings.dashboard.token = Some("s3cret-token".into());
/// assert!(!format!("{settings:?}").contains("s3cret-token"));
/// assert_eq!(settings.dashboard.token_name, "dashboard");
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardSettings {
    /// The access token (`PGOUTBOX_DASHBOARD__TOKEN`): needed for actions
    /// and to listen on anything but loopback.
    #[serde(deserialize_with = "secret_text")]
    pub token: Option<String>,
    /// Whom the token was given to: actions are recorded with this actor
    /// unless `--actor` names another.
    pub token_name: String,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        DashboardSettings {
            token: None,
            token_name: "dashboard".to_owned(),
        }
    }
}

/// The relays' settings: for now, NATS JetStream.
///
/// ```
/// let mut settings = pgoutbox::Settings::default();
/// settings.relay.nats.url = Some("nats://relay:s3cret@nats-1:4222,nats://nats-2:4222".into());
/// settings.relay.nats.stream = Some("ORDERS".into());
/// settings.validate()?;
/// // `Debug` masks the URLs' passwords and tokens.
/// let printed = format!("{settings:?}");
/// assert!(!printed.contains("s3cret"));
/// # Ok::<(), pgoutbox::SettingsError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    /// The NATS JetStream relay.
    pub nats: NatsSettings,
}

/// Where and how a relay publishes to NATS JetStream.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSettings {
    /// The server, or servers separated by commas (`nats://host:4222`,
    /// `tls://…`); a password or token in it is masked in logs.
    pub url: Option<String>,
    /// A credentials file (`.creds`: a user JWT and its `NKey` seed).
    pub credentials_file: Option<std::path::PathBuf>,
    /// The stream the subjects must land in, checked at start-up; unset:
    /// any stream that captures them.
    pub stream: Option<String>,
    /// How long a publish waits for JetStream's acknowledgement; past it the
    /// attempt is an unknown outcome (`timed_out`), re-sent only within the
    /// stream's duplicate window of the first send, else `stalled`.
    #[serde(with = "duration")]
    pub publish_timeout: Duration,
    /// The most messages sent and not yet acknowledged.
    pub max_in_flight: usize,
}

impl Default for NatsSettings {
    fn default() -> Self {
        NatsSettings {
            url: None,
            credentials_file: None,
            stream: None,
            publish_timeout: Duration::from_secs(10),
            max_in_flight: 256,
        }
    }
}

impl std::fmt::Debug for DashboardSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let DashboardSettings { token, token_name } = self;
        f.debug_struct("DashboardSettings")
            .field("token", &token.as_ref().map(|_| REDACTED))
            .field("token_name", token_name)
            .finish()
    }
}

impl std::fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let NatsSettings {
            url,
            credentials_file,
            stream,
            publish_timeout,
            max_in_flight,
        } = self;
        f.debug_struct("NatsSettings")
            .field("url", &url.as_deref().map(redact_nats_url))
            .field("credentials_file", credentials_file)
            .field("stream", stream)
            .field("publish_timeout", publish_timeout)
            .field("max_in_flight", max_in_flight)
            .finish()
    }
}

/// A NATS URL (or comma-separated list) with every password and token
/// masked: `nats://user:***@host`, `nats://***@host`.
///
/// ```
/// use pgoutbox::redact_nats_url;
///
/// assert_eq!(redact_nats_url("nats://u:p@a:4222,nats://t0ken@b"), "nats://u:***@a:4222,nats://***@b");
/// assert_eq!(redact_nats_url("nats://a:4222"), "nats://a:4222");
/// ```
pub fn redact_nats_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let (scheme, rest) = match one.find("://") {
                Some(i) => one.split_at(i + 3),
                None => ("", one),
            };
            match rest.rfind('@') {
                Some(at) => {
                    let (userinfo, host) = rest.split_at(at);
                    match userinfo.split_once(':') {
                        Some((user, _)) => format!("{scheme}{user}:{REDACTED}{host}"),
                        None => format!("{scheme}{REDACTED}{host}"),
                    }
                }
                None => one.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
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
///
/// `Debug` masks the password, and the password inside `url` and
/// `listen_url`, so `tracing::info!(?settings)` keeps secrets out of logs:
///
/// ```
/// let mut settings = pgoutbox::Settings::default();
/// settings.database.password = Some("hunter2".into());
/// settings.database.url = Some("postgres://app:s3cret@db/app".into());
/// let printed = format!("{settings:?}");
/// assert!(!printed.contains("hunter2") && !printed.contains("s3cret"));
/// assert!(printed.contains("postgres://app:***@db/app"));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// A full connection URL; when set, `host`, `port`, `user`, `password`
    /// and `database` are ignored.
    #[serde(deserialize_with = "secret_text")]
    pub url: Option<String>,
    /// Server host name or address.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// User name.
    pub user: String,
    /// Password, if any. A password of digits only (`123456`) is read as
    /// text too.
    #[serde(deserialize_with = "secret_text")]
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
    #[serde(deserialize_with = "secret_text")]
    pub listen_url: Option<String>,
    /// Use prepared statements (turn off behind pgbouncer in transaction
    /// mode, which does not keep them between transactions). Off, pgoutbox
    /// sends its statements unnamed and the pools built by
    /// [`Settings::pool`] keep no statement cache; publish through
    /// [`Publisher::from_settings`](crate::Publisher::from_settings), not
    /// the free [`publish`](crate::publish), which prepares.
    pub prepared_statements: bool,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field but the secrets as derived; keep this list in step
        // with the struct (the destructuring makes a new field a compile
        // error here).
        let DatabaseSettings {
            url,
            host,
            port,
            user,
            password,
            database,
            application_name,
            schema,
            pool_min,
            pool_max,
            acquire_timeout,
            listen_url,
            prepared_statements,
        } = self;
        f.debug_struct("DatabaseSettings")
            .field("url", &url.as_deref().map(redact_url))
            .field("host", host)
            .field("port", port)
            .field("user", user)
            .field("password", &password.as_ref().map(|_| REDACTED))
            .field("database", database)
            .field("application_name", application_name)
            .field("schema", schema)
            .field("pool_min", pool_min)
            .field("pool_max", pool_max)
            .field("acquire_timeout", acquire_timeout)
            .field("listen_url", &listen_url.as_deref().map(redact_url))
            .field("prepared_statements", prepared_statements)
            .finish()
    }
}

/// What a secret is printed as.
const REDACTED: &str = "***";

/// `url` with its password (in the user info, or a `password=` query
/// parameter) replaced by `***`; everything else kept, so a log still
/// says which server and database.
///
/// ```
/// use pgoutbox::redact_url;
///
/// assert_eq!(redact_url("postgres://app:pw@db:5432/app"), "postgres://app:***@db:5432/app");
/// assert_eq!(redact_url("postgres://db/app?user=a&password=pw&sslmode=require"), "postgres://db/app?user=a&password=***&sslmode=require");
/// assert_eq!(redact_url("postgres://app@db/app"), "postgres://app@db/app");
/// ```
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.find(':') {
                Some(colon) => format!("{}:{REDACTED}{host}", &userinfo[..colon]),
                None => authority.to_owned(),
            }
        }
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}={REDACTED}")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}{authority}{tail}")
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
    /// Claim only from these queues (all queues when empty). In the
    /// environment a list (`PGOUTBOX_WORKFLOW_SYSTEM__QUEUES='["mail"]'`)
    /// or a comma list (`mail,sms`).
    #[serde(deserialize_with = "name_list")]
    pub queues: Vec<String>,
    /// Off by default. When on, a claim whose operations are all
    /// `idempotent`, and a batch of plain successes of `idempotent`
    /// operations only, commit with `synchronous_commit = off`: faster at
    /// production durability, but a database crash can erase the record
    /// of attempts that ran (see `docs/consistency.md`). A non-idempotent
    /// operation's attempt start and outcome stay durable whatever is set.
    pub idempotent_async_commit: bool,
    /// 0 (off) by default. When above 0, operations of `idempotent` names
    /// that no concurrency limit covers are claimed up to this many beyond
    /// the free handler slots: their attempts start (are recorded) in
    /// bigger claims, and each handler runs as soon as a slot frees. A
    /// worker that dies leaves up to this many attempts recorded that
    /// never called their handler; they end `lost` and run again (see
    /// `docs/consistency.md`). Non-idempotent operations are never claimed
    /// ahead. At most [`MAX_CLAIM_AHEAD`].
    pub idempotent_claim_ahead: usize,
    /// The janitor: how long finished operations and their history stay.
    pub retention: RetentionSettings,
    /// Serve Prometheus metrics on `http://ADDRESS/metrics` (for example
    /// `127.0.0.1:9187`); off when unset. Needs the `prometheus` feature;
    /// the metrics are listed in `docs/operating.md`.
    pub metrics_listen: Option<std::net::SocketAddr>,
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
            idempotent_claim_ahead: 0,
            retention: RetentionSettings::default(),
            metrics_listen: None,
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
    /// `PGOUTBOX_DATABASE__…` and `PGOUTBOX_WORKFLOW_SYSTEM__…` variables
    /// are read as settings. Any other `PGOUTBOX_…` variable is an error
    /// naming the variable it probably meant (`PGOUTBOX_DATABASE_URL`: did
    /// you mean `PGOUTBOX_DATABASE__URL`?), except the few that are not
    /// settings (`PGOUTBOX_CONFIG_FILE`, the command's `PGOUTBOX_SCHEMA`,
    /// the test support's). Every error says where the value came from
    /// (the variable, or the file); a value of `password`, `url` or
    /// `listen_url` is never repeated.
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
        check_environment(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()))?;
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
        // Only the two groups: the other PGOUTBOX_* variables (the CLI's,
        // the test support's) were checked above and are not settings.
        figment = figment.merge(Env::prefixed("PGOUTBOX_").split("__").filter(|k| {
            k.starts_with("database.")
                || k.starts_with("workflow_system.")
                || k.starts_with("dashboard.")
                || k.starts_with("relay.")
        }));
        let settings: Settings = figment.extract().map_err(|e| figment_error(&figment, &e))?;
        settings.validate().map_err(|mut e| {
            // Say where the offending value came from.
            if let Some(source) = figment.find_metadata(&e.key).and_then(|m| {
                let path: Vec<&str> = e.key.split('.').collect();
                source_of(m, &path)
            }) {
                e.reason = format!("{} (from {source})", e.reason);
            }
            e
        })?;
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
        if ws.idempotent_claim_ahead > MAX_CLAIM_AHEAD {
            return Err(SettingsError::new(
                "workflow_system.idempotent_claim_ahead",
                format!("must be at most {MAX_CLAIM_AHEAD}"),
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
        self.validate_relay()
    }

    /// The relay's settings: a URL of `nats`, `tls`, `ws` or `wss`
    /// servers, an existing credentials file, a stream name JetStream
    /// accepts, a publish timeout, an in-flight bound.
    fn validate_relay(&self) -> Result<(), SettingsError> {
        let nats = &self.relay.nats;
        if let Some(url) = &nats.url {
            for one in url.split(',') {
                let one = one.trim();
                let host = match one.split_once("://") {
                    Some(("nats" | "tls" | "ws" | "wss", host)) => host,
                    Some((scheme, _)) => {
                        return Err(SettingsError::new(
                            "relay.nats.url",
                            format!(
                                "`{scheme}://` is not a NATS scheme (`nats://`, `tls://`, `ws://`, `wss://`)"
                            ),
                        ));
                    }
                    None => one,
                };
                // The server, after any credentials.
                let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
                if host.is_empty() || host.contains(char::is_whitespace) {
                    return Err(SettingsError::new(
                        "relay.nats.url",
                        format!("`{}` names no server", redact_nats_url(one)),
                    ));
                }
            }
        }
        if let Some(file) = &nats.credentials_file
            && !file.is_file()
        {
            return Err(SettingsError::new(
                "relay.nats.credentials_file",
                format!("no such file: {}", file.display()),
            ));
        }
        if let Some(stream) = &nats.stream
            && (stream.is_empty()
                || stream.len() > 255
                || stream.contains(|c: char| {
                    c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\')
                }))
        {
            return Err(SettingsError::new(
                "relay.nats.stream",
                format!(
                    "`{stream}` is not a JetStream stream name (no dots, wildcards, slashes or spaces)"
                ),
            ));
        }
        if nats.publish_timeout.is_zero() || nats.publish_timeout > Duration::from_hours(1) {
            return Err(SettingsError::new(
                "relay.nats.publish_timeout",
                "must be longer than zero and at most 1h",
            ));
        }
        if nats.max_in_flight == 0 || nats.max_in_flight > 65_536 {
            return Err(SettingsError::new(
                "relay.nats.max_in_flight",
                "must be from 1 to 65536",
            ));
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

/// Variables named `PGOUTBOX_…` that are not settings: the file to read,
/// the command's schema, the test support's and the macro's switches.
/// Any other `PGOUTBOX_…` variable must name a setting.
const OTHER_VARIABLES: &[&str] = &[
    "PGOUTBOX_CONFIG_FILE",
    "PGOUTBOX_SCHEMA",
    "PGOUTBOX_MACROS_DEBUG",
    "PGOUTBOX_PG_BIN",
    "PGOUTBOX_SOAK",
    "PGOUTBOX_TEST_CLUSTER_DIR",
    "PGOUTBOX_TEST_NATS",
    "PGOUTBOX_TEST_PGBOUNCER",
    "PGOUTBOX_TEST_BROWSER",
    "PGOUTBOX_UPDATE_SNAPSHOTS",
];

/// Every setting's key (`workflow_system.retention.enabled`), groups
/// included (a whole group may be given as one dictionary).
fn setting_keys() -> Vec<String> {
    fn walk(prefix: &str, value: &serde_json::Value, keys: &mut Vec<String>) {
        if let serde_json::Value::Object(map) = value {
            for (name, value) in map {
                let key = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                walk(&key, value, keys);
                keys.push(key);
            }
        }
    }
    let mut keys = Vec::new();
    let defaults = serde_json::to_value(Settings::default()).expect("settings serialize");
    walk("", &defaults, &mut keys);
    keys
}

/// The environment variable of a setting's key.
fn variable_of(key: &str) -> String {
    format!("PGOUTBOX_{}", key.to_ascii_uppercase().replace('.', "__"))
}

/// Refuses `PGOUTBOX_…` variables that name no setting: silently ignored,
/// a mistyped `PGOUTBOX_DATABASE_URL` once left a worker on the default
/// server on localhost.
fn check_environment(names: impl Iterator<Item = String>) -> Result<(), SettingsError> {
    let keys = setting_keys();
    for name in names {
        let Some(rest) = name.strip_prefix("PGOUTBOX_") else {
            continue;
        };
        if OTHER_VARIABLES.contains(&name.as_str()) {
            continue;
        }
        let key = rest.to_ascii_lowercase().replace("__", ".");
        // A group's own name (`PGOUTBOX_DATABASE`) is not read: figment
        // takes only the keys under the groups.
        if key.contains('.') && keys.contains(&key) {
            continue;
        }
        let hint = suggest(&name, &keys)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return Err(SettingsError::new(
            &name,
            format!(
                "no setting `{key}`{hint} (settings are `PGOUTBOX_DATABASE__…` and \
                 `PGOUTBOX_WORKFLOW_SYSTEM__…`, with `__` between levels)"
            ),
        ));
    }
    Ok(())
}

/// The variable `name` was probably meant to be: the same letters with
/// other underscores, the only setting with its last part, or one a few
/// typing mistakes away.
fn suggest(name: &str, keys: &[String]) -> Option<String> {
    let candidates: Vec<String> = keys
        .iter()
        .map(|k| variable_of(k))
        .chain(OTHER_VARIABLES.iter().map(|&v| v.to_owned()))
        .collect();
    let upper = name.to_ascii_uppercase();
    let squash = |s: &str| s.replace('_', "");
    if let Some(c) = candidates.iter().find(|c| squash(c) == squash(&upper)) {
        return Some(c.clone());
    }
    let rest = &upper["PGOUTBOX_".len()..];
    let last = rest.rsplit("__").next().unwrap_or(rest);
    let same_last: Vec<&String> = candidates
        .iter()
        .filter(|c| c.rsplit("__").next() == Some(last))
        .collect();
    if let [only] = same_last[..] {
        return Some(only.clone());
    }
    candidates
        .iter()
        .map(|c| (levenshtein(c, &upper), c))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// Where a value came from: the file, or the environment variable.
fn source_of(metadata: &figment::Metadata, path: &[&str]) -> Option<String> {
    match &metadata.source {
        Some(figment::Source::File(file)) => Some(format!("`{}`", file.display())),
        // Env's own interpolation knows neither the prefix nor the `__`.
        _ if metadata.name.contains("environment") => {
            Some(format!("`{}`", variable_of(&path.join("."))))
        }
        _ => None,
    }
}

/// One line naming the key, what is wrong, and where the value came
/// from; for a list, the forms it accepts.
fn figment_error(figment: &Figment, e: &figment::Error) -> SettingsError {
    let key = e.path.join(".");
    if SECRET_KEYS.contains(&key.as_str()) {
        // Whatever the value was, it is not repeated.
        let mut reason = "expected text (the value is not shown: it is a secret)".to_owned();
        let path: Vec<&str> = e.path.iter().map(String::as_str).collect();
        if let Some(source) = e
            .metadata
            .as_ref()
            .or_else(|| figment.find_metadata(&key))
            .and_then(|m| source_of(m, &path))
        {
            reason = format!("{reason} (from {source})");
        }
        return SettingsError::new(&key, reason);
    }
    // A TOML syntax error comes in several lines: where (line and
    // column), the offending line with a caret under it (left out: the
    // error stays one line), and what was expected.
    let mut reason = e
        .kind
        .to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains('|'))
        .collect::<Vec<_>>()
        .join(" ");
    let metadata = e.metadata.as_ref().or_else(|| figment.find_metadata(&key));
    let path: Vec<&str> = e.path.iter().map(String::as_str).collect();
    if let Some(source) = metadata.and_then(|m| source_of(m, &path)) {
        reason = format!("{reason} (from {source})");
    }
    let from_file = metadata.is_some_and(|m| matches!(m.source, Some(figment::Source::File(_))));
    let key = match (key.is_empty(), from_file) {
        (false, _) => key,
        (true, true) => "PGOUTBOX_CONFIG_FILE".to_owned(),
        (true, false) => "settings".to_owned(),
    };
    SettingsError::new(&key, reason)
}

/// The settings that hold secrets: their values never appear in errors.
const SECRET_KEYS: &[&str] = &[
    "database.password",
    "database.url",
    "database.listen_url",
    "dashboard.token",
    "relay.nats.url",
];

/// A secret as text, whatever scalar the file or the environment made of
/// it: figment reads `PGOUTBOX_DATABASE__PASSWORD=123456` as a number, and
/// refusing it would print the password in the error.
fn secret_text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    struct Text(String);
    impl<'de> Deserialize<'de> for Text {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl serde::de::Visitor<'_> for Visitor {
                type Value = Text;

                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("text")
                }

                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text, E> {
                    Ok(Text(v.to_owned()))
                }

                fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Text, E> {
                    Ok(Text(v.to_string()))
                }

                fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Text, E> {
                    Ok(Text(v.to_string()))
                }

                fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Text, E> {
                    Ok(Text(v.to_string()))
                }

                fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Text, E> {
                    Ok(Text(v.to_string()))
                }

                fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Text, E> {
                    Ok(Text(v.to_string()))
                }

                fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Text, E> {
                    Ok(Text(v.to_string()))
                }

                fn visit_char<E: serde::de::Error>(self, v: char) -> Result<Text, E> {
                    Ok(Text(v.to_string()))
                }
            }
            deserializer.deserialize_any(Visitor)
        }
    }
    Ok(Option::<Text>::deserialize(deserializer)?.map(|t| t.0))
}

/// A list of names, from a list or from a comma list (`mail,sms`): in an
/// environment variable the comma list is the natural form.
fn name_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(
                "a list of names: `[\"mail\", \"sms\"]`, or in the environment \
                 `PGOUTBOX_WORKFLOW_SYSTEM__QUEUES='[\"mail\"]'` or a comma list `mail,sms`",
            )
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            Ok(text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect())
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut names = Vec::new();
            while let Some(name) = seq.next_element::<String>()? {
                names.push(name);
            }
            Ok(names)
        }
    }
    deserializer.deserialize_any(Visitor)
}

fn parse_url(url: &str) -> Result<PgConnectOptions, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("expected a `postgres://` or `postgresql://` URL".to_owned());
    }
    url.parse::<PgConnectOptions>().map_err(|e| e.to_string())
}
