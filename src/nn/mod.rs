//! Neural-network building blocks: the [`Module`] trait and its layers.
//!
//! A module is a small struct whose parameters are tensors (cheap handles),
//! shared through `&self`: it clones cheaply and moves into a checkpoint
//! closure or another thread. Parameter names are PyTorch's `state_dict`
//! keys, so weights move between the two by name.
//!
//! ```
//! use tapegrad::nn::{Conv2d, Flatten, Linear, MaxPool2d, Module, ReLU, Sequential};
//! use tapegrad::Tensor;
//!
//! tapegrad::manual_seed(0);
//! let cnn = Sequential::new()
//!     .add(Conv2d::new(1, 16, 3).padding(1))
//!     .add(ReLU)
//!     .add(MaxPool2d::new(2))
//!     .add(Flatten)
//!     .add(Linear::new(16 * 4 * 4, 10));
//! let images = Tensor::<f32>::randn(&[8, 1, 8, 8]);
//! let loss = cnn.forward(&images).cross_entropy(&[0, 1, 2, 3, 4, 5, 6, 7]);
//! loss.backward();
//! assert!(cnn.parameters().iter().all(|p| p.grad().is_some()));
//! ```
//!
//! The layers' ops are also [`Tensor`](crate::Tensor) methods:
//! [`conv2d`](crate::Tensor::conv2d), [`max_pool2d`](crate::Tensor::max_pool2d),
//! [`layer_norm`](crate::Tensor::layer_norm),
//! [`embedding`](crate::Tensor::embedding); attention's are in
//! [`functional`].

mod activation;
mod attention;
mod container;
mod conv;
mod dropout;
mod embedding;
pub mod functional;
mod init;
mod linear;
mod module;
mod norm;
mod packing;
mod transformer;
mod utils;
mod weights;

pub use activation::{Flatten, ReLU, Sigmoid, Tanh, GELU};
pub use attention::MultiheadAttention;
pub use container::Sequential;
pub use conv::{Conv2d, MaxPool2d};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use linear::Linear;
pub use module::{name_parameters, Module};
pub use norm::LayerNorm;
pub use transformer::TransformerBlock;
pub use utils::clip_grad_norm;
pub use weights::{load_safetensors, save_safetensors, WeightsError};
