//! Tensors shared between threads: ops that read a tensor while others
//! write it in place never deadlock, and a leaf's gradient is never seen
//! missing while another thread adds to it. A deadlock hangs, so those tests
//! run in child processes with a timeout.

mod common;

use common::in_child_process;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use tapegrad::prelude::*;

/// How long the threads of one test race.
const RACE: Duration = Duration::from_millis(1500);
/// A child still running after this is taken to be deadlocked.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `writers` threads writing in place and `readers` threads reading,
/// each looping until `RACE` is over; returns how many loops the readers
/// made (so that a test can tell they ran).
fn race(writers: Vec<Box<dyn Fn() + Send>>, readers: Vec<Box<dyn Fn() + Send>>) -> usize {
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for w in writers {
        let stop = stop.clone();
        handles.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                w();
            }
        }));
    }
    for r in readers {
        let (stop, reads) = (stop.clone(), reads.clone());
        handles.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                r();
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    thread::sleep(RACE);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("a racing thread panicked");
    }
    reads.load(Ordering::Relaxed)
}

fn writer(x: &Tensor<f32>) -> Box<dyn Fn() + Send> {
    let x = x.clone();
    Box::new(move || x.add_(&Tensor::full(&[16], 1e-6)))
}

fn reader(f: impl Fn() + Send + 'static) -> Box<dyn Fn() + Send> {
    Box::new(f)
}

/// An op of one tensor, applied to it twice.
type Op = fn(&Tensor<f32>) -> Tensor<f32>;

#[test]
fn ops_reading_one_tensor_twice_while_it_is_written() {
    // x * x once took two read locks of x; a writer waiting between them
    // parked the second behind it, and both waited forever.
    in_child_process(
        "ops_reading_one_tensor_twice_while_it_is_written",
        TIMEOUT,
        || {
            let x = Tensor::<f32>::ones(&[16]);
            let ops: [Op; 6] = [
                |x| x * x,
                |x| x + x,
                |x| x - x,
                |x| x / x,
                |x| x.pow(x),
                |x| x.maximum(x),
            ];
            let readers = (0..6)
                .map(|i| {
                    let x = x.clone();
                    let op = ops[i % ops.len()];
                    reader(move || drop(op(&x)))
                })
                .collect();
            let reads = race(vec![writer(&x), writer(&x)], readers);
            assert!(reads > 0);
        },
    );
}

#[test]
fn ops_reading_two_tensors_in_both_orders_while_both_are_written() {
    // x * y in some threads, y * x in others: taken in argument order, two
    // readers each holding one lock and writers waiting on both closed a
    // cycle.
    in_child_process(
        "ops_reading_two_tensors_in_both_orders_while_both_are_written",
        TIMEOUT,
        || {
            let x = Tensor::<f32>::ones(&[16]);
            let y = Tensor::<f32>::ones(&[16]);
            let readers = (0..6)
                .map(|i| {
                    let (x, y) = (x.clone(), y.clone());
                    match i % 3 {
                        0 => reader(move || drop(&x * &y)),
                        1 => reader(move || drop(&y * &x)),
                        _ => reader(move || drop(y.binary_cross_entropy_with_logits(&x))),
                    }
                })
                .collect();
            let reads = race(vec![writer(&x), writer(&y)], readers);
            assert!(reads > 0);
        },
    );
}

#[test]
fn a_leafs_gradient_is_never_seen_missing_while_another_thread_adds_to_it() {
    // The slot was emptied during the sum; a reader must see the old or the
    // new gradient, and every backward's gradient must arrive.
    let x = Tensor::<f64>::ones(&[64]).set_requires_grad(true);
    (&x * 1.0).sum().backward();
    let stop = Arc::new(AtomicBool::new(false));
    let backwards: Vec<_> = (0..2)
        .map(|_| {
            let (x, stop) = (x.clone(), stop.clone());
            thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    (&x * 1.0).sum().backward();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let (mut reads, mut missing) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < RACE {
        match x.grad() {
            Some(_) => reads += 1,
            None => missing += 1,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let runs: u64 = 1 + backwards.into_iter().map(|h| h.join().unwrap()).sum::<u64>();
    assert_eq!(
        missing,
        0,
        "x.grad() was None {missing} times in {} reads",
        reads + missing
    );
    let g = x.grad().unwrap().to_vec();
    assert!(
        g.iter().all(|&v| v == runs as f64),
        "{runs} backwards, gradient {:?}",
        &g[..4]
    );
}
