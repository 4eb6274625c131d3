//! Cron schedules: when a periodic operation is due, in which time zone,
//! and what happens to the ticks that no worker was running to publish.
//!
//! A [`Schedule`] is declared on a router with
//! [`WorkflowRouter::schedule`](crate::WorkflowRouter::schedule) (or
//! [`schedule_workflow`](crate::WorkflowRouter::schedule_workflow), to
//! publish a workflow per tick); every
//! worker process whose routers hold it publishes its due ticks, and the
//! idempotency key `schedule:<name>:<tick in UTC>` makes one operation per
//! tick, however many processes do. The guarantees are in
//! `docs/consistency.md` ("Schedules").
//!
//! ```
//! use pgoutbox::prelude::*;
//! use pgoutbox::{MissedTicks, Schedule};
//!
//! #[operation("billing.reconcile")]
//! async fn reconcile(ctx: &mut Context, day: chrono::NaiveDate) -> Result<()> {
//!     let _ = (ctx, day);
//!     Ok(())
//! }
//!
//! // Every night at 03:00 in Berlin, for the day before.
//! let nightly = Schedule::cron("0 3 * * *").time_zone("Europe/Berlin").missed(MissedTicks::All);
//! let router = WorkflowRouter::with_prefix("billing")
//!     .operation::<Reconcile>()
//!     .schedule::<Reconcile>(nightly, |tick| Reconcile { day: tick.date().pred_opt().unwrap() });
//! let routes = router.resolve(&Registry::from_registrations(pgoutbox::handlers![reconcile])?)?;
//! assert_eq!(routes.schedule_names().collect::<Vec<_>>(), ["billing.reconcile"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, NaiveDate, SubsecRound as _, Utc};
use chrono_tz::Tz;
use sha2::Digest as _;

/// How many missed ticks [`MissedTicks::All`] publishes at most when a
/// worker finds them: the most recent ones. Older missed ticks beyond it
/// are logged as dropped and never published.
///
/// ```
/// assert_eq!(pgoutbox::MAX_MISSED_TICKS, 1000);
/// ```
pub const MAX_MISSED_TICKS: usize = 1000;

/// What a worker does with ticks that passed while no worker declaring the
/// schedule was running (each such tick is logged, whatever the policy).
///
/// ```
/// use pgoutbox::MissedTicks;
///
/// assert_eq!(MissedTicks::default(), MissedTicks::Latest);
/// assert_eq!("all".parse::<MissedTicks>(), Ok(MissedTicks::All));
/// assert_eq!(MissedTicks::None.to_string(), "none");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedTicks {
    /// Publish the most recent missed tick once (the default): a nightly
    /// job that missed three nights runs once, for the last of them.
    #[default]
    Latest,
    /// Publish every missed tick, oldest first, up to the most recent
    /// [`MAX_MISSED_TICKS`].
    All,
    /// Publish none of them; the next tick is published as usual.
    None,
}

impl MissedTicks {
    /// The policy's name as stored: `latest`, `all` or `none`.
    ///
    /// ```
    /// assert_eq!(pgoutbox::MissedTicks::Latest.as_str(), "latest");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            MissedTicks::Latest => "latest",
            MissedTicks::All => "all",
            MissedTicks::None => "none",
        }
    }
}

impl fmt::Display for MissedTicks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MissedTicks {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "latest" => Ok(MissedTicks::Latest),
            "all" => Ok(MissedTicks::All),
            "none" => Ok(MissedTicks::None),
            other => Err(format!(
                "unknown missed-ticks policy `{other}`: expected `latest`, `all` or `none`"
            )),
        }
    }
}

/// When a periodic operation is due: a cron expression in a time zone,
/// a policy for missed ticks, and the schedule's name.
///
/// The expression has five fields (minute, hour, day of month, month, day
/// of week) or six with seconds first, optionally a seventh for the year;
/// `L`, `W`, `#` and names (`MON`, `JAN`) work as in croner. The zone is
/// an IANA name (default `UTC`); across daylight-saving changes a tick at a
/// fixed time that falls in the skipped hour is published when the hour
/// ends, and one in the repeated hour is published once, at its first
/// occurrence (interval patterns such as `*/15 * * * *` tick through both
/// halves of a repeated hour).
///
/// The builder never fails: the expression, the zone and the name are
/// checked when the routers are resolved (at start-up, or by
/// [`WorkflowRouter::resolve`](crate::WorkflowRouter::resolve) in a test),
/// and a schedule that does not parse, names an unknown zone or never fires
/// is refused there with its name.
///
/// ```
/// use std::time::Duration;
/// use pgoutbox::{MissedTicks, Schedule};
///
/// let every_15_s = Schedule::cron("*/15 * * * * *");
/// let nightly = Schedule::cron("0 3 * * *")
///     .time_zone("Europe/Berlin")
///     .missed(MissedTicks::None)
///     .named("billing.reconcile.nightly");
/// assert_eq!(nightly.expression(), "0 3 * * *");
/// assert_eq!(nightly.zone(), "Europe/Berlin");
/// assert_eq!(every_15_s.zone(), "UTC");
/// assert_eq!(nightly.name(), Some("billing.reconcile.nightly"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    expression: String,
    zone: String,
    missed: MissedTicks,
    name: Option<String>,
    take_over: bool,
}

impl Schedule {
    /// A schedule from a cron expression (seconds optional), in UTC.
    ///
    /// ```
    /// let every_minute = pgoutbox::Schedule::cron("* * * * *");
    /// assert_eq!(every_minute.expression(), "* * * * *");
    /// ```
    pub fn cron(expression: impl Into<String>) -> Schedule {
        Schedule {
            expression: expression.into(),
            zone: "UTC".to_owned(),
            missed: MissedTicks::default(),
            name: None,
            take_over: false,
        }
    }

    /// The IANA time zone the expression is read in (`Europe/Berlin`).
    ///
    /// ```
    /// let s = pgoutbox::Schedule::cron("0 9 * * MON-FRI").time_zone("America/New_York");
    /// assert_eq!(s.zone(), "America/New_York");
    /// ```
    #[must_use]
    pub fn time_zone(mut self, zone: impl Into<String>) -> Schedule {
        self.zone = zone.into();
        self
    }

    /// What to do with ticks missed while no worker ran (default
    /// [`MissedTicks::Latest`]).
    ///
    /// ```
    /// use pgoutbox::{MissedTicks, Schedule};
    ///
    /// let s = Schedule::cron("0 * * * *").missed(MissedTicks::All);
    /// assert_eq!(s.missed_ticks(), MissedTicks::All);
    /// ```
    #[must_use]
    pub fn missed(mut self, policy: MissedTicks) -> Schedule {
        self.missed = policy;
        self
    }

    /// The schedule's name; by default the name of the operation it
    /// publishes. Two schedules of one operation need names of their own.
    /// Same grammar as operation names (`billing.reconcile.eu`).
    ///
    /// ```
    /// let s = pgoutbox::Schedule::cron("0 3 * * *").named("billing.reconcile.eu");
    /// assert_eq!(s.name(), Some("billing.reconcile.eu"));
    /// ```
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Schedule {
        self.name = Some(name.into());
        self
    }

    /// Lets this worker start, and take the schedule over, while a live
    /// worker declares the same name differently (another expression,
    /// zone, policy or operation). Without it such a worker refuses to
    /// start, naming both declarations. The worker that took over
    /// publishes; the other stops publishing this schedule (and says so),
    /// and the conflict is reported until one of them stops.
    ///
    /// ```
    /// let s = pgoutbox::Schedule::cron("0 4 * * *").take_over();
    /// assert!(s.takes_over());
    /// ```
    #[must_use]
    pub fn take_over(mut self) -> Schedule {
        self.take_over = true;
        self
    }

    /// The cron expression as given.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone's name.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The missed-ticks policy.
    pub fn missed_ticks(&self) -> MissedTicks {
        self.missed
    }

    /// The explicit name, if one was given.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Whether [`Schedule::take_over`] was called.
    pub fn takes_over(&self) -> bool {
        self.take_over
    }

    /// Parses the expression and the zone, and checks that the schedule
    /// fires after `now`; errors name the schedule `name`.
    pub(crate) fn compile(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<Compiled, ScheduleError> {
        if !crate::name::is_valid(name) {
            return Err(ScheduleError::InvalidName {
                name: name.to_owned(),
            });
        }
        let cron =
            croner::Cron::from_str(&self.expression).map_err(|e| ScheduleError::InvalidCron {
                name: name.to_owned(),
                expression: self.expression.clone(),
                reason: e.to_string(),
            })?;
        let zone = Tz::from_str(&self.zone).map_err(|_| ScheduleError::UnknownZone {
            name: name.to_owned(),
            zone: self.zone.clone(),
        })?;
        let compiled = Compiled { cron, zone };
        if compiled.next_after(now).is_none() {
            return Err(ScheduleError::NeverFires {
                name: name.to_owned(),
                expression: self.expression.clone(),
                zone: self.zone.clone(),
            });
        }
        Ok(compiled)
    }

    /// What identifies this declaration among workers: a hash of the
    /// expression, zone, policy and operation name.
    pub(crate) fn declaration(&self, operation: &str) -> String {
        let mut hash = sha2::Sha256::new();
        for part in [
            self.expression.as_str(),
            self.zone.as_str(),
            self.missed.as_str(),
            operation,
        ] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        hex::encode(&hash.finalize()[..8])
    }
}

/// Why a schedule cannot be used; every message names the schedule.
///
/// ```
/// use pgoutbox::{Schedule, ScheduleError};
///
/// let err = Schedule::cron("0 3 * *").check("billing.reconcile").unwrap_err();
/// assert!(matches!(err, ScheduleError::InvalidCron { .. }));
/// assert!(err.to_string().starts_with("schedule `billing.reconcile`: invalid cron expression `0 3 * *`"));
/// let err = Schedule::cron("0 3 * * *").time_zone("Europe/Berln").check("billing.reconcile").unwrap_err();
/// assert_eq!(err.to_string(), "schedule `billing.reconcile`: unknown time zone `Europe/Berln`: expected an IANA name such as `Europe/Berlin` or `UTC`");
/// let err = Schedule::cron("0 0 30 2 *").check("billing.reconcile").unwrap_err();
/// assert!(matches!(err, ScheduleError::NeverFires { .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The name does not follow the grammar of operation names.
    #[error(
        "invalid schedule name `{name}`: expected lower-case segments of `[a-z0-9_]` joined by dots"
    )]
    InvalidName {
        /// The name.
        name: String,
    },
    /// The cron expression does not parse.
    #[error("schedule `{name}`: invalid cron expression `{expression}`: {reason}")]
    InvalidCron {
        /// The schedule.
        name: String,
        /// The expression.
        expression: String,
        /// The parser's message.
        reason: String,
    },
    /// The time zone is not an IANA zone name.
    #[error(
        "schedule `{name}`: unknown time zone `{zone}`: expected an IANA name such as \
         `Europe/Berlin` or `UTC`"
    )]
    UnknownZone {
        /// The schedule.
        name: String,
        /// The zone as given.
        zone: String,
    },
    /// The expression matches no time from now on (`0 0 30 2 *`).
    #[error("schedule `{name}`: cron expression `{expression}` never fires (in {zone})")]
    NeverFires {
        /// The schedule.
        name: String,
        /// The expression.
        expression: String,
        /// The zone.
        zone: String,
    },
}

impl Schedule {
    /// Checks the schedule as the routers do at start-up, naming it
    /// `name` in the error: the expression parses, the zone exists, and it
    /// fires at least once from now on.
    ///
    /// ```
    /// let ok = pgoutbox::Schedule::cron("0 0 29 2 *").time_zone("Asia/Tokyo");
    /// assert!(ok.check("leap.day").is_ok()); // every four years is still a schedule
    /// ```
    pub fn check(&self, name: &str) -> Result<(), ScheduleError> {
        self.compile(name, Utc::now()).map(|_| ())
    }

    /// The first `n` ticks after `after` (exclusive), in UTC: for checking
    /// what an expression means across a time zone's transitions.
    ///
    /// ```
    /// use chrono::{TimeZone, Utc};
    /// use pgoutbox::Schedule;
    ///
    /// // 02:30 does not exist in Berlin on 2026-03-29: the tick comes when the gap ends, 03:00 CEST.
    /// let s = Schedule::cron("30 2 * * *").time_zone("Europe/Berlin");
    /// let ticks = s.ticks_after(Utc.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap(), 2)?;
    /// assert_eq!(ticks[0], Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap());
    /// assert_eq!(ticks[1], Utc.with_ymd_and_hms(2026, 3, 30, 0, 30, 0).unwrap());
    /// # Ok::<(), pgoutbox::ScheduleError>(())
    /// ```
    pub fn ticks_after(
        &self,
        after: DateTime<Utc>,
        n: usize,
    ) -> Result<Vec<DateTime<Utc>>, ScheduleError> {
        let name = self.name.as_deref().unwrap_or("schedule");
        let compiled = self.compile(name, after)?;
        let mut ticks = Vec::with_capacity(n);
        let mut at = after;
        while ticks.len() < n {
            let Some(next) = compiled.next_after(at) else {
                break;
            };
            ticks.push(next);
            at = next;
        }
        Ok(ticks)
    }
}

/// One tick of a schedule, given to the closure that builds its payload.
///
/// ```
/// use chrono::{NaiveDate, TimeZone, Utc};
/// use pgoutbox::Schedule;
///
/// use pgoutbox::Tick;
///
/// let tick = Tick::new(Utc.with_ymd_and_hms(2026, 7, 1, 22, 30, 0).unwrap(), "Europe/Berlin").unwrap();
/// assert_eq!(tick.at(), Utc.with_ymd_and_hms(2026, 7, 1, 22, 30, 0).unwrap());
/// assert_eq!(tick.local().to_rfc3339(), "2026-07-02T00:30:00+02:00");
/// assert_eq!(tick.date(), NaiveDate::from_ymd_opt(2026, 7, 2).unwrap()); // the local date
/// assert_eq!(tick.zone(), "Europe/Berlin");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    at: DateTime<Utc>,
    local: DateTime<FixedOffset>,
    zone: Tz,
}

impl Tick {
    fn in_zone(at: DateTime<Utc>, zone: Tz) -> Tick {
        Tick {
            at,
            local: at.with_timezone(&zone).fixed_offset(),
            zone,
        }
    }

    /// The tick at `at` of a schedule in `zone` (an IANA name; `None` when
    /// unknown): for testing the closure that builds a payload from it.
    ///
    /// ```
    /// use chrono::{TimeZone, Utc};
    ///
    /// let at = Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap();
    /// let tick = pgoutbox::Tick::new(at, "Europe/Berlin").unwrap();
    /// assert_eq!(tick.local().to_rfc3339(), "2026-03-29T03:00:00+02:00");
    /// assert!(pgoutbox::Tick::new(at, "Mars/Olympus").is_none());
    /// ```
    pub fn new(at: DateTime<Utc>, zone: &str) -> Option<Tick> {
        Tz::from_str(zone).ok().map(|zone| Tick::in_zone(at, zone))
    }

    /// The instant of the tick, in UTC (the one in its idempotency key).
    pub fn at(&self) -> DateTime<Utc> {
        self.at
    }

    /// The tick on the schedule's local clock, with its offset then.
    pub fn local(&self) -> DateTime<FixedOffset> {
        self.local
    }

    /// The local date of the tick.
    pub fn date(&self) -> NaiveDate {
        self.local.date_naive()
    }

    /// The schedule's time zone.
    pub fn zone(&self) -> &'static str {
        self.zone.name()
    }
}

/// The key a tick is published under: `schedule:<name>:<tick in UTC, RFC
/// 3339, whole seconds>`.
///
/// ```
/// use chrono::{TimeZone, Utc};
///
/// let at = Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap();
/// assert_eq!(pgoutbox::schedule_key("billing.reconcile", at), "schedule:billing.reconcile:2026-03-29T01:00:00Z");
/// ```
pub fn schedule_key(name: &str, tick: DateTime<Utc>) -> String {
    format!(
        "schedule:{name}:{}",
        tick.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// A checked schedule: the parsed expression and the zone.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    cron: croner::Cron,
    zone: Tz,
}

/// The ticks from the schedule's cursor up to the database's now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Due {
    /// Ticks while a worker declaring the schedule ran: always published.
    pub(crate) regular: Vec<DateTime<Utc>>,
    /// Ticks before that, oldest first.
    pub(crate) missed: Vec<DateTime<Utc>>,
    /// Whether older ticks were left out (more than the limit were due):
    /// they count as missed and are not published.
    pub(crate) more_missed: bool,
}

/// What to do with due ticks under a policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Ticks to publish, oldest first, each with whether it was missed.
    pub(crate) publish: Vec<(DateTime<Utc>, bool)>,
    /// Missed ticks not published.
    pub(crate) skipped: Vec<DateTime<Utc>>,
}

impl Compiled {
    /// The first tick strictly after `t`, or `None` when there is none.
    pub(crate) fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.trunc_subsecs(0).with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|next| next.with_timezone(&Utc))
    }

    /// The last tick at or before `t`.
    fn at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.trunc_subsecs(0).with_timezone(&self.zone);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|prev| prev.with_timezone(&Utc))
    }

    /// The tick at `at` as the payload closure sees it.
    pub(crate) fn tick(&self, at: DateTime<Utc>) -> Tick {
        Tick::in_zone(at, self.zone)
    }

    /// The ticks in `[from, now]`, at most the `limit` most recent: those
    /// at or after `covered_since` (a worker declaring the schedule was
    /// running) are regular, the earlier ones missed. Walks back from
    /// `now`, so a long gap costs at most `limit` steps.
    pub(crate) fn due(
        &self,
        from: DateTime<Utc>,
        now: DateTime<Utc>,
        covered_since: DateTime<Utc>,
        limit: usize,
    ) -> Due {
        let mut due = Due::default();
        let mut cursor = self.at_or_before(now);
        while let Some(tick) = cursor {
            if tick < from {
                break;
            }
            if due.regular.len() + due.missed.len() >= limit {
                due.more_missed = true;
                break;
            }
            if tick >= covered_since {
                due.regular.push(tick);
            } else {
                due.missed.push(tick);
            }
            cursor = self.previous(tick);
        }
        due.regular.reverse();
        due.missed.reverse();
        due
    }

    /// The last tick strictly before `tick`.
    pub(crate) fn previous(&self, tick: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = tick.with_timezone(&self.zone);
        self.cron
            .find_previous_occurrence(&local, false)
            .ok()
            .map(|prev| prev.with_timezone(&Utc))
    }
}

/// Applies `policy` to `due`: regular ticks are always published; of the
/// missed ones, the latest, all (up to the limit `due` was built with) or
/// none.
pub(crate) fn plan(policy: MissedTicks, due: &Due) -> Plan {
    let mut plan = Plan::default();
    match policy {
        MissedTicks::All => plan.publish.extend(due.missed.iter().map(|t| (*t, true))),
        MissedTicks::Latest => {
            if let Some((last, older)) = due.missed.split_last() {
                plan.skipped.extend_from_slice(older);
                plan.publish.push((*last, true));
            }
        }
        MissedTicks::None => plan.skipped.extend_from_slice(&due.missed),
    }
    plan.publish.extend(due.regular.iter().map(|t| (*t, false)));
    plan
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone as _, Utc};

    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn compiled(expr: &str, zone: &str) -> Compiled {
        Schedule::cron(expr)
            .time_zone(zone)
            .compile("test", utc(2026, 1, 1, 0, 0, 0))
            .unwrap()
    }

    #[test]
    fn a_tick_in_the_skipped_hour_comes_when_the_hour_ends() {
        // Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        let s = compiled("30 2 * * *", "Europe/Berlin");
        let first = s.next_after(utc(2026, 3, 28, 12, 0, 0)).unwrap();
        assert_eq!(first, utc(2026, 3, 29, 1, 0, 0));
        assert_eq!(
            first.with_timezone(&chrono_tz::Europe::Berlin).to_rfc3339(),
            "2026-03-29T03:00:00+02:00"
        );
        // The next day as usual, 02:30 CEST.
        assert_eq!(s.next_after(first).unwrap(), utc(2026, 3, 30, 0, 30, 0));
        // The day before, 02:30 CET.
        assert_eq!(
            s.next_after(utc(2026, 3, 27, 12, 0, 0)).unwrap(),
            utc(2026, 3, 28, 1, 30, 0)
        );
    }

    #[test]
    fn a_tick_in_the_repeated_hour_comes_once() {
        // Berlin, 2026-10-25: 03:00 CEST goes back to 02:00 CET (01:00 UTC);
        // 02:30 happens at 00:30 UTC and again at 01:30 UTC.
        let s = compiled("30 2 * * *", "Europe/Berlin");
        let first = s.next_after(utc(2026, 10, 24, 12, 0, 0)).unwrap();
        assert_eq!(first, utc(2026, 10, 25, 0, 30, 0));
        assert_eq!(s.next_after(first).unwrap(), utc(2026, 10, 26, 1, 30, 0));
        // Walking the due ticks over the whole night finds it once.
        let due = s.due(
            utc(2026, 10, 24, 12, 0, 0),
            utc(2026, 10, 25, 12, 0, 0),
            utc(2026, 1, 1, 0, 0, 0),
            10,
        );
        assert_eq!(due.regular, [utc(2026, 10, 25, 0, 30, 0)]);
        assert!(due.missed.is_empty());
    }

    #[test]
    fn an_interval_ticks_through_both_halves_of_the_repeated_hour() {
        let s = compiled("0 */30 * * * *", "Europe/Berlin");
        let due = s.due(
            utc(2026, 10, 24, 23, 45, 0),
            utc(2026, 10, 25, 2, 15, 0),
            utc(2026, 1, 1, 0, 0, 0),
            100,
        );
        assert_eq!(
            due.regular,
            [
                utc(2026, 10, 25, 0, 0, 0),  // 02:00 CEST
                utc(2026, 10, 25, 0, 30, 0), // 02:30 CEST
                utc(2026, 10, 25, 1, 0, 0),  // 02:00 CET
                utc(2026, 10, 25, 1, 30, 0), // 02:30 CET
                utc(2026, 10, 25, 2, 0, 0),  // 03:00 CET
            ]
        );
    }

    #[test]
    fn daily_ticks_across_both_transitions_are_one_per_day() {
        let s = compiled("0 3 * * *", "Europe/Berlin");
        let spring = s.due(
            utc(2026, 3, 27, 0, 0, 0),
            utc(2026, 3, 31, 0, 0, 0),
            utc(2020, 1, 1, 0, 0, 0),
            100,
        );
        assert_eq!(
            spring.regular,
            [
                utc(2026, 3, 27, 2, 0, 0),
                utc(2026, 3, 28, 2, 0, 0),
                utc(2026, 3, 29, 1, 0, 0),
                utc(2026, 3, 30, 1, 0, 0)
            ]
        );
        let autumn = s.due(
            utc(2026, 10, 24, 0, 0, 0),
            utc(2026, 10, 27, 0, 0, 0),
            utc(2020, 1, 1, 0, 0, 0),
            100,
        );
        assert_eq!(
            autumn.regular,
            [
                utc(2026, 10, 24, 1, 0, 0),
                utc(2026, 10, 25, 2, 0, 0),
                utc(2026, 10, 26, 2, 0, 0)
            ]
        );
        assert_eq!(
            s.tick(utc(2026, 10, 25, 2, 0, 0)).date(),
            NaiveDate::from_ymd_opt(2026, 10, 25).unwrap()
        );
    }

    #[test]
    fn seconds_are_optional() {
        let minutes = compiled("* * * * *", "UTC");
        assert_eq!(
            minutes.next_after(utc(2026, 5, 1, 0, 0, 0)).unwrap(),
            utc(2026, 5, 1, 0, 1, 0)
        );
        let seconds = compiled("* * * * * *", "UTC");
        assert_eq!(
            seconds.next_after(utc(2026, 5, 1, 0, 0, 0)).unwrap(),
            utc(2026, 5, 1, 0, 0, 1)
        );
        // Sub-second instants (the database's clock) round down first.
        let now = utc(2026, 5, 1, 0, 0, 0) + chrono::Duration::milliseconds(400);
        assert_eq!(seconds.next_after(now).unwrap(), utc(2026, 5, 1, 0, 0, 1));
        assert_eq!(seconds.at_or_before(now).unwrap(), utc(2026, 5, 1, 0, 0, 0));
    }

    #[test]
    fn due_ticks_split_into_missed_and_regular() {
        let s = compiled("* * * * * *", "UTC");
        let from = utc(2026, 5, 1, 0, 0, 10);
        let due = s.due(
            from,
            utc(2026, 5, 1, 0, 0, 17),
            utc(2026, 5, 1, 0, 0, 15),
            100,
        );
        assert_eq!(
            due.missed,
            (10..15)
                .map(|s| utc(2026, 5, 1, 0, 0, s))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            due.regular,
            (15..=17)
                .map(|s| utc(2026, 5, 1, 0, 0, s))
                .collect::<Vec<_>>()
        );
        assert!(!due.more_missed);
        // A gap longer than the limit keeps the most recent missed ticks.
        let due = s.due(
            utc(2026, 5, 1, 0, 0, 0),
            utc(2026, 5, 1, 1, 0, 0),
            utc(2026, 5, 1, 2, 0, 0),
            3,
        );
        assert_eq!(
            due.missed,
            [
                utc(2026, 5, 1, 0, 59, 58),
                utc(2026, 5, 1, 0, 59, 59),
                utc(2026, 5, 1, 1, 0, 0)
            ]
        );
        assert!(due.more_missed);
        // Nothing due before the cursor.
        let due = s.due(
            utc(2026, 5, 1, 0, 0, 20),
            utc(2026, 5, 1, 0, 0, 19),
            utc(2020, 1, 1, 0, 0, 0),
            3,
        );
        assert_eq!(due, Due::default());
    }

    #[test]
    fn policies_publish_the_latest_all_or_none_of_the_missed_ticks() {
        let t = |s| utc(2026, 5, 1, 0, 0, s);
        let due = Due {
            regular: vec![t(20)],
            missed: vec![t(10), t(11), t(12)],
            more_missed: false,
        };
        let latest = plan(MissedTicks::Latest, &due);
        assert_eq!(latest.publish, [(t(12), true), (t(20), false)]);
        assert_eq!(latest.skipped, [t(10), t(11)]);
        let all = plan(MissedTicks::All, &due);
        assert_eq!(
            all.publish,
            [(t(10), true), (t(11), true), (t(12), true), (t(20), false)]
        );
        assert!(all.skipped.is_empty());
        let none = plan(MissedTicks::None, &due);
        assert_eq!(none.publish, [(t(20), false)]);
        assert_eq!(none.skipped, [t(10), t(11), t(12)]);
    }

    #[test]
    fn bad_input_is_refused_with_the_schedule_named() {
        let now = utc(2026, 1, 1, 0, 0, 0);
        let err = Schedule::cron("61 * * * *")
            .compile("billing.reconcile", now)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("schedule `billing.reconcile`: invalid cron expression `61 * * * *`"),
            "{err}"
        );
        let err = Schedule::cron("0 0 30 2 *")
            .compile("billing.reconcile", now)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "schedule `billing.reconcile`: cron expression `0 0 30 2 *` never fires (in UTC)"
        );
        let err = Schedule::cron("0 0 0 1 1 * 2020")
            .compile("old", now)
            .unwrap_err();
        assert!(matches!(err, ScheduleError::NeverFires { .. }), "{err}");
        let err = Schedule::cron("* * * * *")
            .time_zone("Mars/Olympus")
            .compile("x", now)
            .unwrap_err();
        assert!(matches!(err, ScheduleError::UnknownZone { .. }));
        let err = Schedule::cron("* * * * *")
            .compile("Bad Name", now)
            .unwrap_err();
        assert!(matches!(err, ScheduleError::InvalidName { .. }));
        // Leap days are rare, not never.
        assert!(Schedule::cron("0 0 29 2 *").compile("leap", now).is_ok());
    }

    #[test]
    fn declarations_differ_by_any_part() {
        let base = Schedule::cron("0 3 * * *");
        let d = base.declaration("billing.reconcile");
        assert_eq!(
            d,
            base.clone().named("other").declaration("billing.reconcile"),
            "the name is not part of it"
        );
        assert_ne!(
            d,
            base.clone()
                .time_zone("Europe/Berlin")
                .declaration("billing.reconcile")
        );
        assert_ne!(
            d,
            base.clone()
                .missed(MissedTicks::All)
                .declaration("billing.reconcile")
        );
        assert_ne!(
            d,
            Schedule::cron("0 4 * * *").declaration("billing.reconcile")
        );
        assert_ne!(d, base.declaration("billing.other"));
    }
}
