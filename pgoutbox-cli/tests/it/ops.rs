//! `pgoutbox ops …`, `workflow`, `stats`, `workers`, `purge`.

use assert_cmd::Command;
use pgoutbox::Status;
use pgoutbox::testing::TestDatabase;

fn pgoutbox(db: &TestDatabase) -> Command {
    let mut cmd = Command::cargo_bin("pgoutbox").unwrap();
    cmd.env_remove("PGOUTBOX_SCHEMA")
        .env("DATABASE_URL", db.url())
        .env("USER", "test-operator");
    cmd
}

/// Inserts an operation in `status` and returns its id.
async fn op(db: &TestDatabase, name: &str, status: &str) -> i64 {
    let running = status == "running";
    sqlx::query_scalar(
        "INSERT INTO pgoutbox.operations (name, payload, schema_hash, status, max_attempts, attempt, \
             lease_owner, lease_expires_at, finished_at, workflow_id, waiting_for) \
         VALUES ($1, '{\"n\": 1}', 'h', $2, 3, 1, \
             CASE WHEN $3 THEN gen_random_uuid() END, CASE WHEN $3 THEN now() + interval '1 hour' END, \
             CASE WHEN $2 IN ('succeeded', 'dead', 'cancelled') THEN now() END, \
             CASE WHEN $2 = 'waiting' THEN 1 END, CASE WHEN $2 = 'waiting' THEN 1 END) \
         RETURNING id",
    )
    .bind(name)
    .bind(status)
    .bind(running)
    .fetch_one(db.pool())
    .await
    .unwrap()
}

async fn status(db: &TestDatabase, id: i64) -> String {
    sqlx::query_scalar("SELECT status FROM pgoutbox.operations WHERE id = $1")
        .bind(id)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

async fn count(db: &TestDatabase, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db.pool()).await.unwrap()
}

#[tokio::test]
async fn the_state_by_action_table_cell_by_cell() {
    let db = TestDatabase::new().await.unwrap();
    // (command args, allowed from, resulting status of the original)
    let actions: [(&[&str], &[&str], Option<&str>); 5] = [
        (
            &["retry"],
            &["dead", "stalled", "cancelled"],
            Some("pending"),
        ),
        (
            &["cancel"],
            &["waiting", "pending", "retrying", "stalled"],
            Some("cancelled"),
        ),
        (
            &["resolve", "--as", "succeeded"],
            &["stalled"],
            Some("succeeded"),
        ),
        (&["resolve", "--as", "dead"], &["stalled"], Some("dead")),
        (&["replay"], &["succeeded", "dead", "cancelled"], None),
    ];
    for (args, allowed, to) in actions {
        for from in Status::ALL.map(Status::as_str) {
            let id = op(&db, "cell.test", from).await;
            let mut cmd = pgoutbox(&db);
            cmd.arg("ops")
                .args(&args[..1])
                .arg(id.to_string())
                .args(&args[1..]);
            let out = cmd.args(["--reason", "table test"]).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let (outcome, recorded_to): (String, Option<String>) = sqlx::query_as(
                "SELECT outcome, to_status FROM pgoutbox.operator_actions WHERE operation_id = $1",
            )
            .bind(id)
            .fetch_one(db.pool())
            .await
            .unwrap();
            if allowed.contains(&from) {
                assert!(out.status.success(), "{args:?} from {from}: {stderr}");
                assert_eq!(outcome, "applied", "{args:?} from {from}");
                let expected = to.unwrap_or(from);
                assert_eq!(status(&db, id).await, expected, "{args:?} from {from}");
                assert_eq!(recorded_to.as_deref(), Some(expected));
            } else {
                assert_eq!(
                    out.status.code(),
                    Some(1),
                    "{args:?} from {from} must be refused"
                );
                assert!(
                    stderr.starts_with(&format!(
                        "error: cannot {} operation {id}: it is {from} (",
                        args[0]
                    )),
                    "{stderr}"
                );
                assert_eq!(outcome, "refused");
                assert_eq!(
                    status(&db, id).await,
                    from,
                    "a refused action changes nothing"
                );
            }
        }
    }
    // Replays are new operations linked to their originals.
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operations o JOIN pgoutbox.operator_actions a \
                    ON a.new_operation_id = o.id WHERE o.parent_id = a.operation_id AND o.status = 'pending'").await,
        3
    );
    // Every action names its actor and reason: 5 actions from 8 states.
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operator_actions WHERE actor = 'test-operator' AND reason = 'table test'").await,
        40
    );
}

#[tokio::test]
async fn two_operators_retry_the_same_operation_at_once() {
    let db = TestDatabase::new().await.unwrap();
    let id = op(&db, "race.test", "dead").await;
    let spawn = |actor: &str| {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("pgoutbox"));
        cmd.env("DATABASE_URL", db.url())
            .args([
                "ops",
                "retry",
                &id.to_string(),
                "--reason",
                "race",
                "--actor",
                actor,
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("alice"), spawn("bob"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_eq!(
        [a.status.success(), b.status.success()]
            .iter()
            .filter(|ok| **ok)
            .count(),
        1,
        "exactly one wins"
    );
    assert_eq!(status(&db, id).await, "pending");
    let trail: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT actor, outcome, from_status FROM pgoutbox.operator_actions WHERE operation_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(trail.len(), 2, "both are recorded");
    assert_eq!(trail[0].1, "applied");
    assert_eq!(trail[0].2, "dead");
    assert_eq!(
        (trail[1].1.as_str(), trail[1].2.as_str()),
        ("refused", "pending")
    );
}

#[tokio::test]
async fn bulk_actions_confirm_first() {
    let db = TestDatabase::new().await.unwrap();
    for _ in 0..3 {
        op(&db, "bulk.test", "dead").await;
    }
    op(&db, "bulk.other", "dead").await;
    // No terminal, no --yes: refused, nothing changed.
    let out = pgoutbox(&db)
        .args([
            "ops",
            "retry",
            "--status",
            "dead",
            "--name",
            "bulk.test",
            "--reason",
            "outage over",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --yes"));
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.operations WHERE status = 'dead'"
        )
        .await,
        4
    );
    let out = pgoutbox(&db)
        .args([
            "ops",
            "retry",
            "--status",
            "dead",
            "--name",
            "bulk.test",
            "--reason",
            "outage over",
            "--yes",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "retry: 3 applied, 0 refused (state not allowed), 0 skipped (no longer matched), 0 failed\n"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.operations WHERE status = 'pending'"
        )
        .await,
        3
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.operator_actions WHERE outcome = 'applied'"
        )
        .await,
        3
    );
    // Without id or filter there is nothing to act on.
    let out = pgoutbox(&db)
        .args(["ops", "cancel", "--reason", "x", "--yes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // A reason is required.
    let out = pgoutbox(&db).args(["ops", "cancel", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn list_show_and_workflow() {
    let db = TestDatabase::new().await.unwrap();
    let root = op(&db, "flow.root", "succeeded").await;
    let child: i64 = sqlx::query_scalar(
        "INSERT INTO pgoutbox.operations (name, payload, schema_hash, max_attempts, parent_id, root_id) \
         VALUES ('flow.child', '{}', 'h', 3, $1, $1) RETURNING id",
    )
    .bind(root)
    .fetch_one(db.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO pgoutbox.attempts (operation_id, operation_name, number, worker_id, finished_at, outcome, error, error_chain) \
         VALUES ($1, 'flow.root', 1, gen_random_uuid(), now(), 'failed', 'outer', '[\"outer\", \"inner cause\"]')",
    )
    .bind(root)
    .execute(db.pool())
    .await
    .unwrap();

    let out = pgoutbox(&db)
        .args(["ops", "list", "--status", "pending"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("ID"), "{stdout}");
    assert!(
        stdout.contains("flow.child") && !stdout.contains("flow.root"),
        "{stdout}"
    );

    let out = pgoutbox(&db)
        .args(["ops", "list", "--name", "flow.root", "--json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["operations"][0]["id"], root);
    assert_eq!(json["operations"][0]["status"], "succeeded");

    let out = pgoutbox(&db)
        .args(["ops", "show", &root.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&format!("operation {root} `flow.root`: succeeded")),
        "{stdout}"
    );
    assert!(
        stdout.contains("#1 failed") && stdout.contains("caused by: inner cause"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("children [{child}]")), "{stdout}");

    let out = pgoutbox(&db)
        .args(["ops", "tree", &root.to_string()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{root} flow.root succeeded\n  {child} flow.child pending\n")
    );
}

#[tokio::test]
async fn bad_input_is_one_line_and_a_non_zero_exit() {
    let db = TestDatabase::new().await.unwrap();
    let out = pgoutbox(&db)
        .args(["ops", "show", "999999"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: no operation with id 999999\n"
    );
    let out = pgoutbox(&db)
        .args(["ops", "list", "--status", "finished"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("error: invalid value 'finished' for '--status <STATUSES>'")
    );
    let out = pgoutbox(&db)
        .args(["purge", "--older-than", "a week"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid duration `a week`"));
    let out = pgoutbox(&db).args(["ops", "show", "abc"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // One scenario, read top to bottom, on one database.
async fn purge_leaves_non_terminal_operations_and_the_audit_trail() {
    let db = TestDatabase::new().await.unwrap();
    let mut ids = Vec::new();
    for s in Status::ALL.map(Status::as_str) {
        ids.push((s, op(&db, "purge.test", s).await));
    }
    sqlx::query("UPDATE pgoutbox.operations SET finished_at = now() - interval '10 days', updated_at = now() - interval '10 days'")
        .execute(db.pool())
        .await
        .unwrap();
    let fresh = op(&db, "purge.test", "succeeded").await;
    sqlx::query("INSERT INTO pgoutbox.attempts (operation_id, operation_name, number, worker_id) SELECT id, name, 1, gen_random_uuid() FROM pgoutbox.operations")
        .execute(db.pool())
        .await
        .unwrap();
    let out = pgoutbox(&db)
        .args(["purge", "--older-than", "7d", "--batch", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "purged 2 operation(s) (succeeded, cancelled); their attempts and operator actions stay \
         until the history retention (`workflow_system.retention.history`, default 90d) removes them\n"
    );
    let left: Vec<String> =
        sqlx::query_scalar("SELECT status FROM pgoutbox.operations WHERE id <> $1 ORDER BY id")
            .bind(fresh)
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(
        left,
        [
            "waiting", "pending", "running", "retrying", "dead", "stalled"
        ]
    );
    assert_eq!(
        status(&db, fresh).await,
        "succeeded",
        "younger than the cut-off"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.attempts").await,
        9,
        "the audit trail outlives the operations"
    );
    // Dead and stalled ones: asked for (refused without a terminal unless
    // `--yes`), with a reason, and recorded.
    let dead_and_stalled = [
        "purge",
        "--older-than",
        "7d",
        "--include-dead",
        "--include-stalled",
    ];
    let out = pgoutbox(&db)
        .args(dead_and_stalled)
        .args(["--reason", "tickets closed"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pass --yes"),
        "{out:?}"
    );
    let out = pgoutbox(&db)
        .args(dead_and_stalled)
        .arg("--yes")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: `--include-dead` and `--include-stalled` need a `--reason` (it is recorded)\n"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operations").await,
        7
    );
    let out = pgoutbox(&db)
        .args(dead_and_stalled)
        .args(["--reason", "tickets closed", "--yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .ends_with("; each purged dead or stalled operation is recorded as a `purge` action\n"),
        "{out:?}"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operations").await,
        5
    );
    let recorded: Vec<(i64, String, String, String)> = sqlx::query_as(
        "SELECT operation_id, from_status, actor, reason FROM pgoutbox.operator_actions \
         WHERE action = 'purge' AND outcome = 'applied' ORDER BY operation_id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let id_of = |s: &str| ids.iter().find(|(status, _)| *status == s).unwrap().1;
    assert_eq!(
        recorded,
        [
            (
                id_of("dead"),
                "dead".to_owned(),
                "test-operator".to_owned(),
                "tickets closed".to_owned()
            ),
            (
                id_of("stalled"),
                "stalled".to_owned(),
                "test-operator".to_owned(),
                "tickets closed".to_owned()
            ),
        ]
    );
}

#[tokio::test]
async fn purge_refuses_a_batch_below_one() {
    let db = TestDatabase::new().await.unwrap();
    for batch in ["0", "-1"] {
        let out = pgoutbox(&db)
            .args(["purge", "--older-than", "7d", &format!("--batch={batch}")])
            // On main `--batch 0` looped for ever.
            .timeout(std::time::Duration::from_secs(20))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--batch {batch}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with(&format!(
                "error: invalid value '{batch}' for '--batch <BATCH>'"
            )),
            "{out:?}"
        );
    }
}

#[tokio::test]
async fn stats_and_workers() {
    let db = TestDatabase::new().await.unwrap();
    op(&db, "stats.unhandled", "pending").await;
    op(&db, "stats.done", "succeeded").await;
    sqlx::query(
        "INSERT INTO pgoutbox.workers (id, host, pid, version, names, queues, n_workers) \
         VALUES (gen_random_uuid(), 'host-a', 42, '0.1.0', ARRAY['stats.done'], ARRAY[]::text[], 4)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let out = pgoutbox(&db).arg("stats").output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("pending    stats.unhandled  1"), "{stdout}");
    assert!(
        stdout.contains("live workers: 1") && stdout.contains("handles stats.done"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ready operations that no live worker handles:\n  stats.unhandled: 1"),
        "{stdout}"
    );
    let out = pgoutbox(&db).args(["stats", "--json"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["unhandled"][0]["name"], "stats.unhandled");
    assert_eq!(json["unhandled"][0]["count"], 1);
    let out = pgoutbox(&db).arg("workers").output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("live") && stdout.contains("host-a:42"),
        "{stdout}"
    );
}

/// Waits until a `pgoutbox` command's session waits for a row lock.
async fn until_the_command_waits_for_a_lock(db: &TestDatabase) {
    for _ in 0..600 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'pgoutbox-cli' AND wait_event_type = 'Lock'",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the command never waited for the row lock");
}

#[tokio::test]
async fn bulk_actions_act_only_on_rows_that_still_match() {
    // (command, listed state, the state a worker leaves it in meanwhile):
    // a replay of a dead operation that has since succeeded would charge
    // twice; a cancel of a pending one that has since stalled would settle
    // an unknown outcome without anyone deciding.
    let cases: [(&str, &str, &str); 2] = [
        ("replay", "dead", "succeeded"),
        ("cancel", "pending", "stalled"),
    ];
    for (action, listed, meanwhile) in cases {
        let db = TestDatabase::new().await.unwrap();
        let ids = [
            op(&db, "race.bulk", listed).await,
            op(&db, "race.bulk", listed).await,
            op(&db, "race.bulk", listed).await,
        ];
        let moved = ids[1];
        // The worker finishing operation `moved` holds its row lock.
        let mut worker = db.pool().begin().await.unwrap();
        sqlx::query("SELECT 1 FROM pgoutbox.operations WHERE id = $1 FOR UPDATE")
            .bind(moved)
            .execute(&mut *worker)
            .await
            .unwrap();
        let command = std::process::Command::new(assert_cmd::cargo::cargo_bin("pgoutbox"))
            .env("DATABASE_URL", db.url())
            .env_remove("PGOUTBOX_SCHEMA")
            .args([
                "ops",
                action,
                "--status",
                listed,
                "--name",
                "race.bulk",
                "--reason",
                "race",
                "--yes",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        until_the_command_waits_for_a_lock(&db).await;
        sqlx::query(
            "UPDATE pgoutbox.operations SET status = $2, \
                 finished_at = CASE WHEN $2 = 'succeeded' THEN now() END, updated_at = now() \
             WHERE id = $1",
        )
        .bind(moved)
        .bind(meanwhile)
        .execute(&mut *worker)
        .await
        .unwrap();
        worker.commit().await.unwrap();
        let out = command.wait_with_output().unwrap();
        assert_eq!(status(&db, moved).await, meanwhile, "{action}: left alone");
        let actions: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pgoutbox.operator_actions WHERE operation_id = $1",
        )
        .bind(moved)
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(actions, 0, "{action}: nothing recorded for the skipped row");
        let replays: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pgoutbox.operations WHERE parent_id = $1")
                .bind(moved)
                .fetch_one(db.pool())
                .await
                .unwrap();
        assert_eq!(replays, 0, "{action}: no second run");
        for id in [ids[0], ids[2]] {
            let applied: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pgoutbox.operator_actions WHERE operation_id = $1 AND outcome = 'applied'",
            )
            .bind(id)
            .fetch_one(db.pool())
            .await
            .unwrap();
            assert_eq!(applied, 1, "{action} of {id}");
        }
        assert!(out.status.success(), "{action}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!(
                "{action}: 2 applied, 0 refused (state not allowed), 1 skipped (no longer matched), 0 failed\n"
            )
        );
    }
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // One scenario, read top to bottom, on one database.
async fn bulk_actions_page_count_and_preview() {
    let db = TestDatabase::new().await.unwrap();
    // More than a page of dead ones, and some the action does not allow.
    sqlx::query(
        "INSERT INTO pgoutbox.operations (name, payload, schema_hash, status, max_attempts, attempt, finished_at) \
         SELECT 'page.test', '{}', 'h', 'dead', 3, 3, now() FROM generate_series(1, 1100)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let pending = op(&db, "page.test", "pending").await;
    let succeeded = op(&db, "page.test", "succeeded").await;

    // The prompt shows a sample, not only a count.
    let out = pgoutbox(&db)
        .args([
            "ops",
            "retry",
            "--name",
            "page.test",
            "--reason",
            "outage over",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(
            "retry would touch 1100 operation(s) in state(s) dead, stalled, cancelled, for example:\n  "
        ),
        "{stderr}"
    );
    assert_eq!(
        stderr
            .matches(" page.test dead queue default published ")
            .count(),
        5,
        "{stderr}"
    );
    assert!(stderr.contains("  … and 1095 more\n"), "{stderr}");

    // A dry run lists and changes nothing.
    let out = pgoutbox(&db)
        .args([
            "ops",
            "cancel",
            "--name",
            "page.test",
            "--status",
            "pending",
            "--status",
            "succeeded",
            "--reason",
            "x",
            "--dry-run",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split(" queue ").next().unwrap())
            .collect::<Vec<_>>(),
        [
            format!("would cancel {pending} page.test pending"),
            format!("cannot cancel {succeeded} page.test succeeded"),
            "dry run: cancel would apply to 1 operation(s), 1 refused (state not allowed); nothing changed".to_owned(),
        ]
    );
    assert_eq!(status(&db, pending).await, "pending");

    // Without `--status`, only the states the action allows: the pending
    // and succeeded ones are not touched, nor counted.
    let out = pgoutbox(&db)
        .args([
            "ops",
            "retry",
            "--name",
            "page.test",
            "--reason",
            "outage over",
            "--yes",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "retry: 1100 applied, 0 refused (state not allowed), 0 skipped (no longer matched), 0 failed\n"
    );
    assert_eq!(status(&db, succeeded).await, "succeeded");

    // States named but not allowed are counted, not recorded one by one,
    // and the run exits non-zero (the 1,100 retried ones are pending now).
    let out = pgoutbox(&db)
        .args([
            "ops",
            "cancel",
            "--name",
            "page.test",
            "--status",
            "pending",
            "--status",
            "succeeded",
            "--reason",
            "x",
            "--yes",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: cancel: 1101 applied, 1 refused (state not allowed), 0 skipped (no longer matched), 0 failed\n"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.operator_actions WHERE outcome = 'refused'"
        )
        .await,
        0
    );

    // `resolve` needs a reason that says something.
    let out = pgoutbox(&db)
        .args([
            "ops",
            "resolve",
            &pending.to_string(),
            "--as",
            "dead",
            "--reason",
            " ",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: `--reason` must not be empty\n"
    );
}

#[tokio::test]
async fn show_prints_the_idempotency_key() {
    let db = TestDatabase::new().await.unwrap();
    let id = op(&db, "key.test", "stalled").await;
    let key: String =
        sqlx::query_scalar("SELECT external_key::text FROM pgoutbox.operations WHERE id = $1")
            .bind(id)
            .fetch_one(db.pool())
            .await
            .unwrap();
    let out = pgoutbox(&db)
        .args(["ops", "show", &id.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&format!("idempotency key {key}")),
        "{stdout}"
    );
    let out = pgoutbox(&db)
        .args(["ops", "show", &id.to_string(), "--json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["operation"]["external_key"], key.as_str());
}

#[tokio::test]
async fn list_truncates_errors_shows_run_at_and_pages() {
    let db = TestDatabase::new().await.unwrap();
    let long_error = format!("provider said: {}", "x".repeat(300));
    let ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO pgoutbox.operations (name, payload, schema_hash, max_attempts, status, run_at, last_error) \
         SELECT 'page.test', '{}', 'h', 3, 'retrying', now() + interval '1 day', $1 \
         FROM generate_series(1, 5) RETURNING id",
    )
    .bind(&long_error)
    .fetch_all(db.pool())
    .await
    .unwrap();
    let out = pgoutbox(&db)
        .env("COLUMNS", "120")
        .args(["ops", "list", "--limit", "2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains("RUN AT"), "{stdout}");
    assert_eq!(lines.len(), 3, "{stdout}");
    for line in &lines[1..] {
        assert_eq!(line.chars().count(), 120, "{line}");
        assert!(
            line.ends_with('…') && line.contains("provider said: xx"),
            "{line}"
        );
    }
    // A delayed operation shows when it will run: tomorrow, not at creation.
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    assert!(lines[1].contains(&tomorrow), "{stdout}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let next = ids[3];
    assert!(stderr.contains(&format!("--after-id {next}")), "{stderr}");
    // The next page, as JSON, carries the whole error.
    let out = pgoutbox(&db)
        .args([
            "ops",
            "list",
            "--limit",
            "2",
            "--after-id",
            &next.to_string(),
            "--json",
        ])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let page: Vec<i64> = json["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_i64().unwrap())
        .collect();
    assert_eq!(page, vec![ids[2], ids[1]]);
    assert_eq!(json["operations"][0]["last_error"], long_error.as_str());
    assert_eq!(json["next_after_id"], ids[1]);
}

#[tokio::test]
async fn json_outputs_are_objects_with_named_fields() {
    let db = TestDatabase::new().await.unwrap();
    op(&db, "json.test", "pending").await;
    for args in [
        &["ops", "list"][..],
        &["stats"],
        &["workers"],
        &["migrate", "status"],
    ] {
        let out = pgoutbox(&db).args(args).arg("--json").output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(json.is_object(), "{args:?}: {json}");
    }
    let out = pgoutbox(&db).args(["stats", "--json"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["counts"][0]["status"], "pending");
    assert_eq!(json["counts"][0]["name"], "json.test");
    assert_eq!(json["counts"][0]["count"], 1);
    assert!(
        json["succeeded_per_minute"][0]["count"].is_number(),
        "{json}"
    );
    let out = pgoutbox(&db)
        .args(["migrate", "status", "--json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["schema"], "pgoutbox");
    assert_eq!(json["database_version"], json["binary_version"]);
    assert_eq!(json["pending"].as_array().map(Vec::len), Some(0));
    assert!(json["applied"][0]["version"].is_number(), "{json}");
}

#[tokio::test]
async fn actions_record_the_os_user_without_user_and_refuse_an_empty_actor() {
    let db = TestDatabase::new().await.unwrap();
    let id = op(&db, "actor.test", "dead").await;
    let out = pgoutbox(&db)
        .env_remove("USER")
        .env_remove("LOGNAME")
        .args(["ops", "retry", &id.to_string(), "--reason", "no USER"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let actor: String =
        sqlx::query_scalar("SELECT actor FROM pgoutbox.operator_actions WHERE operation_id = $1")
            .bind(id)
            .fetch_one(db.pool())
            .await
            .unwrap();
    let me = String::from_utf8(
        std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(actor, me.trim());
    let id = op(&db, "actor.test", "dead").await;
    let out = pgoutbox(&db)
        .args([
            "ops",
            "retry",
            &id.to_string(),
            "--reason",
            "r",
            "--actor",
            " ",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`--actor` must not be empty"));
    assert_eq!(status(&db, id).await, "dead");
}

#[tokio::test]
async fn workflow_of_a_child_shows_the_tree_from_its_root() {
    let db = TestDatabase::new().await.unwrap();
    let root = op(&db, "tree.root", "succeeded").await;
    let insert = |parent: i64| {
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO pgoutbox.operations (name, payload, schema_hash, max_attempts, parent_id, root_id) \
             VALUES ('tree.child', '{}', 'h', 3, $1, $2) RETURNING id",
        )
        .bind(parent)
        .bind(root)
        .fetch_one(db.pool())
    };
    let child = insert(root).await.unwrap();
    let grandchild = insert(child).await.unwrap();
    let sibling = insert(root).await.unwrap();
    let out = pgoutbox(&db)
        .args(["ops", "tree", &child.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout,
        format!(
            "{root} tree.root succeeded\n  {child} tree.child pending  <- requested\n    \
             {grandchild} tree.child pending\n  {sibling} tree.child pending\n"
        )
    );
    let out = pgoutbox(&db)
        .args(["ops", "tree", &grandchild.to_string(), "--json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["root"], root);
    assert_eq!(json["requested"], grandchild);
    assert_eq!(json["operations"].as_array().map(Vec::len), Some(4));
}

/// Attempt numbers only grow, snoozes included; what counts against
/// `max_attempts` is shown as such, the snoozes beside it, so an operation
/// that snoozed never looks as if it ran past its limit.
#[tokio::test]
async fn attempts_are_shown_as_counted_with_the_snoozes_beside_them() {
    let db = TestDatabase::new().await.unwrap();
    let id = op(&db, "snoozy.op", "retrying").await;
    sqlx::query("UPDATE pgoutbox.operations SET attempt = 4, snoozes = 2 WHERE id = $1")
        .bind(id)
        .execute(db.pool())
        .await
        .unwrap();
    let out = pgoutbox(&db).args(["ops", "list"]).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("2/3 +2 snoozed"), "{stdout}");
    let out = pgoutbox(&db)
        .args(["ops", "show", &id.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("attempts 2/3 +2 snoozed"), "{stdout}");
    let out = pgoutbox(&db)
        .args(["ops", "show", &id.to_string(), "--json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["operation"]["attempt"], 4);
    assert_eq!(json["operation"]["snoozes"], 2);
}
