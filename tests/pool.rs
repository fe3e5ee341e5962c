//! Large buffers freed by one training step are reused by the next, so a
//! steady loop takes no new memory from the system (and pays no page faults
//! for it). Process-wide heap counters: one test in this file.

use tapegrad::memory::CountingAllocator;
use tapegrad::prelude::*;

#[global_allocator]
static HEAP: CountingAllocator = CountingAllocator;

#[test]
fn a_warm_training_step_reuses_its_buffers() {
    tapegrad::manual_seed(0);
    let x = Tensor::<f32>::randn(&[128, 256]);
    let w1 = (Tensor::<f32>::randn(&[256, 256]) * 0.05)
        .detach()
        .set_requires_grad(true);
    let b1 = Tensor::<f32>::zeros(&[256]).set_requires_grad(true);
    let w2 = (Tensor::<f32>::randn(&[256, 10]) * 0.05)
        .detach()
        .set_requires_grad(true);
    let labels: Vec<usize> = (0..128).map(|i| i % 10).collect();
    let step = || {
        let h = (x.matmul(&w1) + &b1).relu();
        let loss = h.matmul(&w2).cross_entropy(&labels);
        loss.backward();
        tapegrad::no_grad(|| {
            for p in [&w1, &b1, &w2] {
                p.sub_(&(p.grad().unwrap() * 0.01));
                p.zero_grad();
            }
        });
    };
    // The heap a step takes beyond what is live before it (matrixmultiply's
    // packing buffers are part of it, cache or not).
    let growth = || {
        let live = CountingAllocator::live();
        CountingAllocator::reset_peak();
        step();
        CountingAllocator::peak() - live
    };
    step();
    tapegrad::memory::empty_cache();
    let cold = growth();
    let cached = tapegrad::memory::cached_bytes();
    let warm = growth();
    // The step's activations and gradients are 128 and 256 KiB buffers: a
    // warm step finds them in the cache instead of taking new memory, and
    // gives back as much as it takes.
    assert!(
        warm + (256 << 10) <= cold,
        "a warm step took {warm} new bytes at its peak, a cold one {cold}"
    );
    assert_eq!(
        tapegrad::memory::cached_bytes(),
        cached,
        "a steady loop's cache does not grow"
    );
    assert!(
        cached >= 4 * (128 << 10),
        "the step's buffers are cached: {cached} bytes"
    );
    let live = CountingAllocator::live();
    tapegrad::memory::empty_cache();
    assert_eq!(tapegrad::memory::cached_bytes(), 0);
    assert!(
        CountingAllocator::live() + cached <= live,
        "empty_cache gives the memory back"
    );

    // peak_during starts from an empty cache: a buffer that a cached one of
    // the same length would have served shows on the heap.
    drop(Tensor::<f32>::zeros(&[1 << 16]));
    assert!(tapegrad::memory::cached_bytes() >= 256 << 10);
    let (t, peak) = CountingAllocator::peak_during(|| Tensor::<f32>::zeros(&[1 << 16]));
    assert!(peak >= 256 << 10, "the new buffer's {peak} bytes show");
    drop(t);
}
