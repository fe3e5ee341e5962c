//! micrograd's README example on tapegrad: the same expression of scalars
//! `a`, `b`, ..., `g`, with the tape printed, the graph written as DOT, the
//! backward walk traced, and the gradients checked against the values
//! micrograd's README prints (`g.data` 24.7041, `a.grad` 138.8338,
//! `b.grad` 645.5773).
//!
//! Run: `cargo run --release --example micrograd`
//! (writes `target/micrograd.dot`; `dot -Tsvg target/micrograd.dot -o g.svg`
//! draws it).

mod common;

use common::output_path;
use tapegrad::Tensor;

fn scalar(v: f64, name: &str) -> Tensor<f64> {
    Tensor::scalar(v).set_requires_grad(true).with_name(name)
}

fn main() -> std::io::Result<()> {
    // micrograd:                       tapegrad:
    let a = scalar(-4.0, "a"); //       a = Value(-4.0)
    let b = scalar(2.0, "b"); //        b = Value(2.0)
    let c = &a + &b; //                 c = a + b
    let d = &(&a * &b) + &b.powf(3.0); // d = a * b + b**3
    let c = &c + &(&c + 1.0); //        c += c + 1
    let c = &c + &(&(1.0 + &c) + &(-&a)); // c += 1 + c + (-a)
    let d = &d + &(&(&d * 2.0) + &(&b + &a).relu()); // d += d * 2 + (b + a).relu()
    let d = &d + &(&(3.0 * &d) + &(&b - &a).relu()); // d += 3 * d + (b - a).relu()
    let e = &c - &d; //                 e = c - d
    let f = e.powf(2.0); //             f = e**2
    let g = &f / 2.0; //                g = f / 2.0
    let g = (&g + &(10.0 / &f)).with_name("g"); // g += 10.0 / f

    println!("The tape (the ops that lead to g, inputs before users):\n");
    print!("{}", tapegrad::viz::tape(&g));

    let dot_path = output_path("micrograd.dot");
    std::fs::write(&dot_path, tapegrad::viz::dot(&g))?;
    println!("\nThe graph as Graphviz DOT: {}", dot_path.display());

    println!("\nBackward, node by node as the engine runs them (newest first):\n");
    for step in tapegrad::viz::trace_backward(&g) {
        println!("  {step}");
    }

    let (gd, ag, bg) = (g.item(), a.grad().unwrap().item(), b.grad().unwrap().item());
    println!("\ng.data = {gd:.4}   (micrograd: 24.7041)");
    println!("a.grad = {ag:.4}  (micrograd: 138.8338)");
    println!("b.grad = {bg:.4}  (micrograd: 645.5773)");
    for (what, ours, theirs) in [
        ("g.data", gd, 24.7041),
        ("a.grad", ag, 138.8338),
        ("b.grad", bg, 645.5773),
    ] {
        assert!(
            (ours - theirs).abs() < 5e-5,
            "{what}: {ours:.6} differs from micrograd's {theirs}"
        );
    }
    Ok(())
}
