//! Looking at what checkpoints do: the values a function saves
//! ([`saved_residuals`], through an inspecting saved-value hook that holds
//! what it is shown and lists it; the planner's dry run uses the same), and
//! how much the re-runs recomputed ([`recompute_counts`]).

use super::mib;
use crate::autograd::held::AnyHeld;
use crate::autograd::hooks::{self, Packed, SaveHook, SaveInfo};
use crate::autograd::mode::GradModeGuard;
use crate::rng::{self, Replay};
use crate::sync::lock;
use crate::{Float, Tensor};
use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::sync::{Arc, Mutex};

thread_local! {
    static COUNTS: Cell<RecomputeCounts> = const { Cell::new(RecomputeCounts::ZERO) };
}

/// Adds to this thread's [`RecomputeCounts`].
pub(super) fn count(f: impl FnOnce(&mut RecomputeCounts)) {
    COUNTS.with(|c| {
        let mut counts = c.get();
        f(&mut counts);
        c.set(counts);
    });
}

/// A saved value as an inspection lists it, with the identity of its
/// buffer (for the planner's dry run).
pub(crate) struct Noted {
    pub(crate) residual: SavedResidual,
    pub(crate) buf: usize,
}

/// The inspecting hook: saved values are held as outside any hook, and
/// listed.
pub(super) struct Inspect(Mutex<Vec<Noted>>);

impl Inspect {
    /// Lists `value`, saved by `op` as `role`.
    pub(super) fn note(&self, op: &'static str, role: String, value: &dyn AnyHeld) {
        let bytes = value.bytes();
        lock(&self.0).push(Noted {
            residual: SavedResidual {
                op,
                role,
                dtype: value.dtype(),
                shape: value.shape().to_vec(),
                bytes,
                new_bytes: if value.adds_bytes() { bytes } else { 0 },
            },
            buf: value.buffer_id(),
        });
    }
}

impl SaveHook for Inspect {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn pack(&self, value: &dyn AnyHeld, info: &SaveInfo<'_>) -> Option<Packed> {
        self.note(info.op, info.role.to_string(), value);
        None
    }

    fn unpack(&self, _: &Packed, info: &SaveInfo<'_>) -> Box<dyn AnyHeld> {
        unreachable!("{}: an inspection packs no saved value", info.op)
    }
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
    /// [`CheckpointPolicy::SaveDots`](crate::CheckpointPolicy::SaveDots) forward instead of computing.
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
///
/// ```
/// use tapegrad::prelude::*;
/// let x = Tensor::<f64>::ones(&[2, 3]).set_requires_grad(true);
/// let r = &tapegrad::saved_residuals(|xs| xs[0].exp(), &[x])[0];
/// assert_eq!((r.op, r.role.as_str(), r.dtype), ("ExpBackward", "output", "f64"));
/// assert_eq!((r.shape.as_slice(), r.bytes, r.new_bytes), (&[2, 3][..], 48, 48));
/// assert!(r.to_string().starts_with("ExpBackward")); // one line of print_saved_residuals
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedResidual {
    /// The op that saved it, by the name of its backward node (as
    /// [`Tensor::grad_fn_name`] shows it), or `"Checkpoint"` for the inputs
    /// a checkpoint keeps.
    pub op: &'static str,
    /// What it is to that op: `"input 0"`, `"output"`, or the output of a
    /// matrix product kept by a [`CheckpointPolicy::SaveDots`](crate::CheckpointPolicy::SaveDots) checkpoint.
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

/// Runs `f(inputs)` once, with grad mode on, and lists what it saves for
/// its backward, in the order it is saved (as JAX's
/// `print_saved_residuals`). Inside `f`, a [`checkpoint`](crate::checkpoint()) shows up as the
/// inputs it keeps (op `"Checkpoint"`), plus the matrix products it keeps
/// under [`CheckpointPolicy::SaveDots`](crate::CheckpointPolicy::SaveDots), not as what it recomputes.
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
    let inspect = Arc::new(Inspect(Mutex::new(Vec::new())));
    let out = {
        let _mode = GradModeGuard::new(true);
        hooks::with_hook(inspect.clone(), f)
    };
    let notes = std::mem::take(&mut *lock(&inspect.0));
    (out, notes)
}
