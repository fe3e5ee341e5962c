//! Grad mode (no_grad, NoGradGuard, enable_grad): scope, restoration after a
//! panic, thread-locality; and the per-thread RNG (manual_seed).

use std::panic::{catch_unwind, AssertUnwindSafe};
use tapegrad::prelude::*;

fn x() -> Tensor<f32> {
    Tensor::from_vec(vec![1.0, 2.0], &[2]).set_requires_grad(true)
}

#[test]
fn grad_is_enabled_by_default() {
    assert!(tapegrad::is_grad_enabled());
    assert!(std::thread::spawn(tapegrad::is_grad_enabled).join().unwrap());
}

#[test]
fn no_grad_closure_records_nothing_and_returns_its_value() {
    let x = x();
    let (y, inside) = tapegrad::no_grad(|| (&x * 3.0, tapegrad::is_grad_enabled()));
    assert!(!inside);
    assert!(tapegrad::is_grad_enabled(), "restored after the closure");
    assert!(y.is_leaf() && !y.requires_grad());
    assert_eq!(y.to_vec(), vec![3.0, 6.0], "the values are still computed");
    // a graph built after the scope records again
    assert!((&x * 3.0).requires_grad());
}

#[test]
fn no_grad_guard_records_nothing_until_dropped() {
    let x = x();
    let guard = NoGradGuard::new();
    assert!(!tapegrad::is_grad_enabled());
    let y = x.exp();
    assert!(!y.requires_grad() && y.is_leaf());
    drop(guard);
    assert!(tapegrad::is_grad_enabled());
    let z = x.exp();
    assert!(z.requires_grad() && !z.is_leaf());
}

#[test]
fn nested_no_grad_restores_the_outer_state() {
    tapegrad::no_grad(|| {
        tapegrad::no_grad(|| assert!(!tapegrad::is_grad_enabled()));
        assert!(
            !tapegrad::is_grad_enabled(),
            "inner scope restores 'off', not 'on'"
        );
        {
            let _g = NoGradGuard::new();
        }
        assert!(!tapegrad::is_grad_enabled());
    });
    assert!(tapegrad::is_grad_enabled());
}

#[test]
fn no_grad_is_restored_after_a_panic_inside_it() {
    let r = catch_unwind(|| tapegrad::no_grad(|| panic!("boom inside no_grad")));
    assert!(r.is_err());
    assert!(tapegrad::is_grad_enabled(), "grad mode restored by unwinding");
    // and an op still records
    let x = x();
    assert!((&x * 2.0).requires_grad());
}

#[test]
fn no_grad_guard_is_restored_after_a_panic() {
    let r = catch_unwind(|| {
        let _g = NoGradGuard::new();
        panic!("boom with a guard");
    });
    assert!(r.is_err());
    assert!(tapegrad::is_grad_enabled());
}

#[test]
fn a_panic_inside_enable_grad_restores_the_outer_no_grad() {
    tapegrad::no_grad(|| {
        let r = catch_unwind(|| tapegrad::enable_grad(|| panic!("boom in enable_grad")));
        assert!(r.is_err());
        assert!(!tapegrad::is_grad_enabled(), "back to the outer no_grad");
    });
    assert!(tapegrad::is_grad_enabled());
}

#[test]
fn a_panicking_op_inside_no_grad_restores_grad_mode() {
    // a real library panic (shape mismatch) rather than an explicit one
    let a = x();
    let b = Tensor::<f32>::ones(&[3]);
    let r = catch_unwind(AssertUnwindSafe(|| tapegrad::no_grad(|| &a + &b)));
    assert!(r.is_err());
    assert!(tapegrad::is_grad_enabled());
}

#[test]
fn grad_mode_is_thread_local() {
    let x = x();
    tapegrad::no_grad(|| {
        assert!(!tapegrad::is_grad_enabled());
        let xc = x.clone();
        let (enabled, recorded) = std::thread::spawn(move || {
            let y = &xc * 2.0;
            (tapegrad::is_grad_enabled(), y.requires_grad())
        })
        .join()
        .unwrap();
        assert!(enabled, "another thread still has grad enabled");
        assert!(recorded, "and records ops");
        assert!(!tapegrad::is_grad_enabled(), "this thread is still in no_grad");
    });
    // the other way round: no_grad on another thread leaves this one alone
    let (tx, rx) = std::sync::mpsc::channel();
    let (back_tx, back_rx) = std::sync::mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        tapegrad::no_grad(|| {
            tx.send(()).unwrap();
            back_rx.recv().unwrap(); // stay inside no_grad until the main thread checked
        })
    });
    rx.recv().unwrap();
    assert!(tapegrad::is_grad_enabled());
    assert!((&x * 2.0).requires_grad());
    back_tx.send(()).unwrap();
    h.join().unwrap();
}

#[test]
fn enable_grad_inside_no_grad_records() {
    let x = x();
    let (y, z) = tapegrad::no_grad(|| {
        let y = tapegrad::enable_grad(|| {
            assert!(tapegrad::is_grad_enabled());
            &x * &x
        });
        assert!(!tapegrad::is_grad_enabled(), "no_grad again after enable_grad");
        (y, &x * &x)
    });
    assert!(y.requires_grad() && !y.is_leaf());
    assert!(!z.requires_grad());
    // the graph recorded under enable_grad works: y = Σ x², dy/dx = 2x
    y.sum().backward();
    assert_eq!(x.grad().unwrap().to_vec(), vec![2.0, 4.0]);
}

#[test]
fn backward_inside_no_grad_still_computes_gradients() {
    // as PyTorch: backward of a graph recorded earlier works under no_grad
    // y = Σ x³, dy/dx = 3x²
    let x = x();
    let y = x.powf(3.0).sum();
    tapegrad::no_grad(|| y.backward());
    assert_eq!(x.grad().unwrap().to_vec(), vec![3.0, 12.0]);
    assert!(tapegrad::is_grad_enabled());
}

#[test]
fn grad_mode_is_restored_after_backward_with_and_without_create_graph() {
    let x = x();
    x.exp().sum().backward_opts(BackwardOptions {
        create_graph: true,
        ..Default::default()
    });
    assert!(tapegrad::is_grad_enabled());
    tapegrad::no_grad(|| {
        let y = tapegrad::enable_grad(|| x.exp().sum());
        y.backward();
        assert!(
            !tapegrad::is_grad_enabled(),
            "backward restores the caller's mode"
        );
    });
}

// ---------------------------------------------------------------------- RNG

#[test]
fn manual_seed_makes_randn_and_rand_deterministic() {
    tapegrad::manual_seed(1234);
    let a = Tensor::<f32>::randn(&[3, 4]).to_vec();
    let b = Tensor::<f64>::rand(&[5]).to_vec();
    tapegrad::manual_seed(1234);
    assert_eq!(Tensor::<f32>::randn(&[3, 4]).to_vec(), a);
    assert_eq!(Tensor::<f64>::rand(&[5]).to_vec(), b);
    // a different seed gives a different stream
    tapegrad::manual_seed(1235);
    assert_ne!(Tensor::<f32>::randn(&[3, 4]).to_vec(), a);
    // the stream advances: two draws after one seed differ
    tapegrad::manual_seed(1234);
    let first = Tensor::<f32>::randn(&[3, 4]).to_vec();
    let second = Tensor::<f32>::randn(&[3, 4]).to_vec();
    assert_eq!(first, a);
    assert_ne!(first, second);
}

#[test]
fn rand_is_in_unit_interval_and_randn_looks_standard_normal() {
    tapegrad::manual_seed(7);
    let u = Tensor::<f64>::rand(&[10_000]).to_vec();
    assert!(u.iter().all(|&v| (0.0..1.0).contains(&v)));
    let mean_u = u.iter().sum::<f64>() / u.len() as f64;
    assert!((mean_u - 0.5).abs() < 0.02, "mean of U(0,1) ≈ 0.5, got {mean_u}");
    let n = Tensor::<f64>::randn(&[10_000]).to_vec();
    let mean = n.iter().sum::<f64>() / n.len() as f64;
    let var = n.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n.len() as f64;
    assert!(mean.abs() < 0.05, "mean ≈ 0, got {mean}");
    assert!((var - 1.0).abs() < 0.05, "variance ≈ 1, got {var}");
    // odd sizes and shapes
    assert_eq!(Tensor::<f32>::randn(&[3]).numel(), 3);
    assert_eq!(Tensor::<f32>::randn(&[2, 3, 1]).shape(), &[2, 3, 1]);
}

#[test]
fn manual_seed_is_per_thread() {
    // the same seed gives the same draws on any thread
    let draw = |seed: u64| {
        std::thread::spawn(move || {
            tapegrad::manual_seed(seed);
            Tensor::<f32>::randn(&[8]).to_vec()
        })
        .join()
        .unwrap()
    };
    tapegrad::manual_seed(99);
    let here = Tensor::<f32>::randn(&[8]).to_vec();
    assert_eq!(draw(99), here);

    // another thread seeding and drawing does not disturb this thread's stream
    tapegrad::manual_seed(5);
    let a1 = Tensor::<f32>::randn(&[4]).to_vec();
    let a2 = Tensor::<f32>::randn(&[4]).to_vec();
    tapegrad::manual_seed(5);
    let b1 = Tensor::<f32>::randn(&[4]).to_vec();
    std::thread::spawn(|| {
        tapegrad::manual_seed(5);
        let _ = Tensor::<f32>::randn(&[1000]);
        tapegrad::manual_seed(12345);
        let _ = Tensor::<f32>::rand(&[1000]);
    })
    .join()
    .unwrap();
    let b2 = Tensor::<f32>::randn(&[4]).to_vec();
    assert_eq!((a1, a2), (b1, b2));
}
