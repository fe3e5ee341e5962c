//! Broadcasting, as NumPy does it, and its gradient: the one place where a
//! gradient is summed back to the shape of a broadcast input.

use crate::autograd::node::record;
use crate::ops::sum::sum_axis;
use crate::storage::{Dims, Value};
use crate::tensor::dims;
use crate::{layout, Float, Tensor};
use smallvec::smallvec;

/// The shape `a` and `b` broadcast to.
///
/// **Panics**, naming `op` and both shapes, if they are incompatible.
pub(crate) fn broadcast_shape(op: &str, a: &[usize], b: &[usize]) -> Dims {
    let out = try_broadcast_shape(a, b).unwrap_or_else(|i| {
        let n = a.len().max(b.len());
        let (da, db) = (dim_of(a, i, n), dim_of(b, i, n));
        panic!("{op}: shapes {a:?} and {b:?} cannot be broadcast together (dimension {i}: {da} vs {db})")
    });
    layout::numel(op, &out);
    out
}

/// The shape `a` and `b` broadcast to, or the first dimension (of the
/// result) where they clash.
pub(crate) fn try_broadcast_shape(a: &[usize], b: &[usize]) -> Result<Dims, usize> {
    let n = a.len().max(b.len());
    let mut out: Dims = smallvec![0; n];
    for i in 0..n {
        out[i] = match (dim_of(a, i, n), dim_of(b, i, n)) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(i),
        };
    }
    Ok(out)
}

/// Dimension `i` of `shape` seen as `n` dimensions (1 where it has none).
fn dim_of(shape: &[usize], i: usize, n: usize) -> usize {
    if i + shape.len() >= n {
        shape[i + shape.len() - n]
    } else {
        1
    }
}

/// **Panics**, naming `op`, unless `from` broadcasts to exactly `to`.
pub(crate) fn check_broadcasts_to(op: &str, from: &[usize], to: &[usize]) {
    let ok = from.len() <= to.len()
        && from
            .iter()
            .rev()
            .zip(to.iter().rev())
            .all(|(&f, &t)| f == t || f == 1);
    assert!(ok, "{op}: shape {from:?} cannot be broadcast to {to:?}");
    layout::numel(op, to);
}

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
    pub fn broadcast_to(&self, shape: &[usize]) -> Tensor<T> {
        check_broadcasts_to("broadcast_to", self.shape(), shape);
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
        record("BroadcastToBackward", &[self], out, &[], move |_, g| {
            smallvec![Some(g.sum_to(&from))]
        })
    }

    /// The sum of this tensor down to `shape`, which it must broadcast from:
    /// the gradient of a broadcast.
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
