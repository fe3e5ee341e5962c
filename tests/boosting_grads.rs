//! The gradient and Hessian diagonal that `examples/boosting.rs` takes from
//! two backward passes (`examples/common/second_order.rs`, included here),
//! against the closed forms of the squared, logistic and pseudo-Huber
//! losses on random predictions, against the full Hessian taken one row at
//! a time, and on the losses where the trick's premises fail.

#[path = "../examples/common/second_order.rs"]
mod second_order;

use proptest::collection::vec;
use proptest::prelude::*;
use second_order::{derivatives, logistic, pseudo_huber, squared, Loss};
use tapegrad::prelude::*;

/// |a − b| ≤ 1e-12 (1 + |b|) for every element, the example's tolerance.
fn close(what: &str, a: &[f64], b: &[f64]) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        prop_assert!(
            (x - y).abs() <= 1e-12 * (1.0 + y.abs()),
            "{} of sample {}: {} from tapegrad, {} closed form",
            what,
            i,
            x,
            y
        );
    }
    Ok(())
}

/// Predictions and real targets, 1 to 40 samples.
fn regression() -> impl Strategy<Value = (Vec<f64>, Vec<f64>)> {
    (1usize..40).prop_flat_map(|n| (vec(-5.0..5.0, n), vec(-5.0..5.0, n)))
}

/// Logits and 0/1 labels, 1 to 40 samples.
fn classification() -> impl Strategy<Value = (Vec<f64>, Vec<f64>)> {
    (1usize..40).prop_flat_map(|n| {
        let labels = vec(any::<bool>(), n).prop_map(|b| b.into_iter().map(f64::from).collect());
        (vec(-15.0..15.0, n), labels)
    })
}

proptest! {
    #[test]
    fn squared_loss_gives_residual_and_unit_hessian((f, y) in regression()) {
        // l = ½ (f − y)², g = f − y, h = 1
        let d = derivatives(&f, &y, &squared);
        let r: Vec<f64> = f.iter().zip(&y).map(|(f, y)| f - y).collect();
        close("g", &d.grad, &r)?;
        close("h", &d.hess, &vec![1.0; f.len()])?;
    }

    #[test]
    fn logistic_loss_gives_p_minus_y_and_p_one_minus_p((f, y) in classification()) {
        // l = ln(1 + eᶠ) − y f, p = σ(f): g = p − y, h = p (1 − p)
        let d = derivatives(&f, &y, &logistic);
        let p: Vec<f64> = f.iter().map(|f| 1.0 / (1.0 + (-f).exp())).collect();
        let g: Vec<f64> = p.iter().zip(&y).map(|(p, y)| p - y).collect();
        let h: Vec<f64> = p.iter().map(|p| p * (1.0 - p)).collect();
        close("g", &d.grad, &g)?;
        close("h", &d.hess, &h)?;
    }

    #[test]
    fn pseudo_huber_loss_gives_its_closed_forms((f, y) in regression(), delta in 0.1..3.0) {
        // l = δ² (√(1 + (r/δ)²) − 1), r = f − y:
        // g = r / √(1 + (r/δ)²), h = (1 + (r/δ)²)^(−3/2)
        let d = derivatives(&f, &y, &pseudo_huber(delta));
        let r: Vec<f64> = f.iter().zip(&y).map(|(f, y)| f - y).collect();
        let s: Vec<f64> = r.iter().map(|r| 1.0 + (r / delta).powi(2)).collect();
        let g: Vec<f64> = r.iter().zip(&s).map(|(r, s)| r / s.sqrt()).collect();
        let h: Vec<f64> = s.iter().map(|s| s.powf(-1.5)).collect();
        close("g", &d.grad, &g)?;
        close("h", &d.hess, &h)?;
    }
}

/// The full Hessian of Σ `loss(f, y)`, one backward per row: row i is the
/// gradient of gᵢ.
fn full_hessian(f: &[f64], y: &[f64], loss: &Loss) -> Vec<Vec<f64>> {
    let n = f.len();
    let ft = Tensor::from_vec(f.to_vec(), &[n]).set_requires_grad(true);
    let total = loss(&ft, &Tensor::from_vec(y.to_vec(), &[n])).sum();
    let opts = GradOptions {
        create_graph: true,
        ..Default::default()
    };
    let g = tapegrad::grad(&[total], &[ft.clone()], opts)[0].clone().unwrap();
    (0..n)
        .map(|i| {
            let opts = GradOptions {
                retain_graph: true,
                ..Default::default()
            };
            let row = tapegrad::grad(&[g.narrow(0, i, 1).sum()], &[ft.clone()], opts)[0].clone();
            row.map_or_else(|| vec![0.0; n], |r| r.to_vec())
        })
        .collect()
}

#[test]
fn separable_losses_have_a_diagonal_hessian_and_the_trick_reads_it() {
    let f = [0.3, -1.2, 2.5, 0.0, -0.7];
    let y = [1.0, 0.0, 0.0, 1.0, 1.0];
    let huber = pseudo_huber(0.8);
    let losses: [(&str, &Loss); 3] = [
        ("squared", &squared),
        ("logistic", &logistic),
        ("pseudo-Huber", &huber),
    ];
    for (name, loss) in losses {
        let hess = full_hessian(&f, &y, loss);
        let d = derivatives(&f, &y, loss);
        for (i, row) in hess.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                if i == j {
                    assert!(
                        (v - d.hess[i]).abs() <= 1e-12,
                        "{name}: H[{i}][{i}] = {v}, the two-pass diagonal has {}",
                        d.hess[i]
                    );
                } else {
                    assert_eq!(v, 0.0, "{name}: H[{i}][{j}] of a separable loss");
                }
            }
        }
    }
}

#[test]
fn a_coupled_loss_gives_the_hessian_row_sums_not_its_diagonal() {
    // l_i = (f_i − mean(f))²: the samples are coupled through the mean.
    // H = 2 (I − 11ᵀ/n): diagonal 2 (1 − 1/n), row sums 0.
    let f = [0.5, -1.0, 2.0, 0.25];
    let n = f.len() as f64;
    let coupled = |f: &Tensor<f64>, _: &Tensor<f64>| {
        let c = f - f.mean();
        &c * &c
    };
    let d = derivatives(&f, &[0.0; 4], &coupled);
    let hess = full_hessian(&f, &[0.0; 4], &coupled);
    for (i, row) in hess.iter().enumerate() {
        assert!(
            (row[i] - 2.0 * (1.0 - 1.0 / n)).abs() < 1e-12,
            "H[{i}][{i}] = {}",
            row[i]
        );
        let row_sum: f64 = row.iter().sum();
        assert!(
            (d.hess[i] - row_sum).abs() < 1e-12,
            "h[{i}] = {} but row sum {row_sum}",
            d.hess[i]
        );
        assert!(d.hess[i].abs() < 1e-12, "h[{i}] = {}, the row sum 0", d.hess[i]);
    }
}

#[test]
fn a_piecewise_linear_loss_has_zero_hessian() {
    // l = |f − y|: g = sign(f − y), h = 0 (the gradient has no graph to f, or
    // one whose derivative is 0)
    let f = [0.5, -1.0, 2.0];
    let y = [1.0, -2.0, 2.5];
    let d = derivatives(&f, &y, &|f, y| (f - y).abs());
    assert_eq!(d.grad, vec![-1.0, 1.0, -1.0]);
    assert_eq!(d.hess, vec![0.0; 3]);
}

#[test]
#[should_panic(expected = "derivatives: the loss has shape [], expected one loss per sample [3]")]
fn a_reduced_loss_is_refused() {
    // The mean hides which sample a term came from; derivatives wants [n].
    derivatives(&[0.0; 3], &[1.0; 3], &|f, y| squared(f, y).mean());
}
