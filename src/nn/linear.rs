//! `Linear`: an affine map of the last dimension.

use crate::nn::init::uniform_fan_in;
use crate::nn::module::weight_and_bias;
use crate::nn::{name_parameters, Module};
use crate::{Float, Tensor};

/// `y = x Wᵀ + b` over the last dimension of `x` (`torch.nn.Linear`):
/// input `[*, in_features]`, output `[*, out_features]`.
///
/// The weight is stored as PyTorch stores it, `[out_features,
/// in_features]`; the product reads it through a transposed view (no
/// copy). Weight and bias start uniform in `[-1/√in_features,
/// 1/√in_features]`, PyTorch's default, drawn from the crate's generator.
///
/// ```
/// use tapegrad::nn::{Linear, Module};
/// use tapegrad::Tensor;
///
/// tapegrad::manual_seed(0);
/// let fc = Linear::new(3, 2);
/// assert_eq!(fc.weight.shape(), &[2, 3]);
/// let y = fc.forward(&Tensor::<f32>::ones(&[4, 3]));
/// assert_eq!(y.shape(), &[4, 2]);
/// let names: Vec<String> = fc.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["weight", "bias"]);
/// ```
#[derive(Debug, Clone)]
pub struct Linear<T: Float = f32> {
    /// `[out_features, in_features]`, a leaf that requires grad.
    pub weight: Tensor<T>,
    /// `[out_features]`, or `None` for a layer without bias.
    pub bias: Option<Tensor<T>>,
}

impl<T: Float> Linear<T> {
    /// A layer from `in_features` to `out_features` with a bias, PyTorch's
    /// default initialisation.
    ///
    /// ```
    /// let fc = tapegrad::nn::Linear::<f64>::new(4, 2);
    /// let bound = 1.0 / 4f64.sqrt();
    /// assert!(fc.weight.to_vec().iter().all(|w| w.abs() <= bound));
    /// assert_eq!(fc.bias.unwrap().shape(), &[2]);
    /// ```
    #[track_caller]
    pub fn new(in_features: usize, out_features: usize) -> Self {
        let weight = uniform_fan_in(&[out_features, in_features], in_features);
        let bias = uniform_fan_in(&[out_features], in_features);
        let layer = Linear {
            weight,
            bias: Some(bias),
        };
        name_parameters(&layer);
        layer
    }

    /// A layer without bias (`bias=False`): `y = x Wᵀ`.
    ///
    /// ```
    /// use tapegrad::nn::{Linear, Module};
    /// let fc = Linear::<f32>::new_no_bias(4, 2);
    /// assert!(fc.bias.is_none());
    /// assert_eq!(fc.parameters().len(), 1);
    /// ```
    #[track_caller]
    pub fn new_no_bias(in_features: usize, out_features: usize) -> Self {
        let layer = Linear {
            weight: uniform_fan_in(&[out_features, in_features], in_features),
            bias: None,
        };
        name_parameters(&layer);
        layer
    }
}

impl<T: Float> Module<T> for Linear<T> {
    /// `x Wᵀ + b`: one matrix product for all the leading dimensions.
    ///
    /// **Panics** if the last dimension of `x` is not `in_features`.
    #[track_caller]
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        let (out_features, in_features) = (self.weight.shape()[0], self.weight.shape()[1]);
        let shape = x.shape();
        assert!(
            shape.last() == Some(&in_features),
            "Linear: expects input [*, {in_features}] (in_features = {in_features}), got shape {shape:?}"
        );
        let rows = if shape.len() > 2 {
            &x.reshape(&[shape[..shape.len() - 1].iter().product(), in_features])
        } else {
            x
        };
        let y = rows.matmul(&self.weight.t());
        let y = match &self.bias {
            Some(b) => y + b,
            None => y,
        };
        if shape.len() > 2 {
            let mut out = shape.to_vec();
            *out.last_mut().expect("at least 3 dimensions") = out_features;
            y.reshape(&out)
        } else {
            y
        }
    }

    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        weight_and_bias(&self.weight, self.bias.as_ref())
    }
}
