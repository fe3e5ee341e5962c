//! Backward: a reverse topological walk of the tape.
//!
//! 1. Discover every node reachable from the roots with an explicit stack,
//!    counting for each node how many edges point at it (its dependencies).
//! 2. Start from the roots; a node runs once all the nodes that feed it
//!    gradient have run (its count drops to zero). Running a node applies its
//!    backward rule and hands each input's gradient down its edge: summed
//!    into the next node's buffer, or into a leaf's `.grad`.
//!
//! Nothing recurses, so a graph of a million ops backwards on a small stack.
//! No global lock is held, so a backward may start inside a backward.

use crate::autograd::checkpoint;
use crate::autograd::mode::GradModeGuard;
use crate::autograd::node::{Edge, Node};
use crate::tensor::{Tensor, TensorImpl};
use crate::Float;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// Options for [`Tensor::backward_opts`].
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
    pub fn backward(&self) {
        self.backward_opts(BackwardOptions::default());
    }

    /// Backward with an explicit gradient of this tensor (same shape).
    pub fn backward_with(&self, grad: &Tensor<T>) {
        self.backward_opts(BackwardOptions {
            grad: Some(grad.clone()),
            ..Default::default()
        });
    }

    /// Backward with [`BackwardOptions`].
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
/// `.grad`. `None` for an input that the outputs do not depend on.
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
pub fn grad<T: Float>(
    outputs: &[Tensor<T>],
    inputs: &[Tensor<T>],
    opts: GradOptions<T>,
) -> Vec<Option<Tensor<T>>> {
    if let Some(g) = &opts.grad_outputs {
        assert_eq!(
            g.len(),
            outputs.len(),
            "grad: {} grad_outputs for {} outputs",
            g.len(),
            outputs.len()
        );
    }
    for (i, x) in inputs.iter().enumerate() {
        assert!(
            x.requires_grad(),
            "grad: input {i} (shape {:?}) does not require grad",
            x.shape()
        );
    }
    let seeds = outputs
        .iter()
        .enumerate()
        .map(|(i, y)| {
            let g = opts.grad_outputs.as_ref().map(|g| g[i].clone());
            root_grad("grad", y, g, "grad_outputs")
        })
        .collect();
    run(
        outputs,
        seeds,
        opts.retain_graph || opts.create_graph,
        opts.create_graph,
        Some(inputs),
    )
    .expect("targets given")
}

fn root_grad<T: Float>(op: &str, root: &Tensor<T>, grad: Option<Tensor<T>>, explicit: &str) -> Tensor<T> {
    assert!(
        root.requires_grad(),
        "{op}: the tensor (shape {:?}) does not require grad and has no grad_fn: nothing to \
         differentiate",
        root.shape()
    );
    match grad {
        Some(g) => {
            assert_eq!(
                g.shape(),
                root.shape(),
                "{op}: the gradient has shape {:?} but the output has shape {:?}",
                g.shape(),
                root.shape()
            );
            g
        }
        None => {
            assert_eq!(
                root.numel(),
                1,
                "{op}: the output has shape {:?}; an implicit gradient exists only for one-element \
                 outputs, pass it explicitly with {explicit}",
                root.shape()
            );
            Tensor::ones(root.shape())
        }
    }
}

/// A fast hasher for pointer keys (the std SipHash costs more than the work
/// per node on small graphs).
#[derive(Default)]
struct PtrHasher(u64);

impl Hasher for PtrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type PtrMap<V> = HashMap<usize, V, BuildHasherDefault<PtrHasher>>;

struct Pending<T: Float> {
    node: Arc<Node<T>>,
    deps: usize,
    grad: Option<Tensor<T>>,
    /// For `grad()`: whether a target is reachable from here.
    needed: bool,
}

fn node_key<T: Float>(n: &Arc<Node<T>>) -> usize {
    Arc::as_ptr(n) as usize
}

/// The walk. With `targets`, returns their gradients and leaves `.grad`
/// alone; without, accumulates into the leaves' `.grad`.
fn run<T: Float>(
    roots: &[Tensor<T>],
    seeds: Vec<Tensor<T>>,
    retain_graph: bool,
    create_graph: bool,
    targets: Option<&[Tensor<T>]>,
) -> Option<Vec<Option<Tensor<T>>>> {
    let _mode = GradModeGuard::new(create_graph);
    let _session = checkpoint::Session::begin();

    // Targets: leaves by their handle, non-leaves by their node.
    let mut results: Option<Vec<Option<Tensor<T>>>> = targets.map(|t| vec![None; t.len()]);
    let mut leaf_targets: PtrMap<Vec<usize>> = PtrMap::default();
    let mut node_targets: PtrMap<Vec<usize>> = PtrMap::default();
    for (i, t) in targets.unwrap_or(&[]).iter().enumerate() {
        match &t.inner.node {
            Some(n) => node_targets.entry(node_key(n)).or_default().push(i),
            None => leaf_targets
                .entry(Arc::as_ptr(&t.inner) as usize)
                .or_default()
                .push(i),
        }
    }

    // 1. Discover the graph and count each node's dependencies.
    let mut index: PtrMap<usize> = PtrMap::default();
    let mut pending: Vec<Pending<T>> = Vec::new();
    let mut stack: Vec<Arc<Node<T>>> = Vec::new();
    for root in roots {
        if let Some(n) = &root.inner.node {
            if let std::collections::hash_map::Entry::Vacant(e) = index.entry(node_key(n)) {
                e.insert(pending.len());
                pending.push(Pending {
                    node: n.clone(),
                    deps: 0,
                    grad: None,
                    needed: true,
                });
                stack.push(n.clone());
            }
        }
    }
    while let Some(node) = stack.pop() {
        for edge in &node.edges {
            if let Edge::Node(child) = edge {
                let i = *index.entry(node_key(child)).or_insert_with(|| {
                    pending.push(Pending {
                        node: child.clone(),
                        deps: 0,
                        grad: None,
                        needed: true,
                    });
                    stack.push(child.clone());
                    pending.len() - 1
                });
                pending[i].deps += 1;
            }
        }
    }
    if targets.is_some() {
        mark_needed(&mut pending, &index, &node_targets, &leaf_targets);
    }

    // 2. Seed the roots, then run every node once its dependencies are done.
    // Ready nodes run newest first (as PyTorch's engine does), which frees
    // the most recent activations first and fixes the order of every sum.
    let mut ready: BinaryHeap<(u64, usize)> = BinaryHeap::new();
    for (root, seed) in roots.iter().zip(seeds) {
        match &root.inner.node {
            Some(n) => {
                let i = index[&node_key(n)];
                accumulate(&mut pending[i].grad, seed, create_graph);
            }
            None => deliver_to_leaf(&root.inner, seed, create_graph, &leaf_targets, &mut results),
        }
    }
    ready.extend(
        (0..pending.len())
            .filter(|&i| pending[i].deps == 0)
            .map(|i| (pending[i].node.id, i)),
    );
    while let Some((_, i)) = ready.pop() {
        let node = pending[i].node.clone();
        let grad = pending[i].grad.take();
        if let (Some(res), Some(g), Some(ts)) = (&mut results, &grad, node_targets.get(&node_key(&node))) {
            for &t in ts {
                res[t] = Some(g.clone());
            }
        }
        let grads = match grad {
            Some(g) if pending[i].needed => Some(node.apply(&g, !retain_graph)),
            _ => None,
        };
        for (k, edge) in node.edges.iter().enumerate() {
            let g = grads.as_ref().and_then(|gs| gs[k].clone());
            if let Some(g) = &g {
                check_grad_shape(&node, k, edge, g);
            }
            match edge {
                Edge::Node(child) => {
                    let c = index[&node_key(child)];
                    if let Some(g) = g {
                        accumulate(&mut pending[c].grad, g, create_graph);
                    }
                    pending[c].deps -= 1;
                    if pending[c].deps == 0 {
                        ready.push((child.id, c));
                    }
                }
                Edge::Leaf(leaf) => {
                    if let (Some(g), Some(leaf)) = (g, leaf.upgrade()) {
                        deliver_to_leaf(&leaf, g, create_graph, &leaf_targets, &mut results);
                    }
                }
                Edge::None => {}
            }
        }
    }
    results
}

/// For `grad()`: a node runs only if some target is reachable from it.
fn mark_needed<T: Float>(
    pending: &mut [Pending<T>],
    index: &PtrMap<usize>,
    node_targets: &PtrMap<Vec<usize>>,
    leaf_targets: &PtrMap<Vec<usize>>,
) {
    // A topological order (Kahn's algorithm on a copy of the counts)...
    let mut deps: Vec<usize> = pending.iter().map(|p| p.deps).collect();
    let mut order: Vec<usize> = (0..pending.len()).filter(|&i| deps[i] == 0).collect();
    let mut next = 0;
    while next < order.len() {
        let i = order[next];
        next += 1;
        for edge in &pending[i].node.edges {
            if let Edge::Node(child) = edge {
                let c = index[&node_key(child)];
                deps[c] -= 1;
                if deps[c] == 0 {
                    order.push(c);
                }
            }
        }
    }
    // ...walked backwards, so that every node's inputs are decided first. A
    // node runs if one of its inputs is a target or leads to one; a target
    // itself need not run (its gradient is read when it is ready).
    for &i in order.iter().rev() {
        let node = &pending[i].node;
        let needed = node.edges.iter().any(|e| match e {
            Edge::Node(child) => {
                node_targets.contains_key(&node_key(child)) || pending[index[&node_key(child)]].needed
            }
            Edge::Leaf(leaf) => leaf_targets.contains_key(&(leaf.as_ptr() as usize)),
            Edge::None => false,
        });
        pending[i].needed = needed;
    }
}

fn check_grad_shape<T: Float>(node: &Node<T>, k: usize, edge: &Edge<T>, g: &Tensor<T>) {
    let expected = match edge {
        Edge::Node(child) => Some(child.out_shape.clone()),
        Edge::Leaf(leaf) => leaf
            .upgrade()
            .map(|l| crate::tensor::dims(Tensor { inner: l }.shape())),
        Edge::None => None,
    };
    if let Some(expected) = expected {
        assert_eq!(
            g.shape(),
            expected.as_slice(),
            "{}: the backward rule returned a gradient of shape {:?} for input {k} of shape {:?}",
            node.name,
            g.shape(),
            expected.as_slice()
        );
    }
}

fn deliver_to_leaf<T: Float>(
    leaf: &Arc<TensorImpl<T>>,
    g: Tensor<T>,
    create_graph: bool,
    leaf_targets: &PtrMap<Vec<usize>>,
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

/// Adds `g` to a leaf's `.grad`. The slot is not locked during the sum (no
/// lock across a kernel); if another backward stored a gradient meanwhile,
/// the sum is taken again with it.
fn accumulate_into_leaf<T: Float>(leaf: &Tensor<T>, g: Tensor<T>, create_graph: bool) {
    // A handle of its own, so that a later in-place sum into this `.grad`
    // cannot reach a tensor that someone else holds.
    let mut sum = if create_graph { g } else { own_handle(&g) };
    loop {
        let mut acc = leaf.grad_slot().take();
        accumulate(&mut acc, sum, create_graph);
        let mut slot = leaf.grad_slot();
        if slot.is_none() {
            *slot = acc;
            return;
        }
        // Another backward stored a gradient meanwhile: add ours to it.
        sum = acc.expect("accumulate leaves Some");
    }
}

/// A handle not shared with anyone, over contiguous data.
fn own_handle<T: Float>(g: &Tensor<T>) -> Tensor<T> {
    Tensor::from_value(g.value().contiguous())
}

/// `acc += g`: in place when `acc`'s handle and buffer are ours alone,
/// out of place (and recorded) under `create_graph`.
pub(crate) fn accumulate<T: Float>(acc: &mut Option<Tensor<T>>, g: Tensor<T>, create_graph: bool) {
    match acc {
        None => *acc = Some(g),
        Some(a) => {
            if create_graph || !a.try_add_in_place(&g) {
                *a = &*a + &g;
            }
        }
    }
}
