//! Reductions.

use crate::autograd::node::record;
use crate::storage::Value;
use crate::tensor::dims;
use crate::{Float, Tensor};
use smallvec::smallvec;

impl<T: Float> Tensor<T> {
    /// The sum of all elements, as a tensor of shape `[]`.
    ///
    /// ```
    /// let s = tapegrad::Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).sum();
    /// assert_eq!((s.shape(), s.item()), (&[][..], 6.0));
    /// ```
    pub fn sum(&self) -> Tensor<T> {
        // d Σx = dx broadcast to every element
        let v = self.value();
        let total = match v.as_slice() {
            Some(s) => s.iter().copied().sum(),
            None => v.view().sum(),
        };
        let shape = dims(self.shape());
        record(
            "SumBackward",
            &[self],
            Value::from_vec(vec![total], &[]),
            &[],
            move |_, g| smallvec![Some(g.broadcast_to(&shape))],
        )
    }

    /// The mean of all elements, as a tensor of shape `[]` (NaN when empty,
    /// as PyTorch).
    ///
    /// ```
    /// let m = tapegrad::Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).mean();
    /// assert_eq!(m.item(), 2.0);
    /// ```
    pub fn mean(&self) -> Tensor<T> {
        // mean = Σx / n: its gradient comes from sum's and div's.
        self.sum() / T::of(self.numel() as f64)
    }
}
