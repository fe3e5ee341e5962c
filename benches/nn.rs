//! The nn layers on the shapes of the digits CNN (issue 11's W6 model:
//! 8×8 images, batch 64, Conv2d(1, 16, 3, padding 1), ReLU, MaxPool2d(2),
//! Conv2d(16, 32, 3, padding 1), ReLU, MaxPool2d(2), Flatten,
//! Linear(128, 10)), each layer's forward+backward alone and a whole SGD
//! step, plus a LayerNorm. One line per figure, `<name> <metric> <value>`,
//! medians of repeated runs, as `benches/workloads.rs`.
//!
//! Run: `cargo bench --bench nn` (all) or `cargo bench --bench nn -- conv1
//! cnn` (some).

use std::time::Instant;
use tapegrad::nn::{Conv2d, Flatten, LayerNorm, Linear, MaxPool2d, Module, ReLU, Sequential};
use tapegrad::prelude::*;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

/// Median seconds of `runs` calls of `f`, after `warmup` calls.
fn time(warmup: usize, runs: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn report(name: &str, metric: &str, value: f64) {
    println!("{name} {metric} {value:.3}");
}

/// Median µs of a forward of `layer` on `x` and a backward of a random
/// gradient of the output's shape (as a layer inside a network receives).
fn layer_fwd_bwd_us(layer: &dyn Module<f32>, x: &Tensor<f32>) -> f64 {
    let upstream = Tensor::randn(layer.forward(x).shape());
    let secs = time(20, 200, || {
        layer.forward(x).backward_with(&upstream);
        layer.parameters().iter().for_each(Tensor::zero_grad);
        x.zero_grad();
    });
    secs * 1e6
}

/// conv1: 64 images 1×8×8 (an input: no gradient) into 16 channels.
fn conv1() {
    let conv = Conv2d::new(1, 16, 3).padding(1);
    let x = Tensor::randn(&[64, 1, 8, 8]);
    report("conv1", "fwd_bwd_us", layer_fwd_bwd_us(&conv, &x));
}

/// conv2: 16×4×4 (after the first pooling, needing a gradient) into 32.
fn conv2() {
    let conv = Conv2d::new(16, 32, 3).padding(1);
    let x = Tensor::randn(&[64, 16, 4, 4]).set_requires_grad(true);
    report("conv2", "fwd_bwd_us", layer_fwd_bwd_us(&conv, &x));
}

/// pool1: the first 2×2 max pooling, on 64×16×8×8.
fn pool1() {
    let x = Tensor::randn(&[64, 16, 8, 8]).set_requires_grad(true);
    report("pool1", "fwd_bwd_us", layer_fwd_bwd_us(&MaxPool2d::new(2), &x));
}

/// layer_norm: LayerNorm(256) on 128 rows (a small transformer's shape).
fn layer_norm() {
    let x = Tensor::randn(&[128, 256]).set_requires_grad(true);
    report(
        "layer_norm",
        "fwd_bwd_us",
        layer_fwd_bwd_us(&LayerNorm::new(&[256]), &x),
    );
}

/// cnn: the whole model, cross-entropy, backward and an SGD update (lr
/// 0.01), per step of a batch of 64.
fn cnn() {
    let model = Sequential::new()
        .add(Conv2d::new(1, 16, 3).padding(1))
        .add(ReLU)
        .add(MaxPool2d::new(2))
        .add(Conv2d::new(16, 32, 3).padding(1))
        .add(ReLU)
        .add(MaxPool2d::new(2))
        .add(Flatten)
        .add(Linear::new(128, 10));
    let x = Tensor::randn(&[64, 1, 8, 8]);
    let labels: Vec<usize> = (0..64).map(|i| (i * 7 + 3) % 10).collect();
    let params = model.parameters();
    let step = || {
        model.forward(&x).cross_entropy(&labels).backward();
        tapegrad::no_grad(|| {
            for p in &params {
                p.sub_(&(p.grad().unwrap() * 0.01));
                p.zero_grad();
            }
        });
    };
    report("cnn", "ms_per_step", time(10, 100, step) * 1e3);
}

fn main() {
    tapegrad::manual_seed(0);
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let all: [(&str, fn()); 5] = [
        ("conv1", conv1),
        ("conv2", conv2),
        ("pool1", pool1),
        ("layer_norm", layer_norm),
        ("cnn", cnn),
    ];
    for (name, run) in all {
        if wanted.is_empty() || wanted.iter().any(|w| w == name) {
            run();
        }
    }
}
