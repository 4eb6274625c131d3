//! `pgoutbox-migrate` against a real database.

use std::collections::BTreeSet;

use pgoutbox::{Outcome, Status};
use pgoutbox_migrate::{Error, Identifier};

use crate::support::{empty_db, tables};

const TABLES: [&str; 12] = [
    "attempts",
    "operation_outputs",
    "operation_types",
    "operations",
    "operator_actions",
    "pgoutbox_migrations",
    "schedule_declarations",
    "schedules",
    "workers",
    "workflow_compensations",
    "workflow_edges",
    "workflows",
];

fn all_versions() -> Vec<i64> {
    (1..=pgoutbox_migrate::latest_version()).collect()
}

#[tokio::test]
async fn applies_on_an_empty_database_then_is_a_no_op() {
    let db = empty_db().await;
    let schema = Identifier::default();
    let applied = pgoutbox_migrate::run(db.pool(), &schema).await.unwrap();
    assert_eq!(applied, all_versions());
    assert_eq!(tables(&db, "pgoutbox").await, TABLES);
    pgoutbox_migrate::check(db.pool(), &schema).await.unwrap();

    let again = pgoutbox_migrate::run(db.pool(), &schema).await.unwrap();
    assert!(again.is_empty(), "second run applied {again:?}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM pgoutbox.pgoutbox_migrations")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(rows, pgoutbox_migrate::latest_version());
    // The application's own sqlx migrations table is never touched.
    let sqlx_table: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(sqlx_table, None);
}

#[tokio::test]
async fn concurrent_migrators_apply_once() {
    let db = empty_db().await;
    let schema = Identifier::default();
    let runs = (0..4).map(|_| {
        let pool = db.pool().clone();
        let schema = schema.clone();
        tokio::spawn(async move { pgoutbox_migrate::run(&pool, &schema).await })
    });
    let mut applied = Vec::new();
    for run in runs {
        applied.extend(run.await.unwrap().unwrap());
    }
    assert_eq!(
        applied,
        all_versions(),
        "exactly one migrator applies each version"
    );
    pgoutbox_migrate::check(db.pool(), &schema).await.unwrap();
}

#[tokio::test]
async fn two_schemas_coexist_in_one_database() {
    let db = empty_db().await;
    let a = Identifier::new("outbox_a").unwrap();
    let b = Identifier::new("outbox_b").unwrap();
    pgoutbox_migrate::run(db.pool(), &a).await.unwrap();
    pgoutbox_migrate::run(db.pool(), &b).await.unwrap();
    assert_eq!(tables(&db, "outbox_a").await, TABLES);
    assert_eq!(tables(&db, "outbox_b").await, TABLES);
    assert!(tables(&db, "pgoutbox").await.is_empty());
    sqlx::query(
        "INSERT INTO outbox_a.operations (name, payload, schema_hash, max_attempts) \
         VALUES ('a.op', '{}', 'h', 3)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let in_b: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_b.operations")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(in_b, 0);
}

#[tokio::test]
async fn hostile_schema_names_are_rejected_before_any_sql() {
    for name in [
        "x; drop table y",
        "x\"; drop table y; --",
        "Upper",
        "",
        &"s".repeat(64),
    ] {
        let err = Identifier::new(name).unwrap_err();
        assert!(err.to_string().contains("invalid identifier"), "{err}");
        let err: Error = err.into();
        assert!(err.to_string().starts_with("invalid identifier `"), "{err}");
    }
}

#[tokio::test]
async fn a_database_at_another_version_is_refused_naming_both() {
    let binary = pgoutbox_migrate::latest_version();
    let db = empty_db().await;
    let schema = Identifier::default();
    let err = pgoutbox_migrate::check(db.pool(), &schema)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::VersionMismatch { database: 0, binary: b, .. } if b == binary
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "schema `pgoutbox` is at migration version 0, but this binary expects version {binary}; \
             run `pgoutbox migrate up` (or `pgoutbox_migrate::run`) first"
        )
    );

    pgoutbox_migrate::run(db.pool(), &schema).await.unwrap();
    let future = binary + 1;
    sqlx::query(
        "INSERT INTO pgoutbox.pgoutbox_migrations (version, name, checksum) VALUES ($1, 'future', 'x')",
    )
    .bind(future)
    .execute(db.pool())
    .await
    .unwrap();
    let err = pgoutbox_migrate::check(db.pool(), &schema)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "at migration version {future}, but this binary expects version {binary}"
        )),
        "{err}"
    );
    let err = pgoutbox_migrate::run(db.pool(), &schema).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::VersionMismatch { database, binary: b, .. } if database == future && b == binary
        ),
        "{err}"
    );
}

#[tokio::test]
async fn an_edited_migration_is_refused() {
    let db = empty_db().await;
    let schema = Identifier::default();
    pgoutbox_migrate::run(db.pool(), &schema).await.unwrap();
    sqlx::query("UPDATE pgoutbox.pgoutbox_migrations SET checksum = 'edited' WHERE version = 1")
        .execute(db.pool())
        .await
        .unwrap();
    let err = pgoutbox_migrate::check(db.pool(), &schema)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ChecksumMismatch { version: 1, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn the_exported_script_builds_the_same_storage() {
    let db = empty_db().await;
    let schema = Identifier::new("exported").unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(pgoutbox_migrate::script(&schema)))
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(tables(&db, "exported").await, TABLES);
    pgoutbox_migrate::check(db.pool(), &schema).await.unwrap();
    assert!(
        pgoutbox_migrate::run(db.pool(), &schema)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_claim_index_is_partial_and_led_by_name() {
    let db = pgoutbox::testing::TestDatabase::new().await.unwrap();
    let def: String = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'pgoutbox' AND indexname = 'operations_ready_idx'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert!(def.contains("WHERE (status = ANY"), "{def}");
    assert!(def.contains("(name, priority DESC, run_at, id)"), "{def}");
}

/// The claim's choice (`claimable`, migration 2): only the names asked
/// for, in claim order across names, nothing scheduled later, and rows
/// locked by another claim replaced by the next candidates.
#[tokio::test]
async fn claimable_takes_its_names_in_order_and_steps_over_locked_rows() {
    let db = pgoutbox::testing::TestDatabase::new().await.unwrap();
    let insert = "INSERT INTO pgoutbox.operations (name, payload, schema_hash, max_attempts, priority, run_at) \
                  SELECT $1, '{}', 'h', 3, $2, now() + $3 * interval '1 second' FROM generate_series(1, $4)";
    for (name, priority, delay, n) in [
        ("mine.low", 0_i16, -60_i32, 10_i32),
        ("mine.high", 5, -60, 3),
        ("mine.later", 9, 3600, 5),
        ("other.name", 9, -60, 50),
    ] {
        sqlx::query(insert)
            .bind(name)
            .bind(priority)
            .bind(delay)
            .bind(n)
            .execute(db.pool())
            .await
            .unwrap();
    }
    let names = ["mine.low", "mine.high", "mine.later"];
    let ids_of = |name: &'static str| {
        sqlx::query_scalar::<_, i64>(
            "SELECT id FROM pgoutbox.operations WHERE name = $1 ORDER BY id",
        )
        .bind(name)
        .fetch_all(db.pool())
    };
    let (low, high) = (
        ids_of("mine.low").await.unwrap(),
        ids_of("mine.high").await.unwrap(),
    );

    // Another claim holds the first four low-priority rows.
    let mut other = db.pool().begin().await.unwrap();
    sqlx::query("SELECT id FROM pgoutbox.operations WHERE id = ANY($1) FOR UPDATE")
        .bind(&low[..4])
        .execute(&mut *other)
        .await
        .unwrap();

    let mut tx = db.pool().begin().await.unwrap();
    let claimed: Vec<i64> = sqlx::query_scalar("SELECT pgoutbox.claimable($1, '{}', 6)")
        .bind(names)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    let mut expected = high.clone();
    expected.extend(&low[4..7]);
    expected.sort_unstable();
    let mut sorted = claimed.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted, expected,
        "high priority first, locked rows stepped over"
    );
    tx.rollback().await.unwrap();
    other.rollback().await.unwrap();

    // A queue that none of the rows is in: nothing.
    let none: Vec<i64> = sqlx::query_scalar("SELECT pgoutbox.claimable($1, '{mail}', 6)")
        .bind(names)
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
}

/// The execution time of `claimable(names, '{}', 10)` by `EXPLAIN
/// ANALYZE`, the best of five runs, each in a transaction rolled back.
async fn best_claim_ms(db: &pgoutbox::testing::TestDatabase, names: &str) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let mut tx = db.pool().begin().await.unwrap();
        let plan: serde_json::Value = sqlx::query_scalar(
            "EXPLAIN (ANALYZE, FORMAT JSON) SELECT pgoutbox.claimable($1::text[], '{}', 10)",
        )
        .bind(names)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        tx.rollback().await.unwrap();
        best = best.min(plan[0]["Execution Time"].as_f64().unwrap());
    }
    best
}

/// What `claimable(names, queues, n)` locks, in a transaction rolled back.
async fn claimable(
    db: &pgoutbox::testing::TestDatabase,
    names: &str,
    n: i32,
    queues: &str,
) -> Vec<i64> {
    let mut tx = db.pool().begin().await.unwrap();
    let ids = sqlx::query_scalar("SELECT pgoutbox.claimable($1::text[], $2::text[], $3)")
        .bind(names)
        .bind(queues)
        .bind(n)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    ids
}

/// The claim (`claimable`, migration 6) of one name: priority by priority,
/// highest first, oldest first within one, rows locked by another claim
/// stepped over, and rows scheduled later never taken, whatever their
/// priority; a queue filter still applies. A claim of several names takes
/// the same rows.
#[tokio::test]
async fn claimable_walks_each_priority_and_skips_the_later_rows() {
    let db = pgoutbox::testing::TestDatabase::new().await.unwrap();
    let insert = "INSERT INTO pgoutbox.operations (name, payload, schema_hash, max_attempts, priority, run_at) \
                  SELECT 'one.name', '{}', 'h', 3, $1, now() + $2 * interval '1 second' \
                  FROM generate_series(1, $3) RETURNING id";
    let mut rows = std::collections::HashMap::new();
    for (priority, delay, n) in [
        (9_i16, 3600_i32, 5_i32), // highest, but an hour ahead
        (5, -60, 3),
        (5, 3600, 4), // the same priority, later
        (0, -120, 6),
    ] {
        let ids: Vec<i64> = sqlx::query_scalar(insert)
            .bind(priority)
            .bind(delay)
            .bind(n)
            .fetch_all(db.pool())
            .await
            .unwrap();
        rows.insert((priority, delay), ids);
    }
    let (high, low) = (&rows[&(5, -60)], &rows[&(0, -120)]);

    // Another claim holds the first high-priority row and two low ones.
    let mut other = db.pool().begin().await.unwrap();
    sqlx::query("SELECT id FROM pgoutbox.operations WHERE id = ANY($1) FOR UPDATE")
        .bind([high[0], low[0], low[1]])
        .execute(&mut *other)
        .await
        .unwrap();
    let claim_of = async |names: &str, n: i32, queues: &str| claimable(&db, names, n, queues).await;
    let claim = async |n: i32, queues: &str| claim_of("{one.name}", n, queues).await;
    let expected: Vec<i64> = high[1..].iter().chain(&low[2..5]).copied().collect();
    assert_eq!(
        claim(5, "{}").await,
        expected,
        "priority 5, then 0, oldest first, locked rows stepped over"
    );
    let all: Vec<i64> = high[1..].iter().chain(&low[2..]).copied().collect();
    assert_eq!(
        claim(100, "{}").await,
        all,
        "everything ready and unlocked; nothing scheduled later"
    );
    assert!(claim(100, "{mail}").await.is_empty(), "no row is in `mail`");
    // Several names: the same rows, chosen across names before locking.
    let mut several = claim_of("{one.name,no.such}", 100, "{}").await;
    several.sort_unstable();
    let mut sorted = all.clone();
    sorted.sort_unstable();
    assert_eq!(
        several, sorted,
        "a claim of several names takes the same rows"
    );
    other.rollback().await.unwrap();
}

/// The texts a `CHECK` constraint of the migrated storage admits, read
/// back from `pg_constraint` (`… = ANY (ARRAY['a'::text, 'b'::text])`).
async fn admitted(db: &pgoutbox::testing::TestDatabase, constraint: &str) -> BTreeSet<String> {
    let def: String = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c \
         WHERE c.conname = $1 AND c.connamespace = 'pgoutbox'::regnamespace",
    )
    .bind(constraint)
    .fetch_one(db.pool())
    .await
    .unwrap_or_else(|e| panic!("{constraint}: {e}"));
    // Every other piece between quotes is a literal.
    let admitted: BTreeSet<String> = def
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    assert!(!admitted.is_empty(), "no literal in {def}");
    admitted
}

#[tokio::test]
async fn the_state_types_are_the_check_constraints() {
    let db = pgoutbox::testing::TestDatabase::new().await.unwrap();
    let statuses: BTreeSet<String> = Status::ALL.iter().map(|s| s.as_str().to_owned()).collect();
    assert_eq!(admitted(&db, "operations_status_check").await, statuses);
    let outcomes: BTreeSet<String> = Outcome::ALL.iter().map(|o| o.as_str().to_owned()).collect();
    assert_eq!(admitted(&db, "attempts_outcome_check").await, outcomes);
    // Operators' actions on operations, and on schedules (migrations 3 and 8).
    let actions: BTreeSet<String> = [
        "retry", "cancel", "resolve", "replay", "purge", "pause", "resume", "remove",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(
        admitted(&db, "operator_actions_action_check").await,
        actions
    );
    let policies: BTreeSet<String> = [
        pgoutbox::MissedTicks::Latest,
        pgoutbox::MissedTicks::All,
        pgoutbox::MissedTicks::None,
    ]
    .map(|m| m.as_str().to_owned())
    .into();
    assert_eq!(admitted(&db, "schedules_missed_check").await, policies);
}

/// The claim (`claimable`, migration 7) beside rows scheduled later over
/// many distinct priorities: its work is bounded by the rows it can take.
/// Migration 6 visited every priority (30,000 here: over half a second a
/// claim); the claim now reads the few ready rows from the index of due
/// rows, still in claim order, stepping over locked rows and keeping the
/// queue filter, for one name and for several.
#[tokio::test]
async fn claimable_beside_many_future_priorities_reads_only_the_ready_rows() {
    let db = pgoutbox::testing::TestDatabase::new().await.unwrap();
    sqlx::query(
        "INSERT INTO pgoutbox.operations (name, payload, schema_hash, max_attempts, priority, run_at) \
         SELECT 'many.levels', '{}', 'h', 3, p, now() + interval '1 hour' \
         FROM generate_series(-15000, 14999) p",
    )
    .execute(db.pool())
    .await
    .unwrap();
    // Ten ready rows at priorities among the future ones (two share one).
    let mut ready = Vec::new();
    for (priority, age) in [
        (14000_i16, 5_i32),
        (9000, 1),
        (9000, 9),
        (120, 3),
        (0, 2),
        (-1, 8),
        (-2999, 4),
        (-7000, 7),
        (-14000, 6),
        (-15000, 10),
    ] {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO pgoutbox.operations (name, payload, schema_hash, max_attempts, priority, run_at) \
             VALUES ('many.levels', '{}', 'h', 3, $1, now() - $2 * interval '1 second') RETURNING id",
        )
        .bind(priority)
        .bind(age)
        .fetch_one(db.pool())
        .await
        .unwrap();
        ready.push((priority, -age, id));
    }
    // Claim order: priority, then oldest `run_at` first.
    ready.sort_unstable_by_key(|&(priority, newer, id)| (std::cmp::Reverse(priority), newer, id));
    let in_order: Vec<i64> = ready.iter().map(|&(_, _, id)| id).collect();

    // Another claim holds the first and the fourth.
    let mut other = db.pool().begin().await.unwrap();
    sqlx::query("SELECT id FROM pgoutbox.operations WHERE id = ANY($1) FOR UPDATE")
        .bind([in_order[0], in_order[3]])
        .execute(&mut *other)
        .await
        .unwrap();
    let free: Vec<i64> = in_order
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != 0 && i != 3)
        .map(|(_, &id)| id)
        .collect();
    let claim = async |names: &str, n: i32, queues: &str| claimable(&db, names, n, queues).await;
    let sorted = |mut ids: Vec<i64>| {
        ids.sort_unstable();
        ids
    };
    assert_eq!(
        sorted(claim("{many.levels}", 4, "{}").await),
        sorted(free[..4].to_vec()),
        "the best four free ready rows, whatever lies scheduled later"
    );
    assert_eq!(
        sorted(claim("{many.levels}", 100, "{}").await),
        sorted(free.clone()),
        "every free ready row, none scheduled later"
    );
    assert!(claim("{many.levels}", 100, "{mail}").await.is_empty());
    assert_eq!(
        sorted(claim("{many.levels,no.such}", 4, "{}").await),
        sorted(free[..4].to_vec()),
        "several names: the same rows"
    );

    // Its cost: the best of a few runs, each in a transaction rolled back.
    for names in ["{many.levels}", "{many.levels,no.such}"] {
        let best = best_claim_ms(&db, names).await;
        eprintln!("claim of {names} beside 30,000 future priorities: {best:.3} ms");
        assert!(
            best < 2.0,
            "a claim of {names} beside 30,000 future priorities took {best:.2} ms"
        );
    }

    // More ready rows than the first look at the due rows takes in (2,000
    // at the lowest priority): the walk goes on further first, and the
    // claim still takes the best rows in order.
    let low: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO pgoutbox.operations (name, payload, schema_hash, max_attempts, priority, run_at) \
         SELECT 'many.levels', '{}', 'h', 3, -15000, now() - interval '1 minute' + g * interval '1 ms' \
         FROM generate_series(1, 2000) g RETURNING id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    // The last free row (priority -15,000, ten seconds old) comes after
    // the 2,000 of its priority that are a minute old.
    let mut expected = free[..7].to_vec();
    expected.extend(&low[..93]);
    for names in ["{many.levels}", "{many.levels,no.such}"] {
        assert_eq!(
            sorted(claim(names, 100, "{}").await),
            sorted(expected.clone()),
            "{names}: the free ready rows, then the oldest of the 2,000"
        );
    }
    other.rollback().await.unwrap();
}
