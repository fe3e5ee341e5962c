//! Gradient checkpointing: the same gradients as without it, for inputs and
//! captured weights, with dropout replayed, nested, through retain_graph,
//! create_graph and `tapegrad::grad`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tapegrad::prelude::*;

/// A block: tanh(dropout(x @ w) + b); `p = 0` for no dropout.
fn block(x: &Tensor<f64>, w: &Tensor<f64>, b: &Tensor<f64>, p: f64) -> Tensor<f64> {
    (x.matmul(w).dropout(p, true) + b).tanh()
}

struct Net {
    w: Vec<Tensor<f64>>,
    b: Vec<Tensor<f64>>,
}

impl Net {
    fn new(depth: usize, width: usize) -> Self {
        tapegrad::manual_seed(1);
        let w = (0..depth)
            .map(|_| {
                (Tensor::randn(&[width, width]) * 0.5)
                    .detach()
                    .set_requires_grad(true)
            })
            .collect();
        let b = (0..depth)
            .map(|_| Tensor::randn(&[width]).set_requires_grad(true))
            .collect();
        Net { w, b }
    }

    fn params(&self) -> Vec<Tensor<f64>> {
        self.w.iter().chain(&self.b).cloned().collect()
    }

    fn grads(&self) -> Vec<Vec<f64>> {
        self.params()
            .iter()
            .map(|p| p.grad().expect("every weight gets a gradient").to_vec())
            .collect()
    }

    fn zero_grad(&self) {
        self.params().iter().for_each(Tensor::zero_grad);
    }

    /// Blocks `from..to` on `x`, plain.
    fn run(&self, x: &Tensor<f64>, from: usize, to: usize, p: f64) -> Tensor<f64> {
        (from..to).fold(x.clone(), |h, i| block(&h, &self.w[i], &self.b[i], p))
    }

    /// Blocks `from..to` on `x` as one checkpoint; the closure captures
    /// clones of the weights.
    fn run_checkpointed(&self, x: &Tensor<f64>, from: usize, to: usize, p: f64) -> Tensor<f64> {
        let (w, b) = (self.w.clone(), self.b.clone());
        tapegrad::checkpoint(
            move |xs| (from..to).fold(xs[0].clone(), |h, i| block(&h, &w[i], &b[i], p)),
            &[x.clone()],
        )
    }
}

/// Loss and all gradients (input first, then weights) of `forward`.
fn gradients(
    net: &Net,
    x: &Tensor<f64>,
    mut forward: impl FnMut(&Tensor<f64>) -> Tensor<f64>,
) -> (f64, Vec<Vec<f64>>) {
    net.zero_grad();
    x.zero_grad();
    tapegrad::manual_seed(42);
    let loss = forward(x).powf(2.0).sum();
    loss.backward();
    let mut grads = vec![x.grad().unwrap().to_vec()];
    grads.extend(net.grads());
    (loss.item(), grads)
}

#[test]
fn gradients_are_bitwise_identical_to_the_plain_run() {
    let net = Net::new(6, 5);
    let x = Tensor::<f64>::randn(&[3, 5]).set_requires_grad(true);
    let plain = gradients(&net, &x, |x| net.run(x, 0, 6, 0.0));
    let checkpointed = gradients(&net, &x, |x| {
        let h = net.run_checkpointed(x, 0, 3, 0.0);
        net.run_checkpointed(&h, 3, 6, 0.0)
    });
    assert_eq!(plain, checkpointed);
}

#[test]
fn dropout_masks_are_replayed_and_the_stream_after_the_scope_is_unchanged() {
    let net = Net::new(4, 6);
    let x = Tensor::<f64>::randn(&[5, 6]).set_requires_grad(true);
    let mut after = Vec::new();
    let plain = gradients(&net, &x, |x| {
        let y = net.run(x, 0, 4, 0.5);
        after.push(Tensor::<f64>::rand(&[3]).to_vec());
        y
    });
    let checkpointed = gradients(&net, &x, |x| {
        let y = net.run_checkpointed(x, 0, 4, 0.5);
        after.push(Tensor::<f64>::rand(&[3]).to_vec());
        y
    });
    assert_eq!(plain, checkpointed);
    assert_eq!(
        after[0], after[1],
        "the generator after the scope is where the plain run leaves it"
    );
}

#[test]
fn captured_weights_alone_make_the_output_require_grad() {
    let net = Net::new(2, 3);
    let x = Tensor::<f64>::randn(&[2, 3]); // needs no grad
    let y = net.run_checkpointed(&x, 0, 2, 0.0);
    assert!(y.requires_grad());
    y.sum().backward();
    assert_eq!(net.grads().len(), 4);
    assert!(x.grad().is_none());
}

#[test]
fn weights_used_in_several_checkpoints_and_nonleaf_captures() {
    let w = Tensor::<f64>::randn(&[4, 4]).set_requires_grad(true);
    let a = Tensor::<f64>::randn(&[4]).set_requires_grad(true);
    let x = Tensor::<f64>::randn(&[2, 4]).set_requires_grad(true);
    let run = |checkpointed: bool| {
        w.zero_grad();
        a.zero_grad();
        x.zero_grad();
        let scale = a.exp(); // a non-leaf made before the scopes, captured
        let f = {
            let (w, scale) = (w.clone(), scale.clone());
            move |xs: &[Tensor<f64>]| (xs[0].matmul(&w) * &scale).tanh()
        };
        let y = if checkpointed {
            let h = tapegrad::checkpoint(f.clone(), &[x.clone()]);
            tapegrad::checkpoint(f, &[h])
        } else {
            f(&[f(&[x.clone()])])
        };
        y.sum().backward();
        [&w, &a, &x].map(|t| t.grad().unwrap().to_vec())
    };
    assert_eq!(run(false), run(true));
}

#[test]
fn nested_checkpoints() {
    let net = Net::new(6, 4);
    let x = Tensor::<f64>::randn(&[3, 4]).set_requires_grad(true);
    let plain = gradients(&net, &x, |x| net.run(x, 0, 6, 0.3));
    let nested = gradients(&net, &x, |x| {
        let (w, b) = (net.w.clone(), net.b.clone());
        tapegrad::checkpoint(
            move |xs| {
                let (w1, b1) = (w.clone(), b.clone());
                let inner = tapegrad::checkpoint(
                    move |ys| (0..3).fold(ys[0].clone(), |h, i| block(&h, &w1[i], &b1[i], 0.3)),
                    &[xs[0].clone()],
                );
                (3..6).fold(inner, |h, i| block(&h, &w[i], &b[i], 0.3))
            },
            &[x.clone()],
        )
    });
    assert_eq!(plain, nested);
}

#[test]
fn retain_graph_reruns_on_the_second_backward() {
    let runs = Arc::new(AtomicUsize::new(0));
    let x = Tensor::<f64>::randn(&[4]).set_requires_grad(true);
    let counter = runs.clone();
    let y = tapegrad::checkpoint(
        move |xs| {
            counter.fetch_add(1, Ordering::SeqCst);
            xs[0].exp().tanh()
        },
        &[x.clone()],
    )
    .sum();
    let opts = || BackwardOptions {
        retain_graph: true,
        ..Default::default()
    };
    y.backward_opts(opts());
    let once = x.grad().unwrap().to_vec();
    assert_eq!(runs.load(Ordering::SeqCst), 2, "forward, then one re-run");
    y.backward_opts(opts());
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "the second backward re-runs again"
    );
    let twice = x.grad().unwrap().to_vec();
    assert_eq!(twice, once.iter().map(|g| 2.0 * g).collect::<Vec<_>>());
}

#[test]
fn create_graph_through_a_checkpoint() {
    // y = Σ tanh(x)³: compare second derivatives with and without.
    let x = Tensor::<f64>::from_vec(vec![0.3, -0.7, 1.1], &[3]).set_requires_grad(true);
    let second = |checkpointed: bool| {
        let f = |xs: &[Tensor<f64>]| xs[0].tanh().powf(3.0);
        let y = if checkpointed {
            tapegrad::checkpoint(f, &[x.clone()])
        } else {
            f(&[x.clone()])
        };
        let opts = GradOptions {
            create_graph: true,
            ..Default::default()
        };
        let g = tapegrad::grad(&[y.sum()], &[x.clone()], opts)[0].clone().unwrap();
        tapegrad::grad(&[g.sum()], &[x.clone()], GradOptions::default())[0]
            .clone()
            .unwrap()
            .to_vec()
    };
    assert_eq!(second(false), second(true));
}

#[test]
fn grad_through_a_checkpoint_recomputes_only_what_is_needed() {
    let runs = Arc::new(AtomicUsize::new(0));
    let x = Tensor::<f64>::randn(&[3]).set_requires_grad(true);
    let counter = runs.clone();
    let a = tapegrad::checkpoint(
        move |xs| {
            counter.fetch_add(1, Ordering::SeqCst);
            xs[0].exp()
        },
        &[x.clone()],
    );
    // b depends on a, but grad is asked only of a: b's side is not needed.
    let b = a.sin();
    let out = a.sum() + b.sum();
    let g = tapegrad::grad(&[out], &[a.clone()], GradOptions::default());
    assert_eq!(g[0].as_ref().unwrap().to_vec().len(), 3);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "nothing below `a` was needed: no re-run"
    );
    assert!(x.grad().is_none());
}

#[test]
#[should_panic(expected = "in the forward but")]
fn a_rerun_that_takes_another_path_panics() {
    let flip = Arc::new(AtomicUsize::new(0));
    let x = Tensor::<f64>::randn(&[2, 2]).set_requires_grad(true);
    let seen = flip.clone();
    let y = tapegrad::checkpoint(
        move |xs| {
            // The second run reshapes differently: a different saved shape.
            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                xs[0].exp()
            } else {
                xs[0].reshape(&[4]).exp().reshape(&[2, 2])
            }
        },
        &[x.clone()],
    );
    y.sum().backward();
}

#[test]
#[should_panic(expected = "values but the forward saved 1;")]
fn a_rerun_that_saves_more_panics() {
    let flip = Arc::new(AtomicUsize::new(0));
    let x = Tensor::<f64>::randn(&[3]).set_requires_grad(true);
    let seen = flip.clone();
    let y = tapegrad::checkpoint(
        move |xs| {
            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                xs[0].exp()
            } else {
                xs[0].exp().exp() / xs[0].exp()
            }
        },
        &[x.clone()],
    );
    y.sum().backward();
}

#[test]
fn under_no_grad_checkpoint_just_calls_f() {
    let runs = Arc::new(AtomicUsize::new(0));
    let x = Tensor::<f64>::randn(&[3]).set_requires_grad(true);
    let counter = runs.clone();
    let y = tapegrad::no_grad(|| {
        tapegrad::checkpoint(
            move |xs| {
                counter.fetch_add(1, Ordering::SeqCst);
                xs[0].exp()
            },
            &[x.clone()],
        )
    });
    assert!(y.is_leaf() && !y.requires_grad());
    assert_eq!(y.to_vec(), x.exp().to_vec());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn checkpoint_sequential_matches_the_plain_run() {
    let net = Arc::new(Net::new(7, 4));
    let x = Tensor::<f64>::randn(&[2, 4]).set_requires_grad(true);
    type Layer = Arc<dyn Fn(&Tensor<f64>) -> Tensor<f64> + Send + Sync>;
    let layers: Vec<Layer> = (0..7)
        .map(|i| {
            let (w, b) = (net.w[i].clone(), net.b[i].clone());
            Arc::new(move |h: &Tensor<f64>| block(h, &w, &b, 0.2)) as Layer
        })
        .collect();
    let plain = gradients(&net, &x, |x| net.run(x, 0, 7, 0.2));
    for segments in [1, 2, 3, 7] {
        let seq = gradients(&net, &x, |x| {
            tapegrad::checkpoint_sequential(&layers, segments, x)
        });
        assert_eq!(plain, seq, "{segments} segments");
    }
    // With options: SaveDots in every checkpointed piece (two pieces of 2
    // layers, then 3 plain layers) re-runs the pieces, no product.
    let before = tapegrad::recompute_counts();
    let dots = gradients(&net, &x, |x| {
        tapegrad::checkpoint_sequential_with(&layers, 3, x, SAVE_DOTS)
    });
    let done = tapegrad::recompute_counts() - before;
    assert_eq!(plain, dots);
    assert_eq!((done.reruns, done.matmuls, done.reused_matmuls), (2, 0, 4));
}

#[test]
fn backward_on_another_thread() {
    let net = Net::new(3, 4);
    let x = Tensor::<f64>::randn(&[2, 4]).set_requires_grad(true);
    let plain = gradients(&net, &x, |x| net.run(x, 0, 3, 0.5));
    net.zero_grad();
    x.zero_grad();
    tapegrad::manual_seed(42);
    let loss = net.run_checkpointed(&x, 0, 3, 0.5).powf(2.0).sum();
    std::thread::spawn(move || loss.backward()).join().unwrap();
    let mut grads = vec![x.grad().unwrap().to_vec()];
    grads.extend(net.grads());
    assert_eq!(plain.1, grads);
}

// ------------------------------------------------------------ SaveDots policy

const SAVE_DOTS: CheckpointOptions = CheckpointOptions {
    policy: CheckpointPolicy::SaveDots,
};

impl Net {
    /// Blocks `from..to` as one checkpoint with `opts`.
    fn run_checkpointed_with(
        &self,
        x: &Tensor<f64>,
        from: usize,
        to: usize,
        p: f64,
        opts: CheckpointOptions,
    ) -> Tensor<f64> {
        let (w, b) = (self.w.clone(), self.b.clone());
        tapegrad::checkpoint_with(
            move |xs| (from..to).fold(xs[0].clone(), |h, i| block(&h, &w[i], &b[i], p)),
            &[x.clone()],
            opts,
        )
    }
}

#[test]
fn save_dots_gives_the_plain_gradients_without_recomputing_a_product() {
    let net = Net::new(6, 5);
    let x = Tensor::<f64>::randn(&[3, 5]).set_requires_grad(true);
    for p in [0.0, 0.4] {
        let plain = gradients(&net, &x, |x| net.run(x, 0, 6, p));
        let before = tapegrad::recompute_counts();
        let dots = gradients(&net, &x, |x| {
            let h = net.run_checkpointed_with(x, 0, 3, p, SAVE_DOTS);
            net.run_checkpointed_with(&h, 3, 6, p, SAVE_DOTS)
        });
        let done = tapegrad::recompute_counts() - before;
        assert_eq!(plain, dots, "p = {p}");
        assert_eq!(done.reruns, 2);
        assert_eq!(done.matmuls, 0, "no product computed again");
        assert_eq!(done.reused_matmuls, 6);

        let before = tapegrad::recompute_counts();
        let all = gradients(&net, &x, |x| {
            let h = net.run_checkpointed(x, 0, 3, p);
            net.run_checkpointed(&h, 3, 6, p)
        });
        let done = tapegrad::recompute_counts() - before;
        assert_eq!(plain, all);
        assert_eq!((done.reruns, done.matmuls, done.reused_matmuls), (2, 6, 0));
        // The re-runs save what a plain forward of the six layers saves.
        let saved = tapegrad::saved_residuals(|xs| net.run(&xs[0], 0, 6, p), &[x.clone()]);
        assert_eq!(done.saves, saved.len() as u64, "p = {p}");
    }
}

#[test]
fn save_dots_keeps_its_products_for_every_backward_under_retain_graph() {
    let net = Net::new(3, 4);
    let x = Tensor::<f64>::randn(&[2, 4]).set_requires_grad(true);
    let loss = net
        .run_checkpointed_with(&x, 0, 3, 0.0, SAVE_DOTS)
        .powf(2.0)
        .sum();
    let opts = || BackwardOptions {
        retain_graph: true,
        ..Default::default()
    };
    let before = tapegrad::recompute_counts();
    loss.backward_opts(opts());
    let once = net.grads();
    loss.backward_opts(opts());
    let done = tapegrad::recompute_counts() - before;
    assert_eq!((done.reruns, done.matmuls, done.reused_matmuls), (2, 0, 6));
    let twice = net.grads();
    for (a, b) in once.iter().zip(&twice) {
        assert_eq!(b, &a.iter().map(|g| 2.0 * g).collect::<Vec<_>>());
    }
}

#[test]
fn save_dots_nested_in_a_recompute_all_checkpoint_keeps_nothing() {
    let net = Net::new(4, 4);
    let x = Tensor::<f64>::randn(&[2, 4]).set_requires_grad(true);
    let plain = gradients(&net, &x, |x| net.run(x, 0, 4, 0.0));
    let before = tapegrad::recompute_counts();
    let nested = gradients(&net, &x, |x| {
        let (w, b) = (net.w.clone(), net.b.clone());
        tapegrad::checkpoint(
            move |xs| {
                let (w1, b1) = (w.clone(), b.clone());
                let inner = tapegrad::checkpoint_with(
                    move |ys| (0..2).fold(ys[0].clone(), |h, i| block(&h, &w1[i], &b1[i], 0.0)),
                    &[xs[0].clone()],
                    SAVE_DOTS,
                );
                (2..4).fold(inner, |h, i| block(&h, &w[i], &b[i], 0.0))
            },
            &[x.clone()],
        )
    });
    let done = tapegrad::recompute_counts() - before;
    assert_eq!(plain, nested);
    assert_eq!(
        done.reused_matmuls, 0,
        "the outer scope promised to keep only its input"
    );
}

#[test]
fn create_graph_through_a_save_dots_checkpoint() {
    let w = Tensor::<f64>::randn(&[3, 3]).set_requires_grad(true);
    let x = Tensor::<f64>::randn(&[2, 3]).set_requires_grad(true);
    let second = |opts: Option<CheckpointOptions>| {
        let w2 = w.clone();
        let f = move |xs: &[Tensor<f64>]| xs[0].matmul(&w2).tanh().matmul(&w2).powf(3.0);
        let y = match opts {
            Some(opts) => tapegrad::checkpoint_with(f, &[x.clone()], opts),
            None => f(&[x.clone()]),
        };
        let opts = GradOptions {
            create_graph: true,
            ..Default::default()
        };
        let g = tapegrad::grad(&[y.sum()], &[x.clone(), w.clone()], opts);
        let gg = (&g[0].clone().unwrap().sum() + &g[1].clone().unwrap().sum()) * 1.0;
        tapegrad::grad(&[gg], &[x.clone(), w.clone()], GradOptions::default())
            .into_iter()
            .map(|g| g.unwrap().to_vec())
            .collect::<Vec<_>>()
    };
    assert_eq!(second(None), second(Some(SAVE_DOTS)));
}

#[test]
#[should_panic(expected = "matrix product 0 was f64 of shape [2, 3] in the forward but f64 of shape [3, 3]")]
fn a_save_dots_rerun_with_other_products_panics() {
    let flip = Arc::new(AtomicUsize::new(0));
    let w = Tensor::<f64>::randn(&[3, 3]).set_requires_grad(true);
    let x = Tensor::<f64>::randn(&[2, 3]);
    let seen = flip.clone();
    let y = tapegrad::checkpoint_with(
        move |xs| {
            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                xs[0].matmul(&w).tanh()
            } else {
                // An unrecorded [3, 3] product (x needs no grad), then a
                // recorded [3, 3] one where the forward kept a [2, 3].
                xs[0].t().matmul(&xs[0]).matmul(&w).sum_dim(0, false).tanh()
            }
        },
        &[x],
        SAVE_DOTS,
    );
    y.sum().backward();
}

// ------------------------------------------------------------ saved residuals

#[test]
fn saved_residuals_lists_what_is_saved_in_order() {
    let w = Tensor::<f32>::randn(&[8, 8]).set_requires_grad(true);
    let b = Tensor::<f32>::randn(&[8]).set_requires_grad(true);
    let x = Tensor::<f32>::randn(&[4, 8]);
    let layer = |x: &Tensor<f32>, w: &Tensor<f32>, b: &Tensor<f32>| (x.matmul(w) + b).tanh().exp();
    let listed = |opts: Option<CheckpointOptions>| {
        tapegrad::saved_residuals(
            |xs| match opts {
                None => layer(&layer(&xs[0], &xs[1], &xs[2]), &xs[1], &xs[2]),
                Some(opts) => {
                    let (w, b) = (xs[1].clone(), xs[2].clone());
                    let h = tapegrad::checkpoint_with(
                        move |ys| layer(&layer(&ys[0], &w, &b), &w, &b),
                        &[xs[0].clone()],
                        opts,
                    );
                    h.sin()
                }
            },
            &[x.clone(), w.clone(), b.clone()],
        )
        .into_iter()
        .map(|r| (r.op, r.role, r.shape, r.new_bytes))
        .collect::<Vec<_>>()
    };
    let act = 4 * 8 * 4;
    let s = |op: &'static str, role: &str, new_bytes: usize| (op, role.to_string(), vec![4, 8], new_bytes);
    assert_eq!(
        listed(None),
        [
            s("MmBackward", "input 0", 0), // x is a leaf: the caller's memory
            s("TanhBackward", "output", act),
            s("ExpBackward", "output", act),
            s("MmBackward", "input 0", 0), // exp's output, saved already
            ("MmBackward", "input 1".to_string(), vec![8, 8], 0), // w: its input needs grad now
            s("TanhBackward", "output", act),
            s("ExpBackward", "output", act),
        ]
    );
    assert_eq!(
        listed(Some(CheckpointOptions::default())),
        [s("Checkpoint", "input 0", 0), s("SinBackward", "input 0", act)]
    );
    let dots = listed(Some(SAVE_DOTS));
    assert_eq!(dots.len(), 4);
    assert_eq!(dots[0], s("Checkpoint", "input 0", 0));
    for r in &dots[1..3] {
        assert_eq!((r.0, r.3), ("MmBackward", act));
        assert!(r.1.starts_with("output, kept by checkpoint #"), "{}", r.1);
    }
    assert_eq!(dots[3], s("SinBackward", "input 0", act));
}

#[test]
fn saved_residuals_leaves_the_generator_alone() {
    let x = Tensor::<f64>::randn(&[16]).set_requires_grad(true);
    tapegrad::manual_seed(5);
    let listed = tapegrad::saved_residuals(|xs| xs[0].dropout(0.5, true).exp(), &[x.clone()]);
    let next = Tensor::<f64>::rand(&[4]).to_vec();
    tapegrad::manual_seed(5);
    assert_eq!(next, Tensor::<f64>::rand(&[4]).to_vec());
    let ops: Vec<_> = listed.iter().map(|r| r.op).collect();
    assert_eq!(ops, ["DropoutBackward", "ExpBackward"], "{listed:#?}");
}

// ------------------------------------------------------------ planner

fn layers_of(net: &Arc<Net>, p: f64) -> Vec<tapegrad::Layer<f64>> {
    (0..net.w.len())
        .map(|i| {
            let net = net.clone();
            Arc::new(move |h: &Tensor<f64>| block(h, &net.w[i], &net.b[i], p)) as tapegrad::Layer<f64>
        })
        .collect()
}

#[test]
fn planned_checkpoints_give_the_plain_gradients_at_every_budget() {
    let net = Arc::new(Net::new(10, 6));
    let x = Tensor::<f64>::randn(&[4, 6]).set_requires_grad(true);
    let layers = layers_of(&net, 0.3);
    let plain = gradients(&net, &x, |x| net.run(x, 0, 10, 0.3));
    let activation = 4 * 6 * 8;
    let huge = tapegrad::plan_checkpoints(&layers, usize::MAX, &x);
    assert_eq!(huge.recomputed_layers, 0, "{huge}");
    assert!(huge.segments.iter().all(|s| !s.checkpointed));
    let minimum = tapegrad::try_plan_checkpoints(&layers, 0, &x)
        .unwrap_err()
        .minimum_bytes;
    let mut recomputed = Vec::new();
    for budget in [usize::MAX, 12 * activation, 8 * activation, minimum] {
        tapegrad::manual_seed(42);
        let plan = tapegrad::plan_checkpoints(&layers, budget, &x);
        recomputed.push(plan.recomputed_layers);
        let planned = gradients(&net, &x, |x| plan.run(&layers, x));
        assert_eq!(plain, planned, "{plan}");
        let direct = gradients(&net, &x, |x| tapegrad::checkpoint_planned(&layers, budget, x));
        assert_eq!(plain, direct, "{plan}");
    }
    assert!(recomputed.windows(2).all(|w| w[0] <= w[1]), "{recomputed:?}");
    assert!(recomputed[3] > 0);
}

#[test]
#[should_panic(expected = "the most frugal plan needs")]
fn a_budget_below_every_plan_panics_naming_the_minimum() {
    let net = Arc::new(Net::new(4, 3));
    let x = Tensor::<f64>::randn(&[2, 3]);
    tapegrad::plan_checkpoints(&layers_of(&net, 0.0), 10, &x);
}

#[test]
#[should_panic(expected = "the plan is for 4 layers, but 3 were given")]
fn a_plan_for_other_layers_panics() {
    let net = Arc::new(Net::new(4, 3));
    let x = Tensor::<f64>::randn(&[2, 3]);
    let layers = layers_of(&net, 0.0);
    let plan = tapegrad::plan_checkpoints(&layers, usize::MAX, &x);
    plan.run(&layers[..3], &x);
}

#[test]
fn profiling_leaves_the_generator_alone() {
    let net = Arc::new(Net::new(3, 3));
    let x = Tensor::<f64>::randn(&[2, 3]);
    tapegrad::manual_seed(9);
    let profiles = tapegrad::profile_layers(&layers_of(&net, 0.5), &x);
    let next = Tensor::<f64>::rand(&[4]).to_vec();
    tapegrad::manual_seed(9);
    assert_eq!(next, Tensor::<f64>::rand(&[4]).to_vec());
    assert_eq!(profiles.len(), 3);
    // x is a leaf: its layer saves it for nothing; later inputs count.
    assert_eq!(profiles[0].input_bytes, 0);
    assert_eq!(profiles[1].input_bytes, 2 * 3 * 8);
    assert!(profiles.iter().all(|p| p.saves_input && p.saves_output));
}

/// A plan prints its segments, the predicted bytes, and the share of the
/// forward's time it recomputes: 1 of 4 layers costing 0.5 s of 2 s is 25%.
#[test]
fn a_plan_prints_its_segments_and_the_recomputed_share() {
    use tapegrad::{LayerProfile, Plan, Segment};
    let mib = 1 << 20;
    let profile = |cost_secs| LayerProfile {
        input_bytes: mib,
        saved_bytes: 2 * mib,
        saves_input: true,
        saves_output: false,
        cost_secs,
    };
    let plan = Plan {
        segments: vec![
            Segment {
                start: 0,
                end: 1,
                checkpointed: true,
                kept_bytes: mib,
                rerun_bytes: 2 * mib,
            },
            Segment {
                start: 1,
                end: 4,
                checkpointed: false,
                kept_bytes: 6 * mib,
                rerun_bytes: 0,
            },
        ],
        budget_bytes: 8 * mib,
        predicted_forward_bytes: 7 * mib,
        predicted_peak_bytes: 8 * mib,
        recomputed_layers: 1,
        recomputed_secs: 0.5,
        profiles: vec![profile(0.5), profile(0.25), profile(0.75), profile(0.5)],
    };
    let want = "\
checkpoint plan for 4 layers, budget 8.000 MiB of saved activations
  layers 0..1      checkpointed  keeps 1.000 MiB, its re-run holds 2.000 MiB
  layers 1..4      plain         keeps 6.000 MiB
predicted saved bytes: 7.000 MiB at the end of forward, 8.000 MiB at the peak
recomputed: 1 of 4 layers (25% of the forward's time in the dry run)";
    assert_eq!(plan.to_string(), want);
    // With no time measured at all, the share is 0%, not NaN.
    let instant = Plan {
        profiles: vec![profile(0.0); 4],
        recomputed_secs: 0.0,
        ..plan
    };
    assert!(
        instant
            .to_string()
            .ends_with("(0% of the forward's time in the dry run)"),
        "{instant}"
    );
}

/// Under SaveDots the re-run takes the forward's matrix products back in
/// order, so it must compute as many: a function that computes fewer or
/// more the second time is refused by name, not given wrong gradients.
#[test]
fn save_dots_refuses_a_rerun_with_other_products() {
    for (first, again, says) in [
        (2, 1, "computed 1 matrix products but the forward kept 2"),
        (1, 2, "computed more matrix products"),
    ] {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let w = Tensor::<f64>::randn(&[3, 3]).set_requires_grad(true);
        let x = Tensor::<f64>::randn(&[2, 3]).set_requires_grad(true);
        let wc = w.clone();
        let y = tapegrad::checkpoint_with(
            move |xs| {
                let products = if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                    first
                } else {
                    again
                };
                (0..products).fold(xs[0].clone(), |h, _| h.matmul(&wc).tanh())
            },
            &[x],
            SAVE_DOTS,
        );
        let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| y.sum().backward()))
            .expect_err("a re-run with other products panics");
        let msg = err
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| err.downcast_ref::<&str>().unwrap_or(&"").to_string());
        assert!(msg.starts_with("checkpoint #") && msg.contains(says), "{msg}");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
}
