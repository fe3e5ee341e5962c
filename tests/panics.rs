//! Every panic a user can cause, listed: what was done wrong, and what the
//! message must say. Each message names the op and the shapes or values
//! involved (and the fix, where there is one), carries no `assert_eq!`
//! `left:`/`right:` noise, and points at the user's line (this file), not
//! into tapegrad, except for the errors found while backward walks the
//! graph (those are reported where the walk finds them).

mod common;

use common::panic_message_and_location;
use std::panic::{catch_unwind, RefUnwindSafe, UnwindSafe};
use std::sync::Arc;
use tapegrad::data::Batches;
use tapegrad::nn::functional::{
    pack_sequences, scaled_dot_product_attention, varlen_attention, AttentionOptions,
};
use tapegrad::nn::{
    Conv2d, Dropout, Embedding, Flatten, LayerNorm, Linear, MaxPool2d, Module, MultiheadAttention,
};
use tapegrad::optim::{Adam, AdamW, CosineAnnealingLr, Optimizer, Sgd, StepLr};
use tapegrad::prelude::*;

/// Where a panic must report itself.
#[derive(Clone, Copy, Debug, PartialEq)]
enum At {
    /// The user's line: `#[track_caller]` all the way down.
    Caller,
    /// Inside tapegrad: found while backward walks the graph, which runs
    /// rules, hooks and closures the user's call does not reach directly.
    Walk,
}

/// One mistake: what the user did, the call, the substrings the message
/// must contain, and where it must point.
struct Case {
    what: &'static str,
    run: fn(),
    expect: &'static [&'static str],
    at: At,
}

fn x23() -> Tensor<f64> {
    Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])
}

fn leaf3() -> Tensor<f64> {
    Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).set_requires_grad(true)
}

const CASES: &[Case] = &[
    // tensor: construction, reading, autograd state
    Case {
        what: "from_vec with the wrong number of elements",
        run: || drop(Tensor::<f32>::from_vec(vec![1.0; 5], &[2, 3])),
        expect: &["from_vec", "5 elements", "[2, 3]", "6 elements"],
        at: At::Caller,
    },
    Case {
        what: "zeros of a shape too large to address",
        run: || drop(Tensor::<f32>::zeros(&[usize::MAX / 2, 4])),
        expect: &["zeros", "isize::MAX"],
        at: At::Caller,
    },
    Case {
        what: "item() of a tensor with more than one element",
        run: || {
            x23().item();
        },
        expect: &["item", "[2, 3]", "6 elements", "sum()", "mean()"],
        at: At::Caller,
    },
    Case {
        what: "set_requires_grad(false) on a non-leaf",
        run: || drop((&leaf3() * 2.0).set_requires_grad(false)),
        expect: &["set_requires_grad(false)", "MulBackward", "detach()"],
        at: At::Caller,
    },
    // ops
    Case {
        what: "matmul whose right operand needs a transpose",
        run: || drop(Tensor::<f32>::zeros(&[8, 3]).matmul(&Tensor::zeros(&[5, 3]))),
        expect: &[
            "matmul",
            "[8, 3]",
            "[5, 3]",
            "3 != 5",
            "`.t()` of the right operand",
        ],
        at: At::Caller,
    },
    Case {
        what: "matmul whose left operand needs a transpose",
        run: || drop(Tensor::<f32>::zeros(&[3, 8]).matmul(&Tensor::zeros(&[3, 5]))),
        expect: &["matmul", "[3, 8]", "[3, 5]", "`.t()` of the left operand"],
        at: At::Caller,
    },
    Case {
        what: "adding shapes that do not broadcast",
        run: || drop(&x23() + &Tensor::zeros(&[4])),
        expect: &["add", "[2, 3]", "[4]", "broadcast"],
        at: At::Caller,
    },
    Case {
        what: "multiplying shapes that do not broadcast (owned operands)",
        run: || drop(x23() * Tensor::zeros(&[2])),
        expect: &["mul", "[2, 3]", "[2]"],
        at: At::Caller,
    },
    Case {
        what: "reshape to another element count",
        run: || drop(x23().reshape(&[5])),
        expect: &["reshape", "[2, 3]", "[5]"],
        at: At::Caller,
    },
    Case {
        what: "broadcast_to a shape that does not fit",
        run: || drop(x23().broadcast_to(&[4, 3, 3])),
        expect: &["broadcast_to", "[2, 3]", "[4, 3, 3]"],
        at: At::Caller,
    },
    Case {
        what: "transpose of a dimension that does not exist",
        run: || drop(x23().transpose(0, 2)),
        expect: &["transpose", "(0, 2)", "[2, 3]"],
        at: At::Caller,
    },
    Case {
        what: "t() of a 3-D tensor",
        run: || drop(Tensor::<f32>::zeros(&[2, 3, 4]).t()),
        expect: &["t:", "[2, 3, 4]", "transpose"],
        at: At::Caller,
    },
    Case {
        what: "permute with a repeated dimension",
        run: || drop(x23().permute(&[0, 0])),
        expect: &["permute", "[0, 0]", "[2, 3]"],
        at: At::Caller,
    },
    Case {
        what: "narrow past the end",
        run: || drop(x23().narrow(1, 2, 2)),
        expect: &["narrow", "start 2", "length 2", "[2, 3]"],
        at: At::Caller,
    },
    Case {
        what: "cat of shapes that differ outside the joined dimension",
        run: || drop(Tensor::cat(&[x23(), Tensor::zeros(&[2, 4])], 0)),
        expect: &["cat", "[2, 3]", "[2, 4]", "dimension 0"],
        at: At::Caller,
    },
    Case {
        what: "stack of no tensor",
        run: || drop(Tensor::<f32>::stack(&[], 0)),
        expect: &["stack", "at least one tensor"],
        at: At::Caller,
    },
    Case {
        what: "sum_dim of a dimension that does not exist",
        run: || drop(x23().sum_dim(2, false)),
        expect: &["sum_dim", "dimension 2", "[2, 3]"],
        at: At::Caller,
    },
    Case {
        what: "max_dim along an empty dimension",
        run: || drop(Tensor::<f32>::zeros(&[2, 0]).max_dim(1, false)),
        expect: &["max_dim", "dimension 1", "[2, 0]", "empty"],
        at: At::Caller,
    },
    Case {
        what: "softmax of a dimension that does not exist",
        run: || drop(x23().softmax(3)),
        expect: &["softmax", "dimension 3", "[2, 3]"],
        at: At::Caller,
    },
    Case {
        what: "clamp with min above max",
        run: || drop(x23().clamp(2.0, 1.0)),
        expect: &["clamp", "min 2", "max 1"],
        at: At::Caller,
    },
    Case {
        what: "dropout with a probability above 1",
        run: || drop(x23().dropout(1.5, true)),
        expect: &["dropout", "1.5"],
        at: At::Caller,
    },
    Case {
        what: "mse_loss of shapes that differ",
        run: || drop(x23().mse_loss(&Tensor::zeros(&[3, 2]))),
        expect: &["mse_loss", "[2, 3]", "[3, 2]"],
        at: At::Caller,
    },
    Case {
        what: "cross_entropy with fewer targets than rows",
        run: || drop(x23().cross_entropy(&[0])),
        expect: &["cross_entropy", "1 targets", "batch of 2", "[2, 3]"],
        at: At::Caller,
    },
    Case {
        what: "cross_entropy with a target out of range",
        run: || drop(x23().cross_entropy(&[0, 3])),
        expect: &["cross_entropy", "target 3", "index 1", "3 classes"],
        at: At::Caller,
    },
    Case {
        what: "index_select of an index out of range",
        run: || drop(x23().index_select(0, &[2])),
        expect: &["index_select", "index 2", "size 2", "[2, 3]"],
        at: At::Caller,
    },
    Case {
        what: "conv2d with a weight of other input channels",
        run: || drop(Tensor::<f32>::zeros(&[1, 2, 5, 5]).conv2d(&Tensor::zeros(&[4, 3, 3, 3]), None, 1, 0)),
        expect: &["conv2d", "[1, 2, 5, 5]", "[4, 3, 3, 3]"],
        at: At::Caller,
    },
    Case {
        what: "max_pool2d of a 2-D tensor",
        run: || drop(x23().max_pool2d(2, 2)),
        expect: &["max_pool2d", "[N, C, H, W]", "[2, 3]"],
        at: At::Caller,
    },
    Case {
        what: "layer_norm over a shape that does not end the input's",
        run: || drop(x23().layer_norm(&[2], None, None, 1e-5)),
        expect: &["layer_norm", "[2]", "[2, 3]"],
        at: At::Caller,
    },
    Case {
        what: "add_ on a leaf that requires grad, outside no_grad",
        run: || leaf3().add_(&Tensor::ones(&[3])),
        expect: &["add_", "leaf", "no_grad"],
        at: At::Caller,
    },
    Case {
        what: "copy_ from a shape that does not broadcast",
        run: || x23().copy_(&Tensor::zeros(&[4])),
        expect: &["copy_", "[4]", "[2, 3]"],
        at: At::Caller,
    },
    Case {
        what: "scaled_dot_product_attention with keys of another width",
        run: || {
            let q = Tensor::<f32>::zeros(&[2, 4, 8]);
            let k = Tensor::<f32>::zeros(&[2, 4, 6]);
            drop(scaled_dot_product_attention(
                &q,
                &k,
                &k,
                &AttentionOptions::default(),
            ))
        },
        expect: &["scaled_dot_product_attention", "[2, 4, 8]", "[2, 4, 6]"],
        at: At::Caller,
    },
    Case {
        what: "varlen_attention with cu_seqlens that do not end at the tokens",
        run: || {
            let q = Tensor::<f32>::zeros(&[5, 2, 4]);
            drop(varlen_attention(
                &q,
                &q,
                &q,
                &[0, 3],
                &AttentionOptions::default(),
            ))
        },
        expect: &["varlen_attention", "cu_seqlens", "total_tokens = 5", "[0, 3]"],
        at: At::Caller,
    },
    // autograd: backward, grad, hooks
    Case {
        what: "backward of a tensor that needs no grad",
        run: || x23().sum().backward(),
        expect: &["backward", "does not require grad", "set_requires_grad(true)"],
        at: At::Caller,
    },
    Case {
        what: "backward of a tensor with more than one element",
        run: || (&leaf3() * 2.0).backward(),
        expect: &["backward", "[3]", "backward_with"],
        at: At::Caller,
    },
    Case {
        what: "backward_with a gradient of another shape",
        run: || (&leaf3() * 2.0).backward_with(&Tensor::ones(&[2])),
        expect: &["backward", "[2]", "[3]"],
        at: At::Caller,
    },
    Case {
        what: "grad with as many grad_outputs as outputs, less one",
        run: || {
            let x = leaf3();
            let opts = GradOptions {
                grad_outputs: Some(vec![]),
                ..Default::default()
            };
            drop(tapegrad::grad(&[x.sum()], &[x], opts))
        },
        expect: &["grad:", "0 grad_outputs", "1 outputs"],
        at: At::Caller,
    },
    Case {
        what: "grad of an output that needs no grad",
        run: || {
            let x = leaf3();
            drop(tapegrad::grad(&[x23().sum()], &[x], GradOptions::default()))
        },
        expect: &["grad", "does not require grad", "set_requires_grad(true)"],
        at: At::Caller,
    },
    Case {
        what: "grad with respect to an input that needs no grad",
        run: || {
            let x = leaf3();
            drop(tapegrad::grad(&[x.sum()], &[x23()], GradOptions::default()))
        },
        expect: &["grad", "input 0", "[2, 3]", "set_requires_grad(true)"],
        at: At::Caller,
    },
    Case {
        what: "a second backward through a freed graph",
        run: || {
            let y = leaf3().exp().sum();
            y.backward();
            y.backward();
        },
        expect: &["second time", "retain_graph: true"],
        at: At::Walk,
    },
    Case {
        what: "register_hook on a tensor that needs no grad",
        run: || drop(x23().register_hook(|_| None)),
        expect: &["register_hook", "[2, 3]", "does not require grad"],
        at: At::Caller,
    },
    Case {
        what: "a hook that returns a gradient of another shape",
        run: || {
            let x = leaf3();
            drop(x.register_hook(|_| Some(Tensor::ones(&[2]))));
            x.sum().backward();
        },
        expect: &["register_hook", "[2]", "[3]"],
        at: At::Walk,
    },
    Case {
        what: "retain_grad on a tensor that needs no grad",
        run: || x23().retain_grad(),
        expect: &["retain_grad", "[2, 3]"],
        at: At::Caller,
    },
    // checkpoint
    Case {
        what: "checkpoint_sequential with more segments than layers",
        run: || {
            let relu: tapegrad::Layer<f64> = Arc::new(|x: &Tensor<f64>| x.relu());
            drop(checkpoint_sequential(&[relu], 2, &leaf3()))
        },
        expect: &["checkpoint_sequential", "2 segments", "1 layers"],
        at: At::Caller,
    },
    Case {
        what: "a Plan run on other layers than it was made for",
        run: || {
            let profile = tapegrad::LayerProfile {
                input_bytes: 8,
                saved_bytes: 8,
                saves_input: false,
                saves_output: true,
                cost_secs: 1.0,
            };
            let plan = tapegrad::Plan::from_profiles(vec![profile; 2], 1 << 20);
            let relu: tapegrad::Layer<f64> = Arc::new(|x: &Tensor<f64>| x.relu());
            drop(plan.run(&[relu], &leaf3()))
        },
        expect: &["Plan::run", "2 layers", "1 were given"],
        at: At::Caller,
    },
    Case {
        what: "a checkpoint plan for a budget too small",
        run: || {
            let profile = tapegrad::LayerProfile {
                input_bytes: 1000,
                saved_bytes: 1000,
                saves_input: false,
                saves_output: true,
                cost_secs: 1.0,
            };
            drop(tapegrad::Plan::from_profiles(vec![profile; 4], 10))
        },
        expect: &["checkpoint planner", "10 bytes", "too small"],
        at: At::Caller,
    },
    // testing (proptest strategies)
    Case {
        what: "a tensor strategy over an empty range of values",
        run: || drop(tapegrad::testing::tensor_of_shape::<f32>(&[2], 1.0..1.0)),
        expect: &["tensor_of_shape", "1.0..1.0", "empty"],
        at: At::Caller,
    },
    // nn
    Case {
        what: "Linear on an input of the wrong width",
        run: || drop(Linear::<f32>::new(3, 2).forward(&Tensor::zeros(&[2, 4]))),
        expect: &["Linear", "in_features = 3", "[2, 4]"],
        at: At::Caller,
    },
    Case {
        what: "Conv2d with stride 0",
        run: || drop(Conv2d::<f32>::new(1, 1, 3).stride(0)),
        expect: &["Conv2d::stride", "0"],
        at: At::Caller,
    },
    Case {
        what: "MaxPool2d with kernel size 0",
        run: || {
            MaxPool2d::new(0);
        },
        expect: &["MaxPool2d", "kernel size", "0"],
        at: At::Caller,
    },
    Case {
        what: "Dropout with a negative probability",
        run: || drop(Dropout::<f32>::new(-0.5)),
        expect: &["Dropout", "-0.5"],
        at: At::Caller,
    },
    Case {
        what: "Embedding::lookup of an id out of range",
        run: || drop(Embedding::<f32>::new(4, 2).lookup(&[1, 4])),
        expect: &["Embedding::lookup", "id 4", "position 1", "4 embeddings"],
        at: At::Caller,
    },
    Case {
        what: "Embedding::forward of ids that are not whole numbers",
        run: || drop(Embedding::<f32>::new(4, 2).forward(&Tensor::from_vec(vec![0.5], &[1]))),
        expect: &["embedding", "id 0.5", "whole number"],
        at: At::Caller,
    },
    Case {
        what: "Flatten of a 1-D input",
        run: || drop(Flatten.forward(&Tensor::<f32>::zeros(&[3]))),
        expect: &["Flatten", "[3]"],
        at: At::Caller,
    },
    Case {
        what: "LayerNorm over a shape the input does not end with",
        run: || drop(LayerNorm::<f32>::new(&[4]).forward(&Tensor::zeros(&[2, 3]))),
        expect: &["layer_norm", "[4]", "[2, 3]"],
        at: At::Caller,
    },
    Case {
        what: "MultiheadAttention with heads that do not divide the width",
        run: || drop(MultiheadAttention::<f32>::new(6, 4)),
        expect: &["MultiheadAttention", "embed_dim (6)", "num_heads (4)"],
        at: At::Caller,
    },
    Case {
        what: "pack_sequences with a sequence longer than a pack",
        run: || drop(pack_sequences(&[3, 9], 8)),
        expect: &["pack_sequences", "sequence 1", "9 tokens", "max_tokens = 8"],
        at: At::Caller,
    },
    Case {
        what: "PackedBatch::pack given fewer sequences than packed",
        run: || drop(pack_sequences(&[2, 3], 8)[0].pack(&[Tensor::<f32>::zeros(&[2, 4])])),
        expect: &["PackedBatch::pack", "sequence 1", "only 1 were given"],
        at: At::Caller,
    },
    Case {
        what: "scaled_dot_product_attention with batch dimensions that do not broadcast",
        run: || {
            let q = Tensor::<f32>::zeros(&[2, 4, 8]);
            let k = Tensor::<f32>::zeros(&[3, 4, 8]);
            drop(scaled_dot_product_attention(
                &q,
                &k,
                &k,
                &AttentionOptions::default(),
            ))
        },
        expect: &[
            "scaled_dot_product_attention",
            "batch dimensions",
            "[2, 4, 8]",
            "[3, 4, 8]",
        ],
        at: At::Caller,
    },
    // optim
    Case {
        what: "Sgd with a negative learning rate",
        run: || drop(Sgd::new(vec![leaf3()], -0.1)),
        expect: &["Sgd::new", "learning rate", "-0.1"],
        at: At::Caller,
    },
    Case {
        what: "an optimizer given a tensor that is not a leaf",
        run: || drop(Adam::new(vec![leaf3(), &leaf3() * 2.0], 1e-3)),
        expect: &["Adam::new", "parameter 1", "[3]", "not a leaf", "MulBackward"],
        at: At::Caller,
    },
    Case {
        what: "AdamW with a negative learning rate names AdamW",
        run: || drop(AdamW::new(vec![leaf3()], -1e-3)),
        expect: &["AdamW::new", "learning rate"],
        at: At::Caller,
    },
    Case {
        what: "AdamW with beta2 = 1 names AdamW",
        run: || drop(AdamW::new(vec![leaf3()], 1e-3).betas(0.9, 1.0)),
        expect: &["AdamW: invalid beta", "index 1"],
        at: At::Caller,
    },
    Case {
        what: "Adam with beta1 = 1",
        run: || drop(Adam::new(vec![leaf3()], 1e-3).betas(1.0, 0.999)),
        expect: &["Adam", "beta", "index 0", "1"],
        at: At::Caller,
    },
    Case {
        what: "Sgd with Nesterov momentum but no momentum",
        run: || {
            let w = leaf3();
            let mut opt = Sgd::new(vec![w.clone()], 0.1).nesterov(true);
            w.sum().backward();
            opt.step();
        },
        expect: &["Sgd", "Nesterov", "momentum 0"],
        at: At::Caller,
    },
    Case {
        what: "StepLr with step_size 0",
        run: || {
            StepLr::new(&Sgd::new(vec![leaf3()], 0.1), 0, 0.5);
        },
        expect: &["StepLr::new", "step_size", "0"],
        at: At::Caller,
    },
    Case {
        what: "CosineAnnealingLr with t_max 0",
        run: || {
            CosineAnnealingLr::new(&Sgd::new(vec![leaf3()], 0.1), 0, 0.0);
        },
        expect: &["CosineAnnealingLr::new", "t_max", "0"],
        at: At::Caller,
    },
    // data
    Case {
        what: "Batches with batch_size 0",
        run: || {
            Batches::new(10, 0);
        },
        expect: &["Batches::new", "batch_size", "n = 10"],
        at: At::Caller,
    },
    // viz
    Case {
        what: "trace_backward of a tensor that needs no grad",
        run: || drop(tapegrad::viz::trace_backward(&x23().sum())),
        expect: &["backward", "does not require grad", "set_requires_grad(true)"],
        at: At::Caller,
    },
];

#[test]
fn every_listed_mistake_panics_with_its_message_at_its_place() {
    let mut failures = Vec::new();
    for case in CASES {
        let Some((message, location)) = panic_message_and_location(case.run) else {
            failures.push(format!("{}: no panic", case.what));
            continue;
        };
        let mut wrong = Vec::new();
        for part in case.expect {
            if !message.contains(part) {
                wrong.push(format!("lacks {part:?}"));
            }
        }
        if message.contains("left:") || message.contains("right:") {
            wrong.push("has assert_eq!'s left:/right:".to_string());
        }
        let in_this_file = location.starts_with("tests/panics.rs:");
        match case.at {
            At::Caller if !in_this_file => wrong.push(format!("points at {location}, not the caller")),
            At::Walk if !location.starts_with("src/") => wrong.push(format!("points at {location}")),
            _ => {}
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {}\n    message: {message}",
                case.what,
                wrong.join("; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases fail:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

/// Compiles only for types a `catch_unwind` closure may capture by
/// reference.
fn unwind_safe<T: UnwindSafe + RefUnwindSafe>() {}

#[test]
fn tensors_modules_and_optimizers_are_unwind_safe() {
    unwind_safe::<Tensor<f32>>();
    unwind_safe::<Tensor<f64>>();
    unwind_safe::<Linear<f32>>();
    unwind_safe::<Adam<f32>>();
}

#[test]
fn a_backward_that_panics_loses_nothing() {
    let x = leaf3();
    let w = Tensor::from_vec(vec![0.5, -1.0, 2.0], &[3]).set_requires_grad(true);
    let y = (&x * &w).sum(); // dy/dx = w, dy/dw = x
                             // A hook on x that fails: the backward panics midway, after w got its
                             // gradient and before x did.
    let hook = x.register_hook(|g| Some(g.reshape(&[3, 1])));
    let caught = catch_unwind(|| {
        y.backward_opts(BackwardOptions {
            retain_graph: true,
            ..Default::default()
        })
    });
    assert!(caught.is_err(), "the hook's shape error should panic");
    hook.remove();
    // The same tensors keep working: a second backward through the kept
    // graph adds the full gradient again.
    x.zero_grad();
    w.zero_grad();
    y.backward();
    assert_eq!(x.grad().unwrap().to_vec(), w.to_vec());
    assert_eq!(w.grad().unwrap().to_vec(), x.to_vec());
    // And a fresh graph over them too, with an optimizer that holds them.
    let mut opt = Sgd::new(vec![x.clone(), w.clone()], 1.0);
    opt.zero_grad();
    let z = catch_unwind(|| (&x * &w).sum());
    z.unwrap().backward();
    opt.step();
    assert_eq!(x.to_vec(), vec![0.5, 3.0, 1.0]); // x - w
}
