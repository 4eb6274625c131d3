//! Schedules (`WorkflowRouter::schedule`): one operation per tick across
//! real worker processes, missed ticks after every worker was killed,
//! daylight-saving transitions, pause and resume, conflicting declarations
//! and invalid input.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Datelike as _, SecondsFormat, TimeZone as _, Timelike as _, Utc};
use pgoutbox::admin::{Admin, ScheduleActionOutcome};
use pgoutbox::prelude::*;
use pgoutbox::testing::TestDatabase;
use pgoutbox::{MissedTicks, RouterError, Schedule, ScheduleError, StartError, schedule_key};
use pgoutbox_tests::ScheduledTick;

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
        "schedule `fault.tick` is declared twice: give one of them another name with `Schedule::named`"
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
