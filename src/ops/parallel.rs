//! Big kernels split over the cores: the calling thread runs one part,
//! persistent worker threads (one per further core) run the others.
//!
//! Matrix products use it (split along the longer of the output's two
//! sides, each part one single-threaded gemm): matrixmultiply's own
//! threading splits the row loop under one shared packing of the right
//! operand, which kept the products of a batch of 128 rows (W2's) at
//! 85-100 GFLOP/s on two cores; split columns give 100-115.
//!
//! `TAPEGRAD_NUM_THREADS` sets the number of threads (default: the
//! machine's available parallelism).

use crate::sync::lock;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, OnceLock};

/// A part of a kernel, borrowing the caller's data.
pub(crate) type Part<'a> = Box<dyn FnOnce() + Send + 'a>;

/// A part sent to a worker, and where it reports whether it completed
/// without panicking.
type Job = (Part<'static>, Sender<bool>);

thread_local! {
    /// Set on worker threads: a part that splits again runs its parts
    /// inline (a worker waiting on itself would deadlock).
    static IS_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The senders to the worker threads, started on first use.
#[track_caller]
fn workers() -> &'static [Mutex<Sender<Job>>] {
    static WORKERS: OnceLock<Vec<Mutex<Sender<Job>>>> = OnceLock::new();
    WORKERS.get_or_init(|| {
        (1..threads())
            .filter_map(|i| {
                let (tx, rx) = mpsc::channel::<Job>();
                std::thread::Builder::new()
                    .name(format!("tapegrad-{i}"))
                    .spawn(move || work(rx))
                    .ok()
                    .map(|_| Mutex::new(tx))
            })
            .collect()
    })
}

#[track_caller]
fn work(rx: Receiver<Job>) {
    IS_WORKER.with(|w| w.set(true));
    for (part, done) in rx {
        let ok = panic::catch_unwind(AssertUnwindSafe(part)).is_ok();
        let _ = done.send(ok);
    }
}

/// How many threads kernels split over.
#[track_caller]
pub(crate) fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        std::env::var("TAPEGRAD_NUM_THREADS")
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

/// Runs every part, the first on this thread and the rest on workers, and
/// returns when all are done. A panic in a part is raised here, after the
/// others have finished. At most [`threads`] parts should be given: extra
/// parts queue behind the others.
#[track_caller]
pub(crate) fn run(mut parts: Vec<Part<'_>>) {
    if parts.len() <= 1 || IS_WORKER.with(|w| w.get()) || workers().is_empty() {
        parts.into_iter().for_each(|p| p());
        return;
    }
    let first = parts.remove(0);
    let mut waiting = Vec::with_capacity(parts.len());
    for (i, part) in parts.into_iter().enumerate() {
        // SAFETY: the part borrows data that lives until this function
        // returns, and this function returns only after every part it
        // handed out has reported back (or was never run: a failed send
        // gives the part back, and it runs below, on this thread).
        let part: Part<'static> = unsafe { std::mem::transmute::<Part<'_>, Part<'static>>(part) };
        let (done_tx, done_rx) = mpsc::channel();
        let worker = &workers()[i % workers().len()];
        let sent = lock(worker).send((part, done_tx));
        match sent {
            Ok(()) => waiting.push(done_rx),
            Err(mpsc::SendError((part, _))) => part(),
        }
    }
    let first_ok = panic::catch_unwind(AssertUnwindSafe(first));
    // A worker always reports (it catches panics): this waits for every
    // part handed out (`count` reads every receiver, no short cut).
    let failed = waiting
        .into_iter()
        .filter(|rx| !rx.recv().unwrap_or(false))
        .count();
    match first_ok {
        Err(payload) => panic::resume_unwind(payload),
        Ok(()) => assert!(failed == 0, "a part of a parallel kernel panicked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_once_and_sees_the_callers_data() {
        let mut out = vec![0usize; 8];
        let parts: Vec<Part<'_>> = out
            .chunks_mut(2)
            .enumerate()
            .map(|(i, chunk)| Box::new(move || chunk.fill(i + 1)) as Part<'_>)
            .collect();
        run(parts);
        assert_eq!(out, vec![1, 1, 2, 2, 3, 3, 4, 4]);
    }

    #[test]
    fn a_panicking_part_panics_the_caller_and_the_workers_live_on() {
        let parts: Vec<Part<'_>> = vec![Box::new(|| {}), Box::new(|| panic!("boom"))];
        assert!(panic::catch_unwind(AssertUnwindSafe(|| run(parts))).is_err());
        let mut hit = [false; 2];
        let (a, b) = hit.split_at_mut(1);
        run(vec![Box::new(|| a[0] = true), Box::new(|| b[0] = true)]);
        assert_eq!(hit, [true, true]);
    }
}
