//! Long runs: 10,000 training steps of the two-moons MLP (as
//! `examples/moons.rs`: 2-32-32-2, Adam, minibatches of 32) hold flat
//! memory: the heap (a counting global allocator) and the bytes the graph
//! saves are the same after step 10,000 as after step 1,000. Nothing may
//! grow per step: not a tape, not optimizer state, not a cache.
//!
//! The counters are process-wide, so the run happens in a child process
//! (nothing else measures there). The 1,000,000-op graph on a 2 MiB stack
//! is `tests/deep_chain.rs` (forward, backward and drop, each in a child
//! process); ops of other graph shapes are `tests/graph_drop.rs`.

mod common;

use common::in_child_process;
use std::time::{Duration, Instant};
use tapegrad::memory::{saved_bytes, CountingAllocator};
use tapegrad::nn::{Linear, Module, ReLU, Sequential};
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::prelude::*;

#[global_allocator]
static HEAP: CountingAllocator = CountingAllocator;

const STEPS: usize = 10_000;
const BATCH: usize = 32;
/// Heap bytes a run may drift by between step 1,000 and step 10,000 (it
/// drifts by 0 today): room for a one-time growth somewhere, while 9,000
/// steps of a leak of even one byte each would be 9,000.
const HEAP_SLACK: usize = 1024;

/// `n` points of two moons (noise 0.1) and their labels, as in
/// `examples/moons.rs`.
fn make_moons(n: usize) -> (Tensor<f32>, Vec<usize>) {
    let angles = (Tensor::<f32>::rand(&[n]) * std::f32::consts::PI).to_vec();
    let jitter = (Tensor::<f32>::randn(&[n, 2]) * 0.1).to_vec();
    let labels: Vec<usize> = (0..n).map(|i| i % 2).collect();
    let mut points = Vec::with_capacity(2 * n);
    for (i, &t) in angles.iter().enumerate() {
        let (x, y) = match labels[i] {
            0 => (t.cos(), t.sin()),
            _ => (1.0 - t.cos(), 0.5 - t.sin()),
        };
        points.extend([x + jitter[2 * i], y + jitter[2 * i + 1]]);
    }
    (Tensor::from_vec(points, &[n, 2]), labels)
}

/// What one step leaves behind, measured after it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Footprint {
    /// Heap bytes live after the step (the graph dropped).
    live: usize,
    /// `saved_bytes()` after the forward, while the graph is alive.
    saved_in_step: usize,
    /// `saved_bytes()` after the step.
    saved_after: usize,
}

#[test]
fn ten_thousand_moons_steps_hold_flat_memory() {
    in_child_process(
        "ten_thousand_moons_steps_hold_flat_memory",
        Duration::from_secs(600),
        moons_run,
    );
}

/// The run of [`ten_thousand_moons_steps_hold_flat_memory`], in the child.
fn moons_run() {
    tapegrad::manual_seed(0);
    let (x, labels) = make_moons(800);
    let model = Sequential::new()
        .add(Linear::new(2, 32))
        .add(ReLU)
        .add(Linear::new(32, 32))
        .add(ReLU)
        .add(Linear::new(32, 2));
    let mut opt = Adam::new(model.parameters(), 0.01);
    let batches: Vec<(Tensor<f32>, Vec<usize>)> = (0..800 / BATCH)
        .map(|b| {
            let rows: Vec<usize> = (b * BATCH..(b + 1) * BATCH).collect();
            let targets = rows.iter().map(|&r| labels[r]).collect();
            (x.index_select(0, &rows), targets)
        })
        .collect();

    // allocated up front, so that their growth is not counted as the run's
    let mut marks = Vec::with_capacity(2);
    let mut peaks = Vec::with_capacity(2);
    let mut losses = Vec::with_capacity(STEPS / 1000);
    let start = Instant::now();
    for step in 1..=STEPS {
        let (xb, yb) = &batches[step % batches.len()];
        opt.zero_grad();
        let loss = model.forward(xb).cross_entropy(yb);
        let saved_in_step = saved_bytes();
        loss.backward();
        opt.step();
        if step % 1000 == 0 {
            losses.push(loss.item());
        }
        drop(loss);
        if step == 1000 || step == STEPS {
            marks.push(Footprint {
                live: CountingAllocator::live(),
                saved_in_step,
                saved_after: saved_bytes(),
            });
        }
        // the heap's high-water mark over steps 1,001..=2,000 and over the
        // last 1,000
        if step == 1000 || step == STEPS - 1000 {
            CountingAllocator::reset_peak();
        }
        if step == 2000 || step == STEPS {
            peaks.push(CountingAllocator::peak());
        }
    }
    let (at_1000, at_end) = (marks[0], marks[1]);
    println!(
        "{STEPS} steps in {:.1} s; after step 1,000: {at_1000:?}; after step {STEPS}: {at_end:?}; \
         heap peak over steps 1,001..=2,000: {} B, over the last 1,000: {} B; \
         loss every 1,000 steps: {losses:?}",
        start.elapsed().as_secs_f64(),
        peaks[0],
        peaks[1],
    );

    assert!(
        at_1000.saved_in_step > 0,
        "the forward saves values for backward: the measurement sees the graph"
    );
    assert_eq!(
        at_end.saved_in_step, at_1000.saved_in_step,
        "saved bytes of one step grew"
    );
    assert_eq!(at_1000.saved_after, 0, "a finished step leaves nothing saved");
    assert_eq!(at_end.saved_after, 0, "a finished step leaves nothing saved");
    assert!(
        at_end.live <= at_1000.live + HEAP_SLACK,
        "the heap grew by {} B from step 1,000 to step {STEPS}",
        at_end.live - at_1000.live
    );
    assert!(
        peaks[1] <= peaks[0] + HEAP_SLACK,
        "the heap's peak within a step grew from {} B to {} B",
        peaks[0],
        peaks[1]
    );
    // and the model learned: the loss is far below ln 2 at the end
    let last = *losses.last().expect("losses recorded");
    assert!(last < 0.01, "loss after {STEPS} steps is {last}: {losses:?}");
}
