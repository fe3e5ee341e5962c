//! Fits a small MLP to a noisy sine wave with full-batch SGD, printing the
//! loss as it falls: `nn::Sequential` of `nn::Linear` and `nn::Tanh`,
//! `mse_loss`, and `optim::Sgd`.
//!
//! Run: `cargo run --release --example regression`
//! (`TAPEGRAD_EXAMPLE_SHORT=1` runs a few steps only, for CI).

mod common;

use tapegrad::nn::{Linear, Module, Sequential, Tanh};
use tapegrad::optim::{Optimizer, Sgd};
use tapegrad::prelude::*;

fn main() {
    tapegrad::manual_seed(0);
    let short = common::short_mode();

    // The task: y = sin(3x) + noise on x in [-1, 1], 256 points.
    let n = 256;
    let xs: Vec<f32> = (0..n).map(|i| -1.0 + 2.0 * i as f32 / (n - 1) as f32).collect();
    let noise = Tensor::<f32>::randn(&[n]).to_vec();
    let ys: Vec<f32> = xs
        .iter()
        .zip(&noise)
        .map(|(x, e)| (3.0 * x).sin() + 0.05 * e)
        .collect();
    let x = Tensor::from_vec(xs, &[n, 1]);
    let y = Tensor::from_vec(ys, &[n, 1]);

    let model = Sequential::new()
        .add(Linear::new(1, 64))
        .add(Tanh)
        .add(Linear::new(64, 64))
        .add(Tanh)
        .add(Linear::new(64, 1));
    let mut opt = Sgd::new(model.parameters(), 0.02);
    let steps = if short { 100 } else { 3000 };

    let mut first_loss = f32::NAN;
    for step in 0..steps {
        opt.zero_grad();
        let loss = model.forward(&x).mse_loss(&y);
        loss.backward();
        opt.step();
        if step == 0 {
            first_loss = loss.item();
        }
        if step % (steps / 10) == 0 || step + 1 == steps {
            println!("step {step:5}  loss {:.5}", loss.item());
        }
    }
    let final_loss = no_grad(|| model.forward(&x).mse_loss(&y)).item();
    println!("loss: {first_loss:.4} -> {final_loss:.5} after {steps} steps");
    if !short {
        assert!(final_loss < first_loss / 10.0, "the loss did not fall");
    }
}
