//! What is held for backward, and as what: the [`Held`] value (counted in
//! [`memory::saved_bytes`](crate::memory::saved_bytes) while it lives), its
//! element-type-erased form [`AnyHeld`] that saved-value hooks handle, and
//! the [`Role`] of a saved value to its op.

use crate::memory;
use crate::storage::Value;
use crate::Float;
use std::any::Any;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What a saved value is to the op that saved it; an op lists what it
/// saves by role.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Role {
    Input(usize),
    Output,
}

impl fmt::Display for Role {
    /// "input 0", "output".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Input(i) => write!(f, "input {i}"),
            Role::Output => f.write_str("output"),
        }
    }
}

/// A value held for backward, counted in `memory::saved_bytes` while it
/// lives.
pub(crate) struct Held<T: Float> {
    pub(crate) value: Value<T>,
}

impl<T: Float> Held<T> {
    pub(crate) fn new(value: Value<T>) -> Self {
        memory::count_saved(&value.buf);
        Held { value }
    }
}

impl<T: Float> Clone for Held<T> {
    fn clone(&self) -> Self {
        Held::new(self.value.clone())
    }
}

impl<T: Float> Drop for Held<T> {
    fn drop(&mut self) {
        memory::uncount_saved(&self.value.buf);
    }
}

/// A [`Held`] value of any element type: what saved-value hooks receive
/// and return, so that one hook serves `f32` and `f64` alike.
pub(crate) trait AnyHeld: Send + Sync {
    /// The `Held<T>` itself, to downcast.
    fn as_any(&self) -> &dyn Any;
    /// Another counted handle to the same data.
    fn share(&self) -> Box<dyn AnyHeld>;
    /// `"f32"` or `"f64"`.
    fn dtype(&self) -> &'static str;
    fn shape(&self) -> &[usize];
    /// The identity of the buffer behind it.
    fn buffer_id(&self) -> usize;
    /// The bytes of the whole buffer behind it.
    fn bytes(&self) -> usize;
    /// Whether holding it adds its buffer to `memory::saved_bytes` (a
    /// buffer made by an op, not yet held by anything else saved).
    fn adds_bytes(&self) -> bool;
}

impl<T: Float> AnyHeld for Held<T> {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn share(&self) -> Box<dyn AnyHeld> {
        Box::new(self.clone())
    }
    fn dtype(&self) -> &'static str {
        T::DTYPE
    }
    fn shape(&self) -> &[usize] {
        &self.value.shape
    }
    fn buffer_id(&self) -> usize {
        Arc::as_ptr(&self.value.buf) as usize
    }
    fn bytes(&self) -> usize {
        self.value.buf.bytes()
    }
    fn adds_bytes(&self) -> bool {
        let buf = &self.value.buf;
        // This handle is one of the saved references already.
        buf.countable.load(Ordering::Relaxed) && buf.saved_refs.load(Ordering::Acquire) == 1
    }
}

/// The value inside an erased [`Held`] of element type `T`.
///
/// **Panics**, naming `op`, if it has another element type.
pub(crate) fn value_of<T: Float>(held: &dyn AnyHeld, op: &str) -> Value<T> {
    match held.as_any().downcast_ref::<Held<T>>() {
        Some(h) => h.value.clone(),
        None => panic!(
            "{op}: a saved value came back as {} where {} was saved",
            held.dtype(),
            T::DTYPE
        ),
    }
}
