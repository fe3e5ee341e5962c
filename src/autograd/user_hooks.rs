//! The public face of the saved-value hook point: PyTorch's
//! `saved_tensors_hooks`, for users' own hooks.

use crate::autograd::held::{AnyHeld, Held};
use crate::autograd::hooks::{with_hook, Packed, SaveHook, SaveInfo};
use crate::{Float, Tensor};
use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

/// Hooks for the values ops save for backward (PyTorch's
/// `torch.autograd.graph.saved_tensors_hooks`): inside
/// [`saved_tensors_hooks`], every value an op saves goes through
/// [`pack`](SavedTensorsHooks::pack), and backward reads it back through
/// [`unpack`](SavedTensorsHooks::unpack): compress it, move it elsewhere,
/// count it. Checkpointing is built on the same hook point.
///
/// `pack` receives the saved data as a tensor with no history; `unpack`
/// must return a tensor of the same shape. What `unpack` returns is what
/// the backward rule uses, so a lossy pack changes the gradient, as in
/// PyTorch. The node still checks the saved value's version (a value
/// changed in place since it was saved is refused) and, under
/// `create_graph`, re-attaches the unpacked value to the graph.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use tapegrad::prelude::*;
///
/// /// Keeps saved values as they are, counting them.
/// struct Count(Arc<AtomicUsize>);
/// impl SavedTensorsHooks<f32> for Count {
///     type Packed = Tensor<f32>;
///     fn pack(&self, value: Tensor<f32>) -> Tensor<f32> {
///         self.0.fetch_add(1, Ordering::Relaxed);
///         value
///     }
///     fn unpack(&self, packed: &Tensor<f32>) -> Tensor<f32> {
///         packed.clone()
///     }
/// }
///
/// let n = Arc::new(AtomicUsize::new(0));
/// let x = Tensor::<f32>::ones(&[3]).set_requires_grad(true);
/// let y = tapegrad::saved_tensors_hooks(Count(n.clone()), || (&x * &x).exp().sum());
/// assert_eq!(n.load(Ordering::Relaxed), 3); // mul saves x twice, exp its output
/// y.backward();
/// assert_eq!(x.grad().unwrap().to_vec(), vec![2.0 * 1f32.exp(); 3]);
/// ```
pub trait SavedTensorsHooks<T: Float>: Send + Sync {
    /// What a saved value is kept as: anything `pack` makes, as long as
    /// `unpack` can make a tensor of it again.
    ///
    /// ```
    /// use tapegrad::prelude::*;
    /// /// Keeps saved values as f32 vectors, and their shapes.
    /// struct AsF32;
    /// impl SavedTensorsHooks<f64> for AsF32 {
    ///     type Packed = (Vec<f32>, Vec<usize>);
    ///     fn pack(&self, value: Tensor<f64>) -> Self::Packed {
    ///         (value.to_vec().iter().map(|&v| v as f32).collect(), value.shape().to_vec())
    ///     }
    ///     fn unpack(&self, (data, shape): &Self::Packed) -> Tensor<f64> {
    ///         Tensor::from_vec(data.iter().map(|&v| v as f64).collect(), shape)
    ///     }
    /// }
    /// let x = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).set_requires_grad(true);
    /// let y = tapegrad::saved_tensors_hooks(AsF32, || (&x * &x).sum());
    /// y.backward();
    /// assert_eq!(x.grad().unwrap().to_vec(), vec![2.0, 4.0]); // exact in f32
    /// ```
    type Packed: Send + Sync + 'static;
    /// Called when an op saves `value` for backward.
    ///
    /// ```
    /// # use tapegrad::prelude::*;
    /// # /// Keeps saved values as f32 vectors, and their shapes.
    /// # struct AsF32;
    /// # impl SavedTensorsHooks<f64> for AsF32 {
    /// #     type Packed = (Vec<f32>, Vec<usize>);
    /// #     fn pack(&self, value: Tensor<f64>) -> Self::Packed {
    /// #         (value.to_vec().iter().map(|&v| v as f32).collect(), value.shape().to_vec())
    /// #     }
    /// #     fn unpack(&self, (data, shape): &Self::Packed) -> Tensor<f64> {
    /// #         Tensor::from_vec(data.iter().map(|&v| v as f64).collect(), shape)
    /// #     }
    /// # }
    /// // `AsF32` keeps values as f32, as in `Packed`'s example.
    /// let (data, shape) = AsF32.pack(Tensor::from_vec(vec![0.1f64, 2.0], &[2, 1]));
    /// assert_eq!((data, shape), (vec![0.1f32, 2.0], vec![2, 1]));
    /// ```
    fn pack(&self, value: Tensor<T>) -> Self::Packed;
    /// What the engine calls when an op saves `value`, with the op and the
    /// value's role to it; by default [`pack`](SavedTensorsHooks::pack).
    /// Override it to treat values by op (count them, keep some as they
    /// are).
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use std::sync::{Arc, Mutex};
    /// use tapegrad::prelude::*;
    /// use tapegrad::SaveContext;
    ///
    /// /// Counts saved values per op.
    /// #[derive(Clone, Default)]
    /// struct PerOp(Arc<Mutex<BTreeMap<&'static str, usize>>>);
    /// impl SavedTensorsHooks<f32> for PerOp {
    ///     type Packed = Tensor<f32>;
    ///     fn pack(&self, value: Tensor<f32>) -> Tensor<f32> { value }
    ///     fn pack_saved(&self, value: Tensor<f32>, saved: &SaveContext) -> Tensor<f32> {
    ///         *self.0.lock().unwrap().entry(saved.op).or_default() += 1;
    ///         value
    ///     }
    ///     fn unpack(&self, packed: &Tensor<f32>) -> Tensor<f32> { packed.clone() }
    /// }
    ///
    /// let counts = PerOp::default();
    /// let x = Tensor::<f32>::randn(&[4, 4]).set_requires_grad(true);
    /// let y = tapegrad::saved_tensors_hooks(counts.clone(), || x.matmul(&x).tanh().sum());
    /// let counts = counts.0.lock().unwrap().clone();
    /// assert_eq!(counts.into_iter().collect::<Vec<_>>(), [("MmBackward", 2), ("TanhBackward", 1)]);
    /// # y.backward();
    /// ```
    fn pack_saved(&self, value: Tensor<T>, saved: &SaveContext) -> Self::Packed {
        let _ = saved;
        self.pack(value)
    }
    /// Called when a backward rule reads the value back. Backward uses
    /// what it returns, so a lossy pack changes the gradient.
    ///
    /// ```
    /// # use tapegrad::prelude::*;
    /// # /// Keeps saved values as f32 vectors, and their shapes.
    /// # struct AsF32;
    /// # impl SavedTensorsHooks<f64> for AsF32 {
    /// #     type Packed = (Vec<f32>, Vec<usize>);
    /// #     fn pack(&self, value: Tensor<f64>) -> Self::Packed {
    /// #         (value.to_vec().iter().map(|&v| v as f32).collect(), value.shape().to_vec())
    /// #     }
    /// #     fn unpack(&self, (data, shape): &Self::Packed) -> Tensor<f64> {
    /// #         Tensor::from_vec(data.iter().map(|&v| v as f64).collect(), shape)
    /// #     }
    /// # }
    /// // `AsF32` keeps values as f32, as in `Packed`'s example.
    /// let x = Tensor::from_vec(vec![0.1f64], &[1]).set_requires_grad(true);
    /// let y = tapegrad::saved_tensors_hooks(AsF32, || x.sin().sum()); // sin saves x
    /// y.backward();
    /// assert_eq!(x.grad().unwrap().item(), (0.1f32 as f64).cos()); // cos of the f32 value
    /// assert_ne!(x.grad().unwrap().item(), 0.1f64.cos());
    /// ```
    fn unpack(&self, packed: &Self::Packed) -> Tensor<T>;
}

/// What a saved value is, for [`SavedTensorsHooks::pack_saved`].
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use tapegrad::prelude::*;
/// use tapegrad::SaveContext;
///
/// /// Lists what is saved.
/// #[derive(Clone, Default)]
/// struct List(Arc<Mutex<Vec<SaveContext>>>);
/// impl SavedTensorsHooks<f32> for List {
///     type Packed = Tensor<f32>;
///     fn pack(&self, value: Tensor<f32>) -> Tensor<f32> { value }
///     fn pack_saved(&self, value: Tensor<f32>, saved: &SaveContext) -> Tensor<f32> {
///         self.0.lock().unwrap().push(saved.clone());
///         value
///     }
///     fn unpack(&self, packed: &Tensor<f32>) -> Tensor<f32> { packed.clone() }
/// }
///
/// let list = List::default();
/// let x = Tensor::<f32>::ones(&[2]).set_requires_grad(true);
/// let _y = tapegrad::saved_tensors_hooks(list.clone(), || x.sin().exp());
/// let saved: Vec<(&str, String)> = list.0.lock().unwrap().iter().map(|s| (s.op, s.role.clone())).collect();
/// // sin needs its input for cos(x); exp's derivative is its output
/// assert_eq!(saved, [("SinBackward", "input 0".to_string()), ("ExpBackward", "output".to_string())]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveContext {
    /// The op that saves it, by its backward node's name (as
    /// [`Tensor::grad_fn_name`] shows it): `"MulBackward"`, or
    /// `"Checkpoint"` for the inputs a checkpoint keeps.
    pub op: &'static str,
    /// What it is to that op: `"input 0"`, `"input 1"`, `"output"`.
    pub role: String,
}

/// Runs `f` with `hooks` applied to every value an op on this thread saves
/// for backward (see [`SavedTensorsHooks`]). Scopes nest: the innermost
/// applies (a checkpoint inside is innermost for
/// what its function saves; the inputs it keeps go through `hooks`).
/// Values of another element type than the hooks' are saved as usual.
///
/// ```
/// use tapegrad::prelude::*;
/// struct Keep;
/// impl SavedTensorsHooks<f64> for Keep {
///     type Packed = Tensor<f64>;
///     fn pack(&self, value: Tensor<f64>) -> Tensor<f64> { value }
///     fn unpack(&self, packed: &Tensor<f64>) -> Tensor<f64> { packed.clone() }
/// }
/// let x = Tensor::<f64>::randn(&[3]).set_requires_grad(true);
/// let y = tapegrad::saved_tensors_hooks(Keep, || x.sin().sum());
/// y.backward();
/// assert_eq!(x.grad().unwrap().to_vec(), x.cos().to_vec());
/// ```
///
/// **Panics** in backward if `unpack` returns a tensor of another shape
/// than the value packed.
pub fn saved_tensors_hooks<T: Float, R>(
    hooks: impl SavedTensorsHooks<T> + 'static,
    f: impl FnOnce() -> R,
) -> R {
    with_hook(Arc::new(UserHooks(hooks, PhantomData)), f)
}

/// A user's [`SavedTensorsHooks`] as a [`SaveHook`].
struct UserHooks<T, H>(H, PhantomData<fn() -> T>);

impl<T: Float, H: SavedTensorsHooks<T> + 'static> SaveHook for UserHooks<T, H> {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn label(&self) -> String {
        "saved_tensors_hooks".to_string()
    }

    fn pack(&self, value: &dyn AnyHeld, info: &SaveInfo<'_>) -> Option<Packed> {
        let held = value.as_any().downcast_ref::<Held<T>>()?;
        let saved = SaveContext {
            op: info.op,
            role: info.role.to_string(),
        };
        Some(Box::new(
            self.0.pack_saved(Tensor::from_value(held.value.clone()), &saved),
        ))
    }

    fn unpack(&self, packed: &Packed, info: &SaveInfo<'_>) -> Box<dyn AnyHeld> {
        let packed = packed
            .downcast_ref::<H::Packed>()
            .expect("a value comes back to the hook that packed it");
        let _ = info; // the node checks the shape
        Box::new(Held::new(self.0.unpack(packed).value()))
    }
}
