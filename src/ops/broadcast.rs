//! Broadcast views (the rules, as NumPy's, are in `layout`) and their
//! gradient: the one place where a gradient is summed back to the shape of
//! a broadcast input.

use crate::autograd::node::record;
use crate::layout::{check_broadcasts_to, dims, try_check_broadcasts_to};
use crate::ops::sum::sum_axis;
use crate::storage::Value;
use crate::{Float, Tensor, TensorError};
use smallvec::smallvec;

impl<T: Float> Tensor<T> {
    /// A view of this tensor repeated along new leading dimensions and along
    /// dimensions of size 1 (no copy: repeated elements share memory).
    ///
    /// ```
    /// let b = tapegrad::Tensor::from_vec(vec![1.0f32, 2.0], &[2]).broadcast_to(&[2, 2]);
    /// assert_eq!(b.to_vec(), vec![1.0, 2.0, 1.0, 2.0]);
    /// ```
    ///
    /// **Panics** if the shape cannot be broadcast to `shape`.
    #[track_caller]
    pub fn broadcast_to(&self, shape: &[usize]) -> Tensor<T> {
        match self.try_broadcast_to(shape) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`broadcast_to`](Tensor::broadcast_to), with the error returned
    /// instead of a panic.
    ///
    /// ```
    /// let t = tapegrad::Tensor::<f32>::zeros(&[2, 1]);
    /// assert_eq!(t.try_broadcast_to(&[3, 2, 4]).unwrap().shape(), &[3, 2, 4]);
    /// let err = t.try_broadcast_to(&[3, 4]).unwrap_err();
    /// assert_eq!(err.to_string(), "broadcast_to: shape [2, 1] cannot be broadcast to [3, 4]");
    /// ```
    #[track_caller]
    pub fn try_broadcast_to(&self, shape: &[usize]) -> Result<Tensor<T>, TensorError> {
        try_check_broadcasts_to("broadcast_to", self.shape(), shape)?;
        let v = self.value();
        let lead = shape.len() - v.shape.len();
        let strides = (0..shape.len())
            .map(|i| {
                if i < lead || v.shape[i - lead] != shape[i] {
                    0
                } else {
                    v.strides[i - lead]
                }
            })
            .collect();
        let out = v.with_layout(dims(shape), strides, v.offset);
        let from = dims(self.shape());
        Ok(record("BroadcastToBackward", &[self], out, &[], move |_, g| {
            smallvec![Some(g.sum_to(&from))]
        }))
    }

    /// The sum of this tensor down to `shape`, which it must broadcast from:
    /// the gradient of a broadcast.
    #[track_caller]
    pub(crate) fn sum_to(&self, shape: &[usize]) -> Tensor<T> {
        if self.shape() == shape {
            return self.clone();
        }
        check_broadcasts_to("sum_to", shape, self.shape());
        // The axes a broadcast added or stretched, summed from the last so
        // that the indices of the others stay put.
        let lead = self.ndim() - shape.len();
        let mut axes = (0..self.ndim())
            .rev()
            .filter(|&i| i < lead || (shape[i - lead] == 1 && self.shape()[i] != 1));
        let first = axes.next().expect("the shapes differ");
        let mut sum = sum_axis(&self.data().view(), first);
        let mut left = dims(self.shape());
        left.remove(first);
        for i in axes {
            let partial = Value::from_vec(sum, &left);
            sum = sum_axis(&partial.view(), i);
            left.remove(i);
        }
        let out = Value::from_vec(sum, shape);
        let from = dims(self.shape());
        record("SumToBackward", &[self], out, &[], move |_, g| {
            smallvec![Some(g.broadcast_to(&from))]
        })
    }
}
