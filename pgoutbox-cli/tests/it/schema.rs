//! `pgoutbox schema export|history|check`.

use assert_cmd::Command;
use pgoutbox::testing::TestDatabase;

fn pgoutbox(db: &TestDatabase) -> Command {
    let mut cmd = Command::cargo_bin("pgoutbox").unwrap();
    cmd.env_remove("PGOUTBOX_SCHEMA")
        .env("DATABASE_URL", db.url());
    cmd
}

const V1: &str =
    r#"{"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]}"#;
const V2: &str = r#"{"type": "object", "properties": {"to": {"type": "string"}, "cc": {"type": "string"}}, "required": ["to", "cc"]}"#;

async fn setup() -> TestDatabase {
    let db = TestDatabase::new().await.unwrap();
    sqlx::query(
        "INSERT INTO pgoutbox.operation_types (name, schema_hash, json_schema, first_seen_at, last_seen_at) VALUES \
         ('mail.send', 'h1', $1::jsonb, now() - interval '2 days', now() - interval '1 day'), \
         ('mail.send', 'h2', $2::jsonb, now() - interval '1 hour', now())",
    )
    .bind(V1)
    .bind(V2)
    .execute(db.pool())
    .await
    .unwrap();
    db
}

async fn publish_raw(db: &TestDatabase, name: &str, payload: &str, status: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO pgoutbox.operations (name, payload, schema_hash, status, max_attempts, finished_at) \
         VALUES ($1, $2::jsonb, 'h1', $3, 3, CASE WHEN $3 = 'succeeded' THEN now() END) RETURNING id",
    )
    .bind(name)
    .bind(payload)
    .bind(status)
    .fetch_one(db.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn history_lists_every_version_oldest_first() {
    let db = setup().await;
    let out = pgoutbox(&db)
        .args(["schema", "history", "mail.send"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let hashes: Vec<&str> = stdout
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(hashes, ["h1", "h2"]);
    let out = pgoutbox(&db)
        .args(["schema", "history", "mail.nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: no schema recorded for `mail.nope`\n"
    );
}

#[tokio::test]
async fn export_prints_or_writes_the_latest_schemas() {
    let db = setup().await;
    let out = pgoutbox(&db).args(["schema", "export"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["mail.send"],
        serde_json::from_str::<serde_json::Value>(V2).unwrap()
    );
    let dir = std::env::temp_dir().join(format!("pgoutbox-export-{}", std::process::id()));
    let out = pgoutbox(&db)
        .args(["schema", "export", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("mail.send.json")).unwrap())
            .unwrap();
    assert_eq!(
        written,
        serde_json::from_str::<serde_json::Value>(V2).unwrap()
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn check_reports_ready_payloads_that_no_longer_validate() {
    let db = setup().await;
    let ok = publish_raw(&db, "mail.send", r#"{"to": "a", "cc": "b"}"#, "pending").await;
    let stale = publish_raw(&db, "mail.send", r#"{"to": "a"}"#, "retrying").await;
    publish_raw(&db, "mail.send", r#"{"to": "a"}"#, "succeeded").await; // not ready: not checked
    let unknown = publish_raw(&db, "mail.unknown", "{}", "pending").await;
    let out = pgoutbox(&db).args(["schema", "check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&format!("{stale} mail.send: ")) && stdout.contains("cc"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{unknown} mail.unknown: no schema recorded")),
        "{stdout}"
    );
    assert!(!stdout.contains(&format!("\n{ok} ")), "{stdout}");
    assert!(
        stdout.contains("checked 3 ready payload(s): 2 do not validate"),
        "{stdout}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: 2 ready payload(s) do not validate against their latest schema\n"
    );
}

#[tokio::test]
async fn export_refuses_names_that_are_not_operation_names() {
    let db = setup().await;
    // Migration 2 checks new names; a row recorded before it is not checked.
    let err = sqlx::query(
        "INSERT INTO pgoutbox.operation_types (name, schema_hash, json_schema) VALUES ('../evil', 'h', '{}')",
    )
    .execute(db.pool())
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("operation_types_name_check"),
        "{err}"
    );
    for sql in [
        "ALTER TABLE pgoutbox.operation_types DROP CONSTRAINT operation_types_name_check",
        "INSERT INTO pgoutbox.operation_types (name, schema_hash, json_schema) VALUES ('../evil', 'h', '{}')",
    ] {
        sqlx::query(sql).execute(db.pool()).await.unwrap();
    }
    let base = std::env::temp_dir().join(format!("pgoutbox-hostile-{}", std::process::id()));
    let dir = base.join("out");
    let out = pgoutbox(&db)
        .args(["schema", "export", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    let escaped = base.join("evil.json").exists();
    let written = dir.join("mail.send.json").exists();
    std::fs::remove_dir_all(&base).unwrap();
    assert!(!escaped, "a name became a path outside the directory");
    assert!(written, "the valid names are still written");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: refused 1 schema(s) whose name is not a valid operation name: \"../evil\"\n"
    );
}

mod new_binary {
    use pgoutbox::prelude::*;

    /// The new binary's version of `mail.send`: `cc` became required.
    #[operation("mail.send")]
    pub(super) async fn send_mail(ctx: &mut Context, to: String, cc: String) -> Result<()> {
        let _ = (ctx, to, cc);
        Ok(())
    }
}

#[tokio::test]
async fn check_against_the_schemas_a_new_binary_exports() {
    let db = TestDatabase::new().await.unwrap();
    let dir = std::env::temp_dir().join(format!("pgoutbox-against-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // What an application does from its own main or test: one line.
    let registry =
        pgoutbox::Registry::from_registrations(pgoutbox::handlers![new_binary::send_mail]).unwrap();
    let written = pgoutbox::admin::export_schemas(&registry, &dir).unwrap();
    assert_eq!(written, vec![dir.join("mail.send.json")]);

    let ok = publish_raw(&db, "mail.send", r#"{"to": "a", "cc": "b"}"#, "pending").await;
    let stale = publish_raw(&db, "mail.send", r#"{"to": "a"}"#, "retrying").await;
    let gone = publish_raw(&db, "mail.legacy", "{}", "pending").await;
    let out = pgoutbox(&db)
        .args(["schema", "check", "--against"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&format!("{stale} mail.send: ")) && stdout.contains("cc"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{gone} mail.legacy: no schema for this name in the new binary's export"
        )),
        "{stdout}"
    );
    assert!(!stdout.contains(&format!("\n{ok} ")), "{stdout}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("2 ready payload(s) do not validate against the schemas in"),
        "{stderr}"
    );

    // Once the stale payloads are settled the check passes.
    sqlx::query("DELETE FROM pgoutbox.operations WHERE id <> $1")
        .bind(ok)
        .execute(db.pool())
        .await
        .unwrap();
    let out = pgoutbox(&db)
        .args(["schema", "check", "--against"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
