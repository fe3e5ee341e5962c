//! A tensor whose memory cannot be had panics, naming the bytes it asked
//! for, instead of aborting the process ("memory allocation of N bytes
//! failed"). Each case asks for 2^46 elements (256 TiB of f32), more than
//! the 128 TiB of address space a Linux process gets, so the allocation
//! fails at once whatever the overcommit setting and never touches memory.
//! Before the fix each case aborted, so each runs in a child process.

mod common;

use common::in_child_process;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;
use tapegrad::prelude::*;

const HUGE: usize = 1 << 46;

/// Runs `f` in a child process and checks that it panics with an
/// out-of-memory message naming `bytes`.
fn panics_out_of_memory<R>(name: &str, bytes: u128, f: impl FnOnce() -> R) {
    in_child_process(name, Duration::from_secs(120), || {
        let panic = catch_unwind(AssertUnwindSafe(f))
            .err()
            .expect("the allocation cannot succeed");
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .expect("a message");
        assert!(
            message.contains(&format!("cannot allocate {bytes} bytes")) && message.contains("out of memory"),
            "{message}"
        );
    });
}

#[test]
fn constructors() {
    panics_out_of_memory("constructors", 4 << 46, || {
        Tensor::<f32>::ones(&[HUGE]);
    });
}

#[test]
fn zeros_of_f64() {
    panics_out_of_memory("zeros_of_f64", 8 << 46, || {
        Tensor::<f64>::zeros(&[1 << 23, 1 << 23])
    });
}

#[test]
fn randn() {
    panics_out_of_memory("randn", 4 << 46, || Tensor::<f32>::randn(&[HUGE]));
}

#[test]
fn rand() {
    panics_out_of_memory("rand", 4 << 46, || Tensor::<f32>::rand(&[HUGE]));
}

#[test]
fn broadcasting_binary_op() {
    // [2^23, 1] + [1, 2^23]: 32 MiB each, 256 TiB for the sum.
    let (a, b) = (
        Tensor::<f32>::ones(&[1 << 23, 1]),
        Tensor::<f32>::ones(&[1, 1 << 23]),
    );
    panics_out_of_memory("broadcasting_binary_op", 4 << 46, || &a + &b);
}

#[test]
fn unary_op_of_a_broadcast_view() {
    let x = Tensor::<f32>::ones(&[1]).broadcast_to(&[HUGE]);
    panics_out_of_memory("unary_op_of_a_broadcast_view", 4 << 46, || x.exp());
}

#[test]
fn copy_of_a_broadcast_view() {
    let x = Tensor::<f32>::ones(&[1]).broadcast_to(&[HUGE]);
    panics_out_of_memory("copy_of_a_broadcast_view", 4 << 46, || x.to_vec());
}

#[test]
fn reduction_of_a_broadcast_view() {
    // Summing [2^46, 2] over its last dim leaves 2^46 sums.
    let x = Tensor::<f64>::ones(&[1, 2]).broadcast_to(&[HUGE, 2]);
    panics_out_of_memory("reduction_of_a_broadcast_view", 8 << 46, || x.sum_dim(1, false));
}

#[test]
fn matmul() {
    // [2^23, 1] @ [1, 2^23]: an outer product of 2^46 elements.
    let (a, b) = (
        Tensor::<f32>::ones(&[1 << 23, 1]),
        Tensor::<f32>::ones(&[1, 1 << 23]),
    );
    panics_out_of_memory("matmul", 4 << 46, || a.matmul(&b));
}
