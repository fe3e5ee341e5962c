//! W8, attention: forward+backward time and the bytes saved for backward
//! of `scaled_dot_product_attention` at L = S = 256, 1024, 4096 (batch 1,
//! 4 heads, head_dim 64, f32, not causal), with `AttentionKernel::Auto`
//! (the tiled kernel, block 128) and the composed one, and the exponents of
//! saved bytes and time in L fitted by least squares on the log-log
//! points. `benches/pytorch_attention.py` measures PyTorch's SDPA the same
//! way; `benches/compare.py W8` runs both.
//!
//! q, k and v are views of one projection made by a recorded op (as in a
//! model), so that the bytes the op saves of them count: `memory::saved_bytes`
//! after the forward, minus before. Times are medians; one line per figure,
//! `W8 <metric> <value>`, as `benches/workloads.rs`.
//!
//! Run: `cargo bench --bench attention [-- 256 1024]` (all three lengths by
//! default); `TAPEGRAD_W8_COMPOSED=0` skips the composed kernel.

use std::time::Instant;
use tapegrad::memory::saved_bytes;
use tapegrad::nn::functional::{scaled_dot_product_attention, AttentionKernel, AttentionOptions};
use tapegrad::prelude::*;

const HEADS: usize = 4;
const HEAD_DIM: usize = 64;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

/// One forward and backward at length `l` with `kernel`: (seconds, bytes
/// saved by the forward).
fn step(x: &Tensor<f32>, up: &Tensor<f32>, kernel: AttentionKernel) -> (f64, usize) {
    let opts = AttentionOptions {
        kernel,
        ..Default::default()
    };
    let t = Instant::now();
    // [3, 1, heads, L, d]: q, k, v as one buffer made by a recorded op.
    let qkv = x * 1.0;
    let [q, k, v] = [0, 1, 2].map(|i| qkv.narrow(0, i, 1).squeeze(0));
    drop(qkv);
    let before = saved_bytes();
    let out = scaled_dot_product_attention(&q, &k, &v, &opts);
    let saved = saved_bytes() - before;
    drop((q, k, v));
    out.backward_with(up);
    let secs = t.elapsed().as_secs_f64();
    x.zero_grad();
    (secs, saved)
}

/// Median seconds and the saved bytes over `runs` steps after one warm-up.
fn measure(l: usize, kernel: AttentionKernel) -> (f64, usize) {
    let x = Tensor::<f32>::randn(&[3, 1, HEADS, l, HEAD_DIM]).set_requires_grad(true);
    let up = Tensor::<f32>::randn(&[1, HEADS, l, HEAD_DIM]);
    let runs = if l >= 4096 {
        3
    } else if l >= 1024 {
        7
    } else {
        21
    };
    step(&x, &up, kernel);
    let (times, saved): (Vec<f64>, Vec<usize>) = (0..runs).map(|_| step(&x, &up, kernel)).unzip();
    (median(times), saved[0])
}

/// The slope of `ln y` against `ln x` (least squares).
fn exponent(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (lx, ly): (Vec<f64>, Vec<f64>) = points.iter().map(|&(x, y)| (x.ln(), y.ln())).unzip();
    let (mx, my) = (lx.iter().sum::<f64>() / n, ly.iter().sum::<f64>() / n);
    let cov: f64 = lx.iter().zip(&ly).map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = lx.iter().map(|x| (x - mx) * (x - mx)).sum();
    cov / var
}

fn main() {
    let lengths: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect::<Vec<_>>();
    let lengths = if lengths.is_empty() {
        vec![256, 1024, 4096]
    } else {
        lengths
    };
    let composed = std::env::var("TAPEGRAD_W8_COMPOSED").as_deref() != Ok("0");
    let mut kernels = vec![("", AttentionKernel::Auto)];
    if composed {
        kernels.push(("composed_", AttentionKernel::Composed));
    }
    for (prefix, kernel) in kernels {
        let mut points = (Vec::new(), Vec::new());
        for &l in &lengths {
            let (secs, saved) = measure(l, kernel);
            println!("W8 {prefix}fwd_bwd_ms_L{l} {:.3}", secs * 1e3);
            println!("W8 {prefix}saved_mib_L{l} {:.3}", saved as f64 / (1 << 20) as f64);
            points.0.push((l as f64, saved as f64));
            points.1.push((l as f64, secs));
        }
        if lengths.len() > 1 {
            println!("W8 {prefix}saved_exponent {:.3}", exponent(&points.0));
            println!("W8 {prefix}time_exponent {:.3}", exponent(&points.1));
        }
    }
}
