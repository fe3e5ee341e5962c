//! Normalisation: `layer_norm`.

use crate::{Float, Tensor};

impl<T: Float> Tensor<T> {
    /// Layer normalisation over the trailing dimensions `normalized_shape`
    /// (`F.layer_norm`): each slice is shifted to mean 0 and scaled to
    /// variance 1 (the biased variance, divided by n, as PyTorch), with
    /// `eps` added to the variance, then multiplied by `weight` and shifted
    /// by `bias` (both of shape `normalized_shape`) when given:
    /// `y = (x - mean) / √(var + eps) · weight + bias`.
    ///
    /// A composite of `mean_dim`, `-`, `*`, `sqrt` and `/`, so its gradient
    /// comes from theirs and differentiates again.
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    /// let y = x.layer_norm(&[3], None, None, 0.0).to_vec();
    /// // each row has biased variance 2/3
    /// let r = 1.5f64.sqrt();
    /// for (got, want) in y.iter().zip([-r, 0.0, r, -r, 0.0, r]) {
    ///     assert!((got - want).abs() < 1e-12);
    /// }
    /// let (w, b) = (Tensor::full(&[3], 2.0), Tensor::full(&[3], 1.0));
    /// let y = x.layer_norm(&[3], Some(&w), Some(&b), 1e-5).to_vec();
    /// assert_eq!(y[4], 1.0); // 0 · 2 + 1
    /// ```
    ///
    /// **Panics** if `normalized_shape` is empty or not the end of the input's shape,
    /// or `weight` or `bias` does not have shape `normalized_shape`.
    pub fn layer_norm(
        &self,
        normalized_shape: &[usize],
        weight: Option<&Tensor<T>>,
        bias: Option<&Tensor<T>>,
        eps: T,
    ) -> Tensor<T> {
        let shape = self.shape();
        assert!(
            !normalized_shape.is_empty(),
            "layer_norm: normalized_shape must have at least one dimension, got [] (input of shape {shape:?})"
        );
        assert!(
            shape.ends_with(normalized_shape),
            "layer_norm: normalized_shape {normalized_shape:?} is not the end of the input's shape {shape:?}"
        );
        for (what, t) in [("weight", weight), ("bias", bias)] {
            if let Some(t) = t {
                assert!(
                    t.shape() == normalized_shape,
                    "layer_norm: {what} of shape {:?} does not match normalized_shape {normalized_shape:?}",
                    t.shape()
                );
            }
        }
        // One row per normalised slice.
        let lead = shape.len() - normalized_shape.len();
        let rows = self.reshape(&[shape[..lead].iter().product(), normalized_shape.iter().product()]);
        let centred = &rows - rows.mean_dim(1, true);
        let var = (&centred * &centred).mean_dim(1, true);
        let y = (centred / (var + eps).sqrt()).reshape(shape);
        let y = match weight {
            Some(w) => y * w,
            None => y,
        };
        match bias {
            Some(b) => y + b,
            None => y,
        }
    }
}
