//! Convolution and pooling over images `[N, C, H, W]`.
//!
//! `conv2d` is a composite: the windows of the input laid out as the
//! columns of one matrix (`im2col`), one matrix product with the weights,
//! and a copy into `[N, O, H, W]` order. Its gradient comes from those
//! ops: `im2col` and `col2im` (which adds columns back into an image) are
//! each other's adjoints, and so are the two orders of `swap_outer`, so
//! conv2d differentiates to any order. `max_pool2d` picks each window's
//! largest element by its flat index; `gather_flat` and `scatter_flat` are
//! again an adjoint pair.

use crate::autograd::node::record;
use crate::layout::dims;
use crate::pool;
use crate::storage::{filled, Value};
use crate::{Float, Tensor};
use smallvec::smallvec;
use std::ops::Range;
use std::sync::Arc;

/// A 2-D sliding window over images `[n, c, h, w]`: a `kh × kw` kernel
/// moved by `stride` over the input padded with `padding` zeros on every
/// side, at `oh × ow` positions.
#[derive(Clone, Copy, Debug)]
struct Window {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    padding: usize,
    oh: usize,
    ow: usize,
}

impl Window {
    /// The window over `input` (`[N, C, H, W]`).
    ///
    /// **Panics**, naming `op`, if the stride or a kernel size is 0 or the
    /// kernel is larger than the padded input.
    #[track_caller]
    fn new(op: &str, input: &[usize], (kh, kw): (usize, usize), stride: usize, padding: usize) -> Window {
        let [n, c, h, w] = input.try_into().expect("a 4-D input");
        assert!(stride > 0, "{op}: stride must be positive, got 0");
        assert!(
            kh > 0 && kw > 0,
            "{op}: kernel size must be positive, got ({kh}, {kw})"
        );
        let (ph, pw) = (h + 2 * padding, w + 2 * padding);
        assert!(
            kh <= ph && kw <= pw,
            "{op}: kernel size ({kh}, {kw}) is larger than the input's size ({ph}, {pw}) \
             (input of shape {input:?} with padding {padding})"
        );
        Window {
            n,
            c,
            h,
            w,
            kh,
            kw,
            stride,
            padding,
            oh: (ph - kh) / stride + 1,
            ow: (pw - kw) / stride + 1,
        }
    }

    /// The output positions `o` (of `out`) at which kernel offset `k` reads
    /// inside an axis of `size` elements: `0 <= o·stride + k - padding < size`.
    #[track_caller]
    fn valid(&self, k: usize, size: usize, out: usize) -> Range<usize> {
        let s = self.stride;
        let lo = self.padding.saturating_sub(k).div_ceil(s);
        let hi = (size + self.padding).saturating_sub(k).div_ceil(s).min(out);
        lo.min(hi)..hi
    }

    /// The shape of `im2col`'s result: a row per (channel, kernel row,
    /// kernel column), a column per (image, output row, output column).
    #[track_caller]
    fn cols_shape(&self) -> [usize; 2] {
        [self.c * self.kh * self.kw, self.n * self.oh * self.ow]
    }

    #[track_caller]
    fn image_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    /// Calls `f(row, n, c, oy, iy, ox range, ix of the range's start)` for
    /// every run of output positions along a row of the output that reads
    /// inside the input: the loop `im2col` and `col2im` share.
    #[track_caller]
    fn for_each_run(&self, mut f: impl FnMut(usize, usize, usize, usize, usize, Range<usize>, usize)) {
        let (s, p) = (self.stride, self.padding);
        for c in 0..self.c {
            for ki in 0..self.kh {
                let rows = self.valid(ki, self.h, self.oh);
                for kj in 0..self.kw {
                    let cols = self.valid(kj, self.w, self.ow);
                    if cols.is_empty() {
                        continue;
                    }
                    let row = (c * self.kh + ki) * self.kw + kj;
                    let ix0 = cols.start * s + kj - p;
                    for n in 0..self.n {
                        for oy in rows.clone() {
                            f(row, n, c, oy, oy * s + ki - p, cols.clone(), ix0);
                        }
                    }
                }
            }
        }
    }
}

/// The columns of `x` (row-major `[n, c, h, w]`) under `win`: row
/// `(c, ki, kj)`, column `(n, oy, ox)` holds the input element kernel
/// offset `(ki, kj)` meets at output position `(oy, ox)` (0 in the padding).
#[track_caller]
fn im2col_kernel<T: Float>(x: &[T], win: &Window) -> Value<T> {
    let [rows, cols] = win.cols_shape();
    let mut out = filled(T::zero(), rows * cols);
    let (l, s) = (win.oh * win.ow, win.stride);
    win.for_each_run(|row, n, c, oy, iy, xs, ix0| {
        let src = &x[((n * win.c + c) * win.h + iy) * win.w..][..win.w];
        let dst = &mut out[row * cols + n * l + oy * win.ow..][..win.ow];
        if s == 1 {
            dst[xs.clone()].copy_from_slice(&src[ix0..ix0 + xs.len()]);
        } else {
            for (d, &v) in dst[xs].iter_mut().zip(src[ix0..].iter().step_by(s)) {
                *d = v;
            }
        }
    });
    Value::from_vec(out, &win.cols_shape())
}

/// The adjoint of [`im2col_kernel`]: an image of zeros with every column
/// entry of `cols` added where it was read from.
#[track_caller]
fn col2im_kernel<T: Float>(cols_data: &[T], win: &Window) -> Value<T> {
    let cols = win.cols_shape()[1];
    let mut out = filled(T::zero(), win.image_shape().iter().product());
    let (l, s) = (win.oh * win.ow, win.stride);
    win.for_each_run(|row, n, c, oy, iy, xs, ix0| {
        let src = &cols_data[row * cols + n * l + oy * win.ow..][..win.ow];
        let dst = &mut out[((n * win.c + c) * win.h + iy) * win.w..][..win.w];
        for (d, &v) in dst[ix0..].iter_mut().step_by(s).zip(&src[xs]) {
            *d = *d + v;
        }
    });
    Value::from_vec(out, &win.image_shape())
}

impl<T: Float> Tensor<T> {
    /// The 2-D convolution (cross-correlation, as `F.conv2d` with
    /// `groups=1`, `dilation=1`) of images `[N, C, H, W]` (or one image
    /// `[C, H, W]`) with `weight` `[O, C, kh, kw]`, plus `bias` `[O]`:
    /// `[N, O, H', W']` with `H' = (H + 2·padding - kh) / stride + 1` (and
    /// the same for `W'`). `padding` zeros surround the input on each side.
    ///
    /// Computed as one matrix product of the weights with the input's
    /// windows laid out as columns (im2col), so its gradient is that of the
    /// composition and differentiates again.
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let x = Tensor::<f32>::ones(&[1, 1, 3, 3]);
    /// let w = Tensor::<f32>::ones(&[2, 1, 2, 2]);
    /// let b = Tensor::from_vec(vec![0.0, 10.0], &[2]);
    /// let y = x.conv2d(&w, Some(&b), 1, 0);
    /// assert_eq!(y.shape(), &[1, 2, 2, 2]);
    /// assert_eq!(y.to_vec(), vec![4.0, 4.0, 4.0, 4.0, 14.0, 14.0, 14.0, 14.0]);
    /// // padding 1: the corner windows see one input element each
    /// assert_eq!(x.conv2d(&w, None, 2, 1).to_vec(), vec![1.0, 2.0, 2.0, 4.0, 1.0, 2.0, 2.0, 4.0]);
    /// ```
    ///
    /// **Panics** if the input is not 3-D or 4-D, the weight not 4-D, the
    /// input's channels differ from the weight's second dimension, the bias
    /// is not `[O]`, the stride is 0 or the kernel is larger than the padded
    /// input (naming the shapes).
    #[track_caller]
    pub fn conv2d(
        &self,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        stride: usize,
        padding: usize,
    ) -> Tensor<T> {
        let (xs, ws) = (self.shape(), weight.shape());
        assert!(
            ws.len() == 4,
            "conv2d: weight must be 4-D [out_channels, in_channels, kh, kw], got shape {ws:?}"
        );
        assert!(
            xs.len() == 3 || xs.len() == 4,
            "conv2d: expects an input [N, C, H, W] or [C, H, W], got shape {xs:?}"
        );
        let (o, c) = (ws[0], ws[1]);
        let channels = xs[xs.len() - 3];
        assert!(
            channels == c,
            "conv2d: weight of shape {ws:?} expects input with {c} channels, but got input of \
             shape {xs:?} ({channels} channels)"
        );
        if let Some(b) = bias {
            assert!(
                b.shape() == [o],
                "conv2d: bias of shape {:?} does not match the {o} output channels of weight {ws:?}",
                b.shape()
            );
        }
        if xs.len() == 3 {
            return self.unsqueeze(0).conv2d(weight, bias, stride, padding).squeeze(0);
        }
        let win = Window::new("conv2d", xs, (ws[2], ws[3]), stride, padding);
        let [k, _] = win.cols_shape();
        // [O, k] @ [k, N·L]: one product for the whole batch.
        let y = weight.reshape(&[o, k]).matmul(&self.im2col(win));
        let y = match bias {
            Some(b) => y + b.reshape(&[o, 1]),
            None => y,
        };
        y.reshape(&[o, win.n, win.oh, win.ow]).swap_outer()
    }

    /// The windows of an image batch as columns ([`im2col_kernel`]).
    #[track_caller]
    fn im2col(&self, win: Window) -> Tensor<T> {
        let x = self.data().contiguous();
        let out = im2col_kernel(x.as_slice().expect("contiguous"), &win);
        // im2col is linear; its adjoint adds the columns back (col2im).
        record("Im2ColBackward", &[self], out, &[], move |_, g| {
            smallvec![Some(g.col2im(win))]
        })
    }

    /// Columns added back into an image batch ([`col2im_kernel`]).
    #[track_caller]
    fn col2im(&self, win: Window) -> Tensor<T> {
        let cols = self.data().contiguous();
        let out = col2im_kernel(cols.as_slice().expect("contiguous"), &win);
        record("Col2ImBackward", &[self], out, &[], move |_, g| {
            smallvec![Some(g.im2col(win))]
        })
    }

    /// `[a, b, rest..]` to a row-major `[b, a, rest..]`: `transpose(0, 1)`
    /// with the elements moved, a block copy per `rest` slice. (A strided
    /// view instead would send every later elementwise op down ndarray's
    /// slow path.) Its adjoint is the same swap back.
    #[track_caller]
    fn swap_outer(&self) -> Tensor<T> {
        let shape = self.shape();
        let (a, b) = (shape[0], shape[1]);
        let inner: usize = shape[2..].iter().product();
        let x = self.data().contiguous();
        let src = x.as_slice().expect("contiguous");
        let mut out = pool::take(src.len());
        for j in 0..b {
            for i in 0..a {
                out.extend_from_slice(&src[(i * b + j) * inner..][..inner]);
            }
        }
        let mut swapped = dims(shape);
        swapped.swap(0, 1);
        record(
            "SwapOuterBackward",
            &[self],
            Value::from_vec(out, &swapped),
            &[],
            |_, g| smallvec![Some(g.swap_outer())],
        )
    }

    /// The 2-D max pooling of images `[N, C, H, W]` (or `[C, H, W]`) over
    /// `kernel_size × kernel_size` windows moved by `stride`, without
    /// padding (`F.max_pool2d(x, kernel_size, stride)`): `[N, C, H', W']`
    /// with `H' = (H - kernel_size) / stride + 1`. The gradient goes to the
    /// largest element of each window (the first one at ties, a NaN if
    /// there is one: PyTorch's choice), summed where windows overlap.
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let x = Tensor::from_vec((0..16).map(|v| v as f32).collect(), &[1, 1, 4, 4])
    ///     .set_requires_grad(true);
    /// let y = x.max_pool2d(2, 2);
    /// assert_eq!(y.to_vec(), vec![5.0, 7.0, 13.0, 15.0]);
    /// y.sum().backward();
    /// assert_eq!(x.grad().unwrap().to_vec()[5], 1.0);
    /// assert_eq!(x.grad().unwrap().to_vec()[4], 0.0);
    /// ```
    ///
    /// **Panics** if the input is not 3-D or 4-D, `kernel_size` or `stride`
    /// is 0, or the kernel is larger than the input.
    #[track_caller]
    pub fn max_pool2d(&self, kernel_size: usize, stride: usize) -> Tensor<T> {
        let xs = self.shape();
        match xs.len() {
            4 => {}
            3 => return self.unsqueeze(0).max_pool2d(kernel_size, stride).squeeze(0),
            _ => panic!("max_pool2d: expects an input [N, C, H, W] or [C, H, W], got shape {xs:?}"),
        }
        let win = Window::new("max_pool2d", xs, (kernel_size, kernel_size), stride, 0);
        let index = {
            let x = self.data().contiguous();
            argmax_windows(x.as_slice().expect("contiguous"), &win)
        };
        self.gather_flat(&index.into(), &[win.n, win.c, win.oh, win.ow])
    }

    /// `out[j] = self[index[j]]` (row-major positions), shaped `shape`:
    /// max pooling once the argmax of each window is known. Its adjoint is
    /// [`scatter_flat`](Tensor::scatter_flat).
    #[track_caller]
    fn gather_flat(&self, index: &Arc<[usize]>, shape: &[usize]) -> Tensor<T> {
        let x = self.data().contiguous();
        let src = x.as_slice().expect("contiguous");
        let mut out = pool::take(index.len());
        out.extend(index.iter().map(|&i| src[i]));
        let (index, from) = (index.clone(), dims(self.shape()));
        record(
            "MaxPool2dBackward",
            &[self],
            Value::from_vec(out, shape),
            &[],
            move |_, g| smallvec![Some(g.scatter_flat(&index, &from))],
        )
    }

    /// Zeros of `shape` with `self`'s `j`-th element added at row-major
    /// position `index[j]` (repeats accumulate): max pooling's backward.
    #[track_caller]
    fn scatter_flat(&self, index: &Arc<[usize]>, shape: &[usize]) -> Tensor<T> {
        let g = self.data().contiguous();
        let mut out = filled(T::zero(), shape.iter().product());
        for (&i, &v) in index.iter().zip(g.as_slice().expect("contiguous")) {
            out[i] = out[i] + v;
        }
        let (index, from) = (index.clone(), dims(self.shape()));
        record(
            "MaxPool2dBackwardBackward",
            &[self],
            Value::from_vec(out, shape),
            &[],
            move |_, g| smallvec![Some(g.gather_flat(&index, &from))],
        )
    }
}

/// For each window of `win` over `x` (row-major `[n, c, h, w]`), the
/// row-major position of its largest element: the first one scanning row
/// by row, unless a NaN comes later (then the last NaN), as PyTorch's
/// `max_pool2d` kernel (`val > max || isnan(val)`).
#[track_caller]
fn argmax_windows<T: Float>(x: &[T], win: &Window) -> Vec<usize> {
    let plane = win.h * win.w;
    let mut index = Vec::with_capacity(win.n * win.c * win.oh * win.ow);
    for p in 0..win.n * win.c {
        for oy in 0..win.oh {
            for ox in 0..win.ow {
                let start = p * plane + oy * win.stride * win.w + ox * win.stride;
                let (mut best_i, mut best) = (start, T::neg_infinity());
                for ki in 0..win.kh {
                    let row = start + ki * win.w;
                    for (i, &v) in x[row..row + win.kw].iter().enumerate() {
                        if v > best || v.is_nan() {
                            (best_i, best) = (row + i, v);
                        }
                    }
                }
                index.push(best_i);
            }
        }
    }
    index
}
