//! W4 in full: gradient checkpointing's memory and time.
//!
//! 32 blocks of (Linear(1024, 1024) + tanh), batch 256, f32, forward and
//! backward, for: no checkpoint; `checkpoint_sequential` with 6 segments
//! (round(√32), PyTorch's choice) and with 4 (√32 = 5.7 lies between 4 and
//! 8 segments of 8 and 4 layers); `CheckpointPolicy::SaveDots` on the 6
//! segments; and the planner at three budgets (75% and 50% of the plain
//! peak, and the 4-segment plan's peak). For each: the median time of a
//! step, the saved bytes at the end of the forward, their peak, and the peak
//! of the heap above the pre-forward baseline, with the weights' gradients
//! allocated by the backward (128 MiB), the same with the buffer cache off
//! (`memory::set_cache_limit(0)`), and with them allocated beforehand (the
//! backward adds into them in place), which shows the activations.
//!
//! Then the scaling: the peak of saved bytes at depth 16, 64 and 256
//! (width 256, batch 256) without checkpoints and with √n segments, and the
//! fitted exponent of each.
//!
//! Run: `cargo bench --bench checkpoint` (add `-- quick` for fewer timing
//! rounds). Each figure is also printed as `W4 <metric> <value>`.

mod common;

use common::fit::loglog_slope;
use common::median;
use std::sync::Arc;
use std::time::Instant;
use tapegrad::memory::{peak_saved_bytes, reset_peak, saved_bytes, CountingAllocator};
use tapegrad::prelude::*;
use tapegrad::{Layer, Plan};

#[global_allocator]
static HEAP: CountingAllocator = CountingAllocator;

const MIB: f64 = (1 << 20) as f64;

struct Net {
    params: Vec<Tensor<f32>>,
    layers: Vec<Layer<f32>>,
}

/// `depth` blocks tanh(x @ w + b), w: [width, width].
fn net(depth: usize, width: usize) -> Net {
    let scale = 1.0 / (width as f32).sqrt();
    let mut params = Vec::new();
    let mut layers = Vec::new();
    for _ in 0..depth {
        let w = (Tensor::<f32>::randn(&[width, width]) * scale)
            .detach()
            .set_requires_grad(true);
        let b = Tensor::<f32>::zeros(&[width]).set_requires_grad(true);
        params.extend([w.clone(), b.clone()]);
        layers.push(Arc::new(move |h: &Tensor<f32>| (h.matmul(&w) + &b).tanh()) as Layer<f32>);
    }
    Net { params, layers }
}

enum Strategy {
    Plain,
    Sequential(usize),
    SaveDots(usize),
    Planned(Box<Plan>),
}

impl Strategy {
    fn forward(&self, net: &Net, x: &Tensor<f32>) -> Tensor<f32> {
        match self {
            Strategy::Plain => net.layers.iter().fold(x.clone(), |h, f| f(&h)),
            Strategy::Sequential(s) => tapegrad::checkpoint_sequential(&net.layers, *s, x),
            Strategy::SaveDots(s) => {
                let opts = CheckpointOptions {
                    policy: CheckpointPolicy::SaveDots,
                };
                tapegrad::checkpoint_sequential_with(&net.layers, *s, x, opts)
            }
            Strategy::Planned(plan) => plan.run(&net.layers, x),
        }
    }
}

struct Memory {
    forward_saved: usize,
    peak_saved: usize,
    heap_with_grads: usize,
    heap_with_grads_no_cache: usize,
    heap_without_grads: usize,
}

/// One step, measured: `grads_exist` decides whether the weights'
/// gradients are allocated before the forward.
fn step_memory(net: &Net, x: &Tensor<f32>, s: &Strategy, grads_exist: bool) -> (usize, usize, usize) {
    for p in &net.params {
        p.zero_grad();
        if grads_exist {
            p.sum().backward();
        }
    }
    let ((forward, peak_saved), heap) = CountingAllocator::peak_during(|| {
        let saved0 = saved_bytes();
        reset_peak();
        let loss = s.forward(net, x).sum();
        let forward = saved_bytes() - saved0;
        loss.backward();
        (forward, peak_saved_bytes() - saved0)
    });
    (forward, peak_saved, heap)
}

fn memory(net: &Net, x: &Tensor<f32>, s: &Strategy) -> Memory {
    let (forward_saved, peak_saved, heap_with_grads) = step_memory(net, x, s, false);
    let (_, _, heap_without_grads) = step_memory(net, x, s, true);
    let limit = tapegrad::memory::cache_limit();
    tapegrad::memory::set_cache_limit(0);
    let (_, _, heap_with_grads_no_cache) = step_memory(net, x, s, false);
    tapegrad::memory::set_cache_limit(limit);
    Memory {
        forward_saved,
        peak_saved,
        heap_with_grads,
        heap_with_grads_no_cache,
        heap_without_grads,
    }
}

fn report(metric: &str, value: f64) {
    common::report("W4", metric, value);
}

fn w4(rounds: usize) {
    tapegrad::manual_seed(0);
    let (depth, width, batch) = (32, 1024, 256);
    let net = net(depth, width);
    let x = Tensor::<f32>::randn(&[batch, width]);

    let plain_peak = memory(&net, &x, &Strategy::Plain).peak_saved;
    let four_peak = memory(&net, &x, &Strategy::Sequential(4)).peak_saved;
    let mut strategies: Vec<(String, Strategy)> = vec![
        ("plain".into(), Strategy::Plain),
        ("sqrt_n_6_segments".into(), Strategy::Sequential(6)),
        ("sqrt_n_4_segments".into(), Strategy::Sequential(4)),
        ("save_dots_6_segments".into(), Strategy::SaveDots(6)),
    ];
    for (name, budget) in [
        ("planner_75pct", plain_peak * 3 / 4),
        ("planner_50pct", plain_peak / 2),
        ("planner_at_4_segments_peak", four_peak),
    ] {
        let plan = tapegrad::plan_checkpoints(&net.layers, budget, &x);
        println!("{name}: {plan}\n");
        strategies.push((name.into(), Strategy::Planned(Box::new(plan))));
    }

    // Time: rounds interleave the strategies, so that drift on a shared
    // machine hits them alike; the gradients are set to None each step (as
    // PyTorch's zero_grad).
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); strategies.len()];
    let mut recomputed = vec![tapegrad::RecomputeCounts::default(); strategies.len()];
    for round in 0..=rounds {
        for (i, (_, s)) in strategies.iter().enumerate() {
            net.params.iter().for_each(Tensor::zero_grad);
            let counts = tapegrad::recompute_counts();
            let t = Instant::now();
            s.forward(&net, &x).sum().backward();
            let secs = t.elapsed().as_secs_f64();
            if round > 0 {
                times[i].push(secs); // round 0 warms up
            }
            recomputed[i] = tapegrad::recompute_counts() - counts;
        }
    }
    let plain_ms = median(times[0].clone()) * 1e3;
    println!(
        "W4: 32 x (Linear(1024,1024) + tanh), batch 256, f32; median of {rounds} steps (forward + backward)\n"
    );
    println!(
        "{:<28} {:>9} {:>7} {:>14} {:>7} {:>13} {:>16} {:>16} {:>19} {:>9}",
        "strategy",
        "ms/step",
        "x plain",
        "fwd saved MiB",
        "% plain",
        "peak saved MiB",
        "heap, grads MiB",
        "same, no cache",
        "heap, no grads MiB",
        "re-run mm"
    );
    let plain_fwd = memory(&net, &x, &Strategy::Plain).forward_saved as f64;
    for (i, (name, s)) in strategies.iter().enumerate() {
        let m = memory(&net, &x, s);
        let ms = median(times[i].clone()) * 1e3;
        println!(
            "{name:<28} {ms:>9.1} {:>7.2} {:>14.1} {:>7.1} {:>13.1} {:>16.1} {:>16.1} {:>19.1} {:>9}",
            ms / plain_ms,
            m.forward_saved as f64 / MIB,
            100.0 * m.forward_saved as f64 / plain_fwd,
            m.peak_saved as f64 / MIB,
            m.heap_with_grads as f64 / MIB,
            m.heap_with_grads_no_cache as f64 / MIB,
            m.heap_without_grads as f64 / MIB,
            recomputed[i].matmuls
        );
        report(&format!("{name}_ms"), ms);
        report(&format!("{name}_time_ratio"), ms / plain_ms);
        report(&format!("{name}_forward_saved_mib"), m.forward_saved as f64 / MIB);
        report(
            &format!("{name}_forward_saved_pct_of_plain"),
            100.0 * m.forward_saved as f64 / plain_fwd,
        );
        report(&format!("{name}_peak_saved_mib"), m.peak_saved as f64 / MIB);
        report(
            &format!("{name}_peak_heap_with_grads_mib"),
            m.heap_with_grads as f64 / MIB,
        );
        report(
            &format!("{name}_peak_heap_with_grads_no_cache_mib"),
            m.heap_with_grads_no_cache as f64 / MIB,
        );
        report(
            &format!("{name}_peak_heap_without_grads_mib"),
            m.heap_without_grads as f64 / MIB,
        );
    }
    println!();
}

fn scaling() {
    tapegrad::manual_seed(1);
    let (width, batch) = (256, 256);
    let mut plain = Vec::new();
    let mut sqrt = Vec::new();
    for depth in [16, 64, 256] {
        let net = net(depth, width);
        let x = Tensor::<f32>::randn(&[batch, width]);
        let segments = (depth as f64).sqrt().round() as usize;
        plain.push((depth, memory(&net, &x, &Strategy::Plain).peak_saved));
        sqrt.push((
            depth,
            memory(&net, &x, &Strategy::Sequential(segments)).peak_saved,
        ));
    }
    println!("scaling: peak saved MiB at width 256, batch 256");
    println!("{:>6} {:>10} {:>14}", "depth", "plain", "sqrt_n segs");
    for (p, s) in plain.iter().zip(&sqrt) {
        println!("{:>6} {:>10.1} {:>14.1}", p.0, p.1 as f64 / MIB, s.1 as f64 / MIB);
    }
    let (ep, es) = (loglog_slope(&plain), loglog_slope(&sqrt));
    println!("fitted exponent: plain {ep:.3}, sqrt_n segments {es:.3}");
    report("scaling_exponent_plain", ep);
    report("scaling_exponent_sqrt_n", es);
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    w4(if quick { 3 } else { 9 });
    scaling();
}
