//! Two moons: an MLP learns to separate two interleaved, noisy half circles
//! (scikit-learn's `make_moons`, noise 0.1), trained with Adam on shuffled
//! minibatches. Shows a progress bar with the running loss, writes the loss
//! curve (`target/moons_loss.svg`) and the learned decision boundary
//! (`target/moons_boundary.svg`), saves the trained weights
//! (`target/moons.safetensors`), and ends with the held-out accuracy.
//!
//! Run: `cargo run --release --example moons`
//! (`TAPEGRAD_EXAMPLE_SHORT=1` trains a few epochs only, for CI).

mod common;

use common::{accuracy, output_path, plot_losses, predict, progress, short_mode, subset, train_epoch};
use plotters::prelude::*;
use std::error::Error;
use tapegrad::data::Batches;
use tapegrad::nn::{save_safetensors, Linear, Module, ReLU, Sequential};
use tapegrad::optim::Adam;
use tapegrad::Tensor;

/// `n` points of two moons with Gaussian noise of standard deviation
/// `noise`: class 0 on the upper half circle around (0, 0), class 1 on the
/// lower one around (1, 0.5). Rows `[n, 2]` and labels, in random order.
fn make_moons(n: usize, noise: f32) -> (Tensor<f32>, Vec<usize>) {
    let angles = (Tensor::<f32>::rand(&[n]) * std::f32::consts::PI).to_vec();
    let jitter = (Tensor::<f32>::randn(&[n, 2]) * noise).to_vec();
    let labels: Vec<usize> = (0..n).map(|i| i % 2).collect();
    let mut points = Vec::with_capacity(2 * n);
    for (i, (&t, &class)) in angles.iter().zip(&labels).enumerate() {
        let (x, y) = if class == 0 {
            (t.cos(), t.sin())
        } else {
            (1.0 - t.cos(), 0.5 - t.sin())
        };
        points.push(x + jitter[2 * i]);
        points.push(y + jitter[2 * i + 1]);
    }
    (Tensor::from_vec(points, &[n, 2]), labels)
}

fn main() -> Result<(), Box<dyn Error>> {
    tapegrad::manual_seed(0);
    let short = short_mode();

    // 1000 points: 800 to train on, 200 held out.
    let (x, labels) = make_moons(1000, 0.1);
    let order = tapegrad::randperm(1000);
    let (x_train, y_train) = subset(&x, &labels, &order[..800]);
    let (x_test, y_test) = subset(&x, &labels, &order[800..]);

    let model = Sequential::new()
        .add(Linear::new(2, 32))
        .add(ReLU)
        .add(Linear::new(32, 32))
        .add(ReLU)
        .add(Linear::new(32, 2));
    let mut opt = Adam::new(model.parameters(), 0.01);
    let batches = Batches::new(800, 32).shuffle(true);

    let epochs = if short { 3 } else { 60 };
    let bar = progress(epochs);
    let mut losses = Vec::with_capacity(epochs);
    for _ in 0..epochs {
        let loss = train_epoch(&model, &mut opt, &x_train, &y_train, &batches);
        losses.push(loss);
        bar.set_message(format!("loss {loss:.4}"));
        bar.inc(1);
    }
    bar.finish();
    println!(
        "training loss: {:.4} -> {:.4} after {epochs} epochs",
        losses[0],
        losses[epochs - 1]
    );

    let loss_svg = output_path("moons_loss.svg");
    plot_losses(&loss_svg, "two moons: MLP 2-32-32-2, Adam", &[("train", &losses)])?;
    let boundary_svg = output_path("moons_boundary.svg");
    plot_boundary(&model, &x_test, &y_test, &boundary_svg)?;
    let weights = output_path("moons.safetensors");
    save_safetensors(&model, &weights)?;
    println!(
        "wrote {}, {} and {}",
        loss_svg.display(),
        boundary_svg.display(),
        weights.display()
    );

    let acc = accuracy(&model, &x_test, &y_test);
    println!("test accuracy: {:.1}%", 100.0 * acc);
    if !short {
        assert!(acc >= 0.97, "held-out accuracy {acc} is below 97%");
    }
    Ok(())
}

/// The plane coloured by the class the model predicts, with the held-out
/// points on top.
fn plot_boundary(
    model: &dyn Module<f32>,
    x: &Tensor<f32>,
    labels: &[usize],
    path: &std::path::Path,
) -> Result<(), Box<dyn Error>> {
    let (x_range, y_range) = ((-1.5f32, 2.5f32), (-1.0f32, 1.5f32));
    let cells = 80;
    let (dx, dy) = (
        (x_range.1 - x_range.0) / cells as f32,
        (y_range.1 - y_range.0) / cells as f32,
    );
    // The centre of every cell, one row each, classified in one batch.
    let mut grid = Vec::with_capacity(2 * cells * cells);
    for j in 0..cells {
        for i in 0..cells {
            grid.push(x_range.0 + (i as f32 + 0.5) * dx);
            grid.push(y_range.0 + (j as f32 + 0.5) * dy);
        }
    }
    let classes = predict(model, &Tensor::from_vec(grid.clone(), &[cells * cells, 2]));

    let root = SVGBackend::new(path, (640, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "two moons: decision boundary and held-out points",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(36)
        .build_cartesian_2d(x_range.0..x_range.1, y_range.0..y_range.1)?;
    chart.configure_mesh().disable_mesh().draw()?;
    let light = [RGBColor(198, 219, 239), RGBColor(252, 208, 162)];
    let dark = [RGBColor(33, 102, 172), RGBColor(217, 95, 2)];
    chart.draw_series(classes.iter().enumerate().map(|(k, &c)| {
        let (cx, cy) = (grid[2 * k], grid[2 * k + 1]);
        let corners = [(cx - dx / 2.0, cy - dy / 2.0), (cx + dx / 2.0, cy + dy / 2.0)];
        Rectangle::new(corners, light[c].filled())
    }))?;
    let points = x.to_vec();
    chart.draw_series(
        labels
            .iter()
            .enumerate()
            .map(|(k, &c)| Circle::new((points[2 * k], points[2 * k + 1]), 3, dark[c].filled())),
    )?;
    root.present()?;
    Ok(())
}
