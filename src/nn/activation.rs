//! Activations and `Flatten`: modules without parameters.

use crate::nn::Module;
use crate::{Float, Tensor};

/// Defines a unit-struct module whose forward is one expression of `x`.
macro_rules! stateless {
    ($(#[$doc:meta])* $name:ident, |$x:ident| $forward:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name;

        impl<T: Float> Module<T> for $name {
            #[track_caller]
            fn forward(&self, $x: &Tensor<T>) -> Tensor<T> {
                $forward
            }

            #[track_caller]
            fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
                Vec::new()
            }
        }
    };
}

stateless!(
    /// `max(x, 0)` elementwise (`torch.nn.ReLU`); see [`Tensor::relu`].
    ///
    /// ```
    /// use tapegrad::nn::{Module, ReLU};
    /// let y = ReLU.forward(&tapegrad::Tensor::from_vec(vec![-1.0f32, 2.0], &[2]));
    /// assert_eq!(y.to_vec(), vec![0.0, 2.0]);
    /// ```
    ReLU,
    |x| x.relu()
);

stateless!(
    /// The hyperbolic tangent elementwise (`torch.nn.Tanh`); see
    /// [`Tensor::tanh`].
    ///
    /// ```
    /// use tapegrad::nn::{Module, Tanh};
    /// let y = Tanh.forward(&tapegrad::Tensor::from_vec(vec![0.0f64], &[1]));
    /// assert_eq!(y.to_vec(), vec![0.0]);
    /// ```
    Tanh,
    |x| x.tanh()
);

stateless!(
    /// The logistic function elementwise (`torch.nn.Sigmoid`); see
    /// [`Tensor::sigmoid`].
    ///
    /// ```
    /// use tapegrad::nn::{Module, Sigmoid};
    /// let y = Sigmoid.forward(&tapegrad::Tensor::from_vec(vec![0.0f32], &[1]));
    /// assert_eq!(y.to_vec(), vec![0.5]);
    /// ```
    Sigmoid,
    |x| x.sigmoid()
);

stateless!(
    /// `x Φ(x)` elementwise, the exact (erf) form (`torch.nn.GELU()` with
    /// its default `approximate='none'`); see [`Tensor::gelu`].
    ///
    /// ```
    /// use tapegrad::nn::{Module, GELU};
    /// let y = GELU.forward(&tapegrad::Tensor::from_vec(vec![0.0f64, 1.0], &[2]));
    /// assert!((y.to_vec()[1] - 0.8413447460685429).abs() < 1e-15);
    /// ```
    GELU,
    |x| x.gelu()
);

stateless!(
    /// Flattens every dimension but the first into one (`torch.nn.Flatten()`,
    /// `start_dim=1`): `[N, d1, d2, ...]` to `[N, d1·d2·...]`, a view when
    /// the input is contiguous.
    ///
    /// ```
    /// use tapegrad::nn::{Flatten, Module};
    /// let y = Flatten.forward(&tapegrad::Tensor::<f32>::zeros(&[64, 32, 2, 2]));
    /// assert_eq!(y.shape(), &[64, 128]);
    /// ```
    ///
    /// **Panics** (in `forward`) if the input has fewer than 2 dimensions,
    /// as PyTorch.
    Flatten,
    |x| {
        let shape = x.shape();
        assert!(
            shape.len() >= 2,
            "Flatten: flattens dimensions 1.., so it needs an input of at least 2 dimensions, got shape {shape:?}"
        );
        x.reshape(&[shape[0], shape[1..].iter().product()])
    }
);
