//! `pgoutbox schedules`, `schedules pause`, `schedules resume`,
//! `schedules remove`, and the schedules no live worker declares.

use assert_cmd::Command;
use pgoutbox::testing::TestDatabase;

fn pgoutbox(db: &TestDatabase) -> Command {
    let mut cmd = Command::cargo_bin("pgoutbox").unwrap();
    cmd.env_remove("PGOUTBOX_SCHEMA")
        .env("DATABASE_URL", db.url())
        .env("USER", "test-operator");
    cmd
}

/// A schedule as a worker records it, with its last tick published.
async fn schedule(db: &TestDatabase, name: &str) {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO pgoutbox.operations (name, payload, schema_hash, max_attempts, idempotency_key) \
         VALUES ('billing.reconcile', '{}', 'h', 3, 'schedule:' || $1 || ':2026-03-29T01:00:00Z') RETURNING id",
    )
    .bind(name)
    .fetch_one(db.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO pgoutbox.schedules (name, operation, cron, time_zone, missed, declaration, \
             next_tick, last_tick, last_operation_id) \
         VALUES ($1, 'billing.reconcile', '0 3 * * *', 'Europe/Berlin', 'latest', 'd', \
             '2026-03-30T01:00:00Z', '2026-03-29T01:00:00Z', $2)",
    )
    .bind(name)
    .bind(id)
    .execute(db.pool())
    .await
    .unwrap();
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn list_shows_each_schedule_with_its_ticks() {
    let db = TestDatabase::new().await.unwrap();
    let out = pgoutbox(&db).arg("schedules").output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("no schedules")
    );
    schedule(&db, "billing.reconcile").await;

    let listed = json(
        &pgoutbox(&db)
            .args(["schedules", "--json"])
            .output()
            .unwrap(),
    );
    let s = &listed["schedules"][0];
    assert_eq!(s["name"], "billing.reconcile");
    assert_eq!(s["cron"], "0 3 * * *");
    assert_eq!(s["time_zone"], "Europe/Berlin");
    assert_eq!(s["next_tick"], "2026-03-30T01:00:00Z");
    assert_eq!(s["last_tick"], "2026-03-29T01:00:00Z");
    assert_eq!(s["last_status"], "pending");
    assert_eq!(s["paused"], false);
    assert_eq!(s["declared_by"], serde_json::json!([]));

    let table = pgoutbox(&db).arg("schedules").output().unwrap();
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains("0 3 * * * (Europe/Berlin, latest)"), "{text}");
    assert!(text.contains("2026-03-29 01:00:00 #1 pending"), "{text}");
    assert!(text.contains("no live worker"), "{text}");

    // `stats` reports conflicting declarations (none here).
    let stats = json(&pgoutbox(&db).args(["stats", "--json"]).output().unwrap());
    assert_eq!(stats["schedule_conflicts"], serde_json::json!([]));
}

/// A schedule publishing a workflow (`WorkflowRouter::schedule_workflow`)
/// is listed with its last tick's workflow and that workflow's state.
#[tokio::test]
async fn a_workflow_schedule_lists_its_last_workflow() {
    let db = TestDatabase::new().await.unwrap();
    let key = "schedule:reports.nightly:2026-03-29T01:00:00Z";
    let (workflow, step): (i64, i64) = sqlx::query_as(
        "WITH step AS (
             INSERT INTO pgoutbox.operations (name, payload, schema_hash, max_attempts)
             VALUES ('reports.extract', '{}', 'h', 3) RETURNING id
         ), wf AS (
             INSERT INTO pgoutbox.workflows (name, root_id, steps, idempotency_key)
             SELECT 'reports.nightly', id, 1, $1 FROM step RETURNING id
         )
         SELECT wf.id, step.id FROM wf, step",
    )
    .bind(key)
    .fetch_one(db.pool())
    .await
    .unwrap();
    sqlx::query("UPDATE pgoutbox.operations SET workflow_id = $1 WHERE id = $2")
        .bind(workflow)
        .bind(step)
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO pgoutbox.schedules (name, operation, cron, time_zone, missed, declaration, \
             next_tick, last_tick, last_operation_id) \
         VALUES ('reports.nightly', 'workflow reports.nightly', '0 3 * * *', 'UTC', 'all', 'd', \
             '2026-03-30T01:00:00Z', '2026-03-29T01:00:00Z', $1)",
    )
    .bind(step)
    .execute(db.pool())
    .await
    .unwrap();

    let listed = json(
        &pgoutbox(&db)
            .args(["schedules", "--json"])
            .output()
            .unwrap(),
    );
    let s = &listed["schedules"][0];
    assert_eq!(s["operation"], "workflow reports.nightly");
    assert_eq!(s["last_operation_id"], step);
    assert_eq!(s["last_workflow_id"], workflow);
    assert_eq!(s["last_workflow_state"], "running");

    let table = pgoutbox(&db).arg("schedules").output().unwrap();
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.contains(&format!("2026-03-29 01:00:00 workflow #{workflow} running")),
        "{text}"
    );

    // An operation schedule lists no workflow.
    schedule(&db, "billing.reconcile").await;
    let listed = json(
        &pgoutbox(&db)
            .args(["schedules", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(listed["schedules"][0]["name"], "billing.reconcile");
    assert_eq!(
        listed["schedules"][0]["last_workflow_id"],
        serde_json::Value::Null
    );
}

#[tokio::test]
async fn pause_and_resume_are_recorded() {
    let db = TestDatabase::new().await.unwrap();
    schedule(&db, "billing.reconcile").await;
    let out = pgoutbox(&db)
        .args([
            "schedules",
            "pause",
            "billing.reconcile",
            "--reason",
            "ledger migration",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "paused schedule `billing.reconcile`\n"
    );
    let text = String::from_utf8(pgoutbox(&db).arg("schedules").output().unwrap().stdout).unwrap();
    assert!(
        text.contains("paused by test-operator: ledger migration"),
        "{text}"
    );

    // Again: refused, said on stderr, exit 1, recorded.
    let out = pgoutbox(&db)
        .args([
            "schedules",
            "pause",
            "billing.reconcile",
            "--reason",
            "again",
            "--actor",
            "bob",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "error: cannot pause schedule `billing.reconcile`: it is paused already\n"
    );
    let out = pgoutbox(&db)
        .args([
            "schedules",
            "resume",
            "billing.reconcile",
            "--reason",
            "done",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(json(&out), serde_json::json!({"outcome": "applied"}));
    let out = pgoutbox(&db)
        .args(["schedules", "resume", "no.such", "--reason", "typo"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "error: no schedule named `no.such`\n"
    );
    let out = pgoutbox(&db)
        .args(["schedules", "pause", "billing.reconcile", "--reason", " "])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "error: `--reason` must not be empty\n"
    );

    let trail: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT action, outcome, actor, reason FROM pgoutbox.operator_actions \
         WHERE schedule = 'billing.reconcile' ORDER BY id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let trail: Vec<(&str, &str, &str, &str)> = trail
        .iter()
        .map(|(a, o, w, r)| (a.as_str(), o.as_str(), w.as_str(), r.as_str()))
        .collect();
    assert_eq!(
        trail,
        [
            ("pause", "applied", "test-operator", "ledger migration"),
            ("pause", "refused", "bob", "again"),
            ("resume", "applied", "test-operator", "done"),
        ]
    );
}

/// A live worker (heartbeat now) that declares schedule `name`; returns
/// its id.
async fn declared_by_live_worker(db: &TestDatabase, name: &str) -> String {
    let id: String = sqlx::query_scalar(
        "INSERT INTO pgoutbox.workers (id, host, pid, version, names, queues, n_workers, lease_ms) \
         VALUES (gen_random_uuid(), 'host-a', 4242, '0.1.0', ARRAY[]::text[], ARRAY[]::text[], 1, 60000) \
         RETURNING id::text",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO pgoutbox.schedule_declarations \
             (schedule, worker_id, declaration, operation, cron, time_zone, missed) \
         VALUES ($1, $2::uuid, 'd', 'billing.reconcile', '0 3 * * *', 'Europe/Berlin', 'latest')",
    )
    .bind(name)
    .bind(&id)
    .execute(db.pool())
    .await
    .unwrap();
    id
}

#[tokio::test]
async fn a_schedule_no_live_worker_declares_is_reported_by_stats_and_the_list() {
    let db = TestDatabase::new().await.unwrap();
    schedule(&db, "billing.reconcile").await;
    schedule(&db, "billing.declared").await;
    declared_by_live_worker(&db, "billing.declared").await;

    let stats = json(&pgoutbox(&db).args(["stats", "--json"]).output().unwrap());
    let undeclared = stats["undeclared_schedules"].as_array().unwrap();
    assert_eq!(undeclared.len(), 1, "{stats}");
    assert_eq!(undeclared[0]["name"], "billing.reconcile");
    assert_eq!(undeclared[0]["next_tick"], "2026-03-30T01:00:00Z");
    let out = pgoutbox(&db).arg("stats").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("schedules that no live worker declares (retired? `pgoutbox schedules remove NAME --reason ..`):")
            && text.contains("  billing.reconcile: `0 3 * * *` in Europe/Berlin (latest), next tick 2026-03-30 01:00:00"),
        "{text}"
    );
    assert!(!text.contains("  billing.declared:"), "{text}");
    let out = pgoutbox(&db).arg("schedules").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("warning: 1 schedule(s) that no live worker declares: billing.reconcile"),
        "{text}"
    );
}

/// `pgoutbox schedules remove NAME --reason REASON` with `extra` arguments.
fn remove(db: &TestDatabase, name: &str, reason: &str, extra: &[&str]) -> std::process::Output {
    pgoutbox(db)
        .args(["schedules", "remove", name, "--reason", reason])
        .args(extra)
        .output()
        .unwrap()
}

#[tokio::test]
async fn remove_is_recorded_and_refused_while_a_live_worker_declares_it() {
    let db = TestDatabase::new().await.unwrap();
    schedule(&db, "billing.reconcile").await;
    schedule(&db, "billing.declared").await;
    let worker = declared_by_live_worker(&db, "billing.declared").await;

    // No live worker declares it: removed, recorded.
    let out = remove(&db, "billing.reconcile", "retired in v42", &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "removed schedule `billing.reconcile`\n"
    );
    let left: Vec<String> = sqlx::query_scalar("SELECT name FROM pgoutbox.schedules ORDER BY name")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(left, ["billing.declared"]);

    // Again: no such schedule, exit 1, nothing to record.
    let out = remove(&db, "billing.reconcile", "again", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "error: no schedule named `billing.reconcile`\n"
    );

    // A live worker declares it: refused, naming the worker, recorded.
    let out = remove(&db, "billing.declared", "oops", &["--actor", "bob"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "error: cannot remove schedule `billing.declared`: live worker {worker} (host-a:4242) \
             declares it; remove it from that worker's routers and redeploy, or stop the worker, first\n"
        )
    );
    let out = remove(&db, "billing.declared", "oops", &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let refused: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(refused["outcome"], "refused");
    assert_eq!(refused["declared_by"][0]["pid"], 4242);
    assert_eq!(refused["declared_by"][0]["worker_id"], worker.as_str());
    let shown = json(
        &pgoutbox(&db)
            .args(["schedules", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(shown["schedules"][0]["name"], "billing.declared");

    // The trail, which outlives the removed row.
    let trail: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws(' ', schedule, action, outcome, actor, from_status, coalesce(to_status, '-')) \
         FROM pgoutbox.operator_actions WHERE action = 'remove' ORDER BY id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        trail,
        [
            "billing.reconcile remove applied test-operator active removed",
            "billing.declared remove refused bob active -",
            "billing.declared remove refused test-operator active -",
        ]
    );
}
