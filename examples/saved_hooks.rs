//! Saved-value hooks at work (`tapegrad::saved_tensors_hooks`, PyTorch's
//! `torch.autograd.graph.saved_tensors_hooks`): two recipes on an MLP.
//!
//! 1. **bf16 saved activations.** Every f32 value an op saves for backward
//!    is packed as bfloat16 (the top 16 bits, rounded to nearest even) and
//!    unpacked to f32 when backward reads it: half the bytes for what the
//!    graph holds between forward and backward, at bf16's precision in the
//!    gradient (about 3 significant digits). Small values (the weights,
//!    which the graph only shares, not copies) are kept as they are. The
//!    heap held by the graph is measured with and without the hooks.
//! 2. **Counting saved values per op**, through `pack_saved`, which also
//!    names the op and the value's role to it.
//!
//! Run: `cargo run --release --example saved_hooks`
//! (`TAPEGRAD_EXAMPLE_SHORT=1` uses a smaller model, for CI).

mod common;

use common::short_mode;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tapegrad::memory::CountingAllocator;
use tapegrad::nn::{Linear, Module};
use tapegrad::{saved_tensors_hooks, SaveContext, SavedTensorsHooks, Tensor};

#[global_allocator]
static HEAP: CountingAllocator = CountingAllocator;

/// f32 to bfloat16, rounding to nearest even (NaN stays NaN).
fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Packs saved values of at least `min_elems` elements as bf16.
struct Bf16 {
    min_elems: usize,
}

enum Packed {
    Bf16 { bits: Vec<u16>, shape: Vec<usize> },
    Kept(Tensor<f32>),
}

impl SavedTensorsHooks<f32> for Bf16 {
    type Packed = Packed;

    fn pack(&self, value: Tensor<f32>) -> Packed {
        if value.numel() < self.min_elems {
            return Packed::Kept(value);
        }
        let bits = value.to_vec().into_iter().map(to_bf16).collect();
        Packed::Bf16 {
            bits,
            shape: value.shape().to_vec(),
        }
    }

    fn unpack(&self, packed: &Packed) -> Tensor<f32> {
        match packed {
            Packed::Kept(t) => t.clone(),
            Packed::Bf16 { bits, shape } => {
                Tensor::from_vec(bits.iter().map(|&h| from_bf16(h)).collect(), shape)
            }
        }
    }
}

/// Counts saved values by op and role.
#[derive(Clone, Default)]
struct PerOp(Arc<Mutex<BTreeMap<String, usize>>>);

impl SavedTensorsHooks<f32> for PerOp {
    type Packed = Tensor<f32>;

    fn pack(&self, value: Tensor<f32>) -> Tensor<f32> {
        value
    }

    fn pack_saved(&self, value: Tensor<f32>, saved: &SaveContext) -> Tensor<f32> {
        let key = format!("{:<14} {}", saved.op, saved.role);
        *self.0.lock().unwrap().entry(key).or_default() += 1;
        value
    }

    fn unpack(&self, packed: &Tensor<f32>) -> Tensor<f32> {
        packed.clone()
    }
}

/// `depth` blocks of `sin(Linear(h))`: each activation is saved once (sin
/// saves its input, the next product its input).
fn forward(layers: &[Linear<f32>], x: &Tensor<f32>) -> Tensor<f32> {
    let h = layers.iter().fold(x.clone(), |h, l| l.forward(&h).sin());
    h.sum()
}

/// The heap bytes the graph of `forward` holds once it is built, and the
/// gradients of the weights.
fn run(layers: &[Linear<f32>], x: &Tensor<f32>, hooks: Option<Bf16>) -> (usize, Vec<Vec<f32>>) {
    for p in layers.iter().flat_map(Linear::parameters) {
        p.zero_grad();
    }
    let before = CountingAllocator::live();
    let loss = match hooks {
        Some(h) => saved_tensors_hooks(h, || forward(layers, x)),
        None => forward(layers, x),
    };
    let held = CountingAllocator::live() - before;
    loss.backward();
    let grads = layers.iter().map(|l| l.weight.grad().unwrap().to_vec()).collect();
    (held, grads)
}

fn main() {
    tapegrad::manual_seed(0);
    // No cache of freed buffers: the live heap is then what is in use.
    tapegrad::memory::set_cache_limit(0);
    let (batch, width, depth) = if short_mode() {
        (256, 128, 4)
    } else {
        (512, 256, 8)
    };
    let layers: Vec<Linear<f32>> = (0..depth).map(|_| Linear::new(width, width)).collect();
    let x = Tensor::<f32>::randn(&[batch, width]);

    // 1. bf16 saved activations.
    let min_elems = batch * width;
    let (plain, g_plain) = run(&layers, &x, None);
    let (bf16, g_bf16) = run(&layers, &x, Some(Bf16 { min_elems }));
    let ratio = bf16 as f64 / plain as f64;
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    println!("MLP: {depth} x (Linear({width}, {width}), sin), batch {batch}, f32");
    println!(
        "heap held by the graph after forward: {:.2} MiB as f32",
        mib(plain)
    );
    println!(
        "                                     {:.2} MiB as bf16 ({:.2}x)",
        mib(bf16),
        ratio
    );
    let (mut err, mut norm) = (0f64, 0f64);
    for (a, b) in g_plain.iter().flatten().zip(g_bf16.iter().flatten()) {
        err += ((a - b) as f64).powi(2);
        norm += (*a as f64).powi(2);
    }
    let rel = (err / norm).sqrt();
    println!("weight gradients, relative difference: {rel:.2e}");
    assert!(
        ratio < 0.65,
        "bf16 saved values should about halve the graph's heap, got {ratio:.2}x"
    );
    assert!(
        rel < 2e-2,
        "bf16 gradients should be within bf16 precision, got {rel:.2e}"
    );

    // 2. Saved values per op.
    let counts = PerOp::default();
    let loss = saved_tensors_hooks(counts.clone(), || forward(&layers, &x));
    println!("\nsaved values per op (one forward):");
    for (op, n) in counts.0.lock().unwrap().iter() {
        println!("  {op:<28} {n}");
    }
    loss.backward();
}
