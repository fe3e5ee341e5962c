//! `LayerNorm`.

use crate::nn::{name_parameters, Module};
use crate::{Float, Tensor};

/// Layer normalisation over the trailing `normalized_shape` dimensions,
/// with a learned elementwise scale and shift (`torch.nn.LayerNorm`, `eps`
/// 1e-5); see [`Tensor::layer_norm`]. The scale starts at ones, the shift
/// at zeros.
///
/// ```
/// use tapegrad::nn::{LayerNorm, Module};
/// use tapegrad::Tensor;
///
/// let ln = LayerNorm::new(&[4]);
/// let y = ln.forward(&Tensor::<f64>::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[1, 4]));
/// let mean: f64 = y.to_vec().iter().sum::<f64>() / 4.0;
/// assert!(mean.abs() < 1e-12);
/// assert_eq!(ln.weight.to_vec(), vec![1.0; 4]);
/// ```
#[derive(Debug, Clone)]
pub struct LayerNorm<T: Float = f32> {
    /// The scale, of shape `normalized_shape` (starts at ones).
    pub weight: Tensor<T>,
    /// The shift, of shape `normalized_shape` (starts at zeros).
    pub bias: Tensor<T>,
    normalized_shape: Vec<usize>,
    eps: T,
}

impl<T: Float> LayerNorm<T> {
    /// Normalises over the last `normalized_shape.len()` dimensions, which
    /// must be `normalized_shape`.
    ///
    /// ```
    /// use tapegrad::nn::{LayerNorm, Module};
    /// let ln = LayerNorm::<f32>::new(&[3, 4]);
    /// assert_eq!(ln.bias.shape(), &[3, 4]);
    /// assert_eq!(ln.parameters().len(), 2);
    /// ```
    #[track_caller]
    pub fn new(normalized_shape: &[usize]) -> Self {
        let layer = LayerNorm {
            weight: Tensor::ones(normalized_shape).set_requires_grad(true),
            bias: Tensor::zeros(normalized_shape).set_requires_grad(true),
            normalized_shape: normalized_shape.to_vec(),
            eps: T::of(1e-5),
        };
        name_parameters(&layer);
        layer
    }
}

impl<T: Float> Module<T> for LayerNorm<T> {
    /// **Panics** if the input's shape does not end with `normalized_shape`.
    #[track_caller]
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        x.layer_norm(
            &self.normalized_shape,
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
        )
    }

    #[track_caller]
    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        vec![
            ("weight".to_string(), self.weight.clone()),
            ("bias".to_string(), self.bias.clone()),
        ]
    }
}
