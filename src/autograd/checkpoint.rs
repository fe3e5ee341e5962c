//! Gradient checkpointing by saved-value placeholders (the design of
//! PyTorch's non-reentrant checkpoint).
//!
//! Inside a scope, ops record their nodes as usual, so the graph keeps every
//! edge, to the inputs and to the weights the closure captured. Only the
//! *data* of what they save is replaced by a placeholder: (frame, index),
//! the index counting the frame's saves in order. The first placeholder of
//! a frame that backward unpacks re-runs the closure on the saved inputs,
//! with grad mode on and the random generator replayed from a snapshot; the
//! re-run's saves are captured in the same order and fill the placeholders.
//! Each recomputed value is handed out once, and what a backward did not use
//! is dropped when that backward ends.
//!
//! A re-run must compute what the forward computed. The forward notes the
//! tensors from outside the scope that its ops read (every op asks
//! `should_record` first), with their version and `requires_grad`; before a
//! re-run, a tensor changed in place since is refused (the plain graph
//! refuses a saved value changed in place; here any value read counts, as
//! the re-run would compute with the new data), and a `requires_grad`
//! changed since is set back for the re-run, so that it records the
//! forward's graph. The re-run's saves are then compared with the forward's:
//! op, role, dtype and shape of each.
//!
//! A backward inside the checkpointed function (`grad` of something it
//! computed, say) may unpack placeholders of the very scope whose forward is
//! still running: the function then runs again from its start, and its
//! saves are compared with the forward's so far; the values made after that
//! point are dropped.
//!
//! Under [`CheckpointPolicy::SaveDots`] the frame also keeps the output of
//! every matrix product made in its forward, and the re-run takes them back
//! in order instead of calling gemm again (JAX's `checkpoint_dots`).
//!
//! A third kind of scope, the inspecting one, holds what is saved as usual
//! and lists it: [`saved_residuals`], and the planner's dry run.

use crate::autograd::mode::{is_grad_enabled, GradModeGuard};
use crate::autograd::node::{should_record, Held, Role, Saved, SavedData, NEXT_ID};
use crate::layout::Dims;
use crate::rng::{self, Replay};
use crate::storage::Value;
use crate::tensor::TensorImpl;
use crate::{Float, Tensor};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

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
    fn of<T: Float>(op: &'static str, role: Role, value: &Value<T>) -> Self {
        SaveMeta {
            op,
            role,
            dtype: T::DTYPE,
            shape: value.shape.clone(),
        }
    }
}

impl fmt::Display for SaveMeta {
    /// "the output of ExpBackward (f32 of shape [2, 3])".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} of {} ({} of shape {:?})",
            describe(self.role),
            self.op,
            self.dtype,
            self.shape.as_slice()
        )
    }
}

/// A value captured by a re-run: what it is (to compare with the forward's
/// save) and the typed [`Held`] value.
struct Captured {
    meta: SaveMeta,
    held: Box<dyn Any + Send>,
}

type Capture = Rc<RefCell<Vec<Captured>>>;

/// A matrix product's output kept by a [`CheckpointPolicy::SaveDots`]
/// frame: a typed [`Held`] (counted in `memory::saved_bytes`) shared with
/// the re-runs that reuse it.
#[derive(Clone)]
struct Kept {
    dtype: &'static str,
    shape: Dims,
    held: Arc<dyn Any + Send + Sync>,
}

/// A re-run's supply of kept products, handed out in forward order.
struct DotReplay {
    frame: u64,
    kept: Vec<Kept>,
    next: usize,
    /// A re-run for a backward inside the forward: it goes past the
    /// products kept so far, and computes those.
    partial: bool,
}

/// A checkpoint's re-run: its saves are captured in order; under
/// `SaveDots` its matrix products come from the forward.
struct Recompute {
    capture: Capture,
    dots: Option<DotReplay>,
}

/// A saved value as an inspecting scope lists it, with the identity of its
/// buffer (for the planner's dry run).
pub(crate) struct Noted {
    pub(crate) residual: SavedResidual,
    pub(crate) buf: usize,
}

type Notes = Rc<RefCell<Vec<Noted>>>;

/// Where the saves of ops go on this thread.
enum Scope {
    /// A checkpoint's forward: saves become placeholders of the frame.
    Forward(Arc<Frame>),
    /// A checkpoint's re-run: saves are also captured, in order.
    Recompute(Recompute),
    /// Saves are held as outside any scope, and listed.
    Inspect(Notes),
}

thread_local! {
    static SCOPES: RefCell<Vec<Scope>> = const { RefCell::new(Vec::new()) };
    /// For each running backward on this thread (innermost last), the frames
    /// it re-ran: their unused values are dropped when it ends. Weak, so that
    /// a frame whose placeholders are all consumed frees its inputs at once,
    /// not when the whole backward ends.
    static SESSIONS: RefCell<Vec<Vec<Weak<Frame>>>> = const { RefCell::new(Vec::new()) };
    /// How many re-runs are running on this thread (nested ones included).
    static RERUN_DEPTH: Cell<usize> = const { Cell::new(0) };
    /// How many checkpoint forwards are on this thread's scope stack: while
    /// none is, an op's reads cost one look at this counter.
    static FORWARDS: Cell<usize> = const { Cell::new(0) };
    static COUNTS: Cell<RecomputeCounts> = const { Cell::new(RecomputeCounts::ZERO) };
}

fn count(f: impl FnOnce(&mut RecomputeCounts)) {
    COUNTS.with(|c| {
        let mut counts = c.get();
        f(&mut counts);
        c.set(counts);
    });
}

/// Saves `value`, the `role` of op `op`, through the innermost scope of
/// this thread.
pub(crate) fn save<T: Float>(op: &'static str, role: Role, value: Value<T>) -> SavedData<T> {
    SCOPES.with(|scopes| match scopes.borrow().last() {
        None => SavedData::Held(Held::new(value)),
        Some(Scope::Forward(frame)) => {
            let mut expected = lock(&frame.expected);
            expected.push(SaveMeta::of(op, role, &value));
            SavedData::Placeholder {
                frame: frame.clone(),
                index: expected.len() - 1,
            }
        }
        Some(Scope::Recompute(rerun)) => {
            count(|c| c.saves += 1);
            rerun.capture.borrow_mut().push(Captured {
                meta: SaveMeta::of(op, role, &value),
                held: Box::new(Held::new(value.clone())),
            });
            SavedData::Held(Held::new(value))
        }
        Some(Scope::Inspect(notes)) => {
            notes.borrow_mut().push(note(op, describe(role), &value));
            SavedData::Held(Held::new(value))
        }
    })
}

/// How an inspecting scope lists `value` saved by `op` as `role`, before it
/// is held.
fn note<T: Float>(op: &'static str, role: String, value: &Value<T>) -> Noted {
    let buf = &value.buf;
    let bytes = buf.bytes();
    let counts = buf.countable.load(Ordering::Relaxed) && buf.saved_refs.load(Ordering::Acquire) == 0;
    Noted {
        residual: SavedResidual {
            op,
            role,
            dtype: T::DTYPE,
            shape: value.shape.to_vec(),
            bytes,
            new_bytes: if counts { bytes } else { 0 },
        },
        buf: Arc::as_ptr(buf) as usize,
    }
}

fn describe(role: Role) -> String {
    match role {
        Role::Input(i) => format!("input {i}"),
        Role::Output => "output".to_string(),
    }
}

/// The output of the matrix product `a @ b` (operands with equal batch
/// dimensions), made by `compute` unless a checkpoint scope has it: under
/// [`CheckpointPolicy::SaveDots`] a forward keeps what `compute` made, and
/// its re-run takes the kept value back instead of computing.
pub(crate) fn dot_or<T: Float>(a: &Tensor<T>, b: &Tensor<T>, compute: impl FnOnce() -> Value<T>) -> Value<T> {
    enum Act<T: 'static> {
        Compute,
        Keep(Arc<Frame>),
        Reuse(Value<T>),
    }
    // Asked before the scopes are borrowed: the forwards note the reads.
    let recorded = should_record(&[a, b]);
    let act = SCOPES.with(|scopes| match scopes.borrow_mut().last_mut() {
        None | Some(Scope::Inspect(_)) => Act::Compute,
        Some(Scope::Forward(frame)) => match frame.keeps_dots && recorded {
            true => Act::Keep(frame.clone()),
            false => Act::Compute,
        },
        Some(Scope::Recompute(rerun)) => match &mut rerun.dots {
            Some(dots) if recorded => dots.take(a, b).map_or(Act::Compute, Act::Reuse),
            _ => Act::Compute,
        },
    });
    match act {
        Act::Reuse(value) => {
            count(|c| c.reused_matmuls += 1);
            value
        }
        Act::Compute => {
            if RERUN_DEPTH.with(Cell::get) > 0 {
                count(|c| c.matmuls += 1);
            }
            compute()
        }
        Act::Keep(frame) => {
            let value = compute();
            // The output of a recorded op: graph memory (record() would mark
            // it too, but the count must be on before it is held).
            value.buf.countable.store(true, Ordering::Relaxed);
            let op = if value.shape.len() == 2 {
                "MmBackward"
            } else {
                "BmmBackward"
            };
            SCOPES.with(|scopes| {
                let scopes = scopes.borrow();
                if let Some(Scope::Inspect(notes)) = scopes.iter().rev().nth(1) {
                    let role = format!("output, kept by checkpoint #{}", frame.id);
                    notes.borrow_mut().push(note(op, role, &value));
                }
            });
            lock(&frame.kept).push(Kept {
                dtype: T::DTYPE,
                shape: value.shape.clone(),
                held: Arc::new(Held::new(value.clone())),
            });
            value
        }
    }
}

impl DotReplay {
    /// The next kept product, checked against the operands of the re-run's;
    /// `None` past the kept ones in a partial re-run.
    fn take<T: Float>(&mut self, a: &Tensor<T>, b: &Tensor<T>) -> Option<Value<T>> {
        let (sa, sb) = (a.shape(), b.shape());
        let mut shape: Dims = Dims::from_slice(&sa[..sa.len() - 1]);
        shape.push(sb[sb.len() - 1]);
        let i = self.next;
        if self.partial && i == self.kept.len() {
            return None;
        }
        let kept = self.kept.get(i).unwrap_or_else(|| {
            panic!(
                "checkpoint #{}: the re-run in backward computed more matrix products than the \
                 forward kept ({}); the checkpointed function must compute the same ops when run again",
                self.frame,
                self.kept.len()
            )
        });
        assert!(
            kept.dtype == T::DTYPE && kept.shape == shape,
            "checkpoint #{}: matrix product {i} was {} of shape {:?} in the forward but {} of shape \
             {:?} in the re-run; the checkpointed function must compute the same ops when run again",
            self.frame,
            kept.dtype,
            kept.shape.as_slice(),
            T::DTYPE,
            shape.as_slice()
        );
        self.next += 1;
        let held = kept.held.downcast_ref::<Held<T>>().expect("dtype checked");
        Some(held.value.clone())
    }
}

/// Pops the scope it pushed when dropped (also when unwinding).
struct ScopeGuard;

impl ScopeGuard {
    fn push(scope: Scope) -> Self {
        if matches!(scope, Scope::Forward(_)) {
            FORWARDS.with(|n| n.set(n.get() + 1));
        }
        SCOPES.with(|s| s.borrow_mut().push(scope));
        ScopeGuard
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        // Dropped outside the borrow: the last handle of a frame may go
        // here, and with it the tensors its closure owns.
        let scope = SCOPES.with(|s| s.borrow_mut().pop());
        if let Some(Scope::Forward(_)) = scope {
            FORWARDS.with(|n| n.set(n.get() - 1));
        }
    }
}

/// Notes, for the checkpoint forwards running on this thread, that an op
/// reads `inputs` (every op does this through `should_record`). Inlined:
/// outside checkpoints it is one load and a branch per op.
#[inline(always)]
pub(crate) fn note_reads<T: Float>(inputs: &[&Tensor<T>]) {
    if FORWARDS.with(Cell::get) > 0 {
        note_in_scopes(inputs);
    }
}

/// Each forward scope, from the innermost out, notes the reads (an outer
/// scope's re-run runs the inner function too), down to the nearest
/// re-run: a re-run's own reads are checked before it starts, and they are
/// not the reads of the forward below it (which may be that same scope,
/// re-run for a backward inside its forward).
#[inline(never)]
fn note_in_scopes<T: Float>(inputs: &[&Tensor<T>]) {
    SCOPES.with(|scopes| {
        for scope in scopes.borrow().iter().rev() {
            match scope {
                Scope::Forward(frame) => frame.note(inputs),
                Scope::Recompute(_) => break,
                Scope::Inspect(_) => {}
            }
        }
    });
}

/// The tensors from outside a scope that its forward read, each once, as
/// they were when first read.
struct Reads {
    /// Their addresses, and the inputs' (which the frame saves and checks
    /// itself; they live through the forward). A watched tensor's
    /// allocation outlives it while watched, so no address is reused while
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

/// A tensor as the frame watches it, whatever its dtype: weakly, so that
/// no data is kept alive.
trait Watched: Send + Sync {
    /// Its version and `requires_grad` now, unless it is gone.
    fn now(&self) -> Option<(u64, bool)>;
    /// Sets `requires_grad` (of a leaf; non-leaves always require grad).
    fn set_requires_grad(&self, flag: bool);
    /// What it is, for messages: its shape and the op that made it.
    fn describe(&self) -> String;
    /// Another handle to it.
    fn handle(&self) -> Box<dyn Watched>;
}

impl<T: Float> Watched for Weak<TensorImpl<T>> {
    fn now(&self) -> Option<(u64, bool)> {
        let t = Tensor {
            inner: self.upgrade()?,
        };
        Some((t.inner.version.load(Ordering::Acquire), t.requires_grad()))
    }

    fn set_requires_grad(&self, flag: bool) {
        if let Some(inner) = self.upgrade() {
            Tensor { inner }.set_requires_grad(flag);
        }
    }

    fn describe(&self) -> String {
        match self.upgrade() {
            Some(t) => match &t.node {
                Some(node) => format!("a tensor of shape {:?} made by {}", t.shape.as_slice(), node.name),
                None => format!("a leaf of shape {:?}", t.shape.as_slice()),
            },
            None => "a tensor dropped since".to_string(),
        }
    }

    fn handle(&self) -> Box<dyn Watched> {
        Box::new(self.clone())
    }
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

/// Marks the extent of one backward on this thread; when it drops, the
/// frames that backward re-ran let go of the values it did not use.
pub(crate) struct Session;

impl Session {
    pub(crate) fn begin() -> Self {
        SESSIONS.with(|s| s.borrow_mut().push(Vec::new()));
        Session
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let frames = SESSIONS.with(|s| s.borrow_mut().pop()).unwrap_or_default();
        for frame in frames.iter().filter_map(Weak::upgrade) {
            *lock(&frame.recomputed) = None;
        }
    }
}

fn lock<U>(m: &Mutex<U>) -> MutexGuard<'_, U> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type Rerun = Box<dyn Fn(&Frame) -> Vec<Captured> + Send + Sync>;

/// A re-run's values, each taken when handed out.
type Recomputed = Vec<Option<Box<dyn Any + Send>>>;

/// One checkpoint scope, kept alive by the placeholders that point to it.
/// It holds the closure, the saved inputs and the generator snapshot
/// (inside `rerun`), never a Tensor handle of the graph.
pub(crate) struct Frame {
    id: u64,
    rerun: Rerun,
    /// What the forward saved, in order.
    expected: Mutex<Vec<SaveMeta>>,
    /// The re-run's values not yet handed out, while a backward uses them.
    recomputed: Mutex<Option<Recomputed>>,
    /// Whether the forward keeps its matrix products (`SaveDots`).
    keeps_dots: bool,
    /// The kept products, in forward order, for every re-run.
    kept: Mutex<Vec<Kept>>,
    /// Whether the forward is still running.
    forwarding: AtomicBool,
    /// The id of the first node made in the forward: nodes below it were
    /// made outside the scope.
    first_node: u64,
    /// What the forward read from outside the scope.
    reads: Mutex<Reads>,
}

impl Frame {
    /// The value of placeholder `index`, re-running the scope if needed.
    pub(crate) fn unpack<T: Float>(self: &Arc<Self>, index: usize) -> Value<T> {
        let ready = lock(&self.recomputed)
            .as_mut()
            .and_then(|values| values.get_mut(index).and_then(Option::take));
        let held = match ready {
            Some(held) => held,
            None => {
                let mut values = self.recompute();
                let held = values[index].take().expect("just recomputed");
                *lock(&self.recomputed) = Some(values);
                SESSIONS.with(|s| {
                    if let Some(session) = s.borrow_mut().last_mut() {
                        session.push(Arc::downgrade(self));
                    }
                });
                held
            }
        };
        let held = held.downcast::<Held<T>>().expect("dtype checked on re-run");
        held.value.clone()
    }

    /// Notes that the forward reads `inputs`: those made outside the scope
    /// that someone else can see (and so change before backward).
    fn note<T: Float>(&self, inputs: &[&Tensor<T>]) {
        let mut reads = lock(&self.reads);
        for t in inputs {
            let outside = match &t.inner.node {
                Some(node) => node.id < self.first_node,
                // A leaf with no other handle and no saved value is one of
                // the function's temporaries (only the op sees it now).
                None => Arc::strong_count(&t.inner) + Arc::weak_count(&t.inner) > 1,
            };
            if outside && reads.seen.insert(Arc::as_ptr(&t.inner) as usize) {
                reads.list.push(Read {
                    tensor: Box::new(Arc::downgrade(&t.inner)),
                    version: t.inner.version.load(Ordering::Acquire),
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

/// A layer for [`checkpoint_sequential`]: a shared function of one tensor.
pub type Layer<T> = Arc<dyn Fn(&Tensor<T>) -> Tensor<T> + Send + Sync>;

static NEXT_FRAME: AtomicU64 = AtomicU64::new(0);

/// What a checkpoint keeps from its forward for its backward.
///
/// ```
/// use tapegrad::prelude::*;
/// let opts = CheckpointOptions { policy: CheckpointPolicy::SaveDots };
/// assert_eq!(CheckpointOptions::default().policy, CheckpointPolicy::RecomputeAll);
/// # let _ = opts;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CheckpointPolicy {
    /// Keep only the inputs (and the generator state); backward recomputes
    /// everything (PyTorch's `checkpoint`, JAX's default `remat`).
    #[default]
    RecomputeAll,
    /// Also keep the output of every matrix product recorded in the scope:
    /// backward's re-run takes them back instead of multiplying again, and
    /// recomputes only the cheap ops in between (JAX's
    /// `checkpoint_policies.checkpoint_dots`). The kept outputs count in
    /// [`memory::saved_bytes`](crate::memory::saved_bytes) until the
    /// scope's backward is done. Checkpoints nested in another checkpoint's
    /// forward keep nothing (the outer one promised to keep only its
    /// inputs).
    SaveDots,
}

/// Options of [`checkpoint_with`] and [`checkpoint_many_with`].
///
/// ```
/// use tapegrad::prelude::*;
/// let opts = CheckpointOptions { policy: CheckpointPolicy::SaveDots };
/// let x = Tensor::<f32>::ones(&[2, 2]).set_requires_grad(true);
/// let y = tapegrad::checkpoint_with(|xs| xs[0].matmul(&xs[0]).tanh(), &[x.clone()], opts);
/// y.sum().backward();
/// assert!(x.grad().is_some());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CheckpointOptions {
    /// What the forward keeps besides the inputs.
    pub policy: CheckpointPolicy,
}

/// Runs `f(inputs)` without keeping the activations made inside: backward
/// recomputes them by running `f` again. Gradients are the same as without
/// the checkpoint, for the inputs and for tensors `f` captured (weights).
///
/// ```
/// use tapegrad::prelude::*;
/// let w = Tensor::<f64>::randn(&[4, 4]).set_requires_grad(true);
/// let x = Tensor::<f64>::randn(&[2, 4]).set_requires_grad(true);
/// let w2 = w.clone(); // f owns its weights: move clones in
/// let y = tapegrad::checkpoint(move |xs| xs[0].matmul(&w2).tanh().matmul(&w2).tanh(), &[x.clone()]);
/// y.sum().backward();
/// assert!(w.grad().is_some() && x.grad().is_some());
/// ```
///
/// Under [`no_grad`](crate::no_grad) it just calls `f`.
///
/// `f` runs again with what its forward read: the inputs and the tensors it
/// captured must not be changed in place until the backward is done (an
/// optimizer step goes after it), and a `requires_grad` changed since the
/// forward is the forward's again for the re-run (the graph, made in the
/// forward, still sends the gradient it would without the checkpoint). A
/// backward inside `f` (`grad` with `create_graph`, say) runs `f` once more
/// when it needs values the forward dropped.
///
/// **Panics** in backward if an input or a tensor `f` read was changed in
/// place since the forward, or if the re-run saves other values than the
/// forward did (other ops, roles, dtypes or shapes: `f` must compute the
/// same ops when run again).
pub fn checkpoint<T: Float, F>(f: F, inputs: &[Tensor<T>]) -> Tensor<T>
where
    F: Fn(&[Tensor<T>]) -> Tensor<T> + Send + Sync + 'static,
{
    checkpoint_with(f, inputs, CheckpointOptions::default())
}

/// [`checkpoint`] with options: with [`CheckpointPolicy::SaveDots`], the
/// forward also keeps the matrix products and backward recomputes only the
/// ops between them.
///
/// ```
/// use tapegrad::prelude::*;
/// let w = Tensor::<f64>::randn(&[4, 4]).set_requires_grad(true);
/// let x = Tensor::<f64>::randn(&[2, 4]);
/// let w2 = w.clone();
/// let opts = CheckpointOptions { policy: CheckpointPolicy::SaveDots };
/// let before = tapegrad::recompute_counts();
/// let y = tapegrad::checkpoint_with(move |xs| xs[0].matmul(&w2).tanh().exp(), &[x], opts);
/// y.sum().backward();
/// let done = tapegrad::recompute_counts() - before;
/// assert_eq!((done.reruns, done.matmuls, done.reused_matmuls), (1, 0, 1));
/// ```
pub fn checkpoint_with<T: Float, F>(f: F, inputs: &[Tensor<T>], opts: CheckpointOptions) -> Tensor<T>
where
    F: Fn(&[Tensor<T>]) -> Tensor<T> + Send + Sync + 'static,
{
    let mut out = checkpoint_many_with(move |xs| vec![f(xs)], inputs, opts);
    out.pop().expect("one output")
}

/// [`checkpoint`] for a function with several outputs.
///
/// ```
/// use tapegrad::prelude::*;
/// let x = Tensor::<f64>::randn(&[3]).set_requires_grad(true);
/// let ys = tapegrad::checkpoint_many(|xs| vec![xs[0].exp(), xs[0].tanh()], &[x.clone()]);
/// (&ys[0] + &ys[1]).sum().backward();
/// assert!(x.grad().is_some());
/// ```
pub fn checkpoint_many<T: Float, F>(f: F, inputs: &[Tensor<T>]) -> Vec<Tensor<T>>
where
    F: Fn(&[Tensor<T>]) -> Vec<Tensor<T>> + Send + Sync + 'static,
{
    checkpoint_many_with(f, inputs, CheckpointOptions::default())
}

/// [`checkpoint_many`] with options (see [`checkpoint_with`]).
///
/// ```
/// use tapegrad::prelude::*;
/// let x = Tensor::<f64>::randn(&[3, 3]).set_requires_grad(true);
/// let opts = CheckpointOptions { policy: CheckpointPolicy::SaveDots };
/// let ys = tapegrad::checkpoint_many_with(|xs| vec![xs[0].matmul(&xs[0]).tanh(), xs[0].exp()], &[x.clone()], opts);
/// (&ys[0] + &ys[1]).sum().backward();
/// assert!(x.grad().is_some());
/// ```
pub fn checkpoint_many_with<T: Float, F>(
    f: F,
    inputs: &[Tensor<T>],
    opts: CheckpointOptions,
) -> Vec<Tensor<T>>
where
    F: Fn(&[Tensor<T>]) -> Vec<Tensor<T>> + Send + Sync + 'static,
{
    if !is_grad_enabled() {
        return f(inputs);
    }
    let id = NEXT_FRAME.fetch_add(1, Ordering::Relaxed);
    // The inputs are saved through the enclosing scope: inside another
    // checkpoint they are placeholders of that one.
    let saved: Vec<Saved<T>> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| Saved::of("Checkpoint", Role::Input(i), t))
        .collect();
    let requires: Vec<bool> = inputs.iter().map(Tensor::requires_grad).collect();
    let generator = rng::snapshot();
    let f = Arc::new(f);
    let again = f.clone();
    let rerun: Rerun = Box::new(move |frame: &Frame| {
        let name = format!("checkpoint #{id}");
        let xs: Vec<Tensor<T>> = saved
            .iter()
            .zip(&requires)
            .map(|(s, &r)| Tensor::from_value(s.value(&name)).set_requires_grad(r))
            .collect();
        let capture: Capture = Rc::default();
        let dots = frame.keeps_dots.then(|| DotReplay {
            frame: id,
            kept: lock(&frame.kept).clone(),
            next: 0,
            partial: frame.forwarding.load(Ordering::Acquire),
        });
        let _scope = ScopeGuard::push(Scope::Recompute(Recompute {
            capture: capture.clone(),
            dots,
        }));
        {
            let _depth = RerunGuard::enter();
            let _mode = GradModeGuard::new(true);
            let _rng = Replay::new(generator.clone());
            drop(again(&xs));
        }
        SCOPES.with(|scopes| {
            if let Some(Scope::Recompute(Recompute { dots: Some(d), .. })) = scopes.borrow().last() {
                assert!(
                    d.partial || d.next == d.kept.len(),
                    "checkpoint #{id}: the re-run in backward computed {} matrix products but the \
                     forward kept {}; the checkpointed function must compute the same ops when run again",
                    d.next,
                    d.kept.len()
                );
            }
        });
        capture.take()
    });
    let nested = SCOPES.with(|s| s.borrow().iter().any(|s| matches!(s, Scope::Forward(_))));
    let frame = Arc::new(Frame {
        id,
        rerun,
        expected: Mutex::new(Vec::new()),
        recomputed: Mutex::new(None),
        keeps_dots: opts.policy == CheckpointPolicy::SaveDots && !nested,
        kept: Mutex::new(Vec::new()),
        forwarding: AtomicBool::new(true),
        first_node: NEXT_ID.load(Ordering::Relaxed),
        // The inputs are not watched: the frame saved them, and checks
        // their versions when it reads them back.
        reads: Mutex::new(Reads {
            seen: inputs.iter().map(|t| Arc::as_ptr(&t.inner) as usize).collect(),
            list: Vec::new(),
        }),
    });
    let out = {
        let _scope = ScopeGuard::push(Scope::Forward(frame.clone()));
        f(inputs)
    };
    frame.forwarding.store(false, Ordering::Release);
    out
}

/// Runs `layers` one after another on `input`, in `segments` pieces of
/// `layers.len() / segments` layers, each but the last under a
/// [`checkpoint`]; the last piece takes the remaining layers and is not
/// checkpointed (as `torch.utils.checkpoint.checkpoint_sequential`).
///
/// ```
/// use std::sync::Arc;
/// use tapegrad::prelude::*;
/// type Layer = Arc<dyn Fn(&Tensor<f64>) -> Tensor<f64> + Send + Sync>;
/// let layers: Vec<Layer> = (0..4).map(|_| Arc::new(|x: &Tensor<f64>| x.tanh()) as Layer).collect();
/// let x = Tensor::<f64>::randn(&[3]).set_requires_grad(true);
/// tapegrad::checkpoint_sequential(&layers, 2, &x).sum().backward();
/// assert!(x.grad().is_some());
/// ```
///
/// **Panics** unless `1 <= segments <= layers.len()`.
pub fn checkpoint_sequential<T: Float>(layers: &[Layer<T>], segments: usize, input: &Tensor<T>) -> Tensor<T> {
    checkpoint_sequential_with(layers, segments, input, CheckpointOptions::default())
}

/// [`checkpoint_sequential`] with [`CheckpointOptions`] for every
/// checkpointed piece (`CheckpointPolicy::SaveDots`, say).
///
/// **Panics** unless `1 <= segments <= layers.len()`.
pub fn checkpoint_sequential_with<T: Float>(
    layers: &[Layer<T>],
    segments: usize,
    input: &Tensor<T>,
    opts: CheckpointOptions,
) -> Tensor<T> {
    assert!(
        segments >= 1 && segments <= layers.len(),
        "checkpoint_sequential: {segments} segments for {} layers (need 1 to {})",
        layers.len(),
        layers.len()
    );
    let size = layers.len() / segments;
    let mut x = input.clone();
    for s in 0..segments - 1 {
        let part: Vec<_> = layers[s * size..(s + 1) * size].to_vec();
        x = checkpoint_with(move |xs| run_layers(&part, &xs[0]), &[x], opts);
    }
    run_layers(&layers[(segments - 1) * size..], &x)
}

/// `layers` one after another on `x`.
pub(crate) fn run_layers<T: Float>(layers: &[Layer<T>], x: &Tensor<T>) -> Tensor<T> {
    layers.iter().fold(x.clone(), |h, layer| layer(&h))
}

/// How much recomputation checkpoints did on this thread: counters since
/// the thread started, read with [`recompute_counts`]; subtract two
/// readings for what happened in between.
///
/// Re-runs happen on the thread that runs the backward, and are counted
/// there.
///
/// ```
/// use tapegrad::prelude::*;
/// let x = Tensor::<f64>::randn(&[2, 2]).set_requires_grad(true);
/// let before = tapegrad::recompute_counts();
/// tapegrad::checkpoint(|xs| xs[0].matmul(&xs[0]).tanh(), &[x.clone()]).sum().backward();
/// let done = tapegrad::recompute_counts() - before;
/// assert_eq!(done.reruns, 1);
/// assert_eq!(done.matmuls, 1);
/// assert_eq!(done.saves, 3); // the product's two inputs and tanh's output
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RecomputeCounts {
    /// Checkpoint scopes re-run by backward.
    pub reruns: u64,
    /// Matrix products computed again inside re-runs.
    pub matmuls: u64,
    /// Matrix products that re-runs took back from a
    /// [`CheckpointPolicy::SaveDots`] forward instead of computing.
    pub reused_matmuls: u64,
    /// Values saved by the ops that re-runs recorded (each op that saves
    /// something saves one or two).
    pub saves: u64,
}

impl RecomputeCounts {
    const ZERO: RecomputeCounts = RecomputeCounts {
        reruns: 0,
        matmuls: 0,
        reused_matmuls: 0,
        saves: 0,
    };
}

impl std::ops::Sub for RecomputeCounts {
    type Output = RecomputeCounts;
    fn sub(self, before: RecomputeCounts) -> RecomputeCounts {
        RecomputeCounts {
            reruns: self.reruns - before.reruns,
            matmuls: self.matmuls - before.matmuls,
            reused_matmuls: self.reused_matmuls - before.reused_matmuls,
            saves: self.saves - before.saves,
        }
    }
}

/// This thread's [`RecomputeCounts`] so far.
///
/// ```
/// let a = tapegrad::recompute_counts();
/// assert_eq!(tapegrad::recompute_counts() - a, tapegrad::RecomputeCounts::default());
/// ```
pub fn recompute_counts() -> RecomputeCounts {
    COUNTS.with(Cell::get)
}

/// One value that a function saves for its backward, as
/// [`saved_residuals`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedResidual {
    /// The op that saved it, by the name of its backward node (as
    /// [`Tensor::grad_fn_name`] shows it), or `"Checkpoint"` for the inputs
    /// a checkpoint keeps.
    pub op: &'static str,
    /// What it is to that op: `"input 0"`, `"output"`, or the output of a
    /// matrix product kept by a [`CheckpointPolicy::SaveDots`] checkpoint.
    pub role: String,
    /// `"f32"` or `"f64"`.
    pub dtype: &'static str,
    /// The shape of the saved value (a view may be smaller than its buffer).
    pub shape: Vec<usize>,
    /// The whole buffer behind it.
    pub bytes: usize,
    /// What saving it added to [`memory::saved_bytes`](crate::memory::saved_bytes):
    /// `bytes`, or 0 for a leaf's data (the caller's memory) and for a
    /// buffer already saved.
    pub new_bytes: usize,
}

impl fmt::Display for SavedResidual {
    /// One line: op, role, dtype and shape, bytes and what they add.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = format!("{}{:?}", self.dtype, self.shape);
        let added = match (self.new_bytes, self.bytes) {
            (0, _) => "0 (leaf or saved already)".to_string(),
            (n, _) => mib(n),
        };
        write!(
            f,
            "{:<14} {:<34} {:<18} {:>10}  {}",
            self.op,
            self.role,
            shape,
            mib(self.bytes),
            added
        )
    }
}

fn mib(bytes: usize) -> String {
    format!("{:.3} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Runs `f(inputs)` once, with grad mode on, and lists what it saves for
/// its backward, in the order it is saved (as JAX's
/// `print_saved_residuals`). Inside `f`, a [`checkpoint`] shows up as the
/// inputs it keeps (op `"Checkpoint"`), plus the matrix products it keeps
/// under [`CheckpointPolicy::SaveDots`], not as what it recomputes.
///
/// ```
/// use tapegrad::prelude::*;
/// let w = Tensor::<f32>::randn(&[8, 8]).set_requires_grad(true);
/// let x = Tensor::<f32>::randn(&[4, 8]);
/// let saved = tapegrad::saved_residuals(|xs| xs[1].matmul(&xs[0]).tanh(), &[w, x]);
/// let ops: Vec<_> = saved.iter().map(|r| (r.op, r.role.as_str())).collect();
/// assert_eq!(ops, [("MmBackward", "input 0"), ("TanhBackward", "output")]);
/// assert_eq!(saved[1].new_bytes, 4 * 8 * 4);
/// ```
///
/// The random generator is left where it was; `f`'s results are dropped.
pub fn saved_residuals<T: Float, R>(
    f: impl FnOnce(&[Tensor<T>]) -> R,
    inputs: &[Tensor<T>],
) -> Vec<SavedResidual> {
    let _rng = Replay::new(rng::snapshot());
    let (out, notes) = inspect(|| f(inputs));
    drop(out);
    notes.into_iter().map(|n| n.residual).collect()
}

/// Prints [`saved_residuals`]`(f, inputs)` as a table, with the total that
/// counts in [`memory::saved_bytes`](crate::memory::saved_bytes).
///
/// ```
/// use tapegrad::prelude::*;
/// let x = Tensor::<f32>::randn(&[4, 8]).set_requires_grad(true);
/// tapegrad::print_saved_residuals(|xs| xs[0].exp().sin(), &[x]);
/// // op             role         dtype, shape       bytes  adds to saved_bytes
/// // ExpBackward    output       f32[4, 8]    0.000 MiB  0.000 MiB
/// // ...
/// ```
pub fn print_saved_residuals<T: Float, R>(f: impl FnOnce(&[Tensor<T>]) -> R, inputs: &[Tensor<T>]) {
    let saved = saved_residuals(f, inputs);
    println!(
        "{:<14} {:<34} {:<18} {:>10}  adds to saved_bytes",
        "op", "role", "dtype, shape", "bytes"
    );
    for r in &saved {
        println!("{r}");
    }
    let total: usize = saved.iter().map(|r| r.new_bytes).sum();
    println!(
        "{} values saved; {} in memory::saved_bytes",
        saved.len(),
        mib(total)
    );
}

/// Runs `f` with grad mode on under an inspecting scope, and returns its
/// result with what was saved meanwhile.
pub(crate) fn inspect<R>(f: impl FnOnce() -> R) -> (R, Vec<Noted>) {
    let notes: Notes = Rc::default();
    let out = {
        let _mode = GradModeGuard::new(true);
        let _scope = ScopeGuard::push(Scope::Inspect(notes.clone()));
        f()
    };
    (out, notes.take())
}
