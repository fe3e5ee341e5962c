//! The `tapegrad::nn` modules: parameter names against PyTorch's
//! `state_dict` keys, PyTorch's default initialisation, `manual_seed`
//! reproducibility, training and eval modes through containers, embedding
//! lookups, `clip_grad_norm`, max pooling's choices at ties and NaN, modules
//! shared across threads, and the panics' messages.

mod common;
#[path = "../examples/common/digits_cnn.rs"]
mod digits_cnn;

use common::{assert_close, to_f64};
use std::sync::Arc;
use tapegrad::nn::{
    clip_grad_norm, Conv2d, Dropout, Embedding, Flatten, LayerNorm, Linear, MaxPool2d, Module, ReLU,
    Sequential, Sigmoid, Tanh, GELU,
};
use tapegrad::prelude::*;

// ------------------------------------------------- names against PyTorch

const STATE_DICTS: &str = include_str!("ref/nn_state_dicts.txt");

/// `(key, shape)` in order.
type StateDict = Vec<(String, Vec<usize>)>;

/// The state dicts of `nn_state_dicts.txt`, by model name.
fn torch_state_dicts() -> Vec<(String, StateDict)> {
    let mut models = Vec::new();
    let mut current: Option<(String, StateDict)> = None;
    for line in STATE_DICTS
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("torch "))
    {
        let (head, rest) = line.split_once(' ').unwrap_or((line, ""));
        match (head, current.as_mut()) {
            ("model", None) => current = Some((rest.to_string(), Vec::new())),
            ("end", Some(_)) => models.push(current.take().expect("in a model")),
            (key, Some((_, entries))) => {
                let dims = rest.trim_start_matches('[').trim_end_matches(']');
                let shape = dims
                    .split(',')
                    .filter(|d| !d.is_empty())
                    .map(|d| d.parse().unwrap())
                    .collect();
                entries.push((key.to_string(), shape));
            }
            _ => panic!("nn_state_dicts.txt: unexpected line {line:?}"),
        }
    }
    models
}

/// The tapegrad model of each name in `nn_state_dicts.txt` (the same
/// layers as make_ref.py's `state_dict_models`).
fn model(name: &str) -> Sequential<f32> {
    match name {
        "mlp" => Sequential::new()
            .add(Linear::new(4, 8))
            .add(ReLU)
            .add(Dropout::new(0.1))
            .add(Linear::new_no_bias(8, 2)),
        "cnn" => digits_cnn::digits_cnn(),
        "mixed" => Sequential::new()
            .add(Embedding::new(10, 4))
            .add(LayerNorm::new(&[4]))
            .add(Sequential::new().add(Linear::new(4, 4)).add(GELU).add(Tanh))
            .add(Linear::new(4, 3))
            .add(Sigmoid)
            .add(LayerNorm::new(&[2, 3])),
        other => panic!("no tapegrad model for {other:?}"),
    }
}

#[test]
fn named_parameters_are_pytorchs_state_dict_keys_in_order() {
    let models = torch_state_dicts();
    assert_eq!(models.len(), 3, "models in nn_state_dicts.txt");
    for (name, torch) in models {
        let ours: StateDict = model(&name)
            .named_parameters()
            .into_iter()
            .map(|(k, t)| (k, t.shape().to_vec()))
            .collect();
        assert_eq!(ours, torch, "model {name}");
    }
}

#[test]
fn parameters_are_leaves_that_require_grad() {
    for name in ["mlp", "cnn", "mixed"] {
        let m = model(name);
        assert_eq!(m.parameters().len(), m.named_parameters().len());
        for (key, p) in m.named_parameters() {
            assert!(p.is_leaf() && p.requires_grad(), "{name}: {key}");
        }
    }
}

#[test]
fn a_layer_added_twice_has_both_names_but_is_one_parameter_set() {
    // state_dict keeps both names (so weights files match PyTorch's);
    // parameters() lists each tensor once (so an optimizer steps it once).
    let shared = Arc::new(Linear::<f32>::new(3, 3));
    let net = Sequential::new()
        .add(shared.clone())
        .add(Tanh)
        .add(shared.clone());
    let names: Vec<String> = net.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias"]);
    assert_eq!(net.parameters().len(), 2);
    net.forward(&Tensor::ones(&[1, 3])).sum().backward();
    assert!(shared.weight.grad().is_some());
}

/// A module behind an `Arc` is the module: the same parameters (as the
/// same tensors), buffers, names and output.
#[test]
fn an_arc_of_a_module_is_the_module() {
    struct Shift {
        offset: Tensor<f32>,
    }
    impl Module<f32> for Shift {
        fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
            x + &self.offset
        }
        fn named_parameters(&self) -> Vec<(String, Tensor<f32>)> {
            Vec::new()
        }
        fn named_buffers(&self) -> Vec<(String, Tensor<f32>)> {
            vec![("offset".to_string(), self.offset.clone())]
        }
    }
    let linear = Arc::new(Linear::<f32>::new(3, 2));
    let shift = Arc::new(Shift {
        offset: Tensor::ones(&[2]),
    });
    let names = |ps: Vec<(String, Tensor<f32>)>| ps.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(names(Module::named_parameters(&linear)), ["weight", "bias"]);
    let (direct, shared) = (linear.as_ref().parameters(), Module::parameters(&linear));
    assert_eq!(shared.len(), 2);
    // The same tensors: a change through one shows through the other.
    tapegrad::no_grad(|| shared[0].fill_(0.25));
    assert!(direct[0].to_vec().iter().all(|&w| w == 0.25));
    assert_eq!(names(Module::named_buffers(&shift)), ["offset"]);
    let x = Tensor::ones(&[1, 3]);
    assert_eq!(
        Module::forward(&linear, &x).to_vec(),
        linear.as_ref().forward(&x).to_vec()
    );
}

/// `Linear` takes a single vector `[in]` to `[out]`, as PyTorch's.
#[test]
fn linear_maps_a_vector_to_a_vector() {
    let linear = Linear::<f64>::new(3, 2);
    let x = Tensor::from_vec(vec![0.5, -1.0, 2.0], &[3]);
    let y = linear.forward(&x);
    assert_eq!(y.shape(), [2]);
    assert_eq!(y.to_vec(), linear.forward(&x.unsqueeze(0)).to_vec());
}

// ---------------------------------------------------------- initialisation

/// Mean and (biased) variance.
fn moments(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    (mean, v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n)
}

/// Checks that `v` looks like U(-bound, bound): inside, reaching close to
/// both ends, mean 0 and variance bound²/3 within sampling error.
#[track_caller]
fn assert_uniform(v: &[f64], bound: f64) {
    let n = v.len() as f64;
    assert!(v.iter().all(|x| x.abs() <= bound), "a value outside ±{bound}");
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    // the chance that n draws all miss the outer 1% at one end is 0.99^n
    assert!(
        hi > 0.98 * bound && lo < -0.98 * bound,
        "range [{lo}, {hi}] for bound {bound}"
    );
    let (mean, var) = moments(v);
    let sd = bound / 3f64.sqrt();
    assert!(mean.abs() < 5.0 * sd / n.sqrt(), "mean {mean}");
    assert!(
        (var / (sd * sd) - 1.0).abs() < 0.1,
        "variance {var}, expected {}",
        sd * sd
    );
}

#[test]
fn linear_init_is_uniform_in_one_over_sqrt_fan_in() {
    tapegrad::manual_seed(1);
    let fc = Linear::<f64>::new(100, 200); // fan_in 100: bound 0.1
    assert_uniform(&fc.weight.to_vec(), 0.1);
    let fc = Linear::<f64>::new(100, 2000);
    assert_uniform(&fc.bias.unwrap().to_vec(), 0.1);
}

#[test]
fn conv2d_init_is_uniform_in_one_over_sqrt_of_channels_times_kernel_area() {
    tapegrad::manual_seed(2);
    let conv = Conv2d::<f64>::new(4, 300, 3); // fan_in 4 · 9 = 36: bound 1/6
    assert_eq!(conv.weight.shape(), &[300, 4, 3, 3]);
    assert_uniform(&conv.weight.to_vec(), 1.0 / 6.0);
    let conv = Conv2d::<f64>::new(4, 3000, 3);
    assert_uniform(&conv.bias.unwrap().to_vec(), 1.0 / 6.0);
}

#[test]
fn embedding_init_is_standard_normal_and_layer_norm_ones_and_zeros() {
    tapegrad::manual_seed(3);
    let emb = Embedding::<f64>::new(200, 100);
    let (mean, var) = moments(&emb.weight.to_vec());
    assert!(
        mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
        "N(0, 1)? mean {mean}, variance {var}"
    );
    let ln = LayerNorm::<f64>::new(&[2, 3]);
    assert_eq!(ln.weight.to_vec(), vec![1.0; 6]);
    assert_eq!(ln.bias.to_vec(), vec![0.0; 6]);
}

#[test]
fn manual_seed_reproduces_a_model_and_another_seed_does_not() {
    let values = |seed| {
        tapegrad::manual_seed(seed);
        let m = model("mixed");
        m.parameters()
            .iter()
            .flat_map(|p| p.to_vec())
            .collect::<Vec<f32>>()
    };
    assert_eq!(values(5), values(5));
    assert_ne!(values(5), values(6));
}

// ------------------------------------------------------- training mode

#[test]
fn dropout_in_a_sequential_follows_train_and_eval() {
    tapegrad::manual_seed(0);
    let inner = Sequential::new().add(Dropout::new(0.5f32));
    let net = Sequential::new().add(Linear::new(4, 500)).add(inner);
    let x = Tensor::ones(&[2, 4]);
    let dense = net.named_parameters(); // the Linear's output, computed by hand below
    let plain = (x.matmul(&dense[0].1.t()) + &dense[1].1).to_vec();
    let zeros = |y: &[f32]| y.iter().filter(|&&v| v == 0.0).count();

    // training (the start): about half dropped, the rest doubled
    let y = net.forward(&x).to_vec();
    assert!((300..700).contains(&zeros(&y)), "{} of 1000 dropped", zeros(&y));
    for (a, b) in y.iter().zip(&plain) {
        assert!(*a == 0.0 || (a - 2.0 * b).abs() <= 1e-6 * b.abs().max(1.0));
    }
    // eval reaches the nested container's Dropout, also through a clone
    let copy = net.clone();
    net.eval();
    assert_eq!(copy.forward(&x).to_vec(), plain);
    assert_eq!(net.forward(&x).to_vec(), plain);
    net.train();
    assert!(zeros(&copy.forward(&x).to_vec()) > 300);
}

// ------------------------------------------------------------ embedding

#[test]
fn embedding_lookup_and_forward_shapes_and_gradients() {
    let emb = Embedding::<f64>::new(5, 3);
    let w = emb.weight.to_vec();
    let rows = emb.lookup(&[4, 1, 4]);
    assert_eq!(rows.shape(), &[3, 3]);
    assert_eq!(rows.to_vec(), [&w[12..15], &w[3..6], &w[12..15]].concat());
    // forward: the ids' shape plus the embedding dimension
    let ids = Tensor::from_vec(vec![0.0, 2.0, 2.0, 2.0, 1.0, 0.0], &[2, 1, 3]);
    let e = emb.forward(&ids);
    assert_eq!(e.shape(), &[2, 1, 3, 3]);
    // backward adds into the rows read, once per read
    e.sum().backward();
    let counts = [2.0, 1.0, 3.0, 0.0, 0.0];
    let expected: Vec<f64> = counts.iter().flat_map(|&c| [c; 3]).collect();
    assert_eq!(emb.weight.grad().unwrap().to_vec(), expected);
    assert_eq!(emb.lookup(&[]).shape(), &[0, 3]);
}

// --------------------------------------------------------- clip_grad_norm

#[test]
fn clip_grad_norm_scales_all_gradients_by_the_total_norm() {
    // grads [3, 4] and [12] (a third parameter without one): total 13
    let a = Tensor::from_vec(vec![1.0f64, 1.0], &[2]).set_requires_grad(true);
    let b = Tensor::from_vec(vec![1.0f64], &[1]).set_requires_grad(true);
    let unused = Tensor::from_vec(vec![1.0f64], &[1]).set_requires_grad(true);
    let loss = (&a * &Tensor::from_vec(vec![3.0, 4.0], &[2])).sum() + (&b * 12.0).sum();
    loss.backward();
    let total = clip_grad_norm(&[a.clone(), unused.clone(), b.clone()], 2.6);
    assert_eq!(total, 13.0);
    let scale = 2.6 / (13.0 + 1e-6);
    assert_close(&a.grad().unwrap().to_vec(), &[3.0 * scale, 4.0 * scale], 1e-15);
    assert_close(&b.grad().unwrap().to_vec(), &[12.0 * scale], 1e-15);
    assert!(unused.grad().is_none());
    // now below the limit: the total is reported, nothing changes
    let before = a.grad().unwrap().to_vec();
    let total = clip_grad_norm(&[a.clone(), b.clone()], 100.0);
    assert!((total - 2.6).abs() < 1e-6);
    assert_eq!(a.grad().unwrap().to_vec(), before);
}

// ------------------------------------------------ max_pool2d: ties, NaN

#[test]
fn max_pool2d_sends_the_gradient_where_pytorch_does_at_ties_and_nan() {
    // PyTorch 2.15 (F.max_pool2d(x, 2), sum().backward()) gives these grads:
    // ties: the first maximum; NaN: the last NaN (its `val > max || isnan`
    // scan); all -inf: the first element.
    let nan = f64::NAN;
    let inf = f64::INFINITY;
    let cases: [([f64; 4], [f64; 4]); 3] = [
        ([1.0, 3.0, 3.0, 2.0], [0.0, 1.0, 0.0, 0.0]),
        ([nan, 3.0, nan, 2.0], [0.0, 0.0, 1.0, 0.0]),
        ([-inf, -inf, -inf, -inf], [1.0, 0.0, 0.0, 0.0]),
    ];
    for (x, grad) in cases {
        let x = Tensor::from_vec(x.to_vec(), &[1, 1, 2, 2]).set_requires_grad(true);
        let y = x.max_pool2d(2, 2);
        y.sum().backward();
        assert_eq!(x.grad().unwrap().to_vec(), grad, "input {:?}", x.to_vec());
    }
}

// ------------------------------------------------------------- threads

#[test]
fn a_model_shared_as_arc_dyn_module_trains_from_other_threads() {
    tapegrad::manual_seed(4);
    let model: Arc<dyn Module<f32>> = Arc::new(
        Sequential::new()
            .add(Conv2d::new(1, 2, 3).padding(1))
            .add(ReLU)
            .add(Flatten)
            .add(Linear::new(2 * 4 * 4, 3)),
    );
    let x = Tensor::<f32>::randn(&[2, 1, 4, 4]);
    let step = |m: &dyn Module<f32>, x: &Tensor<f32>| m.forward(x).cross_entropy(&[0, 2]).backward();
    step(&*model, &x);
    let once: Vec<Vec<f64>> = model
        .parameters()
        .iter()
        .map(|p| to_f64(&p.grad().unwrap()))
        .collect();
    model.parameters().iter().for_each(Tensor::zero_grad);

    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (model, x) = (model.clone(), x.clone());
            std::thread::spawn(move || step(&*model, &x))
        })
        .collect();
    workers.into_iter().for_each(|w| w.join().unwrap());
    for (p, g) in model.parameters().iter().zip(once) {
        let twice: Vec<f64> = g.iter().map(|v| 2.0 * v).collect();
        assert_close(&to_f64(&p.grad().unwrap()), &twice, 1e-6);
    }
}

// -------------------------------------------------------------- panics

/// Asserts that `f` panics with a message containing `expected`.
#[track_caller]
fn assert_panics_with(expected: &str, f: impl FnOnce()) {
    let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).expect_err("it should panic");
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(msg.contains(expected), "{msg:?} does not contain {expected:?}");
}

/// Zeros of `shape`.
fn zeros(shape: &[usize]) -> Tensor<f32> {
    Tensor::zeros(shape)
}

#[test]
fn wrong_input_channels_name_the_op_and_both_shapes() {
    let conv = Conv2d::<f32>::new(3, 4, 3);
    assert_panics_with(
        "conv2d: weight of shape [4, 3, 3, 3] expects input with 3 channels, but got input of shape \
         [2, 1, 8, 8] (1 channels)",
        || {
            conv.forward(&zeros(&[2, 1, 8, 8]));
        },
    );
}

#[test]
fn conv2d_and_max_pool2d_refuse_bad_shapes_strides_and_kernels() {
    let (x, w) = (zeros(&[1, 2, 4, 4]), zeros(&[3, 2, 3, 3]));
    assert_panics_with(
        "conv2d: expects an input [N, C, H, W] or [C, H, W], got shape [32]",
        || {
            zeros(&[32]).conv2d(&w, None, 1, 0);
        },
    );
    assert_panics_with("conv2d: weight must be 4-D", || {
        x.conv2d(&zeros(&[3, 2, 3]), None, 1, 0);
    });
    assert_panics_with(
        "conv2d: bias of shape [2] does not match the 3 output channels",
        || {
            x.conv2d(&w, Some(&zeros(&[2])), 1, 0);
        },
    );
    assert_panics_with("conv2d: stride must be positive", || {
        x.conv2d(&w, None, 0, 0);
    });
    assert_panics_with(
        "conv2d: kernel size (5, 5) is larger than the input's size (4, 4) (input of shape [1, 2, 2, 2] \
         with padding 1)",
        || {
            zeros(&[1, 2, 2, 2]).conv2d(&zeros(&[3, 2, 5, 5]), None, 1, 1);
        },
    );
    assert_panics_with(
        "max_pool2d: kernel size (3, 3) is larger than the input's size (2, 2)",
        || {
            zeros(&[1, 1, 2, 2]).max_pool2d(3, 1);
        },
    );
    assert_panics_with("max_pool2d: stride must be positive", || {
        zeros(&[1, 1, 2, 2]).max_pool2d(2, 0);
    });
    assert_panics_with(
        "max_pool2d: expects an input [N, C, H, W] or [C, H, W], got shape [2, 2]",
        || {
            zeros(&[2, 2]).max_pool2d(2, 2);
        },
    );
    assert_panics_with("MaxPool2d::stride: stride must be positive", || {
        MaxPool2d::new(2).stride(0);
    });
    assert_panics_with("Conv2d::stride: stride must be positive", || {
        Conv2d::<f32>::new(1, 1, 1).stride(0);
    });
}

#[test]
fn bad_embedding_ids_are_named() {
    let emb = Embedding::<f32>::new(5, 2);
    let ids = |v: &[f32], shape: &[usize]| Tensor::from_vec(v.to_vec(), shape);
    assert_panics_with(
        "embedding: id 2.5 (at position 1 of ids of shape [2]) is not a whole number",
        || {
            emb.forward(&ids(&[1.0, 2.5], &[2]));
        },
    );
    assert_panics_with(
        "embedding: id 5 (at position 2 of ids of shape [3]) is out of range for 5 embeddings \
         (weight of shape [5, 2])",
        || {
            emb.forward(&ids(&[0.0, 1.0, 5.0], &[3]));
        },
    );
    assert_panics_with(
        "embedding: id -1 (at position 0 of ids of shape [1, 1]) is out of range",
        || {
            emb.forward(&ids(&[-1.0], &[1, 1]));
        },
    );
    assert_panics_with(
        "embedding: id NaN (at position 0 of ids of shape [1]) is not a whole number",
        || {
            emb.forward(&ids(&[f32::NAN], &[1]));
        },
    );
    assert_panics_with(
        "Embedding::lookup: id 7 (at position 1) is out of range for 5 embeddings",
        || {
            emb.lookup(&[0, 7]);
        },
    );
}

#[test]
fn other_layers_name_what_they_expected() {
    assert_panics_with(
        "Linear: expects input [*, 3] (in_features = 3), got shape [4, 2]",
        || {
            Linear::<f32>::new(3, 2).forward(&zeros(&[4, 2]));
        },
    );
    assert_panics_with(
        "layer_norm: normalized_shape [3] is not the end of the input's shape [3, 4]",
        || {
            LayerNorm::<f32>::new(&[3]).forward(&zeros(&[3, 4]));
        },
    );
    assert_panics_with(
        "layer_norm: weight of shape [2, 3] does not match normalized_shape [3]",
        || {
            zeros(&[2, 3]).layer_norm(&[3], Some(&zeros(&[2, 3])), None, 1e-5);
        },
    );
    assert_panics_with(
        "layer_norm: normalized_shape must have at least one dimension",
        || {
            zeros(&[2, 3]).layer_norm(&[], None, None, 1e-5);
        },
    );
    assert_panics_with(
        "Flatten: flattens dimensions 1.., so it needs an input of at least 2 dimensions, got shape [5]",
        || {
            Module::<f32>::forward(&Flatten, &zeros(&[5]));
        },
    );
    assert_panics_with(
        "Dropout: dropout probability has to be between 0 and 1, but got 1.5",
        || {
            Dropout::new(1.5f32);
        },
    );
}

// ------------------------------------------------------------ grad_fn

#[test]
fn grad_fn_names_are_those_docs_ops_md_lists() {
    let x = Tensor::<f32>::ones(&[1, 2, 4, 4]).set_requires_grad(true);
    let w = Tensor::<f32>::ones(&[3, 2, 3, 3]);
    let name = |t: Tensor<f32>| t.grad_fn_name().unwrap();
    assert_eq!(name(x.conv2d(&w, None, 1, 1)), "SwapOuterBackward");
    assert_eq!(name(x.max_pool2d(2, 2)), "MaxPool2dBackward");
    let rows = Tensor::<f32>::ones(&[2, 4]).set_requires_grad(true);
    let (scale, shift) = (Tensor::ones(&[4]), Tensor::zeros(&[4]));
    assert_eq!(
        name(rows.layer_norm(&[4], Some(&scale), Some(&shift), 1e-5)),
        "AddBackward"
    );
    assert_eq!(
        name(rows.layer_norm(&[4], Some(&scale), None, 1e-5)),
        "MulBackward"
    );
    assert_eq!(name(rows.layer_norm(&[4], None, None, 1e-5)), "ViewBackward");
    assert_eq!(
        name(Tensor::from_vec(vec![1.0, 0.0], &[2]).embedding(&rows)),
        "ViewBackward"
    );
}
