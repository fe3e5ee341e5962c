//! Matrix products: `matmul` with PyTorch's rules for 1-D operands and
//! broadcast batch dimensions, built on one batched product of operands
//! whose batch dimensions already agree.

use crate::autograd::hooks;
use crate::autograd::node::{record, should_record, Role};
use crate::layout::try_broadcast_shape;
use crate::ops::kernels::gemm_into;
use crate::storage::Value;
use crate::{layout, Float, Tensor, TensorError};
use ndarray::{ArrayView2, ArrayViewD, Axis, Ix2};
use smallvec::{smallvec, SmallVec};

impl<T: Float> Tensor<T> {
    /// The matrix product, as `torch.matmul`:
    /// - 2-D × 2-D: `[m, k] @ [k, n] -> [m, n]`;
    /// - a 1-D operand is a row (on the left) or a column (on the right),
    ///   and that dimension is removed from the result (1-D × 1-D is the dot
    ///   product, shape `[]`);
    /// - more dimensions: a batch of matrices, the batch dimensions
    ///   broadcasting as NumPy does (`[b, m, k] @ [k, n] -> [b, m, n]`).
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    /// let v = Tensor::from_vec(vec![1.0f32, 1.0], &[2]);
    /// assert_eq!(a.matmul(&v).to_vec(), vec![3.0, 7.0]);
    /// assert_eq!(Tensor::<f32>::zeros(&[5, 2, 3]).matmul(&Tensor::zeros(&[3, 4])).shape(), &[5, 2, 4]);
    /// ```
    ///
    /// **Panics** if an operand is 0-D, the inner dimensions differ, or the
    /// batch dimensions do not broadcast (naming both shapes).
    #[track_caller]
    pub fn matmul(&self, other: &Tensor<T>) -> Tensor<T> {
        match self.try_matmul(other) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`matmul`](Tensor::matmul), with the error returned instead of a
    /// panic.
    ///
    /// ```
    /// use tapegrad::{Tensor, TensorError};
    /// let a = Tensor::<f32>::zeros(&[2, 3]);
    /// assert_eq!(a.try_matmul(&Tensor::zeros(&[3, 4])).unwrap().shape(), &[2, 4]);
    /// let err = a.try_matmul(&Tensor::zeros(&[2, 3])).unwrap_err();
    /// assert_eq!(err, TensorError::MatmulInner { a: vec![2, 3], b: vec![2, 3] });
    /// assert!(err.to_string().ends_with("(3 != 2); did you mean `.t()` of the left operand?"));
    /// ```
    #[track_caller]
    pub fn try_matmul(&self, other: &Tensor<T>) -> Result<Tensor<T>, TensorError> {
        let (a, b) = (self.shape(), other.shape());
        let shapes = || (a.to_vec(), b.to_vec());
        if a.is_empty() || b.is_empty() {
            let (a, b) = shapes();
            return Err(TensorError::MatmulScalar { a, b });
        }
        let ka = a[a.len() - 1];
        let kb = if b.len() == 1 { b[0] } else { b[b.len() - 2] };
        if ka != kb {
            let (a, b) = shapes();
            return Err(TensorError::MatmulInner { a, b });
        }
        // Batch dimensions can disagree only when both operands have some
        // (a matrix or vector broadcasts over any batch).
        if a.len() > 2 && b.len() > 2 {
            let (batch_a, batch_b) = (&a[..a.len() - 2], &b[..b.len() - 2]);
            if try_broadcast_shape(batch_a, batch_b).is_err() {
                let (a, b) = shapes();
                return Err(TensorError::MatmulBatch { a, b });
            }
        }
        Ok(match (a.len(), b.len()) {
            (1, 1) => self.unsqueeze(0).matmul(&other.unsqueeze(1)).reshape(&[]),
            (1, _) => {
                let out = self.unsqueeze(0).matmul(other);
                let row = out.ndim() - 2;
                out.squeeze(row)
            }
            (_, 1) => {
                let out = self.matmul(&other.unsqueeze(1));
                let col = out.ndim() - 1;
                out.squeeze(col)
            }
            (2, 2) => batched_matmul(self, other),
            _ => {
                let (batch_a, batch_b) = (&a[..a.len() - 2], &b[..b.len() - 2]);
                let batch = try_broadcast_shape(batch_a, batch_b).expect("checked above");
                let with = |t: &Tensor<T>, rows: usize, cols: usize| {
                    let mut shape = batch.clone();
                    shape.extend([rows, cols]);
                    t.broadcast_to(&shape)
                };
                let (m, n) = (a[a.len() - 2], b[b.len() - 1]);
                batched_matmul(&with(self, m, ka), &with(other, ka, n))
            }
        })
    }

    /// Swaps the last two dimensions (a view).
    #[track_caller]
    fn transpose_last(&self) -> Tensor<T> {
        let n = self.ndim();
        self.transpose(n - 2, n - 1)
    }
}

/// `a @ b` for operands of 2 or more dimensions with equal batch
/// dimensions.
#[track_caller]
fn batched_matmul<T: Float>(a: &Tensor<T>, b: &Tensor<T>) -> Tensor<T> {
    let (va, vb) = (a.value(), b.value());
    let (va, vb) = (va.view(), vb.view());
    let nd = va.ndim();
    let batch = &a.shape()[..nd - 2];
    let (m, n) = (va.shape()[nd - 2], vb.shape()[nd - 1]);
    let mut shape: SmallVec<[usize; 4]> = SmallVec::from_slice(batch);
    shape.extend([m, n]);
    layout::numel("matmul", &shape);
    let name = if nd == 2 { "MmBackward" } else { "BmmBackward" };
    // The product is the expensive part: a saved-value hook may supply it
    // (a SaveDots checkpoint's re-run takes the forward's back).
    let recorded = should_record(&[a, b]);
    let out = hooks::product(name, &shape, recorded, || {
        let count: usize = batch.iter().product();
        let size = m * n;
        let mut out: Vec<T> = crate::pool::take(count * size);
        if size > 0 {
            for i in 0..count {
                // SAFETY: `out` has room for `count` products of `size`
                // elements; product `i` goes to its own `size` slots.
                unsafe {
                    gemm_into(
                        &matrix_at(&va, batch, i),
                        &matrix_at(&vb, batch, i),
                        out.as_mut_ptr().add(i * size),
                    )
                };
            }
            // SAFETY: every element was written by a product above.
            unsafe { out.set_len(count * size) };
        }
        Value::from_vec(out, &shape)
    });
    // d(A B) = dA B + A dB: gA = g Bᵀ, gB = Aᵀ g (transposes are views, so
    // the backward products read the operands in place). Each operand is
    // saved only if the other needs its gradient.
    let mut saves = SmallVec::<[Role; 2]>::new();
    if b.requires_grad() {
        saves.push(Role::Input(0));
    }
    if a.requires_grad() {
        saves.push(Role::Input(1));
    }
    // `b` seen transposed (a Linear layer's `weight.t()`): its gradient is
    // made transposed too, as (gᵀ A)ᵀ, so that it reaches the weight
    // row-major and is not copied on its way into `.grad` (as PyTorch's mm
    // backward follows the operand's strides).
    let b_transposed = {
        let s = b.data().strides.clone();
        s[nd - 1] != 1 && s[nd - 2] == 1
    };
    record(name, &[a, b], out, &saves, move |ctx, g| {
        smallvec![
            ctx.needs_grad(0)
                .then(|| batched_matmul(&g, &ctx.input(1).transpose_last())),
            ctx.needs_grad(1).then(|| match b_transposed {
                true => batched_matmul(&g.transpose_last(), &ctx.input(0)).transpose_last(),
                false => batched_matmul(&ctx.input(0).transpose_last(), &g),
            }),
        ]
    })
}

/// The `i`-th matrix (row-major over the batch dimensions) of a view.
#[track_caller]
fn matrix_at<'a, T: Float>(v: &ArrayViewD<'a, T>, batch: &[usize], i: usize) -> ArrayView2<'a, T> {
    let mut index: SmallVec<[usize; 4]> = smallvec![0; batch.len()];
    let mut rest = i;
    for d in (0..batch.len()).rev() {
        index[d] = rest % batch[d];
        rest /= batch[d];
    }
    let mut at = v.clone();
    for &k in &index {
        at = at.index_axis_move(Axis(0), k);
    }
    at.into_dimensionality::<Ix2>().expect("2-D after the batch")
}
