//! The loops of tiled attention (FlashAttention-2's algorithm, on the CPU).
//!
//! A *problem* is one attention: `rows` queries against `keys` keys and
//! values, `softmax(scale · q kᵀ) v` row by row. A batch (and every head) is
//! a list of problems; each matrix of a problem is found in its tensor's
//! buffer by an offset and two strides ([`Mats`]), so views (a transposed
//! head, a broadcast batch, a packed sequence) are read in place.
//!
//! Forward, for each block of query rows, over the key blocks in turn
//! (the online softmax): with `s = scale · q kᵀ` for the tile,
//! `m' = max(m, rowmax s)`, `p = exp(s - m')`, `l' = e^(m - m') l + rowsum p`,
//! `acc' = e^(m - m') acc + p v`; at the end `out = acc / l` and
//! `lse = m + ln l`. The `rows × keys` matrix of scores never exists: one
//! `block × block` tile at a time.
//!
//! Backward recomputes each tile's probabilities from the saved log-sum-exp,
//! `p = exp(s - lse)`, and with `D = rowsum(dO ∘ O)`:
//! `dV += pᵀ dO`, `dP = dO vᵀ`, `dS = p ∘ (dP - D)`, `dQ += scale dS k`,
//! `dK += scale dSᵀ q` (`dS` exactly 0 where `p` is 1: that row's softmax
//! is one key). Outer loop over key blocks (their `dK`, `dV` stay in a
//! tile-sized accumulator), inner over query blocks.
//!
//! Tile products are matrixmultiply's, which reads any strides (so `kᵀ` and
//! `pᵀ` are strides, not copies). Query blocks (forward) and problems
//! (backward) are shared out over the cores.

use crate::ops::kernels::Ptr;
use crate::ops::parallel;
use crate::Float;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How the problems of an attention lie in its tensors.
#[derive(Clone, Debug)]
pub(crate) enum Packing {
    /// `[batch..., rows, features]`: one problem per batch index, rows and
    /// keys the same for all.
    Batched,
    /// `[total_tokens, heads, features]`, sequence `i` the rows
    /// `cu_seqlens[i]..cu_seqlens[i + 1]`: one problem per sequence and
    /// head, sequence by sequence; its queries attend its own keys only.
    Packed(Arc<[usize]>),
}

/// One problem: its queries and keys.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Problem {
    pub(crate) rows: usize,
    pub(crate) keys: usize,
}

impl Packing {
    /// The problems of `q` (`[.., rows, e]`) against `k` (`[.., keys, e]`),
    /// in the order of [`Packing::mats`].
    pub(crate) fn problems(&self, q: &[usize], k: &[usize]) -> Vec<Problem> {
        match self {
            Packing::Batched => {
                let nd = q.len();
                let count = q[..nd - 2].iter().product();
                let p = Problem {
                    rows: q[nd - 2],
                    keys: k[nd - 2],
                };
                vec![p; count]
            }
            Packing::Packed(cu) => cu
                .windows(2)
                .flat_map(|w| {
                    let n = w[1] - w[0];
                    std::iter::repeat_n(Problem { rows: n, keys: n }, q[1])
                })
                .collect(),
        }
    }

    /// Where each problem's matrix lies in the buffer at `base` of a tensor
    /// of `shape`, `strides` and `offset` (a tensor of the problems' rows:
    /// `[batch..., rows, c]` or `[tokens, heads, c]`).
    pub(crate) fn mats<T>(&self, base: *mut T, shape: &[usize], strides: &[usize], offset: usize) -> Mats<T> {
        let nd = shape.len();
        let (offsets, rs, cs) = match self {
            Packing::Batched => {
                let batch = &shape[..nd - 2];
                let count: usize = batch.iter().product();
                let offsets = (0..count)
                    .map(|mut i| {
                        let mut at = offset;
                        for d in (0..batch.len()).rev() {
                            at += (i % batch[d]) * strides[d];
                            i /= batch[d];
                        }
                        at
                    })
                    .collect();
                (offsets, strides[nd - 2], strides[nd - 1])
            }
            Packing::Packed(cu) => {
                let offsets = cu
                    .windows(2)
                    .flat_map(|w| (0..shape[1]).map(move |h| offset + w[0] * strides[0] + h * strides[1]))
                    .collect();
                (offsets, strides[0], strides[2])
            }
        };
        Mats {
            base: Ptr(base),
            offsets,
            rs,
            cs,
        }
    }
}

/// The matrices of one tensor, a problem each: problem `p`'s element
/// `(r, c)` is at `base + offsets[p] + r·rs + c·cs`.
pub(crate) struct Mats<T> {
    base: Ptr<T>,
    offsets: Vec<usize>,
    rs: usize,
    cs: usize,
}

impl<T: Float> Mats<T> {
    /// The address of problem `p`'s element `(r, c)` (a view of no
    /// elements may start past its buffer: it is never read).
    fn ptr(&self, p: usize, r: usize, c: usize) -> *mut T {
        self.base
            .0
            .wrapping_add(self.offsets[p] + r * self.rs + c * self.cs)
    }

    /// Problem `p`'s matrix from row `r`.
    fn at(&self, p: usize, r: usize) -> Mat<T> {
        Mat {
            ptr: self.ptr(p, r, 0),
            rs: self.rs as isize,
            cs: self.cs as isize,
        }
    }

    /// Problem `p`'s element `(r, c)`.
    ///
    /// # Safety
    /// It must be inside the buffer, and not being written.
    unsafe fn get(&self, p: usize, r: usize, c: usize) -> T {
        // SAFETY: the caller's promise.
        unsafe { *self.ptr(p, r, c) }
    }
}

/// A matrix in memory: element `(r, c)` at `ptr + r·rs + c·cs`.
#[derive(Clone, Copy)]
struct Mat<T> {
    ptr: *const T,
    rs: isize,
    cs: isize,
}

impl<T> Mat<T> {
    /// The same elements, rows and columns swapped (a transpose, no copy).
    fn t(self) -> Mat<T> {
        Mat {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// A row-major matrix with rows of `ld` elements.
    fn rows(ptr: *const T, ld: usize) -> Mat<T> {
        Mat {
            ptr,
            rs: ld as isize,
            cs: 1,
        }
    }
}

/// `c = a b` for `a` `m × k` and `b` `k × n`, written row-major into `c`
/// (rows of `n`).
///
/// # Safety
/// `a` and `b` must address `m × k` and `k × n` readable elements and `c`
/// have room for `m × n`, aliasing neither.
unsafe fn mm<T: Float>(m: usize, k: usize, n: usize, a: Mat<T>, b: Mat<T>, c: &mut [T]) {
    debug_assert!(c.len() >= m * n);
    // SAFETY: the caller's promise.
    unsafe {
        T::gemm(
            m,
            k,
            n,
            a.ptr,
            [a.rs, a.cs],
            b.ptr,
            [b.rs, b.cs],
            c.as_mut_ptr(),
            [n as isize, 1],
        )
    }
}

/// The sizes and options every problem of one call shares.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape<T> {
    /// Features of queries and keys.
    pub(crate) e: usize,
    /// Features of values.
    pub(crate) ev: usize,
    pub(crate) scale: T,
    pub(crate) causal: bool,
    pub(crate) block: usize,
}

impl<T: Float> Shape<T> {
    /// How many of the keys `c0..c0 + width` query row `r` attends: all
    /// of them, or under the causal mask (`c <= r`) those up to `r`.
    fn visible(&self, r: usize, c0: usize, width: usize) -> usize {
        match self.causal {
            true => (r + 1).saturating_sub(c0).min(width),
            false => width,
        }
    }

    /// The end of the keys that the query rows before `r` see, among
    /// `keys` (under the causal mask, row `r - 1` sees keys `0..r`).
    fn key_end(&self, r: usize, keys: usize) -> usize {
        match self.causal {
            true => keys.min(r),
            false => keys,
        }
    }
}

/// The output of [`forward`], row-major: `out` is `[..., rows, ev]` (or
/// `[tokens, heads, ev]`), `lse` one value per query row.
pub(crate) struct Written<T> {
    pub(crate) out: Mats<T>,
    pub(crate) lse: Mats<T>,
}

/// Runs `f(item)` for every item, on up to [`parallel::threads`] threads
/// that each take the next item from a shared counter, so that a thread the
/// machine holds up (other processes on a shared core) takes fewer, when
/// `scores`, the work in all, is enough to split. (The first version gave
/// each thread a fixed half of the problems: at L = 4096 a step took from
/// 390 to 1150 ms on the loaded machine, PyTorch's 710 to 810.)
fn for_items<I: Copy + Sync>(items: &[I], scores: usize, f: impl Fn(I) + Sync) {
    let threads = parallel::threads().min(items.len());
    if threads <= 1 || scores < PARALLEL_SCORES {
        return items.iter().for_each(|&i| f(i));
    }
    let next = AtomicUsize::new(0);
    let take = || {
        while let Some(&i) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
            f(i);
        }
    };
    let take = &take;
    parallel::run(
        (0..threads)
            .map(|_| Box::new(take) as parallel::Part<'_>)
            .collect(),
    );
}

/// Below this many scores in all (about 100 µs of work) one thread runs
/// every problem.
const PARALLEL_SCORES: usize = 1 << 15;

/// The attention problems of one call, their shared shape, and where
/// their queries, keys and values lie.
pub(crate) struct Inputs<'a, T> {
    pub(crate) problems: &'a [Problem],
    pub(crate) sh: Shape<T>,
    pub(crate) q: Mats<T>,
    pub(crate) k: Mats<T>,
    pub(crate) v: Mats<T>,
}

/// Whether the loops run as compiled for AVX2 and FMA (8 lanes of f32
/// where the baseline's SSE2 has 4): on x86-64 CPUs that have them.
fn wide() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `$one` (a function of `(inputs, .., problem, first query row)`, always
/// inlined) compiled again for AVX2 and FMA as `$wide`, and a function
/// `$name` that runs one of the two on every item `$items(inputs)` lists,
/// split over the cores.
macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident, $wide:ident, $one:ident, $items:expr, ($($arg:ident: $ty:ty),*)) => {
        $(#[$doc])*
        pub(crate) unsafe fn $name<T: Float>(inp: &Inputs<'_, T>, $($arg: $ty),*) {
            let wide = wide();
            let scores = inp.problems.iter().map(|p| p.rows * p.keys).sum();
            for_items(&$items(inp), scores, |(p, r0)| match wide {
                // SAFETY: the caller's promise; AVX2 and FMA are there.
                true => unsafe { $wide(inp, $($arg,)* p, r0) },
                // SAFETY: the caller's promise.
                false => unsafe { $one(inp, $($arg,)* p, r0) },
            });
        }

        /// The same loops compiled for AVX2 and FMA.
        ///
        /// # Safety
        /// As the dispatching function's, and the CPU must have both.
        #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
        unsafe fn $wide<T: Float>(inp: &Inputs<'_, T>, $($arg: $ty,)* p: usize, r0: usize) {
            // SAFETY: the caller's promise.
            unsafe { $one(inp, $($arg,)* p, r0) }
        }
    };
}

/// The forward's items: each block of query rows of each problem (they
/// are independent: the online softmax runs along a row).
fn query_blocks<T>(inp: &Inputs<'_, T>) -> Vec<(usize, usize)> {
    let block = inp.sh.block;
    let blocks = |(p, pr): (usize, &Problem)| {
        (0..pr.rows)
            .step_by(tile(block, pr.rows, pr.keys))
            .map(move |r0| (p, r0))
    };
    inp.problems.iter().enumerate().flat_map(blocks).collect()
}

/// The backward's items: each problem (its query blocks all add into the
/// same `dK` and `dV`).
fn whole_problems<T>(inp: &Inputs<'_, T>) -> Vec<(usize, usize)> {
    (0..inp.problems.len()).map(|p| (p, 0)).collect()
}

dispatch!(
    /// The forward pass: each problem's output and row log-sum-exp, written
    /// where `dst` says (row-major buffers of their own).
    ///
    /// # Safety
    /// `inp.q`, `inp.k`, `inp.v` must address each problem's `rows × e`,
    /// `keys × e` and `keys × ev` elements; `dst.out` and `dst.lse` must be
    /// writable buffers whose problems' rows (`rows × ev` and `rows × 1`)
    /// are disjoint.
    forward,
    forward_wide,
    forward_one,
    query_blocks,
    (dst: &Written<T>)
);

/// [`forward`] of the query rows of problem `p` from `r0`, one block.
///
/// # Safety
/// As [`forward`].
#[inline(always)]
unsafe fn forward_one<T: Float>(inp: &Inputs<'_, T>, dst: &Written<T>, p: usize, r0: usize) {
    let Inputs {
        problems,
        sh,
        q,
        k,
        v,
    } = inp;
    let Problem { rows, keys } = problems[p];
    let b = tile(sh.block, rows, keys);
    let br = b.min(rows - r0);
    let (mut s, mut pv) = (vec![T::zero(); br * b], vec![T::zero(); br * sh.ev]);
    let mut acc = vec![T::zero(); br * sh.ev];
    let (mut m, mut l) = (vec![T::neg_infinity(); br], vec![T::zero(); br]);
    let end = sh.key_end(r0 + br, keys);
    for c0 in (0..end).step_by(b) {
        let bc = b.min(end - c0);
        // SAFETY: rows r0.. of q and c0.. of k exist (the caller's
        // promise); `s` holds br × bc.
        unsafe { mm(br, sh.e, bc, q.at(p, r0), k.at(p, c0).t(), &mut s) };
        for r in 0..br {
            let (seen, hidden) = s[r * bc..(r + 1) * bc].split_at_mut(sh.visible(r0 + r, c0, bc));
            hidden.fill(T::zero());
            if seen.is_empty() {
                continue;
            }
            // The scale goes into the exponentials' pass: the largest
            // scaled score is the scaled largest one when the scale is
            // positive (rounding is monotonic).
            let (top, factor) = match sh.scale > T::zero() {
                true => (max_of(seen) * sh.scale, sh.scale),
                false => {
                    seen.iter_mut().for_each(|x| *x = *x * sh.scale);
                    (max_of(seen), T::one())
                }
            };
            let m_new = m[r].max(top);
            let sum = exp_sum(seen, factor, m_new);
            let corr = (m[r] - m_new).exp_op();
            l[r] = l[r] * corr + sum;
            m[r] = m_new;
            acc[r * sh.ev..(r + 1) * sh.ev]
                .iter_mut()
                .for_each(|a| *a = *a * corr);
        }
        // SAFETY: `s` is br × bc, rows c0.. of v exist; `pv` holds br × ev.
        unsafe { mm(br, bc, sh.ev, Mat::rows(s.as_ptr(), bc), v.at(p, c0), &mut pv) };
        acc.iter_mut()
            .zip(&pv[..br * sh.ev])
            .for_each(|(a, &x)| *a = *a + x);
    }
    for r in 0..br {
        // No keys at all (`keys = 0`): an output of zeros, as the
        // product with an empty value matrix.
        let inv = if l[r] > T::zero() { l[r].recip() } else { T::zero() };
        for c in 0..sh.ev {
            // SAFETY: the caller's promise: this block's rows of `out`
            // are its own (no other item writes them), inside the buffer.
            unsafe { *dst.out.ptr(p, r0 + r, c) = acc[r * sh.ev + c] * inv };
        }
        // SAFETY: as above, for `lse`.
        unsafe { *dst.lse.ptr(p, r0 + r, 0) = m[r] + l[r].ln() };
    }
}

/// The side of a problem's tiles: `block`, but no more than the problem
/// needs (a block larger than the lengths would only size the buffers).
fn tile(block: usize, rows: usize, keys: usize) -> usize {
    block.min(rows.max(keys)).max(1)
}

/// The gradients of [`forward`]'s inputs, written where `grads` says.
pub(crate) struct Grads<T> {
    pub(crate) dq: Mats<T>,
    pub(crate) dk: Mats<T>,
    pub(crate) dv: Mats<T>,
}

dispatch!(
    /// The backward pass: from the upstream gradient `g` (as `out`), `dq`,
    /// `dk` and `dv` of each problem, into buffers filled with zeros.
    ///
    /// # Safety
    /// As [`forward`] for the inputs, `out` and `lse` (read here) and `g`;
    /// `grads` must be zero-filled writable buffers whose problems'
    /// matrices are disjoint and row-major (`cs = 1`).
    backward,
    backward_wide,
    backward_one,
    whole_problems,
    (saved: &Written<T>, g: &Mats<T>, grads: &Grads<T>)
);

/// [`backward`] of problem `p`.
///
/// # Safety
/// As [`backward`].
#[inline(always)]
unsafe fn backward_one<T: Float>(
    inp: &Inputs<'_, T>,
    saved: &Written<T>,
    g: &Mats<T>,
    grads: &Grads<T>,
    p: usize,
    _: usize,
) {
    let Inputs {
        problems,
        sh,
        q,
        k,
        v,
    } = inp;
    let Problem { rows, keys } = problems[p];
    let (b, e, ev) = (tile(sh.block, rows, keys), sh.e, sh.ev);
    // D = rowsum(dO ∘ O), and each row's log-sum-exp.
    let d: Vec<T> = (0..rows)
        .map(|r| {
            (0..ev).fold(T::zero(), |a, c| {
                // SAFETY: the caller's promise for `g` and `out` (rows and columns in range).
                a + unsafe { g.get(p, r, c) * saved.out.get(p, r, c) }
            })
        })
        .collect();
    // SAFETY: the caller's promise for `lse`, one value per row.
    let lse: Vec<T> = (0..rows).map(|r| unsafe { saved.lse.get(p, r, 0) }).collect();
    let (mut s, mut dp) = (vec![T::zero(); b * b], vec![T::zero(); b * b]);
    let mut tmp = vec![T::zero(); b * e.max(ev)];
    let (mut dk_acc, mut dv_acc) = (vec![T::zero(); b * e], vec![T::zero(); b * ev]);
    for c0 in (0..keys).step_by(b) {
        let bc = b.min(keys - c0);
        dk_acc.fill(T::zero());
        dv_acc.fill(T::zero());
        // Rows before c0 see none of these keys under the causal mask.
        let first = if sh.causal { c0.min(rows) } else { 0 };
        for r0 in (first..rows).step_by(b) {
            let br = b.min(rows - r0);
            // SAFETY (the products below): the caller's promise for the
            // inputs, and the tiles hold what they are given.
            // SAFETY: the caller's promise for the inputs; the tiles hold what they are given.
            unsafe { mm(br, e, bc, q.at(p, r0), k.at(p, c0).t(), &mut s) };
            for r in 0..br {
                let (seen, hidden) = s[r * bc..(r + 1) * bc].split_at_mut(sh.visible(r0 + r, c0, bc));
                let lse = lse[r0 + r];
                seen.iter_mut().for_each(|x| *x = (*x * sh.scale - lse).exp_op());
                hidden.fill(T::zero());
            }
            let p_tile = Mat::rows(s.as_ptr(), bc);
            // dV += pᵀ dO
            // SAFETY: the caller's promise for the inputs; the tiles hold what they are given.
            unsafe { mm(bc, br, ev, p_tile.t(), g.at(p, r0), &mut tmp) };
            add(&mut dv_acc[..bc * ev], &tmp[..bc * ev]);
            // dS = p ∘ (dO vᵀ - D), scaled. Where p is 1 the row's softmax
            // is that one key, and dS = Σₖ pₖ (dPⱼ - dPₖ) is exactly 0 (D
            // is then that key's dP, but summed in another order: the
            // difference in the last bits, times huge q or k, could be most
            // of a gradient). Multiplying by 0, not writing 0, keeps NaN.
            // SAFETY: the caller's promise for the inputs; the tiles hold what they are given.
            unsafe { mm(br, ev, bc, g.at(p, r0), v.at(p, c0).t(), &mut dp) };
            for r in 0..br {
                let (at, d) = (r * bc..(r + 1) * bc, d[r0 + r]);
                for (x, &pr) in dp[at.clone()].iter_mut().zip(&s[at]) {
                    let only = if pr == T::one() { T::zero() } else { T::one() };
                    *x = pr * ((*x - d) * only) * sh.scale;
                }
            }
            let ds = Mat::rows(dp.as_ptr(), bc);
            // dQ += dS k, straight into this problem's rows of dq
            // SAFETY: the caller's promise for the inputs; the tiles hold what they are given.
            unsafe { mm(br, bc, e, ds, k.at(p, c0), &mut tmp) };
            for r in 0..br {
                // SAFETY: this problem's rows of dq are its own, row-major.
                let row = unsafe { std::slice::from_raw_parts_mut(grads.dq.ptr(p, r0 + r, 0), e) };
                add(row, &tmp[r * e..(r + 1) * e]);
            }
            // dK += dSᵀ q
            // SAFETY: the caller's promise for the inputs; the tiles hold what they are given.
            unsafe { mm(bc, br, e, ds.t(), q.at(p, r0), &mut tmp) };
            add(&mut dk_acc[..bc * e], &tmp[..bc * e]);
        }
        // SAFETY: this problem's rows of dk and dv are its own.
        unsafe {
            write_rows(&grads.dk, p, c0, &dk_acc[..bc * e], e);
            write_rows(&grads.dv, p, c0, &dv_acc[..bc * ev], ev);
        }
    }
}

/// Copies the rows of `src` (row-major, `width` wide) to problem `p`'s rows
/// `r0..` of `dst` (row-major too).
///
/// # Safety
/// Those rows of `dst` must be inside its buffer and written by no one else.
unsafe fn write_rows<T: Float>(dst: &Mats<T>, p: usize, r0: usize, src: &[T], width: usize) {
    for (r, row) in src.chunks(width.max(1)).enumerate() {
        // SAFETY: the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(dst.ptr(p, r0 + r, 0), width) }.copy_from_slice(row);
    }
}

/// The largest element, in 8 running maxima (one chain of dependent
/// comparisons would not vectorise). `-∞` for none.
#[inline(always)]
fn max_of<T: Float>(xs: &[T]) -> T {
    let chunks = xs.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .fold(T::neg_infinity(), |a, &x| a.max(x));
    let mut acc = [T::neg_infinity(); 8];
    for c in chunks {
        for l in 0..8 {
            acc[l] = acc[l].max(c[l]);
        }
    }
    acc.iter().fold(tail, |a, &x| a.max(x))
}

/// Replaces each `x` by `exp(factor · x - shift)` and returns their sum (8
/// running sums, as [`max_of`]).
#[inline(always)]
fn exp_sum<T: Float>(xs: &mut [T], factor: T, shift: T) -> T {
    let mut chunks = xs.chunks_exact_mut(8);
    let mut acc = [T::zero(); 8];
    for c in &mut chunks {
        for l in 0..8 {
            c[l] = (c[l] * factor - shift).exp_op();
            acc[l] = acc[l] + c[l];
        }
    }
    let tail = chunks.into_remainder().iter_mut().fold(T::zero(), |a, x| {
        *x = (*x * factor - shift).exp_op();
        a + *x
    });
    acc.iter().fold(tail, |a, &x| a + x)
}

/// `acc += x` elementwise.
#[inline(always)]
fn add<T: Float>(acc: &mut [T], x: &[T]) {
    acc.iter_mut().zip(x).for_each(|(a, &b)| *a = *a + b);
}
