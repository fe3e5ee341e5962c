//! Shapes too large to address are refused with a panic naming the op and
//! the shape (their element counts once wrapped around, and safe code read
//! outside its buffer); large shapes that can be addressed still work as
//! views.

mod common;

use common::panic_message;

use tapegrad::prelude::*;

const BIG: usize = (1 << 62) + 4;

/// Asserts that `f` panics with a message that starts with `op` and names
/// `shape`.
#[track_caller]
fn refused(op: &str, shape: &[usize], f: impl FnOnce()) {
    let msg = panic_message(f);
    assert!(
        msg.starts_with(&format!("{op}: ")) && msg.contains(&format!("{shape:?}")),
        "expected a panic of {op} naming {shape:?}, got: {msg}"
    );
}

#[test]
fn constructors_refuse_shapes_whose_element_count_overflows() {
    let shape = [BIG, 4];
    refused("from_vec", &shape, || {
        drop(Tensor::<f32>::from_vec(vec![0.0; 16], &shape))
    });
    refused("full", &shape, || drop(Tensor::<f32>::full(&shape, 1.0)));
    refused("zeros", &shape, || drop(Tensor::<f64>::zeros(&shape)));
    refused("ones", &shape, || drop(Tensor::<f32>::ones(&shape)));
    refused("randn", &shape, || drop(Tensor::<f32>::randn(&shape)));
    refused("rand", &shape, || drop(Tensor::<f32>::rand(&shape)));
    // The product of the non-zero sizes counts even with a zero size: the
    // strides are computed from them.
    let with_zero = [0, 1 << 40, 1 << 40];
    refused("zeros", &with_zero, || drop(Tensor::<f32>::zeros(&with_zero)));
}

#[test]
fn views_refuse_shapes_whose_element_count_overflows() {
    let x = Tensor::<f32>::ones(&[16]);
    refused("reshape", &[BIG, 4], || drop(x.reshape(&[BIG, 4])));
    refused("broadcast_to", &[BIG, 4], || {
        drop(Tensor::scalar(1.0f32).broadcast_to(&[BIG, 4]))
    });
    let wide = Tensor::scalar(1.0f32).broadcast_to(&[1 << 62, 1]);
    refused("add", &[1 << 62, 4], || drop(&wide + &Tensor::zeros(&[1, 4])));
    refused("mul", &[1 << 62, 4], || drop(&Tensor::zeros(&[1, 4]) * &wide));
    let half = Tensor::scalar(1.0f32).broadcast_to(&[1 << 62]);
    refused("cat", &[1 << 63], || drop(Tensor::cat(&[half.clone(), half], 0)));
}

#[test]
fn matmul_refuses_a_product_whose_element_count_overflows() {
    // No element in either operand, 2^80 in the product.
    let a = Tensor::<f32>::zeros(&[1 << 40, 0]);
    let b = Tensor::<f32>::zeros(&[0, 1 << 40]);
    refused("matmul", &[1 << 40, 1 << 40], || drop(a.matmul(&b)));
    let a = Tensor::<f32>::zeros(&[1 << 30, 1 << 30, 0]);
    refused("matmul", &[1 << 30, 1 << 30, 1 << 30], || {
        drop(a.matmul(&Tensor::zeros(&[0, 1 << 30])))
    });
}

#[test]
fn narrow_refuses_a_slice_whose_end_overflows() {
    let x = Tensor::<f32>::ones(&[2, 4]);
    let msg = panic_message(|| drop(x.narrow(1, usize::MAX, 2)));
    assert!(msg.starts_with("narrow: ") && msg.contains("[2, 4]"), "{msg}");
    let msg = panic_message(|| drop(x.narrow(1, 3, usize::MAX)));
    assert!(msg.starts_with("narrow: "), "{msg}");
}

#[test]
fn large_addressable_views_still_work() {
    // 2^60 elements, one in memory: a broadcast view, as PyTorch's expand.
    let huge = Tensor::scalar(2.0f32).broadcast_to(&[1 << 40, 1 << 20]);
    assert_eq!(huge.shape(), &[1 << 40, 1 << 20]);
    let corner = huge.narrow(0, (1 << 40) - 1, 1).narrow(1, 5, 3);
    assert_eq!(corner.to_vec(), vec![2.0; 3]);
    assert_eq!(corner.sum().item(), 6.0);
    let empty = Tensor::<f32>::zeros(&[0, 1 << 40]);
    assert_eq!((empty.numel(), empty.sum().item()), (0, 0.0));
}
