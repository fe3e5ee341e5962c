//! Neural-network building blocks: the [`Module`] trait and its layers.
//!
//! A module is a small struct whose parameters are tensors (cheap handles),
//! shared through `&self`: it clones cheaply and moves into a checkpoint
//! closure or another thread. Parameter names are PyTorch's `state_dict`
//! keys, so weights move between the two by name.

mod module;
mod weights;

pub use module::Module;
pub use weights::{load_safetensors, save_safetensors, WeightsError};
