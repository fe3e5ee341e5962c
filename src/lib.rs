//! # tapegrad
//!
//! Define-by-run (eager, PyTorch-style) reverse-mode automatic
//! differentiation on n-dimensional tensors.
//!
//! Every operation on a [`Tensor`] that requires grad is recorded onto a tape
//! (a graph of backward nodes owned by the tensors); [`Tensor::backward`]
//! walks it in reverse and accumulates gradients into the leaves.
//!
//! ```
//! use tapegrad::prelude::*;
//!
//! let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3]).set_requires_grad(true);
//! let y = (&x * &x + &x * 2.0).sum(); // y = Σ (x² + 2x)
//! y.backward();
//! assert_eq!(x.grad().unwrap().to_vec(), vec![4.0, 6.0, 8.0]); // dy/dx = 2x + 2
//! ```
//!
//! The concepts, in the crate's own words:
//! - **Leaves** are tensors with no history: made by constructors, by
//!   [`Tensor::detach`], or under [`no_grad`]. A leaf that
//!   [requires grad](Tensor::set_requires_grad) receives gradients in
//!   [`Tensor::grad`]; they **accumulate** across backwards until
//!   [`Tensor::zero_grad`].
//! - **Non-leaves** are results of recorded ops. Each points to its backward
//!   node ([`Tensor::grad_fn_name`]), whose rule reads the values the op
//!   saved.
//! - Saved values are freed by backward unless `retain_graph`;
//!   `create_graph` records the backward itself, for higher derivatives.

#![warn(missing_docs)]

mod autograd;
mod checkpoint;
pub mod data;
pub mod distributed;
mod error;
mod float;
mod gradcheck;
mod layout;
pub mod memory;
pub mod nn;
mod ops;
pub mod optim;
mod pool;
mod rng;
mod storage;
mod sync;
mod tensor;
#[cfg(feature = "proptest")]
pub mod testing;
pub mod viz;

pub use autograd::engine::{grad, BackwardOptions, GradOptions};
pub use autograd::mode::{detect_anomaly, enable_grad, is_grad_enabled, no_grad, GradModeGuard, NoGradGuard};
pub use autograd::tensor_hooks::HookHandle;
pub use autograd::user_hooks::{saved_tensors_hooks, SaveContext, SavedTensorsHooks};
pub use checkpoint::{
    checkpoint, checkpoint_many, checkpoint_many_with, checkpoint_planned, checkpoint_sequential,
    checkpoint_sequential_with, checkpoint_with, plan_checkpoints, print_saved_residuals, profile_layers,
    recompute_counts, saved_residuals, try_plan_checkpoints, BudgetError, CheckpointOptions,
    CheckpointPolicy, Layer, LayerProfile, Plan, RecomputeCounts, SavedResidual, Segment,
};
pub use error::TensorError;
pub use float::Float;
pub use gradcheck::{gradcheck, GradcheckError, GradcheckOptions};
pub use ndarray;
pub use ops::custom::CustomOp;
pub use rng::{manual_seed, randperm};
pub use tensor::Tensor;

/// `use tapegrad::prelude::*;` brings in the types and functions of the API.
pub mod prelude {
    pub use crate::{
        checkpoint, checkpoint_many, checkpoint_many_with, checkpoint_planned, checkpoint_sequential,
        checkpoint_with, enable_grad, grad, gradcheck, is_grad_enabled, manual_seed, no_grad,
        plan_checkpoints, print_saved_residuals, randperm, saved_residuals, BackwardOptions,
        CheckpointOptions, CheckpointPolicy, CustomOp, Float, GradOptions, GradcheckError, GradcheckOptions,
        NoGradGuard, SavedTensorsHooks, Tensor,
    };
}

/// The README's example, compiled and run as a doc-test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

// The guide's chapters (docs/guide/), each compiled and run as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/01-tensors-and-leaves.md")]
struct GuideTensorsAndLeaves;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/02-the-tape.md")]
struct GuideTheTape;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/03-backward-step-by-step.md")]
struct GuideBackwardStepByStep;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/04-broadcasting.md")]
struct GuideBroadcasting;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/05-higher-order-gradients.md")]
struct GuideHigherOrderGradients;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/06-hooks-and-anomaly-mode.md")]
struct GuideHooksAndAnomalyMode;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/07-saved-values-and-checkpointing.md")]
struct GuideSavedValuesAndCheckpointing;
// Its proptest properties use tapegrad::testing, on in `cargo test` (the
// crate's dev-dependency on itself turns the feature on).
#[cfg(all(doctest, feature = "proptest"))]
#[doc = include_str!("../docs/guide/08-custom-ops.md")]
struct GuideCustomOps;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/09-training-loop.md")]
struct GuideTrainingLoop;

// docs/guide/make.py runs the guide's blocks from a copy of its own, to
// print their output into the chapters (see there).
#[cfg(all(doctest, guide_outputs))]
#[doc = include_str!("../target/guide/outputs.md")]
struct GuideOutputs;
