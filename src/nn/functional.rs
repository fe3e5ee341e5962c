//! Functional forms of layers: attention, on batches and on packed
//! sequences.
//!
//! [`scaled_dot_product_attention`] is PyTorch's
//! `F.scaled_dot_product_attention` (no attention mask, no dropout);
//! [`varlen_attention`] is FlashAttention's varlen form on sequences packed
//! back to back, each attending only within itself; [`pack_sequences`]
//! makes such packs. Both run one of two kernels with equal values and
//! gradients ([`AttentionKernel`]): see `docs/attention.md` for the
//! algorithm, its memory and its speed.

use crate::layout::try_broadcast_shape;
pub use crate::nn::packing::{pack_sequences, PackedBatch};
use crate::ops::attention::{composed_attention, per_sequence, tiled_attention};
use crate::ops::flash::Packing;
use crate::{Float, Tensor};
use std::sync::Arc;

/// Options of [`scaled_dot_product_attention`] and [`varlen_attention`].
///
/// ```
/// use tapegrad::nn::functional::{AttentionKernel, AttentionOptions};
/// let opts = AttentionOptions { causal: true, ..Default::default() };
/// assert_eq!(opts.kernel, AttentionKernel::Auto);
/// assert_eq!(opts.scale, None); // 1/√E
/// ```
#[derive(Clone, Debug, Default)]
pub struct AttentionOptions {
    /// Query `i` attends keys `0..=i` only (PyTorch's `is_causal`, aligned
    /// top-left: with more keys than queries, the last keys are seen by
    /// none; with more queries, the last queries see every key).
    pub causal: bool,
    /// The factor on the scores, `1/√E` (`E` the queries' last dimension)
    /// when `None`.
    pub scale: Option<f64>,
    /// Which kernel computes it.
    pub kernel: AttentionKernel,
}

/// How attention is computed. Values and gradients agree to rounding; the
/// memory the graph keeps and the time differ.
///
/// ```
/// use tapegrad::nn::functional::{scaled_dot_product_attention, AttentionKernel, AttentionOptions};
/// use tapegrad::Tensor;
///
/// tapegrad::manual_seed(0);
/// let q = Tensor::<f64>::randn(&[2, 10, 4]);
/// let k = Tensor::<f64>::randn(&[2, 7, 4]);
/// let v = Tensor::<f64>::randn(&[2, 7, 3]);
/// let run = |kernel| {
///     let opts = AttentionOptions { kernel, ..Default::default() };
///     scaled_dot_product_attention(&q, &k, &v, &opts).to_vec()
/// };
/// let (composed, tiled) = (run(AttentionKernel::Composed), run(AttentionKernel::Tiled { block: 4 }));
/// assert!(composed.iter().zip(&tiled).all(|(a, b)| (a - b).abs() < 1e-12));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttentionKernel {
    /// `Tiled { block: 128 }`, at every size: measured, it is at least as
    /// fast as `Composed` from `L = S = 4` (one head of 8 features) to 4096
    /// (4 heads of 64), and keeps memory linear in the lengths
    /// (`docs/attention.md`).
    #[default]
    Auto,
    /// `softmax(scale · q kᵀ) v` as three recorded ops (matmul, softmax,
    /// matmul): the graph keeps the `L × S` probabilities of every batch
    /// entry.
    Composed,
    /// One recorded op computing the scores in `block × block` tiles with
    /// an online softmax (FlashAttention-2's algorithm): the graph keeps q,
    /// k, v, the output and one log-sum-exp per query, and backward
    /// recomputes the tiles.
    Tiled {
        /// The side of a score tile (queries and keys); at least 1.
        block: usize,
    },
}

/// The block [`AttentionKernel::Auto`] tiles with.
const AUTO_BLOCK: usize = 128;

impl AttentionKernel {
    /// The tile side to use, or `None` for the composed form.
    ///
    /// **Panics**, naming `op`, if a tiled kernel has block 0.
    #[track_caller]
    fn block(self, op: &str) -> Option<usize> {
        match self {
            AttentionKernel::Composed => None,
            AttentionKernel::Tiled { block } => {
                assert!(
                    block > 0,
                    "{op}: AttentionKernel::Tiled needs a block of at least 1, got 0"
                );
                Some(block)
            }
            AttentionKernel::Auto => Some(AUTO_BLOCK),
        }
    }
}

impl AttentionOptions {
    /// The scale for queries of `e` features, as `T`.
    #[track_caller]
    fn scale<T: Float>(&self, e: usize) -> T {
        T::of(self.scale.unwrap_or(1.0 / (e as f64).sqrt()))
    }
}

/// Attention, PyTorch's `F.scaled_dot_product_attention(q, k, v,
/// is_causal, scale)`: `softmax(scale · q kᵀ) v` over the last two
/// dimensions, `q` `[.., L, E]`, `k` `[.., S, E]`, `v` `[.., S, Ev]` to
/// `[.., L, Ev]`; the leading (batch, head) dimensions broadcast as NumPy
/// does. Differentiable in each input, to any order.
///
/// ```
/// use tapegrad::nn::functional::{scaled_dot_product_attention, AttentionOptions};
/// use tapegrad::Tensor;
///
/// // One query, two keys: scores 0 and 2 (scale 1/√1), so weights 1/(1+e²) and e²/(1+e²).
/// let q = Tensor::from_vec(vec![1.0f64], &[1, 1]);
/// let k = Tensor::from_vec(vec![0.0, 2.0], &[2, 1]);
/// let v = Tensor::from_vec(vec![10.0, 20.0], &[2, 1]);
/// let out = scaled_dot_product_attention(&q, &k, &v, &AttentionOptions::default());
/// let w = 2f64.exp() / (1.0 + 2f64.exp());
/// assert!((out.item() - (10.0 * (1.0 - w) + 20.0 * w)).abs() < 1e-12);
/// ```
///
/// **Panics** if an input has fewer than 2 dimensions, `q` and `k` differ
/// in their last dimension, `k` and `v` in their number of keys, the batch
/// dimensions do not broadcast, or a tiled kernel has block 0.
#[track_caller]
pub fn scaled_dot_product_attention<T: Float>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    opts: &AttentionOptions,
) -> Tensor<T> {
    const OP: &str = "scaled_dot_product_attention";
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    assert!(
        qs.len() >= 2 && ks.len() >= 2 && vs.len() >= 2,
        "{OP}: q, k and v need at least 2 dimensions ([.., L, E], [.., S, E], [.., S, Ev]), got shapes \
         {qs:?}, {ks:?} and {vs:?}"
    );
    let e = qs[qs.len() - 1];
    let (s, ek, sv) = (ks[ks.len() - 2], ks[ks.len() - 1], vs[vs.len() - 2]);
    assert!(
        e == ek && s == sv,
        "{OP}: q [.., L, E], k [.., S, E] and v [.., S, Ev] do not fit: shapes {qs:?}, {ks:?} and {vs:?}"
    );
    let batch = |x: &[usize]| x[..x.len() - 2].to_vec();
    // A `match`, not a closure: `#[track_caller]` does not reach into one.
    let batch =
        match try_broadcast_shape(&batch(qs), &batch(ks)).and_then(|b| try_broadcast_shape(&b, &batch(vs))) {
            Ok(batch) => batch,
            Err(_) => panic!(
                "{OP}: the batch dimensions of q, k and v do not broadcast: shapes {qs:?}, {ks:?} and {vs:?}"
            ),
        };
    let scale = opts.scale::<T>(e);
    match opts.kernel.block(OP) {
        None => composed_attention(q, k, v, scale, opts.causal),
        Some(block) => {
            // The tiled op reads each batch entry's matrices in place: a
            // broadcast input is a view with zero strides, and its
            // gradient is summed back by the broadcast's own backward.
            let full = |x: &Tensor<T>| {
                let shape = [&batch[..], &x.shape()[x.ndim() - 2..]].concat();
                match x.shape() == shape.as_slice() {
                    true => x.clone(),
                    false => x.broadcast_to(&shape),
                }
            };
            tiled_attention(
                &full(q),
                &full(k),
                &full(v),
                Packing::Batched,
                scale,
                opts.causal,
                block,
            )
        }
    }
}

/// Attention over sequences packed back to back (FlashAttention's varlen
/// form): `q`, `k`, `v` `[total_tokens, heads, E or Ev]`, sequence `i` the
/// rows `cu_seqlens[i]..cu_seqlens[i + 1]`, attending only within itself.
/// Equal to [`scaled_dot_product_attention`] on each sequence alone (as
/// `[heads, n, E]`), with no padding computed. The output is
/// `[total_tokens, heads, Ev]`.
///
/// ```
/// use tapegrad::nn::functional::{scaled_dot_product_attention, varlen_attention, AttentionOptions};
/// use tapegrad::Tensor;
///
/// tapegrad::manual_seed(0);
/// let x = Tensor::<f64>::randn(&[5, 2, 4]); // sequences of 2 and 3 tokens, 2 heads
/// let opts = AttentionOptions { causal: true, ..Default::default() };
/// let packed = varlen_attention(&x, &x, &x, &[0, 2, 5], &opts);
/// let second = x.narrow(0, 2, 3).transpose(0, 1); // [heads, 3, 4]
/// let alone = scaled_dot_product_attention(&second, &second, &second, &opts).transpose(0, 1);
/// let tail = packed.narrow(0, 2, 3).to_vec();
/// assert!(tail.iter().zip(alone.to_vec()).all(|(a, b)| (a - b).abs() < 1e-12));
/// ```
///
/// **Panics** if an input is not 3-D, their tokens or heads differ, `q` and
/// `k` differ in their last dimension, `cu_seqlens` does not start at 0,
/// decreases, or does not end at `total_tokens`, or a tiled kernel has
/// block 0.
#[track_caller]
pub fn varlen_attention<T: Float>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    cu_seqlens: &[usize],
    opts: &AttentionOptions,
) -> Tensor<T> {
    const OP: &str = "varlen_attention";
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    assert!(
        qs.len() == 3 && ks.len() == 3 && vs.len() == 3,
        "{OP}: q, k and v must be [total_tokens, heads, head_dim], got shapes {qs:?}, {ks:?} and {vs:?}"
    );
    assert!(
        qs[..2] == ks[..2] && ks[..2] == vs[..2] && qs[2] == ks[2],
        "{OP}: q and k [total_tokens, heads, E] and v [total_tokens, heads, Ev] do not fit: shapes \
         {qs:?}, {ks:?} and {vs:?}"
    );
    let tokens = qs[0];
    assert!(
        cu_seqlens.first() == Some(&0)
            && cu_seqlens.last() == Some(&tokens)
            && cu_seqlens.windows(2).all(|w| w[0] <= w[1]),
        "{OP}: cu_seqlens must rise from 0 to total_tokens = {tokens}, got {cu_seqlens:?}"
    );
    let scale = opts.scale::<T>(qs[2]);
    match opts.kernel.block(OP) {
        None if tokens == 0 => Tensor::zeros(&[0, qs[1], vs[2]]),
        None => per_sequence(cu_seqlens, &[q, k, v], |x| {
            vec![composed_attention(&x[0], &x[1], &x[2], scale, opts.causal)]
        })
        .remove(0),
        Some(block) => tiled_attention(
            q,
            k,
            v,
            Packing::Packed(Arc::from(cu_seqlens)),
            scale,
            opts.causal,
            block,
        ),
    }
}
