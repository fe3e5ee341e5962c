//! Backward nodes: what an op leaves on the tape.
//!
//! A node has the op's name, one edge per input (to the input's own node,
//! weakly to a leaf that requires grad, or nothing), the values the op saved
//! for its backward rule, and the rule itself. A rule sees saved values only
//! through [`Ctx`]; it captures no `Tensor` (shapes and scalars are fine), so
//! the graph has no cycles and every saved value passes through one place
//! where versions are checked and hooks unpack what they packed.

pub(crate) use crate::autograd::held::Role;
use crate::autograd::held::{value_of, Held};
use crate::autograd::hooks::{self, Packed, SaveHook, SaveInfo};
use crate::autograd::mode::{anomaly_checks, is_grad_enabled};
use crate::layout::{dims, Dims};
use crate::storage::Value;
use crate::sync::lock;
use crate::tensor::{Tensor, TensorImpl};
use crate::Float;
use smallvec::SmallVec;
use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// One gradient per input of an op (`None`: that input gets none).
pub(crate) type Grads<T> = SmallVec<[Option<Tensor<T>>; 2]>;

/// A backward rule: from the saved values and the gradient of the output, the
/// gradients of the inputs. Written with Tensor ops, so that under
/// `create_graph` it records a graph of its own (higher-order gradients).
/// The rule owns the gradient: the operators, given a tensor no one else
/// holds, write their result over it (most of a chain's backward then
/// allocates nothing).
pub(crate) type Rule<T> = dyn Fn(&Ctx<'_, T>, Tensor<T>) -> Grads<T> + Send + Sync;

/// Where the gradient of one input goes.
pub(crate) enum Edge<T: Float> {
    /// The input needs no gradient.
    None,
    /// The input is a non-leaf: its gradient goes on to its node.
    Node(Arc<Node<T>>),
    /// The input is a leaf that requires grad. Weak, so that a gradient made
    /// with `create_graph` and stored in the leaf's `.grad` does not keep
    /// the leaf alive through its own graph.
    Leaf(Weak<TensorImpl<T>>),
}

/// A value saved for backward: its data, plus what is needed to check that
/// nobody wrote to it in place and to re-attach it to the graph.
pub(crate) struct Saved<T: Float> {
    /// The op that saved it, by its node's name.
    op: &'static str,
    pub(crate) role: Role,
    data: SavedData<T>,
    /// The tensor whose data this is, to compare versions on unpack.
    owner: Weak<TensorImpl<T>>,
    version: u64,
}

/// How a saved value's data is kept.
enum SavedData<T: Float> {
    /// As it is.
    Held(Held<T>),
    /// As the hook in scope at the save packed it.
    Packed {
        hook: Arc<dyn SaveHook>,
        packed: Arc<Packed>,
        /// The shape saved, which the unpacked value must have.
        shape: Dims,
    },
}

impl<T: Float> Clone for Saved<T> {
    fn clone(&self) -> Self {
        let data = match &self.data {
            SavedData::Held(held) => SavedData::Held(held.clone()),
            SavedData::Packed { hook, packed, shape } => SavedData::Packed {
                hook: hook.clone(),
                packed: packed.clone(),
                shape: shape.clone(),
            },
        };
        Saved {
            op: self.op,
            role: self.role,
            data,
            owner: self.owner.clone(),
            version: self.version,
        }
    }
}

impl<T: Float> Saved<T> {
    /// Saves `value` (the data of `owner` at `version`) as `role` of the op
    /// `op`, through the innermost saved-value hook of this thread if any.
    pub(crate) fn new(
        op: &'static str,
        role: Role,
        value: Value<T>,
        owner: Weak<TensorImpl<T>>,
        version: u64,
    ) -> Self {
        let held = Held::new(value);
        let data = match hooks::innermost() {
            None => SavedData::Held(held),
            Some(hook) => {
                let info = SaveInfo {
                    op,
                    role,
                    dtype: T::DTYPE,
                    shape: &held.value.shape,
                };
                match hook.pack(&held, &info) {
                    Some(packed) => SavedData::Packed {
                        hook,
                        packed: Arc::new(packed),
                        shape: held.value.shape.clone(),
                    },
                    None => SavedData::Held(held),
                }
            }
        };
        Saved {
            op,
            role,
            data,
            owner,
            version,
        }
    }

    /// `t`'s current data, saved as `role` of `op`.
    pub(crate) fn of(op: &'static str, role: Role, t: &Tensor<T>) -> Self {
        Saved::new(
            op,
            role,
            t.value(),
            Arc::downgrade(&t.inner),
            t.inner.version.load(Ordering::Acquire),
        )
    }

    /// Whether reading the data means asking a hook (which may cost a
    /// re-run: a rule reads such a value once).
    pub(crate) fn is_packed(&self) -> bool {
        matches!(self.data, SavedData::Packed { .. })
    }

    /// The data, after checking that nobody wrote to it in place; packed
    /// data comes back through its hook's `unpack`. `reader` names the
    /// reader in messages.
    pub(crate) fn value(&self, reader: &str) -> Value<T> {
        self.check_version(reader);
        match &self.data {
            SavedData::Held(held) => held.value.clone(),
            SavedData::Packed { hook, packed, shape } => {
                let info = SaveInfo {
                    op: self.op,
                    role: self.role,
                    dtype: T::DTYPE,
                    shape,
                };
                let held = hook.unpack(packed, &info);
                let value = value_of::<T>(&*held, reader);
                assert!(
                    value.shape == *shape,
                    "{reader}: the unpack hook returned a value of shape {:?} for the saved {} of shape {:?}",
                    value.shape.as_slice(),
                    self.role,
                    shape.as_slice()
                );
                value
            }
        }
    }

    /// Panics (naming the reader `op`) if someone wrote to the value in
    /// place since it was saved.
    pub(crate) fn check_version(&self, op: &str) {
        if let Some(owner) = self.owner.upgrade() {
            let now = owner.version.load(Ordering::Acquire);
            if now != self.version {
                panic!(
                    "{op}: one of the values needed for gradient computation has been modified by \
                     an inplace operation: its {} of shape {:?} is at version {now}; expected \
                     version {}",
                    self.role,
                    owner.shape.as_slice(),
                    self.version
                );
            }
        }
    }
}

/// One saved value as a printout shows it.
pub(crate) struct SavedSummary {
    pub(crate) role: Role,
    pub(crate) dtype: &'static str,
    pub(crate) shape: Dims,
    /// The bytes of the buffer held; `None` when a hook packed it.
    pub(crate) bytes: Option<usize>,
    /// What packed it (`"checkpoint #3"`), if a hook did.
    pub(crate) packed_by: Option<String>,
}

impl<T: Float> Saved<T> {
    fn summary(&self) -> SavedSummary {
        let (bytes, packed_by, shape) = match &self.data {
            SavedData::Held(held) => (Some(held.value.buf.bytes()), None, held.value.shape.clone()),
            SavedData::Packed { hook, shape, .. } => (None, Some(hook.label()), shape.clone()),
        };
        SavedSummary {
            role: self.role,
            dtype: T::DTYPE,
            shape,
            bytes,
            packed_by,
        }
    }
}

/// The saved values of a node; `None` once a backward without
/// `retain_graph` has run through it (and dropped them).
type SavedValues<T> = Option<SmallVec<[Saved<T>; 1]>>;

/// The id of the next node made (checkpoint scopes read it when they open).
pub(crate) static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A recorded op. The rule lives in the node's own allocation (`R` is the
/// closure's type until the node is made, `dyn` after).
pub(crate) struct Node<T: Float, R: ?Sized = Rule<T>> {
    /// Process-wide creation order.
    pub(crate) id: u64,
    pub(crate) name: &'static str,
    pub(crate) edges: SmallVec<[Edge<T>; 2]>,
    pub(crate) out_shape: Dims,
    /// Where the forward op was called, recorded in anomaly mode only.
    pub(crate) origin: Option<&'static Location<'static>>,
    saved: Mutex<SavedValues<T>>,
    rule: R,
}

// Unwind safety. Every tensor reaches its node, and the node's rule is a
// `dyn Fn`, which the compiler cannot know to be `RefUnwindSafe`: without
// this impl neither is `Tensor`, and `catch_unwind(|| loss.backward())` does
// not compile. It is asserted here, for the node alone (the compiler still
// checks everything else a tensor holds), because a panic cannot leave a
// node half-changed: its fields are set once, when it is made, except the
// saved values, which sit behind a lock taken only to look or to swap them
// whole (`crate::sync` ignores its poison for that reason; a backward that
// panics leaves them as they were, or freed). A rule reads what it
// captured and never writes to it; what a user's closure captures (a
// `CustomOp`, a checkpointed function) is the user's own state, as in any
// closure given to `catch_unwind`.
impl<T: Float> std::panic::RefUnwindSafe for Node<T> {}

impl<T: Float> Node<T> {
    /// What the node saved (`None`: freed by a backward).
    pub(crate) fn saved_summary(&self) -> Option<Vec<SavedSummary>> {
        self.saved_lock()
            .as_ref()
            .map(|values| values.iter().map(Saved::summary).collect())
    }

    /// The saved values, locked only for a look or a swap (never while a
    /// rule or a checkpoint's re-run runs).
    fn saved_lock(&self) -> MutexGuard<'_, SavedValues<T>> {
        lock(&self.saved)
    }

    /// Runs the rule on `grad`. With `free`, the saved values are released
    /// once the rule is done (a backward without `retain_graph`).
    pub(crate) fn apply(self: &Arc<Self>, grad: Tensor<T>, free: bool) -> Grads<T> {
        let grads = (self.rule)(
            &Ctx {
                node: self,
                unpacked: RefCell::default(),
            },
            grad,
        );
        assert!(
            grads.len() == self.edges.len(),
            "{}: the backward rule returned {} gradients for {} inputs",
            self.name,
            grads.len(),
            self.edges.len()
        );
        if free {
            let values = self.saved_lock().take();
            drop(values);
        }
        grads
    }
}

impl<T: Float, R: ?Sized> Drop for Node<T, R> {
    /// Unlinks the graph below with a loop instead of recursion, so that
    /// dropping a graph of a million ops needs no deep stack, whatever its
    /// shape (chains, an input used twice, diamonds, shared subgraphs).
    fn drop(&mut self) {
        if self.edges.iter().any(|e| matches!(e, Edge::Node(_))) {
            unlink(&mut self.edges);
        }
    }
}

/// Moves every input node out of `edges` onto `list` (leaf edges are weak
/// and stay).
fn take_inputs<T: Float>(edges: &mut SmallVec<[Edge<T>; 2]>, list: &mut Vec<Arc<Node<T>>>) {
    for edge in edges.iter_mut() {
        if matches!(edge, Edge::Node(_)) {
            if let Edge::Node(n) = std::mem::replace(edge, Edge::None) {
                list.push(n);
            }
        }
    }
}

/// The nodes the drop loop running on this thread has yet to unlink.
struct Unlinking<T: Float> {
    running: bool,
    nodes: Vec<Arc<Node<T>>>,
}

impl<T: Float> Unlinking<T> {
    const fn new() -> Self {
        Unlinking {
            running: false,
            nodes: Vec::new(),
        }
    }
}

thread_local! {
    static UNLINKING_F32: RefCell<Unlinking<f32>> = const { RefCell::new(Unlinking::new()) };
    static UNLINKING_F64: RefCell<Unlinking<f64>> = const { RefCell::new(Unlinking::new()) };
}

/// `f` on this thread's [`Unlinking`] list of `T`; `None` while the thread's
/// locals are being destroyed. `f` must drop no node (a drop would need the
/// list).
fn with_unlinking<T: Float, R>(f: impl FnOnce(&mut Unlinking<T>) -> R) -> Option<R> {
    fn on<U: Float, T: Float, R>(
        key: &'static std::thread::LocalKey<RefCell<Unlinking<U>>>,
        f: impl FnOnce(&mut Unlinking<T>) -> R,
    ) -> Option<R> {
        key.try_with(|cell| {
            let mut list = cell.try_borrow_mut().ok()?;
            (&mut *list as &mut dyn Any).downcast_mut::<Unlinking<T>>().map(f)
        })
        .ok()
        .flatten()
    }
    match TypeId::of::<T>() == TypeId::of::<f32>() {
        true => on(&UNLINKING_F32, f),
        false => on(&UNLINKING_F64, f),
    }
}

/// Drops the input nodes in `edges` and every node only they kept alive,
/// one at a time.
///
/// A node is emptied of its input edges before it is dropped, so its own
/// drop has nothing to follow; whatever else its drop releases (a saved
/// checkpoint frame, a tensor a custom op held) may drop nodes in turn, and
/// those hand their inputs to the loop already running on this thread. A
/// node still held elsewhere is only released: its last holder, maybe a
/// later entry of the list, unlinks it. So the stack never grows with the
/// graph, and a graph that lives on costs no walk.
fn unlink<T: Float>(edges: &mut SmallVec<[Edge<T>; 2]>) {
    let start = with_unlinking::<T, _>(|u| {
        take_inputs(edges, &mut u.nodes);
        !std::mem::replace(&mut u.running, true)
    });
    match start {
        Some(false) => {} // handed over to the running loop
        Some(true) => {
            // Popped with its inputs moved onto the list, then dropped
            // outside the list's borrow (the drop may add to the list).
            let next = || {
                with_unlinking::<T, _>(|u| {
                    let mut node = u.nodes.pop()?;
                    if let Some(node) = Arc::get_mut(&mut node) {
                        take_inputs(&mut node.edges, &mut u.nodes);
                    }
                    Some(node)
                })
                .flatten()
            };
            while let Some(node) = next() {
                drop(node);
            }
            with_unlinking::<T, _>(|u| {
                u.running = false;
                u.nodes.shrink_to(1024);
            });
        }
        None => {
            // The thread is exiting: a list of our own.
            let mut stack = Vec::new();
            take_inputs(edges, &mut stack);
            while let Some(mut node) = stack.pop() {
                if let Some(node) = Arc::get_mut(&mut node) {
                    take_inputs(&mut node.edges, &mut stack);
                }
            }
        }
    }
}

/// What a backward rule reads its saved values through.
pub(crate) struct Ctx<'a, T: Float> {
    node: &'a Arc<Node<T>>,
    /// Values this rule has had unpacked by a hook, so that a rule reading
    /// one twice asks once (a checkpoint's hook re-runs its scope). Kept
    /// here, not in the node: they go when the rule is done, even under
    /// `retain_graph`.
    unpacked: RefCell<Unpacked<T>>,
}

/// Values unpacked during one rule, by role.
type Unpacked<T> = SmallVec<[(Role, Value<T>); 1]>;

impl<T: Float> Ctx<'_, T> {
    /// Whether input `i` gets a gradient (rules may skip work for the rest).
    pub(crate) fn needs_grad(&self, i: usize) -> bool {
        !matches!(self.node.edges[i], Edge::None)
    }

    /// The value saved as input `i`.
    pub(crate) fn input(&self, i: usize) -> Tensor<T> {
        self.unpack(Some(Role::Input(i)))
    }

    /// The saved output.
    pub(crate) fn output(&self) -> Tensor<T> {
        self.unpack(Some(Role::Output))
    }

    /// The one value an op saved, whatever its role (for unary ops, so that
    /// their rule need not carry which one it was).
    pub(crate) fn only_saved(&self) -> Tensor<T> {
        self.unpack(None)
    }

    /// The value saved as `wanted` (`None`: the first one saved).
    fn unpack(&self, wanted: Option<Role>) -> Tensor<T> {
        let name = self.node.name;
        // Held values are read under the lock; a packed one is unpacked
        // after it (its hook may re-run a checkpoint, which records ops).
        let (role, read) = {
            let state = self.node.saved_lock();
            let Some(values) = state.as_ref() else {
                panic!(
                    "{name}: trying to backward through the graph a second time, but its saved \
                     values were already freed; pass retain_graph: true (BackwardOptions or \
                     GradOptions) to the first backward if you need to backward through it again"
                )
            };
            let s = match wanted {
                Some(role) => values.iter().find(|s| s.role == role),
                None => values.first(),
            };
            let s = s.unwrap_or_else(|| panic!("{name}: internal error: {wanted:?} was not saved"));
            let before = self
                .unpacked
                .borrow()
                .iter()
                .find(|u| u.0 == s.role)
                .map(|u| u.1.clone());
            let read = match before {
                Some(value) => {
                    s.check_version(name);
                    Ok(value)
                }
                None if s.is_packed() => Err(s.clone()),
                None => Ok(s.value(name)),
            };
            (s.role, read)
        };
        let value = read.unwrap_or_else(|s| {
            let value = s.value(name);
            self.unpacked.borrow_mut().push((role, value.clone()));
            value
        });
        if !is_grad_enabled() {
            return Tensor::from_value(value);
        }
        // create_graph: re-attach the value to the graph, so that the rule's
        // own ops record edges to where the value came from.
        match role {
            Role::Output => Tensor::with_node(value, self.node.clone()),
            Role::Input(i) => match &self.node.edges[i] {
                Edge::Node(n) => Tensor::with_node(value, n.clone()),
                Edge::Leaf(w) => match w.upgrade() {
                    Some(leaf) => Tensor { inner: leaf },
                    None => Tensor::from_value(value),
                },
                Edge::None => Tensor::from_value(value),
            },
        }
    }
}

/// Counts `t`'s buffer in `memory::saved_bytes` while saved: for a
/// constant an op made only for its backward (dropout's mask).
pub(crate) fn mark_graph_memory<T: Float>(t: &Tensor<T>) {
    t.value().buf.countable.store(true, Ordering::Relaxed);
}

/// Whether an op on `inputs` is recorded now. Every op asks before it
/// reads its inputs, so a checkpoint's forward learns here what it reads.
pub(crate) fn should_record<T: Float>(inputs: &[&Tensor<T>]) -> bool {
    hooks::note_reads(inputs);
    is_grad_enabled() && inputs.iter().any(|t| t.requires_grad())
}

/// Wraps an op's result: a leaf when nothing is recorded, else a non-leaf
/// tensor with a new node holding the values `saves` names and `rule`. In
/// anomaly mode the node also keeps where the op was called (every op up
/// to here is `#[track_caller]`).
#[track_caller]
pub(crate) fn record<T: Float>(
    name: &'static str,
    inputs: &[&Tensor<T>],
    out: Value<T>,
    saves: &[Role],
    rule: impl Fn(&Ctx<'_, T>, Tensor<T>) -> Grads<T> + Send + Sync + 'static,
) -> Tensor<T> {
    if !should_record(inputs) {
        return Tensor::from_value(out);
    }
    let origin = match anomaly_checks() {
        true => Some(Location::caller()),
        false => None,
    };
    // A buffer the op made (not a view of an input's) is graph memory.
    if !inputs.iter().any(|t| t.uses_buffer(&out.buf)) {
        out.buf.countable.store(true, Ordering::Relaxed);
    }
    let mut edges = SmallVec::new();
    for t in inputs {
        edges.push(t.edge());
    }
    let out_shape = dims(&out.shape);
    let inner = Arc::new_cyclic(|me: &Weak<TensorImpl<T>>| {
        let mut values = SmallVec::new();
        for s in saves {
            values.push(match s {
                Role::Input(i) => Saved::of(name, Role::Input(*i), inputs[*i]),
                Role::Output => Saved::new(name, Role::Output, out.clone(), me.clone(), 0),
            });
        }
        let node: Arc<Node<T>> = Arc::new(Node {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name,
            edges,
            out_shape,
            origin,
            saved: Mutex::new(Some(values)),
            rule,
        });
        TensorImpl::new(out, Some(node), true)
    });
    Tensor { inner }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CustomOp;
    use ndarray::ArrayD;

    /// y = x, holding a tensor with history: dropping its node drops that
    /// tensor's graph from inside a node's drop.
    struct Holding(#[allow(dead_code)] Tensor<f64>);

    impl CustomOp<f64> for Holding {
        fn name(&self) -> &str {
            "Holding"
        }
        fn forward(&self, x: &[ArrayD<f64>]) -> ArrayD<f64> {
            x[0].clone()
        }
        fn backward(&self, _: &[ArrayD<f64>], _: &ArrayD<f64>, g: &ArrayD<f64>) -> Vec<Option<ArrayD<f64>>> {
            vec![Some(g.clone())]
        }
    }

    #[test]
    fn drops_inside_a_drop_are_unlinked_before_the_loop_ends() {
        let leaf = Tensor::<f64>::ones(&[1]).set_requires_grad(true);
        let mut h = leaf.clone();
        let mut weak = Vec::new();
        for _ in 0..50 {
            let held = &h * 2.0;
            weak.push(Arc::downgrade(held.inner.node.as_ref().unwrap()));
            h = Tensor::apply_op(Arc::new(Holding(held)), &[&h + 0.0]);
        }
        drop(h);
        assert!(weak.iter().all(|w| w.upgrade().is_none()), "every node is freed");
        let idle = with_unlinking::<f64, _>(|u| !u.running && u.nodes.is_empty());
        assert_eq!(idle, Some(true), "the loop ended with its list empty");
    }
}
