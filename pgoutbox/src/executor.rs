//! Running one claimed operation and recording what happened.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument as _;

use crate::context::{AttemptInfo, Context, TxContext};
use crate::definition::Backoff;
use crate::error::HandlerError;
use crate::jitter::jitter;
use crate::limits::Batch;
use crate::outcome::{Attempt, AttemptEnd, Decision};
use crate::publish::PublishError;
use crate::registry::{BoxFuture, ErasedHandler, HandlerFailure, Registration};
#[cfg(feature = "testing")]
use crate::runtime::Crash;
use crate::runtime::{Completion, RecordError, RunningOp, Runtime};
#[cfg(feature = "nats")]
use crate::state::Outcome;
use crate::storable;
use crate::store::{Claimed, Fence, NewOperation, Store};
use crate::workflow::{Prepared, Workflow, WorkflowError};

/// Polls a boxed future, turning a panic into an error message.
struct CatchUnwind<'a, T>(BoxFuture<'a, T>);

impl<T> Future for CatchUnwind<'_, T> {
    type Output = Result<T, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let future = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".to_owned())
}

/// The next operation that a transactional handler's commit claimed (its
/// attempt started by that same commit): the slot carries on with it
/// without a claim of its own, so that a slot running transactional
/// handlers waits for one commit per operation rather than two.
pub(crate) struct Chained {
    pub(crate) claimed: Claimed,
    /// Its place among the outcomes not recorded yet.
    pub(crate) in_flight: OwnedSemaphorePermit,
    /// When its claim was sent: its lease runs from after that.
    pub(crate) sent: Instant,
}

/// Runs `claimed` and records its outcome; returns when the books are
/// right (or the lease is gone and the rescuer's record stands). With
/// `chain`, the batch it was claimed in, a transactional success also
/// claims the next ready operation of that batch in its commit, and
/// returns it.
pub(crate) async fn execute(
    rt: Arc<Runtime>,
    claimed: Claimed,
    running: Arc<RunningOp>,
    chain: Option<&Batch>,
) -> Option<Chained> {
    let span = tracing::info_span!(
        "pgoutbox.attempt",
        operation_id = %claimed.id,
        name = %claimed.name,
        attempt = claimed.attempt,
    );
    run(&rt, claimed, &running, chain).instrument(span).await
}

/// Gives back an operation claimed ahead of the free slots whose handler
/// never started because the system is stopping: its attempt is recorded
/// as a snooze (which does not count against `max_attempts`) and the
/// operation is ready again at once.
pub(crate) async fn release(rt: Arc<Runtime>, claimed: Claimed, running: Arc<RunningOp>) {
    let attempt = attempt_of(&rt, &claimed, None);
    let decision = Decision::Snooze {
        delay_ms: 0,
        note: "claimed ahead, not started: the worker stopped".to_owned(),
    };
    let fence = fence(&rt, &claimed);
    record(
        &rt,
        &claimed.name,
        fence,
        &attempt,
        decision,
        Produced::default(),
        &running,
    )
    .await;
}

#[allow(clippy::too_many_lines)] // The dispatch to a relay, a transactional or a plain handler, in order.
async fn run(
    rt: &Runtime,
    claimed: Claimed,
    running: &RunningOp,
    chain: Option<&Batch>,
) -> Option<Chained> {
    let name = claimed.name.clone();
    metrics::counter!("pgoutbox_claimed_total", "name" => name.clone()).increment(1);
    metrics::histogram!("pgoutbox_pickup_latency_seconds", "name" => name.clone())
        .record(claimed.waited_seconds.max(0.0));
    #[cfg(feature = "nats")]
    if let Some(route) = rt.routes.get(&claimed.name).filter(|r| r.relay().is_some()) {
        run_relay(rt, &claimed, route, running).await;
        return None;
    }
    // The claim selects only names this process handles, whose routes hold
    // handler registrations; anything else is a bug, and still gets
    // recorded rather than dropped.
    let found = rt
        .routes
        .get(&claimed.name)
        .map(crate::router::Route::registration)
        .and_then(|r| r.erased_handler().map(|handler| (r, handler)));
    let Some((registration, handler)) = found else {
        no_handler(rt, &claimed, running).await;
        return None;
    };
    #[cfg(feature = "testing")]
    if rt.crash_for(claimed.attempt) == Some(Crash::BeforeCall) {
        vanish(&claimed, Crash::BeforeCall);
        return None;
    }
    let attempt = attempt_of(rt, &claimed, Some(registration));
    let timeout = registration
        .options()
        .timeout
        .unwrap_or(rt.settings.workflow_system.handler_timeout);
    let info = AttemptInfo {
        id: claimed.id,
        name: registration.name(),
        attempt: u32::try_from(claimed.attempt).unwrap_or(0),
        external_key: claimed.external_key,
        root_id: claimed.root_id,
        // Read with the claim: a plain handler needs no connection.
        inputs: Arc::clone(&claimed.inputs),
        workflow_id: claimed.workflow_id,
    };
    let started = Instant::now();
    let mut next = None;
    match handler {
        ErasedHandler::Transactional(handler) => {
            next = run_transactional(
                rt,
                &claimed,
                registration,
                info,
                handler,
                timeout,
                &attempt,
                running,
                chain,
            )
            .await;
        }
        ErasedHandler::Plain(handler) => {
            let mut ctx = Context {
                info,
                publisher: rt.publisher.clone(),
                follow_ups: Vec::new(),
                additions: None,
            };
            let (end, result) = drive(
                handler(&mut ctx, claimed.payload.clone()),
                timeout,
                running,
                &claimed,
                registration,
            )
            .await;
            // The handler is done: its slot may take the next operation
            // while this outcome is recorded.
            running.release_slot();
            rt.wake.notify_one();
            #[cfg(feature = "testing")]
            if let Some(point) = rt.crash_for(claimed.attempt) {
                vanish(&claimed, point);
                return None;
            }
            let (end, additions) = checked_additions(rt, &claimed, ctx.additions.take(), end);
            let decision = attempt.decide(end, jitter());
            record(
                rt,
                &claimed.name,
                fence(rt, &claimed),
                &attempt,
                decision,
                Produced {
                    follow_ups: ctx.follow_ups,
                    additions,
                    result_schema: result.as_ref().map(|_| registration.output_schema().hash()),
                    result,
                },
                running,
            )
            .await;
        }
    }
    metrics::histogram!("pgoutbox_handler_duration_seconds", "name" => name)
        .record(started.elapsed().as_secs_f64());
    next
}

/// Records the attempt of an operation this process claimed but has no
/// handler for: a bug, recorded rather than dropped.
async fn no_handler(rt: &Runtime, claimed: &Claimed, running: &RunningOp) {
    let end = AttemptEnd::Failed(HandlerError::retryable(format!(
        "no handler for `{}` in this process",
        claimed.name
    )));
    let attempt = attempt_of(rt, claimed, None);
    let decision = attempt.decide(end, jitter());
    record(
        rt,
        &claimed.name,
        fence(rt, claimed),
        &attempt,
        decision,
        Produced::default(),
        running,
    )
    .await;
}

/// Relays one operation: sends its message, frees the handler slot once
/// the client has it, waits for the broker's acknowledgement, records the
/// receipt with the success (through the completer, in batches).
///
/// A message sent and never acknowledged may be in the stream: the attempt
/// ends unknown, and the operation is sent again only while the broker
/// still drops copies, that is when the retry will be sent within the
/// broker's duplicate window of the *first* send that may have landed (the
/// earliest attempt with an unknown outcome since the operator's latest
/// retry, or this one). Otherwise it is `stalled`, for an operator to
/// decide. The same rule is checked again before a retry is sent, since a
/// claim can come later than its backoff.
#[cfg(feature = "nats")]
async fn run_relay(
    rt: &Runtime,
    claimed: &Claimed,
    route: &crate::router::Route,
    running: &RunningOp,
) {
    let Some(relay) = route.relay() else { return };
    let started = Instant::now();
    let registration = route.registration();
    let attempt = attempt_of(rt, claimed, Some(registration));
    let timeout = registration
        .options()
        .timeout
        .unwrap_or(rt.settings.workflow_system.handler_timeout);
    let window = relay.relay.backend.duplicate_window();
    let (decision, result) = match earlier_send(rt, claimed).await {
        Err(e) => {
            // Nothing is sent while it is unknown whether it is safe to.
            running.release_slot();
            rt.wake.notify_one();
            // This attempt certainly sent nothing: a plain failure, and
            // not a send that may have landed for the next one to count.
            let end = AttemptEnd::Failed(HandlerError::retryable(format!(
                "the relay did not send the message: it cannot read whether an earlier \
                 attempt's send may have landed ({e})"
            )));
            (attempt.decide(end, jitter()), None)
        }
        Ok(earlier) => {
            // From the first send that may have landed, so far.
            let since_first = || match earlier {
                Some((read, since)) => since + read.elapsed(),
                None => started.elapsed(),
            };
            let refused = match earlier {
                Some(_) => resend_refused(relay, &since_first, Duration::ZERO, window).await,
                None => None,
            };
            if let Some(reason) = refused {
                running.release_slot();
                rt.wake.notify_one();
                // This attempt sent nothing (`failed`, and not counted as a
                // send that may have landed); the operation is in doubt
                // for the earlier send, whatever its attempts left.
                let end = AttemptEnd::Failed(HandlerError::retryable(format!(
                    "the relay did not send the message again, as an earlier attempt's \
                     send may have landed and {reason}"
                )));
                // The reason is in the error already.
                (attempt.decide(end, jitter()).stall(""), None)
            } else {
                let (end, result) = relay_attempt(rt, claimed, relay, timeout, running).await;
                // A failure before the send still holds the slot.
                running.release_slot();
                rt.wake.notify_one();
                let decision = attempt.decide(end, jitter());
                let refused = match decision.in_doubt_retry() {
                    Some(delay) => resend_refused(relay, &since_first, delay, window).await,
                    None => None,
                };
                match refused {
                    Some(reason) => (decision.stall(&reason), result),
                    None => (decision, result),
                }
            }
        }
    };
    record(
        rt,
        &claimed.name,
        fence(rt, claimed),
        &attempt,
        decision,
        Produced {
            follow_ups: Vec::new(),
            additions: None,
            result,
            // A receipt, not an output of the operation's type.
            result_schema: None,
        },
        running,
    )
    .await;
    metrics::histogram!("pgoutbox_handler_duration_seconds", "name" => claimed.name.clone())
        .record(started.elapsed().as_secs_f64());
}

/// Why a retry sent `delay` from now must not be sent (see
/// `relay::resend_refused`), given the time `since_first` from the first
/// send that may have landed and the `window` as last read. A refusal is
/// checked once more with the window read again from the broker: it may
/// have changed.
#[cfg(feature = "nats")]
async fn resend_refused(
    relay: &crate::relay::RouteRelay,
    since_first: &impl Fn() -> Duration,
    delay: Duration,
    window: Option<Duration>,
) -> Option<String> {
    crate::relay::resend_refused(since_first() + delay, window)?;
    let window = relay.relay.backend.reread_duplicate_window().await;
    crate::relay::resend_refused(since_first() + delay, window)
}

/// When an earlier attempt of a relayed operation ended with an unknown
/// outcome (its message may be in the stream): the instant this was read
/// and how long before it that attempt started, by the database's clock.
/// `None` when no attempt did (or this is the first attempt).
#[cfg(feature = "nats")]
async fn earlier_send(
    rt: &Runtime,
    claimed: &Claimed,
) -> Result<Option<(Instant, Duration)>, String> {
    if claimed.attempt <= 1 {
        return Ok(None);
    }
    let limit = rt.settings.workflow_system.lease;
    let read = Instant::now();
    let ms = tokio::time::timeout(limit, async {
        let mut conn = rt.pool.acquire().await?;
        rt.store.relay_first_send(&mut conn, claimed.id).await
    })
    .await
    .map_err(|_| format!("no answer within {limit:?}"))?
    .map_err(|e| e.to_string())?;
    Ok(ms.map(|ms| (read, Duration::from_millis(u64::try_from(ms).unwrap_or(0)))))
}

/// One relay attempt's end, and the broker's receipt when it succeeded.
#[cfg(feature = "nats")]
async fn relay_attempt(
    rt: &Runtime,
    claimed: &Claimed,
    relay: &crate::relay::RouteRelay,
    timeout: Duration,
    running: &RunningOp,
) -> (AttemptEnd, Option<serde_json::Value>) {
    let refused = |r: crate::relay::Refusal| match r.kind {
        crate::relay::RefusalKind::Permanent => {
            AttemptEnd::Failed(HandlerError::permanent(r.message))
        }
        crate::relay::RefusalKind::Retryable => {
            AttemptEnd::Failed(HandlerError::retryable(r.message))
        }
        crate::relay::RefusalKind::Unknown(outcome) => AttemptEnd::Unknown {
            outcome,
            error: r.message,
        },
    };
    let message = match relay.message(
        &claimed.name,
        claimed.id.as_i64(),
        claimed.root_id.as_i64(),
        claimed.external_key,
        &claimed.schema_hash,
        &claimed.payload,
    ) {
        Ok(message) => message,
        Err(r) => return (refused(r), None),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let sent = tokio::select! {
        biased;
        reason = running.aborted() => return (AttemptEnd::Aborted(reason), None),
        sent = tokio::time::timeout_at(deadline, relay.relay.backend.send(message)) => sent,
    };
    let ack = match sent {
        Err(_) => return (AttemptEnd::TimedOut(timeout), None),
        Ok(Err(r)) => return (refused(r), None),
        Ok(Ok(ack)) => ack,
    };
    // The client has the message: the slot may take the next operation
    // while the acknowledgement comes (the in-flight bound still holds).
    running.release_slot();
    rt.wake.notify_one();
    // From here the message may be in the stream whatever happens.
    let in_doubt = |outcome, what: String| AttemptEnd::Unknown {
        outcome,
        error: format!(
            "{what}; the message was sent, so it may be in the stream: the outcome is unknown"
        ),
    };
    tokio::select! {
        biased;
        reason = running.aborted() => (
            in_doubt(Outcome::Aborted, format!("the relay stopped waiting for the PubAck ({reason})")),
            None,
        ),
        acked = tokio::time::timeout_at(deadline, ack) => match acked {
            Err(_) => (
                in_doubt(Outcome::TimedOut, format!("no PubAck within the handler timeout ({timeout:?})")),
                None,
            ),
            Ok(Err(r)) => (refused(r), None),
            Ok(Ok(receipt)) => (AttemptEnd::Succeeded, Some(receipt)),
        },
    }
}

fn attempt_of(rt: &Runtime, claimed: &Claimed, registration: Option<&Registration>) -> Attempt {
    let ws = &rt.settings.workflow_system;
    Attempt {
        name: claimed.name.clone(),
        number: claimed.attempt,
        snoozes: claimed.snoozes,
        max_attempts: claimed.max_attempts,
        idempotent: claimed.idempotent,
        backoff: registration
            .and_then(|r| r.options().backoff)
            .unwrap_or_else(|| Backoff::new(ws.backoff_initial, ws.backoff_max)),
    }
}

fn fence(rt: &Runtime, claimed: &Claimed) -> Fence {
    Fence {
        id: claimed.id,
        worker: rt.worker_id,
        attempt: claimed.attempt,
        attempt_id: claimed.attempt_id,
    }
}

/// Runs a handler future to its end: result, panic, timeout or abort;
/// with what a successful handler returned (`None` for `()`).
async fn drive(
    future: BoxFuture<'_, Result<Option<serde_json::Value>, HandlerFailure>>,
    timeout: Duration,
    running: &RunningOp,
    claimed: &Claimed,
    registration: &Registration,
) -> (AttemptEnd, Option<serde_json::Value>) {
    let end = tokio::select! {
        biased;
        reason = running.aborted() => AttemptEnd::Aborted(reason),
        result = tokio::time::timeout(timeout, CatchUnwind(future)) => match result {
            Err(_) => AttemptEnd::TimedOut(timeout),
            Ok(Err(panic)) => AttemptEnd::Panicked(panic),
            Ok(Ok(Ok(output))) => return (AttemptEnd::Succeeded, output),
            Ok(Ok(Err(HandlerFailure::Failed(error)))) => AttemptEnd::Failed(error),
            Ok(Ok(Err(HandlerFailure::Unstorable(why)))) => AttemptEnd::UnstorableResult {
                why,
                transactional: registration.options().transactional,
            },
            Ok(Ok(Err(HandlerFailure::Decode(error)))) => AttemptEnd::Decode {
                error,
                stored_hash: claimed.schema_hash.clone(),
                current_hash: registration.schema().hash(),
            },
        },
    };
    (end, None)
}

#[allow(clippy::too_many_arguments, clippy::too_many_lines)] // Each outcome of the transaction, in order.
async fn run_transactional(
    rt: &Runtime,
    claimed: &Claimed,
    registration: &Registration,
    info: AttemptInfo,
    handler: crate::registry::TxHandler,
    timeout: Duration,
    attempt: &Attempt,
    running: &RunningOp,
    chain: Option<&Batch>,
) -> Option<Chained> {
    let fence = fence(rt, claimed);
    // Records an attempt that did not end in a committed success.
    let fail = |end: AttemptEnd| {
        record(
            rt,
            &claimed.name,
            fence,
            attempt,
            attempt.decide(end, jitter()),
            Produced::default(),
            running,
        )
    };
    let retryable = |what: &str, e: &dyn std::fmt::Display| {
        AttemptEnd::Failed(HandlerError::retryable(format!("{what}: {e}")))
    };
    // The transaction, marked with the attempt it serves.
    let mut tx = match Store::begin_attempt(&rt.pool, fence.attempt_id).await {
        Ok(tx) => tx,
        Err(e) => {
            let end = retryable("cannot open the handler's transaction", &e);
            fail(end).await;
            return None;
        }
    };
    let (end, result, additions) = {
        let mut ctx = TxContext {
            info,
            conn: &mut tx,
            publisher: rt.publisher.clone(),
            additions: None,
        };
        let (end, result) = drive(
            handler(&mut ctx, claimed.payload.clone()),
            timeout,
            running,
            claimed,
            registration,
        )
        .await;
        let (end, additions) = checked_additions(rt, claimed, ctx.additions.take(), end);
        (end, result, additions)
    };
    // The steps it added, in its transaction, before its success: a step
    // waiting for this one is released by it.
    let end = match (end, additions) {
        (AttemptEnd::Succeeded, Some(steps)) => {
            let limit = rt.settings.workflow_system.lease;
            match tokio::time::timeout(limit, rt.publisher.add_steps(&mut tx, claimed.id, &steps))
                .await
            {
                Ok(Ok(_)) => AttemptEnd::Succeeded,
                Ok(Err(e)) => AttemptEnd::Failed(steps_refused(&e)),
                Err(_) => AttemptEnd::Failed(HandlerError::retryable(format!(
                    "the steps it added could not be recorded: no answer within {limit:?}"
                ))),
            }
        }
        (end, _) => end,
    };
    // A handler that returned (an error, a snooze, a panic, a result that
    // cannot be stored) may have ended
    // the dispatcher's transaction first: its writes may be committed.
    let end = match end {
        AttemptEnd::Failed(error) if ended_by_handler(rt, &mut tx, fence).await => {
            AttemptEnd::EndedTransaction(error)
        }
        AttemptEnd::Panicked(message) if ended_by_handler(rt, &mut tx, fence).await => {
            AttemptEnd::EndedTransaction(HandlerError::retryable(format!(
                "the handler panicked: {message}"
            )))
        }
        AttemptEnd::UnstorableResult { why, .. } if ended_by_handler(rt, &mut tx, fence).await => {
            AttemptEnd::EndedTransaction(HandlerError::permanent(format!(
                "the handler succeeded, but its result cannot be stored: {why}"
            )))
        }
        end => end,
    };
    let decision = attempt.decide(end, jitter());
    #[cfg(feature = "testing")]
    if let Some(point) = rt.crash_for(claimed.attempt) {
        if point == Crash::BeforeCommit && matches!(decision, Decision::Success) {
            let _ = rt
                .store
                .complete_success(&mut tx, fence, true, None, None)
                .await;
        }
        drop(tx); // never committed: rolled back, as by a dead worker
        vanish(claimed, point);
        return None;
    }
    if !matches!(decision, Decision::Success) {
        // Nothing the handler wrote survives a failure.
        let _ = tx.rollback().await;
        record(
            rt,
            &claimed.name,
            fence,
            attempt,
            decision,
            Produced::default(),
            running,
        )
        .await;
        return None;
    }
    // A commit that hangs (the row locked elsewhere, a half-open
    // connection) is in doubt, not a hung worker: the success statement is
    // bounded on the server (`lock_timeout`, `statement_timeout`) and, with
    // the commit, on the client, each by a lease. If a commit that timed
    // out went through after all, the fenced failure record below matches
    // nothing and the success stands.
    let limit = rt.settings.workflow_system.lease;
    let no_answer = || format!("no answer within {limit:?}");
    let success = tokio::time::timeout(limit, async {
        rt.store.local_timeouts(&mut tx, limit).await?;
        if !rt
            .store
            .complete_success(
                &mut tx,
                fence,
                true,
                result.as_ref(),
                result.as_ref().map(|_| registration.output_schema().hash()),
            )
            .await?
        {
            return Ok(None);
        }
        // The same commit starts the next operation's attempt: it is
        // durable before that operation's handler runs, as a claim's.
        let next = match chain {
            Some(batch) => claim_next(rt, &mut tx, batch).await?,
            None => None,
        };
        Ok(Some(next))
    })
    .await
    .map_err(|_| no_answer())
    .and_then(|r| r.map_err(|e: sqlx::Error| e.to_string()));
    match success {
        Ok(Some(next)) => match tokio::time::timeout(limit, tx.commit())
            .await
            .map_err(|_| no_answer())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            Ok(()) => {
                metrics::counter!("pgoutbox_succeeded_total", "name" => claimed.name.clone())
                    .increment(1);
                return next;
            }
            Err(e) => {
                // If the commit in fact went through, the fenced failure
                // record below matches nothing: the success stands (and
                // the next operation's attempt, not run here, ends `lost`
                // when its lease expires).
                let end =
                    AttemptEnd::NotCommitted(format!("its transaction failed to commit: {e}"));
                fail(end).await;
            }
        },
        Ok(None) => {
            // No answer in time: nothing is recorded, the rescuer decides.
            let ended = tokio::time::timeout(limit, rt.store.transaction_marker(&mut tx))
                .await
                .is_ok_and(|r| r.map_or(true, |mark| mark != fence.attempt_id.to_string()));
            let _ = tokio::time::timeout(limit, tx.rollback()).await;
            if ended {
                let end = AttemptEnd::Failed(HandlerError::permanent(
                    "the handler ended the dispatcher's transaction (COMMIT or ROLLBACK through \
                     raw SQL); nothing was recorded as success",
                ));
                fail(end).await;
            } else {
                tracing::warn!(
                    operation_id = %claimed.id,
                    "lease lost before the success was recorded; the handler's transaction was rolled back"
                );
            }
        }
        Err(e) => {
            let _ = tokio::time::timeout(limit, tx.rollback()).await;
            let end = AttemptEnd::NotCommitted(format!("its success could not be recorded: {e}"));
            fail(end).await;
        }
    }
    None
}

/// Claims the next ready operation of `batch` inside a transactional
/// handler's transaction, after its success: the commit that records the
/// success starts the next attempt too. Nothing when the system stops or
/// the bound on unrecorded outcomes is reached.
async fn claim_next(
    rt: &Runtime,
    tx: &mut sqlx::PgConnection,
    batch: &Batch,
) -> Result<Option<Chained>, sqlx::Error> {
    if *rt.stopping.borrow() {
        return Ok(None);
    }
    let Ok(in_flight) = Arc::clone(&rt.in_flight).try_acquire_owned() else {
        return Ok(None);
    };
    let ws = &rt.settings.workflow_system;
    let sent = Instant::now();
    let claimed = rt
        .store
        .claim(
            tx,
            &batch.names,
            1,
            rt.worker_id,
            crate::duration::millis(ws.lease),
            &ws.queues,
            // The handler's transaction stays durable.
            false,
        )
        .await?;
    Ok(claimed.into_iter().next().map(|claimed| Chained {
        claimed,
        in_flight,
        sent,
    }))
}

/// Whether the transaction `Store::begin_attempt` opened for this attempt
/// is no longer the one in progress on `tx`: the handler ended it. When
/// the mark cannot be read, the transaction is taken for still ours: a
/// failed statement aborted it (SQLSTATE 25P02, nothing commits), or the
/// connection broke, and the server rolls back what was not committed.
async fn ended_by_handler(rt: &Runtime, tx: &mut sqlx::PgConnection, fence: Fence) -> bool {
    let mark = tokio::time::timeout(
        rt.settings.workflow_system.lease,
        rt.store.transaction_marker(tx),
    )
    .await;
    match mark {
        Ok(Ok(mark)) => mark != fence.attempt_id.to_string(),
        Ok(Err(_)) | Err(_) => false,
    }
}

/// A test's crash: the attempt is left unrecorded, as a vanished worker
/// leaves it (the executor's caller stops renewing its lease).
#[cfg(feature = "testing")]
fn vanish(claimed: &Claimed, point: Crash) {
    tracing::warn!(
        operation_id = %claimed.id,
        attempt = claimed.attempt,
        "testing: the worker vanishes ({point:?})"
    );
}

/// What a successful attempt leaves besides its success: a handler's
/// follow-ups and result, or a relay's receipt (the result, recorded on
/// the attempt).
#[derive(Debug, Default)]
pub(crate) struct Produced {
    pub(crate) follow_ups: Vec<NewOperation>,
    /// Steps the handler added to its workflow, checked.
    pub(crate) additions: Option<Prepared>,
    pub(crate) result: Option<serde_json::Value>,
    /// The hash of the output schema a handler's result was written with.
    pub(crate) result_schema: Option<&'static str>,
}

/// Records `decision`, retrying while the database is unreachable and the
/// lease is still ours. Gives up (leaving the attempt to the rescuer, which
/// records it as `lost`) only when the lease is gone. An outcome that
/// PostgreSQL refuses as data (SQLSTATE class 22 or 23: retrying cannot
/// cure it) is replaced by a `failed` attempt naming what could not be
/// stored (`Attempt::unstorable`), then by one naming only the SQLSTATE;
/// if even that is refused, the attempt is left to the rescuer.
async fn record(
    rt: &Runtime,
    name: &str,
    fence: Fence,
    attempt: &Attempt,
    mut decision: Decision,
    mut produced: Produced,
    running: &RunningOp,
) {
    let mut wait = Duration::from_millis(50);
    let mut refused_times = 0;
    loop {
        // Bounded: a connection that went silent must not hold the attempt
        // (and `stop()`) forever; the next try takes another connection.
        let limit = rt.settings.workflow_system.lease;
        let tried = tokio::time::timeout(limit, try_record(rt, fence, &decision, &produced))
            .await
            .unwrap_or(Err(RecordError::TimedOut(limit)));
        match tried {
            Ok(true) => {
                count_outcome(name, &decision);
                return;
            }
            Ok(false) => {
                tracing::warn!(operation_id = %fence.id, "the attempt is no longer this worker's; its outcome was not recorded");
                return;
            }
            Err(e) => {
                if let Some((why, short)) = refused(&e) {
                    refused_times += 1;
                    tracing::error!(operation_id = %fence.id, error = %e, "the outcome cannot be stored; recording a failure that says so");
                    decision = match refused_times {
                        1 => attempt.unstorable(&decision, &why),
                        2 => attempt.unstorable(&decision, &short),
                        _ => return,
                    };
                    produced.follow_ups.clear();
                    produced.additions = None;
                    continue;
                }
                if running.is_lost() {
                    tracing::error!(operation_id = %fence.id, error = %e, "cannot record the outcome and the lease is gone");
                    return;
                }
                tracing::warn!(operation_id = %fence.id, error = %e, "cannot record the outcome yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Why an outcome cannot be stored, at length and in short, when
/// recording it again cannot help: PostgreSQL refused it as data, or the
/// steps the handler added name a step of another workflow.
fn refused(error: &RecordError) -> Option<(String, String)> {
    let data = |e: &sqlx::Error| {
        storable::data_error(e).map(|(code, message)| {
            (
                format!("PostgreSQL refused it (SQLSTATE {code}): {message}"),
                format!("SQLSTATE {code}"),
            )
        })
    };
    match error {
        RecordError::Database(e) => data(e),
        RecordError::FollowUp(e) => match &**e {
            PublishError::Database { source, .. } => data(source),
            _ => None,
        },
        RecordError::Steps(e) => match &**e {
            WorkflowError::Step {
                source: PublishError::Database { source, .. },
                ..
            } => data(source),
            e => Some((
                format!("the steps it added cannot be published: {e}"),
                "the steps it added cannot be published".to_owned(),
            )),
        },
        RecordError::TimedOut(_) => None,
    }
}

/// The steps a handler added, checked before its outcome is recorded: a
/// success whose steps cannot be published fails permanently, saying why
/// (nothing it added is recorded).
fn checked_additions(
    rt: &Runtime,
    claimed: &Claimed,
    additions: Option<Workflow>,
    end: AttemptEnd,
) -> (AttemptEnd, Option<Prepared>) {
    match (additions, end) {
        (Some(additions), AttemptEnd::Succeeded) => {
            match rt
                .publisher
                .prepare_additions(additions, claimed.workflow_id, claimed.id)
            {
                Ok(prepared) => (AttemptEnd::Succeeded, Some(prepared)),
                Err(e) => (AttemptEnd::Failed(steps_refused(&e)), None),
            }
        }
        (_, end) => (end, None),
    }
}

/// The failure of an attempt whose added steps could not be recorded:
/// retryable when the database failed, permanent otherwise.
fn steps_refused(error: &WorkflowError) -> HandlerError {
    let message = format!("the steps it added cannot be published: {error}");
    match error {
        WorkflowError::Step {
            source: PublishError::Database { .. },
            ..
        } => HandlerError::retryable(message),
        _ => HandlerError::permanent(message),
    }
}

fn count_outcome(name: &str, decision: &Decision) {
    let metric = match decision {
        Decision::Success => "pgoutbox_succeeded_total",
        Decision::Snooze { .. } => "pgoutbox_snoozed_total",
        Decision::Failure(f) if f.next_status == crate::state::Status::Stalled => {
            "pgoutbox_stalled_total"
        }
        Decision::Failure(_) => "pgoutbox_failed_total",
    };
    metrics::counter!(metric, "name" => name.to_owned()).increment(1);
}

async fn try_record(
    rt: &Runtime,
    fence: Fence,
    decision: &Decision,
    produced: &Produced,
) -> Result<bool, RecordError> {
    match decision {
        Decision::Success if produced.follow_ups.is_empty() && produced.additions.is_none() => {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let result = produced.result.clone();
            let result_schema = produced.result_schema;
            if rt
                .completions
                .send(Completion {
                    fence,
                    result,
                    result_schema,
                    reply,
                })
                .await
                .is_ok()
                && let Ok(answer) = answer.await
            {
                return answer;
            }
            // No completer (the system is being dropped): record alone.
            let mut conn = rt.pool.acquire().await?;
            Ok(rt
                .store
                .complete_success(
                    &mut conn,
                    fence,
                    false,
                    produced.result.as_ref(),
                    produced.result_schema,
                )
                .await?)
        }
        Decision::Success => {
            let mut tx = rt.pool.begin().await?;
            // Before the success, which releases the steps waiting for it.
            if let Some(steps) = &produced.additions {
                rt.publisher
                    .add_steps(&mut tx, fence.id, steps)
                    .await
                    .map_err(|e| RecordError::Steps(Arc::new(e)))?;
            }
            if !rt
                .store
                .complete_success(
                    &mut tx,
                    fence,
                    false,
                    produced.result.as_ref(),
                    produced.result_schema,
                )
                .await?
            {
                return Ok(false);
            }
            for op in &produced.follow_ups {
                rt.publisher.insert(&mut tx, op).await?;
            }
            tx.commit().await?;
            Ok(true)
        }
        Decision::Snooze { delay_ms, note } => {
            let mut conn = rt.pool.acquire().await?;
            Ok(rt.store.snooze(&mut conn, fence, *delay_ms, note).await?)
        }
        Decision::Failure(failure) => {
            let mut conn = rt.pool.acquire().await?;
            Ok(rt.store.complete_failure(&mut conn, fence, failure).await?)
        }
    }
}
