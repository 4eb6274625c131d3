//! Per-group concurrency limits (`WorkflowRouter::concurrency`): which
//! names the producer claims together, and how many of them it may claim
//! without running more of a group's handlers than its limit allows.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::router::Routes;

/// The claim batches of one process, and the limits each one is under.
#[derive(Debug)]
pub(crate) struct Limits {
    batches: Vec<Batch>,
    /// Where the next claim round starts.
    next: AtomicUsize,
}

/// Names claimed in one statement: those whose innermost limited group is
/// the same one (or which have none).
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) names: Vec<String>,
    /// Whether this batch is claimed ahead of the free handler slots
    /// (`workflow_system.idempotent_claim_ahead`; the system starts with it
    /// only when every name is `idempotent` and outside every group).
    pub(crate) ahead: bool,
    /// One semaphore per enclosing limited group, innermost first; a
    /// handler of the batch holds a permit of each while it runs. Groups
    /// shared by several batches share their semaphore.
    chain: Vec<Arc<Semaphore>>,
}

impl Limits {
    /// The batches of `routes`, claimed ahead with `claim_ahead`.
    pub(crate) fn new(routes: &Routes, claim_ahead: bool) -> Limits {
        let groups = routes.groups();
        let semaphores: Vec<Arc<Semaphore>> = groups
            .iter()
            .map(|g| Arc::new(Semaphore::new(g.limit.min(Semaphore::MAX_PERMITS))))
            .collect();
        let mut names: BTreeMap<Option<usize>, Vec<String>> = BTreeMap::new();
        for (name, route) in routes.iter() {
            names
                .entry(route.group())
                .or_default()
                .push(name.to_owned());
        }
        let batches = names
            .into_iter()
            .map(|(group, names)| {
                let mut chain = Vec::new();
                let mut at = group;
                while let Some(g) = at {
                    chain.push(Arc::clone(&semaphores[g]));
                    at = groups[g].parent;
                }
                Batch {
                    names,
                    ahead: claim_ahead,
                    chain,
                }
            })
            .collect();
        Limits {
            batches,
            next: AtomicUsize::new(0),
        }
    }

    /// Every batch, in the order of this claim round. Each round starts one
    /// batch further, so that no batch always has the first pick of the
    /// free slots (nor of a group that several batches share).
    pub(crate) fn round(&self) -> impl Iterator<Item = &Batch> {
        let start = self.next.fetch_add(1, Ordering::Relaxed) % self.batches.len().max(1);
        self.batches[start..].iter().chain(&self.batches[..start])
    }

    /// Every batch, in no particular order.
    pub(crate) fn batches(&self) -> impl Iterator<Item = &Batch> {
        self.batches.iter()
    }
}

impl Batch {
    /// How many operations of this batch its groups allow to start now
    /// (`usize::MAX` when it has none).
    pub(crate) fn free(&self) -> usize {
        self.chain
            .iter()
            .map(|s| s.available_permits())
            .min()
            .unwrap_or(usize::MAX)
    }

    /// One permit of each of the batch's groups, for a handler about to
    /// start; `None` when a group is at its limit.
    pub(crate) fn try_acquire(&self) -> Option<Vec<OwnedSemaphorePermit>> {
        self.chain
            .iter()
            .map(|s| Arc::clone(s).try_acquire_owned().ok())
            .collect()
    }
}
