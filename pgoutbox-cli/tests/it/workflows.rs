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

/// A two-step order whose charge is stalled (its output schema recorded
/// as a worker records it at start-up): (workflow, charge, ship).
async fn stalled_order(
    db: &TestDatabase,
) -> (
    pgoutbox::workflow::WorkflowId,
    pgoutbox::OperationId,
    pgoutbox::OperationId,
) {
    let mut wf = Workflow::new("cli.order");
    let payment = wf.add(Charge { cents: 500 });
    wf.add(Ship { payment });
    let mut tx = db.pool().begin().await.unwrap();
    let published = publish_workflow(&mut tx, wf).await.unwrap();
    tx.commit().await.unwrap();
    // The charge's outcome became unknown; its output schema is recorded
    // as a worker records it at start-up.
    sqlx::query("UPDATE pgoutbox.operations SET status = 'stalled', attempt = 1 WHERE id = $1")
        .bind(published.steps[0].as_i64())
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

    (published.id, published.steps[0], published.steps[1])
}

#[tokio::test]
async fn workflows_are_listed_shown_and_a_stalled_step_resolved_with_its_result() {
    let db = TestDatabase::new().await.unwrap();
    let (wid, charge, ship) = stalled_order(&db).await;
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
    let shown = stdout(pgoutbox(&db).args(["ops", "show", &ship.to_string()]));
    assert!(
        shown.contains(&format!("  workflow {wid} `cli.order`: stalled"))
            && shown.contains(&format!("  after {charge} `cli.charge`: stalled"))
            && shown.contains("  waiting for 1 more"),
        "{shown}"
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

/// Refunds a charge: its compensation.
#[operation("cli.refund")]
async fn refund(ctx: &mut Context, payment: Dep<Charge>) -> Result<()> {
    ctx.result(&payment)?;
    Ok(())
}

/// An order whose charge is refunded if the order fails after it
/// succeeded: (workflow, charge, ship).
async fn refundable_order(
    db: &TestDatabase,
) -> (
    pgoutbox::workflow::WorkflowId,
    pgoutbox::OperationId,
    pgoutbox::OperationId,
) {
    let mut wf = Workflow::new("cli.refundable");
    let payment = wf.add(Charge { cents: 700 });
    wf.compensate_with(payment, |payment| Refund { payment });
    wf.add(Ship { payment });
    let mut tx = db.pool().begin().await.unwrap();
    let published = publish_workflow(&mut tx, wf).await.unwrap();
    tx.commit().await.unwrap();
    (published.id, published.steps[0], published.steps[1])
}

/// Moves operation `id` to `status`, as a worker's record would (the
/// migration's trigger releases, cancels and compensates).
async fn set_status(db: &TestDatabase, id: pgoutbox::OperationId, status: &str) {
    sqlx::query(
        "UPDATE pgoutbox.operations SET status = $2, attempt = 1, finished_at = now() WHERE id = $1",
    )
    .bind(id.as_i64())
    .bind(status)
    .execute(db.pool())
    .await
    .unwrap();
}

async fn status_of(db: &TestDatabase, id: pgoutbox::OperationId) -> String {
    sqlx::query_scalar("SELECT status FROM pgoutbox.operations WHERE id = $1")
        .bind(id.as_i64())
        .fetch_one(db.pool())
        .await
        .unwrap()
}

async fn workflow_state(db: &TestDatabase, id: pgoutbox::workflow::WorkflowId) -> String {
    sqlx::query_scalar("SELECT state FROM pgoutbox.workflows WHERE id = $1")
        .bind(id.as_i64())
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// The compensations of step `id`: (id, status).
async fn compensations_of(db: &TestDatabase, id: pgoutbox::OperationId) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT id, status FROM pgoutbox.operations WHERE compensates = $1 ORDER BY id")
        .bind(id.as_i64())
        .fetch_all(db.pool())
        .await
        .unwrap()
}

async fn trail_rows(db: &TestDatabase) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pgoutbox.operator_actions")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// Runs `pgoutbox` with `args`: (exit code, stdout, stderr).
fn run(db: &TestDatabase, args: &[&str]) -> (Option<i32>, String, String) {
    let out = pgoutbox(db).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // One story: the choice, the plan, the cancel, the refusal.
async fn a_workflow_is_cancelled_with_or_without_compensation_after_a_dry_run() {
    let db = TestDatabase::new().await.unwrap();
    let (wid, charge, ship) = refundable_order(&db).await;
    set_status(&db, charge, "succeeded").await;
    assert_eq!(status_of(&db, ship).await, "pending");
    let id = wid.to_string();

    // The compensation is an explicit choice: neither, or both, is a usage error.
    let (code, _, err) = run(&db, &["workflow", "cancel", &id, "--reason", "withdrawn"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("the following required arguments were not provided")
            && err.contains("--compensate")
            && err.contains("--no-compensate"),
        "{err}"
    );
    let (code, _, err) = run(
        &db,
        &[
            "workflow",
            "cancel",
            &id,
            "--compensate",
            "--no-compensate",
            "--reason",
            "withdrawn",
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
    // A reason that says nothing is refused before anything is read.
    let (code, _, err) = run(
        &db,
        &["workflow", "cancel", &id, "--compensate", "--reason", " "],
    );
    assert_eq!(
        (code, err.as_str()),
        (Some(1), "error: `--reason` must not be empty\n")
    );

    // The dry run prints the plan and changes nothing.
    let cancel = |extra: &[&str]| {
        let mut args = vec![
            "workflow",
            "cancel",
            id.as_str(),
            "--reason",
            "customer withdrew",
        ];
        args.extend_from_slice(extra);
        run(&db, &args)
    };
    let (code, out, err) = cancel(&["--compensate", "--dry-run"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        format!(
            "dry run: cancel of workflow {wid} (running) would:\n  cancels 1: {ship} cli.ship (pending)\n  compensates 1: {charge} cli.charge (succeeded)\nnothing changed\n"
        )
    );
    assert_eq!(workflow_state(&db, wid).await, "running");
    assert_eq!(status_of(&db, ship).await, "pending");
    assert!(compensations_of(&db, charge).await.is_empty());
    assert_eq!(trail_rows(&db).await, 0);

    // Applied: the ship is cancelled, the charge's refund published.
    let (code, out, err) = cancel(&["--compensate"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        format!(
            "cancel: workflow {wid} running → compensating (recorded as done by test-operator)\n  cancels 1: {ship} cli.ship (pending)\n  compensates 1: {charge} cli.charge (succeeded)\n"
        )
    );
    assert_eq!(workflow_state(&db, wid).await, "compensating");
    assert_eq!(status_of(&db, ship).await, "cancelled");
    let refunds = compensations_of(&db, charge).await;
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].1, "pending");
    let refund = refunds[0].0;

    // Listed by its new state; shown with its failure, its compensation
    // and its trail.
    let listed = stdout(pgoutbox(&db).args(["workflows", "--state", "compensating"]));
    assert!(listed.contains("cli.refundable"), "{listed}");
    let shown = stdout(pgoutbox(&db).args(["workflow", &id]));
    assert!(
        shown.contains(": cancelled by test-operator: customer withdrew\n")
            && shown.contains("  failed 20"),
        "{shown}"
    );
    assert!(
        shown.lines().any(|l| l.starts_with(&format!("{refund} "))
            && l.contains(&format!(
                " cli.refund (compensates step {charge})  pending "
            ))),
        "{shown}"
    );
    assert!(
        shown.contains("operator actions:\n  cancel applied by test-operator at ")
            && shown.contains(": running → compensating — customer withdrew\n"),
        "{shown}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(pgoutbox(&db).args(["workflow", &id, "--json"]))).unwrap();
    assert_eq!(json["workflow"]["state"], "compensating");
    assert_eq!(json["actions"][0]["to_state"], "compensating");

    // Again: refused, with the reason on stderr and `ops`'s exit code.
    let (code, out, err) = cancel(&["--no-compensate"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        err.starts_with(&format!(
            "error: cannot cancel workflow {wid}: workflow {wid} has already failed (cancelled by test-operator: customer withdrew)"
        )),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");
    assert_eq!(compensations_of(&db, charge).await.len(), 1);

    // Another, without compensation, as JSON: what succeeded stays done.
    let (other, charged, shipping) = refundable_order(&db).await;
    set_status(&db, charged, "succeeded").await;
    let (code, out, err) = run(
        &db,
        &[
            "workflow",
            "cancel",
            &other.to_string(),
            "--no-compensate",
            "--reason",
            "a test order",
            "--actor",
            "carol",
            "--json",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["outcome"], "applied");
    assert_eq!(json["state"], "cancelled");
    assert_eq!(json["plan"]["cancel"][0]["id"], shipping.as_i64());
    assert_eq!(json["plan"]["compensate"], serde_json::json!([]));
    assert_eq!(workflow_state(&db, other).await, "cancelled");
    assert!(compensations_of(&db, charged).await.is_empty());
    let actor: String = sqlx::query_scalar(
        "SELECT actor FROM pgoutbox.operator_actions WHERE workflow_id = $1 AND operation_id IS NULL",
    )
    .bind(other.as_i64())
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(actor, "carol");

    // No such workflow: said, exit 1, for the dry run too.
    for extra in [&[][..], &["--dry-run"][..]] {
        let mut args = vec![
            "workflow",
            "cancel",
            "999999",
            "--compensate",
            "--reason",
            "x",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = run(&db, &args);
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (Some(1), "", "error: no workflow with id 999999\n")
        );
    }
}

#[tokio::test]
async fn a_failed_workflow_is_retried_where_it_stopped_after_a_dry_run() {
    let db = TestDatabase::new().await.unwrap();
    let (wid, charge, ship) = refundable_order(&db).await;
    set_status(&db, charge, "succeeded").await;
    set_status(&db, ship, "dead").await;
    // The workflow failed: the charge's refund is published, not started.
    assert_eq!(workflow_state(&db, wid).await, "compensating");
    let refunds = compensations_of(&db, charge).await;
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    let refund = refunds[0].0;
    let id = wid.to_string();
    let retry = |extra: &[&str]| {
        let mut args = vec![
            "workflow",
            "retry",
            id.as_str(),
            "--reason",
            "the carrier is back",
        ];
        args.extend_from_slice(extra);
        run(&db, &args)
    };

    let (code, out, err) = retry(&["--dry-run"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        format!(
            "dry run: retry of workflow {wid} (compensating) would:\n  runs again 1: {ship} cli.ship (dead)\n  cancels the compensations 1: {refund} cli.refund (pending)\nnothing changed\n"
        )
    );
    let json: serde_json::Value = serde_json::from_str(&retry(&["--dry-run", "--json"]).1).unwrap();
    assert_eq!(json["dry_run"], true);
    assert_eq!(json["plan"]["retry"][0]["id"], ship.as_i64());
    assert_eq!(status_of(&db, ship).await, "dead");
    assert_eq!(compensations_of(&db, charge).await[0].1, "pending");
    assert_eq!(trail_rows(&db).await, 0);

    let (code, out, err) = retry(&[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with(&format!(
            "retry: workflow {wid} compensating → running (recorded as done by test-operator)\n"
        )),
        "{out}"
    );
    assert_eq!(workflow_state(&db, wid).await, "running");
    assert_eq!(status_of(&db, ship).await, "pending");
    assert_eq!(compensations_of(&db, charge).await[0].1, "cancelled");
    assert_eq!(status_of(&db, charge).await, "succeeded");

    // Nothing dead or cancelled any more: refused, recorded as refused.
    let (code, out, err) = retry(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(
        err,
        format!(
            "error: cannot retry workflow {wid}: workflow {wid} has no dead or cancelled step to retry\n"
        )
    );
    let (code, _, err) = retry(&["--dry-run"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("would be refused: workflow"), "{err}");
    let outcomes: Vec<String> = sqlx::query_scalar(
        "SELECT outcome FROM pgoutbox.operator_actions WHERE workflow_id = $1 AND operation_id IS NULL ORDER BY id",
    )
    .bind(wid.as_i64())
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(outcomes, ["applied", "refused"]);
    // As JSON: the outcome on stdout, the reason still on stderr, exit 1.
    let (code, out, err) = retry(&["--json"]);
    assert_eq!(code, Some(1), "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["outcome"], "refused");
    assert_eq!(json["plan"]["state"], "running");
    assert!(err.starts_with("error: cannot retry workflow"), "{err}");
    let shown = stdout(pgoutbox(&db).args(["workflow", &id]));
    assert!(
        shown.contains(": compensating → running — the carrier is back\n")
            && shown.contains("  retry refused by test-operator at "),
        "{shown}"
    );
}
