//! The small CNN of `examples/digits.rs`, also measured by the benches (W6
//! in `benches/workloads.rs`, its layers in `benches/nn.rs`) and by the
//! weights test against PyTorch (`tests/nn.rs`), which include
//! this file by path.

use tapegrad::nn::{Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential};

/// Two 3×3 convolutions with ReLU and 2×2 max-pooling on 1-channel 8×8
/// images (8×8 → 4×4 → 2×2), then a linear layer from the 32 × 2 × 2
/// features to 10 classes.
pub fn digits_cnn() -> Sequential {
    Sequential::new()
        .add(Conv2d::new(1, 16, 3).padding(1))
        .add(ReLU)
        .add(MaxPool2d::new(2))
        .add(Conv2d::new(16, 32, 3).padding(1))
        .add(ReLU)
        .add(MaxPool2d::new(2))
        .add(Flatten)
        .add(Linear::new(32 * 2 * 2, 10))
}
