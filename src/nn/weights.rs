//! Weights in safetensors files, the format PyTorch and Hugging Face
//! share: a module's tensors by their `state_dict` names, so a file
//! written by `safetensors.torch.save_file(model.state_dict(), ..)` loads
//! into the tapegrad module with the same names, and back.

use super::Module;
use crate::{Float, Tensor};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensorError, SafeTensors};
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a weights file could not be saved or loaded. Its `Display` names the
/// tensor or the problem (and the file, for problems of the file).
///
/// ```
/// use tapegrad::nn::{load_safetensors, Module, WeightsError};
/// use tapegrad::prelude::*;
///
/// struct Bias { b: Tensor<f32> }
/// impl Module<f32> for Bias {
///     fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> { x + &self.b }
///     fn named_parameters(&self) -> Vec<(String, Tensor<f32>)> {
///         vec![("bias".to_string(), self.b.clone())]
///     }
/// }
///
/// let m = Bias { b: Tensor::zeros(&[3]).set_requires_grad(true) };
/// let err = load_safetensors(&m, "no/such/file.safetensors").unwrap_err();
/// assert!(matches!(err, WeightsError::Io { .. }));
/// assert!(err.to_string().contains("no/such/file.safetensors"));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum WeightsError {
    /// The file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file: a corrupt header, or data
    /// that does not match it (a truncated file).
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The module has a tensor the file lacks.
    Missing {
        /// The tensor's name in the module.
        name: String,
    },
    /// The file has a tensor the module lacks.
    Unexpected {
        /// The tensor's name in the file.
        name: String,
    },
    /// A tensor's shape in the file differs from the module's.
    Shape {
        /// The tensor's name.
        name: String,
        /// The module's shape.
        expected: Vec<usize>,
        /// The file's shape.
        found: Vec<usize>,
    },
    /// A tensor's element type in the file is not one that loads (F16,
    /// BF16, F32 or F64).
    Dtype {
        /// The tensor's name.
        name: String,
        /// The file's element type (`"I64"`, ...).
        dtype: String,
    },
    /// Two tensors of the module have the same name.
    DuplicateName {
        /// The name.
        name: String,
    },
}

impl fmt::Display for WeightsError {
    #[track_caller]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightsError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            WeightsError::Format { path, reason } => {
                write!(f, "{}: not a valid safetensors file: {reason}", path.display())
            }
            WeightsError::Missing { name } => {
                write!(f, "tensor \"{name}\" of the module is missing from the file")
            }
            WeightsError::Unexpected { name } => {
                write!(
                    f,
                    "the file has a tensor \"{name}\" that the module does not have"
                )
            }
            WeightsError::Shape {
                name,
                expected,
                found,
            } => write!(
                f,
                "tensor \"{name}\" has shape {found:?} in the file, but {expected:?} in the module"
            ),
            WeightsError::Dtype { name, dtype } => write!(
                f,
                "tensor \"{name}\" has element type {dtype} in the file; F16, BF16, F32 and F64 load"
            ),
            WeightsError::DuplicateName { name } => {
                write!(f, "the module has two tensors named \"{name}\"")
            }
        }
    }
}

impl std::error::Error for WeightsError {
    #[track_caller]
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WeightsError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The module's parameters and buffers by name, refusing a name used twice.
#[track_caller]
fn named_tensors<T: Float>(module: &dyn Module<T>) -> Result<Vec<(String, Tensor<T>)>, WeightsError> {
    let tensors: Vec<_> = module
        .named_parameters()
        .into_iter()
        .chain(module.named_buffers())
        .collect();
    let mut seen = HashSet::new();
    for (name, _) in &tensors {
        if !seen.insert(name.as_str()) {
            return Err(WeightsError::DuplicateName { name: name.clone() });
        }
    }
    Ok(tensors)
}

/// An error of the safetensors crate about the file at `path`.
#[track_caller]
fn file_error(path: &Path, e: SafeTensorError) -> WeightsError {
    let reason = match e {
        SafeTensorError::IoError(source) => {
            return WeightsError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
        SafeTensorError::HeaderTooSmall => {
            "shorter than the 8 bytes of the header's length (an empty or truncated file?)".to_string()
        }
        SafeTensorError::InvalidHeaderLength => {
            "the header is longer than the file (a truncated or corrupt file?)".to_string()
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            "the tensor data is not as long as the header says (a truncated file?)".to_string()
        }
        other => other.to_string(),
    };
    WeightsError::Format {
        path: path.to_path_buf(),
        reason,
    }
}

/// Writes `module`'s parameters and buffers to a safetensors file at
/// `path`, under their names (`named_parameters` and `named_buffers`), as
/// F32 for an `f32` module and F64 for an `f64` one. The file is written
/// whole or not at all (to a temporary file that is then renamed).
///
/// ```
/// use tapegrad::nn::{load_safetensors, save_safetensors, Module};
/// use tapegrad::prelude::*;
///
/// struct Scale { w: Tensor<f32> }
/// impl Module<f32> for Scale {
///     fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> { x * &self.w }
///     fn named_parameters(&self) -> Vec<(String, Tensor<f32>)> {
///         vec![("weight".to_string(), self.w.clone())]
///     }
/// }
///
/// let path = std::env::temp_dir().join(format!("tapegrad-doc-{}.safetensors", std::process::id()));
/// let trained = Scale { w: Tensor::full(&[2], 3.0).set_requires_grad(true) };
/// save_safetensors(&trained, &path)?;
/// let fresh = Scale { w: Tensor::zeros(&[2]).set_requires_grad(true) };
/// load_safetensors(&fresh, &path)?;
/// assert_eq!(fresh.w.to_vec(), vec![3.0, 3.0]);
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), tapegrad::nn::WeightsError>(())
/// ```
///
/// **Errors**: [`WeightsError::DuplicateName`] if two of the module's
/// tensors share a name; [`WeightsError::Io`] if the file cannot be
/// written.
#[track_caller]
pub fn save_safetensors<T: Float>(
    module: &dyn Module<T>,
    path: impl AsRef<Path>,
) -> Result<(), WeightsError> {
    let path = path.as_ref();
    let tensors = named_tensors(module)?;
    let (dtype, width) = match T::DTYPE {
        "f32" => (Dtype::F32, 4),
        _ => (Dtype::F64, 8),
    };
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, t)| {
            let mut out = Vec::with_capacity(t.numel() * width);
            for v in t.to_vec() {
                match dtype {
                    Dtype::F32 => out.extend((v.as_f64() as f32).to_le_bytes()),
                    _ => out.extend(v.as_f64().to_le_bytes()),
                }
            }
            out
        })
        .collect();
    let views = tensors.iter().zip(&bytes).map(|((name, t), data)| {
        let view = TensorView::new(dtype, t.shape().to_vec(), data).expect("the bytes of the shape");
        (name.as_str(), view)
    });
    safetensors::serialize_to_file(views, None, path).map_err(|e| file_error(path, e))
}

/// Loads a safetensors file at `path` into `module`'s parameters and
/// buffers, by name: every tensor of the module must be in the file with
/// its shape, and the file must hold no other. F16, BF16, F32 and F64
/// tensors load, converted to `T` (to the nearest `f32` for an F64 tensor
/// in an `f32` module; exactly otherwise).
///
/// The whole file is checked before anything is written, so on an `Err`
/// every parameter is unchanged. The values are copied into the existing
/// tensors in place (under [`no_grad`](crate::no_grad)), so the module's
/// handles, and an optimizer holding them, stay valid.
///
/// ```
/// use tapegrad::nn::{load_safetensors, save_safetensors, Module, WeightsError};
/// use tapegrad::prelude::*;
///
/// struct Bias { b: Tensor<f64> }
/// impl Module<f64> for Bias {
///     fn forward(&self, x: &Tensor<f64>) -> Tensor<f64> { x + &self.b }
///     fn named_parameters(&self) -> Vec<(String, Tensor<f64>)> {
///         vec![("bias".to_string(), self.b.clone())]
///     }
/// }
///
/// let path = std::env::temp_dir().join(format!("tapegrad-doc-load-{}.safetensors", std::process::id()));
/// save_safetensors(&Bias { b: Tensor::ones(&[3]) }, &path)?;
/// // a module of another shape is refused, and keeps its values
/// let other = Bias { b: Tensor::zeros(&[4]).set_requires_grad(true) };
/// let err = load_safetensors(&other, &path).unwrap_err();
/// assert!(matches!(err, WeightsError::Shape { .. }));
/// assert_eq!(other.b.to_vec(), vec![0.0; 4]);
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), WeightsError>(())
/// ```
///
/// **Errors**: [`WeightsError::Io`] if the file cannot be read,
/// [`WeightsError::Format`] if it is not a valid safetensors file (a corrupt
/// header, truncated data), [`WeightsError::Missing`],
/// [`WeightsError::Unexpected`], [`WeightsError::Shape`] and
/// [`WeightsError::Dtype`] naming the first tensor that does not fit, and
/// [`WeightsError::DuplicateName`] for a module with a name used twice.
#[track_caller]
pub fn load_safetensors<T: Float>(
    module: &dyn Module<T>,
    path: impl AsRef<Path>,
) -> Result<(), WeightsError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| file_error(path, e))?;
    let targets = named_tensors(module)?;
    // Every value is decoded and checked first; only then is anything written.
    let mut values = Vec::with_capacity(targets.len());
    for (name, target) in &targets {
        let view = file
            .tensor(name)
            .map_err(|_| WeightsError::Missing { name: name.clone() })?;
        if view.shape() != target.shape() {
            return Err(WeightsError::Shape {
                name: name.clone(),
                expected: target.shape().to_vec(),
                found: view.shape().to_vec(),
            });
        }
        values.push(Tensor::from_vec(decode(name, &view)?, target.shape()));
    }
    let known: HashSet<&str> = targets.iter().map(|(name, _)| name.as_str()).collect();
    let mut extra: Vec<&str> = file.names().into_iter().filter(|n| !known.contains(n)).collect();
    extra.sort_unstable();
    if let Some(name) = extra.first() {
        return Err(WeightsError::Unexpected {
            name: name.to_string(),
        });
    }
    crate::no_grad(|| {
        for ((_, target), value) in targets.iter().zip(&values) {
            target.copy_(value);
        }
    });
    Ok(())
}

/// The elements of a float tensor of the file, converted to `T`.
#[track_caller]
fn decode<T: Float>(name: &str, view: &TensorView<'_>) -> Result<Vec<T>, WeightsError> {
    // Little-endian chunks of N bytes, each converted to f64 (exactly).
    #[track_caller]
    fn each<T: Float, const N: usize>(data: &[u8], to_f64: impl Fn([u8; N]) -> f64) -> Vec<T> {
        data.chunks_exact(N)
            .map(|c| T::of(to_f64(c.try_into().expect("N bytes"))))
            .collect()
    }
    let data = view.data();
    Ok(match view.dtype() {
        Dtype::F64 => each(data, f64::from_le_bytes),
        Dtype::F32 => each(data, |b| f64::from(f32::from_le_bytes(b))),
        Dtype::F16 => each(data, |b| f16_to_f64(u16::from_le_bytes(b))),
        Dtype::BF16 => each(data, |b| bf16_to_f64(u16::from_le_bytes(b))),
        other => {
            return Err(WeightsError::Dtype {
                name: name.to_string(),
                dtype: format!("{other:?}"),
            })
        }
    })
}

/// The value of IEEE 754 half-precision bits (sign, 5 exponent bits with
/// bias 15, 10 mantissa bits), exactly: every f16 is an f64.
#[track_caller]
fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let mantissa = f64::from(bits & 0x3ff);
    match exponent {
        // subnormal: 2⁻¹⁴ · m / 2¹⁰
        0 => sign * mantissa * 2f64.powi(-24),
        31 if mantissa == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        // normal: 2^(e - 15) · (1 + m / 2¹⁰)
        e => sign * (1024.0 + mantissa) * 2f64.powi(e - 25),
    }
}

/// The value of bfloat16 bits: the upper half of an f32's bits.
#[track_caller]
fn bf16_to_f64(bits: u16) -> f64 {
    f64::from(f32::from_bits(u32::from(bits) << 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_values() {
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0xc000), -2.0);
        assert_eq!(f16_to_f64(0x3555), 0.333251953125); // nearest f16 to 1/3
        assert_eq!(f16_to_f64(0x7bff), 65504.0); // largest
        assert_eq!(f16_to_f64(0x0400), 2f64.powi(-14)); // smallest normal
        assert_eq!(f16_to_f64(0x03ff), 1023.0 * 2f64.powi(-24)); // largest subnormal
        assert_eq!(f16_to_f64(0x0001), 2f64.powi(-24)); // smallest subnormal
        assert_eq!(f16_to_f64(0x0000).to_bits(), 0.0f64.to_bits());
        assert_eq!(f16_to_f64(0x8000).to_bits(), (-0.0f64).to_bits());
        assert_eq!(f16_to_f64(0x7c00), f64::INFINITY);
        assert_eq!(f16_to_f64(0xfc00), f64::NEG_INFINITY);
        assert!(f16_to_f64(0x7e00).is_nan() && f16_to_f64(0xfc01).is_nan());
    }

    #[test]
    fn f16_values_increase_with_their_bits() {
        // over all positive finite patterns: strictly increasing, and each
        // step is one unit in the last place of its binade
        for bits in 0..0x7bffu16 {
            let (a, b) = (f16_to_f64(bits), f16_to_f64(bits + 1));
            let ulp = 2f64.powi(i32::from(bits >> 10).max(1) - 25);
            assert_eq!(b - a, ulp, "between {bits:#06x} and the next");
        }
    }

    #[test]
    fn bf16_values() {
        assert_eq!(bf16_to_f64(0x3f80), 1.0);
        assert_eq!(bf16_to_f64(0xc040), -3.0);
        assert_eq!(bf16_to_f64(0x3eab), 0.333984375);
        assert_eq!(bf16_to_f64(0x7f7f), 3.3895313892515355e38); // largest
        assert_eq!(bf16_to_f64(0x0001), 2f64.powi(-133)); // smallest subnormal
        assert_eq!(bf16_to_f64(0x7f80), f64::INFINITY);
        assert!(bf16_to_f64(0x7fc0).is_nan());
    }
}
