//! Views and reshapes: O(1) where the layout allows, sharing the buffer.

use crate::autograd::node::record;
use crate::storage::contiguous_strides;
use crate::tensor::dims;
use crate::{Float, Tensor};
use smallvec::smallvec;

impl<T: Float> Tensor<T> {
    /// Swaps dimensions `d0` and `d1` (a view).
    ///
    /// ```
    /// let t = tapegrad::Tensor::<f32>::zeros(&[2, 3, 4]).transpose(0, 2);
    /// assert_eq!(t.shape(), &[4, 3, 2]);
    /// ```
    ///
    /// **Panics** if a dimension is out of range.
    pub fn transpose(&self, d0: usize, d1: usize) -> Tensor<T> {
        let n = self.ndim();
        assert!(
            d0 < n && d1 < n,
            "transpose: dimensions ({d0}, {d1}) out of range for shape {:?}",
            self.shape()
        );
        let v = self.value();
        let (mut shape, mut strides) = (v.shape.clone(), v.strides.clone());
        shape.swap(d0, d1);
        strides.swap(d0, d1);
        let out = v.with_layout(shape, strides, v.offset);
        record("TransposeBackward", &[self], out, &[], move |_, g| {
            smallvec![Some(g.transpose(d0, d1))]
        })
    }

    /// The transpose of a 2-D tensor (a view); 0-D and 1-D tensors are
    /// returned as they are, as PyTorch does.
    ///
    /// **Panics** for more than 2 dimensions (use `transpose`).
    pub fn t(&self) -> Tensor<T> {
        match self.ndim() {
            0 | 1 => self.clone(),
            2 => self.transpose(0, 1),
            _ => panic!(
                "t: expects a tensor with at most 2 dimensions, got shape {:?} (use transpose)",
                self.shape()
            ),
        }
    }

    /// The same elements in row-major order with another shape: a view when
    /// the data is contiguous, else a copy.
    ///
    /// ```
    /// let t = tapegrad::Tensor::<f32>::zeros(&[2, 3]).reshape(&[3, 2]);
    /// assert_eq!(t.shape(), &[3, 2]);
    /// ```
    ///
    /// **Panics** if the number of elements differs.
    pub fn reshape(&self, shape: &[usize]) -> Tensor<T> {
        let n: usize = shape.iter().product();
        assert_eq!(
            n,
            self.numel(),
            "reshape: shape {:?} ({} elements) cannot become {shape:?} ({n} elements)",
            self.shape(),
            self.numel()
        );
        let v = self.value().contiguous();
        let out = v.with_layout(dims(shape), contiguous_strides(shape), v.offset);
        let from = dims(self.shape());
        record("ViewBackward", &[self], out, &[], move |_, g| {
            smallvec![Some(g.reshape(&from))]
        })
    }
}
