//! Shape arithmetic, checked: every element count and view offset the
//! crate computes from a user's shape goes through here, so that a shape
//! too large for memory is refused with a panic naming the op instead of
//! wrapping around (and an unsafe read trusting the wrapped layout).
//!
//! The lowest layer: shapes, strides, broadcasting rules and dimension
//! checks, on plain `usize` slices, with no data and no tensors.

use crate::error::TensorError;
use smallvec::{smallvec, SmallVec};

/// The number of elements of `shape`.
///
/// **Panics**, naming `op` and the shape, if the product of its non-zero
/// sizes exceeds `isize::MAX` (ndarray's and `Vec`'s limit; a shape with a
/// zero size still has to pass, as its strides are computed from the
/// others).
#[track_caller]
pub(crate) fn numel(op: &str, shape: &[usize]) -> usize {
    match count(shape) {
        Some(n) => n,
        None => panic!("{}", TensorError::too_large(op, shape)),
    }
}

/// [`numel`], with the error returned.
pub(crate) fn try_numel(op: &'static str, shape: &[usize]) -> Result<usize, TensorError> {
    count(shape).ok_or_else(|| TensorError::TooLarge {
        op,
        shape: shape.to_vec(),
    })
}

/// The element count of `shape`, unless it exceeds `isize::MAX`.
fn count(shape: &[usize]) -> Option<usize> {
    // The common case in one pass: no zero size, no overflow.
    let mut n = 1usize;
    for &d in shape {
        match n.checked_mul(d) {
            Some(m) => n = m,
            None => return count_slow(shape),
        }
    }
    match n != 0 && n <= isize::MAX as usize {
        true => Some(n),
        false => count_slow(shape),
    }
}

/// [`count`] for shapes with a zero size, or too large.
#[cold]
fn count_slow(shape: &[usize]) -> Option<usize> {
    let nonzero = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize);
    match nonzero {
        Some(_) if shape.contains(&0) => Some(0),
        other => other,
    }
}

/// One past the last buffer index a strided layout reaches (`offset` for a
/// layout of no elements), or `None` if computing it overflows.
pub(crate) fn end_of(shape: &[usize], strides: &[usize], offset: usize) -> Option<usize> {
    if shape.contains(&0) {
        return Some(offset);
    }
    shape
        .iter()
        .zip(strides)
        .try_fold(offset, |end, (&d, &s)| (d - 1).checked_mul(s)?.checked_add(end))?
        .checked_add(1)
}

/// Shapes and strides: inline up to 4 dimensions.
pub(crate) type Dims = SmallVec<[usize; 4]>;

/// `s` as `Dims`. Up to 4 dimensions without a call to `memcpy`
/// (`SmallVec::from_slice` makes one, which was 5% of W1 for 8-byte copies).
pub(crate) fn dims(s: &[usize]) -> Dims {
    let buf = match *s {
        [] => [0; 4],
        [a] => [a, 0, 0, 0],
        [a, b] => [a, b, 0, 0],
        [a, b, c] => [a, b, c, 0],
        [a, b, c, d] => [a, b, c, d],
        _ => return SmallVec::from_slice(s),
    };
    Dims::from_buf_and_len(buf, s.len())
}

/// Row-major strides of `shape`.
pub(crate) fn contiguous_strides(shape: &[usize]) -> Dims {
    let mut strides = dims(shape);
    let mut acc = 1;
    for (s, &d) in strides.iter_mut().zip(shape).rev() {
        *s = acc;
        acc *= d;
    }
    strides
}

/// The shape `a` and `b` broadcast to.
///
/// **Panics**, naming `op` and both shapes, if they are incompatible.
///
/// (A `match`, not a closure: `#[track_caller]` does not reach into one.)
#[track_caller]
pub(crate) fn broadcast_shape(op: &str, a: &[usize], b: &[usize]) -> Dims {
    let out = match try_broadcast_shape(a, b) {
        Ok(out) => out,
        Err(i) => {
            let n = a.len().max(b.len());
            let (da, db) = (dim_of(a, i, n), dim_of(b, i, n));
            panic!("{op}: shapes {a:?} and {b:?} cannot be broadcast together (dimension {i}: {da} vs {db})")
        }
    };
    numel(op, &out);
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
#[track_caller]
pub(crate) fn check_broadcasts_to(op: &str, from: &[usize], to: &[usize]) {
    if !broadcasts_to(from, to) {
        panic!("{}", TensorError::not_broadcast(op, from, to));
    }
    numel(op, to);
}

/// [`check_broadcasts_to`], with the error returned.
pub(crate) fn try_check_broadcasts_to(
    op: &'static str,
    from: &[usize],
    to: &[usize],
) -> Result<(), TensorError> {
    if !broadcasts_to(from, to) {
        return Err(TensorError::Broadcast {
            op,
            from: from.to_vec(),
            to: to.to_vec(),
        });
    }
    try_numel(op, to).map(|_| ())
}

/// Whether `from` broadcasts to exactly `to`.
fn broadcasts_to(from: &[usize], to: &[usize]) -> bool {
    from.len() <= to.len()
        && from
            .iter()
            .rev()
            .zip(to.iter().rev())
            .all(|(&f, &t)| f == t || f == 1)
}

/// **Panics**, naming `op`, unless `dim` is a dimension of `shape`.
#[track_caller]
pub(crate) fn check_dim(op: &str, dim: usize, shape: &[usize]) {
    assert!(
        dim < shape.len(),
        "{op}: dimension {dim} out of range for shape {shape:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numel_counts_and_refuses_overflow() {
        assert_eq!(numel("t", &[]), 1);
        assert_eq!(numel("t", &[2, 3, 4]), 24);
        assert_eq!(numel("t", &[0, 5]), 0);
        let big = 1usize << 40;
        for shape in [
            vec![big, big],
            vec![(1 << 62) + 4, 4],
            vec![0, big, big],
            vec![usize::MAX],
        ] {
            let err = std::panic::catch_unwind(|| numel("op", &shape)).expect_err("overflow");
            let msg = err.downcast_ref::<String>().expect("a message");
            assert!(
                msg.starts_with("op: shape") && msg.contains(&format!("{shape:?}")),
                "{msg}"
            );
        }
    }

    #[test]
    fn end_of_a_layout() {
        assert_eq!(end_of(&[2, 3], &[3, 1], 0), Some(6));
        assert_eq!(end_of(&[2, 3], &[1, 2], 1), Some(7)); // transposed, offset 1
        assert_eq!(end_of(&[4, 3], &[0, 1], 5), Some(8)); // broadcast rows
        assert_eq!(end_of(&[0, 3], &[3, 1], 9), Some(9));
        assert_eq!(end_of(&[3], &[usize::MAX], 0), None);
        assert_eq!(end_of(&[2], &[1], usize::MAX), None);
    }
}
