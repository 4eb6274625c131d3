//! Bulk actions: act on every operation a filter selects, and only on
//! those that still match it when their turn comes.
//!
//! A bulk run first counts its targets and takes the highest id among them
//! as its upper bound ([`Admin::bulk_preview`]), then pages through them in
//! id order, a page of ids at a time ([`Admin::bulk_targets`], no
//! payloads), and acts on each with [`Admin::act_if_matching`]: one
//! statement that locks the row, re-checks the whole filter (status, name,
//! queue, age) and the action's allowed states, and changes and records it
//! only when both hold. An operation that a worker or another operator
//! moved meanwhile is skipped, not acted on: `replay --status dead` never
//! replays an operation that has since succeeded.

use chrono::{DateTime, Utc};

use super::{Action, Admin, OperationFilter};
use crate::definition::OperationId;
use crate::duration::millis;
use crate::state::Status;
use crate::store::bulk::BulkFilter;

/// One operation a bulk action would touch (no payload).
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// use pgoutbox::admin::{Action, OperationFilter};
///
/// let filter = OperationFilter { name: Some("billing.charge".into()), ..OperationFilter::default() };
/// let preview = admin.bulk_preview(Action::Retry, &filter, 5).await?;
/// for target in &preview.sample {
///     println!("{} {} {} {}", target.id, target.name, target.status, target.created_at);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BulkTarget {
    /// Id.
    pub id: OperationId,
    /// Name.
    pub name: String,
    /// State when listed.
    pub status: Status,
    /// Queue.
    pub queue: String,
    /// Published at.
    pub created_at: DateTime<Utc>,
}

/// What a bulk action would touch: how many, a sample, and the run's upper
/// bound (operations published after the preview are not taken).
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// use pgoutbox::Status;
/// use pgoutbox::admin::{Action, OperationFilter};
///
/// let dead = OperationFilter { statuses: vec![Status::Dead], ..OperationFilter::default() };
/// let preview = admin.bulk_preview(Action::Replay, &dead, 3).await?;
/// assert!(preview.sample.len() as i64 <= preview.count.min(3));
/// assert_eq!(preview.upto.is_none(), preview.count == 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BulkPreview {
    /// How many operations match now.
    pub count: i64,
    /// The first few of them, in id order.
    pub sample: Vec<BulkTarget>,
    /// The highest matching id (`None`: nothing matches).
    pub upto: Option<OperationId>,
}

/// What became of one operation of a bulk action.
///
/// ```
/// use pgoutbox::Status;
/// use pgoutbox::admin::BulkStep;
///
/// let step = BulkStep::NoLongerMatches { status: Some(Status::Succeeded) };
/// assert!(!matches!(step, BulkStep::Applied { .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum BulkStep {
    /// Done, and recorded in `operator_actions`.
    Applied {
        /// The state before.
        from: Status,
        /// The state after.
        to: Status,
        /// For a replay: the new operation.
        new_operation_id: Option<OperationId>,
    },
    /// It matches the filter, but the action is not allowed from its state
    /// (the operator named that state with `--status`); left alone, not
    /// recorded.
    NotAllowed {
        /// The state that forbids it.
        status: Status,
    },
    /// It changed (or was purged) since it was listed and no longer matches
    /// the filter; left alone, not recorded.
    NoLongerMatches {
        /// Its state now (`None`: it is gone).
        status: Option<Status>,
    },
}

impl Action {
    /// The states a bulk `action` on `filter` targets: the filter's, or,
    /// when it names none, the states the action is allowed from.
    ///
    /// ```
    /// use pgoutbox::Status;
    /// use pgoutbox::admin::{Action, OperationFilter};
    ///
    /// let any = OperationFilter::default();
    /// assert_eq!(
    ///     Action::Cancel.bulk_statuses(&any),
    ///     [Status::Waiting, Status::Pending, Status::Retrying, Status::Stalled]
    /// );
    /// let dead = OperationFilter { statuses: vec![Status::Dead], ..OperationFilter::default() };
    /// assert_eq!(Action::Retry.bulk_statuses(&dead), [Status::Dead]);
    /// ```
    pub fn bulk_statuses(self, filter: &OperationFilter) -> Vec<Status> {
        if filter.statuses.is_empty() {
            self.allowed_from().to_vec()
        } else {
            filter.statuses.clone()
        }
    }
}

fn bulk_filter<'a>(statuses: &'a [Status], filter: &'a OperationFilter) -> BulkFilter<'a> {
    BulkFilter {
        statuses,
        name: filter.name.as_deref(),
        queue: filter.queue.as_deref(),
        since_ms: filter.since.map(millis),
        error_text: filter.error_contains.as_deref(),
        root: filter.root.map(OperationId::as_i64),
    }
}

impl Admin {
    /// How many operations a bulk `action` on `filter` would consider
    /// (in the states of [`Action::bulk_statuses`]), the first `sample` of
    /// them and the run's upper bound. `filter.limit` is ignored.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// use pgoutbox::admin::{Action, OperationFilter};
    ///
    /// let mail = OperationFilter { queue: Some("mail".into()), ..OperationFilter::default() };
    /// let preview = admin.bulk_preview(Action::Cancel, &mail, 5).await?;
    /// println!("cancel {} operation(s), e.g. {:?}", preview.count, preview.sample);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn bulk_preview(
        &self,
        action: Action,
        filter: &OperationFilter,
        sample: i64,
    ) -> Result<BulkPreview, sqlx::Error> {
        let statuses = action.bulk_statuses(filter);
        let mut conn = self.pool.acquire().await?;
        let (count, upto) = self
            .store
            .bulk_count(&mut conn, bulk_filter(&statuses, filter))
            .await?;
        let sample = match upto {
            Some(upto) if sample > 0 => {
                self.bulk_targets(action, filter, None, OperationId::from_i64(upto), sample)
                    .await?
            }
            _ => Vec::new(),
        };
        Ok(BulkPreview {
            count,
            sample,
            upto: upto.map(OperationId::from_i64),
        })
    }

    /// One page of a bulk action's targets: up to `limit` operations
    /// matching `filter` (in the states of [`Action::bulk_statuses`]) with
    /// ids above `after` and at most `upto`, in id order.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// use pgoutbox::admin::{Action, OperationFilter};
    ///
    /// // A dry run: list every operation `ops retry --name billing.charge` would retry.
    /// let filter = OperationFilter { name: Some("billing.charge".into()), ..OperationFilter::default() };
    /// let preview = admin.bulk_preview(Action::Retry, &filter, 0).await?;
    /// if let Some(upto) = preview.upto {
    ///     let mut after = None;
    ///     loop {
    ///         let page = admin.bulk_targets(Action::Retry, &filter, after, upto, 500).await?;
    ///         let Some(last) = page.last() else { break };
    ///         after = Some(last.id);
    ///         page.iter().for_each(|t| println!("{} {}", t.id, t.status));
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn bulk_targets(
        &self,
        action: Action,
        filter: &OperationFilter,
        after: Option<OperationId>,
        upto: OperationId,
        limit: i64,
    ) -> Result<Vec<BulkTarget>, sqlx::Error> {
        let statuses = action.bulk_statuses(filter);
        let mut conn = self.pool.acquire().await?;
        let rows = self
            .store
            .bulk_targets(
                &mut conn,
                bulk_filter(&statuses, filter),
                // Ids start at 1.
                after.map_or(0, OperationId::as_i64),
                upto.as_i64(),
                limit,
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, status, queue, created_at)| BulkTarget {
                id: OperationId::from_i64(id),
                name,
                status,
                queue,
                created_at,
            })
            .collect())
    }

    /// Applies `action` to operation `id` only if, read under its row
    /// lock, it still matches `filter` (in the states of
    /// [`Action::bulk_statuses`]) and its state allows the action; only an
    /// applied action is recorded, with `actor` and `reason`, in the same
    /// statement.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// use pgoutbox::{OperationId, Status};
    /// use pgoutbox::admin::{Action, BulkStep, OperationFilter};
    ///
    /// let dead = OperationFilter { statuses: vec![Status::Dead], ..OperationFilter::default() };
    /// let id = OperationId::from_i64(42);
    /// match admin.act_if_matching(id, Action::Replay, &dead, "alice", "provider back").await? {
    ///     BulkStep::Applied { new_operation_id, .. } => println!("replayed as {new_operation_id:?}"),
    ///     // Say it succeeded meanwhile: it is not replayed (no second charge).
    ///     BulkStep::NoLongerMatches { status } => println!("skipped, now {status:?}"),
    ///     BulkStep::NotAllowed { status } => println!("replay is not allowed from {status}"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn act_if_matching(
        &self,
        id: OperationId,
        action: Action,
        filter: &OperationFilter,
        actor: &str,
        reason: &str,
    ) -> Result<BulkStep, sqlx::Error> {
        let statuses = action.bulk_statuses(filter);
        let filter = bulk_filter(&statuses, filter);
        let allowed = action.allowed_from();
        let mut conn = self.pool.acquire().await?;
        let step = if let Some(to) = action.target() {
            self.store
                .bulk_transition(
                    &mut conn,
                    id,
                    action.name(),
                    actor,
                    reason,
                    allowed,
                    to,
                    filter,
                )
                .await?
                .map(|(from, matches, applied)| (from, matches, applied.then_some((to, None))))
        } else {
            self.store
                .bulk_replay(&mut conn, id, actor, reason, allowed, filter)
                .await?
                .map(|(from, matches, new)| (from, matches, new.map(|n| (from, Some(n)))))
        };
        Ok(match step {
            None => BulkStep::NoLongerMatches { status: None },
            Some((status, false, _)) => BulkStep::NoLongerMatches {
                status: Some(status),
            },
            Some((from, true, Some((to, new_operation_id)))) => BulkStep::Applied {
                from,
                to,
                new_operation_id,
            },
            Some((status, true, None)) => BulkStep::NotAllowed { status },
        })
    }

    /// Like [`Admin::purge_batch`], and records a `purge` action (with
    /// `actor` and `reason`) for every deleted `dead` or `stalled`
    /// operation, in the same statement: for the purges that an operator
    /// decides. `batch` must be at least 1.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use pgoutbox::Status;
    ///
    /// let statuses = [Status::Dead];
    /// let quarter = Duration::from_hours(90 * 24);
    /// while admin.purge_batch_recorded(&statuses, quarter, 1000, "alice", "tickets closed").await? == 1000 {}
    /// # Ok(())
    /// # }
    /// ```
    pub async fn purge_batch_recorded(
        &self,
        statuses: &[Status],
        older_than: std::time::Duration,
        batch: i64,
        actor: &str,
        reason: &str,
    ) -> Result<u64, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let n = self
            .store
            .purge_recorded(
                &mut conn,
                statuses,
                millis(older_than),
                batch,
                actor,
                reason,
            )
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
