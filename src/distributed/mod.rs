//! Data-parallel training, as PyTorch's `DistributedDataParallel`: every
//! worker (a rank) keeps a replica of the model and trains it on its shard
//! of each batch; during backward the gradients are averaged across the
//! ranks, so that every replica takes the same optimizer step.
//!
//! The workers talk through a [`ProcessGroup`]: [`ThreadGroup`] for
//! threads of one process (collectives over shared memory), and
//! `MpiGroup` (cargo feature `mpi`) for processes started by `mpirun`, on
//! one machine or many. [`DistributedDataParallel`] wraps a module; the
//! same training code runs over either.
//!
//! ```
//! use tapegrad::distributed::{DistributedDataParallel, ProcessGroup, ThreadGroup};
//! use tapegrad::nn::{Linear, Module};
//! use tapegrad::optim::{Optimizer, Sgd};
//! use tapegrad::Tensor;
//!
//! let x = Tensor::<f64>::randn(&[8, 3]);
//! let y = Tensor::<f64>::randn(&[8, 1]);
//! let workers: Vec<_> = ThreadGroup::new(2)
//!     .into_iter()
//!     .map(|group| {
//!         let (x, y) = (x.clone(), y.clone());
//!         std::thread::spawn(move || {
//!             let rank = group.rank();
//!             // Every rank builds the model; rank 0's weights win.
//!             let model = DistributedDataParallel::new(Linear::<f64>::new(3, 1), group);
//!             let mut opt = Sgd::new(model.parameters(), 0.1);
//!             // Each rank on its half of the batch.
//!             let (xs, ys) = (x.narrow(0, 4 * rank, 4), y.narrow(0, 4 * rank, 4));
//!             let loss = model.forward(&xs).mse_loss(&ys);
//!             opt.zero_grad();
//!             loss.backward(); // the gradients are averaged across ranks here
//!             opt.step();
//!             model.parameters().iter().map(|p| p.to_vec()).collect::<Vec<_>>()
//!         })
//!     })
//!     .collect();
//! let replicas: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
//! assert_eq!(replicas[0], replicas[1]); // the same step on both
//! ```

mod ddp;
#[cfg(feature = "mpi")]
mod mpi;
mod thread;

pub use ddp::{DdpOptions, DdpStats, DistributedDataParallel};
#[cfg(feature = "mpi")]
pub use mpi::MpiGroup;
pub use thread::ThreadGroup;

use crate::Float;
use std::fmt;

/// The workers of a data-parallel run and the collectives between them.
/// Every rank must call the same collectives in the same order with
/// buffers of the same length; a rank that fails makes the others' calls
/// return an error instead of waiting for it.
pub trait ProcessGroup: Send + Sync {
    /// This worker's index, `0..world_size()`.
    fn rank(&self) -> usize;

    /// How many workers there are.
    fn world_size(&self) -> usize;

    /// Replaces `buf` on every rank by the elementwise sum of every rank's
    /// `buf`; every rank gets the same values.
    fn all_reduce_sum(&self, buf: Elements<'_>) -> Result<(), CommError>;

    /// Replaces `buf` on every rank by rank `root`'s.
    fn broadcast(&self, buf: Elements<'_>, root: usize) -> Result<(), CommError>;

    /// Every rank's `bytes`, in rank order.
    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, CommError>;

    /// Tells the other ranks that this one failed (`reason`), so that
    /// their collectives end with [`CommError::PeerFailed`] instead of
    /// waiting for it. Called when a worker panics.
    fn fail(&self, reason: &str);
}

/// A buffer of either element type, for the collectives.
#[derive(Debug)]
pub enum Elements<'a> {
    /// `f32` values.
    F32(&'a mut [f32]),
    /// `f64` values.
    F64(&'a mut [f64]),
}

impl Elements<'_> {
    /// How many values.
    pub fn len(&self) -> usize {
        match self {
            Elements::F32(b) => b.len(),
            Elements::F64(b) => b.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type's name (`"f32"`, `"f64"`).
    pub fn dtype(&self) -> &'static str {
        match self {
            Elements::F32(_) => f32::DTYPE,
            Elements::F64(_) => f64::DTYPE,
        }
    }
}

/// An element type the collectives carry: `f32` and `f64`.
pub trait Element: Float {
    /// `buf` as [`Elements`].
    fn elements(buf: &mut [Self]) -> Elements<'_>;
}

impl Element for f32 {
    fn elements(buf: &mut [f32]) -> Elements<'_> {
        Elements::F32(buf)
    }
}

impl Element for f64 {
    fn elements(buf: &mut [f64]) -> Elements<'_> {
        Elements::F64(buf)
    }
}

/// Why a collective did not complete.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CommError {
    /// Rank `rank` failed (panicked, or called [`ProcessGroup::fail`]).
    PeerFailed {
        /// The rank that failed.
        rank: usize,
        /// What it said.
        reason: String,
    },
    /// Rank `rank` left the group (dropped its member) while the others
    /// still called collectives.
    PeerLeft {
        /// The rank that left.
        rank: usize,
    },
    /// The ranks called different collectives, or with buffers of
    /// different lengths or element types.
    Mismatch {
        /// What each rank called, in rank order.
        calls: Vec<String>,
    },
    /// The others did not arrive within the group's timeout.
    Timeout {
        /// The ranks that had not arrived.
        missing: Vec<usize>,
        /// The timeout, in seconds.
        seconds: f64,
    },
    /// The transport (MPI) reported an error.
    Transport(String),
}

impl fmt::Display for CommError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommError::PeerFailed { rank, reason } => write!(f, "rank {rank} failed: {reason}"),
            CommError::PeerLeft { rank } => {
                write!(
                    f,
                    "rank {rank} left the group while the others were still calling collectives"
                )
            }
            CommError::Mismatch { calls } => {
                write!(f, "the ranks called different collectives: ")?;
                for (rank, call) in calls.iter().enumerate() {
                    write!(f, "{}rank {rank}: {call}", if rank > 0 { "; " } else { "" })?;
                }
                Ok(())
            }
            CommError::Timeout { missing, seconds } => {
                write!(f, "ranks {missing:?} did not arrive within {seconds} s")
            }
            CommError::Transport(msg) => write!(f, "transport error: {msg}"),
        }
    }
}

impl std::error::Error for CommError {}

/// A shared group is a group: several wrapped modules (or a module and
/// the caller's own collectives) can use one.
///
/// ```
/// use std::sync::Arc;
/// use tapegrad::distributed::{DistributedDataParallel, ProcessGroup, ThreadGroup};
/// use tapegrad::nn::Linear;
/// let group = Arc::new(ThreadGroup::new(1).pop().unwrap());
/// let encoder = DistributedDataParallel::new(Linear::<f32>::new(4, 2), group.clone());
/// let decoder = DistributedDataParallel::new(Linear::<f32>::new(2, 4), group.clone());
/// assert_eq!(group.world_size(), 1);
/// ```
impl<G: ProcessGroup + ?Sized> ProcessGroup for std::sync::Arc<G> {
    fn rank(&self) -> usize {
        (**self).rank()
    }
    fn world_size(&self) -> usize {
        (**self).world_size()
    }
    fn all_reduce_sum(&self, buf: Elements<'_>) -> Result<(), CommError> {
        (**self).all_reduce_sum(buf)
    }
    fn broadcast(&self, buf: Elements<'_>, root: usize) -> Result<(), CommError> {
        (**self).broadcast(buf, root)
    }
    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, CommError> {
        (**self).all_gather_bytes(bytes)
    }
    fn fail(&self, reason: &str) {
        (**self).fail(reason)
    }
}
