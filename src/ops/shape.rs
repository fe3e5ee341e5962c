//! Views and reshapes: O(1) where the layout allows, sharing the buffer.

use crate::autograd::node::record;
use crate::layout::{contiguous_strides, dims};
use crate::storage::Value;
use crate::TensorError;
use crate::{layout, Float, Tensor};
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
    #[track_caller]
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
    /// ```
    /// use tapegrad::Tensor;
    /// let m = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    /// assert_eq!(m.t().shape(), &[3, 2]);
    /// assert_eq!(m.t().to_vec(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    /// assert_eq!(Tensor::<f32>::zeros(&[3]).t().shape(), &[3]);
    /// ```
    ///
    /// **Panics** for more than 2 dimensions (use `transpose`).
    #[track_caller]
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
    #[track_caller]
    pub fn reshape(&self, shape: &[usize]) -> Tensor<T> {
        match self.try_reshape(shape) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`reshape`](Tensor::reshape), with the error returned instead of a
    /// panic.
    ///
    /// ```
    /// let t = tapegrad::Tensor::<f32>::zeros(&[2, 3]);
    /// assert!(t.try_reshape(&[3, 2]).is_ok());
    /// assert_eq!(t.try_reshape(&[4]).unwrap_err().to_string(), "reshape: shape [2, 3] (6 elements) cannot become [4] (4 elements)");
    /// ```
    #[track_caller]
    pub fn try_reshape(&self, shape: &[usize]) -> Result<Tensor<T>, TensorError> {
        let n = layout::try_numel("reshape", shape)?;
        if n != self.numel() {
            return Err(TensorError::Reshape {
                from: self.shape().to_vec(),
                to: shape.to_vec(),
            });
        }
        let v = self.value().contiguous();
        let out = v.with_layout(dims(shape), contiguous_strides(shape), v.offset);
        let from = dims(self.shape());
        Ok(record("ViewBackward", &[self], out, &[], move |_, g| {
            smallvec![Some(g.reshape(&from))]
        }))
    }

    /// Reorders the dimensions: dimension `i` of the result is dimension
    /// `dims[i]` of `self` (a view).
    ///
    /// ```
    /// let t = tapegrad::Tensor::<f32>::zeros(&[2, 3, 4]).permute(&[2, 0, 1]);
    /// assert_eq!(t.shape(), &[4, 2, 3]);
    /// ```
    ///
    /// **Panics** unless `dims` is a permutation of `0..ndim`.
    #[track_caller]
    pub fn permute(&self, order: &[usize]) -> Tensor<T> {
        let n = self.ndim();
        let mut seen = vec![false; n];
        let valid = order.len() == n
            && order
                .iter()
                .all(|&d| d < n && !std::mem::replace(&mut seen[d], true));
        assert!(
            valid,
            "permute: {order:?} is not a permutation of the {n} dimensions of shape {:?}",
            self.shape()
        );
        let v = self.value();
        let shape = order.iter().map(|&d| v.shape[d]).collect();
        let strides = order.iter().map(|&d| v.strides[d]).collect();
        let out = v.with_layout(shape, strides, v.offset);
        let mut inverse = vec![0; n];
        for (i, &d) in order.iter().enumerate() {
            inverse[d] = i;
        }
        record("PermuteBackward", &[self], out, &[], move |_, g| {
            smallvec![Some(g.permute(&inverse))]
        })
    }

    /// Inserts a dimension of size 1 at `dim` (a view); `dim` may be
    /// `ndim()` (appends).
    ///
    /// ```
    /// let t = tapegrad::Tensor::<f32>::zeros(&[2, 3]).unsqueeze(1);
    /// assert_eq!(t.shape(), &[2, 1, 3]);
    /// ```
    ///
    /// **Panics** if `dim > ndim()`.
    #[track_caller]
    pub fn unsqueeze(&self, dim: usize) -> Tensor<T> {
        assert!(
            dim <= self.ndim(),
            "unsqueeze: dimension {dim} out of range for shape {:?} (at most {})",
            self.shape(),
            self.ndim()
        );
        let v = self.value();
        let (mut shape, mut strides) = (v.shape.clone(), v.strides.clone());
        shape.insert(dim, 1);
        strides.insert(dim, 1);
        let out = v.with_layout(shape, strides, v.offset);
        record("UnsqueezeBackward", &[self], out, &[], move |_, g| {
            smallvec![Some(g.squeeze(dim))]
        })
    }

    /// Removes dimension `dim` if its size is 1 (a view); otherwise returns
    /// the tensor unchanged, as PyTorch does.
    ///
    /// ```
    /// let t = tapegrad::Tensor::<f32>::zeros(&[2, 1, 3]);
    /// assert_eq!(t.squeeze(1).shape(), &[2, 3]);
    /// assert_eq!(t.squeeze(0).shape(), &[2, 1, 3]);
    /// ```
    ///
    /// **Panics** if `dim >= ndim()`.
    #[track_caller]
    pub fn squeeze(&self, dim: usize) -> Tensor<T> {
        assert!(
            dim < self.ndim(),
            "squeeze: dimension {dim} out of range for shape {:?}",
            self.shape()
        );
        if self.shape()[dim] != 1 {
            return self.clone();
        }
        let v = self.value();
        let (mut shape, mut strides) = (v.shape.clone(), v.strides.clone());
        shape.remove(dim);
        strides.remove(dim);
        let out = v.with_layout(shape, strides, v.offset);
        record("SqueezeBackward", &[self], out, &[], move |_, g| {
            smallvec![Some(g.unsqueeze(dim))]
        })
    }

    /// The slice `start..start + len` of dimension `dim` (a view).
    ///
    /// ```
    /// let t = tapegrad::Tensor::from_vec(vec![0.0f32, 1.0, 2.0, 3.0], &[4]).narrow(0, 1, 2);
    /// assert_eq!(t.to_vec(), vec![1.0, 2.0]);
    /// ```
    ///
    /// **Panics** if `dim` is out of range or the slice does not fit.
    #[track_caller]
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Tensor<T> {
        assert!(
            dim < self.ndim(),
            "narrow: dimension {dim} out of range for shape {:?}",
            self.shape()
        );
        let size = self.shape()[dim];
        assert!(
            start.checked_add(len).is_some_and(|end| end <= size),
            "narrow: start {start} + length {len} exceeds the size {size} of dimension {dim} of shape {:?}",
            self.shape()
        );
        let v = self.value();
        let mut shape = v.shape.clone();
        shape[dim] = len;
        let offset = if len == 0 {
            v.offset
        } else {
            v.offset + start * v.strides[dim]
        };
        let out = v.with_layout(shape, v.strides.clone(), offset);
        let full = self.shape()[dim];
        record("NarrowBackward", &[self], out, &[], move |_, g| {
            // The gradient goes back to its place, zeros around it.
            let mut parts = Vec::with_capacity(3);
            let zeros = |n: usize| {
                let mut shape = dims(g.shape());
                shape[dim] = n;
                Tensor::zeros(&shape)
            };
            if start > 0 {
                parts.push(zeros(start));
            }
            parts.push(g.clone());
            if start + len < full {
                parts.push(zeros(full - start - len));
            }
            smallvec![Some(Tensor::cat(&parts, dim))]
        })
    }

    /// Joins tensors along an existing dimension `dim`; all other sizes must
    /// agree.
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let a = Tensor::<f32>::zeros(&[2, 3]);
    /// let b = Tensor::<f32>::ones(&[1, 3]);
    /// assert_eq!(Tensor::cat(&[a, b], 0).shape(), &[3, 3]);
    /// ```
    ///
    /// **Panics** if `tensors` is empty, `dim` is out of range, or the other
    /// sizes differ (naming the shapes).
    #[track_caller]
    pub fn cat(tensors: &[Tensor<T>], dim: usize) -> Tensor<T> {
        match Tensor::try_cat(tensors, dim) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`cat`](Tensor::cat), with the error returned instead of a panic.
    ///
    /// ```
    /// use tapegrad::{Tensor, TensorError};
    /// let (a, b) = (Tensor::<f32>::zeros(&[2, 3]), Tensor::<f32>::zeros(&[2, 4]));
    /// assert_eq!(Tensor::try_cat(&[a.clone(), b.clone()], 1).unwrap().shape(), &[2, 7]);
    /// let err = Tensor::try_cat(&[a, b], 0).unwrap_err();
    /// assert_eq!(err.to_string(), "cat: shapes [2, 3] and [2, 4] differ outside dimension 0");
    /// assert!(matches!(Tensor::<f32>::try_cat(&[], 0), Err(TensorError::NoTensors { op: "cat" })));
    /// ```
    #[track_caller]
    pub fn try_cat(tensors: &[Tensor<T>], dim: usize) -> Result<Tensor<T>, TensorError> {
        let Some(first) = tensors.first().map(Tensor::shape) else {
            return Err(TensorError::NoTensors { op: "cat" });
        };
        if dim >= first.len() {
            return Err(TensorError::Dim {
                op: "cat",
                dim,
                shape: first.to_vec(),
            });
        }
        for t in tensors {
            let s = t.shape();
            let same = s.len() == first.len()
                && s.iter()
                    .zip(first)
                    .enumerate()
                    .all(|(i, (a, b))| i == dim || a == b);
            if !same {
                return Err(TensorError::Join {
                    op: "cat",
                    first: first.to_vec(),
                    other: s.to_vec(),
                    dim: Some(dim),
                });
            }
        }
        let total = tensors
            .iter()
            .try_fold(0usize, |n, t| n.checked_add(t.shape()[dim]));
        let mut shape = dims(first);
        shape[dim] = total.unwrap_or(usize::MAX);
        layout::try_numel("cat", &shape)?;
        let values: Vec<_> = tensors.iter().map(Tensor::value).collect();
        let views: Vec<_> = values.iter().map(|v| v.view()).collect();
        let joined = ndarray::concatenate(ndarray::Axis(dim), &views).expect("shapes checked");
        let sizes: Vec<usize> = tensors.iter().map(|t| t.shape()[dim]).collect();
        let inputs: Vec<&Tensor<T>> = tensors.iter().collect();
        Ok(record(
            "CatBackward",
            &inputs,
            Value::from_array(joined),
            &[],
            move |ctx, g| {
                let mut start = 0;
                sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| {
                        start += n;
                        ctx.needs_grad(i).then(|| g.narrow(dim, start - n, n))
                    })
                    .collect()
            },
        ))
    }

    /// Joins tensors of one shape along a new dimension `dim`.
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let a = Tensor::<f32>::zeros(&[2, 3]);
    /// assert_eq!(Tensor::stack(&[a.clone(), a], 0).shape(), &[2, 2, 3]);
    /// ```
    ///
    /// **Panics** if `tensors` is empty, the shapes differ, or `dim > ndim`.
    #[track_caller]
    pub fn stack(tensors: &[Tensor<T>], dim: usize) -> Tensor<T> {
        match Tensor::try_stack(tensors, dim) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`stack`](Tensor::stack), with the error returned instead of a
    /// panic.
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let (a, b) = (Tensor::<f32>::zeros(&[3]), Tensor::<f32>::zeros(&[4]));
    /// let err = Tensor::try_stack(&[a, b], 0).unwrap_err();
    /// assert_eq!(err.to_string(), "stack: expects tensors of one shape, got [3] and [4]");
    /// ```
    #[track_caller]
    pub fn try_stack(tensors: &[Tensor<T>], dim: usize) -> Result<Tensor<T>, TensorError> {
        let Some(first) = tensors.first().map(Tensor::shape) else {
            return Err(TensorError::NoTensors { op: "stack" });
        };
        if let Some(t) = tensors.iter().find(|t| t.shape() != first) {
            return Err(TensorError::Join {
                op: "stack",
                first: first.to_vec(),
                other: t.shape().to_vec(),
                dim: None,
            });
        }
        if dim > first.len() {
            return Err(TensorError::Dim {
                op: "stack",
                dim,
                shape: first.to_vec(),
            });
        }
        let parts: Vec<Tensor<T>> = tensors.iter().map(|t| t.unsqueeze(dim)).collect();
        Tensor::try_cat(&parts, dim)
    }
}
