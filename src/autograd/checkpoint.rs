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

use crate::autograd::mode::{is_grad_enabled, GradModeGuard};
use crate::autograd::node::{Held, Role, Saved, SavedData};
use crate::rng::{self, Replay};
use crate::storage::{Dims, Value};
use crate::{Float, Tensor};
use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// A value captured by a re-run: its dtype and shape (to compare with the
/// forward's) and the typed [`Held`] value.
struct Captured {
    dtype: &'static str,
    shape: Dims,
    held: Box<dyn Any + Send>,
}

type Capture = Rc<RefCell<Vec<Captured>>>;

/// Where the saves of ops go on this thread.
enum Scope {
    /// A checkpoint's forward: saves become placeholders of the frame.
    Forward(Arc<Frame>),
    /// A checkpoint's re-run: saves are also captured, in order.
    Recompute(Capture),
}

thread_local! {
    static SCOPES: RefCell<Vec<Scope>> = const { RefCell::new(Vec::new()) };
    /// For each running backward on this thread (innermost last), the frames
    /// it re-ran: their unused values are dropped when it ends. Weak, so that
    /// a frame whose placeholders are all consumed frees its inputs at once,
    /// not when the whole backward ends.
    static SESSIONS: RefCell<Vec<Vec<Weak<Frame>>>> = const { RefCell::new(Vec::new()) };
}

/// Saves `value`, the `role` of op `op`, through the innermost scope of
/// this thread.
pub(crate) fn save<T: Float>(op: &'static str, role: Role, value: Value<T>) -> SavedData<T> {
    let _ = (op, role);
    SCOPES.with(|scopes| match scopes.borrow().last() {
        None => SavedData::Held(Held::new(value)),
        Some(Scope::Forward(frame)) => {
            let mut expected = lock(&frame.expected);
            expected.push((T::DTYPE, value.shape.clone()));
            SavedData::Placeholder {
                frame: frame.clone(),
                index: expected.len() - 1,
            }
        }
        Some(Scope::Recompute(capture)) => {
            capture.borrow_mut().push(Captured {
                dtype: T::DTYPE,
                shape: value.shape.clone(),
                held: Box::new(Held::new(value.clone())),
            });
            SavedData::Held(Held::new(value))
        }
    })
}

/// Pops the scope it pushed when dropped (also when unwinding).
struct ScopeGuard;

impl ScopeGuard {
    fn push(scope: Scope) -> Self {
        SCOPES.with(|s| s.borrow_mut().push(scope));
        ScopeGuard
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        SCOPES.with(|s| s.borrow_mut().pop());
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

type Rerun = Box<dyn Fn() -> Vec<Captured> + Send + Sync>;

/// A re-run's values, each taken when handed out.
type Recomputed = Vec<Option<Box<dyn Any + Send>>>;

/// One checkpoint scope, kept alive by the placeholders that point to it.
/// It holds the closure, the saved inputs and the generator snapshot
/// (inside `rerun`), never a Tensor handle of the graph.
pub(crate) struct Frame {
    id: u64,
    rerun: Rerun,
    /// dtype and shape of each value the forward saved, in order.
    expected: Mutex<Vec<(&'static str, Dims)>>,
    /// The re-run's values not yet handed out, while a backward uses them.
    recomputed: Mutex<Option<Recomputed>>,
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

    /// Re-runs the scope (no lock held meanwhile) and checks that it saved
    /// what the forward saved.
    fn recompute(&self) -> Recomputed {
        let captured = (self.rerun)();
        let expected = lock(&self.expected);
        assert_eq!(
            captured.len(),
            expected.len(),
            "checkpoint #{}: the re-run in backward saved {} values but the forward saved {}; the \
             checkpointed function must compute the same ops when run again",
            self.id,
            captured.len(),
            expected.len()
        );
        for (i, (c, (dtype, shape))) in captured.iter().zip(expected.iter()).enumerate() {
            assert!(
                c.dtype == *dtype && c.shape == *shape,
                "checkpoint #{}: saved value {i} was {dtype} of shape {:?} in the forward but {} of \
                 shape {:?} in the re-run; the checkpointed function must compute the same ops when \
                 run again",
                self.id,
                shape.as_slice(),
                c.dtype,
                c.shape.as_slice()
            );
        }
        captured.into_iter().map(|c| Some(c.held)).collect()
    }
}

/// A layer for [`checkpoint_sequential`]: a shared function of one tensor.
pub type Layer<T> = Arc<dyn Fn(&Tensor<T>) -> Tensor<T> + Send + Sync>;

static NEXT_FRAME: AtomicU64 = AtomicU64::new(0);

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
pub fn checkpoint<T: Float, F>(f: F, inputs: &[Tensor<T>]) -> Tensor<T>
where
    F: Fn(&[Tensor<T>]) -> Tensor<T> + Send + Sync + 'static,
{
    let mut out = checkpoint_many(move |xs| vec![f(xs)], inputs);
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
    let rerun: Rerun = Box::new(move || {
        let name = format!("checkpoint #{id}");
        let xs: Vec<Tensor<T>> = saved
            .iter()
            .zip(&requires)
            .map(|(s, &r)| Tensor::from_value(s.value(&name)).set_requires_grad(r))
            .collect();
        let capture: Capture = Rc::default();
        {
            let _scope = ScopeGuard::push(Scope::Recompute(capture.clone()));
            let _mode = GradModeGuard::new(true);
            let _rng = Replay::new(generator.clone());
            drop(again(&xs));
        }
        capture.take()
    });
    let frame = Arc::new(Frame {
        id,
        rerun,
        expected: Mutex::new(Vec::new()),
        recomputed: Mutex::new(None),
    });
    let _scope = ScopeGuard::push(Scope::Forward(frame));
    f(inputs)
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
    assert!(
        segments >= 1 && segments <= layers.len(),
        "checkpoint_sequential: {segments} segments for {} layers (need 1 to {})",
        layers.len(),
        layers.len()
    );
    let size = layers.len() / segments;
    let run = |part: &[Layer<T>], x: &Tensor<T>| part.iter().fold(x.clone(), |h, layer| layer(&h));
    let mut x = input.clone();
    for s in 0..segments - 1 {
        let part: Vec<_> = layers[s * size..(s + 1) * size].to_vec();
        x = checkpoint(move |xs| run(&part, &xs[0]), &[x]);
    }
    run(&layers[(segments - 1) * size..], &x)
}
