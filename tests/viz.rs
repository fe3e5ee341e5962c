//! The visible tape: `viz::tape`, `viz::dot` (rendered by Graphviz when it
//! is installed), `viz::trace_backward`, and the names they print.

use std::io::Write;
use std::process::{Command, Stdio};
use tapegrad::nn::{Linear, Module, Sequential, Tanh};
use tapegrad::prelude::*;

fn three_ops() -> (Tensor<f64>, Tensor<f64>, Tensor<f64>) {
    let x = Tensor::from_vec(vec![1.0, 2.0], &[2])
        .set_requires_grad(true)
        .with_name("x");
    let w = Tensor::from_vec(vec![0.5, -1.0], &[2])
        .set_requires_grad(true)
        .with_name("w");
    let y = (&x * &w).exp().sum();
    (x, w, y)
}

#[test]
fn the_tape_lists_leaves_then_ops_inputs_first_with_what_they_saved() {
    let (_x, _w, y) = three_ops();
    let tape = tapegrad::viz::tape(&y);
    let lines: Vec<&str> = tape.lines().collect();
    assert_eq!(
        lines,
        [
            "x  = leaf f64[2], requires grad",
            "w  = leaf f64[2], requires grad",
            "%1 = MulBackward(x, w) -> f64[2]; saved: input 0 f64[2] 16 B, input 1 f64[2] 16 B",
            "%2 = ExpBackward(%1) -> f64[2]; saved: output f64[2] 16 B",
            "%3 = SumBackward(%2) -> f64[]; saved: nothing",
        ]
    );
    y.backward();
    assert!(tapegrad::viz::tape(&y).contains("ExpBackward(%1) -> f64[2]; saved: freed by backward"));
}

#[test]
fn checkpoint_scopes_and_module_parameters_are_marked() {
    let model = Sequential::<f32>::new()
        .add(Linear::new(3, 4))
        .add(Tanh)
        .add(Linear::new(4, 1));
    let x = Tensor::<f32>::randn(&[2, 3]);
    let m = model.clone();
    let y = tapegrad::checkpoint(move |xs| m.forward(&xs[0]), &[x]).sum();
    let tape = tapegrad::viz::tape(&y);
    assert!(
        tape.contains("0.weight = leaf f32[4, 3], requires grad"),
        "{tape}"
    );
    assert!(tape.contains("2.bias"), "{tape}");
    let tanh = tape.lines().find(|l| l.contains("TanhBackward")).unwrap();
    assert!(
        tanh.contains("packed by checkpoint #") && tanh.contains("  [checkpoint #"),
        "{tanh}"
    );
    let dot = tapegrad::viz::dot(&y);
    assert!(dot.contains("subgraph cluster_0"), "{dot}");
    assert!(dot.contains("label=\"checkpoint #"), "{dot}");
}

#[test]
fn a_custom_op_appears_under_its_own_name() {
    struct Twice;
    impl CustomOp<f64> for Twice {
        fn name(&self) -> &str {
            "Twice"
        }
        fn forward(&self, x: &[tapegrad::ndarray::ArrayD<f64>]) -> tapegrad::ndarray::ArrayD<f64> {
            &x[0] * 2.0
        }
        fn backward(
            &self,
            _: &[tapegrad::ndarray::ArrayD<f64>],
            _: &tapegrad::ndarray::ArrayD<f64>,
            g: &tapegrad::ndarray::ArrayD<f64>,
        ) -> Vec<Option<tapegrad::ndarray::ArrayD<f64>>> {
            vec![Some(g * 2.0)]
        }
    }
    let x = Tensor::<f64>::ones(&[2]).set_requires_grad(true);
    let y = Tensor::apply_op(std::sync::Arc::new(Twice), &[x.clone()]);
    let tape = tapegrad::viz::tape(&y);
    assert!(tape.contains("%1    = Twice(leaf1) -> f64[2]"), "{tape}");
    let saved = tapegrad::saved_residuals(|xs| Tensor::apply_op(std::sync::Arc::new(Twice), xs), &[x]);
    assert!(saved.iter().all(|r| r.op == "Twice"));
}

#[test]
fn trace_backward_reports_each_node_as_the_engine_runs_it() {
    let (x, w, y) = three_ops();
    let steps = tapegrad::viz::trace_backward(&y);
    let ops: Vec<&str> = steps.iter().map(|s| s.op.as_str()).collect();
    assert_eq!(ops, ["SumBackward", "ExpBackward", "MulBackward"]);
    // SumBackward receives 1; ExpBackward ones of shape [2]; MulBackward
    // exp(x w).
    assert_eq!(steps[0].grad_shape, Vec::<usize>::new());
    assert_eq!(steps[1].grad_norm, 2f64.sqrt());
    let e: Vec<f64> = [0.5f64, -2.0].iter().map(|v| v.exp()).collect();
    let norm = (e[0] * e[0] + e[1] * e[1]).sqrt();
    assert!((steps[2].grad_norm - norm).abs() < 1e-12);
    assert!(steps[2].to_string().starts_with("MulBackward      grad [2]"));
    assert!(x.grad().is_some() && w.grad().is_some(), "a real backward");
}

#[test]
fn the_dot_output_renders_with_graphviz() {
    let (_x, _w, y) = three_ops();
    let dot = tapegrad::viz::dot(&y);
    let Ok(mut child) = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("skipped: Graphviz's `dot` is not installed (.ci/run installs it)");
        return;
    };
    child.stdin.take().unwrap().write_all(dot.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = String::from_utf8(out.stdout).unwrap();
    assert!(
        svg.contains("<svg") && svg.contains("MulBackward") && svg.contains(">x<"),
        "{svg}"
    );
}
