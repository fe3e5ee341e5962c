//! The engine: the tape (nodes and the values they save), the backward
//! walk, grad mode, and the hook points its clients plug into
//! (checkpointing, users' saved-value hooks). It imports nothing from the
//! clients.

pub(crate) mod engine;
pub(crate) mod held;
pub(crate) mod hooks;
pub(crate) mod mode;
pub(crate) mod node;
pub(crate) mod tensor_hooks;
pub(crate) mod user_hooks;
