//! Gradient checkpointing, a client of the engine's saved-value hooks (the
//! design of PyTorch's non-reentrant checkpoint).
//!
//! Inside a scope, ops record their nodes as usual, so the graph keeps every
//! edge, to the inputs and to the weights the closure captured. Only the
//! *data* of what they save is replaced by a placeholder, through the hook
//! the scope pushes ([`frame`]): the first placeholder that backward unpacks
//! re-runs the closure on the saved inputs, with grad mode on and the random
//! generator replayed from a snapshot, and the re-run's saves fill the
//! placeholders.
//!
//! A backward inside the checkpointed function (`grad` of something it
//! computed, say) may unpack placeholders of the very scope whose forward is
//! still running: the function then runs again from its start, and its
//! saves are compared with the forward's so far; the values made after that
//! point are dropped.
//!
//! The files: this one, the public API; [`frame`], the placeholders and the
//! re-run; [`dots`], `SaveDots`; [`inspect`], `saved_residuals` and the
//! recompute counts; [`planner`], choosing segments for a budget, with its
//! dynamic programme in [`plan_dp`].

mod dots;
mod frame;
mod inspect;
mod plan_dp;
mod planner;

pub use inspect::{print_saved_residuals, recompute_counts, saved_residuals, RecomputeCounts, SavedResidual};
pub use planner::{
    checkpoint_planned, plan_checkpoints, profile_layers, try_plan_checkpoints, BudgetError, LayerProfile,
    Plan, Segment,
};

use crate::autograd::held::Role;
use crate::autograd::hooks;
use crate::autograd::mode::{is_grad_enabled, GradModeGuard};
use crate::autograd::node::Saved;
use crate::rng::{self, Replay};
use crate::{Float, Tensor};
use dots::DotReplay;
use frame::{Forward, Frame, Recompute, Rerun};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// `bytes` in MiB, for tables.
fn mib(bytes: usize) -> String {
    format!("{:.3} MiB", bytes as f64 / (1 << 20) as f64)
}

/// A layer for [`checkpoint_sequential`]: a shared function of one tensor.
///
/// ```
/// use std::sync::Arc;
/// use tapegrad::{Layer, Tensor};
/// let w = Tensor::from_vec(vec![2.0f64], &[1, 1]).set_requires_grad(true);
/// let w2 = w.clone(); // the layer owns its weights: move a clone in
/// let layer: Layer<f64> = Arc::new(move |h: &Tensor<f64>| h.matmul(&w2).tanh());
/// let x = Tensor::from_vec(vec![0.5f64], &[1, 1]);
/// assert_eq!(layer(&x).item(), 1f64.tanh());
/// ```
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
///
/// **Panics** in backward as [`checkpoint`].
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
///
/// **Panics** in backward as [`checkpoint`].
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
///
/// **Panics** in backward as [`checkpoint`].
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
    // The inputs are saved through the enclosing hooks: inside another
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
        let dots = frame
            .keeps_dots
            .then(|| DotReplay::new(frame, frame.forwarding.load(Ordering::Acquire)));
        let recompute = Arc::new(Recompute::new(dots));
        hooks::with_hook(recompute.clone(), || {
            let _mode = GradModeGuard::new(true);
            let _rng = Replay::new(generator.clone());
            drop(again(&xs));
        });
        match Arc::try_unwrap(recompute) {
            Ok(recompute) => recompute.finish(),
            Err(_) => unreachable!("the re-run's hook is popped when it ends"),
        }
    });
    // Checkpoints nested in another's forward keep no products.
    let nested = hooks::stack().iter().any(|h| h.as_any().is::<Forward>());
    let keeps_dots = opts.policy == CheckpointPolicy::SaveDots && !nested;
    // The inputs are not watched: the frame saved them, and checks their
    // versions when it reads them back.
    let ids = inputs.iter().map(|t| Arc::as_ptr(&t.inner) as usize).collect();
    let frame = Arc::new(Frame::new(id, rerun, keeps_dots, ids));
    let out = hooks::with_hook(Arc::new(Forward(frame.clone())), || f(inputs));
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
/// **Panics** unless `1 <= segments <= layers.len()`, and in backward as
/// [`checkpoint`].
#[track_caller]
pub fn checkpoint_sequential<T: Float>(layers: &[Layer<T>], segments: usize, input: &Tensor<T>) -> Tensor<T> {
    checkpoint_sequential_with(layers, segments, input, CheckpointOptions::default())
}

/// [`checkpoint_sequential`] with [`CheckpointOptions`] for every
/// checkpointed piece (`CheckpointPolicy::SaveDots`, say).
///
/// ```
/// use std::sync::Arc;
/// use tapegrad::prelude::*;
/// use tapegrad::{checkpoint_sequential_with, Layer};
/// let w = Tensor::<f64>::randn(&[4, 4]).set_requires_grad(true);
/// let layers: Vec<Layer<f64>> = (0..4)
///     .map(|_| {
///         let w = w.clone();
///         Arc::new(move |h: &Tensor<f64>| h.matmul(&w).tanh()) as Layer<f64>
///     })
///     .collect();
/// let x = Tensor::<f64>::randn(&[2, 4]);
/// let opts = CheckpointOptions { policy: CheckpointPolicy::SaveDots };
/// let before = tapegrad::recompute_counts();
/// checkpoint_sequential_with(&layers, 2, &x, opts).sum().backward();
/// let done = tapegrad::recompute_counts() - before;
/// // The first piece (2 layers) ran again, taking its 2 products back.
/// assert_eq!((done.reruns, done.matmuls, done.reused_matmuls), (1, 0, 2));
///
/// // The gradient is the one without checkpoints.
/// let checkpointed = w.grad().unwrap().to_vec();
/// w.zero_grad();
/// layers.iter().fold(x, |h, layer| layer(&h)).sum().backward();
/// assert_eq!(checkpointed, w.grad().unwrap().to_vec());
/// ```
///
/// **Panics** unless `1 <= segments <= layers.len()`, and in backward as
/// [`checkpoint`].
#[track_caller]
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
