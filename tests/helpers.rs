//! The small helpers a hand-written training loop needs: comparisons
//! (`gt lt ge le eq_elem`), the scalar and fused in-place updates
//! (`add_scalar_ mul_scalar_ addcmul_ addcdiv_`) and `randperm`.

mod common;

use common::assert_close;
use std::collections::HashMap;
use tapegrad::prelude::*;

fn panic_message(r: std::thread::Result<()>) -> String {
    let err = r.expect_err("expected a panic");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn catch(f: impl FnOnce()) -> String {
    panic_message(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)))
}

/// The address of a tensor's elements (stable while it is written in place).
fn address<T: Float>(t: &Tensor<T>) -> usize {
    t.with_array(|v| v.as_ptr() as usize)
}

// ------------------------------------------------------------- comparisons

type Compare = fn(&Tensor<f64>, &Tensor<f64>) -> Tensor<f64>;
type Relation = fn(f64, f64) -> bool;

const COMPARISONS: [(&str, Compare, Relation); 5] = [
    ("gt", Tensor::gt, |a, b| a > b),
    ("lt", Tensor::lt, |a, b| a < b),
    ("ge", Tensor::ge, |a, b| a >= b),
    ("le", Tensor::le, |a, b| a <= b),
    ("eq_elem", Tensor::eq_elem, |a, b| a == b),
];

#[test]
fn comparisons_give_one_and_zero() {
    let a = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, -1.0, 0.0, 5.0], &[6]);
    let b = Tensor::from_vec(vec![1.0f64, 3.0, 2.0, -1.0, -0.0, 4.0], &[6]);
    let expect = |holds: Relation| -> Vec<f64> {
        a.to_vec()
            .iter()
            .zip(b.to_vec())
            .map(|(&x, y)| if holds(x, y) { 1.0 } else { 0.0 })
            .collect()
    };
    for (name, op, holds) in COMPARISONS {
        assert_eq!(op(&a, &b).to_vec(), expect(holds), "{name}");
    }
    // spelled out, so the table above cannot agree with a wrong operator
    assert_eq!(a.gt(&b).to_vec(), vec![0.0, 0.0, 1.0, 0.0, 0.0, 1.0]);
    assert_eq!(a.lt(&b).to_vec(), vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    assert_eq!(a.ge(&b).to_vec(), vec![1.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
    assert_eq!(a.le(&b).to_vec(), vec![1.0, 1.0, 0.0, 1.0, 1.0, 0.0]);
    assert_eq!(a.eq_elem(&b).to_vec(), vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0]); // 0 == -0
}

#[test]
fn comparisons_broadcast_as_numpy() {
    // [2, 1] against [3] -> [2, 3]
    let col = Tensor::from_vec(vec![1.0f32, 2.0], &[2, 1]);
    let row = Tensor::from_vec(vec![0.0f32, 1.0, 2.0], &[3]);
    let gt = col.gt(&row);
    assert_eq!(gt.shape(), &[2, 3]);
    assert_eq!(gt.to_vec(), vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
    // against a 0-d scalar, and with the scalar on the left
    let x = Tensor::from_vec(vec![-2.0f32, 0.5, 3.0, 0.0], &[2, 2]);
    assert_eq!(x.ge(&Tensor::scalar(0.5)).to_vec(), vec![0.0, 1.0, 1.0, 0.0]);
    assert_eq!(Tensor::scalar(0.5f32).ge(&x).to_vec(), vec![1.0, 1.0, 0.0, 1.0]);
    // a strided (transposed) operand
    let eq = x
        .t()
        .eq_elem(&Tensor::from_vec(vec![-2.0f32, 0.5, 3.0, 0.0], &[2, 2]));
    assert_eq!(eq.to_vec(), vec![1.0, 0.0, 0.0, 1.0]);
}

#[test]
fn comparisons_with_nan_are_false() {
    let a = Tensor::from_vec(vec![f64::NAN, f64::NAN, 1.0, f64::INFINITY], &[4]);
    let b = Tensor::from_vec(vec![f64::NAN, 1.0, f64::NAN, f64::INFINITY], &[4]);
    for (name, op, _) in COMPARISONS {
        let r = op(&a, &b).to_vec();
        assert_eq!(
            &r[..3],
            &[0.0, 0.0, 0.0],
            "{name}: any comparison with NaN is false"
        );
    }
    // inf == inf, inf >= inf
    assert_eq!(a.eq_elem(&b).to_vec()[3], 1.0);
    assert_eq!(a.ge(&b).to_vec()[3], 1.0);
    assert_eq!(a.gt(&b).to_vec()[3], 0.0);
}

#[test]
fn comparisons_never_require_grad_and_are_not_recorded() {
    let x = Tensor::from_vec(vec![-1.0f64, 2.0, -3.0, 4.0], &[4]).set_requires_grad(true);
    let y = Tensor::zeros(&[4]).set_requires_grad(true);
    for (name, op, _) in COMPARISONS {
        let m = op(&x, &y);
        assert!(!m.requires_grad() && m.is_leaf(), "{name}");
        assert_eq!(m.grad_fn_name(), None, "{name}");
    }
    // a mask used in a loss passes no gradient through itself:
    // L = Σ x · [x > 0], dL/dx = [x > 0]
    let loss = (&x * x.gt(&y)).sum();
    loss.backward();
    assert_eq!(x.grad().unwrap().to_vec(), vec![0.0, 1.0, 0.0, 1.0]);
    assert!(y.grad().is_none(), "the comparison gave y no gradient");
}

#[test]
fn comparisons_refuse_shapes_that_do_not_broadcast() {
    let a = Tensor::<f32>::zeros(&[2, 3]);
    let b = Tensor::<f32>::zeros(&[2]);
    for (name, op) in [
        ("gt", Tensor::gt as fn(&_, &_) -> _),
        ("eq_elem", Tensor::eq_elem),
    ] {
        let msg = catch(|| {
            op(&a, &b);
        });
        assert!(
            msg.starts_with(name) && msg.contains("[2, 3]") && msg.contains("[2]"),
            "{msg}"
        );
    }
}

// ----------------------------------------------------------- in-place updates

type Update = fn(&Tensor<f64>, &Tensor<f64>, &Tensor<f64>);

/// Each in-place helper beside the out-of-place expression it must equal.
const UPDATES: [(&str, Update, Update); 4] = [
    (
        "add_scalar_",
        |x, _, _| x.add_scalar_(0.25),
        |x, _, _| x.copy_(&(x + 0.25)),
    ),
    (
        "mul_scalar_",
        |x, _, _| x.mul_scalar_(-1.5),
        |x, _, _| x.copy_(&(x * -1.5)),
    ),
    (
        "addcmul_",
        |x, a, b| x.addcmul_(a, b, 0.5),
        |x, a, b| x.copy_(&(x + a * 0.5 * b)),
    ),
    (
        "addcdiv_",
        |x, a, b| x.addcdiv_(a, b, -2.0),
        |x, a, b| x.copy_(&(x + a * -2.0 / b)),
    ),
];

fn operands() -> (Vec<f64>, Tensor<f64>, Tensor<f64>) {
    let x = vec![1.0, -2.0, 3.5, 0.25, -0.75, 2.0];
    let a = Tensor::from_vec(vec![0.5, 1.5, -2.0, 4.0, 1.0, -3.0], &[2, 3]);
    let b = Tensor::from_vec(vec![2.0, -0.5, 4.0, 1.25, 3.0, 0.8], &[2, 3]);
    (x, a, b)
}

#[test]
fn inplace_helpers_match_their_out_of_place_expressions() {
    let (x0, a, b) = operands();
    for (name, update, reference) in UPDATES {
        let x = Tensor::from_vec(x0.clone(), &[2, 3]);
        let r = Tensor::from_vec(x0.clone(), &[2, 3]);
        update(&x, &a, &b);
        reference(&r, &a, &b);
        assert_close(&x.to_vec(), &r.to_vec(), 1e-15);
        assert_eq!(x.shape(), &[2, 3], "{name}");
    }
    // and by hand: x + 0.5 a b, x - 2 a / b at element 0
    let x = Tensor::from_vec(x0.clone(), &[2, 3]);
    x.addcmul_(&a, &b, 0.5);
    assert_eq!(x.to_vec()[0], 1.0 + 0.5 * 0.5 * 2.0);
    let x = Tensor::from_vec(x0, &[2, 3]);
    x.addcdiv_(&a, &b, -2.0);
    assert_eq!(x.to_vec()[1], -2.0 - 2.0 * 1.5 / -0.5);
}

#[test]
fn fused_updates_broadcast_their_operands() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    // a: [3] (a row), b: [2, 1] (a column)
    let a = Tensor::from_vec(vec![1.0f32, 10.0, 100.0], &[3]);
    let b = Tensor::from_vec(vec![1.0f32, 2.0], &[2, 1]);
    let expected = (&x + &a * 3.0 * &b).to_vec();
    x.addcmul_(&a, &b, 3.0);
    assert_eq!(x.to_vec(), expected);
    // a 0-d operand
    let expected = (&x + &a / 4.0).to_vec();
    x.addcdiv_(&a, &Tensor::scalar(4.0), 1.0);
    assert_eq!(x.to_vec(), expected);
    // a transposed operand of self's shape (strided, not broadcast)
    let m = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]);
    let expected = (&x + m.t() * m.t() * -1.0).to_vec();
    x.addcmul_(&m.t(), &m.t(), -1.0);
    assert_eq!(x.to_vec(), expected);
}

#[test]
fn fused_updates_refuse_operands_that_do_not_broadcast_to_self() {
    let x = Tensor::<f32>::zeros(&[3]);
    let ok = Tensor::<f32>::ones(&[3]);
    for bad in [Tensor::<f32>::ones(&[2]), Tensor::<f32>::ones(&[2, 3])] {
        let msg = catch(|| x.addcmul_(&ok, &bad, 1.0));
        assert!(
            msg.starts_with("addcmul_: shape") && msg.contains("cannot be broadcast to [3]"),
            "{msg}"
        );
        let msg = catch(|| x.addcdiv_(&bad, &ok, 1.0));
        assert!(msg.starts_with("addcdiv_: shape"), "{msg}");
    }
    assert_eq!(x.to_vec(), vec![0.0; 3], "nothing was written");
}

#[test]
fn inplace_helpers_follow_the_rules_of_add_() {
    let p = || Tensor::from_vec(vec![1.0f64, 2.0], &[2]).set_requires_grad(true);
    let one = Tensor::from_vec(vec![1.0f64, 1.0], &[2]);
    // on a leaf that requires grad: only under no_grad
    for (name, update, _) in UPDATES {
        let w = p();
        let msg = catch(|| update(&w, &one, &one));
        assert!(msg.starts_with(name) && msg.contains("no_grad"), "{msg}");
        assert_eq!(w.to_vec(), vec![1.0, 2.0], "{name} wrote before panicking");
        tapegrad::no_grad(|| update(&w, &one, &one));
        assert_ne!(w.to_vec(), vec![1.0, 2.0], "{name} under no_grad");
        assert!(w.is_leaf() && w.requires_grad(), "{name}");
    }
    // on a tensor with history
    let w = p();
    let y = &w * 2.0;
    let msg = catch(|| y.mul_scalar_(2.0));
    assert!(msg.starts_with("mul_scalar_") && msg.contains("history"), "{msg}");
    // an operand that requires grad, outside no_grad
    let t = Tensor::from_vec(vec![0.0f64, 0.0], &[2]);
    let msg = catch(|| t.addcdiv_(&p(), &one, 1.0));
    assert!(
        msg.starts_with("addcdiv_") && msg.contains("operand requires grad"),
        "{msg}"
    );
    tapegrad::no_grad(|| t.addcdiv_(&p(), &one, 1.0));
    assert_eq!(t.to_vec(), vec![1.0, 2.0]);
}

#[test]
fn inplace_helpers_bump_the_version() {
    // y = Σ x ⊙ w saves w (for dy/dx); each helper writing w makes backward panic
    for (name, update, _) in UPDATES {
        let x = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).set_requires_grad(true);
        let w = Tensor::from_vec(vec![3.0f64, 4.0], &[2]);
        let y = (&x * &w).sum();
        update(&w, &Tensor::ones(&[2]), &Tensor::ones(&[2]));
        let msg = catch(|| y.backward());
        assert!(msg.contains("modified by an inplace operation"), "{name}: {msg}");
    }
}

#[test]
fn inplace_helpers_write_into_an_unshared_buffer() {
    let a = Tensor::from_vec((1..=64).map(f64::from).collect(), &[64]);
    let b = Tensor::full(&[64], 2.0);
    for (name, update, _) in UPDATES {
        // 64 elements: a heap buffer, not one held inline
        let x = Tensor::<f64>::ones(&[64]);
        let clone = x.clone();
        let before = address(&x);
        update(&x, &a, &b);
        assert_eq!(address(&x), before, "{name} wrote into the same buffer");
        assert_ne!(x.to_vec(), vec![1.0; 64], "{name} wrote");
        assert_eq!(
            clone.to_vec(),
            x.to_vec(),
            "{name}: a clone of the handle sees the write"
        );
    }
}

#[test]
fn inplace_helpers_copy_a_shared_buffer_and_views_keep_the_old_data() {
    let (x0, a, b) = operands();
    for (name, update, reference) in UPDATES {
        let x = Tensor::from_vec(x0.clone(), &[2, 3]);
        let clone = x.clone();
        let detached = x.detach(); // shares the buffer
        let transposed = x.t(); // a view of it
        let before = address(&x);
        update(&x, &a, &b);
        assert_ne!(
            address(&x),
            before,
            "{name}: a shared buffer is copied, not written"
        );
        assert_eq!(
            detached.to_vec(),
            x0,
            "{name}: detach() taken before keeps the old data"
        );
        assert_eq!(transposed.t().to_vec(), x0, "{name}: a view keeps the old data");
        assert_eq!(
            clone.to_vec(),
            x.to_vec(),
            "{name}: a clone of the handle sees the write"
        );
        let r = Tensor::from_vec(x0.clone(), &[2, 3]);
        reference(&r, &a, &b);
        assert_close(&x.to_vec(), &r.to_vec(), 1e-15);
    }
}

#[test]
fn fused_updates_read_self_as_an_operand_before_writing() {
    // x += 1 · x · x with every operand the old x: [1, 2, 3] -> [2, 6, 12]
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3]);
    x.addcmul_(&x, &x, 1.0);
    assert_eq!(x.to_vec(), vec![2.0, 6.0, 12.0]);
    // x += 2 · x / x -> x + 2
    x.addcdiv_(&x, &x, 2.0);
    assert_eq!(x.to_vec(), vec![4.0, 8.0, 14.0]);
}

#[test]
fn fused_updates_on_a_strided_view_write_the_view_only() {
    let w = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let v = w.t(); // [3, 2], strided over w's buffer
    let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3, 1]);
    let b = Tensor::from_vec(vec![10.0f32, 100.0], &[2]);
    let expected = (&v + &a * &b * 0.5).to_vec();
    v.addcmul_(&a, &b, 0.5);
    assert_eq!(v.to_vec(), expected);
    assert_eq!(w.to_vec(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let expected = (&v * 2.0 + 1.0).to_vec();
    v.mul_scalar_(2.0);
    v.add_scalar_(1.0);
    assert_eq!(v.to_vec(), expected);
}

// ------------------------------------------------------------------ randperm

fn is_permutation(p: &[usize], n: usize) -> bool {
    let mut sorted = p.to_vec();
    sorted.sort_unstable();
    sorted == (0..n).collect::<Vec<_>>()
}

#[test]
fn randperm_is_a_permutation_reproducible_with_manual_seed() {
    for n in [0, 1, 2, 7, 1000] {
        assert!(is_permutation(&tapegrad::randperm(n), n), "n = {n}");
    }
    tapegrad::manual_seed(42);
    let a = tapegrad::randperm(50);
    let after_a = Tensor::<f64>::rand(&[3]).to_vec();
    tapegrad::manual_seed(42);
    assert_eq!(tapegrad::randperm(50), a);
    assert_eq!(
        Tensor::<f64>::rand(&[3]).to_vec(),
        after_a,
        "the same stream afterwards"
    );
    assert_ne!(tapegrad::randperm(50), a, "the next draw is another order");
    tapegrad::manual_seed(43);
    assert_ne!(tapegrad::randperm(50), a, "another seed, another order");
}

#[test]
fn randperm_draws_every_order_equally_often() {
    // 6 orders of 3 elements, 60,000 draws: 10,000 each, standard deviation
    // about 91. A biased shuffle (swapping with any position, not only the
    // ones not yet placed) puts some orders at 8,889 and others at 11,111.
    tapegrad::manual_seed(0);
    let mut counts: HashMap<Vec<usize>, usize> = HashMap::new();
    for _ in 0..60_000 {
        *counts.entry(tapegrad::randperm(3)).or_default() += 1;
    }
    assert_eq!(counts.len(), 6, "{counts:?}");
    for (p, &c) in &counts {
        assert!(
            (9_500..=10_500).contains(&c),
            "order {p:?} drawn {c} times: {counts:?}"
        );
    }
    // and every element lands in every position about equally (n = 10)
    let mut at = [[0usize; 10]; 10];
    for _ in 0..20_000 {
        for (pos, &v) in tapegrad::randperm(10).iter().enumerate() {
            at[v][pos] += 1;
        }
    }
    for (v, row) in at.iter().enumerate() {
        for (pos, &c) in row.iter().enumerate() {
            assert!(
                (1_700..=2_300).contains(&c),
                "{v} at {pos}: {c} of 20,000 (expected 2,000)"
            );
        }
    }
}

#[test]
fn randperm_is_in_the_prelude() {
    use tapegrad::prelude::randperm;
    tapegrad::manual_seed(1);
    let p = randperm(4);
    assert!(is_permutation(&p, 4));
}
