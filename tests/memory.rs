//! `memory::saved_bytes` against a counting global allocator.
//!
//! The counters are process-wide, so this file holds a single test: nothing
//! else runs in this process while it measures.

use tapegrad::memory::{peak_saved_bytes, reset_peak, saved_bytes, CountingAllocator};
use tapegrad::prelude::*;

#[global_allocator]
static HEAP: CountingAllocator = CountingAllocator;

const N: usize = 1 << 16; // elements per tensor: 256 KiB in f32
const BYTES: usize = N * 4;

/// Forward of a chain of `depth` ops that each save one fresh buffer, with
/// every intermediate handle dropped: what stays alive is what the graph
/// saved.
fn chain(x: &Tensor<f32>, depth: usize) -> Tensor<f32> {
    let mut y = x.clone();
    for _ in 0..depth {
        y = y.tanh(); // saves its output
    }
    y.sum()
}

#[test]
fn saved_bytes_matches_the_heap() {
    let x = Tensor::<f32>::rand(&[N]).set_requires_grad(true);
    let w = Tensor::<f32>::rand(&[N]).set_requires_grad(true);

    // Leaves are excluded: an op on two leaves saves only user memory.
    let before = saved_bytes();
    let prod = &x * &w;
    assert_eq!(saved_bytes(), before, "saving leaves must not count");
    drop(prod);
    // Freed buffers of 64 KiB and more are cached for reuse: give them back
    // to the heap, so that the heap shows only what the graph holds.
    tapegrad::memory::empty_cache();

    // A chain: the heap held by the graph is the saved buffers (plus small
    // per-node bookkeeping), and saved_bytes says so.
    let depth = 8;
    let heap0 = CountingAllocator::live();
    let saved0 = saved_bytes();
    reset_peak();
    let loss = chain(&x, depth);
    let heap_graph = CountingAllocator::live() - heap0;
    let saved = saved_bytes() - saved0;
    assert_eq!(saved, depth * BYTES, "each tanh output saved once");
    assert!(
        heap_graph >= saved,
        "the saved buffers are really on the heap: {heap_graph} < {saved}"
    );
    assert!(
        heap_graph <= saved + depth * 1024,
        "the graph holds more than its saved values: heap {heap_graph}, saved {saved}"
    );
    assert_eq!(peak_saved_bytes(), saved0 + saved);

    // Backward frees the saved values; dropping the output frees the rest.
    loss.backward();
    assert_eq!(
        saved_bytes(),
        saved0,
        "backward without retain_graph frees what was saved"
    );
    drop(loss);
    tapegrad::memory::empty_cache();
    let grad_bytes = x.grad().map(|g| g.numel() * 4).unwrap_or(0);
    // What may remain besides x's gradient buffer: its handle and this
    // thread's small bookkeeping (a few hundred bytes each; a leaked
    // activation would be 256 KiB).
    assert!(
        CountingAllocator::live() <= heap0 + grad_bytes + 4096,
        "heap not back after backward and drop: {} over the baseline",
        CountingAllocator::live() - heap0
    );
    assert_eq!(
        peak_saved_bytes(),
        saved0 + depth * BYTES,
        "the peak survives the release"
    );
    x.zero_grad();

    // One buffer saved several times (by several nodes, and through a view)
    // counts once.
    let saved0 = saved_bytes();
    let h = x.exp(); // saves h (output)
    let h2 = &h * &h; // saves h twice (inputs 0 and 1)
    let ht = h.reshape(&[N / 2, 2]).t(); // views of h
    let h3 = ht.powf(2.0); // saves a view of h
    let extra = saved_bytes() - saved0;
    // h (once), plus h2 and h3 save nothing fresh of their own.
    assert_eq!(extra, BYTES, "h counted once although saved four times");
    let l = h2.sum() + h3.sum();
    drop((h, h2, ht, h3));
    l.backward_opts(BackwardOptions {
        retain_graph: true,
        ..Default::default()
    });
    assert_eq!(saved_bytes() - saved0, BYTES, "retain_graph keeps them");
    drop(l);
    assert_eq!(saved_bytes(), saved0, "dropping the graph releases them");

    // A result that takes over an operand's buffer outside the graph (under
    // no_grad) is a leaf: saving it does not count either.
    let w = Tensor::<f32>::ones(&[N]).set_requires_grad(true);
    let v = tapegrad::no_grad(|| w * 2.0);
    let y = &x * &v; // saves v, for x's gradient
    assert_eq!(saved_bytes(), saved0, "v is a leaf's data, not the graph's");
    drop(y);

    // Dropout's mask is a constant made only for the backward: it counts,
    // though it is not an op's output.
    let y = x.dropout(0.5, true);
    assert_eq!(saved_bytes() - saved0, BYTES, "the mask, N elements");
    drop(y);
    assert_eq!(saved_bytes(), saved0);

    // An owned operand that the backward does not need is written over:
    // `h * &c` (c a constant) takes h's buffer, where `h * &w` (w needs a
    // gradient, so h is saved) needs a new one.
    let (c, w) = (
        Tensor::<f32>::rand(&[N]),
        Tensor::<f32>::rand(&[N]).set_requires_grad(true),
    );
    let (hc, peak) = CountingAllocator::peak_during(|| (&x * 2.0) * &c);
    assert!(peak < 2 * BYTES, "one buffer for x · 2 · c, peak {peak}");
    let (hw, peak) = CountingAllocator::peak_during(|| (&x * 2.0) * &w);
    assert!(peak >= 2 * BYTES, "h is saved for w's gradient, peak {peak}");
    drop((hc, hw));
    // Unrecorded, an owned constant becomes the result itself.
    let (twice, peak) = CountingAllocator::peak_during(|| Tensor::<f32>::ones(&[N]) * 2.0);
    assert!(peak < 2 * BYTES, "one buffer for ones · 2, peak {peak}");
    assert_eq!(twice.to_vec()[0], 2.0);

    // Dropping a graph releases what it saved at once, also the first
    // graph a thread drops (nodes are freed by a loop, not recursively).
    let before = saved_bytes();
    std::thread::spawn(|| {
        let before = saved_bytes();
        let x = Tensor::<f32>::rand(&[N]).set_requires_grad(true);
        let y = x.exp().exp(); // two nodes, each saving its output
        assert_eq!(saved_bytes() - before, 2 * BYTES);
        drop(y);
        assert_eq!(saved_bytes(), before, "the first graph dropped on a thread");
    })
    .join()
    .unwrap();
    assert_eq!(saved_bytes(), before);
}
