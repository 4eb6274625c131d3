//! The cluster shared by every test binary of one run.
//!
//! Each process that uses it holds a shared `flock` on `users.lock` for its
//! whole life (the kernel drops it when the process exits, however it
//! exits). Starting, reusing and stopping the cluster happen under an
//! exclusive `admin.lock`. A small detached watchdog stops the cluster and
//! deletes its directory once nobody has held `users.lock` for a few seconds,
//! so a test run leaves no server behind and the next binary of the same run
//! (started a moment later by cargo) finds the server still up.

use std::fs::{self, File, OpenOptions};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::TestDbError;
use super::cluster::{self, Cluster, IDLE_SECONDS};

/// Keeps this process registered as a user of the shared cluster.
static USER_LOCK: OnceLock<File> = OnceLock::new();

/// The directory of the shared cluster: `PGOUTBOX_TEST_CLUSTER_DIR`, or a
/// short per-user path under `/tmp` (the socket path must stay short).
fn shared_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PGOUTBOX_TEST_CLUSTER_DIR") {
        return PathBuf::from(dir);
    }
    let uid = cluster::effective_uid().map_or_else(|| "x".to_owned(), |uid| uid.to_string());
    PathBuf::from(format!("/tmp/pgoutbox-test-{uid}"))
}

fn open_lock(path: &Path) -> Result<File, TestDbError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| cluster::io_error(path, &e))
}

/// Returns the connection URL of the shared cluster's `postgres` database,
/// starting the cluster if no process of this run has yet. Blocking.
pub(super) fn shared_cluster_url() -> Result<String, TestDbError> {
    let dir = shared_dir();
    fs::create_dir_all(&dir).map_err(|e| cluster::io_error(&dir, &e))?;
    let admin = open_lock(&dir.join("admin.lock"))?;
    admin.lock().map_err(|e| cluster::io_error(&dir, &e))?;

    if USER_LOCK.get().is_none() {
        let users = open_lock(&dir.join("users.lock"))?;
        users
            .lock_shared()
            .map_err(|e| cluster::io_error(&dir, &e))?;
        let _ = USER_LOCK.set(users);
    }

    let state_file = dir.join("cluster");
    let existing = fs::read_to_string(&state_file).ok().and_then(|state| {
        let (port, bin) = state.trim().split_once(' ')?;
        Cluster::reopen(&dir, PathBuf::from(bin), port.parse().ok()?).ok()
    });
    let cluster = match existing {
        Some(cluster) if cluster.is_running() => cluster,
        stale => {
            // A cluster directory without a running server is the remains
            // of a killed run: start afresh.
            if let Some(stale) = stale {
                let _ = stale.stop(cluster::ShutdownMode::Immediate);
            }
            let _ = fs::remove_file(&state_file);
            let pg = dir.join("pg");
            if pg.exists() {
                fs::remove_dir_all(&pg).map_err(|e| cluster::io_error(&pg, &e))?;
            }
            let cluster = Cluster::init(&dir)?;
            cluster.start()?;
            cluster::write_atomic(
                &state_file,
                &format!("{} {}", cluster.port(), cluster.bin_dir().display()),
            )?;
            cluster
        }
    };
    ensure_watchdog(&dir, &cluster)?;
    drop(admin);
    Ok(cluster.url("postgres"))
}

/// Starts the watchdog unless one is alive already.
fn ensure_watchdog(dir: &Path, cluster: &Cluster) -> Result<(), TestDbError> {
    let pid_file = dir.join("watchdog.pid");
    let alive = fs::read_to_string(&pid_file)
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
    if alive {
        return Ok(());
    }
    // The watchdog takes the admin lock each second, checks whether any test
    // process still holds `users.lock`, and after IDLE_SECONDS idle seconds
    // in a row stops the server and removes the cluster's files. Its stdio
    // is /dev/null so that it never keeps a CI pipe open.
    let script = format!(
        r#"dir="$1"; shift
idle=0
while sleep 1; do
  exec 8>"$dir/admin.lock"
  flock -x 8
  if flock -n -x "$dir/users.lock" -c true; then idle=$((idle + 1)); else idle=0; fi
  if [ "$idle" -ge {IDLE_SECONDS} ]; then
    "$@" >/dev/null 2>&1
    rm -rf "$dir/pg" "$dir/cluster" "$dir/watchdog.pid"
    exit 0
  fi
  exec 8>&-
done"#
    );
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("pgoutbox-test-watchdog")
        .arg(dir)
        .args(cluster.stop_command())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C aimed at `cargo test` leaves it be.
        .process_group(0)
        .spawn()
        .map_err(|e| TestDbError::Cluster(format!("cannot start the cluster watchdog: {e}")))?;
    cluster::write_atomic(&pid_file, &child.id().to_string())
}
