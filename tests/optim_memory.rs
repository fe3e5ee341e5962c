//! In-place updates allocate nothing: the fused helpers on an unshared
//! tensor, and warm optimizer steps, measured with a counting global
//! allocator.
//!
//! The allocator's counters are process-wide, so this file holds a single
//! test: nothing else runs in this process while it measures.

use tapegrad::memory::CountingAllocator;
use tapegrad::optim::{Adam, AdamW, Optimizer, Sgd};
use tapegrad::prelude::*;

#[global_allocator]
static HEAP: CountingAllocator = CountingAllocator;

const N: usize = 1 << 14; // elements per parameter: 64 KiB in f32
const BYTES: usize = N * 4;

/// At most this many bytes may appear on the heap during an update that
/// should allocate no buffer: room for bookkeeping, far below one buffer
/// (64 KiB). With 256 here, about one run in eight measured 900 bytes on
/// a busy 2-core machine (and none of 40 with `TAPEGRAD_NUM_THREADS=1`);
/// their source was not found, and no buffer is that small.
const SMALL: usize = 4096;

#[test]
fn inplace_updates_and_warm_optimizer_steps_allocate_no_buffer() {
    // ---- the fused helpers, on an unshared tensor
    let x = Tensor::<f32>::rand(&[N]);
    let a = Tensor::<f32>::rand(&[N]);
    let b = Tensor::<f32>::rand(&[N]) + 1.0;
    let two = Tensor::scalar(2.0f32);
    let ((), peak) = CountingAllocator::peak_during(|| {
        x.add_scalar_(0.5);
        x.mul_scalar_(0.9);
        x.addcmul_(&a, &b, 0.1);
        x.addcdiv_(&a, &b, -0.1);
        x.add_(&a);
        x.addcmul_(&a, &two, 0.5); // a broadcast operand
    });
    assert!(
        peak <= SMALL,
        "in-place helpers on an unshared tensor allocated {peak} bytes"
    );
    // control: a view holds the buffer, so the write must copy it (and the
    // measurement sees that copy)
    let view = x.detach();
    let ((), peak) = CountingAllocator::peak_during(|| x.addcmul_(&a, &b, 0.1));
    assert!(peak >= BYTES, "a shared buffer is copied: {peak} bytes");
    drop(view);

    // ---- warm optimizer steps over several parameters
    let params: Vec<Tensor<f32>> = (0..8)
        .map(|_| Tensor::<f32>::randn(&[N]).set_requires_grad(true))
        .collect();
    let loss = || {
        params
            .iter()
            .map(|p| (p * p).sum())
            .reduce(|a, b| a + b)
            .expect("parameters")
    };
    let optimizers: Vec<(&str, Box<dyn Optimizer<f32>>)> = vec![
        ("Adam", Box::new(Adam::new(params.clone(), 1e-3))),
        (
            "Adam weight_decay amsgrad",
            Box::new(Adam::new(params.clone(), 1e-3).weight_decay(0.1).amsgrad(true)),
        ),
        ("AdamW", Box::new(AdamW::new(params.clone(), 1e-3))),
        ("Sgd", Box::new(Sgd::new(params.clone(), 1e-3))),
        (
            "Sgd momentum nesterov",
            Box::new(
                Sgd::new(params.clone(), 1e-3)
                    .momentum(0.9)
                    .nesterov(true)
                    .weight_decay(0.01),
            ),
        ),
    ];
    for (name, mut opt) in optimizers {
        opt.zero_grad();
        loss().backward(); // the graph is dropped here: nothing shares a parameter
        opt.step(); // the first step makes the optimizer's state
        let before = params[0].with_array(|v| v.as_ptr() as usize);
        let ((), peak) = CountingAllocator::peak_during(|| {
            opt.step();
            opt.step();
        });
        println!("{name}: a warm step allocated at most {peak} bytes");
        assert!(
            peak <= SMALL,
            "{name}: a warm step allocated {peak} bytes (a parameter is {BYTES})"
        );
        assert_eq!(
            params[0].with_array(|v| v.as_ptr() as usize),
            before,
            "{name}: updated in place"
        );
    }
}
