//! Summation kernels: every op that adds up many elements sums here (`sum`,
//! `sum_dim` and `sum_to`, and through them `mean`, `mean_dim`, `var_dim`,
//! `logsumexp_dim`, `softmax` and the losses), `f32` and `f64` alike.
//!
//! A running total makes one rounding error per element added, and they
//! pile up: n elements can be off by about n ε relative, and an `f32`
//! total of ones stops growing at 2²⁴. Summed pairwise, as NumPy does (and
//! PyTorch, whose cascade sum is the same idea), the error grows as log₂ n
//! instead: a block of [`BLOCK`] elements is summed in [`LANES`]
//! independent running totals (which is also what lets the loop vectorise),
//! and blocks are added as a balanced binary tree. A sum along an outer
//! axis adds whole rows (vectorised along the row), [`ROWS`] rows in
//! sequence, and pairs those partial rows the same way.

use crate::storage::{collect_data, filled, Data};
use crate::Float;
use ndarray::{s, ArrayView1, ArrayViewD, ArrayViewMutD, Axis, Ix1, IxDyn, Zip};
use std::ops::Range;

/// Independent running totals in a block: four SSE vectors of `f32`.
const LANES: usize = 16;

/// Elements summed in a block before blocks are paired: 16 per running
/// total, as NumPy's 128 over 8.
const BLOCK: usize = 256;

/// Rows added in sequence before partial rows are paired (PyTorch's
/// cascade step).
const ROWS: usize = 16;

/// Σ `xs`, pairwise.
#[track_caller]
pub(crate) fn sum_slice<T: Float>(xs: &[T]) -> T {
    pairwise(0..xs.len(), &|r| sum_block(&xs[r]))
}

/// Σ of all elements of a view of any layout, pairwise.
#[track_caller]
pub(crate) fn sum_all<T: Float>(v: &ArrayViewD<'_, T>) -> T {
    if let Some(xs) = v.as_slice_memory_order() {
        return sum_slice(xs);
    }
    if v.ndim() == 1 {
        return sum_lane(v.view().into_dimensionality::<Ix1>().expect("1-D"));
    }
    // Down to one axis fewer (along a contiguous axis if there is one, so
    // that its lanes are slices), then the partial sums.
    let contiguous = (0..v.ndim()).find(|&a| v.strides()[a] == 1 && v.len_of(Axis(a)) > 1);
    sum_slice(&sum_axis(v, contiguous.unwrap_or(0)))
}

/// Σ along `axis` of a view of any layout: the elements of the result
/// (shape: the view's without `axis`), row-major. Zeros along an empty
/// axis, as PyTorch.
#[track_caller]
pub(crate) fn sum_axis<T: Float>(v: &ArrayViewD<'_, T>, axis: usize) -> Data<T> {
    let n = v.len_of(Axis(axis));
    let outer: usize = v.shape()[..axis].iter().product();
    let inner: usize = v.shape()[axis + 1..].iter().product();
    let m = outer * inner;
    if n == 0 || m == 0 {
        return filled(T::zero(), m);
    }
    if let Some(xs) = v.as_slice() {
        // Row-major: `outer` blocks of `n` rows of `inner` elements.
        if inner == 1 {
            return collect_data(m, xs.chunks_exact(n).map(sum_slice));
        }
        return sum_rows(outer, inner, n, |out, o, k| {
            add_slice(out, &xs[(o * n + k) * inner..][..inner])
        });
    }
    if v.strides()[axis] == 1 || m == 1 {
        // Each lane along `axis` is a slice, or there is only one: sum each.
        return collect_data(m, v.lanes(Axis(axis)).into_iter().map(sum_lane));
    }
    // Whole rows (the view at each index along `axis`) added up.
    sum_rows(1, m, n, |out, _, k| {
        let row = v.index_axis(Axis(axis), k);
        match row.as_slice() {
            Some(xs) => add_slice(out, xs),
            None => {
                let out = ArrayViewMutD::from_shape(IxDyn(row.shape()), out).expect("one per element");
                Zip::from(out).and(&row).for_each(|o, &x| *o = *o + x);
            }
        }
    })
}

/// Σ of a 1-D view of any stride, pairwise; a strided block is gathered
/// into a local array first, so that it is summed as a slice.
#[track_caller]
fn sum_lane<T: Float>(lane: ArrayView1<'_, T>) -> T {
    if let Some(xs) = lane.as_slice_memory_order() {
        return sum_slice(xs);
    }
    pairwise(0..lane.len(), &|r| {
        let mut block = [T::zero(); BLOCK];
        let len = r.len();
        for (b, &x) in block.iter_mut().zip(lane.slice(s![r])) {
            *b = x;
        }
        sum_block(&block[..len])
    })
}

/// Σ of `block(r)` over the leaves `r` of `range` (ranges of up to
/// [`BLOCK`] indices), added as a balanced binary tree.
#[track_caller]
fn pairwise<T: Float>(range: Range<usize>, block: &impl Fn(Range<usize>) -> T) -> T {
    if range.len() <= BLOCK {
        return block(range);
    }
    let mid = split(&range, BLOCK);
    pairwise(range.start..mid, block) + pairwise(mid..range.end, block)
}

/// `blocks` sums of `n` rows of `width` elements, row-major:
/// `add_row(out, b, k)` adds row `k` of block `b` into `out`.
#[track_caller]
fn sum_rows<T: Float>(
    blocks: usize,
    width: usize,
    n: usize,
    add_row: impl Fn(&mut [T], usize, usize),
) -> Data<T> {
    let mut out = filled(T::zero(), blocks * width);
    // A partial row for each level of pairing.
    let levels = n.div_ceil(ROWS).next_power_of_two().trailing_zeros() as usize;
    let mut scratch = vec![T::zero(); levels * width];
    for (b, out) in out.chunks_exact_mut(width).enumerate() {
        pairwise_rows(&|out: &mut [T], k| add_row(out, b, k), 0..n, out, &mut scratch);
    }
    out
}

/// `out = Σ row k` for `k` in `range` (`add_row(out, k)` adds one):
/// [`ROWS`] rows added in sequence, the partial sums paired as in
/// [`pairwise`]. `scratch` holds a partial row for each level of pairing
/// below this one.
#[track_caller]
fn pairwise_rows<T: Float>(
    add_row: &impl Fn(&mut [T], usize),
    range: Range<usize>,
    out: &mut [T],
    scratch: &mut [T],
) {
    if range.len() <= ROWS {
        out.fill(T::zero());
        for k in range {
            add_row(out, k);
        }
        return;
    }
    let mid = split(&range, ROWS);
    let (right, deeper) = scratch.split_at_mut(out.len());
    pairwise_rows(add_row, range.start..mid, out, deeper);
    pairwise_rows(add_row, mid..range.end, right, deeper);
    add_slice(out, right);
}

/// `out += xs`, elementwise.
#[track_caller]
fn add_slice<T: Float>(out: &mut [T], xs: &[T]) {
    out.iter_mut().zip(xs).for_each(|(o, &x)| *o = *o + x);
}

/// Where `range` (longer than `leaf`) splits: after the first half of its
/// leaves of `leaf` indices, rounded up, so that every leaf but the last is
/// full and the tree has depth ⌈log₂ leaves⌉.
#[track_caller]
fn split(range: &Range<usize>, leaf: usize) -> usize {
    range.start + range.len().div_ceil(leaf).div_ceil(2) * leaf
}

/// Σ `xs` for at most [`BLOCK`] elements: [`LANES`] running totals, added
/// pairwise at the end. Every total starts at +0, so an empty sum is +0 and
/// a sum of -0s is +0, as PyTorch (a fold of Rust's `Sum` starts at -0).
#[track_caller]
fn sum_block<T: Float>(xs: &[T]) -> T {
    if xs.len() < LANES {
        return xs.iter().fold(T::zero(), |s, &x| s + x);
    }
    let mut acc = [T::zero(); LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            *a = *a + x;
        }
    }
    for (a, &x) in acc.iter_mut().zip(chunks.remainder()) {
        *a = *a + x;
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] = acc[i] + acc[i + width];
        }
    }
    acc[0]
}
