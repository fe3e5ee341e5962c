//! Checkpointing's memory, measured: against a counting global allocator
//! (the heap) and against `memory::peak_saved_bytes`.
//!
//! The allocator's counters and `memory::saved_bytes` are process-wide, so
//! the tests of this file take one lock: none runs beside another.

use std::sync::{Arc, Mutex, MutexGuard};
use tapegrad::memory::{peak_saved_bytes, reset_peak, saved_bytes, CountingAllocator};
use tapegrad::prelude::*;
use tapegrad::Layer;

#[global_allocator]
static HEAP: CountingAllocator = CountingAllocator;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn alone() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// `depth` blocks x -> tanh(x @ w) with [width, width] weights that require
/// grad.
fn blocks(depth: usize, width: usize) -> (Vec<Tensor<f32>>, Vec<Layer<f32>>) {
    tapegrad::manual_seed(3);
    let scale = 1.0 / (width as f32).sqrt();
    let weights: Vec<Tensor<f32>> = (0..depth)
        .map(|_| {
            (Tensor::<f32>::randn(&[width, width]) * scale)
                .detach()
                .set_requires_grad(true)
        })
        .collect();
    let layers = weights
        .iter()
        .map(|w| {
            let w = w.clone();
            Arc::new(move |h: &Tensor<f32>| h.matmul(&w).tanh()) as Layer<f32>
        })
        .collect();
    (weights, layers)
}

/// Heap and saved-bytes peaks above their baselines during forward and
/// backward of `forward(x).sum()`, and the weights' gradients.
fn measure(weights: &[Tensor<f32>], forward: impl Fn() -> Tensor<f32>) -> (usize, usize, Vec<Vec<f32>>) {
    // The weights' gradients exist before the step (as in a training loop
    // that accumulates): the backward adds into them in place, so the heap
    // peak measures the activations, not 32 MiB of new gradient buffers.
    for w in weights {
        w.zero_grad();
        w.sum().backward();
    }
    let saved0 = saved_bytes();
    let ((), heap) = CountingAllocator::peak_during(|| {
        reset_peak();
        forward().sum().backward();
    });
    let saved = peak_saved_bytes() - saved0;
    assert_eq!(saved_bytes(), saved0, "backward released what was saved");
    let grads = weights.iter().map(|w| w.grad().unwrap().to_vec()).collect();
    (heap, saved, grads)
}

#[test]
fn a_checkpoint_every_8_of_32_blocks_halves_the_heap_peak() {
    let _alone = alone();
    let (weights, layers) = blocks(32, 512);
    let x = Tensor::<f32>::randn(&[256, 512]);
    let (plain_heap, plain_saved, plain_grads) =
        measure(&weights, || layers.iter().fold(x.clone(), |h, f| f(&h)));
    let (ckpt_heap, ckpt_saved, ckpt_grads) =
        measure(&weights, || tapegrad::checkpoint_sequential(&layers, 4, &x));
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    println!(
        "heap peak above baseline: plain {:.2} MiB, checkpointed {:.2} MiB ({:.0}%); saved bytes peak: \
         plain {:.2} MiB, checkpointed {:.2} MiB ({:.0}%)",
        mib(plain_heap),
        mib(ckpt_heap),
        100.0 * ckpt_heap as f64 / plain_heap as f64,
        mib(plain_saved),
        mib(ckpt_saved),
        100.0 * ckpt_saved as f64 / plain_saved as f64
    );
    assert!(plain_grads == ckpt_grads, "the same gradients, bitwise");
    let activation = 256 * 512 * 4;
    assert_eq!(plain_saved, 32 * activation, "plain: every tanh output");
    assert!(
        2 * ckpt_heap <= plain_heap,
        "heap: {ckpt_heap} > 50% of {plain_heap}"
    );
    assert!(
        2 * ckpt_saved <= plain_saved,
        "saved: {ckpt_saved} > 50% of {plain_saved}"
    );
    // 3 checkpointed segments keep their inputs (the first is the leaf x),
    // the plain last segment its input and 8 outputs: 11 of 32.
    assert_eq!(ckpt_saved, 11 * activation);
}

#[test]
fn the_planners_prediction_bounds_the_measured_peak() {
    let _alone = alone();
    let (weights, layers) = blocks(12, 64);
    let x = Tensor::<f32>::randn(&[32, 64]);
    let activation = 32 * 64 * 4;
    let plain = {
        let plan = tapegrad::plan_checkpoints(&layers, usize::MAX, &x);
        assert_eq!(plan.recomputed_layers, 0);
        assert_eq!(plan.segments.len(), 1);
        plan.predicted_peak_bytes
    };
    let mut prev_recomputed = 0;
    for budget in [plain, 9 * activation, 7 * activation, 6 * activation] {
        let plan = tapegrad::plan_checkpoints(&layers, budget, &x);
        let (_, measured, _) = measure(&weights, || plan.run(&layers, &x));
        println!("{plan}\nmeasured peak: {measured} bytes");
        assert!(plan.predicted_peak_bytes <= budget);
        assert!(
            measured <= plan.predicted_peak_bytes,
            "measured {measured} > predicted {}",
            plan.predicted_peak_bytes
        );
        assert!(
            measured >= plan.predicted_peak_bytes - activation,
            "the model is tight: measured {measured}, predicted {}",
            plan.predicted_peak_bytes
        );
        assert!(
            plan.recomputed_layers >= prev_recomputed,
            "a smaller budget recomputes more"
        );
        prev_recomputed = plan.recomputed_layers;
    }
    assert!(prev_recomputed > 0);
}

#[test]
fn a_segment_frees_its_input_once_its_backward_is_done() {
    // Segments of 8, 2 and 2 blocks. When the first re-runs (8 outputs),
    // the later segments' inputs must be gone already: the peak is the
    // first segment's re-run, 8 outputs, not 8 plus the 2 later inputs.
    let _alone = alone();
    let (weights, layers) = blocks(12, 64);
    let x = Tensor::<f32>::randn(&[32, 64]);
    let activation = 32 * 64 * 4;
    let segment = |from: usize, to: usize, h: &Tensor<f32>| {
        let part: Vec<Layer<f32>> = layers[from..to].to_vec();
        tapegrad::checkpoint(
            move |xs| part.iter().fold(xs[0].clone(), |h, f| f(&h)),
            &[h.clone()],
        )
    };
    let (_, peak, _) = measure(&weights, || {
        let h = segment(0, 8, &x);
        let h = segment(8, 10, &h);
        segment(10, 12, &h)
    });
    assert_eq!(peak, 8 * activation);
}
