//! Workflows: steps that wait for other steps, and read their results as
//! types.
//!
//! A step names the steps it needs through fields of its payload: a
//! [`Dep<O>`] is a step of the same workflow whose operation is `O`, and
//! the handler reads its result, an `O::Output`, with `ctx.result(&dep)`. A
//! [`Workflow`] hands out a `Dep` only for a step already added to it, so a
//! step can refer only to steps added before it: a cycle cannot be written.
//! The dependencies are read from the payloads themselves, so they cannot
//! disagree with what the handlers read.
//!
//! ```no_run
//! use pgoutbox::prelude::*;
//! use pgoutbox::workflow::{Dep, Workflow, publish_workflow};
//!
//! /// A card payment's receipt.
//! #[pgoutbox::payload]
//! pub struct Receipt {
//!     /// The provider's charge id.
//!     pub charge_id: String,
//! }
//!
//! /// Charge the order's card.
//! #[operation("shop.charge")]
//! async fn charge(ctx: &mut Context, order_id: i64, cents: i64) -> Result<Receipt> {
//!     let _ = (ctx, order_id, cents);
//!     Ok(Receipt { charge_id: "ch_1".into() })
//! }
//!
//! /// Reserve the order's stock.
//! #[operation("shop.reserve")]
//! async fn reserve(ctx: &mut Context, order_id: i64, sku: String) -> Result<()> {
//!     let _ = (ctx, order_id, sku);
//!     Ok(())
//! }
//!
//! /// Ship the order, once it is paid and its stock reserved.
//! #[operation("shop.ship")]
//! async fn ship(ctx: &mut Context, order_id: i64, payment: Dep<Charge>, stock: Dep<Reserve>) -> Result<()> {
//!     let receipt: Receipt = ctx.result(&payment)?; // typed: `Charge`'s output
//!     ctx.result(&stock)?;
//!     tracing::info!(order_id, charge = %receipt.charge_id, "shipping");
//!     Ok(())
//! }
//!
//! # async fn example(pool: sqlx::PgPool) -> std::result::Result<(), Box<dyn std::error::Error>> {
//! let mut wf = Workflow::new("shop.order");
//! let payment = wf.add(Charge { order_id: 7, cents: 1999 });
//! let stock = wf.add(Reserve { order_id: 7, sku: "mug".into() });
//! wf.add(Ship { order_id: 7, payment, stock });
//! let mut tx = pool.begin().await?;
//! let published = publish_workflow(&mut tx, wf).await?; // never commits
//! tx.commit().await?;
//! assert_eq!(published.steps.len(), 3);
//! # Ok(())
//! # }
//! ```
//!
//! The release rules (a step runs once every dependency has succeeded; a
//! dependency that ends `dead` or `cancelled` cancels its dependents; a
//! `stalled` one holds them) are in `docs/consistency.md`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sqlx::PgConnection;

pub use crate::definition::WorkflowId;
use crate::definition::{Operation, OperationId};
use crate::publish::{
    PUBLISH_MANY_CHUNK, PUBLISH_MANY_CHUNK_BYTES, PublishError, PublishOptions, Publisher,
};
use crate::state::Status;
use crate::store::NewOperation;
pub(crate) use crate::store::workflows::StepInputs;
use crate::store::workflows::{CompensationRow, StepInput, StepRow};

/// The key under which a payload stores a [`Dep`]: `{"pgoutbox.step": 42}`.
pub const DEP_KEY: &str = "pgoutbox.step";

/// The key under which a payload stores a [`Settled`]:
/// `{"pgoutbox.settled": 42}`.
pub const SETTLED_KEY: &str = "pgoutbox.settled";

/// The most steps one workflow holds.
pub const MAX_STEPS: usize = 100_000;

/// The longest workflow idempotency key, in bytes
/// ([`Workflow::idempotency_key`]).
pub const MAX_KEY_BYTES: usize = 1024;

/// Which step a [`Dep`] or [`Settled`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The `index`th step of a workflow being built (`workflow` is its
    /// process-unique token); never stored.
    Local { workflow: u64, index: u32 },
    /// A published step.
    Step(OperationId),
}

macro_rules! step_ref {
    ($(#[$doc:meta])* $ty:ident, $key:literal, $required:literal, $what:literal) => {
        $(#[$doc])*
        pub struct $ty<O: Operation> {
            target: Target,
            operation: PhantomData<fn() -> O>,
        }

        impl<O: Operation> $ty<O> {
            /// The step's operation id (`None` until its workflow is
            /// published; a handler always reads a published one).
            pub fn operation_id(&self) -> Option<OperationId> {
                match self.target {
                    Target::Step(id) => Some(id),
                    Target::Local { .. } => None,
                }
            }
        }

        impl<O: Operation> Clone for $ty<O> {
            fn clone(&self) -> Self {
                *self
            }
        }

        impl<O: Operation> Copy for $ty<O> {}

        impl<O: Operation> PartialEq for $ty<O> {
            fn eq(&self, other: &Self) -> bool {
                self.target == other.target
            }
        }

        impl<O: Operation> Eq for $ty<O> {}

        impl<O: Operation> fmt::Debug for $ty<O> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut d = f.debug_struct(stringify!($ty));
                d.field("operation", &O::NAME);
                match self.target {
                    Target::Step(id) => d.field("step", &id),
                    Target::Local { index, .. } => d.field("index", &index),
                };
                d.finish()
            }
        }

        impl<O: Operation> Serialize for $ty<O> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap as _;
                let id = match self.target {
                    Target::Step(id) => id.as_i64(),
                    Target::Local { workflow, index } => {
                        local_placeholder(workflow, index, !$required)
                            .map_err(S::Error::custom)?
                    }
                };
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry($key, &id)?;
                map.end()
            }
        }

        impl<'de, O: Operation> Deserialize<'de> for $ty<O> {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Stored {
                    #[serde(rename = $key)]
                    id: i64,
                }
                let stored = Stored::deserialize(deserializer)?;
                if stored.id <= 0 {
                    return Err(D::Error::custom(format!(
                        "{} is not a published step's operation id",
                        stored.id
                    )));
                }
                Ok($ty {
                    target: Target::Step(OperationId::from_i64(stored.id)),
                    operation: PhantomData,
                })
            }
        }

        impl<O: Operation> schemars::JsonSchema for $ty<O> {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }

            fn inline_schema() -> bool {
                true
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "description": format!(concat!($what, " `{}`, by its operation id"), O::NAME),
                    "type": "object",
                    "properties": { $key: { "type": "integer", "format": "int64", "minimum": 1 } },
                    "required": [$key],
                    "additionalProperties": false,
                })
            }
        }

        impl<O: Operation> StepRef for $ty<O> {
            type Operation = O;

            fn target(&self) -> Option<OperationId> {
                self.operation_id()
            }
        }

        impl<O: Operation> sealed::Sealed for $ty<O> {}
    };
}

step_ref!(
    /// A payload field naming a step of the same workflow whose operation is
    /// `O`: the step waits until that one has succeeded, and reads its
    /// result, an `O::Output`, with `ctx.result(&dep)`. A `Vec<Dep<O>>`
    /// names several (a fan-in).
    ///
    /// A `Dep` is made only by [`Workflow::add`], for a step already added:
    /// so a step can refer only to earlier ones, and a cycle cannot be
    /// written. If that dependency ends `dead` or `cancelled`, this step is
    /// cancelled too, with a reason naming it; to run anyway, use
    /// [`Settled`]. Stored as `{"pgoutbox.step": <operation id>}`.
    ///
    /// `O` must be an operation: `Dep<String>` does not compile.
    Dep,
    "pgoutbox.step",
    true,
    "a step of operation"
);

step_ref!(
    /// A payload field naming a step of the same workflow whose operation is
    /// `O`, waited for however it ends: this step runs once that one has
    /// ended `succeeded`, `dead` or `cancelled` (a `stalled` one still holds
    /// it), and `ctx.result(&settled)` returns its result or a
    /// [`StepError::Failed`] saying how it ended. The opt-out of [`Dep`]'s
    /// cancellation, for a step that must run whatever happened (a
    /// notification, a clean-up). Stored as
    /// `{"pgoutbox.settled": <operation id>}`.
    Settled,
    "pgoutbox.settled",
    false,
    "a step (run whatever way it ends) of operation"
);

impl<O: Operation> From<Dep<O>> for Settled<O> {
    /// The same step, waited for however it ends.
    fn from(dep: Dep<O>) -> Self {
        Settled {
            target: dep.target,
            operation: PhantomData,
        }
    }
}

mod sealed {
    pub trait Sealed {}
}

/// What `ctx.result` reads through: a [`Dep`] or a [`Settled`].
pub trait StepRef: sealed::Sealed {
    /// The step's operation, whose `Output` the result is.
    type Operation: Operation;
    /// The published step, if it is.
    fn target(&self) -> Option<OperationId>;
}

/// Why a handler could not read a dependency's result.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// The step's payload names an operation that is not among its
    /// dependencies (or none at all).
    #[error("operation {id} is not a dependency of this step")]
    NotADependency {
        /// The operation the payload names (0 for a step not published).
        id: OperationId,
    },
    /// The dependency did not succeed (only a [`Settled`] dependency lets a
    /// step run then).
    #[error("dependency {id} (`{name}`) is {status}{}", error.as_deref().map(|e| format!(": {e}")).unwrap_or_default())]
    Failed {
        /// The dependency.
        id: OperationId,
        /// Its operation's name.
        name: String,
        /// How it ended: `dead` or `cancelled`.
        status: Status,
        /// Its last error, if any.
        error: Option<String>,
    },
    /// The dependency is no longer stored: retention purged it before this
    /// step ran.
    #[error("dependency {id} is no longer stored (purged by retention)")]
    Purged {
        /// The dependency.
        id: OperationId,
    },
    /// The dependency's stored result does not decode as its output type
    /// (written by another version of it).
    #[error("the result of dependency {id} (`{name}`) does not decode as `{output}`: {reason}")]
    Decode {
        /// The dependency.
        id: OperationId,
        /// Its operation's name.
        name: String,
        /// The output type read.
        output: &'static str,
        /// serde's message.
        reason: String,
    },
}

/// Reads `step`'s result from `inputs` (what `ctx.result` does).
pub(crate) fn read_result<R: StepRef>(
    inputs: &HashMap<OperationId, StepInput>,
    step: &R,
) -> Result<<R::Operation as Operation>::Output, StepError> {
    let id = step.target().unwrap_or(OperationId::from_i64(0));
    let input = inputs.get(&id).ok_or(StepError::NotADependency { id })?;
    let status = input.status.ok_or(StepError::Purged { id })?;
    if status != Status::Succeeded {
        return Err(StepError::Failed {
            id,
            name: input.name.clone(),
            status,
            error: input.error.clone(),
        });
    }
    let value = input.result.clone().unwrap_or(serde_json::Value::Null);
    serde_json::from_value(value).map_err(|e| StepError::Decode {
        id,
        name: input.name.clone(),
        output: std::any::type_name::<<R::Operation as Operation>::Output>(),
        reason: e.to_string(),
    })
}

/// Process-unique workflow tokens, so that a `Dep` of one workflow cannot
/// pass for a step of another.
static TOKENS: AtomicU64 = AtomicU64::new(1);

/// The dependencies met while serializing one step's payload.
struct Adding {
    workflow: u64,
    steps: u32,
    deps: Vec<(u32, bool)>,
    foreign: bool,
}

thread_local! {
    static ADDING: RefCell<Option<Adding>> = const { RefCell::new(None) };
}

/// A `Dep`'s stored form while its workflow is being built: a negative
/// placeholder, `-(index + 1)`, replaced by the step's id at publish.
fn local_placeholder(workflow: u64, index: u32, settled: bool) -> Result<i64, &'static str> {
    ADDING.with_borrow_mut(|adding| match adding {
        Some(adding) if adding.workflow == workflow && index < adding.steps => {
            adding.deps.push((index, !settled));
            Ok(-(i64::from(index) + 1))
        }
        Some(adding) => {
            adding.foreign = true;
            Ok(0)
        }
        None => Err(
            "a `Dep` can be published only with the workflow that made it \
                     (`Workflow::add`, then `publish_workflow`)",
        ),
    })
}

/// Why a workflow could not be built or published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowError {
    /// The workflow's name is not a valid name (lower-case segments of
    /// `[a-z0-9_]` joined by dots).
    #[error("invalid workflow name `{0}`: use lower-case segments of [a-z0-9_] joined by dots")]
    InvalidName(String),
    /// A workflow without steps.
    #[error("workflow `{0}` has no steps")]
    Empty(String),
    /// More than [`MAX_STEPS`] steps.
    #[error("workflow `{name}` has more than {MAX_STEPS} steps")]
    TooManySteps {
        /// The workflow's name.
        name: String,
    },
    /// A step's payload holds a `Dep` made by another workflow.
    #[error(
        "step {index} (`{operation}`) of workflow `{name}` holds a `Dep` of another workflow; \
         a step can depend only on steps added to its own workflow before it"
    )]
    ForeignDep {
        /// The workflow's name.
        name: String,
        /// The step (in the order of `add`).
        index: usize,
        /// Its operation.
        operation: &'static str,
    },
    /// A step's payload holds a `Dep` of an already published step (read
    /// from another payload).
    #[error(
        "step {index} (`{operation}`) of workflow `{name}` holds a `Dep` of operation {id}, \
         which is not a step of this workflow"
    )]
    PublishedDep {
        /// The workflow's name.
        name: String,
        /// The step (in the order of `add`).
        index: usize,
        /// Its operation.
        operation: &'static str,
        /// The operation the `Dep` names.
        id: OperationId,
    },
    /// A compensation was declared for a step that is not one of this
    /// workflow's (a `Dep` of another workflow, or of a published step).
    #[error("workflow `{name}`: `compensate_with` names a step that is not one of its own")]
    ForeignCompensation {
        /// The workflow's name.
        name: String,
    },
    /// A second compensation for the same step.
    #[error(
        "step {index} (`{operation}`) of workflow `{name}` has two compensations; a step has at most one"
    )]
    CompensatedTwice {
        /// The workflow's name.
        name: String,
        /// The step (in the order of `add`).
        index: usize,
        /// Its operation.
        operation: &'static str,
    },
    /// A handler added steps, but its operation is not a workflow step.
    #[error("operation {id} is not a workflow step: a handler adds steps only to its own workflow")]
    NotAStep {
        /// The operation whose handler added them.
        id: OperationId,
    },
    /// The workflow's idempotency key is empty, longer than
    /// [`MAX_KEY_BYTES`] or holds a NUL character.
    #[error("invalid idempotency key for workflow `{name}`: {reason}")]
    InvalidKey {
        /// The workflow's name.
        name: String,
        /// What is wrong with the key.
        reason: String,
    },
    /// A step could not be published (its payload, its options, the
    /// database).
    #[error("{}: {source}", match index { Some(i) => format!("step {i} of workflow `{name}`"), None => format!("workflow `{name}`") })]
    Step {
        /// The workflow's name.
        name: String,
        /// The step (in the order of `add`); `None` for the workflow's own
        /// row.
        index: Option<usize>,
        /// Why.
        source: PublishError,
    },
}

/// A step as added: its payload serialized with placeholders for its
/// dependencies, which are listed.
struct Step {
    name: &'static str,
    json: Result<serde_json::Value, PublishError>,
    options: PublishOptions,
    deps: Vec<(u32, bool)>,
    prepare:
        fn(&Publisher, serde_json::Value, PublishOptions) -> Result<NewOperation, PublishError>,
}

/// A step's compensation as declared: its payload, serialized with
/// placeholders as a step's, and the steps it names.
struct Compensation {
    /// The step it answers.
    step: u32,
    name: &'static str,
    json: Result<serde_json::Value, PublishError>,
    prepare:
        fn(&Publisher, serde_json::Value, PublishOptions) -> Result<NewOperation, PublishError>,
}

/// A graph of steps, built in order and published at once with
/// [`publish_workflow`]; see the [module docs](self).
pub struct Workflow {
    name: String,
    token: u64,
    steps: Vec<Step>,
    compensations: Vec<Compensation>,
    error: Option<WorkflowError>,
    key: Option<String>,
}

impl fmt::Debug for Workflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workflow")
            .field("name", &self.name)
            .field(
                "steps",
                &self.steps.iter().map(|s| s.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Workflow {
    /// A workflow named `name` (lower-case segments of `[a-z0-9_]` joined by
    /// dots, as operation names), without steps. An invalid name is
    /// reported by [`publish_workflow`], as every other mistake.
    ///
    /// ```
    /// use pgoutbox::workflow::Workflow;
    ///
    /// let wf = Workflow::new("order.fulfil");
    /// assert!(wf.is_empty());
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        let error =
            (!crate::name::is_valid(&name)).then(|| WorkflowError::InvalidName(name.clone()));
        Workflow {
            name,
            token: TOKENS.fetch_add(1, Ordering::Relaxed),
            steps: Vec::new(),
            compensations: Vec::new(),
            error,
            key: None,
        }
    }

    /// The steps a running step's handler adds to its workflow
    /// (`ctx.add_step`): named after it in messages.
    pub(crate) fn additions(adder: OperationId) -> Self {
        Workflow {
            name: format!("(steps added by operation {adder})"),
            token: TOKENS.fetch_add(1, Ordering::Relaxed),
            steps: Vec::new(),
            compensations: Vec::new(),
            error: None,
            key: None,
        }
    }

    /// The workflow's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many steps it has.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether it has no steps yet.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Adds a step; its dependencies are the [`Dep`] and [`Settled`] fields
    /// of its payload. Returns the `Dep` by which later steps name it.
    ///
    /// A payload that cannot be published (it does not serialize, holds a
    /// `Dep` of another workflow…) is reported by [`publish_workflow`],
    /// which then publishes nothing.
    pub fn add<O: Operation>(&mut self, payload: O) -> Dep<O> {
        self.add_with(payload, PublishOptions::new())
    }

    /// [`Workflow::add`] with options (`run_at`, `delay`, `priority`,
    /// `queue`); an idempotency key is refused at publish, as is `parent`.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "a step is given to its workflow, as a payload to `publish`"
    )]
    pub fn add_with<O: Operation>(&mut self, payload: O, options: PublishOptions) -> Dep<O> {
        let index = u32::try_from(self.steps.len()).unwrap_or(u32::MAX);
        let (json, deps) = self.serialize(&payload, index, index);
        self.steps.push(Step {
            name: O::NAME,
            json,
            options,
            deps,
            prepare: Publisher::prepare_json::<O>,
        });
        Dep {
            target: Target::Local {
                workflow: self.token,
                index,
            },
            operation: PhantomData,
        }
    }

    /// Declares how `step` is answered if the workflow fails after it
    /// succeeded: `compensation` builds the operation to publish then (a
    /// refund for a charge), given the step's `Dep`, so that its handler
    /// reads the step's result. It is called now; only its payload is
    /// stored.
    ///
    /// When a step of the workflow ends `dead` or `cancelled` (unless its
    /// dependents opted out with [`Settled`]), the compensations of the
    /// steps that succeeded are published in reverse dependency order, in
    /// the transaction that records the failure, and run as ordinary
    /// operations; steps that never ran are cancelled, not compensated. A
    /// step still running or `stalled` then is compensated if it succeeds.
    /// The rules are in `docs/consistency.md` ("Sagas").
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    /// use pgoutbox::workflow::{Dep, Workflow};
    ///
    /// #[operation("shop.charge")]
    /// async fn charge(ctx: &mut Context, cents: i64) -> Result<String> {
    ///     let _ = (ctx, cents);
    ///     Ok("ch_1".into())
    /// }
    ///
    /// #[operation("shop.refund")]
    /// async fn refund(ctx: &mut Context, payment: Dep<Charge>) -> Result<()> {
    ///     let charge_id: String = ctx.result(&payment)?;
    ///     tracing::info!(%charge_id, "refunding");
    ///     Ok(())
    /// }
    ///
    /// let mut wf = Workflow::new("shop.order");
    /// let payment = wf.add(Charge { cents: 1999 });
    /// wf.compensate_with(payment, |payment| Refund { payment });
    /// assert_eq!(wf.len(), 1); // a compensation is not a step until it is needed
    /// ```
    pub fn compensate_with<O: Operation, C: Operation>(
        &mut self,
        step: Dep<O>,
        compensation: impl FnOnce(Dep<O>) -> C,
    ) {
        let index = match step.target {
            Target::Local { workflow, index } if workflow == self.token => index,
            _ => {
                if self.error.is_none() {
                    self.error = Some(WorkflowError::ForeignCompensation {
                        name: self.name.clone(),
                    });
                }
                return;
            }
        };
        if self.compensations.iter().any(|c| c.step == index) && self.error.is_none() {
            self.error = Some(WorkflowError::CompensatedTwice {
                name: self.name.clone(),
                index: index as usize,
                operation: O::NAME,
            });
        }
        let payload = compensation(step);
        // It may name every step added so far (the compensated one too).
        let steps = u32::try_from(self.steps.len()).unwrap_or(u32::MAX);
        let (json, _) = self.serialize(&payload, index, steps);
        self.compensations.push(Compensation {
            step: index,
            name: C::NAME,
            json,
            prepare: Publisher::prepare_json::<C>,
        });
    }

    /// Serializes the payload of step `index` (or of its compensation),
    /// which may name the first `steps` steps: its JSON with placeholders,
    /// and the steps it names (required or not), one entry each.
    fn serialize<O: Operation>(
        &mut self,
        payload: &O,
        index: u32,
        steps: u32,
    ) -> (Result<serde_json::Value, PublishError>, Vec<(u32, bool)>) {
        let previous = ADDING.replace(Some(Adding {
            workflow: self.token,
            steps,
            deps: Vec::new(),
            foreign: false,
        }));
        let json = serde_json::to_value(payload);
        let adding = ADDING.replace(previous).expect("set above");
        if adding.foreign && self.error.is_none() {
            self.error = Some(WorkflowError::ForeignDep {
                name: self.name.clone(),
                index: index as usize,
                operation: O::NAME,
            });
        }
        let mut deps = adding.deps;
        deps.sort_unstable();
        // One edge per dependency: required when any field requires it.
        deps.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                earlier.1 |= later.1;
            }
            same
        });
        let json = json.map_err(|source| PublishError::Serialize {
            name: O::NAME,
            source,
        });
        (json, deps)
    }
}

/// A published workflow: its id and its steps' operation ids, in the order
/// they were added.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishedWorkflow {
    /// The workflow's id.
    pub id: WorkflowId,
    /// Each step's operation id, in the order of `add`.
    pub steps: Vec<OperationId>,
    /// Whether this publish created it: `false` when its
    /// [idempotency key](Workflow::idempotency_key) was taken, and `id` and
    /// `steps` are the existing workflow's (nothing was written).
    pub created: bool,
}

/// A workflow's steps and compensations, checked, waiting for their ids.
#[derive(Debug)]
pub(crate) struct Prepared {
    name: String,
    steps: Vec<PreparedStep>,
    compensations: Vec<(u32, NewOperation, serde_json::Value)>,
}

#[derive(Debug)]
struct PreparedStep {
    op: NewOperation,
    json: serde_json::Value,
    /// Steps of this batch it waits for (by index), required or not.
    deps: Vec<(u32, bool)>,
    /// Published steps it waits for (only for steps added at run time).
    published: Vec<(OperationId, bool)>,
}

impl Publisher {
    /// Publishes `workflow` inside the caller's transaction: its row, every
    /// step and every dependency, or nothing. Never commits. Steps without
    /// dependencies are ready at once; the others are `waiting`.
    ///
    /// # Errors
    ///
    /// A [`WorkflowError`] naming the step at fault; nothing is written
    /// then, except what the caller's transaction rolls back.
    pub async fn publish_workflow(
        &self,
        conn: &mut PgConnection,
        mut workflow: Workflow,
    ) -> Result<PublishedWorkflow, WorkflowError> {
        let key = workflow.key.take();
        let prepared = self.prepare_workflow(workflow, false)?;
        let (id, ids) = match self
            .open(conn, &prepared.name, prepared.steps.len(), key)
            .await?
        {
            Ok(opened) => opened,
            Err(existing) => return Ok(existing),
        };
        self.insert_workflow(conn, id, ids[0], &ids, &prepared)
            .await?;
        Ok(PublishedWorkflow {
            id,
            steps: ids,
            created: true,
        })
    }

    /// Adds the steps of `additions` (built by a running step's handler) to
    /// the workflow of step `adder`, in the caller's transaction, which
    /// records the adder's success after them: a step waiting for the
    /// adder is released by it. In a workflow that has failed already, the
    /// steps are added cancelled.
    pub(crate) async fn add_steps(
        &self,
        conn: &mut PgConnection,
        adder: OperationId,
        prepared: &Prepared,
    ) -> Result<Vec<OperationId>, WorkflowError> {
        let store = self.store();
        let database = |source| database_error(&prepared.name, None, "workflow", source);
        let published: Vec<OperationId> = prepared
            .steps
            .iter()
            .flat_map(|s| s.published.iter().map(|(id, _)| *id))
            .collect();
        // Locked before the workflow's row, which growing it locks.
        if let Some(foreign) = store
            .foreign_steps(conn, adder, &published)
            .await
            .map_err(database)?
        {
            let index = prepared
                .steps
                .iter()
                .position(|s| s.published.iter().any(|(id, _)| *id == foreign))
                .unwrap_or(0);
            return Err(WorkflowError::PublishedDep {
                operation: prepared.steps[index].op.name,
                name: prepared.name.clone(),
                index,
                id: foreign,
            });
        }
        let Some(grown) = store
            .grow_workflow(conn, adder, prepared.steps.len())
            .await
            .map_err(database)?
        else {
            return Err(WorkflowError::NotAStep { id: adder });
        };
        let ids = grown.ids.clone();
        self.insert_workflow(conn, grown.workflow, grown.root, &ids, prepared)
            .await?;
        if grown.failed {
            store
                .cancel_added(conn, grown.workflow, adder, &ids)
                .await
                .map_err(|source| database_error("", None, "workflow", source))?;
        }
        Ok(ids)
    }

    /// Checks the steps a handler added, before its outcome is recorded.
    pub(crate) fn prepare_additions(
        &self,
        additions: Workflow,
        workflow: Option<WorkflowId>,
        adder: OperationId,
    ) -> Result<Prepared, WorkflowError> {
        if workflow.is_none() {
            return Err(WorkflowError::NotAStep { id: adder });
        }
        self.prepare_workflow(additions, true)
    }

    /// Checks everything that can be refused before the first statement.
    fn prepare_workflow(
        &self,
        workflow: Workflow,
        at_run_time: bool,
    ) -> Result<Prepared, WorkflowError> {
        let Workflow {
            name,
            steps,
            compensations,
            error,
            ..
        } = workflow;
        if let Some(error) = error {
            return Err(error);
        }
        if steps.is_empty() && !at_run_time {
            return Err(WorkflowError::Empty(name));
        }
        if steps.len() > MAX_STEPS {
            return Err(WorkflowError::TooManySteps { name });
        }
        let step_error = |index: usize, source| WorkflowError::Step {
            name: name.clone(),
            index: Some(index),
            source,
        };
        let mut prepared = Vec::with_capacity(steps.len());
        for (index, step) in steps.into_iter().enumerate() {
            let json = step.json.map_err(|e| step_error(index, e))?;
            // Checked again once the ids are in: refused here, nothing
            // was sent.
            crate::publish::check_storable(step.name, &json).map_err(|e| step_error(index, e))?;
            if step.options.has_key_or_parent() {
                return Err(step_error(
                    index,
                    PublishError::InvalidOption {
                        name: step.name,
                        reason: "a workflow step takes no idempotency key and no parent".into(),
                    },
                ));
            }
            let mut published = Vec::new();
            published_refs(&json, &mut published);
            if let (Some((id, _)), false) = (published.first(), at_run_time) {
                return Err(WorkflowError::PublishedDep {
                    name,
                    index,
                    operation: step.name,
                    id: *id,
                });
            }
            let op = (step.prepare)(self, serde_json::Value::Null, step.options)
                .map_err(|e| step_error(index, e))?;
            prepared.push(PreparedStep {
                op,
                json,
                deps: step.deps,
                published,
            });
        }
        let mut answers = Vec::with_capacity(compensations.len());
        for compensation in compensations {
            let index = compensation.step as usize;
            let json = compensation.json.map_err(|e| step_error(index, e))?;
            crate::publish::check_storable(compensation.name, &json)
                .map_err(|e| step_error(index, e))?;
            let op = (compensation.prepare)(self, serde_json::Value::Null, PublishOptions::new())
                .map_err(|e| step_error(index, e))?;
            answers.push((compensation.step, op, json));
        }
        Ok(Prepared {
            name,
            steps: prepared,
            compensations: answers,
        })
    }

    /// Inserts `prepared` as steps `ids` of workflow `id`: its steps and
    /// their edges, in statements of at most `publish_many`'s chunk, then
    /// its compensations.
    async fn insert_workflow(
        &self,
        conn: &mut PgConnection,
        id: WorkflowId,
        root: OperationId,
        ids: &[OperationId],
        prepared: &Prepared,
    ) -> Result<(), WorkflowError> {
        let Prepared {
            name,
            steps,
            compensations,
        } = prepared;
        let step_error = |index: usize, source| WorkflowError::Step {
            name: name.clone(),
            index: Some(index),
            source,
        };
        let store = self.store();
        let mut rows = Vec::with_capacity(steps.len());
        let mut sizes = Vec::with_capacity(steps.len());
        for (index, step) in steps.iter().enumerate() {
            let (mut op, mut json) = (step.op.clone(), step.json.clone());
            replace_placeholders(&mut json, ids);
            let size =
                crate::publish::check_storable(op.name, &json).map_err(|e| step_error(index, e))?;
            sizes.push(size);
            op.payload = json;
            rows.push(StepRow {
                op,
                id: ids[index],
                deps: step
                    .deps
                    .iter()
                    .map(|(dep, required)| (ids[*dep as usize], *required))
                    .collect(),
                published: step.published.clone(),
            });
        }
        let mut start = 0;
        while start < rows.len() {
            let (mut end, mut bytes) = (start, 0);
            while end < rows.len()
                && end - start < PUBLISH_MANY_CHUNK
                && (end == start || bytes < PUBLISH_MANY_CHUNK_BYTES)
            {
                bytes += sizes[end];
                end += 1;
            }
            store
                .insert_steps(conn, id, root, &rows[start..end])
                .await
                .map_err(|source| database_error(name, Some(start), rows[start].op.name, source))?;
            start = end;
        }
        if compensations.is_empty() {
            return Ok(());
        }
        let mut answers = Vec::with_capacity(compensations.len());
        for (index, op, json) in compensations {
            let (index, mut op, mut json) = (*index, op.clone(), json.clone());
            replace_placeholders(&mut json, ids);
            crate::publish::check_storable(op.name, &json)
                .map_err(|e| step_error(index as usize, e))?;
            let mut inputs = Vec::new();
            published_refs(&json, &mut inputs);
            op.payload = json;
            answers.push(CompensationRow {
                step: ids[index as usize],
                op,
                inputs: inputs.into_iter().map(|(id, _)| id).collect(),
            });
        }
        store
            .insert_compensations(conn, id, &answers)
            .await
            .map_err(|source| database_error(name, None, "compensation", source))
    }
}

/// A database error while publishing workflow `name`'s step `index` (of
/// operation `operation`), or its row.
fn database_error(
    name: &str,
    index: Option<usize>,
    operation: &'static str,
    source: sqlx::Error,
) -> WorkflowError {
    WorkflowError::Step {
        name: name.to_owned(),
        index,
        source: PublishError::Database {
            name: operation,
            source,
        },
    }
}

/// A workflow's idempotency key.
impl Workflow {
    /// Publishes this workflow at most once under `key`: a later
    /// [`publish_workflow`] with the same key — from this process or
    /// another, concurrently too — writes nothing and returns the existing
    /// workflow's id and steps, with [`PublishedWorkflow::created`] `false`
    /// (as a single operation's publish with a taken key returns the
    /// existing operation's id). The key is unique among all workflows,
    /// whatever their names, for as long as the workflow's row exists;
    /// the second publish's steps are checked as usual but not compared
    /// with the existing ones. A key that is empty, longer than
    /// [`MAX_KEY_BYTES`] or holds a NUL character is refused by
    /// [`publish_workflow`]. Schedules use `schedule:<name>:<tick>`
    /// ([`WorkflowRouter::schedule_workflow`](crate::WorkflowRouter::schedule_workflow)).
    ///
    /// ```no_run
    /// use pgoutbox::prelude::*;
    /// use pgoutbox::workflow::{Workflow, publish_workflow};
    ///
    /// #[operation("shop.invoice")]
    /// async fn invoice(ctx: &mut Context, order_id: i64) -> Result<()> {
    ///     let _ = (ctx, order_id);
    ///     Ok(())
    /// }
    ///
    /// # async fn example(pool: sqlx::PgPool) -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let order = || {
    ///     let mut wf = Workflow::new("shop.order").idempotency_key("order-7");
    ///     wf.add(Invoice { order_id: 7 });
    ///     wf
    /// };
    /// let mut tx = pool.begin().await?;
    /// let first = publish_workflow(&mut tx, order()).await?;
    /// let again = publish_workflow(&mut tx, order()).await?;
    /// tx.commit().await?;
    /// assert!(first.created && !again.created);
    /// assert_eq!((first.id, &first.steps), (again.id, &again.steps));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        let key = key.into();
        let reason = if key.is_empty() {
            Some("the key is empty".to_owned())
        } else if key.len() > MAX_KEY_BYTES {
            Some(format!("{} bytes, longer than {MAX_KEY_BYTES}", key.len()))
        } else if key.contains('\0') {
            Some("the key holds a NUL character, which PostgreSQL cannot store".to_owned())
        } else {
            None
        };
        match reason {
            Some(reason) => {
                self.key = None;
                if self.error.is_none() {
                    self.error = Some(WorkflowError::InvalidKey {
                        name: self.name.clone(),
                        reason,
                    });
                }
            }
            None => self.key = Some(key),
        }
        self
    }

    /// The idempotency key, if a valid one was given.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

impl Publisher {
    /// Opens workflow `name` of `steps` steps under `key`: its id and its
    /// steps' ids, or (`Err`) the workflow already published under `key`,
    /// whose insert this one's `ON CONFLICT` skipped.
    async fn open(
        &self,
        conn: &mut PgConnection,
        name: &str,
        steps: usize,
        key: Option<String>,
    ) -> Result<Result<(WorkflowId, Vec<OperationId>), PublishedWorkflow>, WorkflowError> {
        let database = |source| database_error(name, None, "workflow", source);
        let store = self.store();
        let opened = store
            .open_workflow(conn, name, steps, key.as_deref())
            .await
            .map_err(database)?;
        match (opened, key) {
            (Some(opened), _) => Ok(Ok(opened)),
            (None, None) => Err(database(sqlx::Error::RowNotFound)),
            (None, Some(key)) => {
                let (id, steps) = store
                    .workflow_by_key(conn, &key)
                    .await
                    .map_err(database)?
                    .ok_or_else(|| {
                        database(sqlx::Error::Protocol(format!(
                            "idempotency key `{key}` is taken by a workflow this transaction \
                             cannot see yet"
                        )))
                    })?;
                Ok(Err(PublishedWorkflow {
                    id,
                    steps,
                    created: false,
                }))
            }
        }
    }
}

/// Publishes `workflow` with the default publisher, inside the caller's
/// transaction; see [`Publisher::publish_workflow`] and the
/// [module docs](self).
pub async fn publish_workflow(
    conn: &mut PgConnection,
    workflow: Workflow,
) -> Result<PublishedWorkflow, WorkflowError> {
    Publisher::default().publish_workflow(conn, workflow).await
}

/// Whether `value` is a stored step reference: `{"pgoutbox.step": n}` or
/// `{"pgoutbox.settled": n}`.
fn step_ref(value: &serde_json::Value) -> Option<i64> {
    let object = value.as_object()?;
    if object.len() != 1 {
        return None;
    }
    object
        .get(DEP_KEY)
        .or_else(|| object.get(SETTLED_KEY))
        .and_then(serde_json::Value::as_i64)
}

/// Every reference in `value` to a published step (an id, not a
/// placeholder), once each: required when a `Dep` names it.
fn published_refs(value: &serde_json::Value, refs: &mut Vec<(OperationId, bool)>) {
    if let Some(id) = step_ref(value) {
        if id > 0 {
            let id = OperationId::from_i64(id);
            let required = value.get(DEP_KEY).is_some();
            match refs.iter_mut().find(|(seen, _)| *seen == id) {
                Some(seen) => seen.1 |= required,
                None => refs.push((id, required)),
            }
        }
        return;
    }
    match value {
        serde_json::Value::Array(items) => items.iter().for_each(|v| published_refs(v, refs)),
        serde_json::Value::Object(map) => map.values().for_each(|v| published_refs(v, refs)),
        _ => {}
    }
}

/// Replaces each placeholder `-(index + 1)` by `ids[index]`.
fn replace_placeholders(value: &mut serde_json::Value, ids: &[OperationId]) {
    if let Some(placeholder) = step_ref(value).filter(|id| *id < 0) {
        let index = usize::try_from(-placeholder - 1).expect("a placeholder is -(index + 1)");
        let object = value
            .as_object_mut()
            .expect("a step reference is an object");
        for slot in object.values_mut() {
            *slot = ids[index].as_i64().into();
        }
        return;
    }
    match value {
        serde_json::Value::Array(items) => {
            for item in items {
                replace_placeholders(item, ids);
            }
        }
        serde_json::Value::Object(map) => {
            for item in map.values_mut() {
                replace_placeholders(item, ids);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_bad_key_is_refused_and_a_good_one_kept() {
        let ok = Workflow::new("shop.order").idempotency_key("order-7");
        assert_eq!(ok.key(), Some("order-7"));
        assert!(ok.error.is_none());
        for (key, reason) in [
            (String::new(), "the key is empty".to_owned()),
            (
                "k".repeat(MAX_KEY_BYTES + 1),
                "1025 bytes, longer than 1024".to_owned(),
            ),
            (
                "a\0b".to_owned(),
                "the key holds a NUL character, which PostgreSQL cannot store".to_owned(),
            ),
        ] {
            let wf = Workflow::new("shop.order").idempotency_key(key);
            assert_eq!(wf.key(), None);
            let error = wf.error.expect("refused");
            assert_eq!(
                error.to_string(),
                format!("invalid idempotency key for workflow `shop.order`: {reason}")
            );
        }
        assert!(
            Workflow::new("shop.order")
                .idempotency_key("k".repeat(MAX_KEY_BYTES))
                .error
                .is_none()
        );
    }

    #[test]
    fn placeholders_become_ids_wherever_they_are() {
        let ids = [10, 11, 12].map(OperationId::from_i64);
        let mut value = json!({
            "a": {"pgoutbox.step": -1},
            "b": [{"pgoutbox.step": -2}, {"pgoutbox.settled": -3}],
            "c": {"pgoutbox.step": -1, "other": 1},
        });
        replace_placeholders(&mut value, &ids);
        assert_eq!(
            value,
            json!({
                "a": {"pgoutbox.step": 10},
                "b": [{"pgoutbox.step": 11}, {"pgoutbox.settled": 12}],
                "c": {"pgoutbox.step": -1, "other": 1},
            })
        );
        let mut refs = Vec::new();
        published_refs(&value, &mut refs);
        let ids = |ns: [i64; 3]| ns.map(OperationId::from_i64);
        let [a, b, c] = ids([10, 11, 12]);
        assert_eq!(refs, [(a, true), (b, true), (c, false)]);
    }
}
