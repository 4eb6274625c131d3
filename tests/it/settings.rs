//! Settings from the environment and from files, through a real process
//! (environment variables cannot be changed safely inside a threaded test
//! binary).

use std::process::{Command, Stdio};

use crate::support::test_db;

/// Runs the test worker with `env`, closing its stdin at once so that a
/// worker that does start stops again; returns (exit success, stdout,
/// stderr).
fn worker(env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgoutbox-test-worker"));
    for (key, _) in std::env::vars() {
        if key.starts_with("PGOUTBOX_") {
            cmd.env_remove(key);
        }
    }
    let child = cmd
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("worker runs");
    let output = wait_with_deadline(child, std::time::Duration::from_mins(1));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Waits for `child`, killing it (and failing the test) past `limit`: a hung
/// worker must not hang the suite.
fn wait_with_deadline(
    mut child: std::process::Child,
    limit: std::time::Duration,
) -> std::process::Output {
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("reaped");
            panic!(
                "the worker did not exit within {limit:?}; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("reaped")
}

fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "pgoutbox-settings-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn an_invalid_environment_value_is_one_error_naming_its_key() {
    let (ok, _, stderr) = worker(&[("PGOUTBOX_WORKFLOW_SYSTEM__N_WORKERS", "many")]);
    assert!(!ok);
    assert!(
        stderr.starts_with("error: invalid setting `workflow_system.n_workers`: "),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn an_unknown_key_is_refused() {
    let (ok, _, stderr) = worker(&[("PGOUTBOX_WORKFLOW_SYSTEM__N_WORKRES", "4")]);
    assert!(!ok);
    assert!(stderr.contains("n_workres"), "{stderr}");
}

#[test]
fn hostile_schema_and_channel_names_are_refused() {
    let (ok, _, stderr) = worker(&[("PGOUTBOX_DATABASE__SCHEMA", "x; drop table y")]);
    assert!(!ok);
    assert!(
        stderr.starts_with("error: invalid setting `database.schema`: invalid identifier"),
        "{stderr}"
    );
    let (ok, _, stderr) = worker(&[("PGOUTBOX_WORKFLOW_SYSTEM__CHANNEL", "Wake-Up")]);
    assert!(!ok);
    assert!(
        stderr.starts_with("error: invalid setting `workflow_system.channel`"),
        "{stderr}"
    );
}

#[test]
fn a_bad_duration_and_a_bad_url_name_their_keys() {
    let (ok, _, stderr) = worker(&[("PGOUTBOX_WORKFLOW_SYSTEM__LEASE", "ten minutes")]);
    assert!(!ok);
    assert!(
        stderr.contains("`workflow_system.lease`") && stderr.contains("invalid duration"),
        "{stderr}"
    );
    let (ok, _, stderr) = worker(&[("PGOUTBOX_DATABASE__URL", "mysql://x")]);
    assert!(!ok);
    assert!(
        stderr.starts_with("error: invalid setting `database.url`"),
        "{stderr}"
    );
}

#[test]
fn a_missing_or_unknown_config_file_is_refused() {
    let (ok, _, stderr) = worker(&[("PGOUTBOX_CONFIG_FILE", "/nonexistent/pgoutbox.toml")]);
    assert!(!ok);
    assert!(
        stderr.contains("`PGOUTBOX_CONFIG_FILE`: no such file"),
        "{stderr}"
    );
    let ini = temp_file("pgoutbox.ini", "x=1");
    let (ok, _, stderr) = worker(&[("PGOUTBOX_CONFIG_FILE", ini.to_str().unwrap())]);
    assert!(!ok);
    assert!(
        stderr.contains("expected a `.toml`, `.yaml` or `.yml` file"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_toml_file_configures_the_worker_and_the_environment_overrides_it() {
    let db = test_db().await;
    let toml = temp_file(
        "pgoutbox.toml",
        &format!(
            "[database]\nurl = \"{}\"\npool_max = 3\n\n[workflow_system]\nn_workers = 2\nlease = \"1s\"\n",
            db.url()
        ),
    );
    // pool_max = 3 is too small for 2 workers + 2: the file was read.
    let (ok, _, stderr) = worker(&[("PGOUTBOX_CONFIG_FILE", toml.to_str().unwrap())]);
    assert!(!ok);
    assert!(
        stderr.contains("the connection pool is too small: it allows 3 connections"),
        "{stderr}"
    );
    // The environment wins over the file.
    let (ok, stdout, stderr) = worker(&[
        ("PGOUTBOX_CONFIG_FILE", toml.to_str().unwrap()),
        ("PGOUTBOX_DATABASE__POOL_MAX", "6"),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("ready "), "{stdout}");
}

#[tokio::test]
async fn a_yaml_file_works_too() {
    let db = test_db().await;
    let yaml = temp_file(
        "pgoutbox.yaml",
        &format!(
            "database:\n  url: \"{}\"\n  pool_max: 6\nworkflow_system:\n  n_workers: 2\n  poll_interval: 250ms\n",
            db.url()
        ),
    );
    let (ok, stdout, stderr) = worker(&[("PGOUTBOX_CONFIG_FILE", yaml.to_str().unwrap())]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("stopped, aborted 0"), "{stdout}");
}

#[test]
fn an_unreachable_database_is_one_clear_error() {
    // Port 1 on loopback: nothing listens there.
    let (ok, _, stderr) = worker(&[(
        "PGOUTBOX_DATABASE__URL",
        "postgres://postgres@127.0.0.1:1/x",
    )]);
    assert!(!ok);
    assert!(
        stderr.starts_with("error: cannot connect to the database: ") && stderr.contains("refused"),
        "{stderr}"
    );
}

#[tokio::test]
async fn no_setting_value_makes_start_up_panic() {
    let db = test_db().await;
    let url = &*db.url();
    let huge = "18446744073709551615s";
    let cases: &[(&str, &[&str])] = &[
        ("PGOUTBOX_DATABASE__PORT", &["0", "65535"]),
        ("PGOUTBOX_DATABASE__POOL_MIN", &["0", "4294967295"]),
        ("PGOUTBOX_DATABASE__POOL_MAX", &["0", "4294967295"]),
        ("PGOUTBOX_DATABASE__ACQUIRE_TIMEOUT", &["0s", huge]),
        (
            "PGOUTBOX_WORKFLOW_SYSTEM__N_WORKERS",
            &["0", "1025", "18446744073709551615"],
        ),
        ("PGOUTBOX_WORKFLOW_SYSTEM__POLL_INTERVAL", &["0s", huge]),
        ("PGOUTBOX_WORKFLOW_SYSTEM__LEASE", &["0s", huge]),
        ("PGOUTBOX_WORKFLOW_SYSTEM__SHUTDOWN_WAIT", &["0s", huge]),
        (
            "PGOUTBOX_WORKFLOW_SYSTEM__MAX_ATTEMPTS",
            &["0", "4294967295"],
        ),
        ("PGOUTBOX_WORKFLOW_SYSTEM__BACKOFF_INITIAL", &["0s", huge]),
        ("PGOUTBOX_WORKFLOW_SYSTEM__BACKOFF_MAX", &["0s", huge]),
        ("PGOUTBOX_WORKFLOW_SYSTEM__HANDLER_TIMEOUT", &["0s", huge]),
        (
            "PGOUTBOX_WORKFLOW_SYSTEM__RETENTION__OPERATIONS",
            &["0s", huge],
        ),
        (
            "PGOUTBOX_WORKFLOW_SYSTEM__RETENTION__HISTORY",
            &["0s", huge],
        ),
        (
            "PGOUTBOX_WORKFLOW_SYSTEM__RETENTION__INTERVAL",
            &["0s", huge],
        ),
        (
            "PGOUTBOX_WORKFLOW_SYSTEM__RETENTION__BATCH_SIZE",
            &["0", "4294967295"],
        ),
    ];
    for (key, values) in cases {
        for value in *values {
            let (ok, _, stderr) = worker(&[("PGOUTBOX_DATABASE__URL", url), (key, value)]);
            assert!(!stderr.contains("panicked"), "{key}={value}: {stderr}");
            assert!(
                ok || (stderr.starts_with("error: ") && stderr.lines().count() == 1),
                "{key}={value}: {stderr}"
            );
        }
    }
    // The limits named in docs/operating.md.
    let (ok, _, stderr) = worker(&[
        ("PGOUTBOX_DATABASE__URL", url),
        ("PGOUTBOX_WORKFLOW_SYSTEM__N_WORKERS", "1025"),
    ]);
    assert!(!ok);
    assert_eq!(
        stderr,
        "error: invalid setting `workflow_system.n_workers`: must be at most 1024 (from \
         `PGOUTBOX_WORKFLOW_SYSTEM__N_WORKERS`)\n"
    );
    let (ok, _, stderr) = worker(&[
        ("PGOUTBOX_DATABASE__URL", url),
        ("PGOUTBOX_WORKFLOW_SYSTEM__RETENTION__HISTORY", "1d"),
    ]);
    assert!(!ok);
    assert_eq!(
        stderr,
        "error: invalid setting `workflow_system.retention.history`: must not be shorter than \
         `retention.operations` (attempts and actions would go before their operations) (from \
         `PGOUTBOX_WORKFLOW_SYSTEM__RETENTION__HISTORY`)\n"
    );
}

/// `Debug` of settings holding secrets (what `tracing::info!(?settings)`
/// logs) shows neither the password nor the passwords inside the URLs.
#[test]
fn secrets_do_not_appear_when_settings_are_printed() {
    let mut settings = pgoutbox::Settings::default();
    settings.database.password = Some("pw-field-secret".into());
    settings.database.url = Some("postgres://app:pw-url-secret@db:5432/app".into());
    settings.database.listen_url =
        Some("postgresql://listener@db/app?password=pw-query-secret&sslmode=prefer".into());
    for printed in [format!("{settings:?}"), format!("{settings:#?}")] {
        for secret in ["pw-field-secret", "pw-url-secret", "pw-query-secret"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(
            printed.contains("postgres://app:***@db:5432/app"),
            "{printed}"
        );
        assert!(printed.contains("sslmode=prefer"), "{printed}");
    }
}

/// A `PGOUTBOX_…` variable that names no setting is refused, with the
/// variable it probably meant: ignored, a mistyped URL variable once left
/// a worker on the default server on localhost.
#[test]
fn unknown_variables_are_refused_with_a_suggestion() {
    for (variable, meant) in [
        ("PGOUTBOX_DATABASE_URL", "PGOUTBOX_DATABASE__URL"),
        (
            "PGOUTBOX_WORKFLOW__N_WORKERS",
            "PGOUTBOX_WORKFLOW_SYSTEM__N_WORKERS",
        ),
        (
            "PGOUTBOX_WORKFLOW_SYSTEM__POLL_INTERVALL",
            "PGOUTBOX_WORKFLOW_SYSTEM__POLL_INTERVAL",
        ),
        ("PGOUTBOX_CONFIG_FIEL", "PGOUTBOX_CONFIG_FILE"),
    ] {
        let (ok, _, stderr) = worker(&[(variable, "postgres://app@db/app")]);
        assert!(!ok, "{variable}");
        assert!(
            stderr.starts_with(&format!("error: invalid setting `{variable}`: no setting"))
                && stderr.contains(&format!("did you mean `{meant}`?")),
            "{variable}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    // A group's own name is not a setting either: it would be ignored.
    let (ok, _, stderr) = worker(&[("PGOUTBOX_DATABASE", "{url=\"postgres://app@db/app\"}")]);
    assert!(!ok);
    assert!(
        stderr.starts_with("error: invalid setting `PGOUTBOX_DATABASE`: no setting `database`"),
        "{stderr}"
    );
}

/// Errors name where the value came from: the variable, or the file (with
/// the line of a syntax error).
#[test]
fn errors_name_their_source_and_a_syntax_error_its_line() {
    let (ok, _, stderr) = worker(&[("PGOUTBOX_WORKFLOW_SYSTEM__LEASE", "100ms")]);
    assert!(!ok);
    assert!(
        stderr.contains("(from `PGOUTBOX_WORKFLOW_SYSTEM__LEASE`)"),
        "{stderr}"
    );
    let toml = temp_file(
        "broken.toml",
        "[database]\npool_max = 3\n\n[workflow_system\nn_workers = 2\n",
    );
    let (ok, _, stderr) = worker(&[("PGOUTBOX_CONFIG_FILE", toml.to_str().unwrap())]);
    assert!(!ok);
    assert!(
        stderr.starts_with("error: invalid setting `PGOUTBOX_CONFIG_FILE`: ")
            && stderr.contains("line 4")
            && stderr.contains(&format!("(from `{}`)", toml.display())),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let yaml = temp_file(
        "broken.yaml",
        "database:\n  pool_max: 3\n workflow_system: x\n",
    );
    let (ok, _, stderr) = worker(&[("PGOUTBOX_CONFIG_FILE", yaml.to_str().unwrap())]);
    assert!(!ok);
    assert!(
        stderr.contains("line 3") && stderr.contains(&format!("(from `{}`)", yaml.display())),
        "{stderr}"
    );
    let toml = temp_file("values.toml", "[database]\npool_min = 40\n");
    let (ok, _, stderr) = worker(&[("PGOUTBOX_CONFIG_FILE", toml.to_str().unwrap())]);
    assert!(!ok);
    assert_eq!(
        stderr,
        format!(
            "error: invalid setting `database.pool_min`: must not exceed `pool_max` (from `{}`)\n",
            toml.display()
        )
    );
}

/// A list setting takes a list or a comma list; anything else is refused
/// with the forms it accepts.
#[tokio::test]
async fn queues_take_a_list_or_a_comma_list() {
    let db = test_db().await;
    let (ok, _, stderr) = worker(&[("PGOUTBOX_WORKFLOW_SYSTEM__QUEUES", "5")]);
    assert!(!ok);
    assert!(
        stderr.contains("`PGOUTBOX_WORKFLOW_SYSTEM__QUEUES='[\"mail\"]'` or a comma list"),
        "{stderr}"
    );
    for value in ["mail, sms", "[\"mail\", \"sms\"]"] {
        let (ok, stdout, stderr) = worker(&[
            ("PGOUTBOX_DATABASE__URL", &*db.url()),
            ("PGOUTBOX_WORKFLOW_SYSTEM__QUEUES", value),
        ]);
        assert!(ok && stdout.starts_with("ready "), "{value}: {stderr}");
        let worker_id: uuid::Uuid = stdout.lines().next().unwrap()["ready ".len()..]
            .parse()
            .unwrap();
        let queues: Vec<String> =
            sqlx::query_scalar("SELECT queues FROM pgoutbox.workers WHERE id = $1")
                .bind(worker_id)
                .fetch_one(db.pool())
                .await
                .unwrap();
        assert_eq!(queues, ["mail", "sms"], "{value}");
    }
}

/// Errors never repeat a secret: a password of digits is read as text
/// (not refused with its value in the message), a password that is not
/// text is refused without its value, and a failed connection does not
/// print the URL's password.
#[test]
fn secrets_do_not_appear_in_errors() {
    let (ok, _, stderr) = worker(&[
        ("PGOUTBOX_DATABASE__HOST", "127.0.0.1"),
        ("PGOUTBOX_DATABASE__PORT", "1"),
        ("PGOUTBOX_DATABASE__PASSWORD", "987654"),
    ]);
    assert!(!ok);
    assert!(
        stderr.starts_with("error: cannot connect to the database: ") && !stderr.contains("987654"),
        "{stderr}"
    );
    let (ok, _, stderr) = worker(&[("PGOUTBOX_DATABASE__PASSWORD", "[987654]")]);
    assert!(!ok);
    assert!(
        stderr.starts_with("error: invalid setting `database.password`: ")
            && !stderr.contains("987654"),
        "{stderr}"
    );
    let (ok, _, stderr) = worker(&[(
        "PGOUTBOX_DATABASE__URL",
        "postgres://app:pw-url-secret@127.0.0.1:1/x",
    )]);
    assert!(!ok);
    assert!(!stderr.contains("pw-url-secret"), "{stderr}");
}
