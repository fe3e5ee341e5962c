//! Values saved for backward.
//!
//! An op names what it saves by [`Role`] (an input, or its output). The
//! node keeps each as a [`Saved`]: the role, the version of the tensor it
//! came from (to refuse a value changed in place since), and the data,
//! either held as is (a [`Held`] value, counted in
//! [`memory::saved_bytes`](crate::memory::saved_bytes)) or as the saved-value
//! hook in scope packed it ([`hooks`](super::hooks)).

use crate::autograd::hooks::{self, Packed, SaveHook, SaveInfo};
use crate::autograd::memory;
use crate::layout::Dims;
use crate::storage::Value;
use crate::tensor::{Tensor, TensorImpl};
use crate::Float;
use std::any::Any;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

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

/// A value saved for backward: its data, plus what is needed to check that
/// nobody wrote to it in place and to re-attach it to the graph.
pub(crate) struct Saved<T: Float> {
    /// The op that saved it, by its node's name.
    op: &'static str,
    pub(crate) role: Role,
    data: SavedData<T>,
    /// The tensor whose data this is, to compare versions on unpack.
    owner: Weak<TensorImpl<T>>,
    version: u64,
    /// The shape saved, which an unpacked value must have.
    shape: Dims,
}

/// How a saved value's data is kept.
enum SavedData<T: Float> {
    /// As it is.
    Held(Held<T>),
    /// As the hook in scope at the save packed it.
    Packed {
        hook: Arc<dyn SaveHook>,
        packed: Arc<Packed>,
    },
}

impl<T: Float> Clone for Saved<T> {
    fn clone(&self) -> Self {
        let data = match &self.data {
            SavedData::Held(held) => SavedData::Held(held.clone()),
            SavedData::Packed { hook, packed } => SavedData::Packed {
                hook: hook.clone(),
                packed: packed.clone(),
            },
        };
        Saved {
            op: self.op,
            role: self.role,
            data,
            owner: self.owner.clone(),
            version: self.version,
            shape: self.shape.clone(),
        }
    }
}

impl<T: Float> Saved<T> {
    /// Saves `value` (the data of `owner` at `version`) as `role` of the op
    /// `op`, through the innermost saved-value hook of this thread if any.
    pub(crate) fn new(
        op: &'static str,
        role: Role,
        value: Value<T>,
        owner: Weak<TensorImpl<T>>,
        version: u64,
    ) -> Self {
        let shape = value.shape.clone();
        let held = Held::new(value);
        let data = match hooks::innermost() {
            None => SavedData::Held(held),
            Some(hook) => {
                let info = SaveInfo {
                    op,
                    role,
                    dtype: T::DTYPE,
                    shape: &shape,
                };
                match hook.pack(&held, &info) {
                    Some(packed) => SavedData::Packed {
                        hook,
                        packed: Arc::new(packed),
                    },
                    None => SavedData::Held(held),
                }
            }
        };
        Saved {
            op,
            role,
            data,
            owner,
            version,
            shape,
        }
    }

    /// `t`'s current data, saved as `role` of `op`.
    pub(crate) fn of(op: &'static str, role: Role, t: &Tensor<T>) -> Self {
        Saved::new(
            op,
            role,
            t.value(),
            Arc::downgrade(&t.inner),
            t.inner.version.load(Ordering::Acquire),
        )
    }

    /// Whether reading the data means asking a hook (which may cost a
    /// re-run: a rule reads such a value once).
    pub(crate) fn is_packed(&self) -> bool {
        matches!(self.data, SavedData::Packed { .. })
    }

    /// The data, after checking that nobody wrote to it in place; packed
    /// data comes back through its hook's `unpack`. `reader` names the
    /// reader in messages.
    pub(crate) fn value(&self, reader: &str) -> Value<T> {
        self.check_version(reader);
        match &self.data {
            SavedData::Held(held) => held.value.clone(),
            SavedData::Packed { hook, packed } => {
                let info = SaveInfo {
                    op: self.op,
                    role: self.role,
                    dtype: T::DTYPE,
                    shape: &self.shape,
                };
                let held = hook.unpack(packed, &info);
                let value = value_of::<T>(&*held, reader);
                assert!(
                    value.shape == self.shape,
                    "{reader}: the unpack hook returned a value of shape {:?} for the saved {} of shape {:?}",
                    value.shape.as_slice(),
                    self.role,
                    self.shape.as_slice()
                );
                value
            }
        }
    }

    /// Panics (naming the reader `op`) if someone wrote to the value in
    /// place since it was saved.
    pub(crate) fn check_version(&self, op: &str) {
        if let Some(owner) = self.owner.upgrade() {
            let now = owner.version.load(Ordering::Acquire);
            if now != self.version {
                panic!(
                    "{op}: one of the values needed for gradient computation has been modified by \
                     an inplace operation: its {} of shape {:?} is at version {now}; expected \
                     version {}",
                    self.role,
                    owner.shape.as_slice(),
                    self.version
                );
            }
        }
    }
}
