//! W7, optimizer overhead: one Adam step over 100 parameters of 1,000
//! elements each (f32, PyTorch's defaults), gradients in place. Printed as
//! `<workload> <metric> <value>` like benches/workloads.rs; the time is the
//! median of repeated steps. `benches/pytorch_optim.py` measures the same
//! in PyTorch.
//!
//! Run: `cargo bench --bench optim`.

use std::time::Instant;
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::prelude::*;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

/// W7: Adam's step over 100 × [1000] f32 parameters.
fn w7() {
    let params: Vec<Tensor<f32>> = (0..100)
        .map(|_| Tensor::<f32>::randn(&[1000]).set_requires_grad(true))
        .collect();
    // a gradient for each parameter: Σ p ⊙ c has gradient c
    let loss = params
        .iter()
        .map(|p| (p * Tensor::<f32>::randn(&[1000])).sum())
        .reduce(|a, b| a + b)
        .expect("parameters");
    loss.backward();
    drop(loss);
    let mut opt = Adam::new(params, 1e-3);
    for _ in 0..50 {
        opt.step();
    }
    let times = (0..1000)
        .map(|_| {
            let t = Instant::now();
            opt.step();
            t.elapsed().as_secs_f64()
        })
        .collect();
    println!("W7 us_per_step {:.6}", median(times) * 1e6);
}

fn main() {
    tapegrad::manual_seed(0);
    w7();
}
