//! Locks that survive a panic elsewhere.
//!
//! Every lock in the crate guards state that is consistent between any two
//! statements (a value swapped whole, a list pushed to), so a panic in
//! another thread while it held the lock (a shape mismatch inside a
//! backward rule, say) leaves nothing half-written: the poison flag is
//! ignored, and the panic is reported where it happened, not again at
//! every later lock.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`, whether or not a thread panicked holding it.
pub(crate) fn lock<U: ?Sized>(m: &Mutex<U>) -> MutexGuard<'_, U> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Locks `l` for reading, whether or not a thread panicked holding it.
pub(crate) fn read<U: ?Sized>(l: &RwLock<U>) -> RwLockReadGuard<'_, U> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// Locks `l` for writing, whether or not a thread panicked holding it.
pub(crate) fn write<U: ?Sized>(l: &RwLock<U>) -> RwLockWriteGuard<'_, U> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// What `m` guards, whether or not a thread panicked holding it.
pub(crate) fn into_inner<U>(m: Mutex<U>) -> U {
    m.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// What `l` guards, through a unique borrow, whether or not a thread
/// panicked holding it.
pub(crate) fn get_mut<U: ?Sized>(l: &mut RwLock<U>) -> &mut U {
    l.get_mut().unwrap_or_else(|e| e.into_inner())
}
