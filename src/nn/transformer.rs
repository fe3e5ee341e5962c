//! `TransformerBlock`: a pre-norm transformer layer.

use crate::nn::functional::AttentionKernel;
use crate::nn::{LayerNorm, Linear, Module, MultiheadAttention, Sequential, GELU};
use crate::{Float, Tensor};

/// A pre-norm transformer block: `x + attn(ln1(x))`, then
/// `h + mlp(ln2(h))`, with `mlp` = `Linear(E, hidden)`, [`GELU`],
/// `Linear(hidden, E)`. The same function as PyTorch's
/// `nn.TransformerEncoderLayer(E, heads, hidden, dropout=0.0,
/// activation="gelu", batch_first=True, norm_first=True)`, whose
/// `self_attn`, `norm1`, `norm2`, `linear1`, `linear2` are here `attn`,
/// `ln1`, `ln2`, `mlp.0`, `mlp.2`.
///
/// ```
/// use tapegrad::nn::{Module, TransformerBlock};
/// use tapegrad::Tensor;
///
/// tapegrad::manual_seed(0);
/// let block = TransformerBlock::new(16, 4, 64).causal(true);
/// let y = block.forward(&Tensor::<f32>::randn(&[2, 10, 16]));
/// assert_eq!(y.shape(), &[2, 10, 16]);
/// let names: Vec<String> = block.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names[..3], ["ln1.weight", "ln1.bias", "attn.in_proj_weight"]);
/// assert_eq!(names[names.len() - 2..], ["mlp.2.weight", "mlp.2.bias"]);
/// ```
#[derive(Debug, Clone)]
pub struct TransformerBlock<T: Float = f32> {
    /// The norm before attention.
    pub ln1: LayerNorm<T>,
    /// Self-attention.
    pub attn: MultiheadAttention<T>,
    /// The norm before the MLP.
    pub ln2: LayerNorm<T>,
    /// `Linear(E, hidden)`, `GELU`, `Linear(hidden, E)`.
    pub mlp: Sequential<T>,
}

impl<T: Float> TransformerBlock<T> {
    /// A block over `embed_dim` features with `num_heads` heads and an MLP
    /// of `hidden_dim`, not causal; each layer with PyTorch's
    /// initialisation.
    ///
    /// **Panics** if `num_heads` is 0 or does not divide `embed_dim`.
    #[track_caller]
    pub fn new(embed_dim: usize, num_heads: usize, hidden_dim: usize) -> Self {
        TransformerBlock {
            ln1: LayerNorm::new(&[embed_dim]),
            attn: MultiheadAttention::new(embed_dim, num_heads),
            ln2: LayerNorm::new(&[embed_dim]),
            mlp: Sequential::new()
                .add(Linear::new(embed_dim, hidden_dim))
                .add(GELU)
                .add(Linear::new(hidden_dim, embed_dim)),
        }
    }

    /// Causal self-attention (see [`MultiheadAttention::causal`]).
    #[track_caller]
    pub fn causal(mut self, causal: bool) -> Self {
        self.attn = self.attn.causal(causal);
        self
    }

    /// The attention kernel (see [`MultiheadAttention::kernel`]).
    #[track_caller]
    pub fn kernel(mut self, kernel: AttentionKernel) -> Self {
        self.attn = self.attn.kernel(kernel);
        self
    }

    /// The block on sequences packed back to back, `x` `[total_tokens, E]`
    /// (see [`MultiheadAttention::forward_packed`]); the norms and the MLP
    /// act on each token alone.
    ///
    /// **Panics** as [`MultiheadAttention::forward_packed`].
    #[track_caller]
    pub fn forward_packed(&self, x: &Tensor<T>, cu_seqlens: &[usize]) -> Tensor<T> {
        self.residuals(x, |h| self.attn.forward_packed(h, cu_seqlens))
    }

    /// `x + attn(ln1(x))`, then `h + mlp(ln2(h))`.
    #[track_caller]
    fn residuals(&self, x: &Tensor<T>, attn: impl Fn(&Tensor<T>) -> Tensor<T>) -> Tensor<T> {
        let h = x + attn(&self.ln1.forward(x));
        &h + self.mlp.forward(&self.ln2.forward(&h))
    }
}

impl<T: Float> Module<T> for TransformerBlock<T> {
    /// The block on `x` `[B, L, E]` (or `[L, E]`).
    #[track_caller]
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        self.residuals(x, |h| self.attn.forward(h))
    }

    #[track_caller]
    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        let prefixed = |prefix: &str, m: &dyn Module<T>| {
            let params = m.named_parameters().into_iter();
            params
                .map(|(n, t)| (format!("{prefix}.{n}"), t))
                .collect::<Vec<_>>()
        };
        [
            prefixed("ln1", &self.ln1),
            prefixed("attn", &self.attn),
            prefixed("ln2", &self.ln2),
            prefixed("mlp", &self.mlp),
        ]
        .concat()
    }
}
