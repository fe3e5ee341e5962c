//! What the benches share: medians of repeated timings and the
//! machine-readable line `<workload> <metric> <value>` that
//! `benches/compare.py` reads.

// Each bench is its own crate and uses only part of this module.
#![allow(dead_code)]

pub mod fit;

use std::time::Instant;

/// The median of `xs` (the upper one of an even count).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

/// Median seconds of `runs` calls of `f`, after `warmup` calls.
pub fn time(warmup: usize, runs: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// Prints one figure as `<workload> <metric> <value>`.
pub fn report(workload: &str, metric: &str, value: f64) {
    println!("{workload} {metric} {value:.6}");
}

/// Runs the entries of `all` named on the command line, or all of them when
/// none is (cargo's own flags, such as `--bench`, are not names).
pub fn run_named(all: &[(&str, fn())]) {
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    for (name, run) in all {
        if wanted.is_empty() || wanted.iter().any(|w| w == name) {
            run();
        }
    }
}
