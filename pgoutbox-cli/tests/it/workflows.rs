//! `pgoutbox workflows`, `pgoutbox workflow <id>` and `ops resolve
//! --result` against a real workflow, its steps moved by SQL updates (the
//! migration's trigger does the rest, as for a worker's).

use assert_cmd::Command;
use pgoutbox::prelude::*;
use pgoutbox::testing::TestDatabase;

/// A receipt.
#[pgoutbox::payload]
pub(crate) struct Receipt {
    /// The provider's id.
    pub(crate) charge_id: String,
}

/// Charges.
#[operation("cli.charge")]
async fn charge(ctx: &mut Context, cents: i64) -> Result<Receipt> {
    let _ = (ctx, cents);
    Ok(Receipt {
        charge_id: "ch".into(),
    })
}

/// Ships once charged.
#[operation("cli.ship")]
async fn ship(ctx: &mut Context, payment: Dep<Charge>) -> Result<()> {
    ctx.result(&payment)?;
    Ok(())
}

fn pgoutbox(db: &TestDatabase) -> Command {
    let mut cmd = Command::cargo_bin("pgoutbox").unwrap();
    cmd.env_remove("PGOUTBOX_SCHEMA")
        .env("DATABASE_URL", db.url())
        .env("USER", "test-operator");
    cmd
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn workflows_are_listed_shown_and_a_stalled_step_resolved_with_its_result() {
    let db = TestDatabase::new().await.unwrap();
    let mut wf = Workflow::new("cli.order");
    let payment = wf.add(Charge { cents: 500 });
    wf.add(Ship { payment });
    let mut tx = db.pool().begin().await.unwrap();
    let published = publish_workflow(&mut tx, wf).await.unwrap();
    tx.commit().await.unwrap();
    let (wid, charge, ship) = (published.id, published.steps[0], published.steps[1]);
    // The charge's outcome became unknown; its output schema is recorded
    // as a worker records it at start-up.
    sqlx::query("UPDATE pgoutbox.operations SET status = 'stalled', attempt = 1 WHERE id = $1")
        .bind(charge.as_i64())
        .execute(db.pool())
        .await
        .unwrap();
    let schema = Charge::output_schema();
    sqlx::query(
        "INSERT INTO pgoutbox.operation_outputs (name, output_hash, json_schema) VALUES ($1, $2, $3)",
    )
    .bind("cli.charge")
    .bind(schema.hash())
    .bind(schema.json())
    .execute(db.pool())
    .await
    .unwrap();

    let listed = stdout(pgoutbox(&db).args(["workflows", "--state", "stalled"]));
    assert!(
        listed.contains(&format!("{wid}")) && listed.contains("cli.order"),
        "{listed}"
    );
    assert!(listed.contains("1 waiting, 1 stalled"), "{listed}");
    let none = stdout(pgoutbox(&db).args(["workflows", "--state", "failed"]));
    assert!(!none.contains("cli.order"), "{none}");
    let out = pgoutbox(&db)
        .args(["workflows", "--state", "broken"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown workflow state `broken`"));

    let shown = stdout(pgoutbox(&db).args(["workflow", &wid.to_string()]));
    assert!(
        shown.starts_with(&format!("workflow {wid} `cli.order`: stalled (2 steps")),
        "{shown}"
    );
    assert!(shown.contains(&format!("{charge} (1 to go)")), "{shown}");
    let json: serde_json::Value = serde_json::from_str(&stdout(pgoutbox(&db).args([
        "workflow",
        &wid.to_string(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(
        json["steps"][1]["depends_on"],
        serde_json::json!([[charge.as_i64(), true]])
    );
    let out = pgoutbox(&db).args(["workflow", "999"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: no workflow with id 999\n"
    );

    // Without its result, then with one that does not fit: refused.
    let resolve = |extra: &[&str]| {
        let mut cmd = pgoutbox(&db);
        cmd.args([
            "ops",
            "resolve",
            &charge.to_string(),
            "--as",
            "succeeded",
            "--reason",
            "found",
        ])
        .args(extra);
        cmd.output().unwrap()
    };
    let out = resolve(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("whose dependents read its result"),
        "{out:?}"
    );
    let out = resolve(&["--result", r#"{"charge": 1}"#]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not match the output schema"),
        "{out:?}"
    );
    let out = resolve(&["--result", "{not json"]);
    assert_eq!(out.status.code(), Some(2));
    // With one that fits: the dependent is released.
    let out = resolve(&["--result", r#"{"charge_id": "ch_9"}"#]);
    assert!(out.status.success(), "{out:?}");
    let status: String = sqlx::query_scalar("SELECT status FROM pgoutbox.operations WHERE id = $1")
        .bind(ship.as_i64())
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(status, "pending");
    let shown = stdout(pgoutbox(&db).args(["workflow", &wid.to_string()]));
    assert!(shown.contains(r#"{"charge_id":"ch_9"}"#), "{shown}");
}
