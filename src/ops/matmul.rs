//! Matrix products.

use crate::autograd::node::{record, Save};
use crate::ops::kernels::gemm;
use crate::storage::Value;
use crate::{Float, Tensor};
use ndarray::Ix2;
use smallvec::smallvec;

impl<T: Float> Tensor<T> {
    /// The matrix product of two 2-D tensors, `[m, k] @ [k, n] -> [m, n]`.
    ///
    /// ```
    /// let a = tapegrad::Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    /// let i = tapegrad::Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0], &[2, 2]);
    /// assert_eq!(a.matmul(&i).to_vec(), a.to_vec());
    /// ```
    ///
    /// **Panics** if an operand is not 2-D or the inner dimensions differ.
    pub fn matmul(&self, other: &Tensor<T>) -> Tensor<T> {
        let (a, b) = (self.shape(), other.shape());
        assert!(
            a.len() == 2 && b.len() == 2,
            "matmul: only 2-D operands are supported so far, got shapes {a:?} and {b:?}"
        );
        assert_eq!(
            a[1], b[0],
            "matmul: shapes {a:?} and {b:?} cannot be multiplied ({} != {})",
            a[1], b[0]
        );
        let (va, vb) = (self.value(), other.value());
        let va2 = va.view().into_dimensionality::<Ix2>().expect("2-D");
        let vb2 = vb.view().into_dimensionality::<Ix2>().expect("2-D");
        let out = Value::from_array(gemm(&va2, &vb2).into_dyn());
        // d(A B) = dA B + A dB, so gA = g Bᵀ and gB = Aᵀ g (transposes are
        // views: no copies).
        let mut saves = smallvec::SmallVec::<[Save; 2]>::new();
        if other.requires_grad() {
            saves.push(Save::Input(0));
        }
        if self.requires_grad() {
            saves.push(Save::Input(1));
        }
        record("MmBackward", &[self, other], out, &saves, |ctx, g| {
            smallvec![
                ctx.needs_grad(0).then(|| g.matmul(&ctx.input(1).t())),
                ctx.needs_grad(1).then(|| ctx.input(0).t().matmul(g)),
            ]
        })
    }
}
