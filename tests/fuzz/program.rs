//! The fuzzer's programs: a small AST over a list of registers (tensors),
//! and a generator that makes one from a seed. The generator keeps a model
//! of every register (shape, requires_grad, leaf or not), so that it knows
//! which instructions are valid and what they must produce; an invalid one
//! is made on purpose, and names the op whose panic it expects.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A register: an index into the scope's list of tensors.
pub type Reg = usize;

/// A program: leaves, instructions over registers, then a backward.
#[derive(Debug, Clone)]
pub struct Program {
    /// The seed it was made from (also the crate RNG's seed for dropout).
    pub seed: u64,
    /// The leaves, registers `0..leaves.len()`.
    pub leaves: Vec<Leaf>,
    /// The forward, run in order.
    pub body: Vec<Instr>,
    /// The model's shape and requires_grad of every register the forward
    /// makes (leaves first).
    pub registers: Vec<(Vec<usize>, bool)>,
    /// The register differentiated (`None`: the model has no register
    /// that requires grad, so backward must panic).
    pub output: Option<Reg>,
    /// The loss is `(output * weights).sum()`.
    pub weights: Vec<f64>,
    /// How backward is called.
    pub backward: Backward,
    /// Whether backward runs in another thread than the forward.
    pub backward_thread: bool,
    /// Substrings of panic messages that backward may raise (in-place
    /// writes to saved values, a hook returning a wrong shape, ...).
    pub backward_may_panic: Vec<&'static str>,
}

/// A leaf tensor.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub shape: Vec<usize>,
    pub requires_grad: bool,
    pub data: Vec<f64>,
}

/// How the program's backward is called.
#[derive(Debug, Clone, PartialEq)]
pub enum Backward {
    /// `loss.backward()`.
    Once,
    /// Two backwards, the first with `retain_graph` as given; the second
    /// accumulates (or, without retain_graph, may panic naming it).
    Twice { retain_graph: bool },
    /// `tapegrad::grad(&[loss], leaves)`: no `.grad` is touched.
    Grad,
    /// `output.backward_with(weights)`, the gradient of the same loss.
    With,
    /// `grad` with `retain_graph` for the leaves and these registers (any
    /// that require grad, intermediates too), then a backward with the
    /// registers retaining their gradients: the same gradients.
    Mid(Vec<Reg>),
    /// `grad` with `create_graph`, then the backward of
    /// `Σ (g_i * v_i).sum()`: second derivatives in `.grad`.
    Double,
}

/// One instruction. Each valid one appends one register to its scope,
/// except `InPlace`, `Hook` and `RetainGrad`, which append none, and
/// `Mode`, which appends its body's.
#[derive(Debug, Clone)]
pub enum Instr {
    /// `op` on register `a`.
    Unary { op: Unary, a: Reg },
    /// `op` on registers `a` and `b` (broadcasting).
    Binary { op: Binary, a: Reg, b: Reg, valid: bool },
    /// A reduction, shape op or other op with integer arguments.
    Shape { op: ShapeOp, a: Reg, valid: bool },
    /// `Tensor::cat` (`stack: false`) or `Tensor::stack` of registers.
    Join {
        stack: bool,
        regs: Vec<Reg>,
        dim: usize,
        valid: bool,
    },
    /// `a.detach()`.
    Detach { a: Reg },
    /// `nn::functional::scaled_dot_product_attention(q, k, v)` with the
    /// composed kernel (`block: None`), or the tiled one with that block
    /// (`Some(0)`: `AttentionKernel::Auto`).
    Attention {
        q: Reg,
        k: Reg,
        v: Reg,
        causal: bool,
        block: Option<usize>,
        valid: bool,
    },
    /// `body` under `no_grad` (`enabled: false`) or `enable_grad`; its
    /// registers join the enclosing scope.
    Mode {
        enabled: bool,
        body: Vec<Instr>,
        valid: bool,
    },
    /// `tapegrad::checkpoint(f, inputs)`, `f` running `body` over a scope
    /// made of the inputs and returning register `out` of it.
    /// With `save_dots`, `checkpoint_with` and `CheckpointPolicy::SaveDots`
    /// (the forward keeps the matrix products).
    Checkpoint {
        inputs: Vec<Reg>,
        body: Vec<Instr>,
        out: Reg,
        save_dots: bool,
        valid: bool,
    },
    /// An in-place update of `dst`.
    InPlace { op: InPlaceOp, dst: Reg, valid: bool },
    /// `register_hook` on `a`.
    Hook { a: Reg, hook: HookKind, valid: bool },
    /// `retain_grad` on `a`.
    RetainGrad { a: Reg, valid: bool },
    /// `remove()` of the handle of the `k`-th hook registered outside
    /// checkpoints (nothing if removed already).
    RemoveHook { k: usize },
    /// `body` under `saved_tensors_hooks` whose pack copies the value's
    /// data out and whose unpack makes a tensor of it again (in the run
    /// with checkpoints; the other runs the body as it is); its registers
    /// join the enclosing scope.
    SavedHooks { body: Vec<Instr>, valid: bool },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    Exp,
    Tanh,
    Sigmoid,
    Sin,
    Cos,
    Relu,
    Abs,
    Softplus,
    Gelu,
    Erf,
    LeakyRelu,
    Clamp,
    Square,
    Cube,
    Neg,
    /// `a * 1.5 + 0.25`.
    Affine,
    /// `(a * a + 0.5).ln()`.
    LnSq,
    /// `(a * a + 0.5).sqrt()`.
    SqrtSq,
    /// `a³` as a `CustomOp` (once-differentiable: a double backward
    /// through it panics naming it).
    CustomCube,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    /// `a / (b * b + 1)`.
    Div,
    Maximum,
    Minimum,
    Matmul,
    /// `a.mse_loss(b)`: shapes must be equal here (PyTorch broadcasts with a warning).
    Mse,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ShapeOp {
    Sum,
    Mean,
    SumDim(usize, bool),
    MeanDim(usize, bool),
    VarDim(usize, bool),
    MaxDim(usize, bool),
    MinDim(usize, bool),
    LogsumexpDim(usize, bool),
    Softmax(usize),
    LogSoftmax(usize),
    Reshape(Vec<usize>),
    Transpose(usize, usize),
    T,
    Permute(Vec<usize>),
    Unsqueeze(usize),
    Squeeze(usize),
    Narrow(usize, usize, usize),
    BroadcastTo(Vec<usize>),
    Dropout(f64),
    /// `layer_norm` over the given last dimensions, without weight or bias.
    LayerNorm(Vec<usize>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum InPlaceOp {
    /// `dst.add_(src)` (under `no_grad` if `no_grad`).
    Add {
        src: Reg,
        no_grad: bool,
    },
    Sub {
        src: Reg,
        no_grad: bool,
    },
    Mul {
        src: Reg,
        no_grad: bool,
    },
    Copy {
        src: Reg,
        no_grad: bool,
    },
    Fill {
        v: f64,
        no_grad: bool,
    },
    AddScalar {
        v: f64,
        no_grad: bool,
    },
    MulScalar {
        v: f64,
        no_grad: bool,
    },
    Addcmul {
        a: Reg,
        b: Reg,
        v: f64,
        no_grad: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HookKind {
    /// Returns `None` (counts its calls).
    Observe,
    /// Returns `Some(g * c)`.
    Scale(f64),
    /// Returns a gradient of another shape: backward panics if it runs.
    WrongShape,
}

impl Unary {
    const ALL: [Unary; 19] = [
        Unary::Exp,
        Unary::Tanh,
        Unary::Sigmoid,
        Unary::Sin,
        Unary::Cos,
        Unary::Relu,
        Unary::Abs,
        Unary::Softplus,
        Unary::Gelu,
        Unary::Erf,
        Unary::LeakyRelu,
        Unary::Clamp,
        Unary::Square,
        Unary::Cube,
        Unary::Neg,
        Unary::Affine,
        Unary::LnSq,
        Unary::SqrtSq,
        Unary::CustomCube,
    ];
}

impl Binary {
    /// The name the op's panics start with.
    pub fn name(self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Sub => "sub",
            Binary::Mul => "mul",
            Binary::Div => "div",
            Binary::Maximum => "maximum",
            Binary::Minimum => "minimum",
            Binary::Matmul => "matmul",
            Binary::Mse => "mse_loss",
        }
    }
}

impl ShapeOp {
    /// The name the op's panics start with.
    pub fn name(&self) -> &'static str {
        match self {
            ShapeOp::Sum => "sum",
            ShapeOp::Mean => "mean",
            ShapeOp::SumDim(..) => "sum_dim",
            ShapeOp::MeanDim(..) => "mean_dim",
            ShapeOp::VarDim(..) => "var_dim",
            ShapeOp::MaxDim(..) => "max_dim",
            ShapeOp::MinDim(..) => "min_dim",
            ShapeOp::LogsumexpDim(..) => "logsumexp_dim",
            ShapeOp::Softmax(_) => "softmax",
            ShapeOp::LogSoftmax(_) => "log_softmax",
            ShapeOp::Reshape(_) => "reshape",
            ShapeOp::Transpose(..) => "transpose",
            ShapeOp::T => "t",
            ShapeOp::Permute(_) => "permute",
            ShapeOp::Unsqueeze(_) => "unsqueeze",
            ShapeOp::Squeeze(_) => "squeeze",
            ShapeOp::Narrow(..) => "narrow",
            ShapeOp::BroadcastTo(_) => "broadcast_to",
            ShapeOp::Dropout(_) => "dropout",
            ShapeOp::LayerNorm(_) => "layer_norm",
        }
    }
}

impl InPlaceOp {
    /// The name the op's panics start with.
    pub fn name(&self) -> &'static str {
        match self {
            InPlaceOp::Add { .. } => "add_",
            InPlaceOp::Sub { .. } => "sub_",
            InPlaceOp::Mul { .. } => "mul_",
            InPlaceOp::Copy { .. } => "copy_",
            InPlaceOp::Fill { .. } => "fill_",
            InPlaceOp::AddScalar { .. } => "add_scalar_",
            InPlaceOp::MulScalar { .. } => "mul_scalar_",
            InPlaceOp::Addcmul { .. } => "addcmul_",
        }
    }

    /// Whether it runs under `no_grad`.
    pub fn no_grad(&self) -> bool {
        match *self {
            InPlaceOp::Add { no_grad, .. }
            | InPlaceOp::Sub { no_grad, .. }
            | InPlaceOp::Mul { no_grad, .. }
            | InPlaceOp::Copy { no_grad, .. }
            | InPlaceOp::Fill { no_grad, .. }
            | InPlaceOp::AddScalar { no_grad, .. }
            | InPlaceOp::MulScalar { no_grad, .. }
            | InPlaceOp::Addcmul { no_grad, .. } => no_grad,
        }
    }

    /// The registers it reads besides `dst`.
    pub fn operands(&self) -> Vec<Reg> {
        match *self {
            InPlaceOp::Add { src, .. }
            | InPlaceOp::Sub { src, .. }
            | InPlaceOp::Mul { src, .. }
            | InPlaceOp::Copy { src, .. } => vec![src],
            InPlaceOp::Addcmul { a, b, .. } => vec![a, b],
            _ => vec![],
        }
    }
}

impl Instr {
    /// Whether the model says it runs without a panic.
    pub fn valid(&self) -> bool {
        match self {
            Instr::Unary { .. } | Instr::Detach { .. } | Instr::RemoveHook { .. } => true,
            Instr::Binary { valid, .. }
            | Instr::Shape { valid, .. }
            | Instr::Join { valid, .. }
            | Instr::Mode { valid, .. }
            | Instr::Attention { valid, .. }
            | Instr::SavedHooks { valid, .. }
            | Instr::Checkpoint { valid, .. }
            | Instr::InPlace { valid, .. }
            | Instr::Hook { valid, .. }
            | Instr::RetainGrad { valid, .. } => *valid,
        }
    }

    /// The op whose panic an invalid instruction expects (the first
    /// invalid one of a body).
    pub fn expected_panic(&self) -> Option<&'static str> {
        if self.valid() {
            return None;
        }
        Some(match self {
            Instr::Binary { op, .. } => op.name(),
            Instr::Shape { op, .. } => op.name(),
            Instr::Join { stack: true, .. } => "stack",
            Instr::Join { stack: false, .. } => "cat",
            Instr::Mode { body, .. } | Instr::Checkpoint { body, .. } | Instr::SavedHooks { body, .. } => {
                return body.iter().find_map(Instr::expected_panic)
            }
            Instr::InPlace { op, .. } => op.name(),
            Instr::Attention { .. } => "scaled_dot_product_attention",
            Instr::Hook { .. } => "register_hook",
            Instr::RetainGrad { .. } => "retain_grad",
            Instr::Unary { .. } | Instr::Detach { .. } | Instr::RemoveHook { .. } => {
                unreachable!("always valid")
            }
        })
    }

    /// Whether it (or its body) uses `checkpoint` or `saved_tensors_hooks`.
    pub fn has_checkpoint(&self) -> bool {
        match self {
            Instr::Checkpoint { .. } | Instr::SavedHooks { .. } => true,
            Instr::Mode { body, .. } => body.iter().any(Instr::has_checkpoint),
            _ => false,
        }
    }

    /// Whether it (or its body) registers a hook that changes gradients.
    pub fn changes_gradients(&self) -> bool {
        match self {
            Instr::Hook {
                hook: HookKind::Scale(c),
                ..
            } => *c != 1.0,
            Instr::Mode { body, .. } | Instr::Checkpoint { body, .. } | Instr::SavedHooks { body, .. } => {
                body.iter().any(Instr::changes_gradients)
            }
            _ => false,
        }
    }
}

impl Program {
    /// Whether the program uses `checkpoint` or `saved_tensors_hooks`
    /// (else the run without them would be the same run).
    pub fn has_checkpoint(&self) -> bool {
        self.body.iter().any(Instr::has_checkpoint)
    }

    /// Whether it registers a hook.
    pub fn has_hooks(&self) -> bool {
        fn any(body: &[Instr]) -> bool {
            body.iter().any(|i| match i {
                Instr::Hook { .. } => true,
                Instr::Mode { body, .. }
                | Instr::Checkpoint { body, .. }
                | Instr::SavedHooks { body, .. } => any(body),
                _ => false,
            })
        }
        any(&self.body)
    }

    /// Whether a hook changes gradients (then they are not the function's
    /// derivatives, and finite differences cannot check them).
    pub fn changes_gradients(&self) -> bool {
        self.body.iter().any(Instr::changes_gradients)
    }
}

/// What the model knows of a register.
#[derive(Debug, Clone)]
struct Info {
    shape: Vec<usize>,
    requires_grad: bool,
    leaf: bool,
    /// An op read it, or an op made it (and may have saved it): an
    /// in-place write to it may make backward panic.
    maybe_saved: bool,
    /// The tensor handle: registers with the same one are clones (an op
    /// that returns its input, as `t()` of a 1-D tensor), which see each
    /// other's in-place writes.
    handle: usize,
}

/// Marks register `r` (and its clones) as maybe saved.
fn mark_saved(scope: &mut [Info], r: Reg) {
    let h = scope[r].handle;
    for info in scope.iter_mut().filter(|i| i.handle == h) {
        info.maybe_saved = true;
    }
}

/// A fresh handle id.
fn fresh_handle() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The generator: an RNG and the model of the scope being generated.
struct Gen {
    rng: SmallRng,
    /// Whether an instruction made here records (grad mode).
    grad: bool,
    /// Checkpoint nesting depth.
    depth: usize,
    /// Whether instructions are generated inside a block (a checkpoint's
    /// or a mode's body), where nothing runs after a panic.
    in_block: bool,
    /// Hooks registered outside checkpoints so far.
    hooks: usize,
    backward_may_panic: Vec<&'static str>,
}

/// Generates the program of `seed`.
pub fn generate(seed: u64) -> Program {
    let mut g = Gen {
        rng: SmallRng::seed_from_u64(seed),
        grad: true,
        depth: 0,
        in_block: false,
        hooks: 0,
        backward_may_panic: vec![],
    };
    let n_leaves = g.rng.random_range(1..=3);
    let mut scope = vec![];
    let mut leaves = vec![];
    for i in 0..n_leaves {
        let shape = g.shape();
        let requires_grad = i == 0 || g.rng.random_bool(0.7);
        let data = (0..shape.iter().product::<usize>())
            .map(|_| g.rng.random_range(-2.0..2.0))
            .collect();
        scope.push(Info {
            shape: shape.clone(),
            requires_grad,
            leaf: true,
            maybe_saved: false,
            handle: fresh_handle(),
        });
        leaves.push(Leaf {
            shape,
            requires_grad,
            data,
        });
    }
    // Now and then a long program.
    let len = if g.rng.random_bool(0.02) {
        g.rng.random_range(30..=120)
    } else {
        g.rng.random_range(1..=10)
    };
    let body = g.body(&mut scope, len);
    let output = (0..scope.len())
        .rev()
        .find(|&r| scope[r].requires_grad && (r >= n_leaves || g.rng.random_bool(0.5)))
        .or_else(|| (0..scope.len()).rev().find(|&r| scope[r].requires_grad));
    let out_numel = output.map_or(0, |r| scope[r].shape.iter().product());
    let weights = (0..out_numel).map(|_| g.rng.random_range(-1.0..1.0)).collect();
    let needing: Vec<Reg> = (0..scope.len()).filter(|&r| scope[r].requires_grad).collect();
    let backward = match g.rng.random_range(0..10) {
        9 if !needing.is_empty() => Backward::Mid(
            (0..g.rng.random_range(1..=2))
                .map(|_| needing[g.rng.random_range(0..needing.len())])
                .collect(),
        ),
        0 | 1 => Backward::Once,
        2 | 8 => Backward::With,
        3 => Backward::Twice { retain_graph: true },
        4 => Backward::Twice { retain_graph: false },
        5 | 6 => Backward::Grad,
        _ => Backward::Double,
    };
    if backward == (Backward::Twice { retain_graph: false }) {
        g.backward_may_panic
            .push("trying to backward through the graph a second time");
    }
    let backward_thread = g.rng.random_bool(0.15);
    let backward_may_panic = g.backward_may_panic;
    let registers = scope.iter().map(|i| (i.shape.clone(), i.requires_grad)).collect();
    Program {
        seed,
        leaves,
        body,
        registers,
        output,
        weights,
        backward,
        backward_thread,
        backward_may_panic,
    }
}

/// Whether `a` and `b` broadcast together, and to what (NumPy's rule).
pub fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let x = if i < n - a.len() { 1 } else { a[i - (n - a.len())] };
        let y = if i < n - b.len() { 1 } else { b[i - (n - b.len())] };
        out[i] = match (x, y) {
            _ if x == y => x,
            (1, _) => y,
            (_, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// The shape of `a @ b` (PyTorch's rules, 1-D operands included).
pub fn matmul_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (a2, b2) = (
        if a.len() == 1 { vec![1, a[0]] } else { a.to_vec() },
        if b.len() == 1 { vec![b[0], 1] } else { b.to_vec() },
    );
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return None;
    }
    let mut out = broadcast(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Some(out)
}

impl Gen {
    fn shape(&mut self) -> Vec<usize> {
        let ndim = self.rng.random_range(0..=3);
        (0..ndim).map(|_| self.size()).collect()
    }

    /// A dimension's size: mostly 1 to 3 (small enough for central
    /// differences), now and then 0, or large enough for the kernels'
    /// blocked and pooled paths (a sum's blocks of 256, buffers of 64 KiB
    /// from the pool).
    fn size(&mut self) -> usize {
        match self.rng.random_range(0..100) {
            0..=3 => 0,
            4..=6 => self.rng.random_range(4..=48),
            _ => self.rng.random_range(1..=3),
        }
    }

    fn pick(&mut self, scope: &[Info]) -> Reg {
        // Recent registers more often: programs grow chains, not fans.
        let n = scope.len();
        if self.rng.random_bool(0.6) {
            n - 1 - self.rng.random_range(0..n.min(3))
        } else {
            self.rng.random_range(0..n)
        }
    }

    /// A register whose shape satisfies `fits`, else any.
    fn pick_fitting(&mut self, scope: &[Info], fits: impl Fn(&[usize]) -> bool) -> Reg {
        let fitting: Vec<Reg> = (0..scope.len()).filter(|&r| fits(&scope[r].shape)).collect();
        if fitting.is_empty() || self.rng.random_bool(0.05) {
            self.pick(scope)
        } else {
            fitting[self.rng.random_range(0..fitting.len())]
        }
    }

    /// A dimension of an `ndim`-D tensor, out of range now and then.
    fn dim(&mut self, ndim: usize, extra: usize) -> usize {
        if self.rng.random_bool(0.05) {
            ndim + extra + self.rng.random_range(0..2)
        } else {
            self.rng.random_range(0..(ndim + extra).max(1))
        }
    }

    fn output(&self, scope: &mut Vec<Info>, shape: Vec<usize>, inputs: &[Reg]) {
        let requires_grad = self.grad && inputs.iter().any(|&r| scope[r].requires_grad);
        for &r in inputs {
            mark_saved(scope, r);
        }
        scope.push(Info {
            shape,
            requires_grad,
            leaf: !requires_grad,
            maybe_saved: requires_grad,
            handle: fresh_handle(),
        });
    }

    /// `len` instructions appended to `body`, the model in `scope`.
    fn body(&mut self, scope: &mut Vec<Info>, len: usize) -> Vec<Instr> {
        let mut body = vec![];
        for _ in 0..len {
            let instr = self.instr(scope);
            let valid = instr.valid();
            body.push(instr);
            // Inside a body, nothing runs after a panic.
            if !valid && self.in_block {
                break;
            }
        }
        body
    }

    fn instr(&mut self, scope: &mut Vec<Info>) -> Instr {
        match self.rng.random_range(0..100) {
            0..=24 => {
                let a = self.pick(scope);
                let op = Unary::ALL[self.rng.random_range(0..Unary::ALL.len())];
                if op == Unary::CustomCube {
                    self.backward_may_panic
                        .push("CustomOp cube is once-differentiable");
                }
                self.output(scope, scope[a].shape.clone(), &[a]);
                Instr::Unary { op, a }
            }
            25..=44 => self.binary(scope),
            45..=64 => self.shape_op(scope),
            65..=67 => self.join(scope),
            68..=69 => self.attention(scope),
            70..=72 => {
                let a = self.pick(scope);
                scope.push(Info {
                    shape: scope[a].shape.clone(),
                    requires_grad: false,
                    leaf: true,
                    maybe_saved: false,
                    handle: fresh_handle(),
                });
                Instr::Detach { a }
            }
            73..=75 => self.mode(scope),
            76..=77 if self.hooks > 0 && self.depth == 0 && self.rng.random_bool(0.5) => Instr::RemoveHook {
                k: self.rng.random_range(0..self.hooks),
            },
            76..=77 => self.saved_hooks(scope),
            78..=85 if self.depth < 2 => self.checkpoint(scope),
            86..=91 if self.depth == 0 && self.grad => self.in_place(scope),
            92..=96 => {
                let a = self.pick(scope);
                let valid = scope[a].requires_grad;
                let hook = match self.rng.random_range(0..10) {
                    0..=4 => HookKind::Observe,
                    5..=8 => HookKind::Scale([1.0, 2.0, -0.5][self.rng.random_range(0..3)]),
                    _ => HookKind::WrongShape,
                };
                if valid && hook == HookKind::WrongShape {
                    self.backward_may_panic
                        .push("register_hook: a hook returned a gradient of shape");
                }
                if valid && self.depth == 0 {
                    self.hooks += 1;
                }
                Instr::Hook { a, hook, valid }
            }
            _ => {
                let a = self.pick(scope);
                Instr::RetainGrad {
                    a,
                    valid: scope[a].requires_grad,
                }
            }
        }
    }

    fn binary(&mut self, scope: &mut Vec<Info>) -> Instr {
        let op = [
            Binary::Add,
            Binary::Sub,
            Binary::Mul,
            Binary::Div,
            Binary::Maximum,
            Binary::Minimum,
            Binary::Matmul,
            Binary::Matmul,
            Binary::Mse,
        ][self.rng.random_range(0..9)];
        let a = self.pick(scope);
        let sa = scope[a].shape.clone();
        let b = match op {
            Binary::Matmul => self.pick_fitting(scope, |s| matmul_shape(&sa, s).is_some()),
            Binary::Mse => self.pick_fitting(scope, |s| s == sa),
            _ => self.pick_fitting(scope, |s| broadcast(&sa, s).is_some()),
        };
        let sb = &scope[b].shape;
        let shape = match op {
            Binary::Matmul => matmul_shape(&sa, sb),
            Binary::Mse => (sa == *sb).then(Vec::new),
            _ => broadcast(&sa, sb),
        };
        let valid = shape.is_some();
        if let Some(shape) = shape {
            self.output(scope, shape, &[a, b]);
        }
        Instr::Binary { op, a, b, valid }
    }

    fn shape_op(&mut self, scope: &mut Vec<Info>) -> Instr {
        let a = self.pick(scope);
        let s = scope[a].shape.clone();
        let n = s.len();
        let keep = self.rng.random_bool(0.5);
        let d = self.dim(n, 0);
        let removed = |keep: bool| -> Vec<usize> {
            let mut out = s.clone();
            if keep {
                out[d] = 1;
            } else {
                out.remove(d);
            }
            out
        };
        let (op, shape) = match self.rng.random_range(0..20) {
            0 => (ShapeOp::Sum, Some(vec![])),
            1 => (ShapeOp::Mean, Some(vec![])),
            2 => (ShapeOp::SumDim(d, keep), (d < n).then(|| removed(keep))),
            3 => (ShapeOp::MeanDim(d, keep), (d < n).then(|| removed(keep))),
            4 => (ShapeOp::VarDim(d, keep), (d < n).then(|| removed(keep))),
            5 => (
                ShapeOp::MaxDim(d, keep),
                (d < n && s[d] > 0).then(|| removed(keep)),
            ),
            6 => (
                ShapeOp::MinDim(d, keep),
                (d < n && s[d] > 0).then(|| removed(keep)),
            ),
            7 => (ShapeOp::LogsumexpDim(d, keep), (d < n).then(|| removed(keep))),
            8 => (ShapeOp::Softmax(d), (d < n).then(|| s.clone())),
            9 => (ShapeOp::LogSoftmax(d), (d < n).then(|| s.clone())),
            10 => {
                let numel: usize = s.iter().product();
                let valid = self.rng.random_bool(0.93);
                let to = self.factor(if valid { numel } else { numel + 1 });
                (ShapeOp::Reshape(to.clone()), valid.then_some(to))
            }
            11 => {
                let d1 = self.dim(n, 0);
                let mut out = s.clone();
                let valid = d < n && d1 < n;
                if valid {
                    out.swap(d, d1);
                }
                (ShapeOp::Transpose(d, d1), valid.then_some(out))
            }
            12 => {
                let out = if n == 2 {
                    Some(vec![s[1], s[0]])
                } else {
                    (n < 2).then(|| s.clone())
                };
                (ShapeOp::T, out)
            }
            13 => {
                let mut order: Vec<usize> = (0..n).collect();
                for i in (1..n).rev() {
                    order.swap(i, self.rng.random_range(0..=i));
                }
                let valid = self.rng.random_bool(0.93);
                if !valid {
                    if n > 1 && self.rng.random_bool(0.5) {
                        order[0] = order[n - 1];
                    } else {
                        order.push(n);
                    }
                }
                let out = order.iter().map(|&i| s.get(i).copied().unwrap_or(0)).collect();
                (ShapeOp::Permute(order), valid.then_some(out))
            }
            14 => {
                let d = self.dim(n, 1);
                let out = (d <= n).then(|| {
                    let mut out = s.clone();
                    out.insert(d, 1);
                    out
                });
                (ShapeOp::Unsqueeze(d), out)
            }
            15 => {
                let out = (d < n).then(|| if s[d] == 1 { removed(false) } else { s.clone() });
                (ShapeOp::Squeeze(d), out)
            }
            16 => {
                let size = if d < n { s[d] } else { 1 };
                let start = self.rng.random_range(0..=size);
                let mut len = self.rng.random_range(0..=size - start);
                if self.rng.random_bool(0.05) {
                    len += 1;
                }
                let out = (d < n && start + len <= size).then(|| {
                    let mut out = s.clone();
                    out[d] = len;
                    out
                });
                (ShapeOp::Narrow(d, start, len), out)
            }
            17 => {
                let mut to: Vec<usize> = (0..self.rng.random_range(0..=1)).map(|_| self.size()).collect();
                for &x in &s {
                    to.push(if x == 1 { self.size() } else { x });
                }
                if self.rng.random_bool(0.07) && !to.is_empty() {
                    let i = self.rng.random_range(0..to.len());
                    to[i] += 1;
                }
                let ok = broadcast(&s, &to).is_some_and(|b| b == to);
                (ShapeOp::BroadcastTo(to.clone()), ok.then_some(to))
            }
            18 => {
                let mut ns = s[n - self.rng.random_range(0..=n)..].to_vec();
                if self.rng.random_bool(0.07) {
                    match ns.first_mut() {
                        Some(first) => *first += 1,
                        None => ns.push(s.first().map_or(2, |f| f + 1)),
                    }
                }
                let valid = !ns.is_empty() && s.ends_with(&ns);
                (ShapeOp::LayerNorm(ns), valid.then(|| s.clone()))
            }
            _ => {
                let p = [0.0, 0.3, 0.5, 1.0, 1.5][self.rng.random_range(0..5)];
                (ShapeOp::Dropout(p), (p <= 1.0).then(|| s.clone()))
            }
        };
        let valid = shape.is_some();
        // These return their input's handle (as PyTorch returns a view).
        let same = match op {
            ShapeOp::T => n < 2,
            ShapeOp::Squeeze(d) => d < n && s[d] != 1,
            ShapeOp::Dropout(p) => p == 0.0,
            _ => false,
        };
        match shape {
            Some(_) if same => {
                mark_saved(scope, a);
                scope.push(scope[a].clone());
            }
            Some(shape) => self.output(scope, shape, &[a]),
            None => {}
        }
        Instr::Shape { op, a, valid }
    }

    /// A random shape of `numel` elements.
    fn factor(&mut self, numel: usize) -> Vec<usize> {
        let mut out = vec![];
        let mut left = numel;
        while left > 1 && out.len() < 3 {
            let divisors: Vec<usize> = (2..=left).filter(|d| left.is_multiple_of(*d)).collect();
            let d = divisors[self.rng.random_range(0..divisors.len())];
            out.push(d);
            left /= d;
        }
        if left != 1 {
            out.push(left);
        }
        if self.rng.random_bool(0.3) {
            let at = self.rng.random_range(0..=out.len());
            out.insert(at, 1);
        }
        out
    }

    fn attention(&mut self, scope: &mut Vec<Info>) -> Instr {
        let q = self.pick(scope);
        let qs = scope[q].shape.clone();
        let e = qs.last().copied();
        let k = self.pick_fitting(scope, |s| s.len() >= 2 && s.last().copied() == e);
        let keys = scope[k].shape.len().checked_sub(2).map(|i| scope[k].shape[i]);
        let v = self.pick_fitting(scope, |s| s.len() >= 2 && Some(s[s.len() - 2]) == keys);
        let (ks, vs) = (scope[k].shape.clone(), scope[v].shape.clone());
        let shape = (qs.len() >= 2 && ks.len() >= 2 && vs.len() >= 2)
            .then_some(())
            .filter(|_| e == ks.last().copied() && keys == Some(vs[vs.len() - 2]))
            .and_then(|_| {
                let batch = |x: &[usize]| x[..x.len() - 2].to_vec();
                let b = broadcast(&batch(&qs), &batch(&ks))?;
                let mut out = broadcast(&b, &batch(&vs))?;
                out.extend([qs[qs.len() - 2], vs[vs.len() - 1]]);
                Some(out)
            });
        let valid = shape.is_some();
        if let Some(shape) = shape {
            self.output(scope, shape, &[q, k, v]);
        }
        let block = match self.rng.random_range(0..4) {
            0 => None,
            1 => Some(0),
            _ => Some(self.rng.random_range(1..=4)),
        };
        Instr::Attention {
            q,
            k,
            v,
            causal: self.rng.random_bool(0.5),
            block,
            valid,
        }
    }

    fn join(&mut self, scope: &mut Vec<Info>) -> Instr {
        let stack = self.rng.random_bool(0.4);
        let first = self.pick(scope);
        let s = scope[first].shape.clone();
        let count = self.rng.random_range(1..=3);
        let dim = self.dim(s.len(), stack as usize);
        let mut regs = vec![first];
        for _ in 1..count {
            let fits = |t: &[usize]| {
                if stack {
                    t == s
                } else {
                    t.len() == s.len() && (0..s.len()).all(|i| i == dim || t[i] == s[i])
                }
            };
            regs.push(self.pick_fitting(scope, fits));
        }
        let shapes: Vec<&Vec<usize>> = regs.iter().map(|&r| &scope[r].shape).collect();
        let shape = if stack {
            (dim <= s.len() && shapes.iter().all(|t| **t == s)).then(|| {
                let mut out = s.clone();
                out.insert(dim, regs.len());
                out
            })
        } else {
            let same = shapes
                .iter()
                .all(|t| t.len() == s.len() && (0..s.len()).all(|i| i == dim || t[i] == s[i]));
            (dim < s.len() && same).then(|| {
                let mut out = s.clone();
                out[dim] = shapes.iter().map(|t| t[dim]).sum();
                out
            })
        };
        let valid = shape.is_some();
        if let Some(shape) = shape {
            self.output(scope, shape, &regs.clone());
        }
        Instr::Join {
            stack,
            regs,
            dim,
            valid,
        }
    }

    fn mode(&mut self, scope: &mut Vec<Info>) -> Instr {
        let enabled = !self.grad && self.rng.random_bool(0.7);
        let outer = std::mem::replace(&mut self.grad, enabled);
        let (body, valid) = self.block(scope);
        self.grad = outer;
        Instr::Mode { enabled, body, valid }
    }

    fn saved_hooks(&mut self, scope: &mut Vec<Info>) -> Instr {
        let (body, valid) = self.block(scope);
        Instr::SavedHooks { body, valid }
    }

    /// The body of a block whose registers join `scope` (a mode's, the
    /// saved-tensor hooks'), and whether it is valid.
    fn block(&mut self, scope: &mut Vec<Info>) -> (Vec<Instr>, bool) {
        let before = scope.len();
        let mut inner = scope.clone();
        let len = self.rng.random_range(1..=4);
        let block = std::mem::replace(&mut self.in_block, true);
        let body = self.body(&mut inner, len);
        self.in_block = block;
        let valid = body.iter().all(Instr::valid);
        if valid {
            *scope = inner;
        } else {
            // The registers made before the panic are gone; what they read
            // stays read.
            for (r, info) in inner.into_iter().take(before).enumerate() {
                if info.maybe_saved {
                    mark_saved(scope, r);
                }
            }
        }
        (body, valid)
    }

    fn checkpoint(&mut self, scope: &mut Vec<Info>) -> Instr {
        let n = self.rng.random_range(1..=2);
        let inputs: Vec<Reg> = (0..n).map(|_| self.pick(scope)).collect();
        let mut inner: Vec<Info> = inputs.iter().map(|&r| scope[r].clone()).collect();
        self.depth += 1;
        let len = self.rng.random_range(0..=4);
        let block = std::mem::replace(&mut self.in_block, true);
        let body = self.body(&mut inner, len);
        self.in_block = block;
        self.depth -= 1;
        let valid = body.iter().all(Instr::valid);
        // The last register made, or (an identity) an input.
        let out = if inner.len() > n && self.rng.random_bool(0.9) {
            inner.len() - 1
        } else {
            self.rng.random_range(0..inner.len())
        };
        for &r in &inputs {
            mark_saved(scope, r);
        }
        if valid {
            if out < n {
                // `f` returned its input: the checkpoint returns that handle.
                scope.push(scope[inputs[out]].clone());
            } else {
                // The body made it.
                scope.push(inner[out].clone());
            }
        }
        Instr::Checkpoint {
            inputs,
            body,
            out,
            save_dots: self.rng.random_bool(0.3),
            valid,
        }
    }

    fn in_place(&mut self, scope: &mut [Info]) -> Instr {
        let dst = self.pick(scope);
        let no_grad = self.rng.random_bool(0.5);
        let d = scope[dst].clone();
        // On a tensor that requires grad (under no_grad), only additions:
        // the graph sees an update it did not record as the identity, which
        // is the derivative of `x + c` but not of `x * c`.
        let additive = d.requires_grad;
        let src = self.pick_fitting(scope, |s| broadcast(s, &d.shape).is_some_and(|b| b == d.shape));
        let v = [0.5, -1.0, 2.0][self.rng.random_range(0..3)];
        let op = match self.rng.random_range(0..8) {
            0 => InPlaceOp::Add { src, no_grad },
            1 => InPlaceOp::Sub { src, no_grad },
            2 if !additive => InPlaceOp::Mul { src, no_grad },
            3 if !additive => InPlaceOp::Copy { src, no_grad },
            4 if !additive => InPlaceOp::Fill { v, no_grad },
            5 if !additive => InPlaceOp::MulScalar { v, no_grad },
            6 if !additive => {
                let b = self.pick_fitting(scope, |s| broadcast(s, &d.shape).is_some_and(|b| b == d.shape));
                InPlaceOp::Addcmul {
                    a: src,
                    b,
                    v,
                    no_grad,
                }
            }
            _ => InPlaceOp::AddScalar { v, no_grad },
        };
        let operands = op.operands();
        let fits = operands
            .iter()
            .all(|&r| broadcast(&scope[r].shape, &d.shape).is_some_and(|b| b == d.shape));
        let checks =
            no_grad || (d.leaf && !d.requires_grad && operands.iter().all(|&r| !scope[r].requires_grad));
        let valid = fits && checks;
        if valid {
            if scope.iter().any(|i| i.handle == d.handle && i.maybe_saved) {
                self.backward_may_panic.push("modified by an inplace operation");
            }
            for &r in &operands {
                mark_saved(scope, r);
            }
        }
        Instr::InPlace { op, dst, valid }
    }
}
