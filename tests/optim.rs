//! Optimizers and schedules against PyTorch's trajectories
//! (tests/ref/optim_ref.txt, written by tests/ref/make_optim_ref.py), and
//! their contract: skipped parameters, in-place updates, set_lr, trait
//! objects, argument checks.

mod common;

use common::{assert_close, panic_message};
use std::collections::HashMap;
use tapegrad::optim::{Adam, AdamW, CosineAnnealingLr, Optimizer, Sgd, StepLr};
use tapegrad::prelude::*;

// ------------------------------------------------------- the reference file

/// The problem of the reference file: parameters, and the weights, targets
/// and period of each one's loss term.
#[derive(Default)]
struct Problem {
    params: Vec<(String, Vec<usize>, Vec<f64>)>,
    weight: HashMap<String, Vec<f64>>,
    target: HashMap<String, Vec<f64>>,
    every: HashMap<String, usize>,
}

struct Case {
    name: String,
    config: HashMap<String, String>,
    /// After each step: the learning rate, and each parameter's values.
    steps: Vec<(f64, HashMap<String, Vec<f64>>)>,
}

fn floats(tokens: &[&str]) -> Vec<f64> {
    tokens.iter().map(|t| t.parse().expect("a float")).collect()
}

fn shape(token: &str) -> Vec<usize> {
    let inner = token.trim_start_matches('[').trim_end_matches(']');
    inner
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

fn load_reference() -> (Problem, Vec<Case>) {
    let text = include_str!("ref/optim_ref.txt");
    let mut problem = Problem::default();
    let mut cases: Vec<Case> = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let tokens: Vec<&str> = line.split(' ').collect();
        match tokens[0] {
            "torch" | "end" => {}
            "param" => problem
                .params
                .push((tokens[1].to_string(), shape(tokens[2]), floats(&tokens[3..]))),
            "weight" => drop(problem.weight.insert(tokens[1].to_string(), floats(&tokens[2..]))),
            "target" => drop(problem.target.insert(tokens[1].to_string(), floats(&tokens[2..]))),
            "every" => drop(
                problem
                    .every
                    .insert(tokens[1].to_string(), tokens[2].parse().unwrap()),
            ),
            "case" => cases.push(Case {
                name: tokens[1].to_string(),
                config: tokens[2..]
                    .iter()
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').expect("KEY=VALUE");
                        (k.to_string(), v.to_string())
                    })
                    .collect(),
                steps: Vec::new(),
            }),
            "step" => {
                let case = cases.last_mut().expect("a case");
                assert_eq!(tokens[1].parse::<usize>().unwrap(), case.steps.len() + 1);
                case.steps.push((tokens[3].parse().unwrap(), HashMap::new()));
            }
            "value" => {
                let step = cases.last_mut().unwrap().steps.last_mut().expect("a step");
                step.1.insert(tokens[1].to_string(), floats(&tokens[2..]));
            }
            other => panic!("optim_ref.txt: unknown record {other:?}"),
        }
    }
    (problem, cases)
}

fn num<T: Float>(config: &HashMap<String, String>, key: &str) -> Option<T> {
    config.get(key).map(|v| T::of(v.parse().expect("a number")))
}

fn flag(config: &HashMap<String, String>, key: &str) -> Option<bool> {
    config.get(key).map(|v| v == "1")
}

/// The case's optimizer, with only the options the case names (the others
/// keep their defaults, as in the script).
fn optimizer<T: Float>(config: &HashMap<String, String>, params: Vec<Tensor<T>>) -> Box<dyn Optimizer<T>> {
    let lr = num(config, "lr").expect("lr");
    let betas = config.get("betas").map(|b| {
        let (b1, b2) = b.split_once(',').unwrap();
        (T::of(b1.parse().unwrap()), T::of(b2.parse().unwrap()))
    });
    match config["opt"].as_str() {
        "sgd" => {
            let mut o = Sgd::new(params, lr);
            if let Some(m) = num(config, "momentum") {
                o = o.momentum(m);
            }
            if let Some(d) = num(config, "dampening") {
                o = o.dampening(d);
            }
            if let Some(n) = flag(config, "nesterov") {
                o = o.nesterov(n);
            }
            if let Some(wd) = num(config, "weight_decay") {
                o = o.weight_decay(wd);
            }
            Box::new(o)
        }
        "adam" => {
            let mut o = Adam::new(params, lr);
            if let Some((b1, b2)) = betas {
                o = o.betas(b1, b2);
            }
            if let Some(e) = num(config, "eps") {
                o = o.eps(e);
            }
            if let Some(wd) = num(config, "weight_decay") {
                o = o.weight_decay(wd);
            }
            if let Some(a) = flag(config, "amsgrad") {
                o = o.amsgrad(a);
            }
            Box::new(o)
        }
        "adamw" => {
            let mut o = AdamW::new(params, lr);
            if let Some((b1, b2)) = betas {
                o = o.betas(b1, b2);
            }
            if let Some(e) = num(config, "eps") {
                o = o.eps(e);
            }
            if let Some(wd) = num(config, "weight_decay") {
                o = o.weight_decay(wd);
            }
            if let Some(a) = flag(config, "amsgrad") {
                o = o.amsgrad(a);
            }
            Box::new(o)
        }
        other => panic!("unknown optimizer {other}"),
    }
}

enum Schedule<T: Float> {
    None,
    Step(StepLr<T>),
    Cosine(CosineAnnealingLr<T>),
}

fn schedule<T: Float>(config: &HashMap<String, String>, opt: &dyn Optimizer<T>) -> Schedule<T> {
    let Some(s) = config.get("schedule") else {
        return Schedule::None;
    };
    let (kind, args) = s.split_once(':').unwrap();
    let (n, x) = args.split_once(',').unwrap();
    let (n, x) = (n.parse().unwrap(), T::of(x.parse().unwrap()));
    match kind {
        "step" => Schedule::Step(StepLr::new(opt, n, x)),
        "cosine" => Schedule::Cosine(CosineAnnealingLr::new(opt, n, x)),
        other => panic!("unknown schedule {other}"),
    }
}

/// Runs `case` in tapegrad with element type `T`; returns every mismatch
/// beyond `tol` (relative to max(1, |torch|)).
fn run_case<T: Float>(problem: &Problem, case: &Case, tol: f64) -> Vec<String> {
    let params: Vec<(String, Tensor<T>)> = problem
        .params
        .iter()
        .map(|(n, s, init)| {
            let data = init.iter().map(|&v| T::of(v)).collect();
            (n.clone(), Tensor::from_vec(data, s).set_requires_grad(true))
        })
        .collect();
    let constant = |map: &HashMap<String, Vec<f64>>, name: &str, shape: &[usize]| {
        Tensor::from_vec(map[name].iter().map(|&v| T::of(v)).collect(), shape)
    };
    let mut opt = optimizer(&case.config, params.iter().map(|(_, p)| p.clone()).collect());
    let mut sched = schedule(&case.config, &*opt);
    let mut errors = Vec::new();
    for (t, (lr, values)) in case.steps.iter().enumerate() {
        let t = t + 1;
        opt.zero_grad();
        let mut loss: Option<Tensor<T>> = None;
        for (n, p) in &params {
            if t % problem.every[n] != 0 {
                continue;
            }
            let d = p - constant(&problem.target, n, p.shape());
            let term = (&d * &d * constant(&problem.weight, n, p.shape())).sum();
            loss = Some(match loss {
                Some(l) => l + term,
                None => term,
            });
        }
        loss.expect("a loss").backward();
        opt.step();
        match &mut sched {
            Schedule::None => {}
            Schedule::Step(s) => s.step(&mut *opt),
            Schedule::Cosine(s) => s.step(&mut *opt),
        }
        let mut check = |what: String, ours: f64, torch: f64| {
            if (ours - torch).abs() > tol * torch.abs().max(1.0) {
                errors.push(format!(
                    "{} step {t} {what}: ours {ours}, torch {torch}",
                    case.name
                ));
            }
        };
        check("lr".to_string(), opt.lr().as_f64(), *lr);
        for (n, p) in &params {
            for (i, (&ours, &torch)) in p.to_vec().iter().zip(&values[n]).enumerate() {
                check(format!("{n}[{i}]"), ours.as_f64(), torch);
            }
        }
    }
    errors
}

#[test]
fn trajectories_match_pytorch_in_f64() {
    let (problem, cases) = load_reference();
    assert!(cases.len() >= 15, "the reference has {} cases", cases.len());
    let errors: Vec<String> = cases
        .iter()
        .flat_map(|c| run_case::<f64>(&problem, c, 1e-10))
        .collect();
    assert!(
        errors.is_empty(),
        "{} mismatches:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

#[test]
fn trajectories_match_pytorch_in_f32() {
    // the same loops in f32: only f32 rounding apart
    let (problem, cases) = load_reference();
    let errors: Vec<String> = cases
        .iter()
        .flat_map(|c| run_case::<f32>(&problem, c, 1e-4))
        .collect();
    assert!(
        errors.is_empty(),
        "{} mismatches:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

#[test]
fn the_reference_covers_every_optimizer_option_and_schedule() {
    let (_, cases) = load_reference();
    let has = |pred: &dyn Fn(&HashMap<String, String>) -> bool| cases.iter().any(|c| pred(&c.config));
    for key in [
        "momentum",
        "dampening",
        "nesterov",
        "weight_decay",
        "betas",
        "eps",
        "amsgrad",
    ] {
        assert!(has(&|c| c.contains_key(key)), "no case sets {key}");
    }
    for opt in ["sgd", "adam", "adamw"] {
        assert!(
            has(&|c| c["opt"] == opt && c.len() == 2),
            "no case of {opt} with its defaults"
        );
    }
    for s in ["step:", "cosine:"] {
        assert!(
            has(&|c| c.get("schedule").is_some_and(|v| v.starts_with(s))),
            "no {s} schedule"
        );
    }
}

// ------------------------------------------------------------- the contract

/// y = Σ w ⊙ x for a fixed x: the gradient of w is x.
fn backward_with_grad(w: &Tensor<f64>, g: &[f64]) {
    (w * Tensor::from_vec(g.to_vec(), w.shape())).sum().backward();
}

/// Names of the configurations [`make`] builds.
const CONFIGS: [&str; 6] = [
    "sgd",
    "sgd momentum",
    "sgd nesterov",
    "adam",
    "adam amsgrad",
    "adamw",
];

fn make(name: &str, params: &[Tensor<f64>]) -> Box<dyn Optimizer<f64>> {
    let p = params.to_vec();
    match name {
        "sgd" => Box::new(Sgd::new(p, 0.1)),
        "sgd momentum" => Box::new(Sgd::new(p, 0.1).momentum(0.9).weight_decay(0.1)),
        "sgd nesterov" => Box::new(Sgd::new(p, 0.1).momentum(0.9).nesterov(true)),
        "adam" => Box::new(Adam::new(p, 0.1).weight_decay(0.1)),
        "adam amsgrad" => Box::new(Adam::new(p, 0.1).amsgrad(true)),
        "adamw" => Box::new(AdamW::new(p, 0.1)),
        other => panic!("unknown configuration {other}"),
    }
}

#[test]
fn parameters_without_a_gradient_are_skipped_and_keep_their_state() {
    for name in CONFIGS {
        // one optimizer over [w, u]; u gets gradients at steps 1 and 3 only
        let w = Tensor::from_vec(vec![1.0, -2.0], &[2]).set_requires_grad(true);
        let u = Tensor::from_vec(vec![0.5, 3.0], &[2]).set_requires_grad(true);
        let mut both = make(name, &[w.clone(), u.clone()]);
        // the same u alone, stepped only when it has a gradient
        let u_alone = Tensor::from_vec(vec![0.5, 3.0], &[2]).set_requires_grad(true);
        let mut alone = make(name, &[u_alone.clone()]);
        for t in 1..=4 {
            both.zero_grad();
            backward_with_grad(&w, &[1.0, 2.0]);
            if t % 2 == 1 {
                backward_with_grad(&u, &[0.5, -1.5]);
                alone.zero_grad();
                backward_with_grad(&u_alone, &[0.5, -1.5]);
                alone.step();
            }
            let before = u.to_vec();
            both.step();
            if t % 2 == 0 {
                assert_eq!(
                    u.to_vec(),
                    before,
                    "{name}: u has no gradient at step {t}: untouched"
                );
            }
            // the skipped steps did not advance u's momentum or moments
            assert_eq!(u.to_vec(), u_alone.to_vec(), "{name} step {t}");
        }
        assert_ne!(w.to_vec(), vec![1.0, -2.0], "{name}: w was updated");
    }
}

#[test]
fn a_step_updates_the_parameters_in_place_through_every_handle() {
    for name in CONFIGS {
        let w = Tensor::<f64>::ones(&[64]).set_requires_grad(true);
        let mut opt = make(name, &[w.clone()]);
        let model_handle = w.clone();
        let address = w.with_array(|v| v.as_ptr() as usize);
        for _ in 0..3 {
            opt.zero_grad();
            (&w * &w).sum().backward();
            opt.step();
        }
        assert_ne!(
            model_handle.to_vec(),
            vec![1.0; 64],
            "{name}: the model's handle sees the update"
        );
        assert_eq!(
            w.with_array(|v| v.as_ptr() as usize),
            address,
            "{name}: the parameter's buffer was written in place"
        );
        assert!(w.is_leaf() && w.requires_grad(), "{name}");
        let g = w.grad().expect("step keeps the gradient");
        opt.zero_grad();
        assert!(w.grad().is_none(), "{name}: zero_grad sets the gradient to None");
        assert_eq!(g.to_vec().len(), 64);
    }
}

#[test]
fn a_step_does_not_modify_the_gradient() {
    for name in CONFIGS {
        let w = Tensor::from_vec(vec![1.0, 2.0], &[2]).set_requires_grad(true);
        let mut opt = make(name, &[w.clone()]);
        backward_with_grad(&w, &[0.25, -0.5]);
        opt.step();
        opt.step();
        assert_eq!(w.grad().unwrap().to_vec(), vec![0.25, -0.5], "{name}");
    }
}

#[test]
fn a_step_after_a_forward_that_saved_the_parameter_makes_that_backward_panic() {
    // as PyTorch: the update bumps the version that the saved value checks
    let w = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).set_requires_grad(true);
    let mut opt = Sgd::new(vec![w.clone()], 0.1);
    (&w * &w).sum().backward();
    let pending = (&w * &w).sum(); // saves w
    opt.step();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pending.backward()));
    let err = r.expect_err("the saved w was modified");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("modified by an inplace operation"), "{msg}");
}

#[test]
fn set_lr_changes_the_next_step() {
    // plain SGD: θ ← θ - γ g, so the step is γ g exactly
    let w = Tensor::from_vec(vec![1.0f64], &[1]).set_requires_grad(true);
    let mut opt: Box<dyn Optimizer<f64>> = Box::new(Sgd::new(vec![w.clone()], 0.5));
    assert_eq!(opt.lr(), 0.5);
    backward_with_grad(&w, &[1.0]);
    opt.step();
    assert_eq!(w.item(), 0.5);
    opt.set_lr(0.125);
    assert_eq!(opt.lr(), 0.125);
    opt.step();
    assert_eq!(w.item(), 0.375);
    // Adam's first step moves each element by about γ (m̂ / √v̂ = ±1)
    let w = Tensor::from_vec(vec![0.0f64, 0.0], &[2]).set_requires_grad(true);
    let mut opt = Adam::new(vec![w.clone()], 1.0);
    opt.set_lr(0.01);
    backward_with_grad(&w, &[3.0, -5.0]);
    opt.step();
    assert_close(&w.to_vec(), &[-0.01, 0.01], 1e-8);
}

#[test]
fn schedules_drive_a_boxed_optimizer_and_follow_set_lr() {
    let w = Tensor::from_vec(vec![1.0f64], &[1]).set_requires_grad(true);
    let mut opt: Box<dyn Optimizer<f64>> = Box::new(Adam::new(vec![w], 1.0));
    let mut step = StepLr::new(&*opt, 2, 0.1);
    let lrs: Vec<f64> = (0..4)
        .map(|_| {
            step.step(&mut *opt);
            opt.lr()
        })
        .collect();
    assert_close(&lrs, &[1.0, 0.1, 0.1, 0.01], 1e-15);
    // recursive, as PyTorch: a rate set by hand carries on
    opt.set_lr(5.0);
    step.step(&mut *opt);
    assert_eq!(opt.lr(), 5.0);
    step.step(&mut *opt);
    assert_close(&[opt.lr()], &[0.5], 1e-15);
    // cosine: base 2, eta_min 0.5, T_max 2 -> 1.25, 0.5, 1.25, 2.0
    opt.set_lr(2.0);
    let mut cos = CosineAnnealingLr::new(&*opt, 2, 0.5);
    let lrs: Vec<f64> = (0..4)
        .map(|_| {
            cos.step(&mut *opt);
            opt.lr()
        })
        .collect();
    assert_close(&lrs, &[1.25, 0.5, 1.25, 2.0], 1e-12);
}

#[test]
fn optimizers_are_send_and_boxable() {
    fn send<S: Send>(_: &S) {}
    let w = Tensor::<f32>::ones(&[2]).set_requires_grad(true);
    let opt: Box<dyn Optimizer> = Box::new(AdamW::new(vec![w.clone()], 1e-3));
    send(&opt);
    let mut opt = std::thread::spawn(move || opt).join().unwrap();
    (&w * &w).sum().backward();
    opt.step();
    assert!(w.to_vec()[0] < 1.0);
}

#[test]
fn adamw_defaults_to_weight_decay_and_decouples_it() {
    // a zero gradient: Adam's L2 term would move θ by about γ (m̂/√v̂ = ±1),
    // AdamW's decay by γλθ only
    let w = Tensor::from_vec(vec![2.0f64], &[1]).set_requires_grad(true);
    let mut opt = AdamW::new(vec![w.clone()], 0.1);
    backward_with_grad(&w, &[0.0]);
    opt.step();
    assert_close(&[w.item()], &[2.0 * (1.0 - 0.1 * 0.01)], 1e-14);
    let v = Tensor::from_vec(vec![2.0f64], &[1]).set_requires_grad(true);
    let mut opt = Adam::new(vec![v.clone()], 0.1).weight_decay(0.01);
    backward_with_grad(&v, &[0.0]);
    opt.step();
    assert_close(&[v.item()], &[1.9], 1e-6);
}

type Call = Box<dyn FnOnce()>;

#[test]
fn invalid_arguments_panic_naming_them() {
    let p = || vec![Tensor::<f64>::ones(&[1]).set_requires_grad(true)];
    let cases: Vec<(&str, Call)> = vec![
        ("learning rate: -0.1", Box::new(move || drop(Sgd::new(p(), -0.1)))),
        (
            "learning rate: NaN",
            Box::new(move || drop(Adam::new(p(), f64::NAN))),
        ),
        (
            "momentum value: -0.5",
            Box::new(move || drop(Sgd::new(p(), 0.1).momentum(-0.5))),
        ),
        (
            "weight_decay value: -1",
            Box::new(move || drop(Sgd::new(p(), 0.1).weight_decay(-1.0))),
        ),
        (
            "beta parameter at index 1: 1",
            Box::new(move || drop(Adam::new(p(), 0.1).betas(0.9, 1.0))),
        ),
        (
            "beta parameter at index 0: -0.1",
            Box::new(move || drop(AdamW::new(p(), 0.1).betas(-0.1, 0.9))),
        ),
        (
            "epsilon value: -0.001",
            Box::new(move || drop(Adam::new(p(), 0.1).eps(-1e-3))),
        ),
        (
            "step_size must be at least 1",
            Box::new(move || {
                let _ = StepLr::new(&Sgd::new(p(), 0.1), 0, 0.5);
            }),
        ),
        (
            "t_max must be at least 1",
            Box::new(move || {
                let _ = CosineAnnealingLr::new(&Sgd::new(p(), 0.1), 0, 0.0);
            }),
        ),
    ];
    for (expected, f) in cases {
        let msg = panic_message(f);
        assert!(msg.contains(expected), "expected {expected:?} in {msg:?}");
    }
}

#[test]
fn nesterov_without_momentum_or_with_dampening_panics_at_step() {
    for opt in [
        Sgd::new(vec![Tensor::<f64>::ones(&[1]).set_requires_grad(true)], 0.1).nesterov(true),
        Sgd::new(vec![Tensor::<f64>::ones(&[1]).set_requires_grad(true)], 0.1)
            .nesterov(true)
            .momentum(0.9)
            .dampening(0.1),
    ] {
        let mut opt = opt;
        let msg = panic_message(|| opt.step());
        assert!(
            msg.contains("Nesterov momentum requires a momentum and zero dampening"),
            "{msg}"
        );
    }
}
