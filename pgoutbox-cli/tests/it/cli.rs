//! The command explains itself: usage errors, help, database errors,
//! completions, a closed pipe.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;

use assert_cmd::Command;
use pgoutbox::testing::TestDatabase;

fn pgoutbox() -> Command {
    let mut cmd = Command::cargo_bin("pgoutbox").unwrap();
    cmd.env_remove("DATABASE_URL").env_remove("PGOUTBOX_SCHEMA");
    cmd
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = pgoutbox().args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn usage_errors_show_clap_whole_message() {
    let (code, _, err) = run(&["ops", "retry", "5"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("the following required arguments were not provided")
            && err.contains("--reason <REASON>"),
        "{err}"
    );
    let (code, _, err) = run(&["ops", "list", "--status", "nope"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains(
            "[possible values: waiting, pending, running, succeeded, retrying, dead, stalled, cancelled]"
        ),
        "{err}"
    );
    let (code, _, err) = run(&["stast"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("a similar subcommand exists: 'stats'"),
        "{err}"
    );
    // A bare `pgoutbox` prints the help.
    let (code, out, err) = run(&[]);
    assert_eq!(code, Some(2));
    let help = out + &err;
    assert!(
        help.contains("Usage: pgoutbox") && help.contains("Commands:"),
        "{help}"
    );
}

#[test]
fn help_has_examples_and_global_options_apart() {
    let commands: &[&[&str]] = &[
        &[],
        &["migrate", "up"],
        &["migrate", "status"],
        &["migrate", "sql"],
        &["ops", "list"],
        &["ops", "show"],
        &["ops", "retry"],
        &["ops", "cancel"],
        &["ops", "resolve"],
        &["ops", "replay"],
        &["ops", "tree"],
        &["workflow"],
        &["workflow", "cancel"],
        &["workflow", "retry"],
        &["stats"],
        &["workers"],
        &["schema", "export"],
        &["schema", "history"],
        &["schema", "check"],
        &["completions"],
        &["purge"],
    ];
    for command in commands {
        let (code, help, _) = run(&[*command, &["--help"][..]].concat());
        assert_eq!(code, Some(0), "{command:?}");
        assert!(
            help.contains("\nExamples:\n  pgoutbox "),
            "{command:?}:\n{help}"
        );
        let (own, global) = help
            .split_once("Global options:\n")
            .expect("a global heading");
        assert!(
            global.contains("--database-url") && global.contains("--json"),
            "{help}"
        );
        assert!(!own.contains("--database-url"), "{command:?}:\n{help}");
        assert!(
            !help.contains("=]"),
            "an unset variable shown as empty:\n{help}"
        );
        assert!(help.contains("[env: PGOUTBOX_SCHEMA]"), "{help}");
    }
    // A set variable shows its value.
    let out = pgoutbox()
        .env("PGOUTBOX_SCHEMA", "billing")
        .args(["stats", "--help"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("[env: PGOUTBOX_SCHEMA=billing]")
    );
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, script, err) = run(&["completions", shell]);
        assert_eq!(code, Some(0), "{shell}: {err}");
        assert!(
            script.contains("pgoutbox") && script.contains("resolve"),
            "{shell}"
        );
    }
    let (code, _, err) = run(&["completions", "tcsh"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("[possible values: bash, elvish, fish, powershell, zsh]"),
        "{err}"
    );
}

#[tokio::test]
async fn a_wrong_schema_says_what_to_run() {
    let db = TestDatabase::new().await.unwrap();
    for args in [
        &["ops", "list", "--schema", "nosuch"][..],
        &["stats", "--schema", "nosuch"],
        &["ops", "show", "1", "--schema", "nosuch"],
    ] {
        let out = pgoutbox()
            .env("DATABASE_URL", db.url())
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("error: schema `nosuch` has no pgoutbox tables"),
            "{err}"
        );
        assert!(
            err.contains("`pgoutbox migrate up --schema nosuch`"),
            "{err}"
        );
        assert!(!err.contains(" at line "), "{err}");
    }
}

#[tokio::test]
async fn piping_to_head_ends_quietly() {
    let db = TestDatabase::new().await.unwrap();
    sqlx::query(
        "INSERT INTO pgoutbox.operations (name, payload, schema_hash, max_attempts) \
         SELECT 'pipe.test', '{}', 'h', 3 FROM generate_series(1, 3000)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("pgoutbox"))
        .env("DATABASE_URL", db.url())
        .args(["ops", "list", "--limit", "3000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped here, as `head -1` would exit.
    assert!(first.starts_with("ID"), "{first}");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}
