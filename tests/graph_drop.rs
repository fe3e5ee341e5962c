//! Dropping a graph never recurses, whatever its shape: each test builds a
//! graph of about a million ops on a thread with a 2 MiB stack and drops it
//! (after backward or not). A stack overflow aborts the process, so each
//! runs in a child process of its own.

mod common;

use common::in_child_process;
use std::sync::Arc;
use std::time::Duration;
use tapegrad::ndarray::ArrayD;
use tapegrad::prelude::*;

const N: usize = 1_000_000;
const STACK: usize = 2 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `f` in a child process, on a thread with a 2 MiB stack.
fn on_small_stack(name: &str, f: impl FnOnce() + Send + 'static) {
    in_child_process(name, TIMEOUT, || {
        std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(f)
            .expect("spawn")
            .join()
            .expect("the graph test panicked");
    });
}

fn leaf(v: f32) -> Tensor<f32> {
    Tensor::from_vec(vec![v], &[1]).set_requires_grad(true)
}

#[test]
fn an_op_using_one_tensor_twice() {
    // h·h: the node holds its input twice, so neither edge alone frees it.
    on_small_stack("an_op_using_one_tensor_twice", || {
        let mut h = leaf(1.0);
        for _ in 0..N {
            h = &h * &h;
        }
        assert_eq!(h.item(), 1.0);
        drop(h);
    });
}

#[test]
fn an_op_using_one_tensor_twice_after_backward() {
    // (h + h) / 2 = h: dy/dx = 1 through 2^N paths that the engine sums.
    on_small_stack("an_op_using_one_tensor_twice_after_backward", || {
        let x = leaf(3.0);
        let mut h = x.clone();
        for _ in 0..N / 2 {
            h = (&h + &h) * 0.5f32;
        }
        h.backward();
        assert_eq!((h.item(), x.grad().unwrap().item()), (3.0, 1.0));
        drop(h);
    });
}

#[test]
fn a_chain_of_diamonds() {
    // h/2 + h/2: two nodes share the input, and meet again in the sum.
    on_small_stack("a_chain_of_diamonds", || {
        let x = leaf(3.0);
        let mut h = x.clone();
        for _ in 0..N / 3 {
            h = &(&h * 0.5f32) + &(&h * 0.5f32);
        }
        h.backward();
        assert_eq!((h.item(), x.grad().unwrap().item()), (3.0, 1.0));
        drop(h);
    });
}

#[test]
fn subgraphs_shared_across_steps() {
    // next = cur/2 + prev/2: every node feeds the next two steps, so the
    // nodes below are held from two depths of the graph at once.
    on_small_stack("subgraphs_shared_across_steps", || {
        let x = leaf(2.0);
        let (mut prev, mut cur) = (x.clone(), &x * 1.0f32);
        for _ in 0..N / 3 {
            let next = &(&cur * 0.5f32) + &(&prev * 0.5f32);
            prev = std::mem::replace(&mut cur, next);
        }
        drop(prev);
        assert_eq!(cur.item(), 2.0);
        drop(cur);
    });
}

#[test]
fn a_graph_kept_by_retain_graph() {
    on_small_stack("a_graph_kept_by_retain_graph", || {
        let x = leaf(1.0);
        let mut h = x.clone();
        for _ in 0..N / 2 {
            h = (&h * &h).tanh();
        }
        let opts = || BackwardOptions {
            retain_graph: true,
            ..Default::default()
        };
        h.backward_opts(opts());
        h.backward_opts(opts());
        drop(h);
        assert!(x.grad().is_some());
    });
}

#[test]
fn a_gradient_made_with_create_graph() {
    // x.grad holds the gradient's graph, which reaches into the forward's.
    on_small_stack("a_gradient_made_with_create_graph", || {
        let x = leaf(0.5);
        let mut h = x.clone();
        for _ in 0..N / 4 {
            h = &h * &x;
        }
        h.backward_opts(BackwardOptions {
            create_graph: true,
            ..Default::default()
        });
        let g = x.grad().expect("a gradient");
        assert!(g.requires_grad());
        drop(h);
        drop(g);
        drop(x); // its .grad, and with it both graphs, go here
    });
}

/// y = x, holding a tensor with history (allowed for a custom op: the
/// tensor is the op's own state): dropping the op's node drops that
/// tensor's graph from inside a node's drop.
struct Holding(#[allow(dead_code)] Tensor<f32>);

impl CustomOp<f32> for Holding {
    fn name(&self) -> &str {
        "Holding"
    }
    fn forward(&self, x: &[ArrayD<f32>]) -> ArrayD<f32> {
        x[0].clone()
    }
    fn backward(&self, _: &[ArrayD<f32>], _: &ArrayD<f32>, g: &ArrayD<f32>) -> Vec<Option<ArrayD<f32>>> {
        vec![Some(g.clone())]
    }
}

#[test]
fn graphs_held_by_what_a_node_owns() {
    // Each custom op's node owns the previous step's output: its graph is
    // dropped by the node's drop, a drop inside a drop, a million deep.
    on_small_stack("graphs_held_by_what_a_node_owns", || {
        let mut h = leaf(1.0);
        for _ in 0..N / 4 {
            let held = &h * 1.0f32;
            h = Tensor::apply_op(Arc::new(Holding(held)), &[leaf(1.0)]);
        }
        drop(h);
    });
}
