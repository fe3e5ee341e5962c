//! Gradient checking: backward against central finite differences.

use crate::autograd::engine::{grad, GradOptions};
use crate::Tensor;
use std::fmt;

/// Tolerances for [`gradcheck`]: an analytic value `a` passes against a
/// numeric one `n` when `|a - n| <= atol + rtol * |n|`.
///
/// ```
/// use tapegrad::prelude::*;
/// let x = Tensor::from_vec(vec![2.0], &[1]).set_requires_grad(true);
/// let f = |x: &[Tensor<f64>]| x[0].powf(4.0);
/// // A central difference of x⁴ is off by 4x·eps²: 0.08 at eps = 0.1.
/// let coarse = GradcheckOptions { eps: 0.1, ..Default::default() };
/// assert!(tapegrad::gradcheck(f, &[x.clone()], coarse).is_err());
/// assert!(tapegrad::gradcheck(f, &[x], GradcheckOptions::default()).is_ok());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct GradcheckOptions {
    /// The finite-difference step.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-6,
            atol: 1e-5,
            rtol: 1e-3,
        }
    }
}

/// The first Jacobian entry where backward and finite differences disagree:
/// d output\[`output`\] / d input `input`\[`element`\].
///
/// ```
/// use std::sync::Arc;
/// use tapegrad::{ndarray::ArrayD, prelude::*};
///
/// /// y = x², with a wrong derivative (x instead of 2x).
/// struct BadSquare;
/// impl CustomOp<f64> for BadSquare {
///     fn name(&self) -> &str { "BadSquare" }
///     fn forward(&self, x: &[ArrayD<f64>]) -> ArrayD<f64> { x[0].mapv(|v| v * v) }
///     fn backward(&self, x: &[ArrayD<f64>], _y: &ArrayD<f64>, g: &ArrayD<f64>)
///         -> Vec<Option<ArrayD<f64>>> {
///         vec![Some(g * &x[0])]
///     }
/// }
///
/// let x = Tensor::from_vec(vec![3.0, 1.0], &[2]).set_requires_grad(true);
/// let f = |x: &[Tensor<f64>]| Tensor::apply_op(Arc::new(BadSquare), x);
/// let err = tapegrad::gradcheck(f, &[x], GradcheckOptions::default()).unwrap_err();
/// assert_eq!((err.input, err.output, err.element), (0, 0, 0));
/// assert_eq!(err.analytic, 3.0);
/// assert!((err.numeric - 6.0).abs() < 1e-6);
/// ```
#[derive(Debug, Clone)]
pub struct GradcheckError {
    /// Which input (index into `inputs`).
    pub input: usize,
    /// Which element of the output (row-major).
    pub output: usize,
    /// Which element of the input (row-major).
    pub element: usize,
    /// The value backward gave.
    pub analytic: f64,
    /// The central-difference estimate.
    pub numeric: f64,
}

impl fmt::Display for GradcheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gradcheck: Jacobian mismatch for input {}, output element {}, input element {}: \
             analytic {} vs numeric {}",
            self.input, self.output, self.element, self.analytic, self.numeric
        )
    }
}

impl std::error::Error for GradcheckError {}

/// Checks the gradients of `f` at `inputs` against central differences:
/// every element of the output, against every element of every input that
/// requires grad (the others are skipped).
///
/// ```
/// use tapegrad::prelude::*;
/// let x = Tensor::from_vec(vec![0.5, -1.0, 2.0], &[3]).set_requires_grad(true);
/// tapegrad::gradcheck(|x| (&x[0] * &x[0]).tanh(), &[x], GradcheckOptions::default()).unwrap();
/// ```
pub fn gradcheck<F>(f: F, inputs: &[Tensor<f64>], opts: GradcheckOptions) -> Result<(), GradcheckError>
where
    F: Fn(&[Tensor<f64>]) -> Tensor<f64>,
{
    let checked: Vec<usize> = (0..inputs.len()).filter(|&i| inputs[i].requires_grad()).collect();
    let out = f(inputs);
    let n_out = out.numel();

    // Analytic Jacobian, one output element (one backward) at a time.
    let wrt: Vec<Tensor<f64>> = checked.iter().map(|&i| inputs[i].clone()).collect();
    let mut analytic: Vec<Vec<f64>> = checked
        .iter()
        .map(|&i| vec![0.0; inputs[i].numel() * n_out])
        .collect();
    if out.requires_grad() {
        for k in 0..n_out {
            let mut onehot = vec![0.0; n_out];
            onehot[k] = 1.0;
            let opts = GradOptions {
                grad_outputs: Some(vec![Tensor::from_vec(onehot, out.shape())]),
                retain_graph: true,
                create_graph: false,
            };
            for (c, g) in grad(std::slice::from_ref(&out), &wrt, opts)
                .into_iter()
                .enumerate()
            {
                if let Some(g) = g {
                    for (e, v) in g.to_vec().into_iter().enumerate() {
                        analytic[c][e * n_out + k] = v;
                    }
                }
            }
        }
    }

    // Numeric Jacobian, one input element at a time. `f` runs in the
    // caller's grad mode on inputs that require grad as the originals do,
    // so a function that itself differentiates (a gradient) can be checked.
    for (c, &i) in checked.iter().enumerate() {
        let base = inputs[i].to_vec();
        for e in 0..base.len() {
            let at = |delta: f64| {
                let mut shifted = base.clone();
                shifted[e] += delta;
                let mut args = inputs.to_vec();
                args[i] = Tensor::from_vec(shifted, inputs[i].shape()).set_requires_grad(true);
                f(&args).to_vec()
            };
            let (plus, minus) = (at(opts.eps), at(-opts.eps));
            for k in 0..n_out {
                let numeric = (plus[k] - minus[k]) / (2.0 * opts.eps);
                let a = analytic[c][e * n_out + k];
                let close = (a - numeric).abs() <= opts.atol + opts.rtol * numeric.abs();
                if !close {
                    return Err(GradcheckError {
                        input: i,
                        output: k,
                        element: e,
                        analytic: a,
                        numeric,
                    });
                }
            }
        }
    }
    Ok(())
}
