//! The crate's random number generator: one per thread, as Rust's
//! `thread_rng`, so tests in parallel threads cannot disturb each other.

use crate::{pool, Float};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;

thread_local! {
    static RNG: RefCell<StdRng> = RefCell::new(StdRng::from_os_rng());
}

/// Seeds this thread's generator (used by `randn`, `rand` and `dropout`).
///
/// ```
/// use tapegrad::prelude::*;
/// tapegrad::manual_seed(7);
/// let a = Tensor::<f32>::randn(&[4]).to_vec();
/// tapegrad::manual_seed(7);
/// assert_eq!(a, Tensor::<f32>::randn(&[4]).to_vec());
/// ```
pub fn manual_seed(seed: u64) {
    RNG.with(|r| *r.borrow_mut() = StdRng::seed_from_u64(seed));
}

/// A random permutation of `0..n` from this thread's generator
/// (`torch.randperm`), every order equally likely (a Fisher-Yates
/// shuffle); [`manual_seed`] reproduces it. For shuffling the rows of a
/// data set each epoch.
///
/// ```
/// tapegrad::manual_seed(3);
/// let p = tapegrad::randperm(5);
/// let mut sorted = p.clone();
/// sorted.sort();
/// assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
/// tapegrad::manual_seed(3);
/// assert_eq!(tapegrad::randperm(5), p);
/// ```
pub fn randperm(n: usize) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..n).collect();
    with_rng(|r| perm.shuffle(r));
    perm
}

/// Runs `f` with this thread's generator.
pub(crate) fn with_rng<R>(f: impl FnOnce(&mut StdRng) -> R) -> R {
    RNG.with(|r| f(&mut r.borrow_mut()))
}

/// `n` samples uniform in [0, 1).
///
/// **Panics** if the memory cannot be had ([`pool::take`]).
#[track_caller]
pub(crate) fn uniform<T: Float>(n: usize) -> Vec<T> {
    let mut out = pool::take(n);
    with_rng(|r| out.extend((0..n).map(|_| T::of(r.random::<f64>()))));
    out
}

/// `n` samples from the standard normal distribution (Box-Muller).
///
/// **Panics** if the memory cannot be had ([`pool::take`]).
#[track_caller]
pub(crate) fn normal<T: Float>(n: usize) -> Vec<T> {
    let mut out = pool::take(n);
    with_rng(|r| {
        while out.len() < n {
            // 1 - u lies in (0, 1], so the logarithm is finite.
            let u1: f64 = 1.0 - r.random::<f64>();
            let u2: f64 = r.random::<f64>();
            let radius = (-2.0 * u1.ln()).sqrt();
            let angle = std::f64::consts::TAU * u2;
            out.push(T::of(radius * angle.cos()));
            // Two samples per draw; an odd count leaves the last one out.
            if out.len() < n {
                out.push(T::of(radius * angle.sin()));
            }
        }
    });
    out
}

/// A copy of this thread's generator, for a checkpoint to replay.
pub(crate) fn snapshot() -> StdRng {
    RNG.with(|r| r.borrow().clone())
}

/// Draws from `generator` instead of this thread's generator until dropped;
/// the thread's own stream is then back where it was.
pub(crate) struct Replay {
    live: Option<StdRng>,
}

impl Replay {
    pub(crate) fn new(generator: StdRng) -> Self {
        Replay {
            live: Some(RNG.with(|r| r.replace(generator))),
        }
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        if let Some(live) = self.live.take() {
            RNG.with(|r| *r.borrow_mut() = live);
        }
    }
}
