//! Peak saved bytes against depth: √n checkpoint segments grow like √n,
//! no checkpoints like n. Reads the process-wide `memory::peak_saved_bytes`,
//! so this file holds a single test.

use std::sync::Arc;
use tapegrad::memory::{peak_saved_bytes, reset_peak, saved_bytes};
use tapegrad::prelude::*;
use tapegrad::Layer;

#[path = "../benches/common/fit.rs"]
mod fit;

use fit::loglog_slope;

#[test]
fn peak_saved_bytes_grows_like_the_square_root_of_depth_with_sqrt_n_segments() {
    let width = 256;
    let mut plain = Vec::new();
    let mut sqrt = Vec::new();
    for depth in [16, 64, 256] {
        tapegrad::manual_seed(depth as u64);
        let layers: Vec<Layer<f32>> = (0..depth)
            .map(|_| {
                let w = (Tensor::<f32>::randn(&[width, width]) * (1.0 / (width as f32).sqrt()))
                    .detach()
                    .set_requires_grad(true);
                Arc::new(move |h: &Tensor<f32>| h.matmul(&w).tanh()) as Layer<f32>
            })
            .collect();
        let x = Tensor::<f32>::randn(&[16, width]);
        let segments = (depth as f64).sqrt() as usize;
        for (strategy, out) in [(0, &mut plain), (segments, &mut sqrt)] {
            let base = saved_bytes();
            reset_peak();
            let y = if strategy == 0 {
                layers.iter().fold(x.clone(), |h, f| f(&h))
            } else {
                tapegrad::checkpoint_sequential(&layers, strategy, &x)
            };
            y.sum().backward();
            out.push((depth, peak_saved_bytes() - base));
        }
    }
    let (e_plain, e_sqrt) = (loglog_slope(&plain), loglog_slope(&sqrt));
    println!("peak saved bytes by depth: plain {plain:?} (exponent {e_plain:.3}), √n segments {sqrt:?} (exponent {e_sqrt:.3})");
    assert!(
        e_sqrt <= 0.6,
        "√n segments: exponent {e_sqrt:.3} > 0.6 ({sqrt:?})"
    );
    assert!(
        (0.95..=1.05).contains(&e_plain),
        "plain: exponent {e_plain:.3} ({plain:?})"
    );
}
