//! pgbouncer in transaction pooling mode between the workers (and the
//! publishers) and PostgreSQL: a pgbouncer process of the test's own in
//! front of the shared test cluster, and the runtime tests of
//! `runtime::through_pgbouncer` that go through it.
//!
//! pgbouncer is a Debian package (`apt-get install pgbouncer`, which
//! `.ci/run` does when it is missing), so these tests are behind a switch:
//! they run when `PGOUTBOX_TEST_PGBOUNCER=1` (`.ci/run` sets it after
//! installing pgbouncer), and a run with the switch on and no pgbouncer
//! fails loudly. Without the switch, `cargo test --workspace` passes on a
//! machine with only Rust and PostgreSQL, and each of these tests says on
//! stderr that it did not run.

use std::io::Read as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A pgbouncer process on a free loopback port, pooling by transaction and
/// routing every database name to the test cluster (`* = host=… port=…`),
/// so each test's own database goes through it. Killed, and its directory
/// removed, when dropped.
pub(crate) struct Pgbouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Pgbouncer {
    /// Starts pgbouncer in front of the server that test databases live on
    /// and waits until it accepts connections.
    pub(crate) async fn start() -> Pgbouncer {
        let server = pgoutbox::testing::server_url()
            .await
            .expect("test server")
            .parse::<sqlx::postgres::PgConnectOptions>()
            .expect("test server URL");
        let (host, port) = (server.get_host().to_owned(), server.get_port());
        tokio::task::spawn_blocking(move || Pgbouncer::start_blocking(&host, port))
            .await
            .expect("pgbouncer start-up")
    }

    fn start_blocking(server_host: &str, server_port: u16) -> Pgbouncer {
        let bin = find_pgbouncer();
        let run_as = running_as_root().then(postgres_user);
        let dir = std::env::temp_dir().join(format!(
            "pgoutbox-bouncer-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        std::fs::create_dir(&dir).expect("pgbouncer directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let port = free_port();
        // `auth_type = trust` checks no password, but pgbouncer still only
        // admits the users listed in `auth_file`. `extra_float_digits` is a
        // start-up parameter sqlx sends and pgbouncer does not track: it
        // would refuse the connection unless told to ignore it.
        let ini = format!(
            "[databases]\n\
             * = host={server_host} port={server_port}\n\
             \n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {dir}/userlist.txt\n\
             pool_mode = transaction\n\
             max_client_conn = 1000\n\
             default_pool_size = 20\n\
             ignore_startup_parameters = extra_float_digits\n\
             logfile = {dir}/pgbouncer.log\n\
             pidfile = {dir}/pgbouncer.pid\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        std::fs::write(dir.join("userlist.txt"), "\"postgres\" \"\"\n").unwrap();
        let mut cmd = match &run_as {
            // pgbouncer refuses to run as root: as PostgreSQL itself in the
            // test support, it runs as `postgres`, which owns its files.
            Some((uid, gid)) => {
                for entry in std::fs::read_dir(&dir).unwrap() {
                    std::os::unix::fs::chown(entry.unwrap().path(), Some(*uid), Some(*gid))
                        .unwrap();
                }
                std::os::unix::fs::chown(&dir, Some(*uid), Some(*gid)).unwrap();
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", "postgres", "--"]).arg(&bin);
                cmd
            }
            None => Command::new(&bin),
        };
        let child = cmd
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let mut bouncer = Pgbouncer { child, dir, port };
        bouncer.wait_until_ready();
        bouncer
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pgbouncer exited at start-up ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen within 20s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL of `database` through pgbouncer.
    pub(crate) fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// pgbouncer's log so far.
    pub(crate) fn log(&self) -> String {
        let mut log = String::new();
        if let Ok(mut file) = std::fs::File::open(self.dir.join("pgbouncer.log")) {
            let _ = file.read_to_string(&mut log);
        }
        log
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("pgbouncer.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        // SIGTERM is pgbouncer's immediate shutdown; `runuser` (as root)
        // exits with its child, which it reaps. SIGKILL if that takes long.
        let pid = self.pid();
        let signal = |name: &str| {
            if let Some(pid) = pid {
                let _ = Command::new("kill")
                    .args([name, &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        };
        signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while pid.is_some()
            && matches!(self.child.try_wait(), Ok(None))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            signal("-KILL");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The switch that turns the pgbouncer tests on.
pub(crate) const SWITCH: &str = "PGOUTBOX_TEST_PGBOUNCER";

/// Whether the pgbouncer tests run: `PGOUTBOX_TEST_PGBOUNCER=1` turns them
/// on, unset or `0` leaves them off (saying so on stderr, under the test's
/// name); any other value is a mistake and fails the test.
pub(crate) fn wanted(test: &str) -> bool {
    match std::env::var(SWITCH).as_deref() {
        Ok("1") => true,
        Ok("0") | Err(std::env::VarError::NotPresent) => {
            eprintln!(
                "{test}: not run: set {SWITCH}=1 to run the pgbouncer tests (needs `pgbouncer`)"
            );
            false
        }
        Ok(other) => panic!("{SWITCH} must be `1` or `0`, not {other:?}"),
        Err(std::env::VarError::NotUnicode(_)) => {
            panic!("{SWITCH} must be `1` or `0`, not a value that is not UTF-8")
        }
    }
}

/// `pgbouncer` on `PATH`, or Debian's `/usr/sbin/pgbouncer`; a missing
/// pgbouncer fails the test.
fn find_pgbouncer() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("pgbouncer"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/pgbouncer")).filter(|p| p.is_file()))
        .expect(
            "pgbouncer is not installed, but PGOUTBOX_TEST_PGBOUNCER=1 asks for the pgbouncer \
             tests: `apt-get install pgbouncer` (`.ci/run` does it), or unset the switch",
        )
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2)?.parse::<u32>().ok()
        })
        == Some(0)
}

/// The uid and gid of `postgres`.
fn postgres_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string(Path::new("/etc/passwd")).unwrap();
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres"))
                .then(|| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))?
        })
        .expect("running as root, but there is no `postgres` user to run pgbouncer as")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

#[tokio::test]
async fn pgbouncer_routes_a_test_database_in_transaction_mode() {
    if !wanted("pgbouncer_routes_a_test_database_in_transaction_mode") {
        return;
    }
    // Not `support::test_db`: `support` builds on this module, and the
    // imports of the tests flow one way.
    let db = pgoutbox::testing::TestDatabase::new()
        .await
        .expect("test database");
    let bouncer = Pgbouncer::start().await;
    let options = bouncer
        .url(db.name())
        .parse::<sqlx::postgres::PgConnectOptions>()
        .unwrap()
        .statement_cache_capacity(0);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", bouncer.log()));
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .persistent(false)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(name, db.name());
    pool.close().await;
}
