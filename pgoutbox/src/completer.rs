//! The completer: plain handlers' and relays' successes (without
//! follow-ups) recorded in batches, one statement for all that finished together. The handler's
//! slot is already free by then; each executor waits for its own answer
//! (holding its place in the `4 × n_workers` in-flight bound, its lease
//! still renewed), and fencing is per row, as for single completions.
//! Each executor is answered by its attempt, not its operation: a stale
//! completion of an earlier attempt can share a batch with the current
//! one, and only the current one is recorded.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::runtime::{Completion, RecordError, Runtime};
use crate::store::Fence;

/// Most successes per statement.
const BATCH: usize = 100;

/// Most bytes of results (as JSON) per statement, as `publish_many` bounds
/// its statements: a batch of large results is cut short, never one
/// statement of up to `BATCH` times `MAX_PAYLOAD_BYTES`.
const BATCH_BYTES: usize = crate::publish::PUBLISH_MANY_CHUNK_BYTES;

/// How long one batch may take to record.
const LIMIT: Duration = Duration::from_secs(30);

/// Records batches until every sender is gone.
pub(crate) async fn run(rt: Arc<Runtime>, mut requests: mpsc::Receiver<Completion>) {
    let mut batch: Vec<Completion> = Vec::with_capacity(BATCH);
    // A request that did not fit the last batch's bytes opens the next.
    let mut held: Option<Completion> = None;
    loop {
        let first = match held.take() {
            Some(first) => first,
            None => match requests.recv().await {
                Some(first) => first,
                None => break,
            },
        };
        let mut bytes = result_bytes(&first);
        batch.push(first);
        while batch.len() < BATCH {
            match requests.try_recv() {
                Ok(next) => {
                    let size = result_bytes(&next);
                    if bytes + size > BATCH_BYTES {
                        held = Some(next);
                        break;
                    }
                    bytes += size;
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        flush(&rt, &mut batch).await;
    }
}

async fn flush(rt: &Runtime, batch: &mut Vec<Completion>) {
    let successes: Vec<(Fence, Option<serde_json::Value>, Option<&'static str>)> = batch
        .iter()
        .map(|c| (c.fence, c.result.clone(), c.result_schema))
        .collect();
    let result = async {
        let mut conn = rt.pool.acquire().await?;
        rt.store
            .complete_successes(
                &mut conn,
                rt.worker_id,
                &successes,
                rt.settings.workflow_system.idempotent_async_commit,
            )
            .await
    };
    // A failed flush is answered as an error: each executor then retries on
    // its own, as it does for any record that fails.
    match tokio::time::timeout(LIMIT, result).await {
        Ok(Ok(done)) => {
            for Completion { fence, reply, .. } in batch.drain(..) {
                let _ = reply.send(Ok(recorded(&done, fence)));
            }
        }
        Ok(Err(e)) => answer_all(batch, &RecordError::from(e)),
        Err(_) => answer_all(batch, &RecordError::TimedOut(LIMIT)),
    }
}

/// The size of a completion's result as JSON text (0 without one).
fn result_bytes(completion: &Completion) -> usize {
    completion
        .result
        .as_ref()
        .map_or(0, |r| serde_json::to_vec(r).map_or(0, |v| v.len()))
}

/// Whether the attempt `fence` names is among those a batch recorded
/// (`done`: attempt ids). By attempt, not operation: an earlier attempt of
/// the same operation in the same batch was not recorded.
fn recorded(done: &[i64], fence: Fence) -> bool {
    done.contains(&fence.attempt_id)
}

fn answer_all(batch: &mut Vec<Completion>, error: &RecordError) {
    for Completion { reply, .. } in batch.drain(..) {
        let _ = reply.send(Err(error.clone()));
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::recorded;
    use crate::definition::OperationId;
    use crate::store::Fence;

    #[test]
    fn a_batch_answers_each_attempt_not_its_operation() {
        let worker = Uuid::nil();
        let fence = |attempt, attempt_id| Fence {
            id: OperationId::from_i64(7),
            worker,
            attempt,
            attempt_id,
        };
        // Attempts 1 (id 40, stale) and 2 (id 41) of operation 7 in one
        // batch; the statement recorded attempt 41 only.
        let done = [41];
        assert!(recorded(&done, fence(2, 41)));
        assert!(!recorded(&done, fence(1, 40)));
    }
}
