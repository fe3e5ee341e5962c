//! gradcheck itself, and CustomOp: a correct op passes, a wrong one is
//! caught with a precise error, and a CustomOp is once-differentiable.

mod common;

use common::{assert_close, leaf, panic_message};
use std::sync::Arc;
use tapegrad::ndarray::ArrayD;
use tapegrad::prelude::*;

#[test]
fn gradcheck_passes_on_a_correct_function() {
    // f(x, w) = tanh(x ⊙ w) · exp(x) summed with a matmul
    let x = leaf(&[0.3, -0.6, 1.1, 0.2], &[2, 2]);
    let w = leaf(&[1.5, -0.4, 0.7, 0.9], &[2, 2]);
    let r = tapegrad::gradcheck(
        |p| (&p[0] * &p[1]).tanh() * p[0].exp() + p[0].matmul(&p[1]),
        &[x, w],
        GradcheckOptions::default(),
    );
    assert!(r.is_ok(), "{}", r.unwrap_err());
}

#[test]
fn gradcheck_options_default_values() {
    let o = GradcheckOptions::default();
    assert_eq!((o.eps, o.atol, o.rtol), (1e-6, 1e-5, 1e-3));
}

/// out = a ⊙ b² (elementwise). The true gradients are
/// d out/d a = b², d out/d b = 2 a b; with `wrong_b`, the backward returns
/// twice the true gradient for b.
struct MulSquare {
    wrong_b: bool,
}

impl CustomOp<f64> for MulSquare {
    fn name(&self) -> &str {
        "MulSquare"
    }
    fn forward(&self, x: &[ArrayD<f64>]) -> ArrayD<f64> {
        &x[0] * &x[1] * &x[1]
    }
    fn backward(&self, x: &[ArrayD<f64>], _out: &ArrayD<f64>, g: &ArrayD<f64>) -> Vec<Option<ArrayD<f64>>> {
        let ga = g * &x[1] * &x[1];
        let scale = if self.wrong_b { 4.0 } else { 2.0 };
        let gb = g * &x[0] * &x[1] * scale;
        vec![Some(ga), Some(gb)]
    }
}

fn mul_square(wrong_b: bool, a: &Tensor<f64>, b: &Tensor<f64>) -> Tensor<f64> {
    Tensor::apply_op(Arc::new(MulSquare { wrong_b }), &[a.clone(), b.clone()])
}

#[test]
fn correct_custom_op_passes_gradcheck_and_gives_the_right_gradients() {
    let a = leaf(&[1.0, 2.0, 3.0], &[3]);
    let b = leaf(&[0.0, 1.5, -2.0], &[3]);
    let out = mul_square(false, &a, &b);
    assert_eq!(out.to_vec(), vec![0.0, 4.5, 12.0]); // a b²
    assert_eq!(out.grad_fn_name().as_deref(), Some("MulSquare"));
    let r = tapegrad::gradcheck(
        |p| mul_square(false, &p[0], &p[1]),
        &[a.clone(), b.clone()],
        GradcheckOptions::default(),
    );
    assert!(r.is_ok(), "{}", r.unwrap_err());
    // and by hand: y = Σ a b², dy/da = b², dy/db = 2ab
    out.sum().backward();
    assert_eq!(a.grad().unwrap().to_vec(), vec![0.0, 2.25, 4.0]);
    assert_eq!(b.grad().unwrap().to_vec(), vec![0.0, 6.0, -12.0]);
}

#[test]
fn wrong_custom_op_fails_gradcheck_naming_input_element_and_values() {
    // b[0] = 0 makes the wrong gradient of element 0 (0 · 2) still right, so
    // the first mismatch is d out[1] / d b[1]: analytic 2 · (2 a1 b1) = 12,
    // numeric 2 a1 b1 = 6.
    let a = leaf(&[1.0, 2.0, 3.0], &[3]);
    let b = leaf(&[0.0, 1.5, -2.0], &[3]);
    let err = tapegrad::gradcheck(
        |p| mul_square(true, &p[0], &p[1]),
        &[a, b],
        GradcheckOptions::default(),
    )
    .expect_err("a gradient twice too large must be caught");
    assert_eq!(err.input, 1, "the wrong gradient is the one of input 1: {err}");
    assert_eq!(err.element, 1, "{err}");
    assert_eq!(err.output, 1, "{err}");
    assert_close(&[err.analytic], &[12.0], 1e-9);
    assert_close(&[err.numeric], &[6.0], 1e-6);

    let msg = err.to_string();
    assert!(msg.contains("input 1"), "Display names the input: {msg}");
    assert!(
        msg.contains("input element 1"),
        "Display names the element: {msg}"
    );
    assert!(
        msg.contains("output element 1"),
        "Display names the output element: {msg}"
    );
    assert!(
        msg.contains(&err.analytic.to_string()),
        "Display shows the analytic value: {msg}"
    );
    assert!(
        msg.contains(&err.numeric.to_string()),
        "Display shows the numeric value: {msg}"
    );
    // it is a std::error::Error
    let boxed: Box<dyn std::error::Error> = Box::new(err.clone());
    assert_eq!(boxed.to_string(), msg);
}

#[test]
fn gradcheck_skips_inputs_that_do_not_require_grad() {
    // The wrong gradient belongs to b; with b not requiring grad, nothing
    // checks it, so gradcheck passes. With b requiring grad, it fails.
    let a = leaf(&[1.0, 2.0, 3.0], &[3]);
    let b = Tensor::from_vec(vec![0.5, 1.5, -2.0], &[3]);
    let r = tapegrad::gradcheck(
        |p| mul_square(true, &p[0], &p[1]),
        &[a.clone(), b.clone()],
        GradcheckOptions::default(),
    );
    assert!(r.is_ok(), "b needs no grad, so it is skipped: {}", r.unwrap_err());
    let r = tapegrad::gradcheck(
        |p| mul_square(true, &p[0], &p[1]),
        &[a, b.set_requires_grad(true)],
        GradcheckOptions::default(),
    );
    assert_eq!(r.expect_err("now b is checked").input, 1);
}

#[test]
fn gradcheck_catches_a_wrong_gradient_of_the_first_input() {
    // out = x² with a backward returning x (half the true 2x)
    struct HalfSquare;
    impl CustomOp<f64> for HalfSquare {
        fn name(&self) -> &str {
            "HalfSquare"
        }
        fn forward(&self, x: &[ArrayD<f64>]) -> ArrayD<f64> {
            x[0].mapv(|v| v * v)
        }
        fn backward(&self, x: &[ArrayD<f64>], _y: &ArrayD<f64>, g: &ArrayD<f64>) -> Vec<Option<ArrayD<f64>>> {
            vec![Some(g * &x[0])]
        }
    }
    let x = leaf(&[3.0, -1.0], &[2]);
    let err = tapegrad::gradcheck(
        |p| Tensor::apply_op(Arc::new(HalfSquare), &[p[0].clone()]),
        &[x],
        GradcheckOptions::default(),
    )
    .unwrap_err();
    // d out[0] / d x[0] = 2 · 3 = 6, backward says 3
    assert_eq!((err.input, err.output, err.element), (0, 0, 0));
    assert_close(&[err.analytic, err.numeric], &[3.0, 6.0], 1e-6);
}

#[test]
fn gradcheck_tolerances_are_used() {
    // analytic 1.01 × the true gradient: fails at rtol 1e-3, passes at rtol 0.1
    struct Slightly;
    impl CustomOp<f64> for Slightly {
        fn name(&self) -> &str {
            "Slightly"
        }
        fn forward(&self, x: &[ArrayD<f64>]) -> ArrayD<f64> {
            x[0].mapv(|v| 5.0 * v)
        }
        fn backward(
            &self,
            _x: &[ArrayD<f64>],
            _y: &ArrayD<f64>,
            g: &ArrayD<f64>,
        ) -> Vec<Option<ArrayD<f64>>> {
            vec![Some(g * 5.05)]
        }
    }
    let x = leaf(&[1.0], &[1]);
    let f = |p: &[Tensor<f64>]| Tensor::apply_op(Arc::new(Slightly), &[p[0].clone()]);
    assert!(tapegrad::gradcheck(f, std::slice::from_ref(&x), GradcheckOptions::default()).is_err());
    let loose = GradcheckOptions {
        rtol: 0.1,
        ..Default::default()
    };
    assert!(tapegrad::gradcheck(f, &[x], loose).is_ok());
}

/// y = x³, with the correct gradient 3x².
struct Cube;

impl CustomOp<f64> for Cube {
    fn name(&self) -> &str {
        "Cube"
    }
    fn forward(&self, x: &[ArrayD<f64>]) -> ArrayD<f64> {
        x[0].mapv(|v| v * v * v)
    }
    fn backward(&self, x: &[ArrayD<f64>], _y: &ArrayD<f64>, g: &ArrayD<f64>) -> Vec<Option<ArrayD<f64>>> {
        vec![Some(g * &x[0].mapv(|v| 3.0 * v * v))]
    }
}

#[test]
fn correct_custom_op_passes_gradcheck_inside_a_larger_graph() {
    let x = leaf(&[0.5, -1.2, 2.0], &[3]);
    let r = tapegrad::gradcheck(
        |p| Tensor::apply_op(Arc::new(Cube), &[p[0].tanh()]).exp(),
        &[x],
        GradcheckOptions::default(),
    );
    assert!(r.is_ok(), "{}", r.unwrap_err());
}

/// d/dx Σ Cube(x), computed with create_graph.
fn cube_gradient_with_graph(x: &Tensor<f64>) -> Tensor<f64> {
    let y = Tensor::apply_op(Arc::new(Cube), &[x.clone()]).sum();
    let opts = GradOptions {
        create_graph: true,
        ..Default::default()
    };
    tapegrad::grad(&[y], &[x.clone()], opts)[0].clone().unwrap()
}

#[test]
fn custom_op_first_derivative_under_create_graph_is_right() {
    // y = Σ x³: dy/dx = 3x², also when computed with create_graph
    let x = leaf(&[2.0, -1.0], &[2]);
    let g = cube_gradient_with_graph(&x);
    assert_eq!(g.to_vec(), vec![12.0, 3.0]);
}

#[test]
#[should_panic(expected = "CustomOp Cube is once-differentiable")]
fn custom_op_gradient_differentiated_again_panics_naming_the_op() {
    let x = leaf(&[2.0, -1.0], &[2]);
    let g = cube_gradient_with_graph(&x);
    // d²y/dx² would be 6x; a CustomOp cannot give it, and must not give 0
    let _ = tapegrad::grad(&[g.sum()], &[x], GradOptions::default());
}

#[test]
#[should_panic(expected = "CustomOp Cube is once-differentiable")]
fn custom_op_gradient_differentiated_again_panics_inside_a_larger_graph() {
    // y = Σ cube(2x): the CustomOp sits between other ops
    let x = leaf(&[0.5], &[1]);
    let y = Tensor::apply_op(Arc::new(Cube), &[&x * 2.0]).exp().sum();
    y.backward_opts(BackwardOptions {
        create_graph: true,
        ..Default::default()
    });
    let g = x.grad().unwrap();
    let _ = tapegrad::grad(&[g.sum()], &[x], GradOptions::default());
}

/// A custom op whose backward returns a gradient of the wrong shape is
/// refused by name, for an input made by another op as for a leaf.
#[test]
fn a_custom_backward_of_the_wrong_shape_names_the_op_and_both_shapes() {
    struct Wrong;
    impl CustomOp<f64> for Wrong {
        fn name(&self) -> &str {
            "Wrong"
        }
        fn forward(&self, x: &[ArrayD<f64>]) -> ArrayD<f64> {
            x[0].clone()
        }
        fn backward(&self, _: &[ArrayD<f64>], _: &ArrayD<f64>, _: &ArrayD<f64>) -> Vec<Option<ArrayD<f64>>> {
            vec![Some(ArrayD::zeros(vec![1]))]
        }
    }
    let x = leaf(&[1.0, 2.0, 3.0], &[3]);
    for input in [&x * 2.0, x.clone()] {
        let y = Tensor::apply_op(Arc::new(Wrong), &[input]);
        let msg = panic_message(|| y.sum().backward());
        assert_eq!(
            msg,
            "CustomOp Wrong: backward returned a gradient of shape [1] for input 0 of shape [3]"
        );
    }
}
