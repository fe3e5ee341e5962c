//! The engine's hook points: where a client (checkpointing, a user's
//! [`SavedTensorsHooks`], an inspection) plugs in, so that the engine names
//! none of them.
//!
//! - **Saved values.** A per-thread stack of [`SaveHook`]s: a value an op
//!   saves while one is on the stack is stored as the innermost hook's
//!   `pack` returns it, and a backward rule reads it through `unpack`. The
//!   node keeps the value's role, shape and version itself, so version
//!   checks and `create_graph` work through any hook.
//! - **Products.** An op whose output is expensive (a matrix product) asks
//!   the innermost hook for it ([`product`]), so that a hook can keep it in
//!   one run and hand it back in another (checkpointing's `SaveDots`).
//! - **Reads.** Hooks that watch reads learn which tensors each op reads
//!   ([`note_reads`]), innermost first.
//! - **End of backward.** A callback when the innermost backward running
//!   on this thread ends ([`at_backward_end`]).
//!
//! Outside any hook, saving costs one thread-local read and an op's reads
//! one more.

use crate::autograd::held::{value_of, AnyHeld, Held, Role};
use crate::storage::Value;
use crate::Float;
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What a hook's `pack` made of a value.
pub(crate) type Packed = Box<dyn Any + Send + Sync>;

/// What a hook learns of a value being saved.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SaveInfo<'a> {
    /// The saving op's node name (`"MulBackward"`).
    pub(crate) op: &'static str,
    pub(crate) role: Role,
    pub(crate) dtype: &'static str,
    pub(crate) shape: &'a [usize],
}

/// A client of the engine's hook points. Every method but `pack` and
/// `unpack` has a default that does what the engine does without hooks.
pub(crate) trait SaveHook: Send + Sync {
    /// The hook itself, for a client to recognise its own on the stack.
    fn as_any(&self) -> &dyn Any;

    /// Packs a value an op saves; `None` keeps it held as it is.
    fn pack(&self, value: &dyn AnyHeld, info: &SaveInfo<'_>) -> Option<Packed>;

    /// The value `packed` stands for (a `Held<T>` of the type packed).
    fn unpack(&self, packed: &Packed, info: &SaveInfo<'_>) -> Box<dyn AnyHeld>;

    /// The output of an expensive op: `compute()` unless the hook supplies
    /// it.
    fn product(&self, info: &ProductInfo, compute: &mut dyn FnMut() -> Box<dyn AnyHeld>) -> Box<dyn AnyHeld> {
        let _ = info;
        compute()
    }

    /// What the hook is, for printouts of what a node saved
    /// (`"checkpoint #3"`).
    fn label(&self) -> String {
        "a saved-value hook".to_string()
    }

    /// Whether the hook wants [`reads`](SaveHook::reads) called.
    fn watches_reads(&self) -> bool {
        false
    }

    /// An op reads `inputs`; `Break` hides the reads from the hooks outside
    /// this one.
    fn reads(&self, inputs: &[&dyn ReadInput]) -> ControlFlow<()> {
        let _ = inputs;
        ControlFlow::Continue(())
    }
}

/// What a hook learns of an expensive op's output before it is made.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProductInfo<'a> {
    /// The op's node name (`"MmBackward"`).
    pub(crate) op: &'static str,
    pub(crate) dtype: &'static str,
    pub(crate) shape: &'a [usize],
    /// Whether the op records a node (its output is graph memory).
    pub(crate) recorded: bool,
}

/// Callbacks to run when a backward ends.
type AtEnd = Vec<Box<dyn FnOnce()>>;

/// One node as backward runs it, for an observer: its op and the gradient
/// it received.
pub(crate) struct NodeRun<'a> {
    pub(crate) op: &'static str,
    pub(crate) grad_shape: &'a [usize],
    pub(crate) grad_norm: f64,
}

/// Something told of every node a backward on this thread runs.
type Observer = Box<dyn FnMut(&NodeRun<'_>)>;

/// How many threads have a backward observer: while none has, a node run
/// costs one load to know it.
static OBSERVERS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static HOOKS: RefCell<Vec<Arc<dyn SaveHook>>> = const { RefCell::new(Vec::new()) };
    /// How many hooks on the stack watch reads: while none does, an op's
    /// reads cost one look at this counter.
    static WATCHERS: Cell<usize> = const { Cell::new(0) };
    /// For each backward running on this thread (innermost last), the
    /// callbacks to run when it ends.
    static BACKWARDS: RefCell<Vec<AtEnd>> = const { RefCell::new(Vec::new()) };
    static OBSERVER: RefCell<Option<Observer>> = const { RefCell::new(None) };
}

/// Runs `f` with `observer` told of every node the backwards on this
/// thread run, in order.
pub(crate) fn observe_backward<R>(observer: Observer, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Observer>);
    impl Drop for Restore {
        fn drop(&mut self) {
            OBSERVER.with(|o| *o.borrow_mut() = self.0.take());
            OBSERVERS.fetch_sub(1, Ordering::Relaxed);
        }
    }
    OBSERVERS.fetch_add(1, Ordering::Relaxed);
    let _restore = Restore(OBSERVER.with(|o| o.borrow_mut().replace(observer)));
    f()
}

/// Whether a backward observer may be set on this thread.
#[inline(always)]
pub(crate) fn observing() -> bool {
    OBSERVERS.load(Ordering::Relaxed) > 0
}

/// Tells this thread's observer, if any, of a node run.
pub(crate) fn report(run: &NodeRun<'_>) {
    OBSERVER.with(|o| {
        if let Some(observer) = o.borrow_mut().as_mut() {
            observer(run);
        }
    });
}

/// The innermost hook of this thread.
pub(crate) fn innermost() -> Option<Arc<dyn SaveHook>> {
    HOOKS.with(|h| h.borrow().last().cloned())
}

/// This thread's hooks, innermost last.
pub(crate) fn stack() -> Vec<Arc<dyn SaveHook>> {
    HOOKS.with(|h| h.borrow().clone())
}

/// Runs `f` with `hook` innermost; it is popped after `f`, also when `f`
/// panics.
pub(crate) fn with_hook<R>(hook: Arc<dyn SaveHook>, f: impl FnOnce() -> R) -> R {
    let watches = hook.watches_reads();
    HOOKS.with(|h| h.borrow_mut().push(hook));
    if watches {
        WATCHERS.with(|n| n.set(n.get() + 1));
    }
    /// Pops the hook when dropped. The hook is dropped outside the
    /// borrow: its last handle may go here, and with it what it owns.
    struct Pop(bool);
    impl Drop for Pop {
        fn drop(&mut self) {
            let _hook = HOOKS.with(|h| h.borrow_mut().pop());
            if self.0 {
                WATCHERS.with(|n| n.set(n.get() - 1));
            }
        }
    }
    let _pop = Pop(watches);
    f()
}

/// The output of an expensive op named `op` (of `shape`): `compute()`,
/// unless the innermost hook supplies it. `recorded`: whether the op
/// records a node.
pub(crate) fn product<T: Float>(
    op: &'static str,
    shape: &[usize],
    recorded: bool,
    compute: impl FnOnce() -> Value<T>,
) -> Value<T> {
    let Some(hook) = innermost() else {
        return compute();
    };
    let mut compute = Some(compute);
    let mut held = || -> Box<dyn AnyHeld> {
        let value = (compute.take().expect("a product is computed once"))();
        if recorded {
            // Made by a recorded op: graph memory, counted once held.
            value.buf.countable.store(true, Ordering::Relaxed);
        }
        Box::new(Held::new(value))
    };
    let info = ProductInfo {
        op,
        dtype: T::DTYPE,
        shape,
        recorded,
    };
    value_of(&*hook.product(&info, &mut held), op)
}

/// An op's input as a hook that watches reads sees it, whatever its
/// element type.
pub(crate) trait ReadInput {
    /// Its identity (the address of its shared state).
    fn id(&self) -> usize;
    /// The id of the node that made it; `None` for a leaf.
    fn made_by(&self) -> Option<u64>;
    /// Whether anything besides this handle holds it.
    fn shared(&self) -> bool;
    fn version(&self) -> u64;
    fn requires_grad(&self) -> bool;
    /// A weak handle to it.
    fn watch(&self) -> Box<dyn Watched>;
}

/// A tensor watched weakly (no data kept alive), whatever its element type.
pub(crate) trait Watched: Send + Sync {
    /// Its version and `requires_grad` now, unless it is gone.
    fn now(&self) -> Option<(u64, bool)>;
    /// Sets `requires_grad` (of a leaf; non-leaves always require grad).
    fn set_requires_grad(&self, flag: bool);
    /// What it is, for messages: its shape and the op that made it.
    fn describe(&self) -> String;
    /// Another handle to it.
    fn handle(&self) -> Box<dyn Watched>;
}

/// Tells the hooks that watch reads, innermost first, that an op reads
/// `inputs` (every op does, through `should_record`). Inlined: while no
/// hook watches, it is one load and a branch per op.
#[inline(always)]
pub(crate) fn note_reads<I: ReadInput>(inputs: &[&I]) {
    if WATCHERS.with(Cell::get) > 0 {
        tell_watchers(inputs);
    }
}

#[inline(never)]
fn tell_watchers<I: ReadInput>(inputs: &[&I]) {
    let erased: Vec<&dyn ReadInput> = inputs.iter().map(|&t| t as &dyn ReadInput).collect();
    for hook in stack().iter().rev() {
        if hook.watches_reads() && hook.reads(&erased).is_break() {
            break;
        }
    }
}

/// Marks one backward on this thread; when it ends, the callbacks
/// registered during it run.
pub(crate) struct BackwardScope;

impl BackwardScope {
    pub(crate) fn begin() -> Self {
        BACKWARDS.with(|b| b.borrow_mut().push(Vec::new()));
        BackwardScope
    }
}

impl Drop for BackwardScope {
    fn drop(&mut self) {
        let callbacks = BACKWARDS.with(|b| b.borrow_mut().pop()).unwrap_or_default();
        for f in callbacks {
            f();
        }
    }
}

/// Runs `f` when the innermost backward running on this thread ends (at
/// once if none is running).
pub(crate) fn at_backward_end(f: Box<dyn FnOnce()>) {
    let f = BACKWARDS.with(|b| match b.borrow_mut().last_mut() {
        Some(callbacks) => {
            callbacks.push(f);
            None
        }
        None => Some(f),
    });
    if let Some(f) = f {
        f();
    }
}
