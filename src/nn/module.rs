//! The [`Module`] trait.

use crate::{Float, Tensor};
use std::collections::HashSet;
use std::sync::Arc;

/// A layer or a model: a forward function and the tensors it trains.
///
/// Every method takes `&self`: modules are shared (`Arc<dyn Module<T>>`
/// moves into a checkpoint closure or another thread), so a mode flag lives
/// in an atomic. Modules start in training mode.
///
/// ```
/// use tapegrad::nn::Module;
/// use tapegrad::prelude::*;
///
/// /// y = x · w, one parameter.
/// struct Scale { w: Tensor<f32> }
/// impl Module<f32> for Scale {
///     fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> { x * &self.w }
///     fn named_parameters(&self) -> Vec<(String, Tensor<f32>)> {
///         vec![("weight".to_string(), self.w.clone())]
///     }
/// }
///
/// let m = Scale { w: Tensor::full(&[1], 2.0).set_requires_grad(true) };
/// assert_eq!(m.forward(&Tensor::full(&[1], 3.0)).item(), 6.0);
/// assert_eq!(m.parameters().len(), 1);
/// assert!(m.named_buffers().is_empty());
/// ```
pub trait Module<T: Float = f32>: Send + Sync {
    /// The output for input `x`.
    fn forward(&self, x: &Tensor<T>) -> Tensor<T>;

    /// Every trainable tensor with its dotted name, in a fixed order:
    /// PyTorch's names (`"weight"`, `"bias"`; children `"0.weight"`,
    /// `"fc1.bias"`).
    fn named_parameters(&self) -> Vec<(String, Tensor<T>)>;

    /// The tensors of [`named_parameters`](Module::named_parameters), in
    /// the same order, each once: a tensor that appears under two names (a
    /// layer added to a model twice) is listed at its first, so that an
    /// optimizer does not update it twice (PyTorch's `parameters()` also
    /// skips duplicates; its `state_dict`, like `named_parameters` here,
    /// keeps every name).
    fn parameters(&self) -> Vec<Tensor<T>> {
        let mut seen = HashSet::new();
        self.named_parameters()
            .into_iter()
            .map(|(_, t)| t)
            .filter(|t| seen.insert(Arc::as_ptr(&t.inner)))
            .collect()
    }

    /// State saved with the weights but not trained, with dotted names
    /// (none by default).
    fn named_buffers(&self) -> Vec<(String, Tensor<T>)> {
        Vec::new()
    }

    /// Switches training mode on or off (modules without a mode ignore it;
    /// containers forward it to their children).
    fn set_training(&self, training: bool) {
        let _ = training;
    }

    /// `set_training(true)`.
    fn train(&self) {
        self.set_training(true);
    }

    /// `set_training(false)`: dropout becomes the identity.
    fn eval(&self) {
        self.set_training(false);
    }
}

/// A shared module is a module: `Arc<dyn Module<T>>` (or an `Arc` of any
/// module) forwards every method to the module inside, so it can be added
/// to a [`Sequential`](crate::nn::Sequential), moved into a checkpoint
/// closure or sent to another thread.
///
/// ```
/// use std::sync::Arc;
/// use tapegrad::nn::{Linear, Module};
/// use tapegrad::Tensor;
///
/// let model: Arc<dyn Module<f32>> = Arc::new(Linear::new(3, 2));
/// let worker = {
///     let model = model.clone();
///     std::thread::spawn(move || model.forward(&Tensor::ones(&[1, 3])).shape().to_vec())
/// };
/// assert_eq!(worker.join().unwrap(), [1, 2]);
/// assert_eq!(model.parameters().len(), 2);
/// ```
impl<T: Float, M: Module<T> + ?Sized> Module<T> for Arc<M> {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        (**self).forward(x)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        (**self).named_parameters()
    }

    fn parameters(&self) -> Vec<Tensor<T>> {
        (**self).parameters()
    }

    fn named_buffers(&self) -> Vec<(String, Tensor<T>)> {
        (**self).named_buffers()
    }

    fn set_training(&self, training: bool) {
        (**self).set_training(training);
    }
}

/// Names every parameter of `module` after [`named_parameters`]
/// (`"weight"`, `"0.bias"`), so that printouts of the tape
/// ([`viz::tape`](crate::viz::tape)) show them by name. The layers of this
/// crate call it when they are made and [`Sequential`](crate::nn::Sequential)
/// when a child is added (so a nested parameter ends up with its full
/// path); call it on a module of your own.
///
/// [`named_parameters`]: Module::named_parameters
///
/// ```
/// use tapegrad::nn::{Linear, Module, ReLU, Sequential};
/// let model = Sequential::<f32>::new().add(Linear::new(2, 3)).add(ReLU).add(Linear::new(3, 1));
/// assert_eq!(model.parameters()[2].name().as_deref(), Some("2.weight"));
/// ```
pub fn name_parameters<T: Float>(module: &dyn Module<T>) {
    for (name, p) in module.named_parameters() {
        p.with_name(&name);
    }
}
