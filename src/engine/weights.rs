//! Weights as the numeric backend holds them: f32 values or integer blocks, loaded and
//! shape-checked from GGUF tensors or dense (safetensors) ones.

use super::int8::{qmatmul, qmatmul_many, QAct, QMat};
use super::kernels::matmul;
use super::{backend_name, BACKEND_F32_FIXED, BACKEND_INT8_EXACT, BACKEND_INT8_F16KV};
use crate::{Error, ErrorKind, Result};
use candle_core::Device;

/// A weight as its source holds it: GGUF blocks (any ggml type) or a dense tensor (from
/// safetensors; converted to f32 exactly, as F16 and BF16 widen without rounding).
// candle's QTensor is larger on some targets (aarch64); a few dozen of these live only
// while a model loads, so boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Weight {
    Quant(candle_core::quantized::QTensor),
    Dense(candle_core::Tensor),
}

/// Where a model's tensors come from: `None` for a tensor the source lacks.
pub type WeightSource<'a> = dyn FnMut(&str) -> Result<Option<Weight>> + 'a;

pub(crate) fn model_err(m: impl Into<String>) -> Error {
    Error::new(ErrorKind::Model(m.into()))
}

/// A weight matrix in the representation of the chosen backend.
pub(crate) enum Mat {
    /// Backend 1: the exact dequantized values.
    F32(Vec<f32>),
    /// Backends 2 and 3: integer blocks (see [`super::int8`]).
    Q(QMat),
}

/// The input of a group of matmuls sharing one activation (quantized once for the integer
/// backends).
pub(crate) struct Input<'a> {
    x: &'a [f32],
    q: Option<QAct>,
}

impl<'a> Input<'a> {
    /// Prepares `rows × k` activations for `backend`: quantized once per block of 32 for
    /// the integer backends.
    pub(crate) fn new(backend: u16, x: &'a [f32], rows: usize, k: usize) -> Self {
        let q = (backend != BACKEND_F32_FIXED).then(|| QAct::new(x, rows, k));
        Input { x, q }
    }
}

impl Mat {
    /// y (rows × n_out) = input · selfᵀ.
    pub(crate) fn apply(&self, inp: &Input, rows: usize, n_out: usize, k: usize, y: &mut [f32]) {
        match self {
            Mat::F32(w) => matmul(inp.x, rows, w, n_out, k, y),
            Mat::Q(w) => qmatmul(inp.q.as_ref().expect("quantized input"), w, y),
        }
    }

    /// `apply` of several matrices to one input: (matrix, n_out, output). Integer matrices
    /// share one parallel call ([`super::int8::qmatmul_many`]); the result is the same.
    pub(crate) fn apply_many(
        inp: &Input,
        rows: usize,
        k: usize,
        outs: &mut [(&Mat, usize, &mut [f32])],
    ) {
        let all_q = outs.iter().all(|(m, _, _)| matches!(m, Mat::Q(_)));
        if let (Some(a), true) = (&inp.q, all_q) {
            let mut qs: Vec<(&QMat, &mut [f32])> = outs
                .iter_mut()
                .filter_map(|(m, _, y)| match m {
                    Mat::Q(w) => Some((w, &mut **y)),
                    Mat::F32(_) => None,
                })
                .collect();
            return qmatmul_many(a, &mut qs);
        }
        for (m, n_out, y) in outs.iter_mut() {
            m.apply(inp, rows, *n_out, k, y);
        }
    }

    /// Copies the f32 values of row `t` (embedding lookup).
    pub(crate) fn row(&self, t: usize, out: &mut [f32]) {
        match self {
            Mat::F32(w) => out.copy_from_slice(&w[t * out.len()..(t + 1) * out.len()]),
            Mat::Q(w) => w.dequant_row(t, out),
        }
    }
}

/// Refuses backend ids this engine does not implement.
pub(crate) fn check_backend(backend: u16) -> Result<()> {
    if ![BACKEND_F32_FIXED, BACKEND_INT8_EXACT, BACKEND_INT8_F16KV].contains(&backend) {
        return Err(Error::unsupported(
            "numeric backend",
            format!("{backend} ({})", backend_name(backend)),
            "1 (f32-fixed-order), 2 (int8-exact), 3 (int8-exact with a 16-bit KV cache)",
        ));
    }
    Ok(())
}

/// Loads named tensors for one backend: matrices as the backend holds them, vectors as
/// f32.
pub(crate) struct Loader<'a, 'b> {
    pub get: &'a mut WeightSource<'b>,
    /// Keep integer blocks (backends 2 and 3) instead of dequantizing.
    pub quant: bool,
}

impl Loader<'_, '_> {
    /// A required matrix of shape `want` (rows, columns).
    pub(crate) fn mat(&mut self, name: &str, want: &[usize]) -> Result<Mat> {
        let w = (self.get)(name)?.ok_or_else(|| model_err(format!("tensor {name} is missing")))?;
        load_mat(w, name, want, self.quant)
    }

    /// An optional matrix (absent: `None`).
    pub(crate) fn mat_opt(&mut self, name: &str, want: &[usize]) -> Result<Option<Mat>> {
        match (self.get)(name)? {
            Some(w) => Ok(Some(load_mat(w, name, want, self.quant)?)),
            None => Ok(None),
        }
    }

    /// A required vector of f32 values.
    pub(crate) fn vec(&mut self, name: &str, len: usize) -> Result<Vec<f32>> {
        let w = (self.get)(name)?.ok_or_else(|| model_err(format!("tensor {name} is missing")))?;
        weight_f32(w, name, &[len])
    }
}

/// A weight's values as f32, checked against the expected shape.
pub(crate) fn weight_f32(w: Weight, name: &str, want: &[usize]) -> Result<Vec<f32>> {
    match load_mat(w, name, want, false)? {
        Mat::F32(v) => Ok(v),
        Mat::Q(_) => Err(Error::internal("dequantized load gave blocks")),
    }
}

/// One weight in the backend's representation: f32 values (backend 1, and norm vectors),
/// or integer blocks (backend 2 and 3 matrices; dense sources quantized by the F32 rule).
fn load_mat(w: Weight, name: &str, want: &[usize], quant: bool) -> Result<Mat> {
    let dev = Device::Cpu;
    let dims = match &w {
        Weight::Quant(q) => q.shape().dims().to_vec(),
        Weight::Dense(t) => t.dims().to_vec(),
    };
    if dims != want {
        return Err(model_err(format!(
            "tensor {name} has shape {dims:?}, expected {want:?}"
        )));
    }
    let t = match w {
        Weight::Quant(qt) => {
            use candle_core::quantized::GgmlDType;
            if quant && !matches!(qt.dtype(), GgmlDType::BF16) {
                let raw = qt.data()?;
                let m = QMat::from_ggml(qt.dtype(), &raw, want[0], want[1]).map_err(|e| match e
                    .kind()
                {
                    ErrorKind::UnsupportedModel { .. } => e,
                    _ => model_err(format!("tensor {name}: {e}")),
                })?;
                return Ok(Mat::Q(m));
            }
            qt.dequantize(&dev)?
        }
        Weight::Dense(t) => t,
    };
    let v = t
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    if quant {
        let (n_out, k) = match want {
            [n, k] if k % super::int8::QK == 0 => (*n, *k),
            _ => {
                return Err(Error::unsupported(
                    "matrix shape for the integer backends",
                    format!("{want:?}"),
                    "rows whose length is a multiple of 32",
                ))
            }
        };
        return Ok(Mat::Q(QMat::from_f32_q8(&v, n_out, k)));
    }
    Ok(Mat::F32(v))
}
