//! Selecting by index, and the adjoint ops that scatter gradients back:
//! `index_select` ↔ `index_add`, `gather` ↔ `scatter_add`. Each is the
//! other's backward, so both are differentiable to any order. `embedding`
//! is an `index_select` of rows.

use crate::autograd::node::record;
use crate::layout::{check_dim, dims};
use crate::storage::Value;
use crate::{Float, Tensor};
use ndarray::{ArrayD, Axis, IxDyn};
use smallvec::smallvec;
use std::sync::Arc;

impl<T: Float> Tensor<T> {
    /// The entries `index[0], index[1], ...` of dimension `dim`, in that
    /// order (repeats allowed): `torch.index_select`.
    ///
    /// ```
    /// let t = tapegrad::Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]);
    /// assert_eq!(t.index_select(0, &[2, 0, 2]).to_vec(), vec![3.0, 1.0, 3.0]);
    /// ```
    ///
    /// **Panics** if `dim` is out of range or an index is not below the size
    /// of `dim`.
    #[track_caller]
    pub fn index_select(&self, dim: usize, index: &[usize]) -> Tensor<T> {
        check_dim("index_select", dim, self.shape());
        let size = self.shape()[dim];
        if let Some(&bad) = index.iter().find(|&&i| i >= size) {
            panic!(
                "index_select: index {bad} is out of range for dimension {dim} of size {size} (shape {:?})",
                self.shape()
            );
        }
        let out = Value::from_array(self.value().view().select(Axis(dim), index));
        let index: Arc<[usize]> = index.into();
        record("IndexSelectBackward", &[self], out, &[], move |_, g| {
            smallvec![Some(g.index_add_to(dim, &index, size))]
        })
    }

    /// The rows of `weight` (`[num_embeddings, dim]`) at the ids this
    /// tensor holds, shaped `self.shape() + [dim]` (`F.embedding(ids,
    /// weight)`). The ids are this tensor's values, which must be whole
    /// numbers in `0..num_embeddings`. A composite on
    /// [`index_select`](Tensor::index_select): the gradient of `weight` is
    /// the output's gradient added into the rows that were read (a row read
    /// twice gets both); the ids get none.
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let weight = Tensor::from_vec(vec![0.0f32, 0.5, 1.0, 1.5, 2.0, 2.5], &[3, 2]);
    /// let ids = Tensor::from_vec(vec![2.0, 0.0, 2.0, 1.0], &[2, 2]);
    /// let e = ids.embedding(&weight);
    /// assert_eq!(e.shape(), &[2, 2, 2]);
    /// assert_eq!(e.to_vec(), vec![2.0, 2.5, 0.0, 0.5, 2.0, 2.5, 1.0, 1.5]);
    /// ```
    ///
    /// **Panics** if `weight` is not 2-D, or an id is not a whole number in
    /// `0..num_embeddings` (naming it and its position).
    #[track_caller]
    pub fn embedding(&self, weight: &Tensor<T>) -> Tensor<T> {
        let ws = weight.shape();
        assert!(
            ws.len() == 2,
            "embedding: weight must be 2-D [num_embeddings, embedding_dim], got shape {ws:?}"
        );
        // A loop, not a closure: `#[track_caller]` does not reach into one.
        let mut ids = Vec::with_capacity(self.numel());
        for (at, v) in self.to_vec().into_iter().enumerate() {
            assert!(
                v.fract() == T::zero(),
                "embedding: id {v} (at position {at} of ids of shape {:?}) is not a whole number",
                self.shape()
            );
            assert!(
                v >= T::zero() && v < T::of(ws[0] as f64),
                "embedding: id {v} (at position {at} of ids of shape {:?}) is out of range for \
                 {} embeddings (weight of shape {ws:?})",
                self.shape(),
                ws[0]
            );
            ids.push(v.as_f64() as usize);
        }
        let mut shape = dims(self.shape());
        shape.push(ws[1]);
        weight.index_select(0, &ids).reshape(&shape)
    }

    /// A tensor with `size` entries along `dim`, zero but for `self`'s
    /// entries added at `index`: the adjoint of `index_select`.
    #[track_caller]
    fn index_add_to(&self, dim: usize, index: &Arc<[usize]>, size: usize) -> Tensor<T> {
        let mut shape = dims(self.shape());
        shape[dim] = size;
        let mut out = ArrayD::<T>::zeros(IxDyn(&shape));
        let src = self.value();
        let src = src.view();
        for (k, &i) in index.iter().enumerate() {
            out.index_axis_mut(Axis(dim), i)
                .zip_mut_with(&src.index_axis(Axis(dim), k), |d, &s| *d = *d + s);
        }
        let index = index.clone();
        record(
            "IndexAddBackward",
            &[self],
            Value::from_array(out),
            &[],
            move |_, g| smallvec![Some(g.index_select(dim, &index))],
        )
    }

    /// Picks along `dim` by an index array of the same number of dimensions:
    /// `out[i][j] = self[index[i][j]][j]` for `dim = 0` (`torch.gather`).
    /// The result has `index`'s shape.
    ///
    /// ```
    /// use tapegrad::{ndarray::{arr2, Array2}, Tensor};
    /// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    /// let idx = arr2(&[[1usize, 0], [0, 0]]).into_dyn();
    /// assert_eq!(t.gather(1, &idx).to_vec(), vec![2.0, 1.0, 3.0, 3.0]);
    /// ```
    ///
    /// **Panics** if the number of dimensions differ, `index` is larger than
    /// `self` outside `dim`, or an index is out of range.
    #[track_caller]
    pub fn gather(&self, dim: usize, index: &ArrayD<usize>) -> Tensor<T> {
        check_dim("gather", dim, self.shape());
        let shape = self.shape();
        let fits = index.ndim() == shape.len()
            && index
                .shape()
                .iter()
                .zip(shape)
                .enumerate()
                .all(|(d, (&i, &s))| d == dim || i <= s);
        assert!(
            fits,
            "gather: index of shape {:?} does not fit input of shape {shape:?} along dimension {dim}",
            index.shape()
        );
        let size = shape[dim];
        if let Some(&bad) = index.iter().find(|&&i| i >= size) {
            panic!(
                "gather: index {bad} is out of range for dimension {dim} of size {size} (shape {shape:?})"
            );
        }
        let src = self.value();
        let src = src.view();
        let out = ArrayD::from_shape_fn(index.raw_dim(), |mut at| {
            at[dim] = index[&at];
            src[&at]
        });
        let index = Arc::new(index.clone());
        let in_shape = dims(shape);
        record(
            "GatherBackward",
            &[self],
            Value::from_array(out),
            &[],
            move |_, g| smallvec![Some(g.scatter_add_to(dim, &index, &in_shape))],
        )
    }

    /// A tensor of `shape`, zero but for `self`'s entries added where
    /// `index` points along `dim`: the adjoint of `gather`.
    #[track_caller]
    pub(crate) fn scatter_add_to(
        &self,
        dim: usize,
        index: &Arc<ArrayD<usize>>,
        shape: &[usize],
    ) -> Tensor<T> {
        let mut out = ArrayD::<T>::zeros(IxDyn(shape));
        let src = self.value();
        for (mut at, &v) in src.view().indexed_iter() {
            at[dim] = index[&at];
            out[&at] = out[&at] + v;
        }
        let index = index.clone();
        record(
            "ScatterAddBackward",
            &[self],
            Value::from_array(out),
            &[],
            move |_, g| smallvec![Some(g.gather(dim, &index))],
        )
    }
}
