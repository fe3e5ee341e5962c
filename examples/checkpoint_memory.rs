//! Gradient checkpointing, measured: a deep tanh MLP trained one step with
//! several strategies. Prints a table (peak memory, time, recomputation) and
//! writes a plot of saved memory against time during one forward and
//! backward (`target/checkpoint_memory.svg`).
//!
//! Run: `cargo run --release --example checkpoint_memory`
//! (`-- --depth 64 --width 256 --batch 128` to change the model;
//! `TAPEGRAD_EXAMPLE_SHORT=1` makes the default model small, for CI).

mod common;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tapegrad::memory::{peak_saved_bytes, reset_peak, saved_bytes, CountingAllocator};
use tapegrad::prelude::*;
use tapegrad::{Layer, Plan};

#[global_allocator]
static HEAP: CountingAllocator = CountingAllocator;

const MIB: f64 = (1 << 20) as f64;

enum Strategy {
    Plain,
    Sequential(usize),
    SaveDots(usize),
    Planned(Plan),
}

fn run(layers: &[Layer<f32>], x: &Tensor<f32>, s: &Strategy) -> Tensor<f32> {
    match s {
        Strategy::Plain => layers.iter().fold(x.clone(), |h, f| f(&h)),
        Strategy::Sequential(n) => tapegrad::checkpoint_sequential(layers, *n, x),
        Strategy::SaveDots(n) => {
            let opts = CheckpointOptions {
                policy: CheckpointPolicy::SaveDots,
            };
            tapegrad::checkpoint_sequential_with(layers, *n, x, opts)
        }
        Strategy::Planned(plan) => plan.run(layers, x),
    }
}

/// `memory::saved_bytes` sampled by a second thread while `f` runs:
/// (milliseconds since the start, MiB).
fn trace(f: impl FnOnce()) -> Vec<(f64, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let base = saved_bytes();
    let start = Instant::now();
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut points = Vec::with_capacity(1 << 16);
            while !stop.load(Ordering::Relaxed) {
                let bytes = saved_bytes().saturating_sub(base);
                points.push((start.elapsed().as_secs_f64() * 1e3, bytes as f64 / MIB));
                std::thread::sleep(Duration::from_micros(100));
            }
            points
        })
    };
    f();
    let end = start.elapsed().as_secs_f64() * 1e3;
    stop.store(true, Ordering::Relaxed);
    let mut samples = sampler.join().expect("sampler");
    samples.push((end, saved_bytes().saturating_sub(base) as f64 / MIB));
    // The value moves in steps: keep the corners only.
    let mut points: Vec<(f64, f64)> = Vec::new();
    for (t, mib) in samples {
        match points.last() {
            Some(&(_, last)) if last == mib => {}
            Some(&(_, last)) => points.extend([(t, last), (t, mib)]),
            None => points.push((t, mib)),
        }
    }
    points.push((end, points.last().map_or(0.0, |p| p.1)));
    points
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

/// A line plot of several series, as an SVG document.
fn svg(title: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let (w, h, left, right, top, bottom) = (960.0, 540.0, 70.0, 250.0, 40.0, 50.0);
    let xmax = series.iter().flat_map(|s| &s.1).map(|p| p.0).fold(1e-9, f64::max);
    let ymax = series.iter().flat_map(|s| &s.1).map(|p| p.1).fold(1e-9, f64::max) * 1.05;
    let (pw, ph) = (w - left - right, h - top - bottom);
    let px = |x: f64| left + pw * x / xmax;
    let py = |y: f64| top + ph * (1.0 - y / ymax);
    let colors = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf",
    ];
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(out, r#"<text x="{left}" y="24" font-size="15">{title}</text>"#);
    for i in 0..=5 {
        let (xv, yv) = (xmax * i as f64 / 5.0, ymax * i as f64 / 5.0);
        let _ = writeln!(
            out,
            r##"<line x1="{x}" y1="{top}" x2="{x}" y2="{b}" stroke="#ddd"/><text x="{x}" y="{t}" text-anchor="middle">{xv:.0}</text>"##,
            x = px(xv),
            b = top + ph,
            t = top + ph + 18.0
        );
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{y}" x2="{r}" y2="{y}" stroke="#ddd"/><text x="{l}" y="{ty}" text-anchor="end">{yv:.1}</text>"##,
            y = py(yv),
            r = left + pw,
            l = left - 6.0,
            ty = py(yv) + 4.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">time since the start of the step (ms)</text>"#,
        left + pw / 2.0,
        h - 10.0
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(18 {}) rotate(-90)" text-anchor="middle">saved for backward (MiB)</text>"#,
        top + ph / 2.0
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{}"/>"#,
            path.join(" ")
        );
        let ly = top + 10.0 + 20.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{a}" y1="{ly}" x2="{b}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{c}" y="{t}">{name}</text>"#,
            a = left + pw + 15.0,
            b = left + pw + 40.0,
            c = left + pw + 46.0,
            t = ly + 4.0
        );
    }
    out.push_str("</svg>\n");
    out
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn main() {
    let (depth, width, batch) = if common::short_mode() {
        (8, 64, 32)
    } else {
        (32, 512, 256)
    };
    let (depth, width, batch) = (
        arg("--depth", depth),
        arg("--width", width),
        arg("--batch", batch),
    );
    tapegrad::manual_seed(0);
    let scale = 1.0 / (width as f32).sqrt();
    let params: Vec<(Tensor<f32>, Tensor<f32>)> = (0..depth)
        .map(|_| {
            let w = (Tensor::<f32>::randn(&[width, width]) * scale)
                .detach()
                .set_requires_grad(true);
            (w, Tensor::<f32>::zeros(&[width]).set_requires_grad(true))
        })
        .collect();
    let layers: Vec<Layer<f32>> = params
        .iter()
        .map(|(w, b)| {
            let (w, b) = (w.clone(), b.clone());
            Arc::new(move |h: &Tensor<f32>| (h.matmul(&w) + &b).tanh()) as Layer<f32>
        })
        .collect();
    let x = Tensor::<f32>::randn(&[batch, width]);
    let zero = || {
        params
            .iter()
            .for_each(|(w, b)| [w, b].iter().for_each(|p| p.zero_grad()))
    };

    println!("What one block saves for backward:");
    tapegrad::print_saved_residuals(|xs| layers[1](&layers[0](&xs[0])), &[x.clone()]);
    println!();

    let sqrt = ((depth as f64).sqrt().round() as usize).max(1);
    let plain_bytes = tapegrad::plan_checkpoints(&layers, usize::MAX, &x).predicted_peak_bytes;
    let minimum = tapegrad::try_plan_checkpoints(&layers, 0, &x)
        .map(|p| p.predicted_peak_bytes)
        .unwrap_or_else(|e| e.minimum_bytes);
    let half = tapegrad::plan_checkpoints(&layers, plain_bytes / 2, &x);
    let frugal = tapegrad::plan_checkpoints(&layers, minimum, &x);
    println!("The planner, at half the plain peak:\n{half}\n");
    println!("The planner, at the smallest budget it can meet:\n{frugal}\n");
    let strategies = [
        ("no checkpoints".to_string(), Strategy::Plain),
        (format!("{sqrt} segments (~sqrt n)"), Strategy::Sequential(sqrt)),
        (format!("{sqrt} segments, SaveDots"), Strategy::SaveDots(sqrt)),
        ("planner, 50% budget".to_string(), Strategy::Planned(half)),
        ("planner, minimum budget".to_string(), Strategy::Planned(frugal)),
    ];

    println!(
        "{depth} blocks of tanh(x @ W + b), W: [{width}, {width}], batch {batch}, f32; one step = forward + backward"
    );
    println!(
        "(peak heap: above the heap before the forward, the gradients' buffers being allocated already)"
    );
    println!(
        "{:<26} {:>15} {:>14} {:>9} {:>19} {:>13}",
        "strategy", "peak saved MiB", "peak heap MiB", "ms/step", "recomputed matmuls", "re-run saves"
    );
    let mut series = Vec::new();
    for (name, s) in &strategies {
        // Memory of one step. The weights' gradients exist before it (the
        // backward adds into them in place), so that the heap's peak shows
        // the activations rather than the gradients' buffers.
        zero();
        params
            .iter()
            .for_each(|(w, b)| [w, b].iter().for_each(|p| p.sum().backward()));
        let ((recomputed, peak_saved), peak_heap) = CountingAllocator::peak_during(|| {
            let saved0 = saved_bytes();
            reset_peak();
            let counts = tapegrad::recompute_counts();
            run(&layers, &x, s).sum().backward();
            let recomputed = tapegrad::recompute_counts() - counts;
            (recomputed, (peak_saved_bytes() - saved0) as f64 / MIB)
        });
        let peak_heap = peak_heap as f64 / MIB;
        // Time (median of 3 steps, gradients set to None before each).
        let ms = median(
            (0..3)
                .map(|_| {
                    zero();
                    let t = Instant::now();
                    run(&layers, &x, s).sum().backward();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect(),
        );
        println!(
            "{name:<26} {peak_saved:>15.1} {peak_heap:>14.1} {ms:>9.1} {:>19} {:>13}",
            recomputed.matmuls, recomputed.saves
        );
        zero();
        series.push((name.clone(), trace(|| run(&layers, &x, s).sum().backward())));
    }
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_string());
    let path = std::path::Path::new(&dir).join("checkpoint_memory.svg");
    let title =
        format!("Saved activations during one step: {depth} x tanh(Linear({width}, {width})), batch {batch}");
    std::fs::create_dir_all(&dir).expect("the target directory");
    std::fs::write(&path, svg(&title, &series)).expect("writing the plot");
    println!("\nplot of saved memory against time: {}", path.display());
}
