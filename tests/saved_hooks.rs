//! Saved-value hooks on their own: what goes through pack and unpack, an
//! unpack that changes the value (the gradient changes as PyTorch's does),
//! nesting with each other and with checkpoints, create_graph through a
//! hook, and the checks the node keeps (shape, version).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tapegrad::prelude::*;
use tapegrad::{saved_tensors_hooks, SaveContext};

/// Counts packs and unpacks; `unpack` returns the packed value mapped by
/// `f`.
#[derive(Clone)]
struct Probe<F> {
    packs: Arc<AtomicUsize>,
    unpacks: Arc<AtomicUsize>,
    f: F,
}

fn probe<F: Fn(&Tensor<f64>) -> Tensor<f64> + Send + Sync>(f: F) -> Probe<F> {
    Probe {
        packs: Arc::default(),
        unpacks: Arc::default(),
        f,
    }
}

impl<F: Fn(&Tensor<f64>) -> Tensor<f64> + Send + Sync> SavedTensorsHooks<f64> for Probe<F> {
    type Packed = Tensor<f64>;
    fn pack(&self, value: Tensor<f64>) -> Tensor<f64> {
        self.packs.fetch_add(1, Ordering::Relaxed);
        value
    }
    fn unpack(&self, packed: &Tensor<f64>) -> Tensor<f64> {
        self.unpacks.fetch_add(1, Ordering::Relaxed);
        (self.f)(packed)
    }
}

fn same(t: &Tensor<f64>) -> Tensor<f64> {
    t.clone()
}

fn x3() -> Tensor<f64> {
    Tensor::from_vec(vec![0.5, -1.0, 2.0], &[3]).set_requires_grad(true)
}

fn close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-12 * (1.0 + y.abs()), "{a:?} vs {b:?}");
    }
}

#[test]
fn every_saved_value_is_packed_once_and_unpacked_by_backward() {
    let x = x3();
    let w = Tensor::<f64>::randn(&[3, 2]).set_requires_grad(true);
    let p = probe(same);
    // mul saves both operands, exp its output, matmul both operands, tanh
    // its output: 6 values.
    let loss = saved_tensors_hooks(p.clone(), || (&x * &x).exp().unsqueeze(0).matmul(&w).tanh().sum());
    assert_eq!(p.packs.load(Ordering::Relaxed), 6);
    assert_eq!(p.unpacks.load(Ordering::Relaxed), 0);
    loss.backward();
    assert_eq!(p.unpacks.load(Ordering::Relaxed), 6);

    // The same gradients as without the hook.
    let (gx, gw) = (x.grad().unwrap().to_vec(), w.grad().unwrap().to_vec());
    let (x2, w2) = (
        x.detach().set_requires_grad(true),
        w.detach().set_requires_grad(true),
    );
    (&x2 * &x2).exp().unsqueeze(0).matmul(&w2).tanh().sum().backward();
    assert_eq!(gx, x2.grad().unwrap().to_vec());
    assert_eq!(gw, w2.grad().unwrap().to_vec());
}

#[test]
fn ops_outside_the_scope_and_values_of_another_dtype_are_not_packed() {
    let x = x3();
    let y = Tensor::<f32>::ones(&[2]).set_requires_grad(true);
    let p = probe(same);
    let inside = saved_tensors_hooks(p.clone(), || {
        let _f32_saved = y.exp(); // an f32 value: the f64 hooks do not see it
        x.sin()
    });
    let outside = inside.exp();
    assert_eq!(p.packs.load(Ordering::Relaxed), 1, "sin's input only");
    outside.sum().backward();
    assert_eq!(p.unpacks.load(Ordering::Relaxed), 1);
}

#[test]
fn an_unpack_that_changes_the_value_changes_the_gradient_as_in_pytorch() {
    // y = sum(sin(x) * x), every saved value read back plus one: sin saves
    // x, mul saves sin(x) and x, so
    // dy/dx = (sin(x) + 1) + (x + 1) cos(x + 1)
    // (PyTorch, with saved_tensors_hooks(lambda t: t, lambda t: t + 1),
    // gives [1.5855, 0.1585, -1.0607] here, as this formula does).
    let x = x3();
    let loss = saved_tensors_hooks(probe(|t: &Tensor<f64>| t + 1.0), || (&x.sin() * &x).sum());
    loss.backward();
    let expect: Vec<f64> = x
        .to_vec()
        .iter()
        .map(|&x| (x.sin() + 1.0) + (x + 1.0) * (x + 1.0).cos())
        .collect();
    close(&x.grad().unwrap().to_vec(), &expect);
}

#[test]
fn the_innermost_scope_applies() {
    let x = x3();
    let (outer, inner) = (probe(same), probe(same));
    let loss = saved_tensors_hooks(outer.clone(), || {
        let a = x.exp(); // outer
        let b = saved_tensors_hooks(inner.clone(), || a.sin()); // inner
        (&b * 2.0).tanh().sum() // outer again
    });
    assert_eq!(outer.packs.load(Ordering::Relaxed), 2);
    assert_eq!(inner.packs.load(Ordering::Relaxed), 1);
    loss.backward();
    assert_eq!(outer.unpacks.load(Ordering::Relaxed), 2);
    assert_eq!(inner.unpacks.load(Ordering::Relaxed), 1);
}

#[test]
fn hooks_around_a_checkpoint_see_its_inputs_and_the_gradients_are_unchanged() {
    let w = Tensor::<f64>::randn(&[3, 3]).set_requires_grad(true);
    let x = Tensor::<f64>::randn(&[2, 3]).set_requires_grad(true);
    let w2 = w.clone();
    let p = probe(same);
    let loss = saved_tensors_hooks(p.clone(), || {
        tapegrad::checkpoint(
            move |xs| xs[0].matmul(&w2).tanh().matmul(&w2).tanh(),
            &[x.clone()],
        )
        .sum()
    });
    // The checkpoint keeps its input through the hooks around it; what
    // its function saves goes to the checkpoint, not to them.
    assert_eq!(p.packs.load(Ordering::Relaxed), 1);
    loss.backward();
    assert_eq!(p.unpacks.load(Ordering::Relaxed), 1, "read once, by the re-run");
    let (gx, gw) = (x.grad().unwrap().to_vec(), w.grad().unwrap().to_vec());

    let (x2, w3) = (
        x.detach().set_requires_grad(true),
        w.detach().set_requires_grad(true),
    );
    x2.matmul(&w3).tanh().matmul(&w3).tanh().sum().backward();
    assert_eq!(gx, x2.grad().unwrap().to_vec());
    assert_eq!(gw, w3.grad().unwrap().to_vec());
}

#[test]
fn hooks_inside_a_checkpointed_function_take_its_values_so_nothing_is_rerun() {
    // The innermost scope applies: the function's own hooks get what its
    // ops save, the checkpoint gets nothing to recompute.
    let x = Tensor::<f64>::randn(&[4]).set_requires_grad(true);
    let p = probe(same);
    let inner = p.clone();
    let before = tapegrad::recompute_counts();
    let loss = tapegrad::checkpoint(
        move |xs| saved_tensors_hooks(inner.clone(), || xs[0].exp().sin()),
        &[x.clone()],
    )
    .sum();
    assert_eq!(p.packs.load(Ordering::Relaxed), 2, "exp's output and sin's input");
    loss.backward();
    assert_eq!(tapegrad::recompute_counts().reruns - before.reruns, 0);
    assert_eq!(p.unpacks.load(Ordering::Relaxed), 2);
    let expect: Vec<f64> = x.to_vec().iter().map(|&x| x.exp().cos() * x.exp()).collect();
    close(&x.grad().unwrap().to_vec(), &expect);
}

#[test]
fn create_graph_works_through_a_hook() {
    // y = x^3 by two products; the hook's unpacked values are re-attached
    // to the graph, so the gradient is differentiable again: 6x.
    let x = x3();
    let p = probe(same);
    let y = saved_tensors_hooks(p.clone(), || (&(&x * &x) * &x).sum());
    let opts = GradOptions {
        create_graph: true,
        ..Default::default()
    };
    let dy = tapegrad::grad(&[y], &[x.clone()], opts)[0].clone().unwrap();
    assert_eq!(
        p.unpacks.load(Ordering::Relaxed),
        4,
        "two products, two values each"
    );
    close(
        &dy.to_vec(),
        &x.to_vec().iter().map(|x| 3.0 * x * x).collect::<Vec<_>>(),
    );
    let d2 = tapegrad::grad(&[dy.sum()], &[x.clone()], GradOptions::default())[0]
        .clone()
        .unwrap();
    close(
        &d2.to_vec(),
        &x.to_vec().iter().map(|x| 6.0 * x).collect::<Vec<_>>(),
    );
    // The gradient's graph runs through the products' nodes again.
    assert!(p.unpacks.load(Ordering::Relaxed) > 4);
}

#[test]
#[should_panic(expected = "MulBackward: the unpack hook returned a value of shape [2] for the saved input")]
fn an_unpack_of_another_shape_is_refused_naming_the_op() {
    let x = x3();
    let loss = saved_tensors_hooks(probe(|t: &Tensor<f64>| t.narrow(0, 0, 2)), || (&x * &x).sum());
    loss.backward();
}

#[test]
#[should_panic(expected = "modified by an inplace operation")]
fn a_value_changed_in_place_after_its_save_is_refused_through_a_hook() {
    let x = x3();
    let h = x.exp(); // a non-leaf: sin saves it
    let loss = saved_tensors_hooks(probe(same), || h.sin().sum());
    tapegrad::no_grad(|| h.mul_scalar_(2.0));
    loss.backward();
}

/// Counts saved values per op through [`SavedTensorsHooks::pack_saved`].
#[derive(Clone, Default)]
struct PerOp(Arc<Mutex<BTreeMap<String, usize>>>);

impl SavedTensorsHooks<f64> for PerOp {
    type Packed = Tensor<f64>;
    fn pack(&self, value: Tensor<f64>) -> Tensor<f64> {
        value
    }
    fn pack_saved(&self, value: Tensor<f64>, saved: &SaveContext) -> Tensor<f64> {
        let key = format!("{} {}", saved.op, saved.role);
        *self.0.lock().unwrap().entry(key).or_default() += 1;
        value
    }
    fn unpack(&self, packed: &Tensor<f64>) -> Tensor<f64> {
        packed.clone()
    }
}

#[test]
fn pack_saved_names_the_op_and_the_role() {
    let x = x3();
    let counts = PerOp::default();
    let _y = saved_tensors_hooks(counts.clone(), || (&x * &x).exp().sin());
    let got: Vec<(String, usize)> = counts.0.lock().unwrap().clone().into_iter().collect();
    let want = [
        ("ExpBackward output", 1),
        ("MulBackward input 0", 1),
        ("MulBackward input 1", 1),
        ("SinBackward input 0", 1),
    ];
    let want: Vec<(String, usize)> = want.iter().map(|(k, n)| (k.to_string(), *n)).collect();
    assert_eq!(got, want);
}
