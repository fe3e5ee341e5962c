//! The differentiable operations, one family per file. In each, an op's
//! forward computes the result and records a backward rule next to it.

pub(crate) mod binary;
pub(crate) mod broadcast;
pub(crate) mod kernels;
pub(crate) mod matmul;
pub(crate) mod reduce;
pub(crate) mod shape;
pub(crate) mod unary;
