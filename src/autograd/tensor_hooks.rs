//! Names, backward hooks and `retain_grad` of tensors (PyTorch's
//! `Tensor.register_hook` and `retain_grad`).
//!
//! They live in a registry by tensor, not in the tensor: the many tensors
//! that have none carry nothing for them (a field in every tensor cost W1
//! 3% in instructions), and while no live tensor has a hook, backward pays
//! one load per node to know it. An entry holds its tensor weakly; entries
//! of tensors dropped since are pruned when a backward starts.

use crate::sync::lock;
use crate::tensor::{accumulate, TensorImpl};
use crate::{Float, Tensor};
use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// A backward hook on a tensor (see [`Tensor::register_hook`]).
type Hook<T> = Arc<dyn Fn(&Tensor<T>) -> Option<Tensor<T>> + Send + Sync>;

/// A hook run after a leaf's gradient is accumulated (see
/// [`Tensor::register_post_accumulate_grad_hook`]).
type PostHook<T> = Arc<dyn Fn(&Tensor<T>) + Send + Sync>;

/// What a tensor has of these.
struct Extras<T: Float> {
    owner: Weak<TensorImpl<T>>,
    name: Option<String>,
    /// By registration id, in registration order.
    hooks: Vec<(u64, Hook<T>)>,
    /// Likewise, run after accumulation (leaves only).
    post_hooks: Vec<(u64, PostHook<T>)>,
    retains_grad: bool,
}

impl<T: Float> Extras<T> {
    fn watched(&self) -> bool {
        !self.hooks.is_empty() || !self.post_hooks.is_empty() || self.retains_grad
    }
}

/// The entries (an `Extras<T>` of the tensor's dtype) by the address of
/// the tensor's shared state (kept from reuse by the entry's weak handle),
/// and for non-leaves by the id of the node that made them.
struct Registry {
    by_tensor: BTreeMap<usize, (Option<u64>, Box<dyn Any + Send + Sync>)>,
    by_node: BTreeMap<u64, usize>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    by_tensor: BTreeMap::new(),
    by_node: BTreeMap::new(),
});

/// How many entries have hooks or `retain_grad` (dropped tensors included
/// until pruned).
static WATCHED: AtomicUsize = AtomicUsize::new(0);
static NEXT_HOOK: AtomicU64 = AtomicU64::new(0);

impl Registry {
    fn recount(&self) {
        let n = self
            .by_tensor
            .values()
            .filter(|(_, e)| watched_entry(&**e))
            .count();
        WATCHED.store(n, Ordering::Relaxed);
    }
}

/// Whether an entry of either dtype has hooks or `retain_grad`.
fn watched_entry(e: &(dyn Any + Send + Sync)) -> bool {
    match (e.downcast_ref::<Extras<f32>>(), e.downcast_ref::<Extras<f64>>()) {
        (Some(x), _) => x.watched(),
        (_, Some(x)) => x.watched(),
        _ => false,
    }
}

/// Whether an entry's tensor is still alive.
fn alive(e: &(dyn Any + Send + Sync)) -> bool {
    match (e.downcast_ref::<Extras<f32>>(), e.downcast_ref::<Extras<f64>>()) {
        (Some(x), _) => x.owner.strong_count() > 0,
        (_, Some(x)) => x.owner.strong_count() > 0,
        _ => false,
    }
}

/// Whether any tensor may have hooks or retain its gradient.
#[inline(always)]
pub(crate) fn any_watched() -> bool {
    WATCHED.load(Ordering::Relaxed) > 0
}

/// Drops the entries of tensors that are gone (at the start of a backward
/// while any entry is watched).
pub(crate) fn prune() {
    let mut reg = lock(&REGISTRY);
    let dead: Vec<usize> = reg
        .by_tensor
        .iter()
        .filter(|(_, (_, e))| !alive(&**e))
        .map(|(k, _)| *k)
        .collect();
    for k in dead {
        if let Some((Some(node), _)) = reg.by_tensor.remove(&k) {
            reg.by_node.remove(&node);
        }
    }
    reg.recount();
}

fn key<T: Float>(t: &Tensor<T>) -> usize {
    Arc::as_ptr(&t.inner) as usize
}

/// `f` on `t`'s entry, made if it has none.
fn with_extras<T: Float, R>(t: &Tensor<T>, f: impl FnOnce(&mut Extras<T>) -> R) -> R {
    let mut reg = lock(&REGISTRY);
    let k = key(t);
    let node = t.inner.node.as_ref().map(|n| n.id);
    let (_, entry) = reg.by_tensor.entry(k).or_insert_with(|| {
        let extras = Extras::<T> {
            owner: Arc::downgrade(&t.inner),
            name: None,
            hooks: Vec::new(),
            post_hooks: Vec::new(),
            retains_grad: false,
        };
        (node, Box::new(extras))
    });
    let out = f(entry
        .downcast_mut::<Extras<T>>()
        .expect("an entry has its tensor's dtype"));
    if let Some(id) = node {
        reg.by_node.insert(id, k);
    }
    reg.recount();
    out
}

/// `f` on `t`'s entry, if it has one.
fn read_extras<T: Float, R>(t: &Tensor<T>, f: impl FnOnce(&Extras<T>) -> R) -> Option<R> {
    let reg = lock(&REGISTRY);
    let (_, entry) = reg.by_tensor.get(&key(t))?;
    entry.downcast_ref::<Extras<T>>().map(f)
}

/// The live tensor that node `id` made, if it has an entry (a name, hooks).
pub(crate) fn made_by<T: Float>(id: u64) -> Option<Tensor<T>> {
    let reg = lock(&REGISTRY);
    let k = reg.by_node.get(&id)?;
    let (_, entry) = reg.by_tensor.get(k)?;
    let inner = entry.downcast_ref::<Extras<T>>()?.owner.upgrade()?;
    Some(Tensor { inner })
}

impl<T: Float> Tensor<T> {
    /// Names this tensor for printouts (the tape and graph printers of
    /// `tapegrad::viz`); returns the same handle (every
    /// clone shares the name).
    ///
    /// ```
    /// let w = tapegrad::Tensor::<f32>::ones(&[2]).with_name("w1");
    /// assert_eq!(w.name().as_deref(), Some("w1"));
    /// ```
    pub fn with_name(&self, name: &str) -> Tensor<T> {
        with_extras(self, |e| e.name = Some(name.to_string()));
        self.clone()
    }

    /// The name given by [`with_name`](Tensor::with_name) (module
    /// parameters are named after `named_parameters`), if any.
    ///
    /// ```
    /// assert_eq!(tapegrad::Tensor::<f32>::ones(&[2]).name(), None);
    /// ```
    pub fn name(&self) -> Option<String> {
        read_extras(self, |e| e.name.clone()).flatten()
    }

    /// Registers `hook`, called with the gradient with respect to this
    /// tensor whenever a backward (or [`grad`](crate::grad)) computes it:
    /// `Some(g)` replaces the gradient (same shape), `None` keeps it. On a
    /// leaf it runs once per backward, on the gradient summed over the
    /// whole backward, before it is added to `.grad`; on a non-leaf, before
    /// the gradient goes on to the op that made it. Hooks run in the order
    /// registered (PyTorch's `Tensor.register_hook`).
    ///
    /// ```
    /// use tapegrad::prelude::*;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).set_requires_grad(true);
    /// let h = &x * 3.0;
    /// let handle = h.register_hook(|g| Some(g * 10.0)); // scale dy/dh
    /// h.sum().backward();
    /// assert_eq!(x.grad().unwrap().to_vec(), vec![30.0, 30.0]);
    /// handle.remove();
    /// ```
    ///
    /// **Panics** if the tensor does not require grad (no gradient is ever
    /// computed for it); a hook returning a gradient of another shape
    /// panics in backward.
    #[track_caller]
    pub fn register_hook(
        &self,
        hook: impl Fn(&Tensor<T>) -> Option<Tensor<T>> + Send + Sync + 'static,
    ) -> HookHandle {
        assert!(
            self.requires_grad(),
            "register_hook: the tensor (shape {:?}) does not require grad, so no gradient is computed \
             for it",
            self.shape()
        );
        let id = NEXT_HOOK.fetch_add(1, Ordering::Relaxed);
        with_extras(self, |e| e.hooks.push((id, Arc::new(hook))));
        self.handle(id)
    }

    /// Registers `hook`, called with this leaf once its gradient from a
    /// backward has been added to `.grad` (read it with
    /// [`grad`](Tensor::grad)); it runs as soon as every op that uses the
    /// leaf has sent its gradient, while the rest of backward still runs
    /// (PyTorch's `register_post_accumulate_grad_hook`). It does not run
    /// for [`grad`](crate::grad), which leaves `.grad` alone. This is where
    /// data-parallel training starts averaging a gradient across workers.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use tapegrad::Tensor;
    /// let w = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).set_requires_grad(true);
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let _handle = w.register_post_accumulate_grad_hook(move |w| {
    ///     log.lock().unwrap().push(w.grad().unwrap().to_vec());
    /// });
    /// (&w * 3.0 + &w * 4.0).sum().backward(); // two uses: one call, after both
    /// assert_eq!(*seen.lock().unwrap(), [vec![7.0, 7.0]]);
    /// ```
    ///
    /// **Panics** if the tensor is not a leaf that requires grad (only those
    /// accumulate a gradient).
    pub fn register_post_accumulate_grad_hook(
        &self,
        hook: impl Fn(&Tensor<T>) + Send + Sync + 'static,
    ) -> HookHandle {
        assert!(
            self.is_leaf() && self.requires_grad(),
            "register_post_accumulate_grad_hook: the tensor (shape {:?}) is not a leaf that requires \
             grad, so nothing is accumulated into its .grad (register_hook sees a non-leaf's gradient)",
            self.shape()
        );
        let id = NEXT_HOOK.fetch_add(1, Ordering::Relaxed);
        with_extras(self, |e| e.post_hooks.push((id, Arc::new(hook))));
        self.handle(id)
    }

    /// The handle that takes hook `id` off this tensor.
    fn handle(&self, id: u64) -> HookHandle {
        let owner = Arc::downgrade(&self.inner);
        HookHandle {
            remove: Box::new(move || {
                if let Some(inner) = owner.upgrade() {
                    with_extras(&Tensor { inner }, |e| {
                        e.hooks.retain(|(h, _)| *h != id);
                        e.post_hooks.retain(|(h, _)| *h != id);
                    });
                }
            }),
        }
    }

    /// Runs this leaf's post-accumulate hooks, in registration order.
    pub(crate) fn run_post_accumulate_hooks(&self) {
        // Taken out of the registry first: a hook may use it.
        let hooks = read_extras(self, |e| {
            e.post_hooks.iter().map(|(_, h)| h.clone()).collect::<Vec<_>>()
        });
        for hook in hooks.into_iter().flatten() {
            hook(self);
        }
    }

    /// Makes this non-leaf keep its gradient in [`grad`](Tensor::grad),
    /// accumulating across backwards as a leaf's does (a no-op on a leaf).
    /// The gradient kept is the one after this tensor's hooks. See also
    /// [`grad`](Tensor::grad).
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).set_requires_grad(true);
    /// let h = x.exp(); // a non-leaf: no .grad unless it retains it
    /// let h2 = x.exp();
    /// h.retain_grad();
    /// (&h * 2.0 + &h2 * 2.0).sum().backward();
    /// assert_eq!(h.grad().unwrap().to_vec(), vec![2.0, 2.0]);
    /// assert!(h2.grad().is_none());
    /// ```
    ///
    /// **Panics** if the tensor does not require grad.
    #[track_caller]
    pub fn retain_grad(&self) {
        assert!(
            self.requires_grad(),
            "retain_grad: the tensor (shape {:?}) does not require grad",
            self.shape()
        );
        if !self.is_leaf() {
            with_extras(self, |e| e.retains_grad = true);
        }
    }

    /// Whether backward must stop at this tensor: it has hooks or keeps
    /// its gradient.
    pub(crate) fn is_watched(&self) -> bool {
        read_extras(self, Extras::watched).unwrap_or(false)
    }

    /// The gradient `g` for this tensor after its hooks, in registration
    /// order; kept in `.grad` if it retains it.
    pub(crate) fn run_hooks(&self, mut g: Tensor<T>, create_graph: bool) -> Tensor<T> {
        // Taken out of the registry first: a hook may use it.
        let Some((hooks, retains)) = read_extras(self, |e| {
            let hooks: Vec<Hook<T>> = e.hooks.iter().map(|(_, h)| h.clone()).collect();
            (hooks, e.retains_grad)
        }) else {
            return g;
        };
        for hook in hooks {
            if let Some(new) = hook(&g) {
                assert!(
                    new.shape() == g.shape(),
                    "register_hook: a hook returned a gradient of shape {:?} for a tensor of shape {:?}",
                    new.shape(),
                    g.shape()
                );
                g = new;
            }
        }
        if retains && !self.is_leaf() {
            let own = if create_graph {
                g.clone()
            } else {
                Tensor::from_value(g.value().contiguous())
            };
            accumulate(&mut self.grad_slot(), own, create_graph);
        }
        g
    }
}

/// What [`Tensor::register_hook`] and
/// [`Tensor::register_post_accumulate_grad_hook`] return: [`remove`](HookHandle::remove)
/// takes the hook off. Dropping the handle keeps the hook (as PyTorch's).
///
/// ```
/// use tapegrad::Tensor;
/// let x = Tensor::from_vec(vec![1.0f32], &[1]).set_requires_grad(true);
/// let doubled = x.register_hook(|g| Some(g * 2.0));
/// let _ = x.register_hook(|g| Some(g + 1.0)); // dropped handle: the hook stays
/// (&x * 3.0).sum().backward();
/// assert_eq!(x.grad().unwrap().item(), 7.0); // 3 · 2 + 1, in registration order
/// doubled.remove();
/// x.zero_grad();
/// (&x * 3.0).sum().backward();
/// assert_eq!(x.grad().unwrap().item(), 4.0); // 3 + 1
/// ```
#[must_use = "dropping the handle keeps the hook; call remove() to take it off"]
pub struct HookHandle {
    remove: Box<dyn FnOnce() + Send + Sync>,
}

impl HookHandle {
    /// Takes the hook off its tensor.
    ///
    /// ```
    /// use tapegrad::prelude::*;
    /// let x = Tensor::from_vec(vec![1.0f32], &[1]).set_requires_grad(true);
    /// x.register_hook(|g| Some(g * 2.0)).remove();
    /// x.sum().backward();
    /// assert_eq!(x.grad().unwrap().to_vec(), vec![1.0]);
    /// ```
    pub fn remove(self) {
        (self.remove)()
    }
}

impl fmt::Debug for HookHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HookHandle")
    }
}
