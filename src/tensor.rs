//! The `Tensor` handle: data, shape, gradient, `requires_grad`, and the node
//! that made it.

use crate::autograd::hooks::{ReadInput, Watched};
use crate::autograd::node::{Edge, Node};
use crate::layout::{dims, Dims};
use crate::storage::{filled, Buffer, Value};
use crate::sync::{get_mut, lock, read, write};
use crate::{layout, rng, Float, TensorError};
use ndarray::{ArrayD, ArrayViewD};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};

/// What a handle points to. Clones of a [`Tensor`] share one of these.
pub(crate) struct TensorImpl<T: Float> {
    /// Immutable: in-place ops keep the shape.
    pub(crate) shape: Dims,
    /// Replaced (copy-on-write) by in-place ops; read by everything else.
    data: RwLock<Value<T>>,
    /// Bumped by every in-place write; saved values compare it on unpack.
    pub(crate) version: AtomicU64,
    requires_grad: AtomicBool,
    /// The node that made this tensor: `None` for leaves.
    pub(crate) node: Option<Arc<Node<T>>>,
    /// A leaf's accumulated gradient (or a non-leaf's, after
    /// [`Tensor::retain_grad`]).
    grad: Mutex<Option<Tensor<T>>>,
}

impl<T: Float> TensorImpl<T> {
    pub(crate) fn new(value: Value<T>, node: Option<Arc<Node<T>>>, requires_grad: bool) -> Self {
        TensorImpl {
            shape: dims(&value.shape),
            data: RwLock::new(value),
            version: AtomicU64::new(0),
            requires_grad: AtomicBool::new(requires_grad),
            node,
            grad: Mutex::new(None),
        }
    }
}

/// An n-dimensional array of `f32` or `f64` that records the operations made
/// with it, so that [`backward`](Tensor::backward) can compute gradients.
///
/// A `Tensor` is a cheap handle: `clone()` is O(1) and clones share data,
/// `.grad` and `requires_grad` (it is not `torch.clone()`). It is
/// `Send + Sync`.
///
/// ```
/// use tapegrad::prelude::*;
/// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).set_requires_grad(true);
/// let y = (&x * &x).sum(); // y = Σ x²
/// y.backward();
/// assert_eq!(x.grad().unwrap().to_vec(), vec![2.0, 4.0, 6.0]); // dy/dx = 2x
/// ```
///
/// The operators `+`, `-`, `*` and `/` work between two tensors (owned or
/// borrowed), broadcasting as NumPy does, and between a tensor and a number
/// on either side; `-x` negates.
///
/// ```
/// use tapegrad::Tensor;
/// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
/// let b = Tensor::from_vec(vec![10.0f32, 20.0], &[2]);
/// assert_eq!((&a + &b).to_vec(), vec![11.0, 22.0, 13.0, 24.0]); // b added to each row
/// assert_eq!((2.0f32 * &a - 1.0).to_vec(), vec![1.0, 3.0, 5.0, 7.0]);
/// assert_eq!((-&a / a).to_vec(), vec![-1.0; 4]);
/// ```
///
/// **Panics** (an operator between two tensors) if their shapes do not
/// broadcast together, naming both.
pub struct Tensor<T: Float = f32> {
    pub(crate) inner: Arc<TensorImpl<T>>,
}

impl<T: Float> Clone for Tensor<T> {
    /// Copies the handle (O(1)): the clone shares data, `.grad` and
    /// `requires_grad`.
    fn clone(&self) -> Self {
        Tensor {
            inner: self.inner.clone(),
        }
    }
}

// ---------------------------------------------------------------- construction
impl<T: Float> Tensor<T> {
    /// A leaf holding `value`.
    pub(crate) fn from_value(value: Value<T>) -> Self {
        Tensor {
            inner: Arc::new(TensorImpl::new(value, None, false)),
        }
    }

    /// A non-leaf holding `value`, made by `node`.
    pub(crate) fn with_node(value: Value<T>, node: Arc<Node<T>>) -> Self {
        Tensor {
            inner: Arc::new(TensorImpl::new(value, Some(node), true)),
        }
    }

    /// A tensor from row-major `data`.
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    /// assert_eq!(t.shape(), &[2, 3]);
    /// ```
    ///
    /// **Panics** if `data.len()` is not the product of `shape`.
    #[track_caller]
    pub fn from_vec(data: Vec<T>, shape: &[usize]) -> Self {
        match Self::try_from_vec(data, shape) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`from_vec`](Tensor::from_vec), with the error returned instead of
    /// a panic.
    ///
    /// ```
    /// use tapegrad::{Tensor, TensorError};
    /// let err = Tensor::try_from_vec(vec![1.0f32, 2.0, 3.0], &[2, 2]).unwrap_err();
    /// assert_eq!(err, TensorError::ElementCount { len: 3, shape: vec![2, 2] });
    /// assert_eq!(err.to_string(), "from_vec: 3 elements cannot have shape [2, 2] (4 elements)");
    /// ```
    pub fn try_from_vec(data: Vec<T>, shape: &[usize]) -> Result<Self, TensorError> {
        let n = layout::try_numel("from_vec", shape)?;
        if data.len() != n {
            return Err(TensorError::ElementCount {
                len: data.len(),
                shape: shape.to_vec(),
            });
        }
        Ok(Self::from_value(Value::from_vec(data, shape)))
    }

    /// A tensor taking over an ndarray (no copy).
    ///
    /// ```
    /// use tapegrad::{ndarray, Tensor};
    /// let t = Tensor::from_array(ndarray::ArrayD::<f64>::zeros(ndarray::IxDyn(&[2, 2])));
    /// assert_eq!(t.shape(), &[2, 2]);
    /// ```
    pub fn from_array(a: ArrayD<T>) -> Self {
        Self::from_value(Value::from_array(a))
    }

    /// A 0-dimensional tensor (shape `[]`).
    ///
    /// ```
    /// let s = tapegrad::Tensor::scalar(2.5f32);
    /// assert_eq!((s.shape(), s.item()), (&[][..], 2.5));
    /// ```
    pub fn scalar(v: T) -> Self {
        Self::from_value(Value::scalar(v))
    }

    /// A tensor of `shape` filled with `v`.
    ///
    /// ```
    /// let t = tapegrad::Tensor::full(&[2], 7.0f32);
    /// assert_eq!(t.to_vec(), vec![7.0, 7.0]);
    /// ```
    ///
    /// **Panics** if the product of `shape` exceeds `isize::MAX`.
    #[track_caller]
    pub fn full(shape: &[usize], v: T) -> Self {
        Self::full_as("full", shape, v)
    }

    /// [`full`](Tensor::full), naming `op` if the shape is too large.
    #[track_caller]
    fn full_as(op: &str, shape: &[usize], v: T) -> Self {
        Self::from_value(Value::from_vec(filled(v, layout::numel(op, shape)), shape))
    }

    /// A tensor of zeros.
    ///
    /// ```
    /// assert_eq!(tapegrad::Tensor::<f32>::zeros(&[2]).to_vec(), vec![0.0, 0.0]);
    /// ```
    ///
    /// **Panics** as [`full`](Tensor::full).
    #[track_caller]
    pub fn zeros(shape: &[usize]) -> Self {
        Self::full_as("zeros", shape, T::zero())
    }

    /// A tensor of ones.
    ///
    /// ```
    /// assert_eq!(tapegrad::Tensor::<f32>::ones(&[2]).to_vec(), vec![1.0, 1.0]);
    /// ```
    ///
    /// **Panics** as [`full`](Tensor::full).
    #[track_caller]
    pub fn ones(shape: &[usize]) -> Self {
        Self::full_as("ones", shape, T::one())
    }

    /// Samples from the standard normal distribution, drawn from this
    /// thread's generator (see [`manual_seed`](crate::manual_seed)).
    ///
    /// ```
    /// tapegrad::manual_seed(0);
    /// let t = tapegrad::Tensor::<f32>::randn(&[3, 4]);
    /// assert_eq!(t.numel(), 12);
    /// ```
    ///
    /// **Panics** if the product of `shape` exceeds `isize::MAX`.
    #[track_caller]
    pub fn randn(shape: &[usize]) -> Self {
        Self::from_vec(rng::normal(layout::numel("randn", shape)), shape)
    }

    /// Samples uniform in [0, 1), drawn from this thread's generator.
    ///
    /// ```
    /// let t = tapegrad::Tensor::<f64>::rand(&[100]);
    /// assert!(t.to_vec().iter().all(|&v| (0.0..1.0).contains(&v)));
    /// ```
    ///
    /// **Panics** if the product of `shape` exceeds `isize::MAX`.
    #[track_caller]
    pub fn rand(shape: &[usize]) -> Self {
        Self::from_vec(rng::uniform(layout::numel("rand", shape)), shape)
    }
}

impl<T: Float> From<ArrayD<T>> for Tensor<T> {
    fn from(a: ArrayD<T>) -> Self {
        Tensor::from_array(a)
    }
}

// --------------------------------------------------------------------- reading
impl<T: Float> Tensor<T> {
    /// The data and layout (a cheap clone of the handle's current value).
    pub(crate) fn value(&self) -> Value<T> {
        read(&self.inner.data).clone()
    }

    /// The data and layout, borrowed (no clone; the lock is held while the
    /// guard lives: take it for one expression).
    pub(crate) fn data(&self) -> std::sync::RwLockReadGuard<'_, Value<T>> {
        read(&self.inner.data)
    }

    /// Reads the data of `a` and `b` together, for an op on two operands.
    ///
    /// Never two read locks of one tensor (the same tensor twice is read
    /// through one), and two tensors are locked in the order of their
    /// addresses: std's `RwLock` parks a new reader behind a waiting writer,
    /// so a thread holding one read lock of a tensor and asking for a second,
    /// or two threads taking two locks in opposite orders, deadlock once an
    /// in-place write waits between them. (Writers take one lock and hold
    /// nothing else while they wait.)
    pub(crate) fn read_pair<R>(a: &Tensor<T>, b: &Tensor<T>, f: impl FnOnce(&Value<T>, &Value<T>) -> R) -> R {
        if Arc::ptr_eq(&a.inner, &b.inner) {
            let v = a.data();
            return f(&v, &v);
        }
        if Arc::as_ptr(&a.inner) < Arc::as_ptr(&b.inner) {
            let va = a.data();
            f(&va, &b.data())
        } else {
            let vb = b.data();
            f(&a.data(), &vb)
        }
    }

    /// The data, locked for an in-place write (take it for one write, and
    /// no other lock while it is held).
    pub(crate) fn data_mut(&self) -> std::sync::RwLockWriteGuard<'_, Value<T>> {
        write(&self.inner.data)
    }

    /// Whether this tensor's data lives in `buf`.
    pub(crate) fn uses_buffer(&self, buf: &Arc<Buffer<T>>) -> bool {
        Arc::ptr_eq(&read(&self.inner.data).buf, buf)
    }

    /// The size of each dimension.
    ///
    /// ```
    /// let t = tapegrad::Tensor::<f32>::zeros(&[2, 3]);
    /// assert_eq!(t.shape(), &[2, 3]);
    /// assert_eq!(t.sum().shape(), &[] as &[usize]); // a scalar has no dimensions
    /// ```
    pub fn shape(&self) -> &[usize] {
        &self.inner.shape
    }

    /// The number of dimensions.
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// assert_eq!(Tensor::<f32>::zeros(&[2, 3, 4]).ndim(), 3);
    /// assert_eq!(Tensor::scalar(1.0f32).ndim(), 0);
    /// ```
    pub fn ndim(&self) -> usize {
        self.inner.shape.len()
    }

    /// The number of elements.
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// assert_eq!(Tensor::<f32>::zeros(&[2, 3, 4]).numel(), 24);
    /// assert_eq!(Tensor::<f32>::zeros(&[2, 0]).numel(), 0);
    /// assert_eq!(Tensor::scalar(1.0f32).numel(), 1);
    /// ```
    pub fn numel(&self) -> usize {
        self.inner.shape.iter().product()
    }

    /// The elements in row-major order (a copy).
    ///
    /// ```
    /// let t = tapegrad::Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    /// assert_eq!(t.t().to_vec(), vec![1.0, 3.0, 2.0, 4.0]);
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        read(&self.inner.data).to_vec()
    }

    /// The elements as an ndarray (a copy).
    ///
    /// ```
    /// let t = tapegrad::Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    /// let a = t.to_array();
    /// assert_eq!(a.shape(), &[2, 2]);
    /// assert_eq!(a[[1, 0]], 3.0);
    /// ```
    pub fn to_array(&self) -> ArrayD<T> {
        self.with_array(|v| v.to_owned())
    }

    /// Reads the elements through a zero-copy ndarray view.
    ///
    /// ```
    /// let t = tapegrad::Tensor::from_vec(vec![1.0f32, 2.0], &[2]);
    /// assert_eq!(t.with_array(|v| v.sum()), 3.0);
    /// ```
    pub fn with_array<R>(&self, f: impl FnOnce(ArrayViewD<'_, T>) -> R) -> R {
        let value = self.value();
        f(value.view())
    }

    /// The single element of a one-element tensor.
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]);
    /// assert_eq!(t.sum().item(), 6.0);
    /// assert_eq!(Tensor::from_vec(vec![4.0f32], &[1, 1]).item(), 4.0);
    /// ```
    ///
    /// **Panics** unless `numel() == 1`.
    #[track_caller]
    pub fn item(&self) -> T {
        assert!(
            self.numel() == 1,
            "item: only a tensor with one element can be converted to a scalar, but this one has \
             shape {:?} ({} elements); reduce it first (sum(), mean()) or read all of it with to_vec()",
            self.shape(),
            self.numel()
        );
        let v = read(&self.inner.data);
        v.buf.data[v.offset]
    }
}

// -------------------------------------------------------------- autograd state
impl<T: Float> Tensor<T> {
    /// Marks a leaf as needing a gradient (or not); returns the same handle.
    ///
    /// ```
    /// let w = tapegrad::Tensor::<f32>::zeros(&[3]).set_requires_grad(true);
    /// assert!(w.requires_grad() && w.is_leaf());
    /// ```
    ///
    /// **Panics** when asked to turn it off on a non-leaf (use
    /// [`detach`](Tensor::detach)), as PyTorch does.
    #[track_caller]
    pub fn set_requires_grad(&self, flag: bool) -> Tensor<T> {
        if self.inner.node.is_some() {
            assert!(
                flag,
                "set_requires_grad(false): you can only change requires_grad of leaf tensors; \
                 this tensor was made by {} (use detach() for a copy without history)",
                self.grad_fn_name().unwrap_or_default()
            );
        } else {
            self.inner.requires_grad.store(flag, Ordering::Relaxed);
        }
        self.clone()
    }

    /// Whether gradients flow to or through this tensor.
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let x = Tensor::<f32>::ones(&[2]).set_requires_grad(true);
    /// let c = Tensor::<f32>::ones(&[2]);
    /// assert!(!c.requires_grad());
    /// assert!((&x * &c).requires_grad()); // through x
    /// assert!(!(&c * 2.0).requires_grad());
    /// ```
    pub fn requires_grad(&self) -> bool {
        self.inner.node.is_some() || self.inner.requires_grad.load(Ordering::Relaxed)
    }

    /// Whether this tensor has no history: made by a constructor, by
    /// [`detach`](Tensor::detach), under [`no_grad`](crate::no_grad), or by
    /// ops on tensors that need no grad.
    ///
    /// ```
    /// use tapegrad::{no_grad, Tensor};
    /// let x = Tensor::<f32>::ones(&[2]).set_requires_grad(true);
    /// assert!(x.is_leaf());
    /// assert!(!x.exp().is_leaf());
    /// assert!(no_grad(|| x.exp()).is_leaf());
    /// assert!(x.exp().detach().is_leaf());
    /// ```
    pub fn is_leaf(&self) -> bool {
        self.inner.node.is_none()
    }

    /// The gradient accumulated into this leaf by backward; `None` before any
    /// backward, after [`zero_grad`](Tensor::zero_grad), and for non-leaves
    /// (as in PyTorch) unless they [`retain_grad`](Tensor::retain_grad).
    ///
    /// To read the gradient with respect to an intermediate result, ask
    /// [`grad`](crate::grad) for it (which leaves the leaves' `.grad`
    /// alone), or call `retain_grad()` on it before backward. A tensor that
    /// retains its gradient gets it from `grad` too, as in PyTorch.
    ///
    /// ```
    /// use tapegrad::prelude::*;
    /// let x = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).set_requires_grad(true);
    /// let h = &x * 3.0; // a non-leaf
    /// let y = (&h * &h).sum();
    /// let dh = tapegrad::grad(&[y.clone()], &[h.clone()], GradOptions { retain_graph: true, ..Default::default() });
    /// assert_eq!(dh[0].as_ref().unwrap().to_vec(), vec![6.0, 12.0]); // 2h
    /// assert!(h.grad().is_none() && x.grad().is_none());
    ///
    /// h.retain_grad();
    /// y.backward();
    /// assert_eq!(h.grad().unwrap().to_vec(), vec![6.0, 12.0]);
    /// assert_eq!(x.grad().unwrap().to_vec(), vec![18.0, 36.0]); // 2h · 3
    /// ```
    pub fn grad(&self) -> Option<Tensor<T>> {
        lock(&self.inner.grad).clone()
    }

    /// Sets the gradient back to `None`.
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).set_requires_grad(true);
    /// (&x * 3.0).sum().backward();
    /// (&x * 3.0).sum().backward();
    /// assert_eq!(x.grad().unwrap().to_vec(), vec![6.0, 6.0]); // gradients accumulate
    /// x.zero_grad();
    /// assert!(x.grad().is_none());
    /// ```
    pub fn zero_grad(&self) {
        *lock(&self.inner.grad) = None;
    }

    /// The accumulated gradient slot, for the engine.
    pub(crate) fn grad_slot(&self) -> MutexGuard<'_, Option<Tensor<T>>> {
        lock(&self.inner.grad)
    }

    /// The same data with no history and `requires_grad() == false` (O(1)).
    ///
    /// ```
    /// use tapegrad::prelude::*;
    /// let x = Tensor::<f32>::ones(&[2]).set_requires_grad(true);
    /// let d = (&x * 2.0).detach();
    /// assert!(d.is_leaf() && !d.requires_grad());
    /// ```
    pub fn detach(&self) -> Tensor<T> {
        Tensor::from_value(self.value())
    }

    /// The name of the backward node that made this tensor (for example
    /// `"MulBackward"`); `None` for leaves.
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let x = Tensor::<f32>::ones(&[2]).set_requires_grad(true);
    /// assert_eq!(x.grad_fn_name(), None);
    /// assert_eq!((&x * &x).grad_fn_name().as_deref(), Some("MulBackward"));
    /// ```
    pub fn grad_fn_name(&self) -> Option<String> {
        self.inner.node.as_ref().map(|n| n.name.to_string())
    }

    /// Where a gradient for this tensor goes, as an input of a new op.
    pub(crate) fn edge(&self) -> Edge<T> {
        match &self.inner.node {
            Some(node) => Edge::Node(node.clone()),
            None if self.requires_grad() => Edge::Leaf(Arc::downgrade(&self.inner)),
            None => Edge::None,
        }
    }
}

impl<T: Float> Tensor<T> {
    /// `self += g` in the buffer, if this handle, its buffer and the layout
    /// allow it (unshared, leaf, contiguous, same shape). For the engine's
    /// gradient sums; returns whether it happened.
    pub(crate) fn try_add_in_place(&mut self, g: &Tensor<T>) -> bool {
        let Some(inner) = Arc::get_mut(&mut self.inner) else {
            return false;
        };
        if inner.node.is_some() || inner.shape != g.inner.shape {
            return false;
        }
        let data = get_mut(&mut inner.data);
        if !data.is_contiguous() || data.numel() != data.buf.data.len() {
            return false;
        }
        let Some(buf) = Arc::get_mut(&mut data.buf) else {
            return false;
        };
        let src = g.value();
        match src.as_slice() {
            Some(s) => buf.data.iter_mut().zip(s).for_each(|(d, &s)| *d = *d + s),
            None => {
                // Zip, not the element iterator: see `Value::copy_into`.
                let dst = ndarray::ArrayViewMutD::from_shape(ndarray::IxDyn(&inner.shape), &mut buf.data[..])
                    .expect("contiguous, whole");
                ndarray::Zip::from(dst)
                    .and(&src.view())
                    .for_each(|d, &s| *d = *d + s);
            }
        }
        inner.version.fetch_add(1, Ordering::AcqRel);
        true
    }
}

impl<T: Float> Tensor<T> {
    /// The elements, for an op that consumes this tensor to write its
    /// result over them: `Some` only when no one else can see them (this is
    /// the only handle, no graph refers to the tensor, and its buffer is
    /// unshared, row-major and whole).
    pub(crate) fn unshared_elements(&mut self) -> Option<&mut [T]> {
        let value = Arc::get_mut(&mut self.inner)?.data.get_mut().ok()?;
        let whole = value.offset == 0 && value.is_contiguous() && value.numel() == value.buf.data.len();
        match whole {
            true => Some(&mut Arc::get_mut(&mut value.buf)?.data),
            false => None,
        }
    }

    /// A leaf that needs no gradient and has none: an op result that is not
    /// recorded can be this very tensor.
    pub(crate) fn is_bare_leaf(&self) -> bool {
        self.inner.node.is_none() && !self.requires_grad() && lock(&self.inner.grad).is_none()
    }
}

// ------------------------------------------------------------------- printing
impl<T: Float> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        let data = self.value();
        let mut elems: Vec<String> = data.view().iter().take(SHOWN).map(|v| format!("{v:?}")).collect();
        if self.numel() > SHOWN {
            elems.push("...".to_string());
        }
        write!(
            f,
            "Tensor<{}>(shape={:?}, data=[{}]",
            T::DTYPE,
            self.shape(),
            elems.join(", ")
        )?;
        match self.grad_fn_name() {
            Some(name) => write!(f, ", grad_fn={name})"),
            None => write!(f, ", requires_grad={})", self.requires_grad()),
        }
    }
}

/// `acc += g`: in place when `acc`'s handle and buffer are ours alone,
/// out of place (and recorded) under `create_graph`.
pub(crate) fn accumulate<T: Float>(acc: &mut Option<Tensor<T>>, g: Tensor<T>, create_graph: bool) {
    match acc {
        None => *acc = Some(g),
        Some(a) => {
            if create_graph || !a.try_add_in_place(&g) {
                *a = &*a + &g;
            }
        }
    }
}

// ---------------------------------------------------------------- as hooks see it
impl<T: Float> ReadInput for Tensor<T> {
    fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }
    fn made_by(&self) -> Option<u64> {
        self.inner.node.as_ref().map(|n| n.id)
    }
    fn shared(&self) -> bool {
        Arc::strong_count(&self.inner) + Arc::weak_count(&self.inner) > 1
    }
    fn version(&self) -> u64 {
        self.inner.version.load(Ordering::Acquire)
    }
    fn requires_grad(&self) -> bool {
        Tensor::requires_grad(self)
    }
    fn watch(&self) -> Box<dyn Watched> {
        Box::new(Arc::downgrade(&self.inner))
    }
}

impl<T: Float> Watched for Weak<TensorImpl<T>> {
    fn now(&self) -> Option<(u64, bool)> {
        let t = Tensor {
            inner: self.upgrade()?,
        };
        Some((ReadInput::version(&t), t.requires_grad()))
    }

    fn set_requires_grad(&self, flag: bool) {
        if let Some(inner) = self.upgrade() {
            Tensor { inner }.set_requires_grad(flag);
        }
    }

    fn describe(&self) -> String {
        match self.upgrade() {
            Some(t) => match &t.node {
                Some(node) => format!("a tensor of shape {:?} made by {}", t.shape.as_slice(), node.name),
                None => format!("a leaf of shape {:?}", t.shape.as_slice()),
            },
            None => "a tensor dropped since".to_string(),
        }
    }

    fn handle(&self) -> Box<dyn Watched> {
        Box::new(self.clone())
    }
}
