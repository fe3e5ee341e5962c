//! Neural-network functions: softmax, log-softmax, dropout.

use crate::autograd::node::{mark_graph_memory, record, should_record, Role};
use crate::layout::check_dim;
use crate::ops::kernels::zip_map;
use crate::{rng, Float, Tensor};
use smallvec::smallvec;

impl<T: Float> Tensor<T> {
    /// exp(x) / Σ exp(x) along `dim`, computed stably (softmax of
    /// `[1000, 0]` is `[1, 0]`).
    ///
    /// ```
    /// let p = tapegrad::Tensor::from_vec(vec![1000.0f32, 0.0], &[2]).softmax(0);
    /// assert_eq!(p.to_vec(), vec![1.0, 0.0]);
    /// ```
    ///
    /// **Panics** if `dim` is out of range.
    #[track_caller]
    pub fn softmax(&self, dim: usize) -> Tensor<T> {
        check_dim("softmax", dim, self.shape());
        // A composite with a constant shift: exp(x - m) / Σ exp(x - m).
        let e = (self - self.max_shift(dim)).exp();
        &e / e.sum_dim(dim, true)
    }

    /// ln softmax(x) along `dim`, computed stably: x - logsumexp(x).
    ///
    /// ```
    /// let p = tapegrad::Tensor::from_vec(vec![1000.0f64, 0.0], &[2]).log_softmax(0);
    /// assert_eq!(p.to_vec(), vec![0.0, -1000.0]);
    /// ```
    ///
    /// **Panics** if `dim` is out of range.
    #[track_caller]
    pub fn log_softmax(&self, dim: usize) -> Tensor<T> {
        check_dim("log_softmax", dim, self.shape());
        // (x - m) - ln Σ exp(x - m), the shift m subtracted as it is (not
        // zeroed where infinite, as logsumexp does): a lane holding +inf or
        // only -inf is NaN, value and gradient, as PyTorch's log_softmax.
        let z = self - self.max_shift(dim);
        &z - z.exp().sum_dim(dim, true).ln()
    }

    /// Zeroes each element with probability `p` and scales the rest by
    /// 1 / (1 - p) while `train` is true; the identity otherwise. The mask
    /// is drawn from this thread's generator (see
    /// [`manual_seed`](crate::manual_seed)).
    ///
    /// ```
    /// let x = tapegrad::Tensor::<f32>::ones(&[1000]);
    /// let y = x.dropout(0.5, true);
    /// assert!(y.to_vec().iter().all(|&v| v == 0.0 || v == 2.0));
    /// assert_eq!(x.dropout(0.5, false).to_vec(), x.to_vec());
    /// ```
    ///
    /// **Panics** unless `0 <= p <= 1`.
    #[track_caller]
    pub fn dropout(&self, p: T, train: bool) -> Tensor<T> {
        assert!(
            p >= T::zero() && p <= T::one(),
            "dropout: probability has to be between 0 and 1, but got {p}"
        );
        if !train || p == T::zero() {
            return self.clone();
        }
        // The scaled keep-mask: 1 / (1 - p) with probability 1 - p, else 0
        // (all 0 for p = 1).
        let scale = if p == T::one() {
            T::zero()
        } else {
            T::one() / (T::one() - p)
        };
        // Made in the uniform draws' own buffer.
        let draws = rng::uniform::<T>(self.numel()).into_iter();
        let mask = Tensor::from_vec(
            draws.map(|u| if u < p { T::zero() } else { scale }).collect(),
            self.shape(),
        );
        let out = zip_map("dropout", self, &mask, |x, m| x * m);
        // d (x m) = m dx. The mask is an input that needs no gradient, made
        // for this op's backward: graph memory.
        if should_record(&[self]) {
            mark_graph_memory(&mask);
        }
        record(
            "DropoutBackward",
            &[self, &mask],
            out,
            &[Role::Input(1)],
            |ctx, g| smallvec![Some(g * ctx.input(1)), None],
        )
    }
}
