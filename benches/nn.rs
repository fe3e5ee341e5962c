//! The nn layers on the shapes of the digits CNN (issue 11's W6 model,
//! `examples/common/digits_cnn.rs`, on a batch of 64 8×8 images): each
//! layer's forward+backward alone and the whole model's, plus a LayerNorm.
//! One line per figure, `<name> <metric> <value>`, medians of repeated
//! runs, as `benches/workloads.rs`, whose W6 is the model's training step.
//!
//! Run: `cargo bench --bench nn` (all) or `cargo bench --bench nn -- conv1
//! cnn` (some).

mod common;
#[path = "../examples/common/digits_cnn.rs"]
mod digits_cnn;

use common::{report, run_named, time};
use digits_cnn::digits_cnn;
use tapegrad::nn::{Conv2d, LayerNorm, MaxPool2d, Module};
use tapegrad::prelude::*;

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

/// cnn: the whole model on a batch of 64, forward and backward (its
/// training step with the loss and an Adam update is W6).
fn cnn() {
    let x = Tensor::randn(&[64, 1, 8, 8]);
    report("cnn", "fwd_bwd_us", layer_fwd_bwd_us(&digits_cnn(), &x));
}

fn main() {
    tapegrad::manual_seed(0);
    run_named(&[
        ("conv1", conv1),
        ("conv2", conv2),
        ("pool1", pool1),
        ("layer_norm", layer_norm),
        ("cnn", cnn),
    ]);
}
