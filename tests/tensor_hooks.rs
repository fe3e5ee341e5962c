//! Tensor hooks, retain_grad, names and anomaly mode. The expected values
//! are PyTorch 2.15's for the same code (`register_hook`, `retain_grad`,
//! `autograd.grad`), checked by hand and derived here from the formulas.

mod common;

use common::panic_message;
use std::sync::{Arc, Mutex};
use tapegrad::prelude::*;

fn x2() -> Tensor<f64> {
    Tensor::from_vec(vec![1.0, 2.0], &[2]).set_requires_grad(true)
}

#[test]
fn a_leaf_hook_sees_the_summed_gradient_once_before_accumulation() {
    // y = Σ x² + 3x: two contributions to x's gradient, 2x and 3; PyTorch
    // calls the hook once with 2x + 3 = [5, 7].
    let x = x2();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let _keep = x.register_hook(move |g| {
        seen.lock().unwrap().push(g.to_vec());
        None
    });
    (&(&x * &x) + &(&x * 3.0)).sum().backward();
    assert_eq!(*calls.lock().unwrap(), vec![vec![5.0, 7.0]]);
    assert_eq!(x.grad().unwrap().to_vec(), vec![5.0, 7.0]);
}

#[test]
fn a_leaf_hook_replaces_the_gradient_before_it_is_added_to_grad() {
    let x = x2();
    let _keep = x.register_hook(|g| Some(g * 0.5));
    (&x * 4.0).sum().backward();
    (&x * 4.0).sum().backward();
    assert_eq!(x.grad().unwrap().to_vec(), vec![4.0, 4.0], "2 + 2, each halved");
}

#[test]
fn non_leaf_hooks_run_in_order_and_retain_grad_keeps_the_result() {
    // h = 3x; y = Σ h²: dy/dh = 2h = [6, 12]; hooks 2g then g + 1 give
    // [13, 25] (h.grad in PyTorch), and x.grad = 3 · that = [39, 75].
    let x = x2();
    let h = &x * 3.0;
    h.retain_grad();
    let _a = h.register_hook(|g| Some(g * 2.0));
    let _b = h.register_hook(|g| Some(g + 1.0));
    (&h * &h).sum().backward();
    assert_eq!(h.grad().unwrap().to_vec(), vec![13.0, 25.0]);
    assert_eq!(x.grad().unwrap().to_vec(), vec![39.0, 75.0]);
}

#[test]
fn retain_grad_accumulates_across_backwards_and_leaves_are_unchanged_by_it() {
    let x = x2();
    x.retain_grad(); // a no-op on a leaf
    let h = &x * 3.0;
    h.retain_grad();
    let y = (&h * &h).sum();
    y.backward_opts(BackwardOptions {
        retain_graph: true,
        ..Default::default()
    });
    y.backward();
    assert_eq!(h.grad().unwrap().to_vec(), vec![12.0, 24.0]);
    assert_eq!(x.grad().unwrap().to_vec(), vec![36.0, 72.0]);
    let plain = &x * 1.0;
    assert!(
        plain.grad().is_none(),
        "a non-leaf keeps no gradient unless asked"
    );
}

#[test]
fn hooks_apply_in_grad_too() {
    // PyTorch: autograd.grad(Σ h², x) with h = 3x and a hook g ↦ 10g on h
    // gives [180, 360].
    let x = x2();
    let h = &x * 3.0;
    let _keep = h.register_hook(|g| Some(g * 10.0));
    let g = tapegrad::grad(&[(&h * &h).sum()], &[x.clone()], GradOptions::default());
    assert_eq!(g[0].as_ref().unwrap().to_vec(), vec![180.0, 360.0]);
    assert!(x.grad().is_none());
}

#[test]
fn remove_takes_the_hook_off_and_dropping_the_handle_keeps_it() {
    let x = x2();
    x.register_hook(|g| Some(g * 100.0)).remove();
    drop(x.register_hook(|g| Some(g * 2.0)));
    x.sum().backward();
    assert_eq!(x.grad().unwrap().to_vec(), vec![2.0, 2.0]);
}

#[test]
fn a_hook_of_the_wrong_shape_and_a_hook_on_a_constant_panic() {
    let x = x2();
    let _keep = x.register_hook(|g| Some(g.sum()));
    let msg = panic_message(|| x.sum().backward());
    assert!(
        msg.contains("a hook returned a gradient of shape [] for a tensor of shape [2]"),
        "{msg}"
    );
    let c = Tensor::<f64>::ones(&[2]);
    let msg = panic_message(|| drop(c.register_hook(|_| None)));
    assert!(
        msg.contains("register_hook: the tensor (shape [2]) does not require grad"),
        "{msg}"
    );
}

#[test]
fn names_are_shared_by_every_handle() {
    let w = Tensor::<f32>::zeros(&[2]);
    assert_eq!(w.name(), None);
    let same = w.with_name("w1");
    assert_eq!((w.name(), same.name()), (Some("w1".into()), Some("w1".into())));
    assert_eq!(w.clone().with_name("w2").name(), w.name());
}

#[test]
fn anomaly_mode_names_the_op_and_where_it_was_called() {
    let x = Tensor::from_vec(vec![0.0f64, 1.0], &[2]).set_requires_grad(true);
    let before = line!();
    let msg = panic_message(|| {
        tapegrad::detect_anomaly(|| {
            let y = x.sqrt(); // the line before + 3
            (&y.sum() * 0.0).backward();
        })
    });
    let line = before + 3;
    assert!(
        msg.contains("SqrtBackward returned NaN values in its gradient for input 0"),
        "{msg}"
    );
    assert!(msg.contains(&format!("{}:{line}:", file!())), "{msg}");
}

#[test]
fn outside_anomaly_mode_a_nan_gradient_goes_through() {
    let x = Tensor::from_vec(vec![0.0f64, 1.0], &[2]).set_requires_grad(true);
    (&x.sqrt().sum() * 0.0).backward();
    assert!(x.grad().unwrap().to_vec()[0].is_nan());
}

#[test]
fn grad_fills_a_retained_gradient_too_as_in_pytorch() {
    // PyTorch 2.15: autograd.grad(y, [h]) with h.retain_grad() leaves
    // h.grad = dy/dh = [6, 12].
    let x = x2();
    let h = &x * 3.0;
    h.retain_grad();
    let dh = tapegrad::grad(&[(&h * &h).sum()], &[h.clone()], GradOptions::default());
    assert_eq!(dh[0].as_ref().unwrap().to_vec(), vec![6.0, 12.0]);
    assert_eq!(h.grad().unwrap().to_vec(), vec![6.0, 12.0]);
    assert!(x.grad().is_none());
}

/// Appends `tag` to `log` when called.
fn logger(log: &Arc<Mutex<Vec<String>>>, tag: &str) -> impl Fn() + Send + Sync + 'static {
    let (log, tag) = (log.clone(), tag.to_string());
    move || log.lock().unwrap().push(tag.clone())
}

#[test]
fn a_leaf_is_hooked_as_soon_as_its_last_user_has_run_not_at_the_end() {
    // y = Σ tanh(x · a) · w: w's user is the newest op, a's the oldest.
    // PyTorch runs w's AccumulateGrad (and its hooks) once the mul with w
    // has sent its gradient, before the ops that lead back to a.
    let x = Tensor::<f64>::from_vec(vec![0.5, -1.0], &[2]);
    let a = x2();
    let w = x2();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (on_w, on_h, on_a) = (logger(&log, "w"), logger(&log, "h"), logger(&log, "a"));
    let _w = w.register_post_accumulate_grad_hook(move |_| on_w());
    let _a = a.register_post_accumulate_grad_hook(move |_| on_a());
    let h = (&x * &a).tanh();
    let _h = h.register_hook(move |_| {
        on_h();
        None
    });
    (&h * &w).sum().backward();
    assert_eq!(*log.lock().unwrap(), ["w", "h", "a"]);
}

#[test]
fn a_post_accumulate_hook_runs_once_per_backward_on_the_accumulated_grad() {
    let w = x2();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let handle =
        w.register_post_accumulate_grad_hook(move |w| log.lock().unwrap().push(w.grad().unwrap().to_vec()));
    // Two uses, two backwards: one call each, after both uses were summed
    // into .grad (the second sees the first's gradient too).
    let y = || (&(&w * &w) + &(&w * 3.0)).sum();
    y().backward();
    y().backward();
    // grad() leaves .grad alone: no call.
    tapegrad::grad(&[y()], &[w.clone()], Default::default());
    handle.remove();
    y().backward();
    assert_eq!(*seen.lock().unwrap(), [vec![5.0, 7.0], vec![10.0, 14.0]]);
    assert_eq!(w.grad().unwrap().to_vec(), [15.0, 21.0]);
}

#[test]
fn a_post_accumulate_hook_sees_a_checkpointed_users_gradient() {
    // w used inside a checkpoint only: its gradient comes from the re-run,
    // and the hook sees the same .grad as without the checkpoint.
    let run = |checkpointed: bool| {
        let w = x2();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let _h = w.register_post_accumulate_grad_hook(move |w| {
            log.lock().unwrap().push(w.grad().unwrap().to_vec())
        });
        let x = Tensor::<f64>::from_vec(vec![0.3, 0.7], &[2]).set_requires_grad(true);
        let wc = w.clone();
        let f = move |xs: &[Tensor<f64>]| (&xs[0] * &wc).sin().exp();
        let h = if checkpointed {
            tapegrad::checkpoint(f, &[x.clone()])
        } else {
            f(&[x.clone()])
        };
        (&h * &h).sum().backward();
        let out = seen.lock().unwrap().clone();
        out
    };
    let plain = run(false);
    assert_eq!(plain.len(), 1);
    assert_eq!(run(true), plain);
}

#[test]
fn a_post_accumulate_hook_on_a_non_leaf_panics() {
    let x = x2();
    let msg = panic_message(|| {
        let _ = (&x * 2.0).register_post_accumulate_grad_hook(|_| {});
    });
    assert!(
        msg.contains("register_post_accumulate_grad_hook") && msg.contains("not a leaf"),
        "{msg}"
    );
}

/// A hook's closure (and what it captured) is freed once its tensor is
/// gone: the registry of hooks drops the entries of dead tensors at the
/// start of the next backward. Kept, they would leak a little per step and
/// leave every later backward on the slow path that looks for hooks.
#[test]
fn a_dead_tensors_hook_is_freed_by_the_next_backward() {
    freed_by_the_next_backward::<f32>();
    freed_by_the_next_backward::<f64>();
}

fn freed_by_the_next_backward<T: Float>() {
    struct Flag(Arc<Mutex<bool>>);
    impl Drop for Flag {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = true;
        }
    }
    let freed = Arc::new(Mutex::new(false));
    {
        let x = Tensor::<T>::ones(&[2]).set_requires_grad(true);
        let y = &x * T::of(2.0);
        let flag = Flag(freed.clone());
        let _keep = y.register_hook(move |_| {
            let _ = &flag;
            None
        });
        y.sum().backward();
    }
    let z = Tensor::<T>::ones(&[2]).set_requires_grad(true);
    (&z * T::of(3.0)).sum().backward();
    assert!(
        *freed.lock().unwrap(),
        "the backward after the tensor died freed its hook"
    );
}

/// A hook does not make a non-leaf keep its gradient: only `retain_grad`
/// does (PyTorch's `.grad` of such a tensor stays `None`).
#[test]
fn a_hook_on_a_non_leaf_keeps_no_grad() {
    let x = x2();
    let h = &x * 3.0;
    let _keep = h.register_hook(|g| Some(g * 2.0));
    (&h * &h).sum().backward();
    assert!(h.grad().is_none(), "hooked, not retained");
    assert_eq!(x.grad().unwrap().to_vec(), vec![36.0, 72.0], "2 · 2h · 3");
}
