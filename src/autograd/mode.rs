//! Grad mode: whether ops record onto the tape. Thread-local, like PyTorch's.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
    static ANOMALY: Cell<bool> = const { Cell::new(false) };
}

/// How many threads are inside [`detect_anomaly`]: while none is, an op
/// and a backward node pay one load to know it.
static ANOMALY_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Whether ops on this thread are being recorded for backward.
///
/// ```
/// assert!(tapegrad::is_grad_enabled());
/// tapegrad::no_grad(|| assert!(!tapegrad::is_grad_enabled()));
/// ```
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(Cell::get)
}

/// Sets grad mode on this thread until the guard drops, then restores the
/// previous mode (also when unwinding from a panic).
///
/// ```
/// use tapegrad::{is_grad_enabled, GradModeGuard};
/// {
///     let _off = GradModeGuard::new(false);
///     assert!(!is_grad_enabled());
///     {
///         let _on = GradModeGuard::new(true);
///         assert!(is_grad_enabled());
///     }
///     assert!(!is_grad_enabled()); // the inner guard restored "off"
/// }
/// assert!(is_grad_enabled());
/// ```
#[must_use = "grad mode is restored as soon as the guard drops"]
pub struct GradModeGuard {
    prev: bool,
}

impl GradModeGuard {
    /// Sets grad mode to `enabled` for this guard's lifetime.
    ///
    /// ```
    /// use tapegrad::{GradModeGuard, Tensor};
    /// let x = Tensor::<f32>::ones(&[2]).set_requires_grad(true);
    /// let guard = GradModeGuard::new(false);
    /// assert!((&x * 2.0).is_leaf()); // not recorded
    /// drop(guard);
    /// assert!(!(&x * 2.0).is_leaf());
    /// ```
    pub fn new(enabled: bool) -> Self {
        let prev = GRAD_ENABLED.with(|g| g.replace(enabled));
        GradModeGuard { prev }
    }
}

impl Drop for GradModeGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.prev));
    }
}

/// A guard that turns recording off on this thread while it lives
/// (`torch.no_grad()` as an RAII value).
///
/// ```
/// use tapegrad::prelude::*;
/// let x = Tensor::<f32>::ones(&[2]).set_requires_grad(true);
/// let y = {
///     let _guard = NoGradGuard::new();
///     &x * 2.0
/// };
/// assert!(!y.requires_grad() && y.is_leaf());
/// ```
#[must_use = "grad mode is restored as soon as the guard drops"]
pub struct NoGradGuard {
    _mode: GradModeGuard,
}

impl NoGradGuard {
    /// Turns recording off until the guard drops.
    ///
    /// ```
    /// use tapegrad::{is_grad_enabled, NoGradGuard};
    /// let guard = NoGradGuard::new();
    /// assert!(!is_grad_enabled());
    /// drop(guard);
    /// assert!(is_grad_enabled());
    /// ```
    pub fn new() -> Self {
        NoGradGuard {
            _mode: GradModeGuard::new(false),
        }
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `f` with recording off on this thread: its results are leaves with
/// no history. Grad mode is restored afterwards, even if `f` panics.
///
/// ```
/// use tapegrad::prelude::*;
/// let w = Tensor::<f32>::ones(&[3]).set_requires_grad(true);
/// let y = tapegrad::no_grad(|| &w * 3.0);
/// assert!(!y.requires_grad());
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = GradModeGuard::new(false);
    f()
}

/// Runs `f` with recording on (inside a [`no_grad`] scope, for example).
///
/// ```
/// use tapegrad::{enable_grad, no_grad, Tensor};
/// let x = Tensor::<f32>::ones(&[2]).set_requires_grad(true);
/// let (off, on) = no_grad(|| (&x * 2.0, enable_grad(|| &x * 2.0)));
/// assert!(!off.requires_grad());
/// assert_eq!(on.grad_fn_name().as_deref(), Some("MulBackward"));
/// ```
pub fn enable_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = GradModeGuard::new(true);
    f()
}

/// Runs `f` in anomaly mode on this thread (PyTorch's
/// `torch.autograd.detect_anomaly`): ops record where they were called,
/// and a backward node whose rule produces NaN panics, naming its op and
/// the file, line and column of the forward call. Outside, it costs
/// nothing but a load per op.
///
/// ```should_panic
/// use tapegrad::prelude::*;
/// let x = Tensor::from_vec(vec![0.0f64, 1.0], &[2]).set_requires_grad(true);
/// tapegrad::detect_anomaly(|| {
///     let y = x.sqrt().sum(); // d sqrt(x)/dx at 0 is inf; times 0 below: NaN
///     (&y * 0.0).backward();
/// });
/// ```
///
/// The panic reads like
/// `detect_anomaly: SqrtBackward returned NaN values in its gradient for
/// input 0 (shape [2]); the forward op was called at src/main.rs:5:15`.
///
/// **Panics** in a backward run inside `f` when a node's rule returns a
/// gradient holding NaN (that is its purpose).
pub fn detect_anomaly<R>(f: impl FnOnce() -> R) -> R {
    struct Guard(bool);
    impl Drop for Guard {
        fn drop(&mut self) {
            ANOMALY.with(|a| a.set(self.0));
            ANOMALY_THREADS.fetch_sub(1, Ordering::Relaxed);
        }
    }
    ANOMALY_THREADS.fetch_add(1, Ordering::Relaxed);
    let _guard = Guard(ANOMALY.with(|a| a.replace(true)));
    f()
}

/// Whether anomaly mode is on for this thread.
#[inline(always)]
pub(crate) fn anomaly_checks() -> bool {
    ANOMALY_THREADS.load(Ordering::Relaxed) > 0 && ANOMALY.with(Cell::get)
}
