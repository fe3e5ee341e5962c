//! What the training examples share: the short mode for CI, the digits
//! data, one epoch of minibatch training, accuracy, the progress bar, the
//! loss plot, and the digits CNN.

// Each example is its own crate and uses only part of this module.
#![allow(dead_code)]

use flate2::read::GzDecoder;
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use std::error::Error;
use std::io::Read;
use std::path::PathBuf;
use tapegrad::data::Batches;
use tapegrad::nn::Module;
use tapegrad::optim::Optimizer;
use tapegrad::Tensor;

pub mod digits_cnn;

/// `TAPEGRAD_EXAMPLE_SHORT=1`: a few steps only, so that CI runs every
/// example; results are printed but not asserted.
pub fn short_mode() -> bool {
    std::env::var("TAPEGRAD_EXAMPLE_SHORT").is_ok_and(|v| v == "1")
}

/// `target/<name>` in the repository (created if missing), where the
/// examples write their plots and weights.
pub fn output_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&dir).expect("create target/");
    dir.join(name)
}

/// The UCI digits (`examples/data/digits.csv.gz`): the images as rows
/// `[n, 64]` scaled to [0, 1], and their digits.
pub fn load_digits() -> Result<(Tensor<f32>, Vec<usize>), Box<dyn Error>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/digits.csv.gz");
    let mut text = String::new();
    GzDecoder::new(std::fs::File::open(path)?).read_to_string(&mut text)?;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for (line_no, line) in text.lines().enumerate() {
        let fields: Vec<f32> = line.split(',').map(str::parse).collect::<Result<_, _>>()?;
        if fields.len() != 65 {
            return Err(format!("{path}:{}: {} fields, expected 65", line_no + 1, fields.len()).into());
        }
        pixels.extend(fields[..64].iter().map(|p| p / 16.0));
        labels.push(fields[64] as usize);
    }
    Ok((Tensor::from_vec(pixels, &[labels.len(), 64]), labels))
}

/// The rows `idx` of a data set: those rows of `x` and their labels.
pub fn subset(x: &Tensor<f32>, labels: &[usize], idx: &[usize]) -> (Tensor<f32>, Vec<usize>) {
    (x.index_select(0, idx), idx.iter().map(|&i| labels[i]).collect())
}

/// One epoch of minibatch training: for each batch of row indices, the
/// cross-entropy of `model` on those rows of `x` against their labels,
/// backward, and an optimizer step. Returns the mean loss over the batches.
pub fn train_epoch(
    model: &dyn Module<f32>,
    opt: &mut dyn Optimizer<f32>,
    x: &Tensor<f32>,
    labels: &[usize],
    batches: &Batches,
) -> f32 {
    model.train();
    let mut total = 0.0;
    for idx in batches {
        let (xb, yb) = subset(x, labels, &idx);
        opt.zero_grad();
        let loss = model.forward(&xb).cross_entropy(&yb);
        loss.backward();
        opt.step();
        total += loss.item();
    }
    total / batches.len() as f32
}

/// The class `model` predicts for each row of `x` (eval mode, no graph).
pub fn predict(model: &dyn Module<f32>, x: &Tensor<f32>) -> Vec<usize> {
    model.eval();
    let logits = tapegrad::no_grad(|| model.forward(x));
    logits.argmax_dim(1, false).into_raw_vec_and_offset().0
}

/// The fraction of rows of `x` whose predicted class is the label.
pub fn accuracy(model: &dyn Module<f32>, x: &Tensor<f32>, labels: &[usize]) -> f32 {
    let hits = predict(model, x)
        .iter()
        .zip(labels)
        .filter(|(p, y)| p == y)
        .count();
    hits as f32 / labels.len() as f32
}

/// A progress bar over `epochs`, showing the running loss as its message.
/// (indicatif draws nothing when stderr is not a terminal, as in CI.)
pub fn progress(epochs: usize) -> ProgressBar {
    let bar = ProgressBar::new(epochs as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} epoch {pos}/{len} {msg} [{elapsed_precise}]")
            .expect("a valid template"),
    );
    bar
}

/// Draws the loss per epoch of each named run as an SVG line plot.
pub fn plot_losses(path: &PathBuf, title: &str, runs: &[(&str, &[f32])]) -> Result<(), Box<dyn Error>> {
    let epochs = runs.iter().map(|(_, l)| l.len()).max().unwrap_or(1).max(2);
    let top = runs
        .iter()
        .flat_map(|(_, l)| l.iter())
        .fold(0f32, |a, &b| a.max(b));
    let root = SVGBackend::new(path, (640, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(1f32..epochs as f32, 0f32..top * 1.05)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("training loss")
        .draw()?;
    let colors = [BLUE, RED, GREEN];
    for (i, (name, losses)) in runs.iter().enumerate() {
        let color = colors[i % colors.len()];
        let points = losses.iter().enumerate().map(|(e, &l)| (e as f32 + 1.0, l));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    Ok(())
}
