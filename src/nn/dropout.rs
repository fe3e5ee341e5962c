//! `Dropout`: random zeroing while training.

use crate::nn::Module;
use crate::{Float, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Zeroes each element with probability `p` and scales the others by
/// `1 / (1 - p)` in training mode; the identity in eval mode
/// (`torch.nn.Dropout`). The mask is drawn from the crate's generator; see
/// [`Tensor::dropout`]. Starts in training mode.
///
/// Clones share the mode (as they share the parameters of other modules):
/// `eval()` on a model reaches a clone moved into a checkpoint closure.
///
/// ```
/// use tapegrad::nn::{Dropout, Module};
/// use tapegrad::Tensor;
///
/// let drop = Dropout::new(0.5f32);
/// let x = Tensor::ones(&[1000]);
/// let y = drop.forward(&x).to_vec();
/// assert!(y.iter().all(|&v| v == 0.0 || v == 2.0));
/// assert!(y.iter().any(|&v| v == 0.0));
/// drop.eval();
/// assert_eq!(drop.forward(&x).to_vec(), x.to_vec());
/// ```
#[derive(Debug, Clone)]
pub struct Dropout<T: Float = f32> {
    p: T,
    training: Arc<AtomicBool>,
}

impl<T: Float> Dropout<T> {
    /// A dropout layer with drop probability `p`.
    ///
    /// ```
    /// use tapegrad::nn::{Dropout, Module};
    /// let x = tapegrad::Tensor::<f64>::ones(&[3]);
    /// assert_eq!(Dropout::new(0.0).forward(&x).to_vec(), x.to_vec()); // nothing to drop
    /// ```
    ///
    /// **Panics** unless `0 <= p <= 1`.
    #[track_caller]
    pub fn new(p: T) -> Self {
        assert!(
            p >= T::zero() && p <= T::one(),
            "Dropout: dropout probability has to be between 0 and 1, but got {p}"
        );
        Dropout {
            p,
            training: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl<T: Float> Module<T> for Dropout<T> {
    #[track_caller]
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        x.dropout(self.p, self.training.load(Ordering::Relaxed))
    }

    #[track_caller]
    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        Vec::new()
    }

    #[track_caller]
    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
}
