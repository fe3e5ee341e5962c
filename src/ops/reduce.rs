//! Reductions: over everything (to shape `[]`) or along one dimension.

use crate::autograd::node::{record, Role};
use crate::layout::{check_dim, dims};
use crate::ops::sum::{sum_all, sum_axis};
use crate::storage::Value;
use crate::{no_grad, Float, Tensor};
use ndarray::{ArrayD, Axis};
use smallvec::smallvec;
use std::sync::Arc;

impl<T: Float> Tensor<T> {
    /// The sum of all elements, as a tensor of shape `[]`.
    ///
    /// ```
    /// let s = tapegrad::Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).sum();
    /// assert_eq!((s.shape(), s.item()), (&[][..], 6.0));
    /// ```
    #[track_caller]
    pub fn sum(&self) -> Tensor<T> {
        // d Σx = dx broadcast to every element
        let total = sum_all(&self.data().view());
        let shape = dims(self.shape());
        record("SumBackward", &[self], Value::scalar(total), &[], move |_, g| {
            smallvec![Some(g.broadcast_to(&shape))]
        })
    }

    /// The mean of all elements, as a tensor of shape `[]` (NaN when empty,
    /// as PyTorch).
    ///
    /// ```
    /// let m = tapegrad::Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).mean();
    /// assert_eq!(m.item(), 2.0);
    /// ```
    #[track_caller]
    pub fn mean(&self) -> Tensor<T> {
        // mean = Σx / n: its gradient comes from sum's and div's.
        self.sum() / T::of(self.numel() as f64)
    }

    /// The sum along `dim`; with `keepdim` the dimension stays, with size 1.
    ///
    /// ```
    /// let t = tapegrad::Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    /// assert_eq!(t.sum_dim(0, false).to_vec(), vec![4.0, 6.0]);
    /// assert_eq!(t.sum_dim(1, true).shape(), &[2, 1]);
    /// ```
    ///
    /// **Panics** if `dim` is out of range.
    #[track_caller]
    pub fn sum_dim(&self, dim: usize, keepdim: bool) -> Tensor<T> {
        check_dim("sum_dim", dim, self.shape());
        // d Σ_dim x = dx broadcast along dim
        let sum = sum_axis(&self.data().view(), dim);
        let mut out_shape = dims(self.shape());
        if keepdim {
            out_shape[dim] = 1;
        } else {
            out_shape.remove(dim);
        }
        let shape = dims(self.shape());
        record(
            "SumBackward",
            &[self],
            Value::from_vec(sum, &out_shape),
            &[],
            move |_, g| {
                let g = if keepdim { g } else { g.unsqueeze(dim) };
                smallvec![Some(g.broadcast_to(&shape))]
            },
        )
    }

    /// The mean along `dim`; see [`sum_dim`](Tensor::sum_dim).
    ///
    /// ```
    /// let t = tapegrad::Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    /// assert_eq!(t.mean_dim(1, false).to_vec(), vec![1.5, 3.5]);
    /// ```
    ///
    /// **Panics** if `dim` is out of range.
    #[track_caller]
    pub fn mean_dim(&self, dim: usize, keepdim: bool) -> Tensor<T> {
        check_dim("mean_dim", dim, self.shape());
        self.sum_dim(dim, keepdim) / T::of(self.shape()[dim] as f64)
    }

    /// The variance along `dim`, unbiased (divided by n - 1, PyTorch's
    /// default); see [`sum_dim`](Tensor::sum_dim). NaN along a dimension
    /// of size 0 or 1, as PyTorch.
    ///
    /// ```
    /// let t = tapegrad::Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[4]);
    /// assert!((t.var_dim(0, false).item() - 5.0 / 3.0).abs() < 1e-15);
    /// ```
    ///
    /// **Panics** if `dim` is out of range.
    #[track_caller]
    pub fn var_dim(&self, dim: usize, keepdim: bool) -> Tensor<T> {
        check_dim("var_dim", dim, self.shape());
        // Σ (x - mean)² / (n - 1), the divisor at least 0 (as PyTorch's
        // `correction`), so that an empty dimension gives 0/0.
        let divisor = T::of(self.shape()[dim].saturating_sub(1) as f64);
        let out = no_grad(|| {
            let d = self - self.mean_dim(dim, true);
            (&d * &d).sum_dim(dim, keepdim) / divisor
        });
        // d var = 2 (x - mean) / (n - 1) dx, PyTorch's `var_backward`. (The
        // composite's gradient would add the mean's term, 0 in exact
        // arithmetic but NaN where x holds an infinity.)
        record(
            "VarBackward",
            &[self],
            out.value(),
            &[Role::Input(0)],
            move |ctx, g| {
                let x = ctx.input(0);
                let g = if keepdim { g } else { g.unsqueeze(dim) };
                smallvec![Some(g * (&x - x.mean_dim(dim, true)) * (T::of(2.0) / divisor))]
            },
        )
    }

    /// The largest value along `dim`. The gradient goes to the one element
    /// picked (the first maximum; NaN counts as the largest, as PyTorch).
    ///
    /// ```
    /// let t = tapegrad::Tensor::from_vec(vec![1.0f32, 5.0, 3.0, 2.0], &[2, 2]);
    /// assert_eq!(t.max_dim(1, false).to_vec(), vec![5.0, 3.0]);
    /// ```
    ///
    /// **Panics** if `dim` is out of range or has size 0.
    #[track_caller]
    pub fn max_dim(&self, dim: usize, keepdim: bool) -> Tensor<T> {
        self.max_dim_with_indices(dim, keepdim).0
    }

    /// The smallest value along `dim`; see [`max_dim`](Tensor::max_dim).
    ///
    /// ```
    /// let t = tapegrad::Tensor::from_vec(vec![1.0f32, 5.0, 3.0, 2.0], &[2, 2]);
    /// assert_eq!(t.min_dim(1, false).to_vec(), vec![1.0, 2.0]);
    /// ```
    ///
    /// **Panics** if `dim` is out of range or has size 0.
    #[track_caller]
    pub fn min_dim(&self, dim: usize, keepdim: bool) -> Tensor<T> {
        self.min_dim_with_indices(dim, keepdim).0
    }

    /// [`max_dim`](Tensor::max_dim) and the index of each maximum
    /// (`torch.max(x, dim)`).
    ///
    /// ```
    /// let t = tapegrad::Tensor::from_vec(vec![1.0f32, 5.0, 3.0, 2.0], &[2, 2]);
    /// let (_, idx) = t.max_dim_with_indices(1, false);
    /// assert_eq!(idx.into_raw_vec_and_offset().0, vec![1, 0]);
    /// ```
    ///
    /// **Panics** if `dim` is out of range or has size 0.
    #[track_caller]
    pub fn max_dim_with_indices(&self, dim: usize, keepdim: bool) -> (Tensor<T>, ArrayD<usize>) {
        self.select_dim("max_dim", "MaxBackward", dim, keepdim, |x, best| x > best)
    }

    /// [`min_dim`](Tensor::min_dim) and the index of each minimum
    /// (`torch.min(x, dim)`).
    ///
    /// ```
    /// let t = tapegrad::Tensor::from_vec(vec![1.0f32, 5.0, 3.0, 2.0], &[2, 2]);
    /// let (values, idx) = t.min_dim_with_indices(1, true);
    /// assert_eq!(values.to_vec(), vec![1.0, 2.0]);
    /// assert_eq!(idx.shape(), &[2, 1]);
    /// assert_eq!(idx.into_raw_vec_and_offset().0, vec![0, 1]);
    /// ```
    ///
    /// **Panics** if `dim` is out of range or has size 0.
    #[track_caller]
    pub fn min_dim_with_indices(&self, dim: usize, keepdim: bool) -> (Tensor<T>, ArrayD<usize>) {
        self.select_dim("min_dim", "MinBackward", dim, keepdim, |x, best| x < best)
    }

    /// The index of the largest value along `dim` (`torch.argmax`).
    ///
    /// ```
    /// let t = tapegrad::Tensor::from_vec(vec![1.0f32, 5.0, 3.0, 2.0], &[2, 2]);
    /// assert_eq!(t.argmax_dim(1, false).into_raw_vec_and_offset().0, vec![1, 0]);
    /// ```
    ///
    /// **Panics** if `dim` is out of range or has size 0.
    #[track_caller]
    pub fn argmax_dim(&self, dim: usize, keepdim: bool) -> ArrayD<usize> {
        no_grad(|| self.max_dim_with_indices(dim, keepdim).1)
    }

    /// The element along `dim` that `better(x, best)` prefers (the first one
    /// at ties; NaN is preferred to everything), and its index. Backward
    /// scatters the gradient to that index.
    #[track_caller]
    fn select_dim(
        &self,
        op: &str,
        name: &'static str,
        dim: usize,
        keepdim: bool,
        better: fn(T, T) -> bool,
    ) -> (Tensor<T>, ArrayD<usize>) {
        check_dim(op, dim, self.shape());
        assert!(
            self.shape()[dim] > 0,
            "{op}: dimension {dim} of shape {:?} is empty",
            self.shape()
        );
        let v = self.value();
        let view = v.view();
        let lanes = view.lanes(Axis(dim));
        let mut values = Vec::with_capacity(lanes.clone().into_iter().len());
        let mut indices = Vec::with_capacity(values.capacity());
        for lane in lanes {
            let (mut best_i, mut best) = (0, lane[0]);
            for (i, &x) in lane.iter().enumerate().skip(1) {
                if !best.is_nan() && (x.is_nan() || better(x, best)) {
                    (best_i, best) = (i, x);
                }
            }
            values.push(best);
            indices.push(best_i);
        }
        let mut kept = dims(self.shape());
        kept[dim] = 1;
        let indices = ArrayD::from_shape_vec(kept.as_slice(), indices).expect("one per lane");
        let mut out_shape = kept.clone();
        if !keepdim {
            out_shape.remove(dim);
        }
        let out = Value::from_vec(values, &out_shape);
        let saved_indices = Arc::new(indices.clone());
        let shape = dims(self.shape());
        let out = record(name, &[self], out, &[], move |_, g| {
            let g = if keepdim { g } else { g.unsqueeze(dim) };
            smallvec![Some(g.scatter_add_to(dim, &saved_indices, &shape))]
        });
        let indices = if keepdim {
            indices
        } else {
            indices.remove_axis(Axis(dim))
        };
        (out, indices)
    }

    /// ln Σ exp(x) along `dim`, computed stably (the maximum is taken out
    /// first, so large inputs do not overflow).
    ///
    /// ```
    /// let t = tapegrad::Tensor::from_vec(vec![1000.0f64, 1000.0], &[2]);
    /// assert!((t.logsumexp_dim(0, false).item() - (1000.0 + 2f64.ln())).abs() < 1e-12);
    /// ```
    ///
    /// **Panics** if `dim` is out of range.
    #[track_caller]
    pub fn logsumexp_dim(&self, dim: usize, keepdim: bool) -> Tensor<T> {
        check_dim("logsumexp_dim", dim, self.shape());
        // m + ln Σ exp(x - m) with m a constant: the gradient, softmax(x),
        // comes from the composite. An infinite m (all -inf, or +inf) is
        // replaced by 0 so that x - m stays defined (as PyTorch).
        let m = self
            .max_shift(dim)
            .constant_map(|m| if m.is_finite() { m } else { T::zero() });
        let out = (self - &m).exp().sum_dim(dim, true).ln() + m;
        if keepdim {
            out
        } else {
            out.squeeze(dim)
        }
    }

    /// The maximum along `dim` (kept), as a constant (0 along an empty
    /// `dim`): the shift that keeps `exp` in range. Softmax subtracts it as
    /// it is, as PyTorch (a lane holding +inf or only -inf is NaN).
    #[track_caller]
    pub(crate) fn max_shift(&self, dim: usize) -> Tensor<T> {
        if self.shape()[dim] == 0 {
            let mut kept = dims(self.shape());
            kept[dim] = 1;
            return Tensor::zeros(&kept);
        }
        no_grad(|| self.max_dim(dim, true))
    }
}
