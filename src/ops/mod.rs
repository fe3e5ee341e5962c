//! The differentiable operations, one family per file. In each, an op's
//! forward computes the result and records a backward rule next to it.

pub(crate) mod attention;
pub(crate) mod binary;
pub(crate) mod broadcast;
pub(crate) mod compare;
pub(crate) mod conv;
pub(crate) mod custom;
pub(crate) mod flash;
pub(crate) mod index;
pub(crate) mod inplace;
pub(crate) mod kernels;
pub(crate) mod loss;
pub(crate) mod matmul;
pub(crate) mod nn;
pub(crate) mod norm;
pub(crate) mod parallel;
pub(crate) mod reduce;
pub(crate) mod shape;
pub(crate) mod sum;
pub(crate) mod unary;
