//! User-defined differentiable operations.

use crate::autograd::node::{record, Role};
use crate::storage::Value;
use crate::sync::lock;
use crate::{Float, Tensor};
use ndarray::ArrayD;
use smallvec::SmallVec;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// A differentiable operation written by the user on ndarrays.
///
/// Inputs, output and gradient reach it as copies. A `CustomOp` is
/// once-differentiable: under `create_graph`, differentiating its gradient
/// again panics naming the op.
///
/// ```
/// use std::sync::Arc;
/// use tapegrad::{ndarray::ArrayD, prelude::*};
///
/// /// y = x³
/// struct Cube;
/// impl CustomOp<f64> for Cube {
///     fn name(&self) -> &str { "Cube" }
///     fn forward(&self, x: &[ArrayD<f64>]) -> ArrayD<f64> { x[0].mapv(|v| v * v * v) }
///     fn backward(&self, x: &[ArrayD<f64>], _y: &ArrayD<f64>, g: &ArrayD<f64>)
///         -> Vec<Option<ArrayD<f64>>> {
///         vec![Some(g * &x[0].mapv(|v| 3.0 * v * v))] // dy/dx = 3x²
///     }
/// }
///
/// let x = Tensor::from_vec(vec![2.0f64], &[1]).set_requires_grad(true);
/// let y = Tensor::apply_op(Arc::new(Cube), &[x.clone()]);
/// assert_eq!(y.grad_fn_name().as_deref(), Some("Cube"));
/// y.sum().backward();
/// assert_eq!(x.grad().unwrap().item(), 12.0);
/// ```
pub trait CustomOp<T: Float>: Send + Sync {
    /// The op's name: its node's name in `grad_fn_name`, the tape
    /// ([`viz::tape`](crate::viz::tape)), `saved_residuals` and messages.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use tapegrad::{ndarray::ArrayD, CustomOp};
    /// # struct Cube;
    /// # impl CustomOp<f64> for Cube {
    /// #     fn name(&self) -> &str { "Cube" }
    /// #     fn forward(&self, x: &[ArrayD<f64>]) -> ArrayD<f64> { x[0].mapv(|v| v * v * v) }
    /// #     fn backward(&self, x: &[ArrayD<f64>], _y: &ArrayD<f64>, g: &ArrayD<f64>)
    /// #         -> Vec<Option<ArrayD<f64>>> {
    /// #         vec![Some(g * &x[0].mapv(|v| 3.0 * v * v))]
    /// #     }
    /// # }
    /// use tapegrad::Tensor;
    /// // `Cube` is the op of the trait's example.
    /// let x = Tensor::from_vec(vec![2.0f64], &[1]).set_requires_grad(true);
    /// let y = Tensor::apply_op(Arc::new(Cube), &[x]);
    /// assert_eq!(y.grad_fn_name().as_deref(), Some("Cube"));
    /// assert!(tapegrad::viz::tape(&y).contains("Cube"));
    /// ```
    fn name(&self) -> &str;
    /// The output, from the inputs.
    ///
    /// ```
    /// # use tapegrad::{ndarray::ArrayD, CustomOp};
    /// # struct Cube;
    /// # impl CustomOp<f64> for Cube {
    /// #     fn name(&self) -> &str { "Cube" }
    /// #     fn forward(&self, x: &[ArrayD<f64>]) -> ArrayD<f64> { x[0].mapv(|v| v * v * v) }
    /// #     fn backward(&self, x: &[ArrayD<f64>], _y: &ArrayD<f64>, g: &ArrayD<f64>)
    /// #         -> Vec<Option<ArrayD<f64>>> {
    /// #         vec![Some(g * &x[0].mapv(|v| 3.0 * v * v))]
    /// #     }
    /// # }
    /// use tapegrad::ndarray::arr1;
    /// // `Cube` is the op of the trait's example.
    /// let y = Cube.forward(&[arr1(&[2.0, -1.0]).into_dyn()]);
    /// assert_eq!(y, arr1(&[8.0, -1.0]).into_dyn());
    /// ```
    fn forward(&self, inputs: &[ArrayD<T>]) -> ArrayD<T>;
    /// One gradient per input (`None` where the input gets none), each of
    /// its input's shape.
    ///
    /// ```
    /// # use tapegrad::{ndarray::ArrayD, CustomOp};
    /// # struct Cube;
    /// # impl CustomOp<f64> for Cube {
    /// #     fn name(&self) -> &str { "Cube" }
    /// #     fn forward(&self, x: &[ArrayD<f64>]) -> ArrayD<f64> { x[0].mapv(|v| v * v * v) }
    /// #     fn backward(&self, x: &[ArrayD<f64>], _y: &ArrayD<f64>, g: &ArrayD<f64>)
    /// #         -> Vec<Option<ArrayD<f64>>> {
    /// #         vec![Some(g * &x[0].mapv(|v| 3.0 * v * v))]
    /// #     }
    /// # }
    /// use tapegrad::ndarray::arr1;
    /// // `Cube` is the op of the trait's example: dy/dx = 3x².
    /// let (x, g) = (arr1(&[2.0, -1.0]).into_dyn(), arr1(&[1.0, 0.5]).into_dyn());
    /// let grads = Cube.backward(&[x.clone()], &Cube.forward(&[x]), &g);
    /// assert_eq!(grads[0].as_ref().unwrap(), &arr1(&[12.0, 1.5]).into_dyn());
    /// ```
    fn backward(
        &self,
        inputs: &[ArrayD<T>],
        output: &ArrayD<T>,
        grad_output: &ArrayD<T>,
    ) -> Vec<Option<ArrayD<T>>>;
}

impl<T: Float> Tensor<T> {
    /// Applies a [`CustomOp`] to `inputs`, recording it for backward.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tapegrad::{ndarray::ArrayD, CustomOp, Tensor};
    ///
    /// /// y = a · b elementwise; only `a` gets a gradient.
    /// struct ScaleBy;
    /// impl CustomOp<f32> for ScaleBy {
    ///     fn name(&self) -> &str { "ScaleBy" }
    ///     fn forward(&self, x: &[ArrayD<f32>]) -> ArrayD<f32> { &x[0] * &x[1] }
    ///     fn backward(&self, x: &[ArrayD<f32>], _y: &ArrayD<f32>, g: &ArrayD<f32>)
    ///         -> Vec<Option<ArrayD<f32>>> {
    ///         vec![Some(g * &x[1]), None] // dy/da = b
    ///     }
    /// }
    ///
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).set_requires_grad(true);
    /// let b = Tensor::from_vec(vec![3.0f32, 4.0], &[2]);
    /// let y = Tensor::apply_op(Arc::new(ScaleBy), &[a.clone(), b]);
    /// assert_eq!(y.to_vec(), vec![3.0, 8.0]);
    /// y.sum().backward();
    /// assert_eq!(a.grad().unwrap().to_vec(), vec![3.0, 4.0]);
    /// ```
    ///
    /// **Panics** if the op's backward returns the wrong number of gradients
    /// or a gradient of the wrong shape (naming the op).
    #[track_caller]
    pub fn apply_op(op: Arc<dyn CustomOp<T>>, inputs: &[Tensor<T>]) -> Tensor<T> {
        let arrays: Vec<ArrayD<T>> = inputs.iter().map(Tensor::to_array).collect();
        let out = Value::from_array(op.forward(&arrays));
        let refs: Vec<&Tensor<T>> = inputs.iter().collect();
        let mut saves: SmallVec<[Role; 2]> = (0..inputs.len()).map(Role::Input).collect();
        saves.push(Role::Output);
        let n = inputs.len();
        record(intern(op.name()), &refs, out, &saves, move |ctx, g| {
            let xs: Vec<Tensor<T>> = (0..n).map(|i| ctx.input(i)).collect();
            let arrays: Vec<ArrayD<T>> = xs.iter().map(Tensor::to_array).collect();
            let grads = op.backward(&arrays, &ctx.output().to_array(), &g.to_array());
            assert!(
                grads.len() == n,
                "CustomOp {}: backward returned {} gradients for {n} inputs",
                op.name(),
                grads.len()
            );
            grads
                .into_iter()
                .enumerate()
                .map(|(i, gi)| {
                    let gi = gi.filter(|_| ctx.needs_grad(i))?;
                    assert!(
                        gi.shape() == xs[i].shape(),
                        "CustomOp {}: backward returned a gradient of shape {:?} for input {i} of \
                         shape {:?}",
                        op.name(),
                        gi.shape(),
                        xs[i].shape()
                    );
                    Some(once_differentiable(op.name(), Tensor::from_array(gi), &g, &xs))
                })
                .collect()
        })
    }
}

/// `name` for as long as the process runs: node names are `&'static str`,
/// and a custom op's is the user's string. Each distinct name is kept once.
fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = lock(&NAMES);
    match names.get(name) {
        Some(&known) => known,
        None => {
            let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
            names.insert(leaked);
            leaked
        }
    }
}

/// Under `create_graph`, ties a CustomOp's gradient to what it was computed
/// from with a node that refuses to be differentiated, so that a second
/// derivative panics instead of being silently zero.
#[track_caller]
fn once_differentiable<T: Float>(name: &str, grad: Tensor<T>, g: &Tensor<T>, xs: &[Tensor<T>]) -> Tensor<T> {
    let mut from: Vec<&Tensor<T>> = vec![g];
    from.extend(xs);
    let name = name.to_string();
    record(
        "CustomOpBackwardBackward",
        &from,
        grad.value(),
        &[],
        move |_, _| {
            panic!(
                "CustomOp {name} is once-differentiable: its backward cannot be differentiated again \
             (create_graph through it)"
            )
        },
    )
}
