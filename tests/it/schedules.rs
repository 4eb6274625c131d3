//! Schedules (`WorkflowRouter::schedule`): one operation per tick across
//! real worker processes, missed ticks after every worker was killed,
//! daylight-saving transitions, pause and resume, conflicting declarations
//! and invalid input.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Datelike as _, SecondsFormat, TimeZone as _, Timelike as _, Utc};
use pgoutbox::admin::{Admin, ScheduleActionOutcome, ScheduleRemoval};
use pgoutbox::prelude::*;
use pgoutbox::testing::TestDatabase;
use pgoutbox::{MissedTicks, RouterError, Schedule, ScheduleError, StartError, schedule_key};
use pgoutbox_tests::{ScheduledTick, TICK_FLOW, TickDone};

use crate::processes::Worker;
use crate::support::{count, settings, test_db};

const NAME: &str = "fault.tick";

/// The ticks published for `fault.tick`, from their payloads, each checked
/// against its idempotency key.
async fn published_ticks(db: &TestDatabase) -> Vec<DateTime<Utc>> {
    let rows: Vec<(serde_json::Value, Option<String>)> = sqlx::query_as(
        "SELECT payload, idempotency_key FROM pgoutbox.operations WHERE name = $1 ORDER BY id",
    )
    .bind(NAME)
    .fetch_all(db.pool())
    .await
    .unwrap();
    rows.into_iter()
        .map(|(payload, key)| {
            let at: DateTime<Utc> = payload["at"].as_str().unwrap().parse().unwrap();
            assert_eq!(key.as_deref(), Some(schedule_key(NAME, at).as_str()));
            at
        })
        .collect()
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A worker process publishing `fault.tick` on `cron` with `missed`, its
/// log (`--log`) written to `log` when given.
fn scheduled_worker(
    db: &TestDatabase,
    cron: &str,
    missed: &str,
    log: Option<&std::path::Path>,
) -> Worker {
    let mut command = Worker::command(&db.url(), 2);
    command.args(["--schedule", cron, "--missed", missed]);
    if let Some(log) = log {
        command
            .arg("--log")
            .stderr(Stdio::from(std::fs::File::create(log).unwrap()));
    }
    Worker::spawn(command)
}

/// [`scheduled_worker`] with the time zone `zone` (another declaration
/// than `UTC`'s, with the same ticks when the zone is `Etc/UTC`).
fn scheduled_worker_in(
    db: &TestDatabase,
    cron: &str,
    missed: &str,
    zone: &str,
    log: Option<&std::path::Path>,
) -> Worker {
    let mut command = Worker::command(&db.url(), 2);
    command.args(["--schedule", cron, "--missed", missed, "--zone", zone]);
    if let Some(log) = log {
        command
            .arg("--log")
            .stderr(Stdio::from(std::fs::File::create(log).unwrap()));
    }
    Worker::spawn(command)
}

/// The cursor of `fault.tick`: the first tick not yet handled.
async fn next_tick(db: &TestDatabase) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT next_tick FROM pgoutbox.schedules WHERE name = $1")
        .bind(NAME)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// Waits (15 s at most) until `fault.tick`'s cursor is past `t`.
async fn wait_for_cursor_past(db: &TestDatabase, t: DateTime<Utc>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while next_tick(db).await <= t {
        assert!(
            std::time::Instant::now() < deadline,
            "the cursor did not pass {t}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (15 s at most) until `fault.tick` has `n` published ticks.
async fn wait_for_ticks(db: &TestDatabase, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while published_ticks(db).await.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than {n} ticks were published"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn log_path(db: &TestDatabase, what: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{}-{what}.log", db.name()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_publish_each_tick_exactly_once() {
    let db = test_db().await;
    let workers: Vec<Worker> = (0..3)
        .map(|_| scheduled_worker(&db, "* * * * * *", "latest", None))
        .collect();
    let started = Utc::now();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let stopping = Utc::now();
    for worker in workers {
        assert!(worker.terminate().success());
    }
    let ticks = published_ticks(&db).await;
    let distinct: BTreeSet<DateTime<Utc>> = ticks.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        ticks.len(),
        "one operation per tick: {ticks:?}"
    );
    let (first, last) = (*distinct.first().unwrap(), *distinct.last().unwrap());
    // No tick skipped while a worker ran: every second from the first
    // published tick to the last.
    let expected: BTreeSet<DateTime<Utc>> = (0..=(last - first).num_seconds())
        .map(|s| first + chrono::Duration::seconds(s))
        .collect();
    assert_eq!(distinct, expected, "a tick is missing");
    // The first tick came soon after the first worker started, the last
    // one shortly before they stopped: the whole 20 s were covered.
    assert!(
        first <= started + chrono::Duration::seconds(3),
        "first tick {first}, started {started}"
    );
    assert!(
        last >= stopping - chrono::Duration::seconds(2),
        "last tick {last}, stopped {stopping}"
    );
    assert!(ticks.len() >= 18, "{} ticks in 20 s", ticks.len());
    // The schedule's row records the last one and its operation.
    let (last_tick, last_op): (DateTime<Utc>, i64) = sqlx::query_as(
        "SELECT last_tick, last_operation_id FROM pgoutbox.schedules WHERE name = $1",
    )
    .bind(NAME)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(last_tick, last);
    let key: String =
        sqlx::query_scalar("SELECT idempotency_key FROM pgoutbox.operations WHERE id = $1")
            .bind(last_op)
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(key, schedule_key(NAME, last));
    // Three workers declared it; none of them is live any more.
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.schedule_declarations").await,
        3
    );
}

/// One run of the missed-ticks scenario: a worker publishes the first
/// tick and is killed; five ticks pass with no worker; a new worker
/// starts after them. Returns the ticks published and the new worker's
/// log.
async fn kill_and_restart(policy: &str) -> (Vec<DateTime<Utc>>, Vec<DateTime<Utc>>, String) {
    let db = test_db().await;
    // A base second B at least 4 s ahead, with B + 10 s in the same minute.
    let mut base = (Utc::now() + chrono::Duration::seconds(4))
        .with_nanosecond(0)
        .unwrap();
    if base.second() > 48 {
        base += chrono::Duration::seconds(i64::from(60 - base.second()));
    }
    let s = base.second();
    let cron = format!(
        "{},{},{},{},{},{} {} {} {} {} *",
        s,
        s + 6,
        s + 7,
        s + 8,
        s + 9,
        s + 10,
        base.minute(),
        base.hour(),
        base.day(),
        base.month()
    );
    let missed: Vec<DateTime<Utc>> = (6..=10)
        .map(|d| base + chrono::Duration::seconds(d))
        .collect();
    let first = scheduled_worker(&db, &cron, policy, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while published_ticks(&db).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first tick was not published"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();
    assert!(
        Utc::now() < missed[0] - chrono::Duration::seconds(1),
        "the machine is too slow for this test: the worker was killed at {}, the missed ticks start at {}",
        Utc::now(),
        missed[0]
    );
    assert_eq!(published_ticks(&db).await, [base]);
    // Every worker gone for the five ticks; back after them.
    let back = missed[4] + chrono::Duration::milliseconds(1500);
    tokio::time::sleep((back - Utc::now()).to_std().unwrap_or_default()).await;
    let log = log_path(&db, policy);
    let second = scheduled_worker(&db, &cron, policy, Some(&log));
    // Done once the cursor has moved past the last missed tick.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let next: DateTime<Utc> =
            sqlx::query_scalar("SELECT next_tick FROM pgoutbox.schedules WHERE name = $1")
                .bind(NAME)
                .fetch_one(db.pool())
                .await
                .unwrap();
        if next > missed[4] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the missed ticks were not handled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(second.terminate().success());
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    (published_ticks(&db).await, missed, text)
}

/// The log lines about missed tick `t`.
fn missed_lines(log: &str, t: DateTime<Utc>) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("missed tick") && l.contains(&format!("tick={}", rfc(t))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_missed_while_every_worker_was_down_follow_the_policy() {
    let (latest, all, none) = tokio::join!(
        kill_and_restart("latest"),
        kill_and_restart("all"),
        kill_and_restart("none")
    );

    // `latest`: the most recent missed tick, once.
    let (ticks, missed, log) = latest;
    assert_eq!(ticks.len(), 2, "{ticks:?}");
    assert_eq!(ticks[1], missed[4]);
    for t in &missed[..4] {
        let lines = missed_lines(&log, *t);
        assert!(
            lines.len() == 1 && lines[0].contains("not published"),
            "{t}: {lines:?}\n{log}"
        );
    }
    let lines = missed_lines(&log, missed[4]);
    assert!(
        lines.len() == 1 && lines[0].contains("published late"),
        "{lines:?}\n{log}"
    );

    // `all`: each of the five, oldest first.
    let (ticks, missed, log) = all;
    assert_eq!(ticks[1..], missed[..], "{ticks:?}");
    for t in &missed {
        let lines = missed_lines(&log, *t);
        assert!(
            lines.len() == 1 && lines[0].contains("published late"),
            "{t}: {lines:?}\n{log}"
        );
    }

    // `none`: none of them.
    let (ticks, missed, log) = none;
    assert_eq!(ticks.len(), 1, "{ticks:?}");
    for t in &missed {
        let lines = missed_lines(&log, *t);
        assert!(
            lines.len() == 1 && lines[0].contains("not published"),
            "{t}: {lines:?}\n{log}"
        );
    }
}

#[test]
fn daylight_saving_transitions_against_fixed_instants() {
    let utc = |d, h, m| Utc.with_ymd_and_hms(2026, 3, d, h, m, 0).unwrap();
    // Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST. 02:30 does not
    // exist that night: the tick comes when the gap ends, once.
    let skipped = Schedule::cron("30 2 * * *").time_zone("Europe/Berlin");
    assert_eq!(
        skipped.ticks_after(utc(28, 0, 0), 3).unwrap(),
        [utc(28, 1, 30), utc(29, 1, 0), utc(30, 0, 30)]
    );
    // Berlin, 2026-10-25: 03:00 CEST goes back to 02:00 CET. 02:30 happens
    // twice (00:30 and 01:30 UTC): the tick comes once, the first time.
    let utc = |d, h, m| Utc.with_ymd_and_hms(2026, 10, d, h, m, 0).unwrap();
    let repeated = Schedule::cron("30 2 * * *").time_zone("Europe/Berlin");
    assert_eq!(
        repeated.ticks_after(utc(24, 0, 0), 3).unwrap(),
        [utc(24, 0, 30), utc(25, 0, 30), utc(26, 1, 30)]
    );
    // With seconds, every 20 minutes: through both halves of the repeated hour.
    let interval = Schedule::cron("0 */20 2 * * *").time_zone("Europe/Berlin");
    assert_eq!(
        interval.ticks_after(utc(24, 12, 0), 6).unwrap(),
        [
            utc(25, 0, 0),
            utc(25, 0, 20),
            utc(25, 0, 40),
            utc(25, 1, 0),
            utc(25, 1, 20),
            utc(25, 1, 40)
        ]
    );
}

#[test]
fn invalid_schedules_are_refused_with_their_name() {
    let registry = Registry::default();
    let resolve = |schedule: Schedule| {
        WorkflowRouter::new()
            .schedule::<ScheduledTick>(schedule, |t| ScheduledTick { at: rfc(t.at()) })
            .resolve(&registry)
            .unwrap_err()
    };
    let err = resolve(Schedule::cron("0 3 * *"));
    assert!(matches!(
        err,
        RouterError::Schedule(ScheduleError::InvalidCron { .. })
    ));
    assert!(
        err.to_string()
            .starts_with("schedule `fault.tick`: invalid cron expression `0 3 * *`: "),
        "{err}"
    );
    let err = resolve(
        Schedule::cron("0 3 * * *")
            .time_zone("Europe/Berln")
            .named("nightly"),
    );
    assert_eq!(
        err.to_string(),
        "schedule `nightly`: unknown time zone `Europe/Berln`: expected an IANA name such as `Europe/Berlin` or `UTC`"
    );
    let err = resolve(Schedule::cron("0 0 30 2 *"));
    assert_eq!(
        err.to_string(),
        "schedule `fault.tick`: cron expression `0 0 30 2 *` never fires (in UTC)"
    );
    let err = resolve(Schedule::cron("* * * * *").named("Nightly Run"));
    assert!(
        matches!(
            err,
            RouterError::Schedule(ScheduleError::InvalidName { .. })
        ),
        "{err}"
    );
    let twice = WorkflowRouter::new()
        .schedule::<ScheduledTick>(Schedule::cron("0 1 * * *"), |t| ScheduledTick {
            at: rfc(t.at()),
        })
        .schedule::<ScheduledTick>(Schedule::cron("0 2 * * *"), |t| ScheduledTick {
            at: rfc(t.at()),
        });
    assert_eq!(
        twice.resolve(&registry).unwrap_err().to_string(),
        "schedule `fault.tick` is declared twice: give one of them another name with `Schedule::named` (for a workflow: the name given to `schedule_workflow`)"
    );
    // Outside the router's prefix.
    let misplaced = WorkflowRouter::with_prefix("billing")
        .schedule::<ScheduledTick>(Schedule::cron("0 1 * * *"), |t| ScheduledTick {
            at: rfc(t.at()),
        });
    assert!(matches!(
        misplaced.resolve(&registry),
        Err(RouterError::OutsidePrefix { .. })
    ));
}

fn tick_router(schedule: Schedule) -> WorkflowRouter {
    WorkflowRouter::new().schedule::<ScheduledTick>(schedule, |t| ScheduledTick { at: rfc(t.at()) })
}

async fn start(db: &TestDatabase, router: WorkflowRouter) -> Result<WorkflowSystem, StartError> {
    WorkflowSystem::builder(settings(db))
        .registry(
            Registry::from_registrations(pgoutbox::handlers![pgoutbox_tests::scheduled_tick])
                .unwrap(),
        )
        .router(router)
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_schedule_stops_the_start_with_its_name() {
    let db = test_db().await;
    let err = start(
        &db,
        tick_router(Schedule::cron("0 0 31 4 *").named("reports.never")),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "schedule `reports.never`: cron expression `0 0 31 4 *` never fires (in UTC)"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.schedules").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_declarations_are_refused_unless_taken_over() {
    let db = test_db().await;
    let admin = Admin::new(db.pool().clone(), &pgoutbox::Identifier::default());
    // Only a schedule, no operation to run: a worker may just publish.
    let first = start(&db, tick_router(Schedule::cron("* * * * * *")))
        .await
        .unwrap();
    // The same declaration: fine.
    let same = start(&db, tick_router(Schedule::cron("* * * * * *")))
        .await
        .unwrap();
    // Another one under the same name: refused, naming both.
    let err = start(&db, tick_router(Schedule::cron("*/2 * * * * *")))
        .await
        .unwrap_err();
    let StartError::ScheduleConflict { name, worker, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(name, NAME);
    assert!([first.worker_id(), same.worker_id()].contains(worker));
    let message = err.to_string();
    assert!(
        message.starts_with(
            "schedule `fault.tick` is declared otherwise by a live worker: this worker declares \
             `*/2 * * * * *` in UTC, missed ticks `latest`, publishing `fault.tick`; worker "
        ) && message.contains(
            "declares `* * * * * *` in UTC, missed ticks `latest`, publishing `fault.tick`"
        ) && message.contains("`Schedule::take_over`"),
        "{message}"
    );
    // The refused worker does not look live: its row is marked stopped.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.workers WHERE stopped_at IS NOT NULL"
        )
        .await,
        1
    );
    // A different policy is a different declaration too.
    let err = start(
        &db,
        tick_router(Schedule::cron("* * * * * *").missed(MissedTicks::All)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StartError::ScheduleConflict { .. }), "{err}");

    // Told to take over: it starts, its declaration is in force, and the
    // conflict is reported while both kinds run.
    let taker = start(
        &db,
        tick_router(Schedule::cron("*/2 * * * * *").take_over()),
    )
    .await
    .unwrap();
    let stats = admin.stats(Duration::from_secs(1), 1).await.unwrap();
    assert_eq!(
        stats.schedule_conflicts.len(),
        2,
        "{:?}",
        stats.schedule_conflicts
    );
    assert!(
        stats.schedule_conflicts.iter().all(|c| c.name == NAME
            && c.cron == "* * * * * *"
            && c.in_force_cron == "*/2 * * * * *")
    );
    let listed = admin.schedules().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].cron, "*/2 * * * * *");
    assert_eq!(listed[0].declared_by.len(), 3);
    assert_eq!(
        listed[0]
            .declared_by
            .iter()
            .filter(|d| d.in_force)
            .map(|d| d.worker_id)
            .collect::<Vec<_>>(),
        [taker.worker_id()]
    );
    // From now on only even seconds are published.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let since: DateTime<Utc> = Utc::now() - chrono::Duration::seconds(2);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let recent: Vec<DateTime<Utc>> = published_ticks(&db)
        .await
        .into_iter()
        .filter(|t| *t >= since)
        .collect();
    assert!(!recent.is_empty());
    assert!(recent.iter().all(|t| t.second() % 2 == 0), "{recent:?}");

    // Once the dissenters stop, no conflict is left.
    first.stop().await.unwrap();
    same.stop().await.unwrap();
    assert!(
        admin
            .stats(Duration::from_secs(1), 1)
            .await
            .unwrap()
            .schedule_conflicts
            .is_empty()
    );
    taker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_schedule_publishes_nothing_and_says_so() {
    let db = test_db().await;
    let admin = Admin::new(db.pool().clone(), &pgoutbox::Identifier::default());
    let log = log_path(&db, "paused");
    let worker = scheduled_worker(&db, "* * * * * *", "all", Some(&log));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while published_ticks(&db).await.len() < 2 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        admin
            .pause_schedule(NAME, "alice", "ledger migration")
            .await
            .unwrap(),
        ScheduleActionOutcome::Applied
    );
    let paused_at = Utc::now();
    let before = published_ticks(&db).await.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        published_ticks(&db).await.len(),
        before,
        "a paused schedule published"
    );
    let listed = admin.schedules().await.unwrap();
    assert!(listed[0].paused);
    assert_eq!(listed[0].paused_by.as_deref(), Some("alice"));
    assert_eq!(listed[0].paused_reason.as_deref(), Some("ledger migration"));
    // Pausing again is refused, and recorded as such.
    assert_eq!(
        admin.pause_schedule(NAME, "bob", "again").await.unwrap(),
        ScheduleActionOutcome::Refused
    );
    assert_eq!(
        admin
            .resume_schedule(NAME, "alice", "migration done")
            .await
            .unwrap(),
        ScheduleActionOutcome::Applied
    );
    let resumed_at = Utc::now();
    assert_eq!(
        admin
            .resume_schedule("no.such", "alice", "typo")
            .await
            .unwrap(),
        ScheduleActionOutcome::NotFound
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while published_ticks(&db).await.len() == before {
        assert!(std::time::Instant::now() < deadline, "no tick after resume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(worker.terminate().success());
    // Nothing for the ticks while paused, not even with `all`: they were
    // not missed, an operator held them.
    let ticks = published_ticks(&db).await;
    let during: Vec<_> = ticks
        .iter()
        .filter(|t| {
            **t > paused_at + chrono::Duration::seconds(1)
                && **t < resumed_at - chrono::Duration::seconds(1)
        })
        .collect();
    assert!(during.is_empty(), "{during:?}");
    // The trail.
    let actions = admin.schedule_actions(NAME).await.unwrap();
    let trail: Vec<(&str, &str, &str, &str, Option<&str>)> = actions
        .iter()
        .map(|a| {
            (
                a.action.as_str(),
                a.outcome.as_str(),
                a.actor.as_str(),
                a.from_state.as_str(),
                a.to_state.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        trail,
        [
            ("pause", "applied", "alice", "active", Some("paused")),
            ("pause", "refused", "bob", "paused", None),
            ("resume", "applied", "alice", "paused", Some("active")),
        ]
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operator_actions WHERE schedule = 'fault.tick' AND operation_id IS NULL").await,
        3
    );
    // And the worker said why it published nothing.
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(
        text.lines()
            .filter(|l| l.contains("the schedule is paused: tick not published"))
            .count()
            >= 2,
        "{text}"
    );
}

/// The reproduction: `*/2` seconds with `all`, paused while a
/// worker runs (it logs the paused ticks as not published), every worker
/// stopped, resumed, and a worker started with another declaration (the
/// same ticks, an explicit zone). The declaration it puts in force starts
/// after the last tick decided, not after the last one published: the
/// paused ticks are not published as missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_declaration_does_not_publish_the_ticks_an_operator_paused() {
    let db = test_db().await;
    let admin = Admin::new(db.pool().clone(), &pgoutbox::Identifier::default());
    let first = scheduled_worker(&db, "*/2 * * * * *", "all", None);
    wait_for_ticks(&db, 1).await;
    assert_eq!(
        admin.pause_schedule(NAME, "alice", "audit").await.unwrap(),
        ScheduleActionOutcome::Applied
    );
    let paused = Utc::now();
    // Two ticks decided (skipped as paused) by the running worker.
    wait_for_cursor_past(&db, paused + chrono::Duration::seconds(4)).await;
    assert!(first.terminate().success());
    assert_eq!(
        admin
            .resume_schedule(NAME, "alice", "audit done")
            .await
            .unwrap(),
        ScheduleActionOutcome::Applied
    );
    let resumed = Utc::now();
    let second = scheduled_worker_in(&db, "*/2 * * * * *", "all", "Etc/UTC", None);
    // Done once a tick after the resume is published.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while published_ticks(&db).await.iter().all(|t| *t < resumed) {
        assert!(std::time::Instant::now() < deadline, "no tick after resume");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(second.terminate().success());
    let time_zone: String =
        sqlx::query_scalar("SELECT time_zone FROM pgoutbox.schedules WHERE name = $1")
            .bind(NAME)
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(time_zone, "Etc/UTC", "the new declaration is in force");
    let ticks = published_ticks(&db).await;
    let held: Vec<_> = ticks
        .iter()
        .filter(|t| {
            **t > paused + chrono::Duration::seconds(1)
                && **t < resumed - chrono::Duration::seconds(1)
        })
        .collect();
    assert!(
        held.is_empty(),
        "paused ticks published: {held:?} (paused {paused}, resumed {resumed}, all {ticks:?})"
    );
}

/// A base second B at least 4 s ahead with B + 10 s in the same minute,
/// and a cron expression ticking at B, B+6 … B+10 (that minute of that
/// day only).
fn burst() -> (DateTime<Utc>, String, Vec<DateTime<Utc>>) {
    let mut base = (Utc::now() + chrono::Duration::seconds(4))
        .with_nanosecond(0)
        .unwrap();
    if base.second() > 48 {
        base += chrono::Duration::seconds(i64::from(60 - base.second()));
    }
    let s = base.second();
    let cron = format!(
        "{},{},{},{},{},{} {} {} {} {} *",
        s,
        s + 6,
        s + 7,
        s + 8,
        s + 9,
        s + 10,
        base.minute(),
        base.hour(),
        base.day(),
        base.month()
    );
    let later = (6..=10)
        .map(|d| base + chrono::Duration::seconds(d))
        .collect();
    (base, cron, later)
}

/// Ticks skipped by the `none` policy are decided: a new declaration (the
/// same ticks, policy `all`) does not find them missed again. Also for a
/// row from before migration 8, which records no decision: the tick before
/// its cursor stands in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_skipped_by_the_policy_are_not_published_by_a_changed_declaration() {
    tokio::join!(skip_then_redeploy(false), skip_then_redeploy(true));
}

/// [`ticks_skipped_by_the_policy_are_not_published_by_a_changed_declaration`],
/// the row's `last_decided` erased before the redeploy when `as_before_8`.
async fn skip_then_redeploy(as_before_8: bool) {
    let db = test_db().await;
    let (base, cron, missed) = burst();
    let first = scheduled_worker(&db, &cron, "none", None);
    wait_for_ticks(&db, 1).await;
    assert!(first.terminate().success());
    assert!(
        Utc::now() < missed[0] - chrono::Duration::seconds(1),
        "the machine is too slow for this test: the worker stopped at {}, the missed ticks start at {}",
        Utc::now(),
        missed[0]
    );
    // No worker for the five ticks; then one with `none` skips them.
    let back = missed[4] + chrono::Duration::milliseconds(1500);
    tokio::time::sleep((back - Utc::now()).to_std().unwrap_or_default()).await;
    let second = scheduled_worker(&db, &cron, "none", None);
    wait_for_cursor_past(&db, missed[4]).await;
    assert!(second.terminate().success());
    assert_eq!(published_ticks(&db).await, [base]);
    if as_before_8 {
        sqlx::query("UPDATE pgoutbox.schedules SET last_decided = NULL")
            .execute(db.pool())
            .await
            .unwrap();
    }
    // A redeploy with policy `all` and an explicit zone.
    let third = scheduled_worker_in(&db, &cron, "all", "Etc/UTC", None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(third.terminate().success());
    let (time_zone, missed_policy): (String, String) =
        sqlx::query_as("SELECT time_zone, missed FROM pgoutbox.schedules WHERE name = $1")
            .bind(NAME)
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(
        (time_zone.as_str(), missed_policy.as_str()),
        ("Etc/UTC", "all")
    );
    assert_eq!(
        published_ticks(&db).await,
        [base],
        "ticks skipped by `none` were published again (last_decided erased: {as_before_8})"
    );
    assert!(next_tick(&db).await > missed[4]);
}

/// A pause and a resume while no worker runs: the ticks between them are
/// held (skipped as paused, and logged so), those before the pause and
/// after the resume are missed and follow the policy (`all`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_and_resume_while_no_worker_runs_holds_the_ticks_between_them() {
    let db = test_db().await;
    let admin = Admin::new(db.pool().clone(), &pgoutbox::Identifier::default());
    let first = scheduled_worker(&db, "* * * * * *", "all", None);
    wait_for_ticks(&db, 2).await;
    assert!(first.terminate().success());
    let last_before = *published_ticks(&db).await.last().unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let pausing = Utc::now();
    assert_eq!(
        admin.pause_schedule(NAME, "alice", "hold").await.unwrap(),
        ScheduleActionOutcome::Applied
    );
    let paused = Utc::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resuming = Utc::now();
    assert_eq!(
        admin.resume_schedule(NAME, "alice", "go").await.unwrap(),
        ScheduleActionOutcome::Applied
    );
    let resumed = Utc::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = log_path(&db, "held");
    let second = scheduled_worker(&db, "* * * * * *", "all", Some(&log));
    let started = Utc::now();
    wait_for_cursor_past(&db, started + chrono::Duration::seconds(1)).await;
    assert!(second.terminate().success());
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let ticks: BTreeSet<DateTime<Utc>> = published_ticks(&db).await.into_iter().collect();
    let seconds = |from: DateTime<Utc>, to: DateTime<Utc>| {
        // The whole seconds t with from < t < to.
        let mut t = from.with_nanosecond(0).unwrap() + chrono::Duration::seconds(1);
        let mut all = Vec::new();
        while t < to {
            all.push(t);
            t += chrono::Duration::seconds(1);
        }
        all
    };
    // Missed before the pause: published late (`all`).
    for t in seconds(last_before, pausing) {
        assert!(
            ticks.contains(&t),
            "missed tick {t} before the pause not published: {ticks:?}"
        );
    }
    // Held: not published, logged as paused.
    let held = seconds(paused, resuming);
    assert!(held.len() >= 2, "{held:?}");
    for t in &held {
        assert!(!ticks.contains(t), "held tick {t} published: {ticks:?}");
        assert!(
            text.lines()
                .any(|l| l.contains(&format!("tick={}", rfc(*t))) && l.contains("paused")),
            "held tick {t} not logged as paused:\n{text}"
        );
    }
    // Missed after the resume: published late.
    for t in seconds(resumed, started) {
        assert!(
            ticks.contains(&t),
            "missed tick {t} after the resume not published: {ticks:?}"
        );
    }
}

/// Two pauses and resumes before any worker passed the first window: the
/// window widens to cover both; once a worker has passed it, a new pause
/// starts a window of its own.
#[tokio::test]
async fn a_second_pause_before_a_worker_saw_the_first_widens_the_window() {
    let db = test_db().await;
    let admin = Admin::new(db.pool().clone(), &pgoutbox::Identifier::default());
    sqlx::query(
        "INSERT INTO pgoutbox.schedules (name, operation, cron, time_zone, missed, declaration, next_tick) \
         VALUES ($1, 'fault.tick', '* * * * * *', 'UTC', 'all', 'd', now())",
    )
    .bind(NAME)
    .execute(db.pool())
    .await
    .unwrap();
    let window = || async {
        sqlx::query_as::<_, (DateTime<Utc>, DateTime<Utc>)>(
            "SELECT held_from, held_until FROM pgoutbox.schedules WHERE name = $1",
        )
        .bind(NAME)
        .fetch_one(db.pool())
        .await
        .unwrap()
    };
    let before = Utc::now();
    admin.pause_schedule(NAME, "alice", "one").await.unwrap();
    admin.resume_schedule(NAME, "alice", "one").await.unwrap();
    let (from, until) = window().await;
    assert!(before <= from && from <= until, "{from} {until}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    admin.pause_schedule(NAME, "alice", "two").await.unwrap();
    admin.resume_schedule(NAME, "alice", "two").await.unwrap();
    let (from2, until2) = window().await;
    assert_eq!(from2, from, "widened from the first pause");
    assert!(until2 > until);
    // A worker passed the window: the next pause has its own.
    sqlx::query("UPDATE pgoutbox.schedules SET next_tick = now() + interval '1 s'")
        .execute(db.pool())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    admin.pause_schedule(NAME, "alice", "three").await.unwrap();
    admin.resume_schedule(NAME, "alice", "three").await.unwrap();
    let (from3, until3) = window().await;
    assert!(from3 > until2, "{from3} {until2}");
    assert!(until3 >= from3);
}

/// A schedule row that no live worker declares (retired from the code, or
/// its workers all gone) is reported: by `Admin::stats`, on the
/// dashboard's overview and by the gauge `pgoutbox_schedules_undeclared`
/// of any worker, with or without schedules of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_that_no_live_worker_declares_is_reported() {
    let db = test_db().await;
    let admin = Admin::new(db.pool().clone(), &pgoutbox::Identifier::default());
    let first = scheduled_worker(&db, "* * * * * *", "latest", None);
    let stats = admin.stats(Duration::from_secs(1), 1).await.unwrap();
    assert!(
        stats.undeclared_schedules.is_empty(),
        "{:?}",
        stats.undeclared_schedules
    );
    assert!(first.terminate().success());
    let stats = admin.stats(Duration::from_secs(1), 1).await.unwrap();
    let undeclared: Vec<(&str, &str)> = stats
        .undeclared_schedules
        .iter()
        .map(|s| (s.name.as_str(), s.cron.as_str()))
        .collect();
    assert_eq!(undeclared, [(NAME, "* * * * * *")]);
    assert!(stats.undeclared_schedules[0].last_declared_at.is_some());

    // The gauge, from a worker that has no schedule.
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let plain = Worker::start_with(
        &db.url(),
        1,
        &[(
            "PGOUTBOX_WORKFLOW_SYSTEM__METRICS_LISTEN",
            addr.to_string().as_str(),
        )],
    );
    let scraped = tokio::task::spawn_blocking(move || crate::metrics::scrape(addr))
        .await
        .unwrap();
    assert!(plain.terminate().success());
    assert!(
        scraped.contains("pgoutbox_schedules_undeclared"),
        "{scraped}"
    );
    assert!(
        (crate::metrics::sample(&scraped, "pgoutbox_schedules_undeclared") - 1.0).abs()
            < f64::EPSILON,
        "{scraped}"
    );

    // The dashboard's overview says so.
    let app = pgoutbox::dashboard::router(
        admin.clone(),
        pgoutbox::dashboard::DashboardOptions::default(),
    );
    let response = tower::ServiceExt::oneshot(
        app,
        axum::http::Request::get("/")
            // As a browser on loopback sends it: the dashboard refuses a
            // request without a `Host` it answers to.
            .header(axum::http::header::HOST, "127.0.0.1:7480")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), axum::http::StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .unwrap();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        body.contains("schedule <code>fault.tick</code>: no live worker declares it"),
        "{body}"
    );

    // Declared again: no longer reported.
    let again = scheduled_worker(&db, "* * * * * *", "latest", None);
    let stats = admin.stats(Duration::from_secs(1), 1).await.unwrap();
    assert!(stats.undeclared_schedules.is_empty());
    assert!(again.terminate().success());
}

/// `Admin::remove_schedule` (`pgoutbox schedules remove`): refused while a
/// live worker declares the schedule, naming it; applied once none does; a
/// schedule declared again after its removal starts afresh, so the ticks
/// since its removal are not missed ticks to catch up (with `all`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_schedule_declared_again_starts_afresh() {
    let db = test_db().await;
    let admin = Admin::new(db.pool().clone(), &pgoutbox::Identifier::default());
    let again = scheduled_worker(&db, "* * * * * *", "all", None);
    let refused = admin
        .remove_schedule(NAME, "alice", "retired")
        .await
        .unwrap();
    let ScheduleRemoval::Refused { declared_by } = &refused else {
        panic!("{refused:?}")
    };
    assert_eq!(declared_by.len(), 1);
    assert_eq!(declared_by[0].pid, again.id().cast_signed());
    assert!(again.terminate().success());
    // Retired: removed, recorded. Declared again after three seconds with
    // `all`, it starts afresh: none of those ticks counts as missed.
    assert_eq!(
        admin
            .remove_schedule(NAME, "alice", "retired")
            .await
            .unwrap(),
        ScheduleRemoval::Applied
    );
    assert_eq!(
        admin
            .remove_schedule(NAME, "alice", "retired")
            .await
            .unwrap(),
        ScheduleRemoval::NotFound
    );
    let removed_at = Utc::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let revived = scheduled_worker(&db, "* * * * * *", "all", None);
    let revived_at = Utc::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(revived.terminate().success());
    let between: Vec<_> = published_ticks(&db)
        .await
        .into_iter()
        .filter(|t| *t > removed_at && *t < revived_at - chrono::Duration::seconds(1))
        .collect();
    assert!(
        between.is_empty(),
        "published after its removal: {between:?}"
    );
    let trail: Vec<(String, String)> = admin
        .schedule_actions(NAME)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.action, a.outcome))
        .collect();
    assert_eq!(
        trail,
        [
            ("remove".to_owned(), "refused".to_owned()),
            ("remove".to_owned(), "applied".to_owned())
        ]
    );
}

/// A schedule redeployed with another expression before its first tick
/// came: nothing from before the schedule existed is due. (The tick before
/// the old cursor, which stands in for a row that decided nothing yet, can
/// be earlier than the row itself: a daily 03:00 declared at 10:00.)
#[tokio::test]
async fn a_redeploy_before_the_first_tick_publishes_nothing_from_before_the_schedule() {
    let db = test_db().await;
    // Daily, at a second that is never within the next minute.
    let far = (Utc::now() + chrono::Duration::hours(12)).format("%S %M %H * * *");
    let first = scheduled_worker(&db, &far.to_string(), "all", None);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while count(&db, "SELECT count(*) FROM pgoutbox.schedules").await == 0 {
        assert!(std::time::Instant::now() < deadline, "no schedule row");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(first.terminate().success());
    let created: DateTime<Utc> =
        sqlx::query_scalar("SELECT created_at FROM pgoutbox.schedules WHERE name = $1")
            .bind(NAME)
            .fetch_one(db.pool())
            .await
            .unwrap();
    // Redeployed every second, with `all`: only ticks after the row's
    // creation may be published.
    let second = scheduled_worker(&db, "* * * * * *", "all", None);
    wait_for_ticks(&db, 1).await;
    assert!(second.terminate().success());
    let ticks = published_ticks(&db).await;
    assert!(
        ticks.iter().all(|t| *t > created),
        "ticks from before the schedule existed ({created}): {:?}",
        ticks
            .iter()
            .filter(|t| **t <= created)
            .take(3)
            .collect::<Vec<_>>()
    );
}

// Schedules that publish a workflow (`WorkflowRouter::schedule_workflow`):
// one workflow per tick, under the key `schedule:<name>:<tick>`.

/// The workflows of `fault.tick_flow`: each one's tick (from its key,
/// checked against its first step's payload), id and state, by id.
async fn scheduled_workflows(db: &TestDatabase) -> Vec<(DateTime<Utc>, i64, String)> {
    let rows: Vec<(i64, Option<String>, String, String, i32, serde_json::Value)> = sqlx::query_as(
        "SELECT w.id, w.idempotency_key, w.name, w.state, w.steps, o.payload
         FROM pgoutbox.workflows w JOIN pgoutbox.operations o ON o.id = w.root_id
         ORDER BY w.id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    rows.into_iter()
        .map(|(id, key, name, state, steps, payload)| {
            assert_eq!(name, TICK_FLOW);
            assert_eq!(steps, 2);
            let at: DateTime<Utc> = payload["at"].as_str().unwrap().parse().unwrap();
            assert_eq!(key.as_deref(), Some(schedule_key(TICK_FLOW, at).as_str()));
            (at, id, state)
        })
        .collect()
}

/// Waits (`within`) until `fault.tick_flow` has `n` workflows, all
/// `succeeded`.
async fn wait_for_succeeded_workflows(db: &TestDatabase, n: usize, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let all = scheduled_workflows(db).await;
        if all.len() >= n && all.iter().all(|(_, _, state)| state == "succeeded") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not {n} succeeded workflows: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A second at least `ahead` seconds from now, such that the `span`
/// seconds after it lie in the same minute.
fn base_ahead(ahead: i64, span: u32) -> DateTime<Utc> {
    let mut base = (Utc::now() + chrono::Duration::seconds(ahead))
        .with_nanosecond(0)
        .unwrap();
    if base.second() + span > 59 {
        base += chrono::Duration::seconds(i64::from(60 - base.second()));
    }
    base
}

/// A cron expression firing once at each `base + offset` seconds (all in
/// base's minute), and never again until next year.
fn seconds_cron(base: DateTime<Utc>, offsets: &[u32]) -> String {
    let seconds: Vec<String> = offsets
        .iter()
        .map(|o| (base.second() + o).to_string())
        .collect();
    format!(
        "{} {} {} {} {} *",
        seconds.join(","),
        base.minute(),
        base.hour(),
        base.day(),
        base.month()
    )
}

fn at(base: DateTime<Utc>, offsets: &[u32]) -> Vec<DateTime<Utc>> {
    offsets
        .iter()
        .map(|o| base + chrono::Duration::seconds(i64::from(*o)))
        .collect()
}

/// A worker process publishing the workflow `fault.tick_flow` on `cron`
/// (and running its steps), with `extra` arguments.
fn workflow_worker(db: &TestDatabase, cron: &str, extra: &[&str]) -> Worker {
    let mut command = Worker::command(&db.url(), 2);
    command.args(["--schedule-workflow", cron]).args(extra);
    Worker::spawn(command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_publish_one_workflow_per_tick_and_its_steps_run() {
    let db = test_db().await;
    let offsets = [0, 1, 2, 3, 4, 5];
    let base = base_ahead(6, 5);
    let cron = seconds_cron(base, &offsets);
    let workers = [
        workflow_worker(&db, &cron, &["--missed", "latest"]),
        workflow_worker(&db, &cron, &["--missed", "latest"]),
    ];
    assert!(
        Utc::now() < base,
        "the machine is too slow for this test: both workers were ready at {}, after the first tick {base}",
        Utc::now()
    );
    wait_for_succeeded_workflows(&db, offsets.len(), Duration::from_secs(40)).await;
    // One more second: a late duplicate would show.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for worker in workers {
        assert!(worker.terminate().success());
    }
    let all = scheduled_workflows(&db).await;
    let ticks: Vec<DateTime<Utc>> = all.iter().map(|(t, _, _)| *t).collect();
    assert_eq!(ticks, at(base, &offsets), "one workflow per tick: {all:?}");
    // Every step of every workflow ran, once.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded' AND workflow_id IS NOT NULL"
        )
        .await,
        12
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operations").await,
        12
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.attempts WHERE outcome = 'succeeded'"
        )
        .await,
        12
    );
    assert!(
        crate::workflows::inconsistent_workflows(&db)
            .await
            .is_empty()
    );
    // The schedule's row: publishing `workflow fault.tick_flow`, its last
    // tick and that tick's workflow's first step.
    let (operation, last_tick, last_op): (String, DateTime<Utc>, i64) = sqlx::query_as(
        "SELECT operation, last_tick, last_operation_id FROM pgoutbox.schedules WHERE name = $1",
    )
    .bind(TICK_FLOW)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(operation, "workflow fault.tick_flow");
    assert_eq!(last_tick, base + chrono::Duration::seconds(5));
    let last_root: i64 = sqlx::query_scalar("SELECT root_id FROM pgoutbox.workflows WHERE id = $1")
        .bind(all.last().unwrap().1)
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(last_op, last_root);
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.schedule_declarations").await,
        2
    );
    // Operators see the last tick's workflow and its state.
    let admin = Admin::new(db.pool().clone(), &pgoutbox::Identifier::default());
    let listed = admin.schedules().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].operation, "workflow fault.tick_flow");
    assert_eq!(
        listed[0]
            .last_workflow_id
            .map(pgoutbox::workflow::WorkflowId::as_i64),
        Some(all.last().unwrap().1)
    );
    assert_eq!(
        listed[0].last_workflow_state,
        Some(pgoutbox::WorkflowState::Succeeded)
    );
}

fn workflow_router(missed: MissedTicks, cron: &str) -> WorkflowRouter {
    WorkflowRouter::new()
        .operation::<ScheduledTick>()
        .operation::<TickDone>()
        .schedule_workflow(TICK_FLOW, Schedule::cron(cron).missed(missed), |tick| {
            pgoutbox_tests::tick_workflow(&tick)
        })
}

async fn start_workflows(db: &TestDatabase, router: WorkflowRouter) -> WorkflowSystem {
    WorkflowSystem::builder(settings(db))
        .registry(
            Registry::from_registrations(pgoutbox::handlers![
                pgoutbox_tests::scheduled_tick,
                pgoutbox_tests::tick_done
            ])
            .unwrap(),
        )
        .router(router)
        .start()
        .await
        .expect("system starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_missed_while_no_worker_ran_publish_one_workflow_each_under_all() {
    let db = test_db().await;
    let offsets = [0, 4, 5, 6];
    let base = base_ahead(3, 6);
    let cron = seconds_cron(base, &offsets);
    let first = start_workflows(&db, workflow_router(MissedTicks::All, &cron)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while scheduled_workflows(&db).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first tick was not published"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.stop().await.unwrap();
    let missed = at(base, &offsets[1..]);
    assert!(
        Utc::now() < missed[0] - chrono::Duration::milliseconds(500),
        "the machine is too slow for this test: the system stopped at {}, the missed ticks start at {}",
        Utc::now(),
        missed[0]
    );
    // No worker for the three ticks; back after them.
    let back = missed[2] + chrono::Duration::milliseconds(1500);
    tokio::time::sleep((back - Utc::now()).to_std().unwrap_or_default()).await;
    assert_eq!(scheduled_workflows(&db).await.len(), 1);
    let second = start_workflows(&db, workflow_router(MissedTicks::All, &cron)).await;
    wait_for_succeeded_workflows(&db, offsets.len(), Duration::from_secs(30)).await;
    second.stop().await.unwrap();
    let ticks: Vec<DateTime<Utc>> = scheduled_workflows(&db)
        .await
        .into_iter()
        .map(|(t, _, _)| t)
        .collect();
    assert_eq!(ticks, at(base, &offsets));
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'"
        )
        .await,
        8
    );
    assert!(
        crate::workflows::inconsistent_workflows(&db)
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_workflow_is_its_ticks_failure_and_later_ticks_still_run() {
    let db = test_db().await;
    let log = log_path(&db, "empty-workflow");
    let mut command = Worker::command(&db.url(), 2);
    command
        .args([
            "--schedule-workflow",
            "* * * * * *",
            "--empty-ticks",
            "2",
            "--log",
        ])
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    let worker = Worker::spawn(command);
    wait_for_succeeded_workflows(&db, 3, Duration::from_secs(30)).await;
    assert!(worker.terminate().success());
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    // Each of the two empty ones: logged with its error, as its tick's
    // failure.
    let failed: Vec<DateTime<Utc>> = text
        .lines()
        .filter(|l| l.contains("cannot be published"))
        .map(|l| {
            assert!(
                l.contains("ERROR")
                    && l.contains("schedule=fault.tick_flow")
                    && l.contains("workflow `fault.tick_flow` has no steps"),
                "{l}"
            );
            let tick = l.split("tick=").nth(1).unwrap().split(' ').next().unwrap();
            tick.parse().unwrap()
        })
        .collect();
    assert_eq!(failed.len(), 2, "{text}");
    assert!(failed[0] < failed[1]);
    // Nothing of them was written; every later tick has its workflow.
    let all = scheduled_workflows(&db).await;
    assert!(all.len() >= 3, "{all:?}");
    for (tick, _, _) in &all {
        assert!(
            *tick > failed[1],
            "{tick} published before the failures: {all:?}"
        );
    }
    let keys: Vec<String> = failed.iter().map(|t| schedule_key(TICK_FLOW, *t)).collect();
    let written: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pgoutbox.workflows WHERE idempotency_key = ANY($1))
              + (SELECT count(*) FROM pgoutbox.operations WHERE idempotency_key = ANY($1))",
    )
    .bind(&keys)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(written, 0);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.workflows w
             WHERE NOT EXISTS (SELECT 1 FROM pgoutbox.operations o WHERE o.workflow_id = w.id)"
        )
        .await,
        0
    );
    // The failed ticks were decided: the cursor is past them.
    let decided: DateTime<Utc> =
        sqlx::query_scalar("SELECT last_decided FROM pgoutbox.schedules WHERE name = $1")
            .bind(TICK_FLOW)
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert!(decided > failed[1]);
    assert!(
        crate::workflows::inconsistent_workflows(&db)
            .await
            .is_empty()
    );
}

#[test]
fn invalid_workflow_schedules_are_refused_with_their_name() {
    let registry = Registry::from_registrations(pgoutbox::handlers![
        pgoutbox_tests::scheduled_tick,
        pgoutbox_tests::tick_done
    ])
    .unwrap();
    let resolve = |router: WorkflowRouter| router.resolve(&registry).map(|_| ());
    let flow = |_: pgoutbox::Tick| Workflow::new(TICK_FLOW);
    assert_eq!(
        resolve(WorkflowRouter::new().schedule_workflow(
            "fault.flow",
            Schedule::cron("61 * * * *"),
            flow
        ))
        .unwrap_err()
        .to_string()
        .split(':')
        .take(2)
        .collect::<Vec<_>>()
        .join(":"),
        "schedule `fault.flow`: invalid cron expression `61 * * * *`"
    );
    assert_eq!(
        resolve(WorkflowRouter::new().schedule_workflow(
            "fault.flow",
            Schedule::cron("0 3 * * *").time_zone("Mars/Olympus"),
            flow
        ))
        .unwrap_err(),
        RouterError::Schedule(ScheduleError::UnknownZone {
            name: "fault.flow".into(),
            zone: "Mars/Olympus".into()
        })
    );
    assert_eq!(
        resolve(WorkflowRouter::new().schedule_workflow(
            "Fault Flow",
            Schedule::cron("0 3 * * *"),
            flow
        ))
        .unwrap_err()
        .to_string(),
        "invalid schedule name `Fault Flow`: expected lower-case segments of `[a-z0-9_]` joined by dots"
    );
    // The name is required and wins over `Schedule::named`.
    let routes = WorkflowRouter::new()
        .schedule_workflow(
            "fault.flow",
            Schedule::cron("0 3 * * *").named("fault.other"),
            flow,
        )
        .resolve(&registry)
        .unwrap();
    assert_eq!(routes.schedule_names().collect::<Vec<_>>(), ["fault.flow"]);
    // Outside the router's prefix.
    assert_eq!(
        resolve(WorkflowRouter::with_prefix("billing").schedule_workflow(
            "fault.flow",
            Schedule::cron("0 3 * * *"),
            flow
        ))
        .unwrap_err(),
        RouterError::ScheduleOutsidePrefix {
            name: "fault.flow".into(),
            prefix: "billing".into()
        }
    );
    // A workflow schedule and an operation schedule with one name, in two
    // routers.
    let twice = WorkflowRouter::new()
        .include_router(WorkflowRouter::new().schedule_workflow(
            "fault.tick",
            Schedule::cron("0 3 * * *"),
            flow,
        ))
        .include_router(tick_router(Schedule::cron("0 4 * * *")));
    assert_eq!(
        resolve(twice).unwrap_err(),
        RouterError::DuplicateSchedule {
            name: "fault.tick".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_or_invalid_tick_fails_only_that_tick() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let db = test_db().await;
    // The workflow schedule: its first tick panics, its second builds a
    // workflow with an invalid name, the others a good one; the operation
    // schedule: its first tick panics.
    let failed: Arc<Mutex<Vec<DateTime<Utc>>>> = Arc::default();
    let (calls, ops) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let op_failed: Arc<Mutex<Vec<DateTime<Utc>>>> = Arc::default();
    let router = {
        let failed = Arc::clone(&failed);
        let op_failed = Arc::clone(&op_failed);
        WorkflowRouter::new()
            .operation::<ScheduledTick>()
            .operation::<TickDone>()
            .schedule_workflow(
                TICK_FLOW,
                Schedule::cron("* * * * * *"),
                move |tick| match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => {
                        failed.lock().unwrap().push(tick.at());
                        panic!("no report today")
                    }
                    1 => {
                        failed.lock().unwrap().push(tick.at());
                        let mut wf = Workflow::new("Not A Name");
                        wf.add(ScheduledTick { at: rfc(tick.at()) });
                        wf
                    }
                    _ => pgoutbox_tests::tick_workflow(&tick),
                },
            )
            .schedule::<ScheduledTick>(Schedule::cron("* * * * * *"), move |tick| {
                if ops.fetch_add(1, Ordering::SeqCst) == 0 {
                    op_failed.lock().unwrap().push(tick.at());
                    panic!("no tick today");
                }
                ScheduledTick { at: rfc(tick.at()) }
            })
    };
    let system = start_workflows(&db, router).await;
    wait_for_succeeded_workflows(&db, 2, Duration::from_secs(30)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while operation_ticks(&db).await.len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no operation ticks");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    system.stop().await.unwrap();
    let failed = failed.lock().unwrap().clone();
    assert_eq!(failed.len(), 2);
    let all = scheduled_workflows(&db).await;
    for (tick, _, _) in &all {
        assert!(
            *tick > failed[1],
            "{tick} published before the failures: {all:?}"
        );
    }
    let keys: Vec<String> = failed.iter().map(|t| schedule_key(TICK_FLOW, *t)).collect();
    let written: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pgoutbox.workflows WHERE idempotency_key = ANY($1))
              + (SELECT count(*) FROM pgoutbox.operations WHERE idempotency_key = ANY($1)
                 OR (workflow_id IS NOT NULL AND payload->>'at' = ANY($2)))",
    )
    .bind(&keys)
    .bind(failed.iter().map(|t| rfc(*t)).collect::<Vec<_>>())
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(written, 0);
    // The operation schedule went on after its panicking tick too: its
    // ticks are consecutive, from the second after the one that panicked.
    let ticks = operation_ticks(&db).await;
    let op_failed = op_failed.lock().unwrap().clone();
    assert_eq!(op_failed.len(), 1);
    assert_eq!(
        ticks[0],
        op_failed[0] + chrono::Duration::seconds(1),
        "{ticks:?}"
    );
    assert!(
        ticks
            .windows(2)
            .all(|w| w[1] - w[0] == chrono::Duration::seconds(1)),
        "{ticks:?}"
    );
    assert!(
        crate::workflows::inconsistent_workflows(&db)
            .await
            .is_empty()
    );
}

/// The ticks of the operation schedule `fault.tick` (not the workflows'
/// `fault.tick` steps), each checked against its key.
async fn operation_ticks(db: &TestDatabase) -> Vec<DateTime<Utc>> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT payload->>'at', idempotency_key FROM pgoutbox.operations
         WHERE name = $1 AND workflow_id IS NULL ORDER BY id",
    )
    .bind(NAME)
    .fetch_all(db.pool())
    .await
    .unwrap();
    rows.into_iter()
        .map(|(at, key)| {
            let at: DateTime<Utc> = at.parse().unwrap();
            assert_eq!(key.as_deref(), Some(schedule_key(NAME, at).as_str()));
            at
        })
        .collect()
}
