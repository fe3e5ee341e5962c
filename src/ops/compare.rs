//! Elementwise comparisons: `1` where the relation holds, `0` where it does
//! not, as values of the tensor's own type. They have no gradient, so they
//! are never recorded and their results never require grad. Comparisons
//! with NaN are false (`eq_elem` included), as in PyTorch and IEEE 754.

use crate::ops::kernels::zip_map;
use crate::{Float, Tensor};

/// `1` where `holds(a, b)`, else `0`, broadcasting `a` and `b`; a leaf.
#[track_caller]
fn compare<T: Float>(op: &str, a: &Tensor<T>, b: &Tensor<T>, holds: impl Fn(T, T) -> bool) -> Tensor<T> {
    Tensor::from_value(zip_map(
        op,
        a,
        b,
        |x, y| if holds(x, y) { T::one() } else { T::zero() },
    ))
}

impl<T: Float> Tensor<T> {
    /// `self > other` elementwise as `1`/`0` (`torch.gt`), broadcasting as
    /// NumPy does. Never requires grad; NaN compares false.
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let x = Tensor::from_vec(vec![-1.0f32, 0.0, 2.0], &[3]);
    /// assert_eq!(x.gt(&Tensor::scalar(0.0)).to_vec(), vec![0.0, 0.0, 1.0]);
    /// ```
    ///
    /// **Panics** if the shapes do not broadcast together.
    #[track_caller]
    pub fn gt(&self, other: &Tensor<T>) -> Tensor<T> {
        compare("gt", self, other, |a, b| a > b)
    }

    /// `self < other` elementwise as `1`/`0` (`torch.lt`); see
    /// [`gt`](Tensor::gt).
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let x = Tensor::from_vec(vec![-1.0f32, 0.0, 2.0], &[3]);
    /// assert_eq!(x.lt(&Tensor::scalar(0.0)).to_vec(), vec![1.0, 0.0, 0.0]);
    /// ```
    ///
    /// **Panics** if the shapes do not broadcast together.
    #[track_caller]
    pub fn lt(&self, other: &Tensor<T>) -> Tensor<T> {
        compare("lt", self, other, |a, b| a < b)
    }

    /// `self >= other` elementwise as `1`/`0` (`torch.ge`); see
    /// [`gt`](Tensor::gt).
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let x = Tensor::from_vec(vec![-1.0f32, 0.0, 2.0], &[3]);
    /// assert_eq!(x.ge(&Tensor::scalar(0.0)).to_vec(), vec![0.0, 1.0, 1.0]);
    /// ```
    ///
    /// **Panics** if the shapes do not broadcast together.
    #[track_caller]
    pub fn ge(&self, other: &Tensor<T>) -> Tensor<T> {
        compare("ge", self, other, |a, b| a >= b)
    }

    /// `self <= other` elementwise as `1`/`0` (`torch.le`); see
    /// [`gt`](Tensor::gt).
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let x = Tensor::from_vec(vec![-1.0f32, 0.0, 2.0], &[3]);
    /// assert_eq!(x.le(&Tensor::scalar(0.0)).to_vec(), vec![1.0, 1.0, 0.0]);
    /// ```
    ///
    /// **Panics** if the shapes do not broadcast together.
    #[track_caller]
    pub fn le(&self, other: &Tensor<T>) -> Tensor<T> {
        compare("le", self, other, |a, b| a <= b)
    }

    /// `self == other` elementwise as `1`/`0` (`torch.eq`; named so as not
    /// to read as a comparison of whole tensors). NaN equals nothing, itself
    /// included.
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// // accuracy: the share of predictions equal to the labels
    /// let pred = Tensor::from_vec(vec![1.0f32, 2.0, 0.0, 2.0], &[4]);
    /// let labels = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 2.0], &[4]);
    /// assert_eq!(pred.eq_elem(&labels).mean().item(), 0.75);
    /// ```
    ///
    /// **Panics** if the shapes do not broadcast together.
    #[track_caller]
    pub fn eq_elem(&self, other: &Tensor<T>) -> Tensor<T> {
        compare("eq_elem", self, other, |a, b| a == b)
    }
}
