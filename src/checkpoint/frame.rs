//! The frame and its re-run: a checkpoint as two saved-value hooks.
//!
//! [`Forward`] is the hook in scope while the checkpointed function runs
//! forward: each value an op saves becomes a placeholder, its index in the
//! frame's saves. The first placeholder of a frame that backward unpacks
//! re-runs the function under [`Recompute`], a hook that holds what the
//! re-run's ops save as usual and also captures it, in order; the captured
//! values fill the placeholders. Each recomputed value is handed out once,
//! and what a backward did not use is dropped when that backward ends.
//!
//! A re-run must compute what the forward computed. The forward hook
//! watches the reads of the ops (tensors from outside the scope, with
//! their version and `requires_grad`); before a re-run, a tensor changed
//! in place since is refused, and a `requires_grad` changed since is set
//! back for the re-run, so that it records the forward's graph. The
//! re-run's saves are then compared with the forward's: op, role, dtype and
//! shape of each.

use super::dots::{DotReplay, Kept};
use super::inspect::count;
use crate::autograd::held::{AnyHeld, Role};
use crate::autograd::hooks::{at_backward_end, Packed, ProductInfo, ReadInput, SaveHook, SaveInfo, Watched};
use crate::autograd::node::NEXT_ID;
use crate::layout::{dims, Dims};
use crate::sync::{into_inner, lock};
use std::any::Any;
use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

thread_local! {
    /// How many re-runs are running on this thread (nested ones included).
    static RERUN_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// What one save was: the op (by its node's name), the value's role to it,
/// dtype and shape. A re-run must save what the forward saved, in order.
#[derive(Clone, PartialEq)]
struct SaveMeta {
    op: &'static str,
    role: Role,
    dtype: &'static str,
    shape: Dims,
}

impl SaveMeta {
    fn of(info: &SaveInfo<'_>) -> Self {
        SaveMeta {
            op: info.op,
            role: info.role,
            dtype: info.dtype,
            shape: dims(info.shape),
        }
    }
}

impl fmt::Display for SaveMeta {
    /// "the output of ExpBackward (f32 of shape [2, 3])".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} of {} ({} of shape {:?})",
            self.role,
            self.op,
            self.dtype,
            self.shape.as_slice()
        )
    }
}

/// A value captured by a re-run: what it is (to compare with the forward's
/// save) and the value, held.
pub(super) struct Captured {
    meta: SaveMeta,
    held: Box<dyn AnyHeld>,
}

/// Runs the checkpointed function again under a [`Recompute`] hook and
/// returns what it captured.
pub(super) type Rerun = Box<dyn Fn(&Frame) -> Vec<Captured> + Send + Sync>;

/// A re-run's values, each taken when handed out.
type Recomputed = Vec<Option<Box<dyn AnyHeld>>>;

/// One checkpoint scope, kept alive by the placeholders that point to it.
/// It holds the function, the saved inputs and the generator snapshot
/// (inside `rerun`), never a Tensor handle of the graph.
pub(super) struct Frame {
    pub(super) id: u64,
    rerun: Rerun,
    /// What the forward saved, in order.
    expected: Mutex<Vec<SaveMeta>>,
    /// The re-run's values not yet handed out, while a backward uses them.
    recomputed: Mutex<Option<Recomputed>>,
    /// Whether the forward keeps its matrix products (`SaveDots`).
    pub(super) keeps_dots: bool,
    /// The kept products, in forward order, for every re-run.
    pub(super) kept: Mutex<Vec<Kept>>,
    /// Whether the forward is still running.
    pub(super) forwarding: AtomicBool,
    /// The id of the first node made in the forward: nodes below it were
    /// made outside the scope.
    first_node: u64,
    /// What the forward read from outside the scope.
    reads: Mutex<Reads>,
}

impl Frame {
    /// A frame for a forward about to run, on `inputs` (given by identity:
    /// the frame saved them, and checks their versions itself).
    pub(super) fn new(id: u64, rerun: Rerun, keeps_dots: bool, inputs: HashSet<usize>) -> Self {
        Frame {
            id,
            rerun,
            expected: Mutex::new(Vec::new()),
            recomputed: Mutex::new(None),
            keeps_dots,
            kept: Mutex::new(Vec::new()),
            forwarding: AtomicBool::new(true),
            first_node: NEXT_ID.load(Ordering::Relaxed),
            reads: Mutex::new(Reads {
                seen: inputs,
                list: Vec::new(),
            }),
        }
    }

    /// The value of placeholder `index`, re-running the scope if needed.
    fn unpack(self: &Arc<Self>, index: usize) -> Box<dyn AnyHeld> {
        let ready = lock(&self.recomputed)
            .as_mut()
            .and_then(|values| values.get_mut(index).and_then(Option::take));
        if let Some(held) = ready {
            return held;
        }
        let mut values = self.recompute();
        let held = values[index].take().expect("just recomputed");
        *lock(&self.recomputed) = Some(values);
        // What this backward leaves unused goes when it ends.
        let frame = Arc::downgrade(self);
        at_backward_end(Box::new(move || {
            if let Some(frame) = frame.upgrade() {
                *lock(&frame.recomputed) = None;
            }
        }));
        held
    }

    /// Notes that the forward reads `inputs`: those made outside the scope
    /// that someone else can see (and so change before backward).
    fn note(&self, inputs: &[&dyn ReadInput]) {
        let mut reads = lock(&self.reads);
        for t in inputs {
            let outside = match t.made_by() {
                Some(node) => node < self.first_node,
                // A leaf with no other handle and no saved value is one of
                // the function's temporaries (only the op sees it now).
                None => t.shared(),
            };
            if outside && reads.seen.insert(t.id()) {
                reads.list.push(Read {
                    tensor: t.watch(),
                    version: t.version(),
                    requires_grad: t.requires_grad(),
                });
            }
        }
    }

    /// Before a re-run: panics if a tensor the forward read from outside
    /// has been changed in place since (the re-run would compute with the
    /// new data); sets the `requires_grad` each had in the forward back on
    /// those changed since, until the guard drops, so that the re-run's ops
    /// record (and save) what the forward's did.
    fn check_reads(&self) -> FlagsGuard {
        let mut flags = FlagsGuard(Vec::new());
        let mut modified = None;
        for r in &lock(&self.reads).list {
            let Some((version, requires_grad)) = r.tensor.now() else {
                continue; // gone: the re-run cannot read it
            };
            if version != r.version {
                modified = Some((r.tensor.describe(), version, r.version));
                break;
            }
            if requires_grad != r.requires_grad {
                r.tensor.set_requires_grad(r.requires_grad);
                flags.0.push((r.tensor.handle(), requires_grad));
            }
        }
        if let Some((what, now, then)) = modified {
            panic!(
                "checkpoint #{}: one of the values needed for gradient computation has been modified \
                 by an inplace operation: {what}, which the checkpointed function read in its forward, \
                 is at version {now}; expected version {then}. Its re-run in backward would compute \
                 with the new values: change what a checkpointed function reads only after its backward",
                self.id
            );
        }
        flags
    }

    /// Re-runs the scope (no lock held meanwhile) and checks that it saved
    /// what the forward saved. During the forward (for a backward inside
    /// it), the re-run goes further than the forward so far: the values
    /// past the forward's are dropped.
    fn recompute(&self) -> Recomputed {
        count(|c| c.reruns += 1);
        let captured = {
            let _flags = self.check_reads();
            let _depth = RerunGuard::enter();
            (self.rerun)(self)
        };
        let expected = lock(&self.expected);
        let so_far = self.forwarding.load(Ordering::Acquire);
        let (n, m) = (captured.len(), expected.len());
        if so_far {
            assert!(
                n >= m,
                "checkpoint #{}: the re-run for a backward inside its forward saved {n} values but the \
                 forward had saved {m} by then; the checkpointed function must compute the same ops \
                 when run again",
                self.id
            );
        } else {
            assert!(
                n == m,
                "checkpoint #{}: the re-run in backward saved {n} values but the forward saved {m}; the \
                 checkpointed function must compute the same ops when run again",
                self.id
            );
        }
        for (i, (c, e)) in captured.iter().zip(expected.iter()).enumerate() {
            assert!(
                c.meta == *e,
                "checkpoint #{}: saved value {i} was {e} in the forward but {} in the re-run; the \
                 checkpointed function must compute the same ops when run again",
                self.id,
                c.meta
            );
        }
        captured.into_iter().take(m).map(|c| Some(c.held)).collect()
    }
}

/// The hook of a checkpoint's forward: saves become placeholders of the
/// frame; under `SaveDots` it keeps the matrix products.
pub(super) struct Forward(pub(super) Arc<Frame>);

impl SaveHook for Forward {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn label(&self) -> String {
        format!("checkpoint #{}", self.0.id)
    }

    fn pack(&self, _: &dyn AnyHeld, info: &SaveInfo<'_>) -> Option<Packed> {
        let mut expected = lock(&self.0.expected);
        expected.push(SaveMeta::of(info));
        Some(Box::new(expected.len() - 1))
    }

    fn unpack(&self, packed: &Packed, _: &SaveInfo<'_>) -> Box<dyn AnyHeld> {
        let index = packed.downcast_ref::<usize>().expect("a placeholder is an index");
        self.0.unpack(*index)
    }

    fn product(&self, info: &ProductInfo, compute: &mut dyn FnMut() -> Box<dyn AnyHeld>) -> Box<dyn AnyHeld> {
        match self.0.keeps_dots && info.recorded {
            true => super::dots::keep(&self.0, info, compute),
            false => counted_product(compute),
        }
    }

    fn watches_reads(&self) -> bool {
        true
    }

    fn reads(&self, inputs: &[&dyn ReadInput]) -> ControlFlow<()> {
        // An outer scope's re-run runs the inner function too: the outer
        // forwards note the reads as well.
        self.0.note(inputs);
        ControlFlow::Continue(())
    }
}

/// The hook of a checkpoint's re-run: saves are held as usual, and
/// captured in order; under `SaveDots` the matrix products come from the
/// forward.
pub(super) struct Recompute {
    capture: Mutex<Vec<Captured>>,
    dots: Option<Mutex<DotReplay>>,
}

impl Recompute {
    pub(super) fn new(dots: Option<DotReplay>) -> Self {
        Recompute {
            capture: Mutex::new(Vec::new()),
            dots: dots.map(Mutex::new),
        }
    }

    /// What the re-run saved, after checking that it computed as many
    /// products as the forward kept.
    pub(super) fn finish(self) -> Vec<Captured> {
        if let Some(dots) = self.dots {
            into_inner(dots).finish();
        }
        into_inner(self.capture)
    }
}

impl SaveHook for Recompute {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn pack(&self, value: &dyn AnyHeld, info: &SaveInfo<'_>) -> Option<Packed> {
        count(|c| c.saves += 1);
        lock(&self.capture).push(Captured {
            meta: SaveMeta::of(info),
            held: value.share(),
        });
        None
    }

    fn unpack(&self, _: &Packed, info: &SaveInfo<'_>) -> Box<dyn AnyHeld> {
        unreachable!("{}: a checkpoint's re-run packs no saved value", info.op)
    }

    fn product(&self, info: &ProductInfo, compute: &mut dyn FnMut() -> Box<dyn AnyHeld>) -> Box<dyn AnyHeld> {
        let kept = match (&self.dots, info.recorded) {
            (Some(dots), true) => lock(dots).take(info),
            _ => None,
        };
        match kept {
            Some(held) => {
                count(|c| c.reused_matmuls += 1);
                held
            }
            None => counted_product(compute),
        }
    }

    fn watches_reads(&self) -> bool {
        true
    }

    fn reads(&self, _: &[&dyn ReadInput]) -> ControlFlow<()> {
        // A re-run's own reads were checked before it started, and they are
        // not the reads of the forward below it (which may be this same
        // scope, re-run for a backward inside its forward).
        ControlFlow::Break(())
    }
}

/// `compute()`, counted as a product computed again if a re-run is
/// running.
fn counted_product(compute: &mut dyn FnMut() -> Box<dyn AnyHeld>) -> Box<dyn AnyHeld> {
    if RERUN_DEPTH.with(Cell::get) > 0 {
        count(|c| c.matmuls += 1);
    }
    compute()
}

/// The tensors from outside a scope that its forward read, each once, as
/// they were when first read.
struct Reads {
    /// Their identities, and the inputs' (which the frame saves and checks
    /// itself; they live through the forward). A watched tensor's
    /// allocation outlives it while watched, so no identity is reused while
    /// the forward notes reads.
    seen: HashSet<usize>,
    list: Vec<Read>,
}

/// One of them, as the forward first read it.
struct Read {
    tensor: Box<dyn Watched>,
    version: u64,
    requires_grad: bool,
}

/// Leaves whose `requires_grad` a re-run set back to the forward's; the
/// user's flags come back when it drops (also when unwinding).
struct FlagsGuard(Vec<(Box<dyn Watched>, bool)>);

impl Drop for FlagsGuard {
    fn drop(&mut self) {
        for (tensor, flag) in &self.0 {
            tensor.set_requires_grad(*flag);
        }
    }
}

/// Counts a running re-run while it lives.
struct RerunGuard;

impl RerunGuard {
    fn enter() -> Self {
        RERUN_DEPTH.with(|d| d.set(d.get() + 1));
        RerunGuard
    }
}

impl Drop for RerunGuard {
    fn drop(&mut self) {
        RERUN_DEPTH.with(|d| d.set(d.get() - 1));
    }
}
