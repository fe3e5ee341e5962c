//! Data-parallel training speed: images per second of the digits CNN
//! (`examples/common/digits_cnn.rs`, Adam, batch 64 per replica) with one
//! replica (plain training, no DDP; and alone under DDP, to see its
//! overhead) and with 2 thread replicas under
//! `DistributedDataParallel`, every replica single-threaded
//! (`TAPEGRAD_NUM_THREADS=1`); with `--torch PYTHON`, PyTorch's DDP over
//! gloo on 2 processes (`benches/pytorch_ddp.py`) in the same rounds.
//! Medians over the rounds, as lines `ddp <metric> <value>`.
//!
//! Run: `cargo bench --bench ddp -- --torch /path/to/python [--rounds 5]
//! [--steps 200] [--bucket-bytes N]`

mod common;
#[path = "../examples/common/digits_cnn.rs"]
mod digits_cnn;

use common::{median, report};
use digits_cnn::digits_cnn;
use std::sync::{Arc, Barrier};
use std::time::Instant;
use tapegrad::distributed::{DdpOptions, DistributedDataParallel, ThreadGroup};
use tapegrad::nn::Module;
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::Tensor;

const BATCH: usize = 64;
const WARMUP: usize = 20;

struct Args {
    rounds: usize,
    steps: usize,
    torch: Option<String>,
    options: DdpOptions,
}

fn args() -> Args {
    let mut a = Args {
        rounds: 5,
        steps: 200,
        torch: None,
        options: DdpOptions::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--rounds" => a.rounds = value().parse().expect("--rounds N"),
            "--steps" => a.steps = value().parse().expect("--steps N"),
            "--torch" => a.torch = Some(value()),
            "--bucket-bytes" => {
                let n = value().parse().expect("--bucket-bytes N");
                (a.options.bucket_bytes, a.options.first_bucket_bytes) = (n, n);
            }
            _ => {} // cargo's own (--bench)
        }
    }
    a
}

/// Trains `steps` steps (after a warm-up) on a fixed random batch; returns
/// the seconds they took, from a barrier shared by the replicas.
fn train(model: &dyn Module<f32>, steps: usize, start: &Barrier) -> f64 {
    let x = Tensor::<f32>::rand(&[BATCH, 1, 8, 8]);
    let y: Vec<usize> = (0..BATCH).map(|i| i * 7 % 10).collect();
    let mut opt = Adam::new(model.parameters(), 0.003);
    let mut step = || {
        opt.zero_grad();
        model.forward(&x).cross_entropy(&y).backward();
        opt.step();
    };
    for _ in 0..WARMUP {
        step();
    }
    start.wait();
    let t = Instant::now();
    for _ in 0..steps {
        step();
    }
    t.elapsed().as_secs_f64()
}

/// Images per second of one plain replica, on a thread of its own as the
/// replicas are (glibc's allocator serves the main thread from another
/// arena, which alone changes the speed of this loop by a third).
fn one_replica(steps: usize) -> f64 {
    let seconds = std::thread::spawn(move || train(&digits_cnn(), steps, &Barrier::new(1)))
        .join()
        .expect("the replica");
    (BATCH * steps) as f64 / seconds
}

/// Images per second of `n` thread replicas (all replicas' images over
/// the slowest one's time), and the share of all-reduce time hidden.
fn replicas(n: usize, steps: usize, options: &DdpOptions) -> (f64, f64) {
    let start = Arc::new(Barrier::new(n));
    let workers: Vec<_> = ThreadGroup::new(n)
        .into_iter()
        .map(|group| {
            let (start, options) = (start.clone(), options.clone());
            std::thread::spawn(move || {
                let model = DistributedDataParallel::with_options(digits_cnn(), group, options);
                let seconds = train(&model, steps, &start);
                (seconds, model.stats().overlap())
            })
        })
        .collect();
    let runs: Vec<(f64, f64)> = workers
        .into_iter()
        .map(|w| w.join().expect("a replica"))
        .collect();
    let slowest = runs.iter().map(|r| r.0).fold(0.0, f64::max);
    ((n * BATCH * steps) as f64 / slowest, runs[0].1)
}

/// PyTorch's images per second (its script's last line).
fn torch(python: &str, steps: usize) -> f64 {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/pytorch_ddp.py");
    let out = std::process::Command::new(python)
        .args([script, "--steps", &steps.to_string()])
        .output()
        .expect("run benches/pytorch_ddp.py");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pytorch_ddp.py failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| l.strip_prefix("images_per_second "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no images_per_second in:\n{text}"))
}

fn main() {
    // Each replica single-threaded (read when the first kernel runs).
    std::env::set_var("TAPEGRAD_NUM_THREADS", "1");
    let a = args();
    let (mut one, mut one_ddp, mut two, mut overlap, mut pt) = (vec![], vec![], vec![], vec![], vec![]);
    for round in 0..a.rounds {
        one.push(one_replica(a.steps));
        one_ddp.push(replicas(1, a.steps, &a.options).0);
        let (ips, hidden) = replicas(2, a.steps, &a.options);
        two.push(ips);
        overlap.push(hidden);
        if let Some(python) = &a.torch {
            pt.push(torch(python, a.steps));
        }
        eprintln!(
            "round {round}: 1 replica {:.0} (under DDP {:.0}), 2 replicas {:.0}, PyTorch DDP {} images/s",
            one[round],
            one_ddp[round],
            two[round],
            pt.get(round).map_or("-".to_string(), |v| format!("{v:.0}"))
        );
    }
    let (one, two) = (median(one), median(two));
    report("ddp", "images_per_second_1_replica", one);
    report("ddp", "images_per_second_1_replica_under_ddp", median(one_ddp));
    report("ddp", "images_per_second_2_replicas", two);
    report("ddp", "speedup_2_over_1", two / one);
    report("ddp", "allreduce_hidden_share", median(overlap));
    if !pt.is_empty() {
        let pt = median(pt);
        report("ddp", "pytorch_gloo_images_per_second_2_processes", pt);
        report("ddp", "tapegrad_over_pytorch", two / pt);
    }
}
