//! Models and per-thread state across threads: a model shared through `Arc`
//! serves 8 threads at once with the single-threaded results, bit for bit;
//! two models train at once as each does alone; concurrent backwards into
//! one leaf lose no gradient; and grad mode, anomaly mode and the RNG stay
//! with the thread that set them. The threads meet at barriers so that they
//! really overlap; a thread that panics before a barrier would leave the
//! others waiting, so each test runs in a child process with a timeout.

mod common;

use common::{in_child_process, panic_message};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;
use tapegrad::nn::{Dropout, Linear, Module, ReLU, Sequential, Tanh};
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::prelude::*;

/// A child still running after this is taken to be deadlocked.
const TIMEOUT: Duration = Duration::from_secs(120);
const THREADS: usize = 8;

/// The bits of every element: equality of these is bitwise equality (and
/// NaN equals NaN).
fn bits(t: &Tensor<f32>) -> Vec<u32> {
    t.to_vec().into_iter().map(f32::to_bits).collect()
}

/// Runs `f(i)` on `n` threads at once and returns the results in order.
fn on_threads<R: Send + 'static>(n: usize, f: impl Fn(usize) -> R + Send + Sync + 'static) -> Vec<R> {
    let f = Arc::new(f);
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let f = f.clone();
            thread::spawn(move || f(i))
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("a thread panicked"))
        .collect()
}

fn mlp(d_in: usize, hidden: usize, d_out: usize) -> Sequential<f32> {
    Sequential::new()
        .add(Linear::new(d_in, hidden))
        .add(ReLU)
        .add(Linear::new(hidden, hidden))
        .add(Tanh)
        .add(Linear::new(hidden, d_out))
}

#[test]
fn a_model_shared_through_arc_serves_8_threads_as_one() {
    in_child_process(
        "a_model_shared_through_arc_serves_8_threads_as_one",
        TIMEOUT,
        || {
            tapegrad::manual_seed(0);
            let model = Arc::new(mlp(16, 64, 4));
            let inputs: Vec<Tensor<f32>> = (0..THREADS).map(|_| Tensor::randn(&[32, 16])).collect();
            // single-threaded: inference (no graph) and a recorded forward,
            // whose gradient of the weights is compared too
            let first_weight = |m: &Sequential<f32>| m.parameters()[0].clone();
            let alone: Vec<(Vec<u32>, Vec<u32>)> = inputs
                .iter()
                .map(|x| {
                    let y = tapegrad::no_grad(|| model.forward(x));
                    let g = tapegrad::grad(
                        &[model.forward(x).sum()],
                        &[first_weight(&model)],
                        GradOptions::default(),
                    )[0]
                    .clone()
                    .expect("the weight is used");
                    (bits(&y), bits(&g))
                })
                .collect();
            let barrier = Arc::new(Barrier::new(THREADS));
            let (shared, inputs) = (model.clone(), Arc::new(inputs));
            let rounds = on_threads(THREADS, move |i| {
                barrier.wait();
                let mut ok = 0;
                for _ in 0..20 {
                    let y = tapegrad::no_grad(|| shared.forward(&inputs[i]));
                    let g = tapegrad::grad(
                        &[shared.forward(&inputs[i]).sum()],
                        &[first_weight(&shared)],
                        GradOptions::default(),
                    )[0]
                    .clone()
                    .expect("the weight is used");
                    assert_eq!(bits(&y), alone[i].0, "thread {i}: the output differs");
                    assert_eq!(bits(&g), alone[i].1, "thread {i}: the weight's gradient differs");
                    ok += 1;
                }
                ok
            });
            assert_eq!(rounds, vec![20; THREADS]);
            // tapegrad::grad left the shared weights' .grad alone
            assert!(model.parameters().iter().all(|p| p.grad().is_none()));
        },
    );
}

/// Trains a small MLP with dropout from `seed` for `steps` Adam steps on
/// data drawn from the same seed; returns the final parameters' bits.
fn train_alone(seed: u64, steps: usize) -> Vec<Vec<u32>> {
    tapegrad::manual_seed(seed);
    let model = Sequential::new()
        .add(Linear::new(8, 32))
        .add(ReLU)
        .add(Dropout::new(0.25))
        .add(Linear::new(32, 3));
    let x = Tensor::<f32>::randn(&[64, 8]);
    let labels: Vec<usize> = (0..64).map(|i| (i * 7 + seed as usize) % 3).collect();
    let mut opt = Adam::new(model.parameters(), 0.01);
    for _ in 0..steps {
        opt.zero_grad();
        model.forward(&x).cross_entropy(&labels).backward();
        opt.step();
    }
    model.parameters().iter().map(bits).collect()
}

#[test]
fn two_threads_train_two_models_each_as_alone() {
    in_child_process("two_threads_train_two_models_each_as_alone", TIMEOUT, || {
        const STEPS: usize = 300;
        let alone = [train_alone(1, STEPS), train_alone(2, STEPS)];
        assert_ne!(alone[0], alone[1], "two seeds, two models");
        let barrier = Arc::new(Barrier::new(2));
        let together = on_threads(2, move |i| {
            barrier.wait();
            train_alone(1 + i as u64, STEPS)
        });
        for (i, (t, a)) in together.iter().zip(&alone).enumerate() {
            assert!(t == a, "model {i} trained beside another differs from alone");
        }
    });
}

#[test]
fn concurrent_backwards_into_one_shared_leaf_lose_no_gradient() {
    in_child_process(
        "concurrent_backwards_into_one_shared_leaf_lose_no_gradient",
        TIMEOUT,
        || {
            // Thread i runs ROUNDS backwards of sum(w * (i + 1)), and as many of
            // sum(h * (i + 1)) through h = 2 w, a graph all threads share
            // (retain_graph). Each element of w.grad must end at
            // ROUNDS * Σ (i + 1) * (1 + 2): small integers, exact in f64.
            const ROUNDS: usize = 300;
            let w = Tensor::<f64>::zeros(&[64]).set_requires_grad(true);
            let h = &w * 2.0;
            let barrier = Arc::new(Barrier::new(THREADS));
            let (w2, h2) = (w.clone(), h.clone());
            on_threads(THREADS, move |i| {
                let c = (i + 1) as f64;
                barrier.wait();
                for _ in 0..ROUNDS {
                    (&w2 * c).sum().backward();
                    (&h2 * c).sum().backward_opts(BackwardOptions {
                        retain_graph: true,
                        ..Default::default()
                    });
                }
            });
            let expected = (ROUNDS * (1..=THREADS).sum::<usize>() * 3) as f64;
            let g = w.grad().expect("w got gradients").to_vec();
            assert!(
                g.iter().all(|&v| v == expected),
                "expected {expected} in every element, got {:?}",
                &g[..4]
            );
        },
    );
}

#[test]
fn grad_mode_is_per_thread() {
    in_child_process("grad_mode_is_per_thread", TIMEOUT, || {
        // Thread 0 stays in no_grad while thread 1 records, then the other
        // way round; each checks its own mode at every step.
        let barrier = Arc::new(Barrier::new(2));
        let x = Tensor::<f32>::ones(&[4]).set_requires_grad(true);
        on_threads(2, move |i| {
            let records = |expected: bool| {
                assert_eq!(tapegrad::is_grad_enabled(), expected, "thread {i}");
                assert_eq!((&x * 2.0).requires_grad(), expected, "thread {i}");
            };
            for phase in 0..2 {
                if phase == i {
                    tapegrad::no_grad(|| {
                        barrier.wait(); // the other thread records meanwhile
                        records(false);
                        barrier.wait();
                    });
                } else {
                    barrier.wait();
                    records(true);
                    barrier.wait();
                }
                records(true);
            }
        });
    });
}

#[test]
fn anomaly_mode_is_per_thread() {
    in_child_process("anomaly_mode_is_per_thread", TIMEOUT, || {
        // sqrt'(0) = inf, times 0: a NaN gradient. Inside detect_anomaly it
        // panics naming SqrtBackward; in the other thread, running at the
        // same moment outside the mode, it gives NaN and no panic.
        let nan_backward = || {
            let x = Tensor::<f64>::zeros(&[3]).set_requires_grad(true);
            (x.sqrt().sum() * 0.0).backward();
            x.grad().expect("x gets a gradient").to_vec()
        };
        let barrier = Arc::new(Barrier::new(2));
        let results = on_threads(2, move |i| {
            if i == 0 {
                tapegrad::detect_anomaly(|| {
                    barrier.wait();
                    let msg = panic_message(|| drop(nan_backward()));
                    barrier.wait();
                    Err(msg)
                })
            } else {
                barrier.wait();
                let g = nan_backward();
                barrier.wait();
                Ok(g)
            }
        });
        let msg = results[0].clone().expect_err("thread 0 is in anomaly mode");
        assert!(msg.contains("SqrtBackward"), "{msg}");
        let g = results[1].clone().expect("thread 1 is not in anomaly mode");
        assert!(g.iter().all(|v| v.is_nan()), "{g:?}");
    });
}

/// Draws from the thread's generator: seeded once with 10, then randn and
/// a dropout mask each round (`sync` around each round).
fn drawer(sync: &dyn Fn()) -> Vec<Vec<u32>> {
    tapegrad::manual_seed(10);
    let ones = Tensor::<f32>::ones(&[64]);
    let mut out = Vec::new();
    for _ in 0..50 {
        sync();
        out.push(bits(&Tensor::randn(&[8])));
        out.push(bits(&ones.dropout(0.5, true)));
        sync();
    }
    out
}

/// Reseeds the thread's generator every round (with 1000 + round) and
/// draws once.
fn reseeder(sync: &dyn Fn()) -> Vec<Vec<u32>> {
    (0..50)
        .map(|round| {
            sync();
            tapegrad::manual_seed(1000 + round);
            let drawn = bits(&Tensor::randn(&[8]));
            sync();
            drawn
        })
        .collect()
}

#[test]
fn the_rng_is_per_thread() {
    in_child_process("the_rng_is_per_thread", TIMEOUT, || {
        // One thread reseeds in the middle of every round of the other's
        // draws; each stream must be the one its thread draws alone.
        let alone = [drawer(&|| {}), reseeder(&|| {})];
        let barrier = Arc::new(Barrier::new(2));
        let together = on_threads(2, move |i| {
            let sync = || {
                barrier.wait();
            };
            if i == 0 {
                drawer(&sync)
            } else {
                reseeder(&sync)
            }
        });
        assert!(
            together[0] == alone[0],
            "the drawer's stream changed beside a reseeding thread"
        );
        assert!(
            together[1] == alone[1],
            "the reseeder's draws changed beside a drawing thread"
        );
    });
}
