//! Backward: a reverse topological walk of the tape.
//!
//! Start from the roots; nodes run newest first, so that a node runs after
//! every node that feeds it gradient. Running a node applies its backward
//! rule and hands each input's gradient down its edge: summed into the next
//! node's pending gradient, or into a leaf's `.grad`.
//!
//! Nothing recurses, so a graph of a million ops backwards on a small stack.
//! No global lock is held, so a backward may start inside a backward.

use crate::autograd::hooks::{observing, report, BackwardScope, NodeRun};
use crate::autograd::mode::anomaly_checks;
use crate::autograd::mode::GradModeGuard;
use crate::autograd::node::{Edge, Grads, Node};
use crate::autograd::tensor_hooks::{any_watched, made_by, prune};
use crate::tensor::{accumulate, Tensor, TensorImpl};
use crate::Float;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// Options for [`Tensor::backward_opts`].
///
/// ```
/// use tapegrad::prelude::*;
/// let x = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).set_requires_grad(true);
/// let y = &x * &x;
/// let opts = BackwardOptions { grad: Some(Tensor::ones(&[2])), retain_graph: true, ..Default::default() };
/// y.backward_opts(opts.clone());
/// y.backward_opts(opts); // the graph was kept: a second backward adds up
/// assert_eq!(x.grad().unwrap().to_vec(), vec![4.0, 8.0]); // 2 · 2x
/// ```
#[derive(Clone, Debug)]
pub struct BackwardOptions<T: Float = f32> {
    /// The gradient of the output (`None`: ones, for a one-element output).
    pub grad: Option<Tensor<T>>,
    /// Keep the saved values so that the graph can be backwarded again.
    pub retain_graph: bool,
    /// Record the backward itself, so that gradients can be differentiated
    /// again (implies `retain_graph`).
    pub create_graph: bool,
}

impl<T: Float> Default for BackwardOptions<T> {
    fn default() -> Self {
        BackwardOptions {
            grad: None,
            retain_graph: false,
            create_graph: false,
        }
    }
}

/// Options for [`grad`].
///
/// ```
/// use tapegrad::prelude::*;
/// let x = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).set_requires_grad(true);
/// let y = &x * 3.0; // two elements: the gradient of y is given
/// let opts = GradOptions { grad_outputs: Some(vec![Tensor::from_vec(vec![1.0, 10.0], &[2])]), ..Default::default() };
/// let dx = tapegrad::grad(&[y], &[x], opts);
/// assert_eq!(dx[0].as_ref().unwrap().to_vec(), vec![3.0, 30.0]);
/// ```
#[derive(Clone, Debug)]
pub struct GradOptions<T: Float = f32> {
    /// One gradient per output (`None`: ones, for one-element outputs).
    pub grad_outputs: Option<Vec<Tensor<T>>>,
    /// Keep the saved values so that the graph can be backwarded again.
    pub retain_graph: bool,
    /// Make the returned gradients differentiable (implies `retain_graph`).
    pub create_graph: bool,
}

impl<T: Float> Default for GradOptions<T> {
    fn default() -> Self {
        GradOptions {
            grad_outputs: None,
            retain_graph: false,
            create_graph: false,
        }
    }
}

impl<T: Float> Tensor<T> {
    /// Computes the gradient of this one-element tensor with respect to
    /// every leaf that requires grad, and adds it to their `.grad`.
    ///
    /// ```
    /// use tapegrad::prelude::*;
    /// let x = Tensor::from_vec(vec![3.0f64], &[1]).set_requires_grad(true);
    /// let y = x.powf(2.0).sum(); // y = x²
    /// y.backward();
    /// assert_eq!(x.grad().unwrap().item(), 6.0); // dy/dx = 2x
    /// ```
    ///
    /// **Panics** if the tensor has more than one element (use
    /// [`backward_with`](Tensor::backward_with)), if it does not require
    /// grad, or if the graph was already freed by a previous backward.
    #[track_caller]
    pub fn backward(&self) {
        self.backward_opts(BackwardOptions::default());
    }

    /// Backward with an explicit gradient of this tensor (same shape): the
    /// leaves get the vector-Jacobian product `gradᵀ · ∂self/∂leaf`.
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).set_requires_grad(true);
    /// let y = &x * &x; // y = x², not one element
    /// y.backward_with(&Tensor::from_vec(vec![1.0, 0.5], &[2]));
    /// assert_eq!(x.grad().unwrap().to_vec(), vec![2.0, 2.0]); // g · 2x
    /// ```
    ///
    /// **Panics** if `grad`'s shape is not this tensor's, if this tensor
    /// does not require grad, or if the graph was already freed by a
    /// previous backward.
    #[track_caller]
    pub fn backward_with(&self, grad: &Tensor<T>) {
        self.backward_opts(BackwardOptions {
            grad: Some(grad.clone()),
            ..Default::default()
        });
    }

    /// Backward with [`BackwardOptions`].
    ///
    /// ```
    /// use tapegrad::prelude::*;
    /// let x = Tensor::from_vec(vec![3.0f64], &[1]).set_requires_grad(true);
    /// let y = x.powf(3.0).sum(); // y = x³
    /// y.backward_opts(BackwardOptions { create_graph: true, ..Default::default() });
    /// let dy = x.grad().unwrap(); // 3x², itself differentiable
    /// assert_eq!(dy.item(), 27.0);
    /// let d2y = tapegrad::grad(&[dy.sum()], &[x.clone()], GradOptions::default());
    /// assert_eq!(d2y[0].as_ref().unwrap().item(), 18.0); // 6x
    /// ```
    ///
    /// **Panics** as [`backward`](Tensor::backward) without `grad`, as
    /// [`backward_with`](Tensor::backward_with) with it.
    #[track_caller]
    pub fn backward_opts(&self, opts: BackwardOptions<T>) {
        let seed = root_grad("backward", self, opts.grad, "backward_with");
        run(
            std::slice::from_ref(self),
            vec![seed],
            opts.retain_graph || opts.create_graph,
            opts.create_graph,
            None,
        );
    }
}

/// The gradients of `outputs` with respect to `inputs`, without touching any
/// leaf's `.grad` (a non-leaf that [retains its gradient](Tensor::retain_grad)
/// gets it, as in PyTorch). `None` for an input that the outputs do not
/// depend on. An input may be an intermediate result (a non-leaf), whose
/// `.grad` stays `None` after a plain backward:
///
/// ```
/// use tapegrad::prelude::*;
/// let x = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).set_requires_grad(true);
/// let h = x.exp(); // intermediate
/// let y = h.sin().sum();
/// let dh = tapegrad::grad(&[y], &[h.clone()], GradOptions::default())[0].clone().unwrap();
/// assert_eq!(dh.to_vec(), h.cos().to_vec()); // dy/dh = cos(h)
/// ```
///
/// ```
/// use tapegrad::prelude::*;
/// let x = Tensor::from_vec(vec![2.0f64], &[1]).set_requires_grad(true);
/// let y = x.powf(3.0).sum(); // y = x³
/// let opts = GradOptions { create_graph: true, ..Default::default() };
/// let dy = tapegrad::grad(&[y], &[x.clone()], opts)[0].clone().unwrap();
/// assert_eq!(dy.item(), 12.0); // 3x²
/// let d2y = tapegrad::grad(&[dy.sum()], &[x.clone()], GradOptions::default())[0].clone().unwrap();
/// assert_eq!(d2y.item(), 12.0); // 6x
/// assert!(x.grad().is_none());
/// ```
///
/// **Panics** if an output or an input does not require grad, or if
/// `grad_outputs` has the wrong length or shapes.
#[track_caller]
pub fn grad<T: Float>(
    outputs: &[Tensor<T>],
    inputs: &[Tensor<T>],
    opts: GradOptions<T>,
) -> Vec<Option<Tensor<T>>> {
    if let Some(g) = &opts.grad_outputs {
        assert!(
            g.len() == outputs.len(),
            "grad: {} grad_outputs for {} outputs (give one gradient per output, or None)",
            g.len(),
            outputs.len()
        );
    }
    for (i, x) in inputs.iter().enumerate() {
        assert!(
            x.requires_grad(),
            "grad: input {i} (shape {:?}) does not require grad, so no gradient flows to it; call \
             `set_requires_grad(true)` on it before the forward",
            x.shape()
        );
    }
    // A loop, not a closure: `#[track_caller]` does not reach into one.
    let mut seeds = Vec::with_capacity(outputs.len());
    for (i, y) in outputs.iter().enumerate() {
        let g = opts.grad_outputs.as_ref().map(|g| g[i].clone());
        seeds.push(root_grad("grad", y, g, "grad_outputs"));
    }
    run(
        outputs,
        seeds,
        opts.retain_graph || opts.create_graph,
        opts.create_graph,
        Some(inputs),
    )
    .expect("targets given")
}

/// The gradient a backward from `root` starts with: `grad`, or ones for
/// a one-element root.
///
/// **Panics**, naming `op`, if `root` needs no grad or `grad` does not fit.
#[track_caller]
pub(crate) fn root_grad<T: Float>(
    op: &str,
    root: &Tensor<T>,
    grad: Option<Tensor<T>>,
    explicit: &str,
) -> Tensor<T> {
    assert!(
        root.requires_grad(),
        "{op}: the tensor (shape {:?}) does not require grad and has no grad_fn: nothing to \
         differentiate; call `set_requires_grad(true)` on the leaves before the forward",
        root.shape()
    );
    match grad {
        Some(g) => {
            assert!(
                g.shape() == root.shape(),
                "{op}: the gradient has shape {:?} but the output has shape {:?}",
                g.shape(),
                root.shape()
            );
            g
        }
        None => {
            assert!(
                root.numel() == 1,
                "{op}: the output has shape {:?}; an implicit gradient exists only for one-element \
                 outputs, pass it explicitly with {explicit} (or reduce the output first, e.g. with sum())",
                root.shape()
            );
            Tensor::ones(root.shape())
        }
    }
}

/// A fast hasher for pointer and id keys (the std SipHash costs more than
/// the work per node on small graphs).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type KeyMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;
type KeySet<K> = HashSet<K, BuildHasherDefault<KeyHasher>>;

/// A node waiting to run, and the gradient summed for it so far.
type PendingNode<T> = (Arc<Node<T>>, Option<Tensor<T>>);

/// The nodes that have received gradient and not run yet, newest first.
/// A map and a heap rather than a `BTreeMap`: both keep their allocations
/// when they empty, which a chain does at every node. While only one node
/// is pending (a chain's whole walk), it waits in `solo` instead, with no
/// hashing or heap.
struct Frontier<T: Float> {
    solo: Option<PendingNode<T>>,
    pending: KeyMap<u64, PendingNode<T>>,
    order: BinaryHeap<u64>,
}

impl<T: Float> Default for Frontier<T> {
    fn default() -> Self {
        Frontier {
            solo: None,
            pending: KeyMap::default(),
            order: BinaryHeap::new(),
        }
    }
}

impl<T: Float> Frontier<T> {
    /// Adds `g` to the gradient pending for `node`.
    fn add(&mut self, node: &Arc<Node<T>>, g: Tensor<T>, create_graph: bool) {
        if self.pending.is_empty() {
            match &mut self.solo {
                None => {
                    self.solo = Some((node.clone(), Some(g)));
                    return;
                }
                Some((n, acc)) if n.id == node.id => {
                    accumulate(acc, g, create_graph);
                    return;
                }
                Some(_) => {
                    let (n, acc) = self.solo.take().expect("matched Some");
                    self.order.push(n.id);
                    self.pending.insert(n.id, (n, acc));
                }
            }
        }
        match self.pending.entry(node.id) {
            Entry::Occupied(mut e) => accumulate(&mut e.get_mut().1, g, create_graph),
            Entry::Vacant(e) => {
                e.insert((node.clone(), Some(g)));
                self.order.push(node.id);
            }
        }
    }

    /// The id of the node that runs next, if any.
    fn newest_id(&self) -> Option<u64> {
        match &self.solo {
            Some((n, _)) => Some(n.id),
            None => self.order.peek().copied(),
        }
    }

    /// The newest pending node and its gradient.
    fn pop_newest(&mut self) -> Option<(Arc<Node<T>>, Tensor<T>)> {
        let (node, grad) = match self.solo.take() {
            Some(solo) => solo,
            None => {
                let id = self.order.pop()?;
                self.pending.remove(&id)?
            }
        };
        Some((node, grad.expect("a pending node has a gradient")))
    }
}

/// The walk. With `targets`, returns their gradients and leaves `.grad`
/// alone; without, accumulates into the leaves' `.grad`.
///
/// Nodes run in decreasing creation order (as PyTorch's engine orders
/// them): a node is created after the nodes of its inputs, so every node
/// that can send gradient to a node runs before it, and no dependency
/// counting (no pass over the whole graph) is needed. Only the frontier,
/// the nodes holding gradient, is kept: a chain of a million ops walks with
/// one pending node at a time.
fn run<T: Float>(
    roots: &[Tensor<T>],
    seeds: Vec<Tensor<T>>,
    retain_graph: bool,
    create_graph: bool,
    targets: Option<&[Tensor<T>]>,
) -> Option<Vec<Option<Tensor<T>>>> {
    let _mode = GradModeGuard::new(create_graph);
    let _scope = BackwardScope::begin();
    if any_watched() {
        prune();
    }

    // Targets: leaves by their handle, non-leaves by their node.
    let mut results: Option<Vec<Option<Tensor<T>>>> = targets.map(|t| vec![None; t.len()]);
    let mut leaf_targets: KeyMap<usize, Vec<usize>> = KeyMap::default();
    let mut node_targets: KeyMap<u64, Vec<usize>> = KeyMap::default();
    for (i, t) in targets.unwrap_or(&[]).iter().enumerate() {
        match &t.inner.node {
            Some(n) => node_targets.entry(n.id).or_default().push(i),
            None => leaf_targets
                .entry(Arc::as_ptr(&t.inner) as usize)
                .or_default()
                .push(i),
        }
    }
    // For grad(): the nodes from which a target can be reached; others
    // need not run.
    let needed = targets.map(|_| needed_nodes(roots, &node_targets, &leaf_targets));

    // Leaves with hooks get their gradient summed over the backward first,
    // then hooked, then delivered, as soon as every node that uses them has
    // run (PyTorch's AccumulateGrad): so that a hook can start work on a
    // gradient (an all-reduce) while the rest of backward runs.
    let mut hooked = HookedLeaves::default();
    if any_watched() {
        hooked.last_use = last_uses(roots);
    }
    let mut frontier = Frontier::default();
    for (root, seed) in roots.iter().zip(seeds) {
        match &root.inner.node {
            Some(n) => frontier.add(n, seed, create_graph),
            None => {
                if let Some(seed) = hooked.take(&root.inner, seed, create_graph) {
                    deliver_to_leaf(&root.inner, seed, create_graph, &leaf_targets, &mut results);
                }
            }
        }
    }
    loop {
        hooked.deliver_complete(frontier.newest_id(), create_graph, &leaf_targets, &mut results);
        let Some((node, grad)) = frontier.pop_newest() else {
            break;
        };
        let id = node.id;
        let grad = match any_watched() {
            true => node_hooks(&node, grad, create_graph),
            false => grad,
        };
        if let (Some(res), Some(ts)) = (&mut results, node_targets.get(&id)) {
            for &t in ts {
                res[t] = Some(grad.clone());
            }
        }
        if needed.as_ref().is_some_and(|n| !n.contains(&id)) {
            continue;
        }
        if observing() {
            let grad_norm = grad
                .to_vec()
                .iter()
                .map(|x| x.as_f64() * x.as_f64())
                .sum::<f64>()
                .sqrt();
            report(&NodeRun {
                op: node.name,
                grad_shape: grad.shape(),
                grad_norm,
            });
        }
        let grads = node.apply(grad, !retain_graph);
        if anomaly_checks() {
            check_for_nan(&node, &grads);
        }
        for (k, (edge, g)) in node.edges.iter().zip(grads).enumerate() {
            let Some(g) = g else { continue };
            check_grad_shape(&node, k, edge, &g);
            match edge {
                Edge::Node(child) => frontier.add(child, g, create_graph),
                Edge::Leaf(leaf) => {
                    if let Some(leaf) = leaf.upgrade() {
                        if let Some(g) = hooked.take(&leaf, g, create_graph) {
                            deliver_to_leaf(&leaf, g, create_graph, &leaf_targets, &mut results);
                        }
                    }
                }
                Edge::None => {}
            }
        }
    }
    results
}

/// The gradient a node received, after the hooks of the tensor it made.
fn node_hooks<T: Float>(node: &Node<T>, grad: Tensor<T>, create_graph: bool) -> Tensor<T> {
    match made_by::<T>(node.id) {
        Some(out) if out.is_watched() => out.run_hooks(grad, create_graph),
        _ => grad,
    }
}

/// The gradients of hooked leaves, summed over one backward until every
/// node that uses them has run.
struct HookedLeaves<T: Float> {
    /// By leaf address: the id of the oldest node that uses it, the last
    /// to run (filled only while some tensor is watched).
    last_use: KeyMap<usize, u64>,
    index: KeyMap<usize, usize>,
    /// Taken (`None`) once delivered.
    leaves: Vec<Option<HookedLeaf<T>>>,
    /// The leaves not yet delivered, by last use, latest first.
    waiting: BinaryHeap<(u64, usize)>,
}

impl<T: Float> Default for HookedLeaves<T> {
    fn default() -> Self {
        HookedLeaves {
            last_use: KeyMap::default(),
            index: KeyMap::default(),
            leaves: Vec::new(),
            waiting: BinaryHeap::new(),
        }
    }
}

/// A hooked leaf and its gradient so far.
type HookedLeaf<T> = (Arc<TensorImpl<T>>, Option<Tensor<T>>);

impl<T: Float> HookedLeaves<T> {
    /// Takes `g` for `leaf` if the leaf has hooks; gives it back if not.
    fn take(&mut self, leaf: &Arc<TensorImpl<T>>, g: Tensor<T>, create_graph: bool) -> Option<Tensor<T>> {
        if !(any_watched() && (Tensor { inner: leaf.clone() }).is_watched()) {
            return Some(g);
        }
        let key = Arc::as_ptr(leaf) as usize;
        let next = self.leaves.len();
        let i = *self.index.entry(key).or_insert(next);
        if i == next {
            self.leaves.push(Some((leaf.clone(), None)));
            // Unknown (the leaf became watched during this backward):
            // delivered when the walk ends.
            let last = self.last_use.get(&key).copied().unwrap_or(0);
            self.waiting.push((last, i));
        }
        let (_, sum) = self.leaves[i]
            .as_mut()
            .expect("a leaf is reached before it is delivered");
        accumulate(sum, g, create_graph);
        None
    }

    /// Hooks and delivers the leaves whose every user has run, given the
    /// id of the node that runs next (`None`: the walk is over). Nodes run
    /// newest first and send gradient only to older nodes, so a leaf whose
    /// oldest user is newer than the next node gets no more gradient.
    fn deliver_complete(
        &mut self,
        next: Option<u64>,
        create_graph: bool,
        leaf_targets: &KeyMap<usize, Vec<usize>>,
        results: &mut Option<Vec<Option<Tensor<T>>>>,
    ) {
        while let Some(&(last, i)) = self.waiting.peek() {
            if next.is_some_and(|n| last <= n) {
                break;
            }
            self.waiting.pop();
            let (leaf, sum) = self.leaves[i].take().expect("delivered once");
            let tensor = Tensor { inner: leaf };
            let g = tensor.run_hooks(sum.expect("summed"), create_graph);
            deliver_to_leaf(&tensor.inner, g, create_graph, leaf_targets, results);
            if results.is_none() {
                tensor.run_post_accumulate_hooks();
            }
        }
    }
}

/// For each leaf reachable from `roots`, the id of the oldest node that
/// uses it.
fn last_uses<T: Float>(roots: &[Tensor<T>]) -> KeyMap<usize, u64> {
    let mut last = KeyMap::default();
    for node in reachable(roots).into_values() {
        for edge in &node.edges {
            if let Edge::Leaf(leaf) = edge {
                let at = last.entry(leaf.as_ptr() as usize).or_insert(node.id);
                *at = (*at).min(node.id);
            }
        }
    }
    last
}

/// Every node reachable from `roots`, by id (an explicit stack, no
/// recursion).
fn reachable<T: Float>(roots: &[Tensor<T>]) -> KeyMap<u64, Arc<Node<T>>> {
    let mut seen: KeyMap<u64, Arc<Node<T>>> = KeyMap::default();
    let mut stack: Vec<Arc<Node<T>>> = roots.iter().filter_map(|r| r.inner.node.clone()).collect();
    while let Some(node) = stack.pop() {
        if seen.contains_key(&node.id) {
            continue;
        }
        for edge in &node.edges {
            if let Edge::Node(child) = edge {
                if !seen.contains_key(&child.id) {
                    stack.push(child.clone());
                }
            }
        }
        seen.insert(node.id, node);
    }
    seen
}

/// Panics, as PyTorch's anomaly mode, if a node's rule produced NaN:
/// naming the op, the input, and where the forward op was called.
fn check_for_nan<T: Float>(node: &Node<T>, grads: &Grads<T>) {
    for (i, g) in grads.iter().enumerate() {
        let Some(g) = g else { continue };
        if g.to_vec().iter().any(|x| x.is_nan()) {
            let origin = match node.origin {
                Some(at) => format!(
                    "the forward op was called at {}:{}:{}",
                    at.file(),
                    at.line(),
                    at.column()
                ),
                None => {
                    "the forward op ran outside detect_anomaly, so where it was called is unknown".to_string()
                }
            };
            panic!(
                "detect_anomaly: {} returned NaN values in its gradient for input {i} (shape {:?}); {origin}",
                node.name,
                g.shape()
            );
        }
    }
}

/// For `grad()`: the ids of the nodes that have a target among their
/// inputs, or an input node that does. A target itself need not run (its
/// gradient is read when it is reached).
fn needed_nodes<T: Float>(
    roots: &[Tensor<T>],
    node_targets: &KeyMap<u64, Vec<usize>>,
    leaf_targets: &KeyMap<usize, Vec<usize>>,
) -> KeySet<u64> {
    // Every node reachable from the roots, decided in creation order, so
    // that a node's inputs come first.
    let mut nodes: Vec<Arc<Node<T>>> = reachable(roots).into_values().collect();
    nodes.sort_unstable_by_key(|n| n.id);
    let mut needed = KeySet::default();
    for node in &nodes {
        let leads_to_target = node.edges.iter().any(|e| match e {
            Edge::Node(child) => node_targets.contains_key(&child.id) || needed.contains(&child.id),
            Edge::Leaf(leaf) => leaf_targets.contains_key(&(leaf.as_ptr() as usize)),
            Edge::None => false,
        });
        if leads_to_target {
            needed.insert(node.id);
        }
    }
    needed
}

fn check_grad_shape<T: Float>(node: &Node<T>, k: usize, edge: &Edge<T>, g: &Tensor<T>) {
    let mismatch = |expected: &[usize]| {
        panic!(
            "{}: the backward rule returned a gradient of shape {:?} for input {k} of shape {:?}",
            node.name,
            g.shape(),
            expected
        )
    };
    match edge {
        Edge::Node(child) if g.shape() != child.out_shape.as_slice() => mismatch(&child.out_shape),
        Edge::Leaf(leaf) => {
            if let Some(leaf) = leaf.upgrade() {
                if g.shape() != leaf.shape.as_slice() {
                    mismatch(&leaf.shape)
                }
            }
        }
        _ => {}
    }
}

fn deliver_to_leaf<T: Float>(
    leaf: &Arc<TensorImpl<T>>,
    g: Tensor<T>,
    create_graph: bool,
    leaf_targets: &KeyMap<usize, Vec<usize>>,
    results: &mut Option<Vec<Option<Tensor<T>>>>,
) {
    match results {
        Some(res) => {
            for &t in leaf_targets
                .get(&(Arc::as_ptr(leaf) as usize))
                .into_iter()
                .flatten()
            {
                accumulate(&mut res[t], g.clone(), create_graph);
            }
        }
        None => accumulate_into_leaf(&Tensor { inner: leaf.clone() }, g, create_graph),
    }
}

/// Adds `g` to a leaf's `.grad`. The slot stays locked during the sum, so
/// that a reader (`grad()` on another thread) sees the old gradient or the
/// new one, never an empty slot, and concurrent backwards lose nothing. The
/// sum is an elementwise add: it runs no user code and takes no other
/// gradient slot, so holding the lock cannot close a cycle.
fn accumulate_into_leaf<T: Float>(leaf: &Tensor<T>, g: Tensor<T>, create_graph: bool) {
    // A handle of its own, so that a later in-place sum into this `.grad`
    // cannot reach a tensor that someone else holds.
    let g = if create_graph { g } else { own_handle(&g) };
    accumulate(&mut leaf.grad_slot(), g, create_graph);
}

/// A handle not shared with anyone, over contiguous data.
fn own_handle<T: Float>(g: &Tensor<T>) -> Tensor<T> {
    Tensor::from_value(g.value().contiguous())
}
