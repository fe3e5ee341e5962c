//! `Sequential`: modules applied one after another.

use crate::nn::{name_parameters, Module};
use crate::{Float, Tensor};
use std::fmt;
use std::sync::Arc;

/// Modules applied in order, each to the previous one's output
/// (`torch.nn.Sequential`). Children are named `"0"`, `"1"`, ... by
/// position, so parameter names are PyTorch's `state_dict` keys
/// (`"0.weight"`, `"2.bias"`; a nested container adds its own prefix,
/// `"1.0.weight"`). [`set_training`](Module::set_training) reaches every
/// child.
///
/// Children are shared handles: cloning a `Sequential` is cheap and the
/// clone shares parameters and training mode with the original.
///
/// ```
/// use tapegrad::nn::{Linear, Module, ReLU, Sequential};
/// use tapegrad::Tensor;
///
/// let mlp = Sequential::new().add(Linear::new(2, 8)).add(ReLU).add(Linear::new(8, 1));
/// let y = mlp.forward(&Tensor::<f32>::ones(&[5, 2]));
/// assert_eq!(y.shape(), &[5, 1]);
/// let names: Vec<String> = mlp.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias"]);
/// ```
pub struct Sequential<T: Float = f32> {
    children: Vec<Arc<dyn Module<T>>>,
}

impl<T: Float> Sequential<T> {
    /// An empty container (its forward is the identity).
    ///
    /// ```
    /// use tapegrad::nn::{Module, Sequential};
    /// let x = tapegrad::Tensor::<f32>::ones(&[2]);
    /// assert_eq!(Sequential::new().forward(&x).to_vec(), x.to_vec());
    /// ```
    #[track_caller]
    pub fn new() -> Self {
        Sequential { children: Vec::new() }
    }

    /// Appends `module` as the next child, named by its position.
    ///
    /// An `Arc` of a module is a module too, so one layer can be added to
    /// two containers (its parameters are then shared).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tapegrad::nn::{Linear, Module, Sequential, Tanh};
    ///
    /// let shared = Arc::new(Linear::<f32>::new(3, 3));
    /// let net = Sequential::new().add(shared.clone()).add(Tanh).add(shared);
    /// assert_eq!(net.named_parameters().len(), 4); // "0.weight", "0.bias", "2.weight", "2.bias"
    /// ```
    #[allow(clippy::should_implement_trait)] // PyTorch's name; not `+`
    #[track_caller]
    pub fn add(mut self, module: impl Module<T> + 'static) -> Self {
        self.children.push(Arc::new(module));
        name_parameters(&self);
        self
    }
}

impl<T: Float> Default for Sequential<T> {
    #[track_caller]
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> Clone for Sequential<T> {
    /// Another handle to the same children (parameters and mode shared).
    #[track_caller]
    fn clone(&self) -> Self {
        Sequential {
            children: self.children.clone(),
        }
    }
}

impl<T: Float> fmt::Debug for Sequential<T> {
    /// The parameters by name and shape.
    #[track_caller]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params: Vec<(String, Vec<usize>)> = self
            .named_parameters()
            .into_iter()
            .map(|(name, t)| (name, t.shape().to_vec()))
            .collect();
        f.debug_struct("Sequential")
            .field("children", &self.children.len())
            .field("parameters", &params)
            .finish()
    }
}

/// `"{prefix}.{name}"` for each entry.
#[track_caller]
fn prefixed<T: Float>(
    prefix: usize,
    entries: Vec<(String, Tensor<T>)>,
) -> impl Iterator<Item = (String, Tensor<T>)> {
    entries
        .into_iter()
        .map(move |(name, t)| (format!("{prefix}.{name}"), t))
}

impl<T: Float> Module<T> for Sequential<T> {
    #[track_caller]
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        let mut h = x.clone();
        for child in &self.children {
            h = child.forward(&h);
        }
        h
    }

    #[track_caller]
    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        self.children
            .iter()
            .enumerate()
            .flat_map(|(i, child)| prefixed(i, child.named_parameters()))
            .collect()
    }

    #[track_caller]
    fn named_buffers(&self) -> Vec<(String, Tensor<T>)> {
        self.children
            .iter()
            .enumerate()
            .flat_map(|(i, child)| prefixed(i, child.named_buffers()))
            .collect()
    }

    #[track_caller]
    fn set_training(&self, training: bool) {
        for child in &self.children {
            child.set_training(training);
        }
    }
}
