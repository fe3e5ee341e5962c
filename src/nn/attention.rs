//! `MultiheadAttention`: self-attention with PyTorch's parameters.

use crate::nn::functional::{
    scaled_dot_product_attention, varlen_attention, AttentionKernel, AttentionOptions,
};
use crate::nn::init::xavier_uniform;
use crate::nn::{Linear, Module};
use crate::{Float, Tensor};

/// Multi-head self-attention (`torch.nn.MultiheadAttention` with
/// `batch_first=True`, called as `m(x, x, x)`): the input `[B, L, E]` (or
/// `[L, E]`) is projected to queries, keys and values by one matrix,
/// split into `num_heads` heads of `E / num_heads` features, attended
/// ([`scaled_dot_product_attention`]) and projected back.
///
/// Parameters are PyTorch's, so its `state_dict` loads by name:
/// `in_proj_weight` `[3E, E]` (queries, keys, values, in that order; Xavier
/// uniform), `in_proj_bias` `[3E]` (zeros), `out_proj.weight` `[E, E]`
/// (`Linear`'s init) and `out_proj.bias` `[E]` (zeros). No dropout on the
/// attention weights (PyTorch's default, `dropout=0.0`).
///
/// ```
/// use tapegrad::nn::{Module, MultiheadAttention};
/// use tapegrad::Tensor;
///
/// tapegrad::manual_seed(0);
/// let attn = MultiheadAttention::new(16, 4).causal(true);
/// let y = attn.forward(&Tensor::<f32>::randn(&[2, 10, 16]));
/// assert_eq!(y.shape(), &[2, 10, 16]);
/// let names: Vec<String> = attn.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]);
/// ```
#[derive(Debug, Clone)]
pub struct MultiheadAttention<T: Float = f32> {
    /// `[3E, E]`: the query, key and value projections stacked.
    pub in_proj_weight: Tensor<T>,
    /// `[3E]`.
    pub in_proj_bias: Tensor<T>,
    /// The output projection, `E` to `E`.
    pub out_proj: Linear<T>,
    num_heads: usize,
    opts: AttentionOptions,
}

impl<T: Float> MultiheadAttention<T> {
    /// Attention over `embed_dim` features in `num_heads` heads, not causal,
    /// with PyTorch's initialisation and [`AttentionKernel::Auto`].
    ///
    /// **Panics** if `num_heads` is 0 or does not divide `embed_dim`.
    #[track_caller]
    pub fn new(embed_dim: usize, num_heads: usize) -> Self {
        assert!(
            num_heads > 0 && embed_dim.is_multiple_of(num_heads),
            "MultiheadAttention: embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})"
        );
        let in_proj_weight = xavier_uniform([3 * embed_dim, embed_dim]);
        let mut out_proj = Linear::new(embed_dim, embed_dim);
        out_proj.bias = Some(Tensor::zeros(&[embed_dim]).set_requires_grad(true));
        MultiheadAttention {
            in_proj_weight,
            in_proj_bias: Tensor::zeros(&[3 * embed_dim]).set_requires_grad(true),
            out_proj,
            num_heads,
            opts: AttentionOptions::default(),
        }
    }

    /// With `causal`, position `i` attends positions `0..=i` only (PyTorch's
    /// `is_causal=True` with the matching mask).
    #[track_caller]
    pub fn causal(mut self, causal: bool) -> Self {
        self.opts.causal = causal;
        self
    }

    /// The attention kernel (default [`AttentionKernel::Auto`]).
    #[track_caller]
    pub fn kernel(mut self, kernel: AttentionKernel) -> Self {
        self.opts.kernel = kernel;
        self
    }

    #[track_caller]
    fn embed_dim(&self) -> usize {
        self.in_proj_weight.shape()[1]
    }

    /// `x`'s queries, keys and values, each `[.., heads, head_dim]` views
    /// of one projection `[.., 3, heads, head_dim]`.
    #[track_caller]
    fn project(&self, x: &Tensor<T>) -> [Tensor<T>; 3] {
        let e = self.embed_dim();
        let shape = x.shape();
        assert!(
            shape.last() == Some(&e),
            "MultiheadAttention: expects input [.., {e}] (embed_dim = {e}), got shape {shape:?}"
        );
        let in_proj = Linear {
            weight: self.in_proj_weight.clone(),
            bias: Some(self.in_proj_bias.clone()),
        };
        let lead = &shape[..shape.len() - 1];
        let qkv = in_proj
            .forward(x)
            .reshape(&[lead, &[3, self.num_heads, e / self.num_heads]].concat());
        let at = lead.len();
        [0, 1, 2].map(|i| qkv.narrow(at, i, 1).squeeze(at))
    }

    /// Self-attention over sequences packed back to back: `x`
    /// `[total_tokens, E]`, sequence `i` the rows
    /// `cu_seqlens[i]..cu_seqlens[i + 1]` (see
    /// [`pack_sequences`](crate::nn::functional::pack_sequences)), each
    /// attending within itself only ([`varlen_attention`]).
    ///
    /// ```
    /// use tapegrad::nn::{Module, MultiheadAttention};
    /// use tapegrad::Tensor;
    ///
    /// tapegrad::manual_seed(0);
    /// let attn = MultiheadAttention::<f64>::new(8, 2).causal(true);
    /// let x = Tensor::randn(&[7, 8]); // a sequence of 3 tokens, then one of 4
    /// let packed = attn.forward_packed(&x, &[0, 3, 7]);
    /// let alone = attn.forward(&x.narrow(0, 3, 4).unsqueeze(0));
    /// let diff: f64 = packed.narrow(0, 3, 4).to_vec().iter().zip(alone.to_vec()).map(|(a, b)| (a - b).abs()).sum();
    /// assert!(diff < 1e-12);
    /// ```
    ///
    /// **Panics** if `x` is not `[total_tokens, embed_dim]` or `cu_seqlens`
    /// does not fit it (as [`varlen_attention`]).
    #[track_caller]
    pub fn forward_packed(&self, x: &Tensor<T>, cu_seqlens: &[usize]) -> Tensor<T> {
        assert!(
            x.ndim() == 2,
            "MultiheadAttention::forward_packed: expects [total_tokens, embed_dim], got shape {:?}",
            x.shape()
        );
        let [q, k, v] = self.project(x);
        let y = varlen_attention(&q, &k, &v, cu_seqlens, &self.opts);
        self.out_proj.forward(&y.reshape(x.shape()))
    }
}

impl<T: Float> Module<T> for MultiheadAttention<T> {
    /// Self-attention on `x` `[B, L, E]` (or one sequence `[L, E]`).
    ///
    /// **Panics** if `x` is not 2-D or 3-D with `embed_dim` features.
    #[track_caller]
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        assert!(
            matches!(x.ndim(), 2 | 3),
            "MultiheadAttention: expects [B, L, E] or [L, E], got shape {:?}",
            x.shape()
        );
        // [.., L, heads, d] to [.., heads, L, d] (views), and back.
        let heads_first = |t: Tensor<T>| t.transpose(t.ndim() - 3, t.ndim() - 2);
        let [q, k, v] = self.project(x).map(heads_first);
        let y = heads_first(scaled_dot_product_attention(&q, &k, &v, &self.opts));
        self.out_proj.forward(&y.reshape(x.shape()))
    }

    #[track_caller]
    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        let mut params = vec![
            ("in_proj_weight".to_string(), self.in_proj_weight.clone()),
            ("in_proj_bias".to_string(), self.in_proj_bias.clone()),
        ];
        params.extend(
            self.out_proj
                .named_parameters()
                .into_iter()
                .map(|(n, t)| (format!("out_proj.{n}"), t)),
        );
        params
    }
}
