//! The `try_` forms return the error their panicking forms panic with,
//! message for message, and succeed where those succeed.

mod common;

use common::panic_message;
use tapegrad::{Tensor, TensorError};

/// `try_form` fails with an error whose Display is the panic of `form`.
fn same_message(err: TensorError, form: impl FnOnce()) {
    assert_eq!(panic_message(form), err.to_string());
}

#[test]
fn from_vec() {
    let err = Tensor::<f32>::try_from_vec(vec![1.0; 5], &[2, 3]).unwrap_err();
    assert_eq!(
        err,
        TensorError::ElementCount {
            len: 5,
            shape: vec![2, 3]
        }
    );
    same_message(err, || drop(Tensor::<f32>::from_vec(vec![1.0; 5], &[2, 3])));
    let huge = [usize::MAX / 2, 4];
    let err = Tensor::<f32>::try_from_vec(vec![], &huge).unwrap_err();
    assert!(
        matches!(err, TensorError::TooLarge { op: "from_vec", .. }),
        "{err}"
    );
    same_message(err, || drop(Tensor::<f32>::from_vec(vec![], &huge)));
    assert_eq!(
        Tensor::try_from_vec(vec![1.0f64, 2.0], &[2]).unwrap().to_vec(),
        vec![1.0, 2.0]
    );
}

#[test]
fn reshape_and_broadcast_to() {
    let t = Tensor::<f64>::ones(&[2, 3]).set_requires_grad(true);
    let err = t.try_reshape(&[5]).unwrap_err();
    assert_eq!(
        err,
        TensorError::Reshape {
            from: vec![2, 3],
            to: vec![5]
        }
    );
    same_message(err, || drop(t.reshape(&[5])));
    let err = t.try_broadcast_to(&[4, 3, 3]).unwrap_err();
    assert!(matches!(
        &err,
        TensorError::Broadcast {
            op: "broadcast_to",
            ..
        }
    ));
    same_message(err, || drop(t.broadcast_to(&[4, 3, 3])));
    // The Ok forms record as the panicking ones do.
    t.try_reshape(&[3, 2])
        .unwrap()
        .try_broadcast_to(&[2, 3, 2])
        .unwrap()
        .sum()
        .backward();
    assert_eq!(t.grad().unwrap().to_vec(), vec![2.0; 6]);
}

#[test]
fn matmul() {
    let cases: [(&[usize], &[usize]); 3] = [(&[], &[3]), (&[8, 3], &[4, 5]), (&[2, 2, 3], &[4, 3, 5])];
    for (sa, sb) in cases {
        let (a, b) = (Tensor::<f32>::zeros(sa), Tensor::<f32>::zeros(sb));
        let err = a.try_matmul(&b).unwrap_err();
        same_message(err, || drop(a.matmul(&b)));
    }
    let err = Tensor::<f32>::zeros(&[2, 2, 3])
        .try_matmul(&Tensor::zeros(&[4, 3, 5]))
        .unwrap_err();
    assert_eq!(
        err,
        TensorError::MatmulBatch {
            a: vec![2, 2, 3],
            b: vec![4, 3, 5]
        }
    );
    let ok = Tensor::<f32>::ones(&[2, 3])
        .try_matmul(&Tensor::ones(&[3]))
        .unwrap();
    assert_eq!(ok.to_vec(), vec![3.0, 3.0]);
}

#[test]
fn cat_and_stack() {
    let (a, b) = (Tensor::<f32>::zeros(&[2, 3]), Tensor::<f32>::zeros(&[3, 3]));
    let err = Tensor::try_cat(&[a.clone(), b.clone()], 1).unwrap_err();
    same_message(err, || drop(Tensor::cat(&[a.clone(), b.clone()], 1)));
    let err = Tensor::try_cat(&[a.clone()], 2).unwrap_err();
    assert_eq!(
        err,
        TensorError::Dim {
            op: "cat",
            dim: 2,
            shape: vec![2, 3]
        }
    );
    same_message(err, || drop(Tensor::cat(&[a.clone()], 2)));
    let err = Tensor::try_stack(&[a.clone(), b.clone()], 0).unwrap_err();
    same_message(err, || drop(Tensor::stack(&[a.clone(), b.clone()], 0)));
    let err = Tensor::<f32>::try_stack(&[], 0).unwrap_err();
    same_message(err, || drop(Tensor::<f32>::stack(&[], 0)));
    assert_eq!(Tensor::try_cat(&[a.clone(), b], 0).unwrap().shape(), &[5, 3]);
    assert_eq!(Tensor::try_stack(&[a.clone(), a], 2).unwrap().shape(), &[2, 3, 2]);
}
