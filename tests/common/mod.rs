//! Helpers shared by the integration tests (`mod common;` in each file that
//! uses them).

#![allow(dead_code)] // each test crate uses its own subset

use tapegrad::prelude::*;

/// Gradient-checks `f` at `inputs` (f64, default [`GradcheckOptions`]):
/// backward against central finite differences, for every input that
/// requires grad. Panics with the [`GradcheckError`]'s Display on failure.
///
/// Also panics if no input requires grad, so that a test cannot pass by
/// checking nothing.
pub fn check_op<F>(f: F, inputs: &[Tensor<f64>])
where
    F: Fn(&[Tensor<f64>]) -> Tensor<f64>,
{
    assert!(
        inputs.iter().any(Tensor::requires_grad),
        "check_op: no input requires grad, gradcheck would check nothing"
    );
    if let Err(e) = tapegrad::gradcheck(f, inputs, GradcheckOptions::default()) {
        panic!("{e}");
    }
}

/// Asserts that `a` and `b` have the same length and agree elementwise
/// within `tol` (absolute, plus `tol` relative to `|b|`).
#[track_caller]
pub fn assert_close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "assert_close: lengths differ: {a:?} vs {b:?}");
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "assert_close: element {i} differs: {x} vs {y} (tol {tol})\n  left:  {a:?}\n  right: {b:?}"
        );
    }
}

/// A leaf of `f64`s that requires grad.
pub fn leaf(data: &[f64], shape: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(data.to_vec(), shape).set_requires_grad(true)
}

/// `t.to_vec()` widened to `f64` (for comparing `f32` tensors).
pub fn to_f64<T: Float>(t: &Tensor<T>) -> Vec<f64> {
    t.to_vec().into_iter().map(Float::as_f64).collect()
}

/// Runs `body` in a child process: this test binary again, with only the
/// test `name` selected. An abort there (a stack overflow) or a hang (the
/// child is killed after `timeout`) then fails this one test instead of
/// ending the whole run; a panic in `body` fails it too.
///
/// `name` must be the test function's name (integration tests have no
/// module path), so that `--exact` selects it.
pub fn in_child_process(name: &str, timeout: std::time::Duration, body: impl FnOnce()) {
    use std::process::{Command, Stdio};
    const VAR: &str = "TAPEGRAD_CHILD_TEST";
    if std::env::var(VAR).as_deref() == Ok(name) {
        body();
        return;
    }
    let log = std::env::temp_dir().join(format!("tapegrad-child-{}-{name}.log", std::process::id()));
    let file = std::fs::File::create(&log).expect("create the child's log");
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(VAR, name)
        .stdout(Stdio::from(file.try_clone().expect("log handle")))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("spawn the test binary");
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break Some(status);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    match status {
        None => panic!("{name}: still running after {timeout:?} (a hang?); its output:\n{output}"),
        Some(s) if !s.success() => panic!("{name}: the child process failed ({s}); its output:\n{output}"),
        Some(_) => assert!(
            output.contains("1 passed"),
            "{name}: the child process ran no test (is the name right?); its output:\n{output}"
        ),
    }
}

/// The message of the panic `f` raises (panics if it returns).
pub fn panic_message(f: impl FnOnce()) -> String {
    let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).expect_err("expected a panic");
    payload_message(payload)
}

/// The message a panic's payload carries (a `String` or a `&str`).
fn payload_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .expect("a string message")
            .to_string(),
    }
}

/// The message of the panic `f` raises and the source location
/// (`file:line`) the panic reports; `None` if `f` returns. The location is
/// read by a panic hook, installed once and passing every other panic on to
/// the hook it replaced, so the rest of the test binary prints as before.
pub fn panic_message_and_location(f: impl FnOnce()) -> Option<(String, String)> {
    use std::cell::RefCell;
    thread_local! {
        /// `Some` while this thread runs `f`: the location of its panic.
        static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
    }
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let recorded = CAUGHT.with(|c| match c.borrow_mut().as_mut() {
                Some(at) => {
                    *at = info.location().map_or_else(
                        || "<unknown>".to_string(),
                        |l| format!("{}:{}", l.file(), l.line()),
                    );
                    true
                }
                None => false,
            });
            if !recorded {
                previous(info);
            }
        }));
    });
    CAUGHT.with(|c| *c.borrow_mut() = Some(String::new()));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let location = CAUGHT.with(|c| c.borrow_mut().take()).unwrap_or_default();
    result.err().map(|payload| (payload_message(payload), location))
}
