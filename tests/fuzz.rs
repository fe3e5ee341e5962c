//! A random-program fuzzer on the stable toolchain: programs of ops on
//! random shapes (valid and invalid ones), grad modes, checkpoints,
//! in-place updates, hooks, detach and higher-order gradients, made from a
//! seed (`fuzz/program.rs`), run and checked (`fuzz/interp.rs`). A program
//! passes with correct gradients (equal to the run without checkpoints,
//! and to central differences on small cases) or a panic of the crate's
//! that names the op the program got wrong; nothing else.
//!
//! `cargo test --test fuzz` runs 2,000 programs (or 20 s). With
//! `TAPEGRAD_FUZZ_SECS=N` it runs for N seconds from seed
//! `TAPEGRAD_FUZZ_START` (default: from the clock); `TAPEGRAD_FUZZ_SEED=S`
//! replays one program, printing it. Programs run in a child process (this
//! test binary again), so that an abort or a hang names its seed instead
//! of ending the run. See docs/reliability.md.

mod fuzz {
    pub mod interp;
    pub mod program;
}

use fuzz::{interp, program};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CHILD: &str = "TAPEGRAD_FUZZ_CHILD";
/// A program running longer than this is a hang.
const HANG: Duration = Duration::from_secs(60);

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Where the last panic was raised (the panic hook keeps it quiet: most
/// panics here are expected ones).
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| l.to_string()).unwrap_or_default();
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }));
}

/// Checks the program of `seed`, naming where an unexpected panic came from.
fn check_seed(seed: u64) -> Result<(), String> {
    let prog = program::generate(seed);
    let result = std::panic::catch_unwind(|| interp::check(&prog));
    let at = || LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if e.contains("panic") => Err(format!("{e} (last panic at {})", at())),
        Ok(Err(e)) => Err(e),
        Err(p) => Err(format!(
            "the checker panicked: {} at {}",
            interp::message(&*p),
            at()
        )),
    }
}

/// The child: programs from `TAPEGRAD_FUZZ_FROM` on, until `..._COUNT` of
/// them ran or the clock passed `..._UNTIL` (ms); `seed N` before each,
/// `fail N: why` after a failed one, `done` at the end.
fn child() {
    quiet_panics();
    let from = env_u64("TAPEGRAD_FUZZ_FROM").unwrap();
    let count = env_u64("TAPEGRAD_FUZZ_COUNT").unwrap();
    let until = env_u64("TAPEGRAD_FUZZ_UNTIL").unwrap();
    let started = Arc::new(AtomicU64::new(now_ms()));
    let watched = started.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(1));
        if now_ms() - watched.load(Ordering::Relaxed) > HANG.as_millis() as u64 {
            println!("hang");
            std::process::exit(3);
        }
    });
    let mut out = std::io::stdout();
    // libtest has printed "test fuzz ... " with no newline.
    writeln!(out).unwrap();
    for seed in from..from.saturating_add(count) {
        if now_ms() >= until {
            break;
        }
        started.store(now_ms(), Ordering::Relaxed);
        writeln!(out, "seed {seed}").unwrap();
        out.flush().unwrap();
        if let Err(e) = check_seed(seed) {
            writeln!(out, "fail {seed}: {}", e.replace('\n', " ")).unwrap();
        }
    }
    let covered: Vec<String> = interp::COVERED
        .iter()
        .map(|c| c.load(Ordering::Relaxed).to_string())
        .collect();
    writeln!(out, "covered {}", covered.join(" ")).unwrap();
    writeln!(out, "done").unwrap();
}

/// Runs programs from `start` in child processes, `count` of them or for
/// `secs`; returns how many ran, the failures (seed, why), and what the
/// checks covered ([`interp::COVERED`], summed over the children that
/// finished).
fn drive(start: u64, count: u64, secs: u64) -> (u64, Vec<(u64, String)>, [u64; 5]) {
    let mut covered = [0u64; 5];
    let until = now_ms() + secs * 1000;
    let end = start.saturating_add(count);
    let (mut next, mut ran, mut failures) = (start, 0, vec![]);
    while next < end && now_ms() < until {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["fuzz", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .env("TAPEGRAD_FUZZ_FROM", next.to_string())
            .env("TAPEGRAD_FUZZ_COUNT", (end - next).to_string())
            .env("TAPEGRAD_FUZZ_UNTIL", until.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the fuzz child");
        let stderr = child.stderr.take().unwrap();
        let errors = std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s).ok();
            s
        });
        let (mut current, mut done, mut hang) = (None, false, false);
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap_or_default();
            if let Some(s) = line.strip_prefix("seed ") {
                current = s.parse::<u64>().ok();
                ran += 1;
            } else if let Some(rest) = line.strip_prefix("fail ") {
                let (seed, why) = rest.split_once(": ").unwrap_or((rest, ""));
                failures.push((seed.parse().unwrap_or(0), why.to_string()));
            } else if let Some(rest) = line.strip_prefix("covered ") {
                for (c, n) in covered.iter_mut().zip(rest.split(' ')) {
                    *c += n.parse::<u64>().unwrap_or(0);
                }
            } else if line == "done" {
                done = true;
            } else if line == "hang" {
                hang = true;
            }
        }
        let status = child.wait().unwrap();
        let errors = errors.join().unwrap_or_default();
        if done && status.success() {
            break;
        }
        // The child died in the program it had started (or before any).
        let seed = current.unwrap_or(next);
        let tail: String = errors.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
        let why = if hang {
            format!("still running after {HANG:?} (a hang)")
        } else {
            format!("the process died ({status}): {tail}")
        };
        failures.push((seed, why));
        next = seed + 1;
    }
    (ran, failures, covered)
}

#[test]
fn fuzz() {
    if std::env::var(CHILD).is_ok() {
        return child();
    }
    if let Some(seed) = env_u64("TAPEGRAD_FUZZ_SEED") {
        println!("{:#?}", program::generate(seed));
        quiet_panics();
        let result = check_seed(seed);
        let _ = std::panic::take_hook();
        if let Err(e) = result {
            panic!("fuzz: seed {seed} fails: {e}");
        }
        println!("fuzz: seed {seed} passes");
        return;
    }
    let secs = env_u64("TAPEGRAD_FUZZ_SECS");
    let start = env_u64("TAPEGRAD_FUZZ_START").unwrap_or_else(|| if secs.is_some() { now_ms() } else { 0 });
    let (count, secs) = match secs {
        Some(s) => (u64::MAX, s),
        None => (2000, 20),
    };
    let clock = Instant::now();
    let (ran, failures, covered) = drive(start, count, secs);
    println!(
        "fuzz: {ran} programs, {} seconds, {} failures (seeds from {start})",
        clock.elapsed().as_secs(),
        failures.len()
    );
    let [ck, fd, elems, panics, backward_panics] = covered;
    println!(
        "fuzz: compared with checkpoints {ck}, against central differences {fd} ({elems} elements), \
         expected panics {panics} in forward and {backward_panics} in backward"
    );
    for (seed, why) in &failures {
        println!("fuzz: seed {seed}: {why}\n  replay: TAPEGRAD_FUZZ_SEED={seed} cargo test --test fuzz -- --nocapture");
    }
    assert!(
        failures.is_empty(),
        "fuzz: {} failures (listed above)",
        failures.len()
    );
}
