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
    ///
    /// ```
    /// use tapegrad::nn::{Linear, Module};
    /// use tapegrad::Tensor;
    /// let fc = Linear::<f32>::new(3, 2);
    /// let x = Tensor::ones(&[4, 3]); // a batch of 4
    /// let y = fc.forward(&x);
    /// assert_eq!(y.shape(), &[4, 2]);
    /// let by_hand = x.matmul(&fc.weight.t()) + fc.bias.as_ref().unwrap(); // x Wᵀ + b
    /// assert_eq!(y.to_vec(), by_hand.to_vec());
    /// ```
    fn forward(&self, x: &Tensor<T>) -> Tensor<T>;

    /// Every trainable tensor with its dotted name, in a fixed order:
    /// PyTorch's names (`"weight"`, `"bias"`; children `"0.weight"`,
    /// `"fc1.bias"`).
    ///
    /// ```
    /// use tapegrad::nn::{Linear, Module, ReLU, Sequential};
    /// let net = Sequential::<f32>::new().add(Linear::new(4, 3)).add(ReLU).add(Linear::new_no_bias(3, 1));
    /// let named: Vec<(String, Vec<usize>)> =
    ///     net.named_parameters().into_iter().map(|(n, t)| (n, t.shape().to_vec())).collect();
    /// assert_eq!(named, [
    ///     ("0.weight".to_string(), vec![3, 4]),
    ///     ("0.bias".to_string(), vec![3]),
    ///     ("2.weight".to_string(), vec![1, 3]),
    /// ]);
    /// ```
    fn named_parameters(&self) -> Vec<(String, Tensor<T>)>;

    /// The tensors of [`named_parameters`](Module::named_parameters), in
    /// the same order, each once: a tensor that appears under two names (a
    /// layer added to a model twice) is listed at its first, so that an
    /// optimizer does not update it twice (PyTorch's `parameters()` also
    /// skips duplicates; its `state_dict`, like `named_parameters` here,
    /// keeps every name).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tapegrad::nn::{Linear, Module, Sequential, Tanh};
    /// let shared = Arc::new(Linear::<f32>::new(2, 2));
    /// let net = Sequential::new().add(shared.clone()).add(Tanh).add(shared);
    /// assert_eq!(net.named_parameters().len(), 4); // both places by name
    /// assert_eq!(net.parameters().len(), 2); // each tensor once
    /// ```
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
    ///
    /// ```
    /// use tapegrad::nn::{Linear, Module, Sequential};
    /// use tapegrad::Tensor;
    ///
    /// /// Adds a fixed offset: saved with the weights, not trained.
    /// struct Shift { offset: Tensor<f32> }
    /// impl Module<f32> for Shift {
    ///     fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> { x + &self.offset }
    ///     fn named_parameters(&self) -> Vec<(String, Tensor<f32>)> { Vec::new() }
    ///     fn named_buffers(&self) -> Vec<(String, Tensor<f32>)> {
    ///         vec![("offset".to_string(), self.offset.clone())]
    ///     }
    /// }
    ///
    /// let net = Sequential::new().add(Linear::new(2, 2)).add(Shift { offset: Tensor::ones(&[2]) });
    /// let names: Vec<String> = net.named_buffers().into_iter().map(|(n, _)| n).collect();
    /// assert_eq!(names, ["1.offset"]);
    /// assert!(Linear::<f32>::new(2, 2).named_buffers().is_empty());
    /// ```
    fn named_buffers(&self) -> Vec<(String, Tensor<T>)> {
        Vec::new()
    }

    /// Switches training mode on or off (modules without a mode ignore it;
    /// containers forward it to their children).
    ///
    /// ```
    /// use tapegrad::nn::{Dropout, Linear, Module, Sequential};
    /// use tapegrad::Tensor;
    /// let net = Sequential::new().add(Linear::new(4, 4)).add(Dropout::new(0.5f32));
    /// let x = Tensor::ones(&[1, 4]);
    /// net.set_training(false); // reaches the Dropout inside
    /// assert_eq!(net.forward(&x).to_vec(), net.forward(&x).to_vec());
    /// ```
    fn set_training(&self, training: bool) {
        let _ = training;
    }

    /// `set_training(true)`.
    ///
    /// ```
    /// use tapegrad::nn::{Dropout, Module};
    /// use tapegrad::Tensor;
    /// let drop = Dropout::new(0.5f32);
    /// let x = Tensor::ones(&[1000]);
    /// drop.eval();
    /// drop.train(); // dropping again
    /// assert!(drop.forward(&x).to_vec().contains(&0.0));
    /// ```
    fn train(&self) {
        self.set_training(true);
    }

    /// `set_training(false)`: dropout becomes the identity.
    ///
    /// ```
    /// use tapegrad::nn::{Dropout, Module};
    /// use tapegrad::Tensor;
    /// let drop = Dropout::new(0.5f32);
    /// let x = Tensor::ones(&[1000]);
    /// drop.eval();
    /// assert_eq!(drop.forward(&x).to_vec(), x.to_vec());
    /// ```
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

/// `[("weight", w), ("bias", b)]`, without the bias when there is none: the
/// parameters of a layer with a weight and an optional bias.
pub(crate) fn weight_and_bias<T: Float>(w: &Tensor<T>, b: Option<&Tensor<T>>) -> Vec<(String, Tensor<T>)> {
    let mut params = vec![("weight".to_string(), w.clone())];
    params.extend(b.map(|b| ("bias".to_string(), b.clone())));
    params
}
