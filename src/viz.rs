//! The visible tape: what was recorded ([`tape`], [`dot`]) and how backward
//! walks it ([`trace_backward`]). A client of the engine, like
//! checkpointing: it reads nodes, it does not change them.
//!
//! ```
//! use tapegrad::prelude::*;
//! let x = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).set_requires_grad(true).with_name("x");
//! let y = (&x * &x).exp().sum();
//! print!("{}", tapegrad::viz::tape(&y));
//! // x  = leaf f64[2], requires grad
//! // %1 = MulBackward(x, x) -> f64[2]; saved: input 0, input 1 (f64[2], 16 B, ...)
//! // ...
//! for step in tapegrad::viz::trace_backward(&y) {
//!     println!("{step}");
//! }
//! ```

use crate::autograd::engine::root_grad;
use crate::autograd::hooks::{observe_backward, NodeRun};
use crate::autograd::node::{Edge, Node, SavedSummary};
use crate::autograd::tensor_hooks::made_by;
use crate::tensor::TensorImpl;
use crate::{Float, Tensor};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write};
use std::rc::Rc;
use std::sync::Arc;

/// The graph behind a tensor, numbered for a reader: leaves in the order
/// first met, ops in creation order (inputs before users).
struct Graph<T: Float> {
    nodes: Vec<Arc<Node<T>>>,
    /// Node id to its position in `nodes`.
    index: HashMap<u64, usize>,
    leaves: Vec<Arc<TensorImpl<T>>>,
    leaf_index: HashMap<usize, usize>,
}

impl<T: Float> Graph<T> {
    fn of(out: &Tensor<T>) -> Self {
        let mut seen: BTreeMap<u64, Arc<Node<T>>> = BTreeMap::new();
        let mut stack: Vec<Arc<Node<T>>> = out.inner.node.iter().cloned().collect();
        while let Some(node) = stack.pop() {
            if seen.contains_key(&node.id) {
                continue;
            }
            for edge in &node.edges {
                if let Edge::Node(child) = edge {
                    stack.push(child.clone());
                }
            }
            seen.insert(node.id, node);
        }
        let nodes: Vec<Arc<Node<T>>> = seen.into_values().collect();
        let index = nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
        let mut graph = Graph {
            nodes,
            index,
            leaves: Vec::new(),
            leaf_index: HashMap::new(),
        };
        if out.inner.node.is_none() {
            graph.add_leaf(&out.inner);
        }
        for i in 0..graph.nodes.len() {
            let node = graph.nodes[i].clone();
            for edge in &node.edges {
                if let Edge::Leaf(leaf) = edge {
                    if let Some(leaf) = leaf.upgrade() {
                        graph.add_leaf(&leaf);
                    }
                }
            }
        }
        graph
    }

    fn add_leaf(&mut self, leaf: &Arc<TensorImpl<T>>) {
        let key = Arc::as_ptr(leaf) as usize;
        if !self.leaf_index.contains_key(&key) {
            self.leaf_index.insert(key, self.leaves.len());
            self.leaves.push(leaf.clone());
        }
    }

    /// A leaf's name: its own, or `leaf1`, `leaf2`, ...
    fn leaf_name(&self, i: usize) -> String {
        (Tensor {
            inner: self.leaves[i].clone(),
        })
        .name()
        .unwrap_or_else(|| format!("leaf{}", i + 1))
    }

    /// An op's name in the listing: `%3`, or the name of the tensor it made.
    fn op_name(&self, i: usize) -> String {
        let named = made_by::<T>(self.nodes[i].id).and_then(|t| t.name());
        named.unwrap_or_else(|| format!("%{}", i + 1))
    }

    /// How an op's input reads: an op, a leaf, or `const`.
    fn input_name(&self, edge: &Edge<T>) -> String {
        match edge {
            Edge::Node(n) => self.op_name(self.index[&n.id]),
            Edge::Leaf(w) => match w.upgrade() {
                Some(leaf) => self.leaf_name(self.leaf_index[&(Arc::as_ptr(&leaf) as usize)]),
                None => "(dropped leaf)".to_string(),
            },
            Edge::None => "const".to_string(),
        }
    }
}

fn shape_of<T: Float>(shape: &[usize]) -> String {
    format!("{}{:?}", T::DTYPE, shape)
}

/// The ops that lead to `out`, in creation order (for messages: what a
/// function under test computes).
#[cfg(feature = "proptest")]
pub(crate) fn op_names<T: Float>(out: &Tensor<T>) -> Vec<&'static str> {
    Graph::of(out).nodes.iter().map(|n| n.name).collect()
}

/// What a node saved, for a line of the tape: roles, shapes and bytes.
fn describe_saved(saved: &Option<Vec<SavedSummary>>) -> String {
    let Some(saved) = saved else {
        return "freed by backward".to_string();
    };
    if saved.is_empty() {
        return "nothing".to_string();
    }
    let parts: Vec<String> = saved
        .iter()
        .map(|s| {
            let what = format!("{} {}{:?}", s.role, s.dtype, s.shape.as_slice());
            match (&s.packed_by, s.bytes) {
                (Some(by), _) => format!("{what} packed by {by}"),
                (None, Some(b)) => format!("{what} {b} B"),
                (None, None) => what,
            }
        })
        .collect();
    parts.join(", ")
}

/// The checkpoint scope a node's saved values were packed by, if any.
fn scope(saved: &Option<Vec<SavedSummary>>) -> Option<String> {
    saved
        .iter()
        .flatten()
        .filter_map(|s| s.packed_by.clone())
        .find(|by| by.starts_with("checkpoint"))
}

/// The recorded ops that lead to `out`, one line each, as a Wengert list:
/// the leaves first (name or `leafN`, dtype and shape), then each op in
/// creation order (inputs before users) as `%k = Op(inputs) -> shape`,
/// with what it saved for backward (role, shape, bytes; or the hook that
/// packed it) and, inside a checkpoint, the scope.
///
/// ```
/// use tapegrad::prelude::*;
/// let w = Tensor::<f32>::ones(&[2, 2]).set_requires_grad(true).with_name("w");
/// let y = w.matmul(&w).tanh().sum();
/// let tape = tapegrad::viz::tape(&y);
/// assert!(tape.starts_with("w  = leaf f32[2, 2], requires grad\n"));
/// assert!(tape.contains("%1 = MmBackward(w, w) -> f32[2, 2]; saved: input 0 f32[2, 2] 16 B, input 1 f32[2, 2] 16 B"));
/// assert!(tape.contains("%3 = SumBackward(%2) -> f32[]"));
/// ```
pub fn tape<T: Float>(out: &Tensor<T>) -> String {
    let g = Graph::of(out);
    let names: Vec<String> = (0..g.leaves.len())
        .map(|i| g.leaf_name(i))
        .chain((0..g.nodes.len()).map(|i| g.op_name(i)))
        .collect();
    let width = names.iter().map(String::len).max().unwrap_or(0);
    let mut s = String::new();
    for (i, leaf) in g.leaves.iter().enumerate() {
        let t = Tensor { inner: leaf.clone() };
        let grad = if t.requires_grad() { ", requires grad" } else { "" };
        let _ = writeln!(
            s,
            "{:<width$} = leaf {}{grad}",
            names[i],
            shape_of::<T>(t.shape())
        );
    }
    for (i, node) in g.nodes.iter().enumerate() {
        let inputs: Vec<String> = node.edges.iter().map(|e| g.input_name(e)).collect();
        let saved = node.saved_summary();
        let scope = scope(&saved).map(|s| format!("  [{s}]")).unwrap_or_default();
        let _ = writeln!(
            s,
            "{:<width$} = {}({}) -> {}; saved: {}{scope}",
            names[g.leaves.len() + i],
            node.name,
            inputs.join(", "),
            shape_of::<T>(&node.out_shape),
            describe_saved(&saved),
        );
    }
    s
}

/// `s` as a quoted Graphviz string (`\n` in `s` stays a line break).
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\\\""))
}

/// The same graph as [`tape`], as Graphviz DOT: leaves as boxes (name,
/// dtype and shape), ops as ellipses (op, output shape, saved bytes), an
/// edge from each input to its user, checkpoint scopes as clusters.
/// Render it with `dot -Tsvg`.
///
/// ```
/// use tapegrad::prelude::*;
/// let x = Tensor::<f64>::ones(&[3]).set_requires_grad(true).with_name("x");
/// let dot = tapegrad::viz::dot(&x.exp().sum());
/// assert!(dot.starts_with("digraph tape {"));
/// assert!(dot.contains("leaf1 [shape=box, label=\"x\\nf64[3]\"]"));
/// assert!(dot.contains("leaf1 -> op1;"));
/// ```
pub fn dot<T: Float>(out: &Tensor<T>) -> String {
    let g = Graph::of(out);
    let mut s = String::from("digraph tape {\n  rankdir=BT;\n  node [fontname=\"monospace\"];\n");
    for (i, leaf) in g.leaves.iter().enumerate() {
        let label = format!("{}\\n{}", g.leaf_name(i), shape_of::<T>(&leaf.shape));
        let _ = writeln!(s, "  leaf{} [shape=box, label={}];", i + 1, quoted(&label));
    }
    let mut clusters: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, node) in g.nodes.iter().enumerate() {
        let saved = node.saved_summary();
        let bytes: usize = saved.iter().flatten().filter_map(|x| x.bytes).sum();
        let label = format!(
            "{}\\n{}\\n-> {}\\nsaved {bytes} B",
            g.op_name(i),
            node.name,
            shape_of::<T>(&node.out_shape)
        );
        let _ = writeln!(s, "  op{} [label={}];", i + 1, quoted(&label));
        if let Some(scope) = scope(&saved) {
            clusters.entry(scope).or_default().push(i);
        }
        for edge in &node.edges {
            let from = match edge {
                Edge::Node(n) => format!("op{}", g.index[&n.id] + 1),
                Edge::Leaf(w) => match w.upgrade() {
                    Some(leaf) => format!("leaf{}", g.leaf_index[&(Arc::as_ptr(&leaf) as usize)] + 1),
                    None => continue,
                },
                Edge::None => continue,
            };
            let _ = writeln!(s, "  {from} -> op{};", i + 1);
        }
    }
    for (k, (scope, ops)) in clusters.iter().enumerate() {
        let _ = writeln!(
            s,
            "  subgraph cluster_{k} {{\n    label={};\n    style=dashed;",
            quoted(scope)
        );
        for i in ops {
            let _ = writeln!(s, "    op{};", i + 1);
        }
        s.push_str("  }\n");
    }
    s.push_str("}\n");
    s
}

/// One node as backward ran it: its op and the gradient it received (see
/// [`trace_backward`]). `Display` prints it as one line.
///
/// ```
/// use tapegrad::prelude::*;
/// let x = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).set_requires_grad(true);
/// let steps = tapegrad::viz::trace_backward(&x.exp().sum());
/// let exp = &steps[1]; // after SumBackward, which hands it ones
/// assert_eq!((exp.op.as_str(), exp.grad_shape.as_slice()), ("ExpBackward", &[2][..]));
/// assert_eq!(exp.grad_norm, 2f64.sqrt());
/// assert_eq!(exp.to_string(), "ExpBackward      grad [2]          norm 1.414214");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct BackwardStep {
    /// The node's op (`"MulBackward"`).
    pub op: String,
    /// The shape of the gradient it received (its output's shape).
    pub grad_shape: Vec<usize>,
    /// The gradient's Euclidean norm.
    pub grad_norm: f64,
}

impl fmt::Display for BackwardStep {
    /// `MulBackward     grad [2, 3]   norm 1.4142`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = format!("{:?}", self.grad_shape);
        write!(f, "{:<16} grad {:<12} norm {:.6}", self.op, shape, self.grad_norm)
    }
}

/// Runs `loss.backward()`, reporting each node as the engine runs it, in
/// order, with the gradient it received: the walk of the tape, newest node
/// first. Leaves' `.grad` are filled as by `backward`.
///
/// ```
/// use tapegrad::prelude::*;
/// let x = Tensor::from_vec(vec![3.0f64, 4.0], &[2]).set_requires_grad(true);
/// let steps = tapegrad::viz::trace_backward(&(&x * 2.0).sum());
/// let ops: Vec<&str> = steps.iter().map(|s| s.op.as_str()).collect();
/// assert_eq!(ops, ["SumBackward", "MulBackward"]);
/// assert_eq!(steps[1].grad_shape, [2]);
/// assert_eq!(steps[1].grad_norm, 2f64.sqrt()); // ones from the sum
/// ```
///
/// **Panics** as [`Tensor::backward`] does.
#[track_caller]
pub fn trace_backward<T: Float>(loss: &Tensor<T>) -> Vec<BackwardStep> {
    // The checks of `backward` made here, outside the closure below, so
    // that their panics point at the caller.
    let seed = root_grad("backward", loss, None, "backward_with");
    let steps: Rc<RefCell<Vec<BackwardStep>>> = Rc::default();
    let sink = steps.clone();
    let observer = Box::new(move |run: &NodeRun<'_>| {
        sink.borrow_mut().push(BackwardStep {
            op: run.op.to_string(),
            grad_shape: run.grad_shape.to_vec(),
            grad_norm: run.grad_norm,
        });
    });
    observe_backward(observer, || loss.backward_with(&seed));
    steps.take()
}
