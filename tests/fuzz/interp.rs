//! Runs a [`Program`] with tapegrad, and checks it: every instruction
//! panics exactly when the model says, with a message that starts with the
//! op's name; the registers have the model's shapes; the gradients are
//! those of the run without checkpoints and (on small cases) the central
//! differences of the forward in f64.

use super::program::{Backward, Binary, HookKind, InPlaceOp, Instr, Program, Reg, ShapeOp, Unary};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tapegrad::ndarray::ArrayD;
use tapegrad::prelude::*;

type T = Tensor<f64>;

/// How a run treats checkpoints and the values backward does not see.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Checkpoints run their body inline; the values made without
    /// recording (and in-place operands) are recorded.
    Plain,
    /// With `tapegrad::checkpoint`.
    Checkpointed,
    /// As `Plain`, but the recorded values are replayed: what backward
    /// treats as a constant stays one when the leaves move.
    Differences,
}

/// The interpreter's state for one run.
pub struct Ctx<'a> {
    mode: Mode,
    /// Values made without recording, in order (`Plain` writes them,
    /// `Differences` reads them).
    record: &'a mut Vec<Vec<f64>>,
    cursor: usize,
    hook_calls: Arc<AtomicUsize>,
    /// Top-level registers that retain their gradient.
    retained: Vec<Reg>,
    /// The handles of the hooks registered outside checkpoints.
    handles: Vec<Option<tapegrad::HookHandle>>,
    /// How deep in inline checkpoint bodies the run is.
    depth: usize,
    /// Whether an op met a tie (a kink at the point: `maximum` of equal
    /// values, `relu` of 0...), where a gradient is one subgradient of
    /// several and central differences need not agree with it.
    pub tie: bool,
    /// Whether a register held a value past 1e8 (where rounding alone
    /// moves a derivative that a long chain multiplies back up).
    pub huge: bool,
}

/// The panic message of a payload.
pub fn message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else {
        "(a panic without a message)".to_string()
    }
}

/// What one run gave.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The loss's value.
    pub loss: f64,
    /// The message, if backward panicked (as the program allowed).
    pub backward_panic: Option<String>,
    /// Per leaf that requires grad: its gradient (`.grad`, or `grad`'s
    /// result), second derivatives for [`Backward::Double`].
    pub grads: Vec<Option<Vec<f64>>>,
    /// For [`Backward::Double`]: the first derivatives; for
    /// [`Backward::Mid`], `grad`'s gradients of the registers.
    pub first: Vec<Option<Vec<f64>>>,
    /// The gradients kept by `retain_grad`.
    pub retained: Vec<Option<Vec<f64>>>,
    /// How many times the hooks ran.
    pub hook_calls: usize,
}

/// `x³` as a custom op.
struct Cube;

impl CustomOp<f64> for Cube {
    fn name(&self) -> &str {
        "cube"
    }
    fn forward(&self, inputs: &[ArrayD<f64>]) -> ArrayD<f64> {
        inputs[0].mapv(|x| x * x * x)
    }
    fn backward(&self, inputs: &[ArrayD<f64>], _: &ArrayD<f64>, g: &ArrayD<f64>) -> Vec<Option<ArrayD<f64>>> {
        vec![Some(inputs[0].mapv(|x| 3.0 * x * x) * g)]
    }
}

/// Saved-tensor hooks that keep a copy of the data (as a hook moving
/// values to disk would).
struct CopyOut;

impl SavedTensorsHooks<f64> for CopyOut {
    type Packed = (Vec<f64>, Vec<usize>);
    fn pack(&self, value: T) -> Self::Packed {
        (value.to_vec(), value.shape().to_vec())
    }
    fn unpack(&self, (data, shape): &Self::Packed) -> T {
        Tensor::from_vec(data.clone(), shape)
    }
}

/// The weights `Σ g_i · v_i` of [`Backward::Double`] for a leaf of `n`
/// elements.
fn double_weights(n: usize) -> Vec<f64> {
    (0..n).map(|i| ((i as f64) * 0.7 + 0.3).cos()).collect()
}

impl<'a> Ctx<'a> {
    pub fn new(mode: Mode, record: &'a mut Vec<Vec<f64>>) -> Self {
        Ctx {
            mode,
            record,
            cursor: 0,
            hook_calls: Arc::new(AtomicUsize::new(0)),
            retained: vec![],
            handles: vec![],
            depth: 0,
            tie: false,
            huge: false,
        }
    }

    /// Appends `out` to `scope`; a value backward does not see (made
    /// without recording, or detached) is recorded, or replayed.
    fn push(&mut self, scope: &mut Vec<T>, out: T, constant: bool) {
        if self.mode == Mode::Checkpointed {
            scope.push(out);
            return;
        }
        // A handle already in a register (an op returned its input) is
        // that register's value: it stays the same handle.
        if out.name().is_some() {
            scope.push(out);
            return;
        }
        let out = if constant && !out.requires_grad() {
            self.value(out)
        } else {
            out
        };
        if self.mode == Mode::Plain {
            self.huge |= out.to_vec().iter().any(|v| v.abs() > 1e8);
        }
        out.with_name(&format!("r{}", scope.len()));
        scope.push(out);
    }

    /// `t`, recorded (`Plain`) or replaced by the recorded value
    /// (`Differences`).
    fn value(&mut self, t: T) -> T {
        let k = self.cursor;
        self.cursor += 1;
        match self.mode {
            Mode::Plain => {
                self.record.push(t.to_vec());
                t
            }
            Mode::Differences => Tensor::from_vec(self.record[k].clone(), t.shape()),
            Mode::Checkpointed => t,
        }
    }

    /// Notes a tie at the inputs of `instr` (in the run without
    /// checkpoints, whose gradients central differences check).
    fn note_tie(&mut self, scope: &[T], instr: &Instr) {
        let any = |t: T, f: &dyn Fn(f64) -> bool| t.to_vec().into_iter().any(f);
        let tie = tapegrad::no_grad(|| match instr {
            Instr::Unary { op, a } => {
                let x = scope[*a].clone();
                match op {
                    Unary::Relu | Unary::Abs | Unary::LeakyRelu => any(x, &|v| v == 0.0),
                    Unary::Clamp => any(x, &|v| v.abs() == 1.0),
                    _ => false,
                }
            }
            Instr::Binary {
                op: Binary::Maximum | Binary::Minimum,
                a,
                b,
                valid: true,
            } => any(&scope[*a] - &scope[*b], &|v| v == 0.0),
            Instr::Shape {
                op: ShapeOp::MaxDim(d, _) | ShapeOp::MinDim(d, _),
                a,
                valid: true,
            } => {
                let x = &scope[*a];
                let m = match instr {
                    Instr::Shape {
                        op: ShapeOp::MaxDim(..),
                        ..
                    } => x.max_dim(*d, true),
                    _ => x.min_dim(*d, true),
                };
                any(x.eq_elem(&m).sum_dim(*d, false), &|v| v > 1.0)
            }
            _ => false,
        });
        self.tie |= tie;
    }

    /// Runs `instr` on `scope`; panics as the op does.
    fn exec(&mut self, scope: &mut Vec<T>, instr: &Instr) {
        if self.mode == Mode::Plain {
            self.note_tie(scope, instr);
        }
        let constant = !tapegrad::is_grad_enabled();
        match instr {
            Instr::Unary { op, a } => {
                let x = &scope[*a];
                let out = match op {
                    Unary::Exp => x.exp(),
                    Unary::Tanh => x.tanh(),
                    Unary::Sigmoid => x.sigmoid(),
                    Unary::Sin => x.sin(),
                    Unary::Cos => x.cos(),
                    Unary::Relu => x.relu(),
                    Unary::Abs => x.abs(),
                    Unary::Softplus => x.softplus(),
                    Unary::Gelu => x.gelu(),
                    Unary::Erf => x.erf(),
                    Unary::LeakyRelu => x.leaky_relu(0.1),
                    Unary::Clamp => x.clamp(-1.0, 1.0),
                    Unary::Square => x.powf(2.0),
                    Unary::Cube => x.powf(3.0),
                    Unary::Neg => -x,
                    Unary::Affine => x * 1.5 + 0.25,
                    Unary::LnSq => (x * x + 0.5).ln(),
                    Unary::SqrtSq => (x * x + 0.5).sqrt(),
                    Unary::CustomCube => Tensor::apply_op(Arc::new(Cube), &[x.clone()]),
                };
                self.push(scope, out, constant);
            }
            Instr::Binary { op, a, b, .. } => {
                let (x, y) = (&scope[*a], &scope[*b]);
                let out = match op {
                    Binary::Add => x + y,
                    Binary::Sub => x - y,
                    Binary::Mul => x * y,
                    Binary::Div => x / (y * y + 1.0),
                    Binary::Maximum => x.maximum(y),
                    Binary::Minimum => x.minimum(y),
                    Binary::Matmul => x.matmul(y),
                    Binary::Mse => x.mse_loss(y),
                };
                self.push(scope, out, constant);
            }
            Instr::Shape { op, a, .. } => {
                let x = &scope[*a];
                let out = match op {
                    ShapeOp::Sum => x.sum(),
                    ShapeOp::Mean => x.mean(),
                    ShapeOp::SumDim(d, k) => x.sum_dim(*d, *k),
                    ShapeOp::MeanDim(d, k) => x.mean_dim(*d, *k),
                    ShapeOp::VarDim(d, k) => x.var_dim(*d, *k),
                    ShapeOp::MaxDim(d, k) => x.max_dim(*d, *k),
                    ShapeOp::MinDim(d, k) => x.min_dim(*d, *k),
                    ShapeOp::LogsumexpDim(d, k) => x.logsumexp_dim(*d, *k),
                    ShapeOp::Softmax(d) => x.softmax(*d),
                    ShapeOp::LogSoftmax(d) => x.log_softmax(*d),
                    ShapeOp::Reshape(s) => x.reshape(s),
                    ShapeOp::Transpose(d0, d1) => x.transpose(*d0, *d1),
                    ShapeOp::T => x.t(),
                    ShapeOp::Permute(o) => x.permute(o),
                    ShapeOp::Unsqueeze(d) => x.unsqueeze(*d),
                    ShapeOp::Squeeze(d) => x.squeeze(*d),
                    ShapeOp::Narrow(d, s, l) => x.narrow(*d, *s, *l),
                    ShapeOp::BroadcastTo(s) => x.broadcast_to(s),
                    ShapeOp::Dropout(p) => x.dropout(*p, true),
                    ShapeOp::LayerNorm(ns) => x.layer_norm(ns, None, None, 1e-5),
                };
                self.push(scope, out, constant);
            }
            Instr::Join { stack, regs, dim, .. } => {
                let xs: Vec<T> = regs.iter().map(|&r| scope[r].clone()).collect();
                let out = if *stack {
                    Tensor::stack(&xs, *dim)
                } else {
                    Tensor::cat(&xs, *dim)
                };
                self.push(scope, out, constant);
            }
            Instr::Attention {
                q,
                k,
                v,
                causal,
                block,
                ..
            } => {
                use tapegrad::nn::functional::{
                    scaled_dot_product_attention, AttentionKernel, AttentionOptions,
                };
                let kernel = match block {
                    None => AttentionKernel::Composed,
                    Some(0) => AttentionKernel::Auto,
                    &Some(block) => AttentionKernel::Tiled { block },
                };
                let opts = AttentionOptions {
                    causal: *causal,
                    kernel,
                    ..Default::default()
                };
                let out = scaled_dot_product_attention(&scope[*q], &scope[*k], &scope[*v], &opts);
                self.push(scope, out, constant);
            }
            Instr::Detach { a } => {
                let out = scope[*a].detach();
                self.push(scope, out, true);
            }
            Instr::Mode { enabled, body, .. } => {
                let run = || {
                    for i in body {
                        self.exec(scope, i);
                    }
                };
                if *enabled {
                    tapegrad::enable_grad(run)
                } else {
                    tapegrad::no_grad(run)
                }
            }
            Instr::Checkpoint {
                inputs,
                body,
                out,
                save_dots,
                ..
            } => {
                let xs: Vec<T> = inputs.iter().map(|&r| scope[r].clone()).collect();
                if self.mode == Mode::Checkpointed {
                    let body = Arc::new(body.clone());
                    let calls = self.hook_calls.clone();
                    let out = *out;
                    let f = move |xs: &[T]| {
                        let mut none = vec![];
                        let mut ctx = Ctx::new(Mode::Checkpointed, &mut none);
                        ctx.hook_calls = calls.clone();
                        let mut scope = xs.to_vec();
                        for i in body.iter() {
                            ctx.exec(&mut scope, i);
                        }
                        scope[out].clone()
                    };
                    let y = if *save_dots {
                        let opts = CheckpointOptions {
                            policy: CheckpointPolicy::SaveDots,
                        };
                        tapegrad::checkpoint_with(f, &xs, opts)
                    } else {
                        tapegrad::checkpoint(f, &xs)
                    };
                    self.push(scope, y, constant);
                } else {
                    // Inline: the body's registers are its own (and named
                    // already).
                    let mut inner = xs;
                    self.depth += 1;
                    for i in body {
                        self.exec(&mut inner, i);
                    }
                    self.depth -= 1;
                    scope.push(inner[*out].clone());
                }
            }
            Instr::InPlace { op, dst, .. } => {
                let d = scope[*dst].clone();
                let operands: Vec<T> = op
                    .operands()
                    .iter()
                    .map(|&r| {
                        // Backward does not see an in-place operand (under
                        // no_grad; with recording, one that requires grad
                        // makes the op panic).
                        let t = scope[r].clone();
                        if op.no_grad() {
                            self.value(t)
                        } else {
                            t
                        }
                    })
                    .collect();
                let apply = || match op {
                    InPlaceOp::Add { .. } => d.add_(&operands[0]),
                    InPlaceOp::Sub { .. } => d.sub_(&operands[0]),
                    InPlaceOp::Mul { .. } => d.mul_(&operands[0]),
                    InPlaceOp::Copy { .. } => d.copy_(&operands[0]),
                    InPlaceOp::Fill { v, .. } => d.fill_(*v),
                    InPlaceOp::AddScalar { v, .. } => d.add_scalar_(*v),
                    InPlaceOp::MulScalar { v, .. } => d.mul_scalar_(*v),
                    InPlaceOp::Addcmul { v, .. } => d.addcmul_(&operands[0], &operands[1], *v),
                };
                if op.no_grad() {
                    tapegrad::no_grad(apply)
                } else {
                    apply()
                }
            }
            Instr::Hook { a, hook, .. } => {
                let calls = self.hook_calls.clone();
                let hook = *hook;
                let handle = scope[*a].register_hook(move |g| {
                    calls.fetch_add(1, Ordering::Relaxed);
                    match hook {
                        HookKind::Observe => None,
                        HookKind::Scale(c) => Some(g * c),
                        HookKind::WrongShape => Some(Tensor::zeros(&[g.numel() + 1])),
                    }
                });
                // Dropping a handle keeps the hook.
                if self.depth == 0 {
                    self.handles.push(Some(handle));
                }
            }
            Instr::RemoveHook { k } => {
                if let Some(handle) = self.handles.get_mut(*k).and_then(Option::take) {
                    handle.remove();
                }
            }
            Instr::SavedHooks { body, .. } => {
                let hooked = self.mode == Mode::Checkpointed;
                let mut run = || {
                    for i in body {
                        self.exec(scope, i);
                    }
                };
                if hooked {
                    tapegrad::saved_tensors_hooks(CopyOut, run)
                } else {
                    run()
                }
            }
            Instr::RetainGrad { a, .. } => {
                scope[*a].retain_grad();
                if self.depth == 0 {
                    self.retained.push(*a);
                }
            }
        }
    }

    /// Runs a top-level instruction: it must panic exactly when the model
    /// says, naming its op, and leave grad mode on.
    fn step(&mut self, scope: &mut Vec<T>, instr: &Instr) -> Result<(), String> {
        let before = scope.len();
        let retained = self.retained.len();
        let result = catch_unwind(AssertUnwindSafe(|| self.exec(scope, instr)));
        self.depth = 0;
        if !tapegrad::is_grad_enabled() {
            return Err(format!("grad mode left off after {instr:?}"));
        }
        match (result, instr.expected_panic()) {
            (Ok(()), None) => Ok(()),
            (Ok(()), Some(op)) => Err(format!(
                "no panic, but the model expects one from {op}: {instr:?}"
            )),
            (Err(p), None) => Err(format!("undocumented panic: {:?} in {instr:?}", message(&*p))),
            (Err(p), Some(op)) => {
                let msg = message(&*p);
                if !msg.starts_with(&format!("{op}: ")) {
                    return Err(format!("panic {msg:?} does not name {op}: {instr:?}"));
                }
                scope.truncate(before);
                self.retained.truncate(retained);
                if self.mode == Mode::Plain {
                    count(3, 1);
                }
                Ok(())
            }
        }
    }

    /// The leaves of `prog` (with `data` in place of theirs, if given).
    fn leaves(&mut self, prog: &Program, data: Option<&[Vec<f64>]>) -> Vec<T> {
        let mut scope = vec![];
        for (i, leaf) in prog.leaves.iter().enumerate() {
            let d = data.map_or_else(|| leaf.data.clone(), |d| d[i].clone());
            let t = Tensor::from_vec(d, &leaf.shape).set_requires_grad(leaf.requires_grad);
            if self.mode != Mode::Checkpointed {
                t.with_name(&format!("r{i}"));
            }
            scope.push(t);
        }
        scope
    }

    /// The forward: the leaves and the registers, checked against the
    /// model.
    pub fn forward(&mut self, prog: &Program, data: Option<&[Vec<f64>]>) -> Result<Vec<T>, String> {
        tapegrad::manual_seed(prog.seed);
        let mut scope = self.leaves(prog, data);
        for instr in &prog.body {
            self.step(&mut scope, instr)?;
        }
        if scope.len() != prog.registers.len() {
            return Err(format!(
                "{} registers, the model has {}",
                scope.len(),
                prog.registers.len()
            ));
        }
        for (r, (t, (shape, rg))) in scope.iter().zip(&prog.registers).enumerate() {
            if t.shape() != shape.as_slice() || t.requires_grad() != *rg {
                return Err(format!(
                    "register {r}: shape {:?}, requires_grad {}; the model has {shape:?}, {rg}",
                    t.shape(),
                    t.requires_grad()
                ));
            }
        }
        Ok(scope)
    }

    /// The loss of the forward's registers.
    pub fn loss(prog: &Program, scope: &[T]) -> T {
        let out = &scope[prog.output.unwrap_or(scope.len() - 1)];
        let w = if prog.output.is_some() {
            Tensor::from_vec(prog.weights.clone(), out.shape())
        } else {
            Tensor::ones(out.shape())
        };
        (out * &w).sum()
    }

    /// Forward, then backward as the program says.
    pub fn run(&mut self, prog: &Program) -> Result<Outcome, String> {
        let scope = self.forward(prog, None)?;
        let loss = Self::loss(prog, &scope);
        let leaves: Vec<T> = scope[..prog.leaves.len()]
            .iter()
            .filter(|t| t.requires_grad())
            .cloned()
            .collect();
        let mut outcome = Outcome {
            loss: loss.item(),
            ..Outcome::default()
        };
        let vec = |g: Option<T>| g.map(|g| g.to_vec());
        let backward = || -> Result<(), String> {
            match &prog.backward {
                Backward::Once => loss.backward(),
                Backward::With => {
                    let out = &scope[prog.output.unwrap_or(scope.len() - 1)];
                    out.backward_with(&Tensor::from_vec(prog.weights.clone(), out.shape()));
                }
                &Backward::Twice { retain_graph } => {
                    loss.backward_opts(BackwardOptions {
                        retain_graph,
                        ..Default::default()
                    });
                    loss.backward();
                }
                Backward::Grad => {
                    let g = tapegrad::grad(&[loss.clone()], &leaves, GradOptions::default());
                    outcome.grads = g.into_iter().map(vec).collect();
                    if let Some(i) = leaves.iter().position(|l| l.grad().is_some()) {
                        return Err(format!("grad() wrote .grad of leaf {i}"));
                    }
                }
                Backward::Mid(mids) => {
                    let mids: Vec<T> = mids.iter().map(|&r| scope[r].clone()).collect();
                    let targets: Vec<T> = leaves.iter().chain(&mids).cloned().collect();
                    let opts = GradOptions {
                        retain_graph: true,
                        ..Default::default()
                    };
                    let mut g: Vec<Option<Vec<f64>>> = tapegrad::grad(&[loss.clone()], &targets, opts)
                        .into_iter()
                        .map(vec)
                        .collect();
                    outcome.first = g.split_off(leaves.len());
                    outcome.grads = g;
                    // The same gradients from a backward, the registers
                    // retaining theirs (a hook may see either: not compared).
                    // As in PyTorch, grad() adds to the .grad of a non-leaf
                    // that retains it (the program may have asked): cleared.
                    for m in &mids {
                        m.zero_grad();
                        m.retain_grad();
                    }
                    loss.backward();
                    let kept: Vec<Option<Vec<f64>>> = mids.iter().map(|m| vec(m.grad())).collect();
                    let from_leaves: Vec<Option<Vec<f64>>> = leaves.iter().map(|l| vec(l.grad())).collect();
                    let zero = |g: &Option<Vec<f64>>, n: usize| g.clone().or(Some(vec![0.0; n]));
                    let agree = |a: &[Option<Vec<f64>>], b: &[Option<Vec<f64>>], ts: &[T]| {
                        a.iter()
                            .zip(b)
                            .zip(ts)
                            .all(|((x, y), t)| same(&zero(x, t.numel()), &zero(y, t.numel())))
                    };
                    let agreed =
                        agree(&outcome.grads, &from_leaves, &leaves) && agree(&outcome.first, &kept, &mids);
                    if !agreed && !prog.has_hooks() {
                        return Err(format!(
                            "grad() gave {:?} for the leaves and {:?} for registers {mids:?}; \
                             backward with retain_grad gave {from_leaves:?} and {kept:?}",
                            outcome.grads,
                            outcome.first,
                            mids = prog.backward
                        ));
                    }
                }
                Backward::Double => {
                    let opts = GradOptions {
                        create_graph: true,
                        ..Default::default()
                    };
                    let g = tapegrad::grad(&[loss.clone()], &leaves, opts);
                    outcome.first = g.iter().cloned().map(vec).collect();
                    let terms: Vec<T> = g
                        .into_iter()
                        .flatten()
                        .filter(|g| g.requires_grad())
                        .map(|g| (&g * &Tensor::from_vec(double_weights(g.numel()), g.shape())).sum())
                        .collect();
                    if let Some(first) = terms.first() {
                        let total = terms[1..].iter().fold(first.clone(), |acc, t| &acc + t);
                        if total.requires_grad() {
                            total.backward();
                        }
                    }
                }
            }
            Ok(())
        };
        // In another thread if the program says so: grad mode is the new
        // thread's, a checkpoint's re-run replays the forward's RNG there.
        let result = if prog.backward_thread {
            std::thread::scope(|s| s.spawn(backward).join())
        } else {
            catch_unwind(AssertUnwindSafe(backward))
        };
        if !tapegrad::is_grad_enabled() {
            return Err("grad mode left off after backward".into());
        }
        match result {
            Ok(r) => r?,
            Err(p) => {
                let msg = message(&*p);
                let expected = if prog.output.is_none() {
                    let op = if matches!(
                        prog.backward,
                        Backward::Grad | Backward::Double | Backward::Mid(_)
                    ) {
                        "grad: "
                    } else {
                        "backward: "
                    };
                    msg.starts_with(op)
                } else {
                    prog.backward_may_panic.iter().any(|s| msg.contains(s))
                };
                if !expected {
                    return Err(format!("undocumented panic in backward: {msg:?}"));
                }
                if self.mode == Mode::Plain {
                    count(4, 1);
                }
                outcome.backward_panic = Some(msg);
                return Ok(outcome);
            }
        }
        if prog.output.is_none() {
            return Err("backward of a tensor that needs no grad did not panic".into());
        }
        if !matches!(prog.backward, Backward::Grad | Backward::Mid(_)) {
            outcome.grads = leaves.iter().map(|l| vec(l.grad())).collect();
        }
        outcome.retained = self.retained.iter().map(|&r| vec(scope[r].grad())).collect();
        outcome.hook_calls = self.hook_calls.load(Ordering::Relaxed);
        Ok(outcome)
    }
}

/// What the checks covered, counted over the programs of this process:
/// programs compared with their run without checkpoints, programs and
/// elements checked against central differences, instructions that
/// panicked as the model expected, backwards that panicked as allowed.
pub static COVERED: [AtomicUsize; 5] = [const { AtomicUsize::new(0) }; 5];

fn count(i: usize, n: usize) {
    COVERED[i].fetch_add(n, Ordering::Relaxed);
}

/// Whether two gradients agree to 1e-12 (relative), `None` as zeros.
fn same(a: &Option<Vec<f64>>, b: &Option<Vec<f64>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            a.len() == b.len()
                && a.iter().zip(b).all(|(x, y)| {
                    x.to_bits() == y.to_bits()
                        || (x - y).abs() <= 1e-12 * (1.0 + y.abs())
                        || (x.is_nan() && y.is_nan())
                })
        }
        (None, None) => true,
        _ => false,
    }
}

/// Checks `prog`: the run with checkpoints against the run without, and
/// both against central differences where the case is small and smooth.
pub fn check(prog: &Program) -> Result<(), String> {
    let mut record = vec![];
    let mut ctx = Ctx::new(Mode::Plain, &mut record);
    let plain = ctx.run(prog)?;
    let tie = ctx.tie || ctx.huge;
    if prog.has_checkpoint() {
        let mut none = vec![];
        let ck = Ctx::new(Mode::Checkpointed, &mut none).run(prog)?;
        let loss_same =
            plain.loss.to_bits() == ck.loss.to_bits() || (plain.loss.is_nan() && ck.loss.is_nan());
        if !loss_same {
            return Err(format!(
                "loss {} with checkpoints, {} without",
                ck.loss, plain.loss
            ));
        }
        // A checkpoint saves its inputs where the ops it runs may not:
        // writing to one in place makes the checkpoint's backward panic
        // (documented), and may leave the one without checkpoints alone.
        let ck_only = plain.backward_panic.is_none()
            && ck.backward_panic.as_ref().is_some_and(|m| {
                m.contains("modified by an inplace operation") && m.starts_with("checkpoint #")
            });
        count(0, 1);
        if ck_only {
            return differences(prog, &plain, &record, tie);
        }
        if plain.backward_panic.is_some() != ck.backward_panic.is_some() {
            return Err(format!(
                "backward panic with checkpoints: {:?}; without: {:?}",
                ck.backward_panic, plain.backward_panic
            ));
        }
        // Both panicked as allowed: maybe at different points (a
        // checkpoint's saved input changed in place is found in its first
        // backward, an op without checkpoints in the second), leaving
        // different partial results.
        if plain.backward_panic.is_some() {
            return Ok(());
        }
        for (what, a, b) in [
            ("gradients", &ck.grads, &plain.grads),
            ("first derivatives", &ck.first, &plain.first),
            ("retained gradients", &ck.retained, &plain.retained),
        ] {
            if a.len() != b.len() || a.iter().zip(b).any(|(x, y)| !same(x, y)) {
                return Err(format!("{what} with checkpoints {a:?}, without {b:?}"));
            }
        }
        if ck.hook_calls != plain.hook_calls {
            return Err(format!(
                "hooks ran {} times with checkpoints, {} without",
                ck.hook_calls, plain.hook_calls
            ));
        }
    }
    differences(prog, &plain, &record, tie)
}

/// The leaves' data, with element `j` of leaf `i` moved by `h`.
fn moved(prog: &Program, i: usize, j: usize, h: f64) -> Vec<Vec<f64>> {
    let mut data: Vec<Vec<f64>> = prog.leaves.iter().map(|l| l.data.clone()).collect();
    data[i][j] += h;
    data
}

/// Checks the gradients of `outcome` against central differences of the
/// forward (and of the first derivatives, for second derivatives).
fn differences(prog: &Program, outcome: &Outcome, record: &[Vec<f64>], tie: bool) -> Result<(), String> {
    let numel: usize = prog.leaves.iter().map(|l| l.data.len()).sum();
    // Gradients past 1e6 (`cos` of a value near 1e20, say): a step of the
    // leaves moves nothing the loss can resolve.
    let steep = outcome
        .grads
        .iter()
        .flatten()
        .flatten()
        .any(|g| !g.is_finite() || g.abs() > 1e6);
    if tie
        || steep
        || outcome.backward_panic.is_some()
        || prog.changes_gradients()
        || numel > 40
        || !outcome.loss.is_finite()
    {
        return Ok(());
    }
    // The first derivatives of a double backward are taken again without
    // create_graph, which may read a saved value the run with it did not
    // (the tiled attention's output, changed in place since): a panic the
    // program allowed ends the check.
    match catch_unwind(AssertUnwindSafe(|| compare_differences(prog, outcome, record))) {
        Ok(result) => result,
        Err(p) => {
            let msg = message(&*p);
            match prog.backward_may_panic.iter().any(|s| msg.contains(s)) {
                true => Ok(()),
                false => Err(format!(
                    "undocumented panic in a run for central differences: {msg:?}"
                )),
            }
        }
    }
}

/// [`differences`], once the case is found small and smooth.
fn compare_differences(prog: &Program, outcome: &Outcome, record: &[Vec<f64>]) -> Result<(), String> {
    // The function whose derivative is checked, at moved leaves: the loss,
    // or for second derivatives `Σ g_i · v_i` of the first ones.
    let f = |data: &[Vec<f64>]| -> Result<f64, String> {
        let mut record = record.to_vec();
        let mut ctx = Ctx::new(Mode::Differences, &mut record);
        let scope = ctx.forward(prog, Some(data))?;
        let loss = Ctx::loss(prog, &scope);
        if prog.backward != Backward::Double {
            return Ok(loss.item());
        }
        let leaves: Vec<T> = scope[..prog.leaves.len()]
            .iter()
            .filter(|t| t.requires_grad())
            .cloned()
            .collect();
        let g = tapegrad::grad(&[loss], &leaves, GradOptions::default());
        Ok(g.into_iter()
            .flatten()
            .map(|g| {
                g.to_vec()
                    .iter()
                    .zip(double_weights(g.numel()))
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
            })
            .sum())
    };
    let scale = if prog.backward == (Backward::Twice { retain_graph: true })
        || prog.backward == (Backward::Twice { retain_graph: false })
    {
        2.0
    } else {
        1.0
    };
    let center = f(&prog.leaves.iter().map(|l| l.data.clone()).collect::<Vec<_>>())?;
    if !center.is_finite() || center.abs() > 1e6 {
        return Ok(());
    }
    count(1, 1);
    let mut k = 0;
    for (i, leaf) in prog.leaves.iter().enumerate() {
        if !leaf.requires_grad {
            continue;
        }
        let grad = &outcome.grads[k];
        k += 1;
        for j in 0..leaf.data.len() {
            let diff = |h: f64| -> Result<f64, String> {
                Ok((f(&moved(prog, i, j, h))? - f(&moved(prog, i, j, -h))?) / (2.0 * h))
            };
            count(2, 1);
            let numeric = diff(1e-6)? * scale;
            let analytic = grad.as_ref().map_or(0.0, |g| g[j]);
            let tol = |n: f64| 1e-5 * (1.0 + center.abs()) + 1e-3 * n.abs();
            if (analytic - numeric).abs() > tol(numeric) && analytic.is_finite() {
                // Not smooth here if the one-sided differences disagree (a
                // kink of relu, abs, max... at the point: a tie of max_dim
                // over equal values) or another step does (a kink within
                // the step).
                let h = 1e-6;
                let forward = (f(&moved(prog, i, j, h))? - center) / h * scale;
                let backward = (center - f(&moved(prog, i, j, -h))?) / h * scale;
                let other = diff(1e-5)? * scale;
                if (forward - backward).abs() > tol(numeric) || (other - numeric).abs() > tol(numeric) {
                    continue;
                }
                return Err(format!(
                    "leaf {i} element {j}: gradient {analytic}, central difference {numeric} \
                     (step 1e-6; {other} with step 1e-5); gradients {:?}",
                    outcome.grads
                ));
            }
        }
    }
    Ok(())
}
