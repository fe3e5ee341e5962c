//! The tape: nodes, the backward walk, grad mode, gradient checking,
//! custom ops and saved-memory accounting.

pub(crate) mod custom;
pub(crate) mod engine;
pub(crate) mod gradcheck;
pub(crate) mod hooks;
pub mod memory;
pub(crate) mod mode;
pub(crate) mod node;
pub(crate) mod saved;
