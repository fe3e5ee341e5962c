//! Attention, `softmax(scale · q kᵀ) v`, in two forms with equal values
//! and gradients:
//! - composed ([`composed_attention`]): matmul, softmax, matmul, each
//!   recorded; its graph saves the `L × S` probabilities (and the
//!   softmax's own values);
//! - tiled ([`tiled_attention`]): one recorded op, FlashAttention's trade
//!   (the loops are in `flash.rs`). It saves q, k, v, the output and one
//!   log-sum-exp per query row, all linear in the lengths, and its backward
//!   recomputes the scores tile by tile instead of reading them.
//!
//! The public functions (`nn::functional`) pick one and check shapes.

use crate::autograd::mode::is_grad_enabled;
use crate::autograd::node::{mark_graph_memory, record, should_record, Role};
use crate::layout::contiguous_strides;
use crate::ops::flash::{self, Grads, Inputs, Packing, Problem, Shape, Written};
use crate::storage::{filled, Value};
use crate::{Float, Tensor};
use smallvec::smallvec;

/// `softmax(scale · q kᵀ + mask)` over the last dimension, `[.., L, S]`
/// (batch dimensions broadcast as `matmul`'s), in recorded ops. The causal
/// mask puts `-∞` on the keys after each query (`c > r`, top-left aligned).
#[track_caller]
pub(crate) fn attention_probs<T: Float>(q: &Tensor<T>, k: &Tensor<T>, scale: T, causal: bool) -> Tensor<T> {
    let nd = k.ndim();
    let scores = q.matmul(&k.transpose(nd - 2, nd - 1)) * scale;
    let scores = match causal {
        true => {
            let (l, s) = (q.shape()[q.ndim() - 2], k.shape()[nd - 2]);
            let mask = (0..l * s)
                .map(|i| {
                    if i % s > i / s {
                        T::neg_infinity()
                    } else {
                        T::zero()
                    }
                })
                .collect();
            scores + Tensor::from_vec(mask, &[l, s])
        }
        false => scores,
    };
    let last = scores.ndim() - 1;
    scores.softmax(last)
}

/// Attention as matmul, softmax, matmul (batch dimensions broadcast).
#[track_caller]
pub(crate) fn composed_attention<T: Float>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    scale: T,
    causal: bool,
) -> Tensor<T> {
    attention_probs(q, k, scale, causal).matmul(v)
}

/// `f` on each sequence of tensors packed as `[tokens, heads, c]`
/// (sequence `i` the rows `cu[i]..cu[i + 1]`), seen as batches
/// `[heads, n, c]`; each of its results packed back the same way. Empty
/// sequences are skipped; there must be at least one token.
#[track_caller]
pub(crate) fn per_sequence<T: Float>(
    cu: &[usize],
    xs: &[&Tensor<T>],
    f: impl Fn(&[Tensor<T>]) -> Vec<Tensor<T>>,
) -> Vec<Tensor<T>> {
    let mut parts: Vec<Vec<Tensor<T>>> = Vec::new();
    for w in cu.windows(2).filter(|w| w[1] > w[0]) {
        let seq: Vec<Tensor<T>> = xs
            .iter()
            .map(|x| x.narrow(0, w[0], w[1] - w[0]).transpose(0, 1))
            .collect();
        for (i, y) in f(&seq).into_iter().enumerate() {
            if parts.len() <= i {
                parts.push(Vec::new());
            }
            parts[i].push(y.transpose(0, 1));
        }
    }
    parts.iter().map(|p| Tensor::cat(p, 0)).collect()
}

/// The tiled op on `q` `[.., L, E]`, `k` `[.., S, E]`, `v` `[.., S, Ev]`
/// with equal batch dimensions (or packed as `packing` says), queries in
/// blocks of `block` against keys in blocks of `block`.
#[track_caller]
pub(crate) fn tiled_attention<T: Float>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    packing: Packing,
    scale: T,
    causal: bool,
    block: usize,
) -> Tensor<T> {
    let nd = q.ndim();
    let sh = Shape {
        e: q.shape()[nd - 1],
        ev: v.shape()[nd - 1],
        scale,
        causal,
        block,
    };
    let mut out_shape = q.shape().to_vec();
    out_shape[nd - 1] = sh.ev;
    let lse_shape = &q.shape()[..nd - 1];
    let problems = packing.problems(q.shape(), k.shape());
    let (qv, kv, vv) = (q.value(), k.value(), v.value());
    let mut out = filled(T::zero(), out_shape.iter().product());
    let mut lse = filled(T::zero(), lse_shape.iter().product());
    {
        let dst = Written {
            out: dense(&packing, out.as_mut_ptr(), &out_shape),
            lse: dense(&packing, lse.as_mut_ptr(), &[lse_shape, &[1]].concat()),
        };
        // SAFETY: the views address their tensors' elements (their layouts
        // were checked when made); the outputs are fresh buffers of their
        // shapes, each problem's rows its own.
        unsafe { flash::forward(&inputs(&packing, &problems, sh, [&qv, &kv, &vv]), &dst) };
    }
    let lse = Tensor::from_value(Value::from_vec(lse, lse_shape));
    // The log-sum-exp is made for the backward only: graph memory.
    if should_record(&[q, k, v]) {
        mark_graph_memory(&lse);
    }
    let saves = [
        Role::Input(0),
        Role::Input(1),
        Role::Input(2),
        Role::Input(3),
        Role::Output,
    ];
    record(
        "FlashAttentionBackward",
        &[q, k, v, &lse],
        Value::from_vec(out, &out_shape),
        &saves,
        move |ctx, g| {
            let (q, k, v) = (ctx.input(0), ctx.input(1), ctx.input(2));
            let [dq, dk, dv] = match is_grad_enabled() {
                // create_graph: the same gradients in recorded ops, so that
                // they can be differentiated again (the score matrices are
                // then held, as the composed form holds them).
                true => composed_grads(&q, &k, &v, &g, &packing, scale, causal),
                false => tiled_grads(&q, &k, &v, &ctx.output(), &ctx.input(3), &g, &packing, sh),
            };
            smallvec![
                ctx.needs_grad(0).then_some(dq),
                ctx.needs_grad(1).then_some(dk),
                ctx.needs_grad(2).then_some(dv),
                None
            ]
        },
    )
}

/// The tiled kernels' view of q, k and v.
#[track_caller]
fn inputs<'a, T: Float>(
    packing: &Packing,
    problems: &'a [Problem],
    sh: Shape<T>,
    [q, k, v]: [&Value<T>; 3],
) -> Inputs<'a, T> {
    Inputs {
        problems,
        sh,
        q: read(packing, q),
        k: read(packing, k),
        v: read(packing, v),
    }
}

/// The problems' matrices in `v`, for reading.
#[track_caller]
fn read<T: Float>(packing: &Packing, v: &Value<T>) -> flash::Mats<T> {
    packing.mats(v.buf.data.as_ptr().cast_mut(), &v.shape, &v.strides, v.offset)
}

/// The problems' matrices in a fresh row-major buffer of `shape` at `base`.
#[track_caller]
fn dense<T: Float>(packing: &Packing, base: *mut T, shape: &[usize]) -> flash::Mats<T> {
    packing.mats(base, shape, &contiguous_strides(shape), 0)
}

/// The tiled backward: the gradients of q, k and v, each one fresh buffer,
/// from the saved values and the upstream gradient `g`.
#[allow(clippy::too_many_arguments)]
#[track_caller]
fn tiled_grads<T: Float>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    out: &Tensor<T>,
    lse: &Tensor<T>,
    g: &Tensor<T>,
    packing: &Packing,
    sh: Shape<T>,
) -> [Tensor<T>; 3] {
    let problems = packing.problems(q.shape(), k.shape());
    let values = [q, k, v, out, g].map(|t| t.value());
    let [qv, kv, vv, ov, gv] = &values;
    let lv = lse.value();
    let mut lse_shape = lv.shape.to_vec();
    lse_shape.push(1);
    let lse_strides = [&lv.strides[..], &[1]].concat();
    let mut bufs = [q, k, v].map(|t| filled(T::zero(), t.numel()));
    {
        let [dq, dk, dv] = &mut bufs;
        let grads = Grads {
            dq: dense(packing, dq.as_mut_ptr(), q.shape()),
            dk: dense(packing, dk.as_mut_ptr(), k.shape()),
            dv: dense(packing, dv.as_mut_ptr(), v.shape()),
        };
        let saved = Written {
            out: read(packing, ov),
            lse: packing.mats(
                lv.buf.data.as_ptr().cast_mut(),
                &lse_shape,
                &lse_strides,
                lv.offset,
            ),
        };
        // SAFETY: as in the forward; the gradients are fresh zero-filled
        // row-major buffers of their inputs' shapes.
        unsafe {
            flash::backward(
                &inputs(packing, &problems, sh, [qv, kv, vv]),
                &saved,
                &read(packing, gv),
                &grads,
            )
        };
    }
    let [dq, dk, dv] = bufs;
    let grad = |data, t: &Tensor<T>| Tensor::from_value(Value::from_vec(data, t.shape()));
    [grad(dq, q), grad(dk, k), grad(dv, v)]
}

/// The gradients of attention in recorded ops (differentiable again), for
/// `create_graph`: with `P` the probabilities, `dV = Pᵀ g`,
/// `dS = P ∘ (g vᵀ - rowsum(P ∘ g vᵀ))`, `dQ = scale dS k`,
/// `dK = scale dSᵀ q`.
#[track_caller]
fn composed_grads<T: Float>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    g: &Tensor<T>,
    packing: &Packing,
    scale: T,
    causal: bool,
) -> [Tensor<T>; 3] {
    let batched = |x: &[Tensor<T>]| {
        let (q, k, v, g) = (&x[0], &x[1], &x[2], &x[3]);
        let nd = q.ndim();
        let t = |x: &Tensor<T>| x.transpose(nd - 2, nd - 1);
        let p = attention_probs(q, k, scale, causal);
        let dp = g.matmul(&t(v));
        let ds = (&dp - (&dp * &p).sum_dim(nd - 1, true)) * &p * scale;
        vec![ds.matmul(k), t(&ds).matmul(q), t(&p).matmul(g)]
    };
    let grads = match packing {
        Packing::Batched => batched(&[q.clone(), k.clone(), v.clone(), g.clone()]),
        Packing::Packed(cu) => per_sequence(cu, &[q, k, v, g], batched),
    };
    let [dq, dk, dv]: [Tensor<T>; 3] = grads.try_into().expect("three gradients");
    [dq, dk, dv]
}
