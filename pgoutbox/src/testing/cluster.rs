//! A private, throwaway PostgreSQL cluster started from the local
//! installation's binaries.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::TestDbError;

/// How to shut a cluster down, as `pg_ctl stop -m` names it.
///
/// ```no_run
/// use pgoutbox::testing::{Cluster, ShutdownMode};
///
/// let cluster = Cluster::start_private()?;
/// // As a crash would: the server recovers from its WAL on the next start.
/// cluster.restart(ShutdownMode::Immediate)?;
/// assert!(cluster.is_running());
/// # Ok::<(), pgoutbox::testing::TestDbError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Wait for clients to disconnect.
    Smart,
    /// Disconnect clients, roll back their transactions, checkpoint.
    Fast,
    /// Abort at once, as a crash would; the next start recovers from WAL.
    Immediate,
}

impl ShutdownMode {
    fn as_arg(self) -> &'static str {
        match self {
            ShutdownMode::Smart => "smart",
            ShutdownMode::Fast => "fast",
            ShutdownMode::Immediate => "immediate",
        }
    }
}

/// A PostgreSQL cluster in a directory of its own, listening on a free
/// loopback port with `trust` authentication for the `postgres` user.
///
/// The data directory, the socket and the server log (`server.log`) live
/// under `dir/pg`, which is owned by the server's user: when the tests run as
/// root, every PostgreSQL program runs as `postgres` through `runuser`.
///
/// An owned cluster (see [`Cluster::start_private`]) is stopped and removed
/// when dropped; fault tests use one to restart the server at will.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use pgoutbox::testing::{Cluster, ShutdownMode};
///
/// let cluster = Cluster::start_private()?;
/// let pool = sqlx::PgPool::connect(&cluster.url("postgres")).await?;
/// pgoutbox::migrate::run(&pool, &pgoutbox::Identifier::default()).await?;
/// cluster.stop(ShutdownMode::Fast)?;
/// assert!(sqlx::query("SELECT 1").execute(&pool).await.is_err()); // the server is gone
/// cluster.start()?;
/// sqlx::query("SELECT 1").execute(&pool).await?; // the pool reconnects
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    run_as: Option<User>,
    owned: bool,
}

#[derive(Debug, Clone)]
struct User {
    name: String,
    uid: u32,
    gid: u32,
}

impl Cluster {
    /// Initialises and starts a cluster of its own under a fresh temporary
    /// directory; it is stopped and deleted when dropped.
    ///
    /// ```no_run
    /// let cluster = pgoutbox::testing::Cluster::start_private()?;
    /// assert!(cluster.is_running());
    /// drop(cluster); // stopped, and its directory deleted
    /// # Ok::<(), pgoutbox::testing::TestDbError>(())
    /// ```
    pub fn start_private() -> Result<Cluster, TestDbError> {
        let dir = std::env::temp_dir().join(format!(
            "pgoutbox-c{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple().to_string().split_at(8).0
        ));
        let mut cluster = Cluster::init(&dir)?;
        cluster.owned = true;
        cluster.start()?;
        Ok(cluster)
    }

    /// Creates a new cluster under `dir` (which must not hold one yet) on a
    /// free port, without starting it.
    pub(super) fn init(dir: &Path) -> Result<Cluster, TestDbError> {
        let bin = find_bin_dir()?;
        let run_as = if running_as_root() {
            Some(lookup_user("postgres")?)
        } else {
            None
        };
        let pg = dir.join("pg");
        fs::create_dir_all(&pg).map_err(|e| io_error(&pg, &e))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| io_error(dir, &e))?;
        if let Some(user) = &run_as {
            std::os::unix::fs::chown(&pg, Some(user.uid), Some(user.gid))
                .map_err(|e| io_error(&pg, &e))?;
        }
        let port = free_port()?;
        let cluster = Cluster {
            dir: dir.to_owned(),
            bin,
            port,
            run_as,
            owned: false,
        };
        cluster.run_pg(
            "initdb",
            &[
                "-D",
                &cluster.data_dir(),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        let conf = format!(
            "\n# written by pgoutbox's test support\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{sock}'\n\
             max_connections = 300\n\
             fsync = off\n\
             full_page_writes = off\n\
             shared_buffers = '128MB'\n",
            sock = cluster.pg_dir().display()
        );
        // The configuration is written by the server's user so that it keeps
        // owning every file of its data directory.
        cluster.run_shell(
            &format!(
                "printf '%s' \"$1\" >> '{}/postgresql.conf'",
                cluster.data_dir()
            ),
            &conf,
        )?;
        Ok(cluster)
    }

    /// Reopens a cluster that [`Cluster::init`] created under `dir` earlier,
    /// possibly by another process.
    pub(super) fn reopen(dir: &Path, bin: PathBuf, port: u16) -> Result<Cluster, TestDbError> {
        let run_as = if running_as_root() {
            Some(lookup_user("postgres")?)
        } else {
            None
        };
        Ok(Cluster {
            dir: dir.to_owned(),
            bin,
            port,
            run_as,
            owned: false,
        })
    }

    /// Starts the server and waits until it accepts connections.
    ///
    /// ```no_run
    /// use pgoutbox::testing::{Cluster, ShutdownMode};
    ///
    /// let cluster = Cluster::start_private()?;
    /// cluster.stop(ShutdownMode::Immediate)?;
    /// cluster.start()?; // same port, same data
    /// assert!(cluster.is_running());
    /// # Ok::<(), pgoutbox::testing::TestDbError>(())
    /// ```
    pub fn start(&self) -> Result<(), TestDbError> {
        self.run_pg(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                &self.data_dir(),
                "-l",
                &self.log_file().display().to_string(),
            ],
        )
    }

    /// Stops the server.
    ///
    /// ```no_run
    /// use pgoutbox::testing::{Cluster, ShutdownMode};
    ///
    /// let cluster = Cluster::start_private()?;
    /// cluster.stop(ShutdownMode::Fast)?;
    /// assert!(!cluster.is_running());
    /// # Ok::<(), pgoutbox::testing::TestDbError>(())
    /// ```
    pub fn stop(&self, mode: ShutdownMode) -> Result<(), TestDbError> {
        self.run_pg(
            "pg_ctl",
            &[
                "stop",
                "-w",
                "-t",
                "60",
                "-D",
                &self.data_dir(),
                "-m",
                mode.as_arg(),
            ],
        )
    }

    /// Stops the server in `mode` and starts it again on the same port.
    ///
    /// ```no_run
    /// use pgoutbox::testing::{Cluster, ShutdownMode};
    ///
    /// let cluster = Cluster::start_private()?;
    /// let port = cluster.port();
    /// cluster.restart(ShutdownMode::Fast)?;
    /// assert_eq!(cluster.port(), port);
    /// assert!(cluster.is_running());
    /// # Ok::<(), pgoutbox::testing::TestDbError>(())
    /// ```
    pub fn restart(&self, mode: ShutdownMode) -> Result<(), TestDbError> {
        self.stop(mode)?;
        self.start()
    }

    /// Whether the server is running.
    ///
    /// ```no_run
    /// use pgoutbox::testing::{Cluster, ShutdownMode};
    ///
    /// let cluster = Cluster::start_private()?;
    /// assert!(cluster.is_running());
    /// cluster.stop(ShutdownMode::Smart)?;
    /// assert!(!cluster.is_running());
    /// # Ok::<(), pgoutbox::testing::TestDbError>(())
    /// ```
    pub fn is_running(&self) -> bool {
        self.pg_command("pg_ctl", &["status", "-D", &self.data_dir()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The loopback port the server listens on.
    ///
    /// ```no_run
    /// let cluster = pgoutbox::testing::Cluster::start_private()?;
    /// assert!(cluster.url("postgres").contains(&format!(":{}/", cluster.port())));
    /// # Ok::<(), pgoutbox::testing::TestDbError>(())
    /// ```
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `database` as the `postgres` superuser.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = pgoutbox::testing::Cluster::start_private()?;
    /// let pool = sqlx::PgPool::connect(&cluster.url("postgres")).await?;
    /// let user: String = sqlx::query_scalar("SELECT current_user").fetch_one(&pool).await?;
    /// assert_eq!(user, "postgres");
    /// # Ok(())
    /// # }
    /// ```
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The directory of the binaries in use (`initdb`, `pg_ctl`, …).
    ///
    /// ```no_run
    /// let cluster = pgoutbox::testing::Cluster::start_private()?;
    /// assert!(cluster.bin_dir().join("pg_ctl").exists());
    /// # Ok::<(), pgoutbox::testing::TestDbError>(())
    /// ```
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The server's log file.
    ///
    /// ```no_run
    /// let cluster = pgoutbox::testing::Cluster::start_private()?;
    /// let log = std::fs::read_to_string(cluster.log_file()).unwrap_or_default();
    /// assert!(log.contains("database system is ready to accept connections"));
    /// # Ok::<(), pgoutbox::testing::TestDbError>(())
    /// ```
    pub fn log_file(&self) -> PathBuf {
        self.pg_dir().join("server.log")
    }

    pub(super) fn stop_command(&self) -> Vec<String> {
        let mut cmd = Vec::new();
        if let Some(user) = &self.run_as {
            cmd.extend([
                "runuser".to_owned(),
                "-u".to_owned(),
                user.name.clone(),
                "--".to_owned(),
            ]);
        }
        cmd.push(self.bin.join("pg_ctl").display().to_string());
        cmd.extend(
            ["stop", "-w", "-t", "60", "-m", "fast", "-D"]
                .iter()
                .map(|s| (*s).to_owned()),
        );
        cmd.push(self.data_dir());
        cmd
    }

    fn pg_dir(&self) -> PathBuf {
        self.dir.join("pg")
    }

    fn data_dir(&self) -> String {
        self.pg_dir().join("data").display().to_string()
    }

    fn pg_command(&self, program: &str, args: &[&str]) -> Command {
        let program = self.bin.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", &user.name, "--"]).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        cmd.args(args).stdin(Stdio::null());
        cmd
    }

    /// Runs a PostgreSQL program to completion, its output captured so that
    /// nothing inherits (and keeps open) the caller's stdout.
    fn run_pg(&self, program: &str, args: &[&str]) -> Result<(), TestDbError> {
        let output = self
            .pg_command(program, args)
            .output()
            .map_err(|e| TestDbError::Cluster(format!("cannot run `{program}`: {e}")))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(TestDbError::Cluster(format!(
                "`{program} {}` failed ({}): {}{}; server log: {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                String::from_utf8_lossy(&output.stdout).trim(),
                self.log_file().display()
            )))
        }
    }

    fn run_shell(&self, script: &str, arg: &str) -> Result<(), TestDbError> {
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", &user.name, "--", "sh"]);
                cmd
            }
            None => Command::new("sh"),
        };
        let output = cmd
            .args(["-c", script, "sh", arg])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| TestDbError::Cluster(format!("cannot run `sh`: {e}")))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(TestDbError::Cluster(format!(
                "writing the server configuration failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.owned {
            if self.is_running() {
                let _ = self.stop(ShutdownMode::Immediate);
            }
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Finds the directory holding `initdb` and `pg_ctl`: `PGOUTBOX_PG_BIN`, then
/// `PATH`, then Debian's `/usr/lib/postgresql/<version>/bin` (newest first).
pub(super) fn find_bin_dir() -> Result<PathBuf, TestDbError> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("PGOUTBOX_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if has_both(&dir) {
            Ok(dir)
        } else {
            Err(TestDbError::NoPostgres(format!(
                "PGOUTBOX_PG_BIN={} holds no `initdb` and `pg_ctl`",
                dir.display()
            )))
        };
    }
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| has_both(d))
    {
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        TestDbError::NoPostgres(
            "no PostgreSQL installation found (no `initdb` on PATH or in /usr/lib/postgresql/*/bin)"
                .to_owned(),
        )
    })
}

fn running_as_root() -> bool {
    effective_uid() == Some(0)
}

/// The process's effective user id, from `/proc/self/status`
/// ("Uid:\treal\teffective\tsaved\tfs").
pub(super) fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn lookup_user(name: &str) -> Result<User, TestDbError> {
    let passwd =
        fs::read_to_string("/etc/passwd").map_err(|e| io_error(Path::new("/etc/passwd"), &e))?;
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next()? == name).then_some(())?;
            let _password = fields.next()?;
            let uid = fields.next()?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            Some(User {
                name: name.to_owned(),
                uid,
                gid,
            })
        })
        .ok_or_else(|| {
            TestDbError::Cluster(format!(
                "running as root, but there is no `{name}` user to run PostgreSQL as \
                 (PostgreSQL refuses to run as root): create it or set DATABASE_URL"
            ))
        })
}

fn free_port() -> Result<u16, TestDbError> {
    // The port is free now; another process could take it before the server
    // binds it, in which case starting fails with a clear message.
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| TestDbError::Cluster(format!("cannot find a free loopback port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| TestDbError::Cluster(format!("cannot find a free loopback port: {e}")))
}

pub(super) fn io_error(path: &Path, e: &io::Error) -> TestDbError {
    TestDbError::Cluster(format!("{}: {e}", path.display()))
}

/// Writes `contents` to `path` atomically (write, then rename).
pub(super) fn write_atomic(path: &Path, contents: &str) -> Result<(), TestDbError> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(|e| io_error(&tmp, &e))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| io_error(&tmp, &e))?;
    fs::rename(&tmp, path).map_err(|e| io_error(path, &e))
}

/// How long the shared cluster outlives its last user.
pub(super) const IDLE_SECONDS: u32 = 5;
