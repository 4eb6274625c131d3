//! `pgoutbox migrate …` and the command's error paths.

use assert_cmd::Command;
use pgoutbox::testing::TestDatabase;

fn pgoutbox() -> Command {
    let mut cmd = Command::cargo_bin("pgoutbox").unwrap();
    cmd.env_remove("DATABASE_URL").env_remove("PGOUTBOX_SCHEMA");
    cmd
}

fn stderr_line(output: &std::process::Output) -> String {
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    assert_eq!(
        stderr.lines().count(),
        1,
        "expected one line, got:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr.trim_end().to_owned()
}

#[tokio::test]
async fn up_then_status_then_up_again() {
    let db = TestDatabase::empty().await.unwrap();
    let url = db.url();

    let out = pgoutbox()
        .args(["migrate", "status", "--database-url", &url])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with(
            "schema `pgoutbox`: database at version 0, binary at version 3 (3 pending)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("pending     1  storage"), "{stdout}");
    assert!(stdout.contains("pending     2  hardening"), "{stdout}");
    assert!(stdout.contains("pending     3  relay"), "{stdout}");

    let out = pgoutbox()
        .args(["migrate", "up"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "applied migration 1 (storage) to schema `pgoutbox`\n\
         applied migration 2 (hardening) to schema `pgoutbox`\n\
         applied migration 3 (relay) to schema `pgoutbox`\n"
    );

    let out = pgoutbox()
        .args(["migrate", "up"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "schema `pgoutbox` is up to date at version 3\n"
    );

    let out = pgoutbox()
        .args(["migrate", "status", "--database-url", &url])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("(up to date)")
            && stdout.contains("applied     1  storage")
            && stdout.contains("applied     2  hardening"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_custom_schema() {
    let db = TestDatabase::empty().await.unwrap();
    let out = pgoutbox()
        .args([
            "migrate",
            "up",
            "--schema",
            "billing_outbox",
            "--database-url",
            &db.url(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM billing_outbox.operations")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn sql_needs_no_database() {
    let out = pgoutbox()
        .args(["migrate", "sql", "--schema", "exported"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let sql = String::from_utf8(out.stdout).unwrap();
    assert!(sql.contains("CREATE TABLE \"exported\".operations"));
    assert!(sql.trim_end().ends_with("COMMIT;"));
}

#[test]
fn a_hostile_schema_name_is_clap_message_and_exit_2() {
    let out = pgoutbox()
        .args([
            "migrate",
            "up",
            "--schema",
            "x; drop table y",
            "--database-url",
            "postgres://127.0.0.1:1/x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let line = String::from_utf8(out.stderr).unwrap();
    assert!(
        line.starts_with("error: invalid value 'x; drop table y' for '--schema <SCHEMA>'"),
        "{line}"
    );
    assert!(
        line.contains("expected only lower-case letters, digits and `_`"),
        "{line}"
    );
}

#[test]
fn a_missing_database_url_is_one_line_and_exit_1() {
    let out = pgoutbox().args(["migrate", "up"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_line(&out),
        "error: no database given: pass `--database-url`, set DATABASE_URL, or configure the \
         workers' `PGOUTBOX_DATABASE__URL` or `PGOUTBOX_CONFIG_FILE`"
    );
}

#[test]
fn a_bad_url_is_one_line_and_exit_1() {
    let out = pgoutbox()
        .args(["migrate", "up", "--database-url", "mysql://nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_line(&out).starts_with("error: invalid database URL: "));
}

#[test]
fn an_unreachable_server_is_one_line_and_exit_1() {
    // Port 1 on loopback: nothing listens there.
    let out = pgoutbox()
        .args([
            "migrate",
            "status",
            "--database-url",
            "postgres://postgres@127.0.0.1:1/postgres",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_line(&out).starts_with("error: cannot connect to the database: "));
}

#[test]
fn an_unknown_subcommand_is_clap_message_and_exit_2() {
    let out = pgoutbox().args(["migrate", "sideways"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("error: unrecognized subcommand 'sideways'"),
        "{err}"
    );
    assert!(err.contains("Usage: pgoutbox migrate"), "{err}");
}

#[tokio::test]
async fn migrate_sql_applies_twice_and_keeps_its_comments() {
    let db = TestDatabase::new().await.unwrap();
    for schema in ["exported", "pgoutbox"] {
        let out = pgoutbox()
            .args(["migrate", "sql", "--schema", schema])
            .output()
            .unwrap();
        assert!(out.status.success());
        let sql = String::from_utf8(out.stdout).unwrap();
        assert!(
            sql.contains("-- `{schema}` stands for the configured schema"),
            "comments are left as written"
        );
        // Twice on a fresh schema, and over one that `migrate up` made.
        for _ in 0..2 {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .execute(db.pool())
                .await
                .unwrap_or_else(|e| panic!("{schema}: {e}"));
        }
        let versions: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{schema}\".pgoutbox_migrations"
        )))
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(versions, pgoutbox::migrate::latest_version());
        let out = pgoutbox()
            .env("DATABASE_URL", db.url())
            .args(["migrate", "status", "--schema", schema])
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(stdout.contains("(up to date)"), "{stdout}");
    }
}

/// The command reads the workers' configuration: `PGOUTBOX_DATABASE__*`
/// and the file named by `PGOUTBOX_CONFIG_FILE` (its schema too), with
/// `--database-url` / `DATABASE_URL` still winning; an unknown
/// `PGOUTBOX_*` variable is refused as it is by workers.
#[tokio::test]
async fn the_command_reads_the_workers_configuration() {
    let db = TestDatabase::empty().await.unwrap();
    let url = db.url();
    let out = pgoutbox()
        .args(["migrate", "status"])
        .env("PGOUTBOX_DATABASE__URL", &url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("schema `pgoutbox`: database at version 0"),
    );

    let dir = std::env::temp_dir().join(format!("pgoutbox-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("workers.toml");
    std::fs::write(
        &file,
        format!("[database]\nurl = \"{url}\"\nschema = \"billing_outbox\"\n"),
    )
    .unwrap();
    let out = pgoutbox()
        .args(["migrate", "up"])
        .env("PGOUTBOX_CONFIG_FILE", &file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("applied migration 1 (storage) to schema `billing_outbox`"),
    );

    // The URL option wins over the workers' (unreachable) URL.
    let out = pgoutbox()
        .args(["migrate", "status", "--database-url", &url])
        .env(
            "PGOUTBOX_DATABASE__URL",
            "postgres://postgres@127.0.0.1:1/x",
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let out = pgoutbox()
        .args(["migrate", "status"])
        .env("PGOUTBOX_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_line(&out).contains("did you mean `PGOUTBOX_DATABASE__URL`?"),
        "{out:?}"
    );
}
