//! `Embedding`: a table of vectors looked up by id.

use crate::nn::{name_parameters, Module};
use crate::{Float, Tensor};

/// A table of `num_embeddings` vectors of size `embedding_dim`, looked up
/// by id (`torch.nn.Embedding`). The table starts as samples of the
/// standard normal distribution (PyTorch's default), drawn from the crate's
/// generator.
///
/// ```
/// use tapegrad::nn::{Embedding, Module};
/// use tapegrad::Tensor;
///
/// let emb = Embedding::<f32>::new(10, 3);
/// assert_eq!(emb.lookup(&[4, 4, 7]).shape(), &[3, 3]);
/// // forward reads the ids from a tensor: [2, 5] ids give [2, 5, 3]
/// let ids = Tensor::from_vec((0..10).map(|i| i as f32).collect(), &[2, 5]);
/// assert_eq!(emb.forward(&ids).shape(), &[2, 5, 3]);
/// ```
#[derive(Debug, Clone)]
pub struct Embedding<T: Float = f32> {
    /// `[num_embeddings, embedding_dim]`, a leaf that requires grad.
    pub weight: Tensor<T>,
}

impl<T: Float> Embedding<T> {
    /// A table of `num_embeddings` rows of size `embedding_dim`, N(0, 1).
    ///
    /// ```
    /// let emb = tapegrad::nn::Embedding::<f64>::new(5, 2);
    /// assert_eq!(emb.weight.shape(), &[5, 2]);
    /// ```
    #[track_caller]
    pub fn new(num_embeddings: usize, embedding_dim: usize) -> Self {
        let layer = Embedding {
            weight: Tensor::randn(&[num_embeddings, embedding_dim]).set_requires_grad(true),
        };
        name_parameters(&layer);
        layer
    }

    /// The rows at `ids`, as `[ids.len(), embedding_dim]`; backward adds
    /// the gradient into those rows.
    ///
    /// ```
    /// use tapegrad::nn::Embedding;
    /// let emb = Embedding::<f32>::new(3, 2);
    /// let rows = emb.lookup(&[2, 0]);
    /// assert_eq!(rows.to_vec()[..2], emb.weight.to_vec()[4..]);
    /// rows.sum().backward();
    /// assert_eq!(emb.weight.grad().unwrap().to_vec(), vec![1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
    /// ```
    ///
    /// **Panics** if an id is not below `num_embeddings`.
    #[track_caller]
    pub fn lookup(&self, ids: &[usize]) -> Tensor<T> {
        let rows = self.weight.shape()[0];
        if let Some((at, id)) = ids.iter().enumerate().find(|(_, &id)| id >= rows) {
            panic!(
                "Embedding::lookup: id {id} (at position {at}) is out of range for {rows} embeddings \
                 (weight of shape {:?})",
                self.weight.shape()
            );
        }
        self.weight.index_select(0, ids)
    }
}

impl<T: Float> Module<T> for Embedding<T> {
    /// The rows at the ids `x` holds, shaped `x.shape() + [embedding_dim]`;
    /// see [`Tensor::embedding`].
    ///
    /// **Panics** if a value of `x` is not a whole number in
    /// `0..num_embeddings` (naming it).
    #[track_caller]
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        x.embedding(&self.weight)
    }

    #[track_caller]
    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        vec![("weight".to_string(), self.weight.clone())]
    }
}
