//! Large buffers freed by one training step are reused by the next, so a
//! steady loop takes no new memory from the system (and pays no page faults
//! for it); the cache is one for the process, bounded, and emptied whole.
//! Process-wide heap counters and cache: the tests take turns ([`serial`]).

use std::sync::{Barrier, Mutex, MutexGuard, PoisonError};
use tapegrad::memory::{cached_bytes, empty_cache, CountingAllocator};
use tapegrad::prelude::*;

#[global_allocator]
static HEAP: CountingAllocator = CountingAllocator;

/// Held by each test while it runs, so that no other test's buffers move the
/// counters.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A tensor of `bytes` zeros whose pages are never touched (`vec!` of zeros
/// asks the allocator for zeroed memory, which the kernel maps lazily): the
/// heap counts it, the resident set does not.
fn untouched(bytes: usize) -> Tensor<f32> {
    Tensor::from_vec(vec![0.0; bytes / 4], &[bytes / 4])
}

/// Runs `threads` threads that each make a tensor of `bytes`, drop it once
/// all have made theirs (the cache keeps no more than was live at once),
/// and then wait while `f` runs, so that nothing they cached can go with
/// their exit.
fn with_threads_that_dropped(threads: usize, bytes: usize, f: impl FnOnce()) {
    let made = Barrier::new(threads);
    let dropped = Barrier::new(threads + 1);
    let done = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let t = untouched(bytes);
                made.wait();
                drop(t);
                dropped.wait();
                done.wait();
            });
        }
        dropped.wait();
        // The threads are let go even if `f` fails.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        done.wait();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    });
}

#[test]
fn empty_cache_frees_the_buffers_of_every_thread() {
    let _serial = serial();
    empty_cache();
    let bytes = 1 << 20;
    let live = CountingAllocator::live();
    with_threads_that_dropped(2, bytes, || {
        assert_eq!(cached_bytes(), 2 * bytes, "cached_bytes counts every thread's");
        assert!(CountingAllocator::live() >= live + 2 * bytes);
        empty_cache();
        assert_eq!(cached_bytes(), 0);
        assert!(
            CountingAllocator::live() < live + bytes,
            "empty_cache on this thread frees what the others cached: {} bytes still on the heap",
            CountingAllocator::live() - live
        );
    });
}

#[test]
fn the_cache_is_bounded_for_the_whole_process() {
    let _serial = serial();
    empty_cache();
    let limit = tapegrad::memory::cache_limit();
    let bytes = limit / 10 * 4; // a multiple of 4, of which two fit
    let live = CountingAllocator::live();
    with_threads_that_dropped(4, bytes, || {
        let cached = CountingAllocator::live().saturating_sub(live);
        assert!(
            cached <= limit,
            "4 threads each dropped {bytes} bytes: {cached} bytes are kept, over the limit of {limit}"
        );
        assert_eq!(cached_bytes(), 2 * bytes, "two fit");
    });
    // A lower limit frees the oldest buffers over it; 0 turns the cache off.
    empty_cache();
    let (older, newer) = (untouched(1 << 20), untouched(2 << 20));
    drop(older);
    drop(newer);
    assert_eq!(cached_bytes(), 3 << 20);
    tapegrad::memory::set_cache_limit(2 << 20);
    assert_eq!(cached_bytes(), 2 << 20, "the oldest buffer went first");
    tapegrad::memory::set_cache_limit(0);
    assert_eq!(cached_bytes(), 0);
    drop(untouched(1 << 20));
    assert_eq!(cached_bytes(), 0, "nothing is cached under a limit of 0");
    tapegrad::memory::set_cache_limit(limit);
}

#[test]
fn a_warm_training_step_reuses_its_buffers() {
    let _serial = serial();
    empty_cache();
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

/// `depth` blocks tanh(h @ W + b), W [width, width]: the weights, and the
/// blocks as layers.
fn blocks(depth: usize, width: usize) -> (Vec<Tensor<f32>>, Vec<tapegrad::Layer<f32>>) {
    let mut params = Vec::new();
    let mut layers: Vec<tapegrad::Layer<f32>> = Vec::new();
    for _ in 0..depth {
        let w = (Tensor::<f32>::randn(&[width, width]) * (1.0 / width as f32).sqrt())
            .detach()
            .set_requires_grad(true);
        let b = Tensor::<f32>::zeros(&[width]).set_requires_grad(true);
        params.extend([w.clone(), b.clone()]);
        layers.push(std::sync::Arc::new(move |h: &Tensor<f32>| {
            (h.matmul(&w) + &b).tanh()
        }));
    }
    (params, layers)
}

#[test]
fn the_cache_never_raises_a_steps_heap_peak() {
    let _serial = serial();
    tapegrad::manual_seed(0);
    let limit = tapegrad::memory::cache_limit();
    let mut over = Vec::new();
    // W4 in small: activations [batch, width] are freed through the backward
    // while the weights' gradients, [width, width], another length, are
    // made (or, when they exist already, while products' gradients are made
    // and added into them). The products stay under the size that tapegrad
    // splits over threads, so that each peak is the same at every run.
    for (depth, width, batch) in [(16, 128, 192), (8, 192, 96)] {
        let (params, layers) = blocks(depth, width);
        let x = Tensor::<f32>::randn(&[batch, width]);
        // Allocations the cache does not see: matrixmultiply's packing
        // buffer in a product (a 256 × 64 block of the left operand and a
        // 256 × 1024 one of the right, at most), and buffers under 64 KiB.
        let unseen = 4 * width.max(batch).min(256) * (64 + width) + (64 << 10);
        for segments in [0, 2] {
            for grads_exist in [false, true] {
                // The heap's peak during one step from an empty cache,
                // above the heap before it.
                let peak = |cache: usize| {
                    tapegrad::memory::set_cache_limit(cache);
                    for p in &params {
                        p.zero_grad();
                        if grads_exist {
                            p.sum().backward();
                        }
                    }
                    let ((), peak) = CountingAllocator::peak_during(|| {
                        let y = match segments {
                            0 => layers.iter().fold(x.clone(), |h, f| f(&h)),
                            s => tapegrad::checkpoint_sequential(&layers, s, &x),
                        };
                        y.sum().backward();
                    });
                    peak
                };
                let (without, with) = (peak(0), peak(limit));
                if with > without + unseen {
                    over.push(format!(
                        "{depth} x Linear({width}, {width}), batch {batch}, {segments} segments, \
                         gradients {}: {with} bytes with the cache, {without} without",
                        if grads_exist { "exist" } else { "made" }
                    ));
                }
            }
        }
    }
    tapegrad::memory::set_cache_limit(limit);
    assert!(
        over.is_empty(),
        "the cache raised the step's peak:\n{}",
        over.join("\n")
    );
}
