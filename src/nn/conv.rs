//! `Conv2d` and `MaxPool2d`: layers over images `[N, C, H, W]`.

use crate::nn::init::uniform_fan_in;
use crate::nn::module::weight_and_bias;
use crate::nn::{name_parameters, Module};
use crate::{Float, Tensor};

/// A 2-D convolution with square `kernel_size × kernel_size` kernels
/// (`torch.nn.Conv2d`, `groups=1`, `dilation=1`): input `[N, in_channels,
/// H, W]` (or `[in_channels, H, W]`), output `[N, out_channels, H', W']`;
/// see [`Tensor::conv2d`]. Stride 1 and padding 0 unless set with
/// [`stride`](Conv2d::stride) and [`padding`](Conv2d::padding).
///
/// Weight and bias start uniform in `[-1/√fan_in, 1/√fan_in]` with
/// `fan_in = in_channels · kernel_size²`, PyTorch's default, drawn from the
/// crate's generator.
///
/// ```
/// use tapegrad::nn::{Conv2d, Module};
/// use tapegrad::Tensor;
///
/// let conv = Conv2d::new(1, 16, 3).padding(1);
/// assert_eq!(conv.weight.shape(), &[16, 1, 3, 3]);
/// let y = conv.forward(&Tensor::<f32>::zeros(&[64, 1, 8, 8]));
/// assert_eq!(y.shape(), &[64, 16, 8, 8]);
/// ```
#[derive(Debug, Clone)]
pub struct Conv2d<T: Float = f32> {
    /// `[out_channels, in_channels, kernel_size, kernel_size]`, a leaf that
    /// requires grad.
    pub weight: Tensor<T>,
    /// `[out_channels]`, or `None` for a layer without bias.
    pub bias: Option<Tensor<T>>,
    stride: usize,
    padding: usize,
}

impl<T: Float> Conv2d<T> {
    /// A convolution from `in_channels` to `out_channels` with
    /// `kernel_size × kernel_size` kernels and a bias, stride 1, padding 0.
    ///
    /// ```
    /// let conv = tapegrad::nn::Conv2d::<f64>::new(3, 8, 5);
    /// let bound = 1.0 / (3.0f64 * 25.0).sqrt();
    /// assert!(conv.weight.to_vec().iter().all(|w| w.abs() <= bound));
    /// ```
    #[track_caller]
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: usize) -> Self {
        let fan_in = in_channels * kernel_size * kernel_size;
        let weight = uniform_fan_in(&[out_channels, in_channels, kernel_size, kernel_size], fan_in);
        let bias = uniform_fan_in(&[out_channels], fan_in);
        let layer = Conv2d {
            weight,
            bias: Some(bias),
            stride: 1,
            padding: 0,
        };
        name_parameters(&layer);
        layer
    }

    /// The same layer moving its kernel `stride` positions at a time.
    ///
    /// ```
    /// use tapegrad::nn::{Conv2d, Module};
    /// let conv = Conv2d::<f32>::new(1, 1, 3).stride(2);
    /// assert_eq!(conv.forward(&tapegrad::Tensor::zeros(&[1, 1, 7, 7])).shape(), &[1, 1, 3, 3]);
    /// ```
    ///
    /// **Panics** if `stride` is 0.
    #[track_caller]
    pub fn stride(mut self, stride: usize) -> Self {
        assert!(stride > 0, "Conv2d::stride: stride must be positive, got 0");
        self.stride = stride;
        self
    }

    /// The same layer with `padding` zeros around each side of the input.
    ///
    /// ```
    /// use tapegrad::nn::{Conv2d, Module};
    /// let conv = Conv2d::<f32>::new(1, 1, 3).padding(1);
    /// assert_eq!(conv.forward(&tapegrad::Tensor::zeros(&[1, 1, 5, 5])).shape(), &[1, 1, 5, 5]);
    /// ```
    #[track_caller]
    pub fn padding(mut self, padding: usize) -> Self {
        self.padding = padding;
        self
    }
}

impl<T: Float> Module<T> for Conv2d<T> {
    /// **Panics** if the input is not `[N, in_channels, H, W]` or
    /// `[in_channels, H, W]`, or the kernel is larger than the padded input
    /// (naming the shapes).
    #[track_caller]
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        x.conv2d(&self.weight, self.bias.as_ref(), self.stride, self.padding)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        weight_and_bias(&self.weight, self.bias.as_ref())
    }
}

/// 2-D max pooling over `kernel_size × kernel_size` windows
/// (`torch.nn.MaxPool2d`, no padding); the windows move by `kernel_size`
/// unless [`stride`](MaxPool2d::stride) says otherwise. See
/// [`Tensor::max_pool2d`].
///
/// ```
/// use tapegrad::nn::{MaxPool2d, Module};
/// let pool = MaxPool2d::new(2);
/// let y = Module::<f32>::forward(&pool, &tapegrad::Tensor::zeros(&[64, 16, 8, 8]));
/// assert_eq!(y.shape(), &[64, 16, 4, 4]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    kernel_size: usize,
    stride: usize,
}

impl MaxPool2d {
    /// Pooling over `kernel_size × kernel_size` windows, stride
    /// `kernel_size`.
    ///
    /// ```
    /// use tapegrad::nn::{MaxPool2d, Module};
    /// let y = Module::<f32>::forward(&MaxPool2d::new(3), &tapegrad::Tensor::zeros(&[1, 1, 9, 9]));
    /// assert_eq!(y.shape(), &[1, 1, 3, 3]);
    /// ```
    ///
    /// **Panics** if `kernel_size` is 0.
    #[track_caller]
    pub fn new(kernel_size: usize) -> Self {
        assert!(kernel_size > 0, "MaxPool2d: kernel size must be positive, got 0");
        MaxPool2d {
            kernel_size,
            stride: kernel_size,
        }
    }

    /// The same pooling with windows `stride` positions apart (they
    /// overlap when `stride < kernel_size`).
    ///
    /// ```
    /// use tapegrad::nn::{MaxPool2d, Module};
    /// let pool = MaxPool2d::new(3).stride(1);
    /// let y = Module::<f32>::forward(&pool, &tapegrad::Tensor::zeros(&[1, 1, 5, 5]));
    /// assert_eq!(y.shape(), &[1, 1, 3, 3]);
    /// ```
    ///
    /// **Panics** if `stride` is 0.
    #[track_caller]
    pub fn stride(mut self, stride: usize) -> Self {
        assert!(stride > 0, "MaxPool2d::stride: stride must be positive, got 0");
        self.stride = stride;
        self
    }
}

impl<T: Float> Module<T> for MaxPool2d {
    /// **Panics** if the input is not 3-D or 4-D or smaller than the kernel.
    #[track_caller]
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        x.max_pool2d(self.kernel_size, self.stride)
    }

    #[track_caller]
    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        Vec::new()
    }
}
