//! Property tests of the nn ops (`conv2d`, `max_pool2d`, `layer_norm`,
//! `embedding`) over random shapes, strides, paddings and kernel sizes:
//! forwards against loops written out here from the definitions, gradients
//! against finite differences (gradcheck, f64), and second derivatives
//! (gradcheck of a gradient made with `create_graph`).
//!
//! Max pooling is drawn on distinct values (no ties, where the gradient
//! jumps); its choices at ties and NaN have tests in `tests/nn.rs`.

use proptest::prelude::*;
use tapegrad::prelude::*;
use tapegrad::testing::{assert_gradcheck, shape_with, tensor_of_shape};

/// Cases per property; the second-order ones take a tenth of this.
const CASES: u32 = 32;

// ------------------------------------------------------------------ helpers

/// `t`'s element at `[a, b, c, d]` of a row-major 4-D shape.
fn at4(v: &[f64], s: &[usize], a: usize, b: usize, c: usize, d: usize) -> f64 {
    v[((a * s[1] + b) * s[2] + c) * s[3] + d]
}

/// The convolution by its definition: for each output element, the sum over
/// the kernel of weight times the input element it meets (0 in the padding).
fn conv_by_loops(
    x: &Tensor<f64>,
    w: &Tensor<f64>,
    b: Option<&Tensor<f64>>,
    stride: usize,
    pad: usize,
) -> Vec<f64> {
    let (xs, ws) = (x.shape(), w.shape());
    let (xv, wv) = (x.to_vec(), w.to_vec());
    let bv = b.map(|b| b.to_vec());
    let oh = (xs[2] + 2 * pad - ws[2]) / stride + 1;
    let ow = (xs[3] + 2 * pad - ws[3]) / stride + 1;
    let mut out = Vec::new();
    for n in 0..xs[0] {
        for o in 0..ws[0] {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bv.as_ref().map_or(0.0, |b| b[o]);
                    for c in 0..ws[1] {
                        for ki in 0..ws[2] {
                            for kj in 0..ws[3] {
                                let iy = (oy * stride + ki) as isize - pad as isize;
                                let ix = (ox * stride + kj) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= xs[2] as isize || ix >= xs[3] as isize {
                                    continue;
                                }
                                acc +=
                                    at4(&wv, ws, o, c, ki, kj) * at4(&xv, xs, n, c, iy as usize, ix as usize);
                            }
                        }
                    }
                    out.push(acc);
                }
            }
        }
    }
    out
}

/// Max pooling by its definition: the largest element of each window.
fn max_pool_by_loops(x: &Tensor<f64>, k: usize, stride: usize) -> Vec<f64> {
    let s = x.shape();
    let v = x.to_vec();
    let (oh, ow) = ((s[2] - k) / stride + 1, (s[3] - k) / stride + 1);
    let mut out = Vec::new();
    for n in 0..s[0] {
        for c in 0..s[1] {
            for oy in 0..oh {
                for ox in 0..ow {
                    let window = (0..k).flat_map(|i| (0..k).map(move |j| (i, j)));
                    let m = window
                        .map(|(i, j)| at4(&v, s, n, c, oy * stride + i, ox * stride + j))
                        .fold(f64::NEG_INFINITY, f64::max);
                    out.push(m);
                }
            }
        }
    }
    out
}

#[track_caller]
fn assert_all_close(ours: &[f64], theirs: &[f64], tol: f64) -> Result<(), TestCaseError> {
    prop_assert_eq!(ours.len(), theirs.len());
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        prop_assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "element {}: {} vs {}",
            i,
            a,
            b
        );
    }
    Ok(())
}

/// A convolution problem: input, weight, optional bias, stride, padding.
#[derive(Debug, Clone)]
struct Conv {
    x: Tensor<f64>,
    w: Tensor<f64>,
    b: Option<Tensor<f64>>,
    stride: usize,
    padding: usize,
}

/// Convolutions of 1-2 images of 1-3 channels into 1-3 channels, kernels
/// 1-3 on each side (not always square), stride 1-3, padding 0-2, images
/// from the smallest size the kernel fits up to 6.
fn conv_case() -> impl Strategy<Value = Conv> {
    let dims = (1..=2usize, 1..=3usize, 1..=3usize, 1..=3usize, 1..=3usize);
    (dims, 1..=3usize, 0..=2usize, any::<bool>())
        .prop_flat_map(|((n, c, o, kh, kw), stride, padding, bias)| {
            let fits = |k: usize| k.saturating_sub(2 * padding).max(1)..=6;
            (Just((n, c, o, kh, kw, stride, padding, bias)), fits(kh), fits(kw))
        })
        .prop_flat_map(|((n, c, o, kh, kw, stride, padding, bias), h, w)| {
            (
                tensor_of_shape(&[n, c, h, w], -1.0..1.0),
                tensor_of_shape(&[o, c, kh, kw], -1.0..1.0),
                tensor_of_shape(&[o], -1.0..1.0),
                Just((stride, padding, bias)),
            )
        })
        .prop_map(|(x, w, b, (stride, padding, bias))| Conv {
            x,
            w,
            b: bias.then_some(b),
            stride,
            padding,
        })
}

/// A tensor of `shape` whose values are distinct (at least 0.25 apart) in
/// a random order.
fn distinct(shape: Vec<usize>) -> impl Strategy<Value = Tensor<f64>> {
    let n: usize = shape.iter().product();
    let grid: Vec<f64> = (0..n).map(|i| (i as f64 - n as f64 / 2.0) * 0.25).collect();
    Just(grid)
        .prop_shuffle()
        .prop_map(move |v| Tensor::from_vec(v, &shape))
}

/// Max pooling problems: images `[1-2, 1-3, H, W]` with distinct values,
/// kernel 1-3, stride 1-3, H and W from the kernel size to 6.
fn pool_case() -> impl Strategy<Value = (Tensor<f64>, usize, usize)> {
    (1..=2usize, 1..=3usize, 1..=3usize, 1..=3usize)
        .prop_flat_map(|(n, c, k, stride)| (Just((n, c, k, stride)), k..=6usize, k..=6usize))
        .prop_flat_map(|((n, c, k, stride), h, w)| (distinct(vec![n, c, h, w]), Just(k), Just(stride)))
}

/// Layer-norm problems: an input of 1-3 dimensions, normalised over its
/// last 1..=ndim dimensions, with or without weight and bias, eps in
/// [1e-3, 1) (a smaller one makes finite differences of a near-constant
/// slice meaningless).
#[allow(clippy::type_complexity)]
fn layer_norm_case() -> impl Strategy<
    Value = (
        Tensor<f64>,
        Vec<usize>,
        Option<Tensor<f64>>,
        Option<Tensor<f64>>,
        f64,
    ),
> {
    shape_with(1..=3, 1..=4, 24)
        .prop_flat_map(|s| {
            let n = s.len();
            (Just(s), 1..=n)
        })
        .prop_flat_map(|(s, d)| {
            let norm = s[s.len() - d..].to_vec();
            (
                tensor_of_shape(&s, -2.0..2.0),
                Just(norm.clone()),
                prop::option::of(tensor_of_shape(&norm, 0.5..1.5)),
                prop::option::of(tensor_of_shape(&norm, -1.0..1.0)),
                1e-3..1.0f64,
            )
        })
}

fn create_graph() -> GradOptions<f64> {
    GradOptions {
        create_graph: true,
        ..Default::default()
    }
}

/// `∂ Σ f(p)² / ∂ p[0]`, made with `create_graph` (so differentiable again).
fn grad_of_square(p: &[Tensor<f64>], f: impl Fn(&[Tensor<f64>]) -> Tensor<f64>) -> Tensor<f64> {
    let y = f(p);
    let loss = (&y * &y).sum();
    tapegrad::grad(&[loss], &[p[0].clone()], create_graph())[0]
        .clone()
        .expect("the loss depends on the first input")
}

// --------------------------------------------------------------- conv2d

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn conv2d_matches_the_definition(c in conv_case()) {
        let y = c.x.conv2d(&c.w, c.b.as_ref(), c.stride, c.padding);
        let xs = c.x.shape();
        let (kh, kw) = (c.w.shape()[2], c.w.shape()[3]);
        let oh = (xs[2] + 2 * c.padding - kh) / c.stride + 1;
        let ow = (xs[3] + 2 * c.padding - kw) / c.stride + 1;
        prop_assert_eq!(y.shape(), &[xs[0], c.w.shape()[0], oh, ow][..]);
        assert_all_close(&y.to_vec(), &conv_by_loops(&c.x, &c.w, c.b.as_ref(), c.stride, c.padding), 1e-12)?;
        // one image [C, H, W] gives the batch of one without its first dimension
        let one = c.x.narrow(0, 0, 1);
        let unbatched = one.squeeze(0).conv2d(&c.w, c.b.as_ref(), c.stride, c.padding);
        let batched = one.conv2d(&c.w, c.b.as_ref(), c.stride, c.padding);
        prop_assert_eq!(unbatched.shape(), &batched.shape()[1..]);
        prop_assert_eq!(unbatched.to_vec(), batched.to_vec());
    }

    #[test]
    fn conv2d_gradient(c in conv_case()) {
        let (s, p) = (c.stride, c.padding);
        match &c.b {
            Some(b) => assert_gradcheck(|t| t[0].conv2d(&t[1], Some(&t[2]), s, p), &[c.x.clone(), c.w.clone(), b.clone()])?,
            None => assert_gradcheck(|t| t[0].conv2d(&t[1], None, s, p), &[c.x.clone(), c.w.clone()])?,
        }
    }

    #[test]
    fn conv2d_f32_agrees_with_f64(c in conv_case()) {
        let narrow = |t: &Tensor<f64>| Tensor::<f32>::from_vec(t.to_vec().iter().map(|&v| v as f32).collect(), t.shape());
        let b32 = c.b.as_ref().map(narrow);
        let y32 = narrow(&c.x).conv2d(&narrow(&c.w), b32.as_ref(), c.stride, c.padding);
        let y64 = c.x.conv2d(&c.w, c.b.as_ref(), c.stride, c.padding);
        let y32: Vec<f64> = y32.to_vec().into_iter().map(f64::from).collect();
        assert_all_close(&y32, &y64.to_vec(), 1e-5)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES / 4))]

    #[test]
    fn conv2d_second_derivatives(c in conv_case()) {
        // d/dx Σ conv(x, w)² is linear in x and quadratic in w: its Jacobian
        // in both (second derivatives) against finite differences
        let (s, p) = (c.stride, c.padding);
        assert_gradcheck(
            |t| grad_of_square(t, |t| t[0].conv2d(&t[1], None, s, p)),
            &[c.x.clone(), c.w.clone()],
        )?;
        // and d/dw, through the weight's own gradient rule
        assert_gradcheck(
            |t| grad_of_square(t, |t| t[1].conv2d(&t[0], None, s, p)),
            &[c.w.clone(), c.x.clone()],
        )?;
    }
}

// ----------------------------------------------------------- max_pool2d

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn max_pool2d_matches_the_definition((x, k, s) in pool_case()) {
        let y = x.max_pool2d(k, s);
        let xs = x.shape();
        prop_assert_eq!(y.shape(), &[xs[0], xs[1], (xs[2] - k) / s + 1, (xs[3] - k) / s + 1][..]);
        prop_assert_eq!(y.to_vec(), max_pool_by_loops(&x, k, s));
        let unbatched = x.narrow(0, 0, 1).squeeze(0).max_pool2d(k, s);
        prop_assert_eq!(unbatched.to_vec(), x.narrow(0, 0, 1).max_pool2d(k, s).to_vec());
    }

    #[test]
    fn max_pool2d_gradient((x, k, s) in pool_case()) {
        assert_gradcheck(|t| t[0].max_pool2d(k, s), &[x])?;
    }

    #[test]
    fn max_pool2d_is_the_max_over_windows_a_one_hot_conv2d_picks((x, k, s) in pool_case()) {
        // The composition: a conv2d with one one-hot kernel per window
        // position lays each window along a channel dimension, and max_dim
        // picks its largest element. Values, gradients and the gradients of
        // the gradients must agree with the fused op.
        let xs = x.shape().to_vec();
        let one_hot: Vec<f64> = (0..k * k).flat_map(|i| (0..k * k).map(move |j| f64::from(i == j))).collect();
        let kernels = Tensor::from_vec(one_hot, &[k * k, 1, k, k]);
        let composed = move |x: &Tensor<f64>| {
            let planes = x.reshape(&[xs[0] * xs[1], 1, xs[2], xs[3]]);
            let windows = planes.conv2d(&kernels, None, s, 0);
            let (oh, ow) = (windows.shape()[2], windows.shape()[3]);
            windows.max_dim(1, false).reshape(&[xs[0], xs[1], oh, ow])
        };
        let x = x.set_requires_grad(true);
        let (fused, comp) = (x.max_pool2d(k, s), composed(&x));
        prop_assert_eq!(fused.to_vec(), comp.to_vec());
        let seed = Tensor::from_vec((0..fused.numel()).map(|i| (i % 7) as f64 - 3.0).collect(), fused.shape())
            .set_requires_grad(true);
        let g = |y: &Tensor<f64>| {
            tapegrad::grad(&[(y * &seed).sum()], &[x.clone()], create_graph())[0].clone().unwrap()
        };
        let (g_fused, g_comp) = (g(&fused), g(&comp));
        prop_assert_eq!(g_fused.to_vec(), g_comp.to_vec());
        // second order: each gradient is linear in the seed; its derivative
        // there (the backward of the backward) must agree too
        let u = x.detach().sin();
        let d_seed = |gx: &Tensor<f64>| {
            tapegrad::grad(&[(gx * &u).sum()], &[seed.clone()], GradOptions::default())[0].clone().unwrap()
        };
        prop_assert_eq!(d_seed(&g_fused).to_vec(), d_seed(&g_comp).to_vec());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES / 4))]

    #[test]
    fn max_pool2d_second_derivatives((x, k, s) in pool_case()) {
        // d/dx Σ pool(x)² = 2 pool(x) scattered to the argmax: its Jacobian
        assert_gradcheck(|t| grad_of_square(t, |t| t[0].max_pool2d(k, s)), &[x])?;
    }
}

// ----------------------------------------------------------- layer_norm

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn layer_norm_matches_the_definition((x, norm, w, b, eps) in layer_norm_case()) {
        let y = x.layer_norm(&norm, w.as_ref(), b.as_ref(), eps);
        prop_assert_eq!(y.shape(), x.shape());
        let width: usize = norm.iter().product();
        let (wv, bv) = (w.map(|w| w.to_vec()), b.map(|b| b.to_vec()));
        let mut expected = Vec::new();
        for row in x.to_vec().chunks(width) {
            let mean = row.iter().sum::<f64>() / width as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / width as f64;
            for (i, v) in row.iter().enumerate() {
                let scale = wv.as_ref().map_or(1.0, |w| w[i]);
                let shift = bv.as_ref().map_or(0.0, |b| b[i]);
                expected.push((v - mean) / (var + eps).sqrt() * scale + shift);
            }
        }
        assert_all_close(&y.to_vec(), &expected, 1e-12)?;
    }

    #[test]
    fn layer_norm_gradient((x, norm, w, b, eps) in layer_norm_case()) {
        let mut inputs = vec![x];
        inputs.extend(w.iter().cloned());
        inputs.extend(b.iter().cloned());
        let (has_w, has_b) = (w.is_some(), b.is_some());
        assert_gradcheck(
            |t| {
                let w = has_w.then(|| &t[1]);
                let b = has_b.then(|| &t[1 + usize::from(has_w)]);
                t[0].layer_norm(&norm, w, b, eps)
            },
            &inputs,
        )?;
    }
}

/// Layer norm as the composition of ops its definition reads as (the fused
/// op must agree with it to any order).
fn layer_norm_composed(
    x: &Tensor<f64>,
    norm: &[usize],
    w: &Tensor<f64>,
    b: &Tensor<f64>,
    eps: f64,
) -> Tensor<f64> {
    let width: usize = norm.iter().product();
    let rows = x.reshape(&[x.numel() / width, width]);
    let centred = &rows - rows.mean_dim(1, true);
    let var = (&centred * &centred).mean_dim(1, true);
    (centred / (var + eps).sqrt()).reshape(x.shape()) * w + b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES / 4))]

    #[test]
    fn layer_norm_second_derivatives((x, norm, w, _, eps) in layer_norm_case()) {
        let w = w.unwrap_or_else(|| Tensor::ones(&norm));
        assert_gradcheck(
            |t| grad_of_square(t, |t| t[0].layer_norm(&norm, Some(&t[1]), None, eps)),
            &[x, w],
        )?;
    }

    #[test]
    fn layer_norm_third_derivatives((x, norm, _, _, eps) in layer_norm_case()) {
        // the gradient of the gradient, checked again: runs the backward
        // rule of the normalisation's gradient's gradient
        let u = x.cos();
        assert_gradcheck(
            |t| {
                let g = grad_of_square(t, |t| t[0].layer_norm(&norm, None, None, eps).powf(3.0));
                tapegrad::grad(&[(g * &u).sum()], &[t[0].clone()], create_graph())[0].clone().unwrap()
            },
            &[x],
        )?;
    }

    #[test]
    fn fused_layer_norm_agrees_with_its_composition((x, norm, w, b, eps) in layer_norm_case()) {
        let x = x.set_requires_grad(true);
        let w = w.unwrap_or_else(|| Tensor::ones(&norm)).set_requires_grad(true);
        let b = b.unwrap_or_else(|| Tensor::zeros(&norm)).set_requires_grad(true);
        let fused = x.layer_norm(&norm, Some(&w), Some(&b), eps);
        let composed = layer_norm_composed(&x, &norm, &w, &b, eps);
        assert_all_close(&fused.to_vec(), &composed.to_vec(), 1e-12)?;
        // the gradients of x, w and b
        let d = |y: &Tensor<f64>, wrt: &[Tensor<f64>], seed: &Tensor<f64>| {
            let opts = GradOptions { create_graph: true, ..Default::default() };
            tapegrad::grad(&[(y * seed).sum()], wrt, opts).into_iter().map(Option::unwrap).collect::<Vec<_>>()
        };
        let seed = x.detach().sin();
        let params = [x.clone(), w.clone(), b.clone()];
        let (gf, gc) = (d(&fused, &params, &seed), d(&composed, &params, &seed));
        for (f, c) in gf.iter().zip(&gc) {
            assert_all_close(&f.to_vec(), &c.to_vec(), 1e-9)?;
        }
        // second and third derivatives in x, along other directions
        let mut pair = (gf[0].clone(), gc[0].clone());
        for order in 2..=3 {
            let seed = x.detach().cos() * order as f64;
            pair = (d(&pair.0, &params[..1], &seed).remove(0), d(&pair.1, &params[..1], &seed).remove(0));
            assert_all_close(&pair.0.to_vec(), &pair.1.to_vec(), 1e-9)?;
        }
    }
}

// ------------------------------------------------------------ embedding

/// A weight `[1-5, 1-4]` and ids `[1-3, 1-3]` (as whole-number values) in
/// its range, repeats likely.
fn embedding_case() -> impl Strategy<Value = (Tensor<f64>, Tensor<f64>)> {
    (1..=5usize, 1..=4usize, shape_with(1..=2, 1..=3, 9)).prop_flat_map(|(num, dim, ids_shape)| {
        let n: usize = ids_shape.iter().product();
        (
            tensor_of_shape(&[num, dim], -2.0..2.0),
            proptest::collection::vec(0..num, n).prop_map(move |ids| {
                Tensor::from_vec(ids.into_iter().map(|i| i as f64).collect(), &ids_shape)
            }),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn embedding_picks_rows((weight, ids) in embedding_case()) {
        let e = ids.embedding(&weight);
        let dim = weight.shape()[1];
        let mut shape = ids.shape().to_vec();
        shape.push(dim);
        prop_assert_eq!(e.shape(), &shape[..]);
        let w = weight.to_vec();
        let expected: Vec<f64> = ids.to_vec().iter().flat_map(|&i| w[i as usize * dim..][..dim].to_vec()).collect();
        prop_assert_eq!(e.to_vec(), expected);
    }

    #[test]
    fn embedding_gradient((weight, ids) in embedding_case()) {
        assert_gradcheck(|t| ids.embedding(&t[0]), &[weight.clone()])?;
        assert_gradcheck(|t| grad_of_square(t, |t| ids.embedding(&t[0])), &[weight])?;
    }
}
