//! The seven workloads of benches/README.md. Each figure is printed as one
//! machine-readable line: `<workload> <metric> <value>`; times are medians.
//!
//! Run: `cargo bench --bench workloads` (all) or `cargo bench --bench
//! workloads -- W1 W3` (some).

mod common;
#[path = "../examples/common/digits_cnn.rs"]
mod digits_cnn;

use common::{median, report, run_named, time};
use digits_cnn::digits_cnn;
use std::sync::Arc;
use std::time::Instant;
use tapegrad::nn::{Linear, Module};
use tapegrad::optim::{Adam, Optimizer, Sgd};
use tapegrad::prelude::*;

/// A line `<field>: <n> kB` of /proc/self/status, in bytes.
fn status_bytes(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kb: usize = line
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("a number of kB");
    kb << 10
}

extern "C" {
    /// glibc: gives the heap's free memory back to the system.
    fn malloc_trim(pad: usize) -> i32;
}

/// The peak resident set during `f` above the resident set before it, in
/// bytes: VmHWM after resetting it to the current VmRSS (by writing 5 to
/// /proc/self/clear_refs), as `benches/pytorch_ref.py` measures PyTorch.
/// Memory that earlier steps freed but glibc kept is given back first
/// (`malloc_trim`), so that the step cannot hide its peak in it. Linux and
/// glibc only.
fn peak_rss_during(f: impl FnOnce()) -> usize {
    // SAFETY: malloc_trim only releases free memory of glibc's heaps.
    unsafe { malloc_trim(0) };
    let before = status_bytes("VmRSS");
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM");
    f();
    status_bytes("VmHWM") - before
}

/// W1: 10,000 × y = tanh(y * 1.0001 + 0.0001) on f32 [16], then backward.
fn w1() {
    let x = Tensor::<f32>::randn(&[16]).set_requires_grad(true);
    let secs = time(3, 21, || {
        let mut y = x.clone();
        for _ in 0..10_000 {
            y = (&y * 1.0001 + 0.0001).tanh();
        }
        y.sum().backward();
        x.zero_grad();
    });
    report("W1", "us_per_op", secs * 1e6 / 30_000.0);
}

/// W2: MLP 784-512-512-10, batch 128, cross-entropy, SGD step.
fn w2() {
    let x = Tensor::<f32>::randn(&[128, 784]);
    let labels: Vec<usize> = (0..128).map(|i| (i * 7 + 3) % 10).collect();
    let layers = [Linear::new(784, 512), Linear::new(512, 512), Linear::new(512, 10)];
    let mut opt = Sgd::new(layers.iter().flat_map(Linear::parameters).collect(), 0.01);
    let step = || {
        let h = layers[0].forward(&x).relu();
        let h = layers[1].forward(&h).relu();
        let loss = layers[2].forward(&h).cross_entropy(&labels);
        loss.backward();
        opt.step();
        opt.zero_grad();
    };
    report("W2", "ms_per_step", time(5, 50, step) * 1e3);
}

/// W3: 1024² matmul: forward GFLOP/s, forward+backward ms.
fn w3() {
    let n = 1024;
    let a = Tensor::<f32>::randn(&[n, n]).set_requires_grad(true);
    let b = Tensor::<f32>::randn(&[n, n]).set_requires_grad(true);
    let fwd = time(2, 11, || {
        tapegrad::no_grad(|| a.matmul(&b));
    });
    report("W3", "forward_gflops", 2.0 * (n as f64).powi(3) / fwd / 1e9);
    let both = time(2, 11, || {
        a.matmul(&b).sum().backward();
        a.zero_grad();
        b.zero_grad();
    });
    report("W3", "fwd_bwd_ms", both * 1e3);
}

/// W4: 32 × (Linear(1024, 1024) + tanh), batch 256: plain and √n segments.
fn w4() {
    let depth = 32;
    let layers: Vec<Arc<Linear>> = (0..depth).map(|_| Arc::new(Linear::new(1024, 1024))).collect();
    let x = Tensor::<f32>::randn(&[256, 1024]);
    let as_fns: Vec<tapegrad::Layer<f32>> = layers
        .iter()
        .map(|l| {
            let l = l.clone();
            Arc::new(move |h: &Tensor<f32>| l.forward(h).tanh()) as tapegrad::Layer<f32>
        })
        .collect();
    let zero = || {
        layers
            .iter()
            .flat_map(|l| l.parameters())
            .for_each(|p| p.zero_grad())
    };
    let strategies = [
        ("plain", 0),
        ("sqrt_segments", (depth as f64).sqrt().round() as usize),
    ];
    let forward = |segments: usize| {
        if segments == 0 {
            as_fns.iter().fold(x.clone(), |h, f| f(&h))
        } else {
            tapegrad::checkpoint_sequential(&as_fns, segments, &x)
        }
    };
    // The two strategies take turns, so that a change in the shared
    // machine's load moves both medians alike (the figure is their ratio).
    let mut secs = [vec![], vec![]];
    for round in 0..8 {
        for (times, &(_, segments)) in secs.iter_mut().zip(&strategies) {
            let t = Instant::now();
            forward(segments).sum().backward();
            zero();
            if round > 0 {
                times.push(t.elapsed().as_secs_f64());
            }
        }
    }
    for (times, &(name, segments)) in secs.into_iter().zip(&strategies) {
        let base = tapegrad::memory::saved_bytes();
        let y = forward(segments);
        let saved = tapegrad::memory::saved_bytes() - base;
        drop(y);
        // A step's peak resident memory from an empty buffer cache, the
        // weights' gradients (128 MiB) made by its backward.
        tapegrad::memory::empty_cache();
        let rss = peak_rss_during(|| forward(segments).sum().backward());
        zero();
        report("W4", &format!("{name}_ms"), median(times) * 1e3);
        report(
            "W4",
            &format!("{name}_saved_mib"),
            saved as f64 / (1 << 20) as f64,
        );
        report(
            "W4",
            &format!("{name}_peak_rss_mib"),
            rss as f64 / (1 << 20) as f64,
        );
    }
}

/// W5: 200,000 × y = y * 1.000001 on f32 [1]: forward, backward, drop, on a
/// 2 MiB stack.
fn w5() {
    let secs = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            time(1, 5, || {
                let x = Tensor::<f32>::ones(&[1]).set_requires_grad(true);
                let mut y = x.clone();
                for _ in 0..200_000 {
                    y = &y * 1.000001;
                }
                y.backward();
                drop(y);
            })
        })
        .unwrap()
        .join()
        .unwrap();
    report("W5", "seconds", secs);
}

/// W6: a training step of the digits CNN (examples/common/digits_cnn.rs) on
/// a batch of 64 8×8 images: cross-entropy, backward, Adam (lr 0.003).
fn w6() {
    let cnn = digits_cnn();
    let x = Tensor::<f32>::rand(&[64, 1, 8, 8]);
    let labels: Vec<usize> = (0..64).map(|i| (i * 7 + 3) % 10).collect();
    let mut opt = Adam::new(cnn.parameters(), 0.003);
    let step = || {
        opt.zero_grad();
        cnn.forward(&x).cross_entropy(&labels).backward();
        opt.step();
    };
    report("W6", "ms_per_step", time(10, 200, step) * 1e3);
}

/// W7: optimizer overhead, one Adam step (lr 1e-3, PyTorch's defaults) over
/// 100 parameters of f32 [1000] whose gradients are in place.
fn w7() {
    let params: Vec<Tensor<f32>> = (0..100)
        .map(|_| Tensor::<f32>::randn(&[1000]).set_requires_grad(true))
        .collect();
    // a gradient for each parameter: Σ p ⊙ c has gradient c
    params
        .iter()
        .map(|p| (p * Tensor::<f32>::randn(&[1000])).sum())
        .reduce(|a, b| a + b)
        .expect("parameters")
        .backward();
    let mut opt = Adam::new(params, 1e-3);
    report("W7", "us_per_step", time(50, 1000, || opt.step()) * 1e6);
}

fn main() {
    tapegrad::manual_seed(0);
    run_named(&[
        ("W1", w1),
        ("W2", w2),
        ("W3", w3),
        ("W4", w4),
        ("W5", w5),
        ("W6", w6),
        ("W7", w7),
    ]);
}
