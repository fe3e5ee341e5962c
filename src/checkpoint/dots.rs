//! `SaveDots`: a checkpoint's forward keeps the output of every matrix
//! product it records, and its re-runs take them back in order instead of
//! multiplying again (JAX's `checkpoint_dots`). The products are the ops
//! that ask the engine's product hook point; nothing here knows their names.

use super::frame::Frame;
use super::inspect::Inspect;
use crate::autograd::held::AnyHeld;
use crate::autograd::hooks::{self, ProductInfo};
use crate::sync::lock;
use std::sync::Arc;

/// A product's output kept by a frame: held (counted in
/// `memory::saved_bytes`) and shared with the re-runs that reuse it.
pub(super) type Kept = Arc<dyn AnyHeld>;

/// Computes a product in a `SaveDots` forward and keeps it.
pub(super) fn keep(
    frame: &Frame,
    info: &ProductInfo,
    compute: &mut dyn FnMut() -> Box<dyn AnyHeld>,
) -> Box<dyn AnyHeld> {
    let held = compute();
    // An inspection around the checkpoint lists what it keeps.
    if let Some(outer) = hooks::stack().iter().rev().nth(1) {
        if let Some(inspect) = outer.as_any().downcast_ref::<Inspect>() {
            let role = format!("output, kept by checkpoint #{}", frame.id);
            inspect.note(info.op, role, &*held);
        }
    }
    lock(&frame.kept).push(Arc::from(held.share()));
    held
}

/// A re-run's supply of kept products, handed out in forward order.
pub(super) struct DotReplay {
    frame: u64,
    kept: Vec<Kept>,
    next: usize,
    /// A re-run for a backward inside the forward: it goes past the
    /// products kept so far, and computes those.
    partial: bool,
}

impl DotReplay {
    /// The products `frame` has kept so far.
    pub(super) fn new(frame: &Frame, partial: bool) -> Self {
        DotReplay {
            frame: frame.id,
            kept: lock(&frame.kept).clone(),
            next: 0,
            partial,
        }
    }

    /// The next kept product, checked against the one the re-run is about
    /// to compute; `None` past the kept ones in a partial re-run.
    pub(super) fn take(&mut self, info: &ProductInfo) -> Option<Box<dyn AnyHeld>> {
        let i = self.next;
        if self.partial && i == self.kept.len() {
            return None;
        }
        let kept = self.kept.get(i).unwrap_or_else(|| {
            panic!(
                "checkpoint #{}: the re-run in backward computed more matrix products than the \
                 forward kept ({}); the checkpointed function must compute the same ops when run again",
                self.frame,
                self.kept.len()
            )
        });
        assert!(
            kept.dtype() == info.dtype && kept.shape() == info.shape,
            "checkpoint #{}: matrix product {i} was {} of shape {:?} in the forward but {} of shape \
             {:?} in the re-run; the checkpointed function must compute the same ops when run again",
            self.frame,
            kept.dtype(),
            kept.shape(),
            info.dtype,
            info.shape
        );
        self.next += 1;
        Some(kept.share())
    }

    /// After a whole re-run: panics unless it took every kept product.
    pub(super) fn finish(&self) {
        assert!(
            self.partial || self.next == self.kept.len(),
            "checkpoint #{}: the re-run in backward computed {} matrix products but the forward kept \
             {}; the checkpointed function must compute the same ops when run again",
            self.frame,
            self.next,
            self.kept.len()
        );
    }
}
