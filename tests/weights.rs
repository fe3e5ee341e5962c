//! Weights in safetensors: files written by PyTorch load and give
//! PyTorch's outputs (tests/ref/weights/, made by
//! tests/ref/make_weights_ref.py), files tapegrad writes are the committed
//! ones PyTorch was checked to load, and every bad file is an `Err` that
//! names the problem and leaves the module unchanged.

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::path::{Path, PathBuf};
use tapegrad::nn::{load_safetensors, save_safetensors, Module, WeightsError};
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::prelude::*;

/// nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), by hand:
/// the names and shapes of PyTorch's state_dict.
struct Mlp<T: Float> {
    w0: Tensor<T>,
    b0: Tensor<T>,
    w2: Tensor<T>,
    b2: Tensor<T>,
}

impl<T: Float> Mlp<T> {
    /// Every element `fill(i, k)`: element k of tensor number i.
    fn filled(fill: impl Fn(usize, usize) -> f64) -> Self {
        let make = |i: usize, shape: &[usize]| {
            let n = shape.iter().product();
            Tensor::from_vec((0..n).map(|k| T::of(fill(i, k))).collect(), shape).set_requires_grad(true)
        };
        Mlp {
            w0: make(0, &[8, 4]),
            b0: make(1, &[8]),
            w2: make(2, &[3, 8]),
            b2: make(3, &[3]),
        }
    }

    fn zeros() -> Self {
        Self::filled(|_, _| 0.0)
    }

    fn values(&self) -> Vec<Vec<T>> {
        self.parameters().iter().map(Tensor::to_vec).collect()
    }
}

impl<T: Float> Module<T> for Mlp<T> {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        let h = (x.matmul(&self.w0.t()) + &self.b0).relu();
        h.matmul(&self.w2.t()) + &self.b2
    }

    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        [
            ("0.weight", &self.w0),
            ("0.bias", &self.b0),
            ("2.weight", &self.w2),
            ("2.bias", &self.b2),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect()
    }
}

/// tapegrad's fixture values: element k of tensor i is ((7k + 5i) mod 13 -
/// 6) / 10 (the same formula as tests/ref/make_weights_ref.py's check).
fn formula(i: usize, k: usize) -> f64 {
    (((7 * k + 5 * i) % 13) as f64 - 6.0) / 10.0
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/ref/weights")
        .join(name)
}

/// A path in the temporary directory, unique to this process and `name`.
fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tapegrad-weights-{}-{name}", std::process::id()))
}

/// weights_ref.txt: the input, and PyTorch's output for each model file.
fn reference(what: &str) -> (Vec<usize>, Vec<f64>) {
    let text = include_str!("ref/weights_ref.txt");
    let line = text
        .lines()
        .find(|l| l.starts_with(what))
        .unwrap_or_else(|| panic!("weights_ref.txt has no {what:?}"));
    let tokens: Vec<&str> = line[what.len()..].split_whitespace().collect();
    let shape = tokens[0]
        .trim_matches(['[', ']'])
        .split(',')
        .map(|d| d.parse().unwrap())
        .collect();
    (shape, tokens[1..].iter().map(|v| v.parse().unwrap()).collect())
}

fn assert_close(ours: &[f64], torch: &[f64], tol: f64, what: &str) {
    assert_eq!(ours.len(), torch.len(), "{what}");
    for (i, (a, b)) in ours.iter().zip(torch).enumerate() {
        assert!(
            (a - b).abs() <= tol * b.abs().max(1.0),
            "{what}[{i}]: ours {a}, torch {b}"
        );
    }
}

// ------------------------------------------------------- files from PyTorch

#[test]
fn pytorch_files_load_and_give_pytorch_outputs() {
    let (shape, x) = reference("input ");
    for variant in ["f32", "f16", "bf16"] {
        let (_, expected) = reference(&format!("output {variant} "));
        // in f64: the weights convert exactly, so only summation order differs
        let m = Mlp::<f64>::zeros();
        load_safetensors(&m, fixture(&format!("torch_{variant}.safetensors"))).unwrap();
        let out = m.forward(&Tensor::from_vec(x.clone(), &shape));
        assert_eq!(out.shape(), &[5, 3]);
        assert_close(&out.to_vec(), &expected, 1e-12, variant);
        // and in f32
        let m = Mlp::<f32>::zeros();
        load_safetensors(&m, fixture(&format!("torch_{variant}.safetensors"))).unwrap();
        let x32 = Tensor::from_vec(x.iter().map(|&v| v as f32).collect(), &shape);
        let out: Vec<f64> = m.forward(&x32).to_vec().into_iter().map(f64::from).collect();
        assert_close(&out, &expected, 1e-5, variant);
    }
}

/// A module of two named vectors, `values` and `expected`.
struct Pair<T: Float> {
    values: Tensor<T>,
    expected: Tensor<T>,
}

impl<T: Float> Module<T> for Pair<T> {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        x.clone()
    }
    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        vec![
            ("values".to_string(), self.values.clone()),
            ("expected".to_string(), self.expected.clone()),
        ]
    }
}

#[test]
fn f16_and_bf16_values_convert_as_pytorch_converts_them() {
    // zeros of both signs, subnormals, every exponent, the largest finite,
    // infinities and NaN; "expected" is PyTorch's conversion to float64
    for variant in ["f16", "bf16"] {
        let path = fixture(&format!("special_{variant}.safetensors"));
        let n = std::fs::read(&path).map(|b| {
            let st = safetensors::SafeTensors::deserialize(&b).unwrap();
            st.tensor("values").unwrap().shape()[0]
        });
        let n = n.unwrap();
        let m = Pair::<f64> {
            values: Tensor::zeros(&[n]),
            expected: Tensor::zeros(&[n]),
        };
        load_safetensors(&m, &path).unwrap();
        let (ours, torch) = (m.values.to_vec(), m.expected.to_vec());
        for (i, (a, b)) in ours.iter().zip(&torch).enumerate() {
            let same = a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
            assert!(same, "{variant} element {i}: ours {a:e}, torch {b:e}");
        }
        assert!(
            ours.iter().any(|v| v.is_nan()) && ours.iter().any(|v| v.is_infinite()),
            "{variant}"
        );
        assert!(
            ours.iter().any(|&v| v != 0.0 && v.abs() < 1e-5),
            "{variant} has subnormals"
        );
        // into f32: the same values, all exactly representable
        let m = Pair::<f32> {
            values: Tensor::zeros(&[n]),
            expected: Tensor::zeros(&[n]),
        };
        load_safetensors(&m, &path).unwrap();
        for (a, b) in m.values.to_vec().iter().zip(&torch) {
            assert!(
                f64::from(*a) == *b || (a.is_nan() && b.is_nan()),
                "{variant}: {a} vs {b}"
            );
        }
    }
}

// ------------------------------------------------------- files from tapegrad

/// Writes tests/ref/weights/tapegrad_{f32,f64}.safetensors, which
/// `python tests/ref/make_weights_ref.py --check` loads in PyTorch. Run it
/// after a change of the format: `cargo test --test weights -- --ignored
/// write_tapegrad_fixtures`.
#[test]
#[ignore]
fn write_tapegrad_fixtures() {
    save_safetensors(&Mlp::<f32>::filled(formula), fixture("tapegrad_f32.safetensors")).unwrap();
    save_safetensors(&Mlp::<f64>::filled(formula), fixture("tapegrad_f64.safetensors")).unwrap();
}

#[test]
fn tapegrad_writes_the_files_pytorch_was_checked_to_load() {
    // the committed files, which make_weights_ref.py --check loaded in
    // PyTorch, are byte for byte what save_safetensors writes today
    for (variant, path) in [("f32", temp("today-f32")), ("f64", temp("today-f64"))] {
        match variant {
            "f32" => save_safetensors(&Mlp::<f32>::filled(formula), &path).unwrap(),
            _ => save_safetensors(&Mlp::<f64>::filled(formula), &path).unwrap(),
        }
        let today = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let committed = std::fs::read(fixture(&format!("tapegrad_{variant}.safetensors"))).unwrap();
        assert!(today == committed, "tapegrad_{variant}.safetensors is not what tapegrad writes now: regenerate and check it (tests/ref/README.md)");
    }
}

#[test]
fn saved_files_hold_the_type_names_shapes_and_values() {
    for (variant, dtype) in [("f32", Dtype::F32), ("f64", Dtype::F64)] {
        let bytes = std::fs::read(fixture(&format!("tapegrad_{variant}.safetensors"))).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut names = st.names();
        names.sort_unstable();
        assert_eq!(names, vec!["0.bias", "0.weight", "2.bias", "2.weight"]);
        let w = st.tensor("0.weight").unwrap();
        assert_eq!((w.dtype(), w.shape()), (dtype, &[8usize, 4][..]));
        let first = match dtype {
            Dtype::F32 => f64::from(f32::from_le_bytes(w.data()[..4].try_into().unwrap())),
            _ => f64::from_le_bytes(w.data()[..8].try_into().unwrap()),
        };
        assert_eq!(
            first,
            if dtype == Dtype::F32 {
                f64::from(formula(0, 0) as f32)
            } else {
                formula(0, 0)
            }
        );
    }
}

#[test]
fn save_then_load_restores_parameters_and_buffers() {
    /// One parameter and one buffer (state saved but not trained).
    struct Norm {
        weight: Tensor<f32>,
        running_mean: Tensor<f32>,
    }
    impl Module<f32> for Norm {
        fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
            (x - &self.running_mean) * &self.weight
        }
        fn named_parameters(&self) -> Vec<(String, Tensor<f32>)> {
            vec![("weight".to_string(), self.weight.clone())]
        }
        fn named_buffers(&self) -> Vec<(String, Tensor<f32>)> {
            vec![("running_mean".to_string(), self.running_mean.clone())]
        }
    }
    let trained = Norm {
        weight: Tensor::from_vec(vec![0.5, 1.5, -2.0], &[3]).set_requires_grad(true),
        running_mean: Tensor::from_vec(vec![0.1, 0.2, 0.3], &[3]),
    };
    let path = temp("roundtrip");
    save_safetensors(&trained, &path).unwrap();
    let fresh = Norm {
        weight: Tensor::zeros(&[3]).set_requires_grad(true),
        running_mean: Tensor::zeros(&[3]),
    };
    load_safetensors(&fresh, &path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(fresh.weight.to_vec(), vec![0.5, 1.5, -2.0]);
    assert_eq!(fresh.running_mean.to_vec(), vec![0.1, 0.2, 0.3]);
    assert!(fresh.weight.requires_grad() && fresh.weight.is_leaf());
    assert!(!fresh.running_mean.requires_grad());
}

#[test]
fn an_f64_file_loads_into_an_f32_module_rounded_to_nearest() {
    let path = temp("f64-into-f32");
    let m64 = Mlp::<f64>::filled(|i, k| formula(i, k) + 1e-12 * k as f64);
    save_safetensors(&m64, &path).unwrap();
    let m32 = Mlp::<f32>::zeros();
    load_safetensors(&m32, &path).unwrap();
    std::fs::remove_file(&path).unwrap();
    for (a, b) in m32.values().iter().flatten().zip(m64.values().iter().flatten()) {
        assert_eq!(*a, *b as f32);
    }
}

#[test]
fn loading_writes_in_place_so_an_optimizer_keeps_working() {
    let m = Mlp::<f64>::zeros();
    let mut opt = Adam::new(m.parameters(), 0.1);
    let address = m.w0.with_array(|v| v.as_ptr() as usize);
    load_safetensors(&m, fixture("tapegrad_f64.safetensors")).unwrap();
    assert_eq!(
        m.w0.with_array(|v| v.as_ptr() as usize),
        address,
        "the same buffer"
    );
    assert_eq!(m.w0.to_vec()[1], formula(0, 1));
    assert!(m.w0.is_leaf() && m.w0.requires_grad());
    // the optimizer's handles are the module's: a step moves the loaded values
    let loaded = m.values();
    let (shape, x) = reference("input ");
    m.forward(&Tensor::from_vec(x, &shape)).sum().backward();
    opt.step();
    for (before, after) in loaded.iter().zip(m.values()) {
        assert_ne!(before, &after);
        // Adam's first step moves each element by at most the learning rate
        assert!(before
            .iter()
            .zip(&after)
            .all(|(a, b)| (a - b).abs() <= 0.1 + 1e-12));
    }
}

// ------------------------------------------------------------- bad files

/// Serializes `tensors` (name, dtype, shape, bytes) as a safetensors file.
fn write_file(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()));
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn f32_bytes(n: usize, v: f32) -> Vec<u8> {
    (0..n).flat_map(|_| v.to_le_bytes()).collect()
}

/// The four tensors of [`Mlp`], all 9.0, with `change` applied.
fn mlp_file(path: &Path, change: impl FnOnce(&mut Vec<(&'static str, Dtype, Vec<usize>, Vec<u8>)>)) {
    let mut tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = [
        ("0.weight", vec![8, 4]),
        ("0.bias", vec![8]),
        ("2.weight", vec![3, 8]),
        ("2.bias", vec![3]),
    ]
    .into_iter()
    .map(|(n, s)| {
        let len = s.iter().product();
        (n, Dtype::F32, s, f32_bytes(len, 9.0))
    })
    .collect();
    change(&mut tensors);
    write_file(path, &tensors);
}

/// Loads `path` into a module of known values: returns the error's
/// Display, after checking that it is an error and that every parameter
/// kept its value.
fn load_fails(path: &Path) -> (WeightsError, String) {
    let m = Mlp::<f32>::filled(formula);
    let before = m.values();
    let err = load_safetensors(&m, path).expect_err("a bad file must be refused");
    assert_eq!(m.values(), before, "a refused file changed the module ({err})");
    let msg = err.to_string();
    (err, msg)
}

#[test]
fn a_good_file_of_the_bad_file_tests_loads() {
    // the base the cases below change loads, so each failure is its change's
    let path = temp("good");
    mlp_file(&path, |_| {});
    let m = Mlp::<f32>::zeros();
    load_safetensors(&m, &path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(m.values().iter().flatten().all(|&v| v == 9.0));
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let path = temp("does-not-exist");
    let (err, msg) = load_fails(&path);
    assert!(matches!(err, WeightsError::Io { .. }), "{err:?}");
    assert!(
        msg.contains(&*path.to_string_lossy()) && msg.contains("No such file"),
        "{msg}"
    );
    assert!(
        std::error::Error::source(&err).is_some(),
        "the io::Error is the source"
    );
}

#[test]
fn a_missing_tensor_is_named() {
    // the last tensor is missing: the three before it must not be written
    let path = temp("missing");
    mlp_file(&path, |t| drop(t.pop()));
    let (err, msg) = load_fails(&path);
    std::fs::remove_file(&path).unwrap();
    assert!(
        matches!(&err, WeightsError::Missing { name } if name == "2.bias"),
        "{err:?}"
    );
    assert!(msg.contains("\"2.bias\"") && msg.contains("missing"), "{msg}");
}

#[test]
fn an_extra_tensor_is_named() {
    let path = temp("extra");
    mlp_file(&path, |t| {
        t.push(("3.weight", Dtype::F32, vec![2], f32_bytes(2, 1.0)))
    });
    let (err, msg) = load_fails(&path);
    std::fs::remove_file(&path).unwrap();
    assert!(
        matches!(&err, WeightsError::Unexpected { name } if name == "3.weight"),
        "{err:?}"
    );
    assert!(
        msg.contains("\"3.weight\"") && msg.contains("does not have"),
        "{msg}"
    );
}

#[test]
fn a_mis_shaped_tensor_is_named_with_both_shapes() {
    // 2.weight transposed: [8, 3] for [3, 8], the same number of elements
    let path = temp("shape");
    mlp_file(&path, |t| t[2].2 = vec![8, 3]);
    let (err, msg) = load_fails(&path);
    std::fs::remove_file(&path).unwrap();
    assert!(
        matches!(&err, WeightsError::Shape { name, .. } if name == "2.weight"),
        "{err:?}"
    );
    assert!(
        msg.contains("\"2.weight\"") && msg.contains("[8, 3]") && msg.contains("[3, 8]"),
        "{msg}"
    );
}

#[test]
fn an_unsupported_dtype_is_named() {
    for (dtype, width) in [(Dtype::I64, 8), (Dtype::I32, 4), (Dtype::U8, 1)] {
        let path = temp("dtype");
        mlp_file(&path, |t| t[3] = ("2.bias", dtype, vec![3], vec![0; 3 * width]));
        let (err, msg) = load_fails(&path);
        std::fs::remove_file(&path).unwrap();
        assert!(
            matches!(&err, WeightsError::Dtype { name, .. } if name == "2.bias"),
            "{err:?}"
        );
        assert!(
            msg.contains("\"2.bias\"") && msg.contains(&format!("{dtype:?}")),
            "{msg}"
        );
    }
}

#[test]
fn truncated_files_are_refused() {
    let good = temp("to-truncate");
    mlp_file(&good, |_| {});
    let bytes = std::fs::read(&good).unwrap();
    std::fs::remove_file(&good).unwrap();
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let path = temp("truncated");
    // cut in the data, in the header, in the header's length, and empty
    for (len, expected) in [
        (bytes.len() - 4, "truncated"),
        (header + 1, "truncated"),
        (header - 10, "header"),
        (5, "header"),
        (0, "header"),
    ] {
        std::fs::write(&path, &bytes[..len]).unwrap();
        let (err, msg) = load_fails(&path);
        assert!(matches!(err, WeightsError::Format { .. }), "{len} bytes: {err:?}");
        assert!(
            msg.contains(&*path.to_string_lossy()) && msg.contains(expected),
            "{len} bytes: {msg}"
        );
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn corrupt_headers_are_refused() {
    let good = temp("to-corrupt");
    mlp_file(&good, |_| {});
    let bytes = std::fs::read(&good).unwrap();
    std::fs::remove_file(&good).unwrap();
    let path = temp("corrupt");
    let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
    // not JSON: the opening brace overwritten
    let mut b = bytes.clone();
    b[8] = b'#';
    cases.push((b, "JSON"));
    // not UTF-8
    let mut b = bytes.clone();
    b[9] = 0xff;
    cases.push((b, "UTF-8"));
    // a header length beyond the file
    let mut b = bytes.clone();
    b[..8].copy_from_slice(&(bytes.len() as u64 * 2).to_le_bytes());
    cases.push((b, "header"));
    // offsets that do not match the shapes: "data_offsets" of 0.weight's end changed
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let from = text.find("[0,").expect("a tensor starting at offset 0");
    let mut b = bytes.clone();
    b[from + 1] = b'4'; // [0,N] -> [4,N]: a gap before the first tensor
    cases.push((b, "offset"));
    for (i, (b, expected)) in cases.into_iter().enumerate() {
        std::fs::write(&path, b).unwrap();
        let (err, msg) = load_fails(&path);
        assert!(matches!(err, WeightsError::Format { .. }), "case {i}: {err:?}");
        assert!(
            msg.contains("not a valid safetensors file") && msg.contains(expected),
            "case {i}: {msg}"
        );
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_module_with_a_name_used_twice_is_refused() {
    struct Twice(Tensor<f32>);
    impl Module<f32> for Twice {
        fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
            x.clone()
        }
        fn named_parameters(&self) -> Vec<(String, Tensor<f32>)> {
            vec![
                ("w".to_string(), self.0.clone()),
                ("w".to_string(), self.0.clone()),
            ]
        }
    }
    let path = temp("twice");
    let err = save_safetensors(&Twice(Tensor::ones(&[1])), &path).unwrap_err();
    assert!(
        matches!(&err, WeightsError::DuplicateName { name } if name == "w"),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"w\""));
    assert!(!path.exists(), "nothing was written");
}

#[test]
fn saving_to_a_directory_that_does_not_exist_is_an_io_error() {
    let path = temp("no-such-dir").join("model.safetensors");
    let err = save_safetensors(&Mlp::<f32>::zeros(), &path).unwrap_err();
    assert!(matches!(err, WeightsError::Io { .. }), "{err:?}");
}
