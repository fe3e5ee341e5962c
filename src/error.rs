//! Errors a caller can recover from: what the `try_` forms return
//! (`Tensor::try_from_vec`, `try_reshape`, `try_broadcast_to`,
//! `try_matmul`, `try_cat`, `try_stack`). The panicking forms panic with
//! the same message as the error's `Display`.

use std::fmt;

/// Why a tensor could not be made from the arguments given. `Display`
/// names the op and every shape involved.
///
/// ```
/// use tapegrad::{Tensor, TensorError};
/// let a = Tensor::<f32>::zeros(&[8, 3]);
/// let err = a.try_matmul(&Tensor::zeros(&[4, 5])).unwrap_err();
/// assert!(matches!(err, TensorError::MatmulInner { .. }));
/// assert_eq!(err.to_string(), "matmul: shapes [8, 3] and [4, 5] cannot be multiplied (3 != 4)");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TensorError {
    /// The shape has more elements than can be addressed.
    TooLarge {
        /// The op asked.
        op: &'static str,
        /// The shape.
        shape: Vec<usize>,
    },
    /// `from_vec`: the data's length is not the shape's element count.
    ElementCount {
        /// The data's length.
        len: usize,
        /// The shape asked for.
        shape: Vec<usize>,
    },
    /// `reshape`: the element counts differ.
    Reshape {
        /// The tensor's shape.
        from: Vec<usize>,
        /// The shape asked for.
        to: Vec<usize>,
    },
    /// A shape does not broadcast to another.
    Broadcast {
        /// The op asked.
        op: &'static str,
        /// The tensor's shape.
        from: Vec<usize>,
        /// The shape asked for.
        to: Vec<usize>,
    },
    /// `matmul` of a 0-dimensional operand.
    MatmulScalar {
        /// The left operand's shape.
        a: Vec<usize>,
        /// The right operand's shape.
        b: Vec<usize>,
    },
    /// `matmul`: the inner dimensions differ.
    MatmulInner {
        /// The left operand's shape.
        a: Vec<usize>,
        /// The right operand's shape.
        b: Vec<usize>,
    },
    /// `matmul`: the batch dimensions do not broadcast.
    MatmulBatch {
        /// The left operand's shape.
        a: Vec<usize>,
        /// The right operand's shape.
        b: Vec<usize>,
    },
    /// `cat` or `stack` of no tensor.
    NoTensors {
        /// The op asked.
        op: &'static str,
    },
    /// A dimension out of range.
    Dim {
        /// The op asked.
        op: &'static str,
        /// The dimension.
        dim: usize,
        /// The shape it was asked of.
        shape: Vec<usize>,
    },
    /// `cat`: shapes that differ outside the joined dimension; `stack`:
    /// shapes that differ.
    Join {
        /// The op asked.
        op: &'static str,
        /// The first tensor's shape.
        first: Vec<usize>,
        /// The shape that does not fit with it.
        other: Vec<usize>,
        /// For `cat`, the dimension joined along.
        dim: Option<usize>,
    },
}

impl TensorError {
    /// The message of [`TensorError::TooLarge`], for ops whose name is not
    /// `'static` (they panic with it).
    pub(crate) fn too_large(op: &str, shape: &[usize]) -> String {
        format!(
            "{op}: shape {shape:?} has more elements than can be addressed (the product of its sizes \
             exceeds isize::MAX = {})",
            isize::MAX
        )
    }
}

impl TensorError {
    /// The message of [`TensorError::Broadcast`], for ops whose name is
    /// not `'static`.
    pub(crate) fn not_broadcast(op: &str, from: &[usize], to: &[usize]) -> String {
        format!("{op}: shape {from:?} cannot be broadcast to {to:?}")
    }
}

impl fmt::Display for TensorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorError::TooLarge { op, shape } => f.write_str(&TensorError::too_large(op, shape)),
            TensorError::ElementCount { len, shape } => write!(
                f,
                "from_vec: {len} elements cannot have shape {shape:?} ({} elements)",
                shape.iter().product::<usize>()
            ),
            TensorError::Reshape { from, to } => write!(
                f,
                "reshape: shape {from:?} ({} elements) cannot become {to:?} ({} elements)",
                from.iter().product::<usize>(),
                to.iter().product::<usize>()
            ),
            TensorError::Broadcast { op, from, to } => f.write_str(&TensorError::not_broadcast(op, from, to)),
            TensorError::MatmulScalar { a, b } => write!(
                f,
                "matmul: both arguments need at least 1 dimension, got shapes {a:?} and {b:?}"
            ),
            TensorError::MatmulInner { a, b } => {
                let ka = a[a.len() - 1];
                let kb = if b.len() == 1 { b[0] } else { b[b.len() - 2] };
                write!(
                    f,
                    "matmul: shapes {a:?} and {b:?} cannot be multiplied ({ka} != {kb})"
                )?;
                if a.len() == 2 && b.len() == 2 && a[0] == kb {
                    write!(f, "; did you mean `.t()` of the left operand?")?;
                } else if a.len() == 2 && b.len() == 2 && b[1] == ka {
                    write!(f, "; did you mean `.t()` of the right operand?")?;
                }
                Ok(())
            }
            TensorError::MatmulBatch { a, b } => write!(
                f,
                "matmul: shapes {a:?} and {b:?} cannot be multiplied (batch dimensions {:?} and {:?} \
                 cannot be broadcast together)",
                &a[..a.len() - 2],
                &b[..b.len() - 2]
            ),
            TensorError::NoTensors { op } => write!(f, "{op}: expects at least one tensor"),
            TensorError::Dim { op, dim, shape } => {
                write!(f, "{op}: dimension {dim} out of range for shape {shape:?}")
            }
            TensorError::Join {
                op,
                first,
                other,
                dim: Some(dim),
            } => write!(
                f,
                "{op}: shapes {first:?} and {other:?} differ outside dimension {dim}"
            ),
            TensorError::Join { op, first, other, .. } => write!(
                f,
                "{op}: expects tensors of one shape, got {first:?} and {other:?}"
            ),
        }
    }
}

impl std::error::Error for TensorError {}
