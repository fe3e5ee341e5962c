//! The UCI 8×8 hand-written digits (`examples/data/digits.csv.gz`): an MLP
//! and a small CNN trained with Adam on shuffled minibatches, each to at
//! least 95% held-out accuracy (the CNN is `examples/common/digits_cnn.rs`,
//! which the benches measure too). The trained CNN is saved as safetensors
//! (`target/digits_cnn.safetensors`), loaded into a fresh model and checked
//! to score the same; the loss curves go to `target/digits_loss.svg`.
//!
//! Run: `cargo run --release --example digits`
//! (`TAPEGRAD_EXAMPLE_SHORT=1` trains one epoch only, for CI).

mod common;

use common::digits_cnn::digits_cnn;
use common::{accuracy, load_digits, output_path, plot_losses, progress, short_mode, subset, train_epoch};
use std::error::Error;
use tapegrad::data::Batches;
use tapegrad::nn::{load_safetensors, save_safetensors, Linear, Module, ReLU, Sequential};
use tapegrad::optim::Adam;
use tapegrad::Tensor;

/// Linear 64→128, ReLU, Linear 128→10.
fn new_mlp() -> Sequential {
    Sequential::new()
        .add(Linear::new(64, 128))
        .add(ReLU)
        .add(Linear::new(128, 10))
}

/// Trains `model` on `(x, labels)` for `epochs` with Adam (lr 0.003,
/// batches of 64); returns the mean loss of each epoch.
fn fit(name: &str, model: &Sequential, x: &Tensor<f32>, labels: &[usize], epochs: usize) -> Vec<f32> {
    let mut opt = Adam::new(model.parameters(), 0.003);
    let batches = Batches::new(labels.len(), 64).shuffle(true);
    let bar = progress(epochs);
    let mut losses = Vec::with_capacity(epochs);
    for _ in 0..epochs {
        let loss = train_epoch(model, &mut opt, x, labels, &batches);
        losses.push(loss);
        bar.set_message(format!("{name} loss {loss:.4}"));
        bar.inc(1);
    }
    bar.finish();
    losses
}

fn main() -> Result<(), Box<dyn Error>> {
    tapegrad::manual_seed(0);
    let short = short_mode();
    let epochs = if short { 1 } else { 40 };

    // 1797 images: 1437 to train on, 360 held out.
    let (x, labels) = load_digits()?;
    let n = labels.len();
    let order = tapegrad::randperm(n);
    let (train, test) = order.split_at(n - 360);
    let (x_train, y_train) = subset(&x, &labels, train);
    let (x_test, y_test) = subset(&x, &labels, test);
    // The CNN sees the same rows as 1-channel 8×8 images.
    let as_images = |rows: &Tensor<f32>| rows.reshape(&[rows.shape()[0], 1, 8, 8]);

    let mlp = new_mlp();
    let mlp_losses = fit("MLP", &mlp, &x_train, &y_train, epochs);
    let mlp_acc = accuracy(&mlp, &x_test, &y_test);
    println!("MLP 64-128-10: test accuracy {:.1}%", 100.0 * mlp_acc);

    let cnn = digits_cnn();
    let cnn_losses = fit("CNN", &cnn, &as_images(&x_train), &y_train, epochs);
    let cnn_acc = accuracy(&cnn, &as_images(&x_test), &y_test);
    println!("CNN: test accuracy {:.1}%", 100.0 * cnn_acc);

    // The trained weights, saved and loaded into a fresh model.
    let weights = output_path("digits_cnn.safetensors");
    save_safetensors(&cnn, &weights)?;
    let reloaded = digits_cnn();
    load_safetensors(&reloaded, &weights)?;
    let reloaded_acc = accuracy(&reloaded, &as_images(&x_test), &y_test);
    assert_eq!(reloaded_acc, cnn_acc, "the reloaded CNN scores differently");
    println!("saved {} and loaded it back: same accuracy", weights.display());

    let loss_svg = output_path("digits_loss.svg");
    plot_losses(
        &loss_svg,
        "UCI digits: training loss",
        &[("MLP", &mlp_losses), ("CNN", &cnn_losses)],
    )?;
    println!("wrote {}", loss_svg.display());

    if !short {
        assert!(mlp_acc >= 0.95, "MLP held-out accuracy {mlp_acc} is below 95%");
        assert!(cnn_acc >= 0.95, "CNN held-out accuracy {cnn_acc} is below 95%");
    }
    println!("test accuracy: {:.1}%", 100.0 * cnn_acc);
    Ok(())
}
