//! Fits a small MLP to a noisy sine wave with hand-written SGD, printing the
//! loss as it falls. Everything is the crate's own ops: matmul, broadcasting
//! `+`, `tanh`, `powf`, `mean`, and in-place updates under `no_grad`.
//!
//! Run: `cargo run --release --example regression`

use tapegrad::prelude::*;

/// A dense layer: `x @ w + b`.
struct Linear {
    w: Tensor<f32>,
    b: Tensor<f32>,
}

impl Linear {
    fn new(fan_in: usize, fan_out: usize) -> Self {
        // LeCun-style init keeps tanh units out of saturation.
        let scale = (1.0 / fan_in as f32).sqrt();
        let w = tapegrad::no_grad(|| Tensor::randn(&[fan_in, fan_out]) * scale);
        Linear {
            w: w.set_requires_grad(true),
            b: Tensor::zeros(&[fan_out]).set_requires_grad(true),
        }
    }

    fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
        x.matmul(&self.w) + &self.b
    }

    fn params(&self) -> [&Tensor<f32>; 2] {
        [&self.w, &self.b]
    }
}

fn main() {
    tapegrad::manual_seed(0);

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

    let layers = [Linear::new(1, 64), Linear::new(64, 64), Linear::new(64, 1)];
    let lr = 0.02f32;
    let steps = 3000;

    let first_loss = loop_steps(&layers, &x, &y, lr, steps);
    let final_loss = mse(&forward(&layers, &x), &y).item();
    println!("loss: {first_loss:.4} -> {final_loss:.5} after {steps} steps");
    assert!(final_loss < first_loss / 10.0, "the loss did not fall");
}

fn forward(layers: &[Linear], x: &Tensor<f32>) -> Tensor<f32> {
    let mut h = x.clone();
    for (i, layer) in layers.iter().enumerate() {
        h = layer.forward(&h);
        if i + 1 < layers.len() {
            h = h.tanh();
        }
    }
    h
}

fn mse(pred: &Tensor<f32>, target: &Tensor<f32>) -> Tensor<f32> {
    (pred - target).powf(2.0).mean()
}

/// Runs `steps` of full-batch SGD; returns the first loss.
fn loop_steps(layers: &[Linear], x: &Tensor<f32>, y: &Tensor<f32>, lr: f32, steps: usize) -> f32 {
    let mut first = f32::NAN;
    for step in 0..steps {
        let loss = mse(&forward(layers, x), y);
        loss.backward();
        tapegrad::no_grad(|| {
            for p in layers.iter().flat_map(Linear::params) {
                let g = p.grad().expect("every parameter gets a gradient");
                p.sub_(&(g * lr));
                p.zero_grad();
            }
        });
        if step == 0 {
            first = loss.item();
        }
        if step % 300 == 0 || step + 1 == steps {
            println!("step {step:5}  loss {:.5}", loss.item());
        }
    }
    first
}
