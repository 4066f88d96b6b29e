//! The llama-architecture forward pass, written out op by op in a fixed order.
//!
//! Weights come from a GGUF file through candle and are held as f32 (the exact values the
//! quantized blocks stand for). Each row of a call is one (stream, token, position); a row's
//! result depends only on that row and its stream's cache, so the encoder may score many
//! known positions per call while the decoder goes one token at a time, and both get the
//! same bits.

use super::half;
use super::int8::{qmatmul, qmatmul_many, QAct, QMat};
use super::kernels::matmul;
use super::math::{
    dot, exp_f32, exp_f64, ln_f64, max_f32, silu, sin_cos_f64, sum_lanes, sum_sq, LANES,
};
use super::{backend_name, BACKEND_F32_FIXED, BACKEND_INT8_EXACT, BACKEND_INT8_F16KV};
use crate::{Error, ErrorKind, Result};
use candle_core::quantized::gguf_file;
use candle_core::Device;
use rayon::prelude::*;

/// Hyper-parameters read from the GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub n_layers: usize,
    pub dim: usize,
    pub ffn_dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub rope_theta: f32,
    pub norm_eps: f32,
    pub context_length: usize,
}

/// A weight matrix in the representation of the chosen backend.
enum Mat {
    /// Backend 1: the exact dequantized values.
    F32(Vec<f32>),
    /// Backend 2: integer blocks (see [`super::int8`]).
    Q(QMat),
}

/// The input of a group of matmuls sharing one activation (quantized once for backend 2).
struct Input<'a> {
    x: &'a [f32],
    q: Option<QAct>,
}

impl Mat {
    fn apply(&self, inp: &Input, rows: usize, n_out: usize, k: usize, y: &mut [f32]) {
        match self {
            Mat::F32(w) => matmul(inp.x, rows, w, n_out, k, y),
            Mat::Q(w) => qmatmul(inp.q.as_ref().expect("quantized input"), w, y),
        }
    }

    /// `apply` of several matrices to one input: (matrix, n_out, output). Integer matrices
    /// share one parallel call ([`super::int8::qmatmul_many`]); the result is the same.
    fn apply_many(inp: &Input, rows: usize, k: usize, outs: &mut [(&Mat, usize, &mut [f32])]) {
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

    /// The f32 vector of a tensor loaded without quantization (norm weights).
    fn into_f32(self) -> Vec<f32> {
        match self {
            Mat::F32(v) => v,
            Mat::Q(_) => unreachable!("loaded with quant = false"),
        }
    }

    /// Copies the f32 values of row `t` (embedding lookup).
    fn row(&self, t: usize, out: &mut [f32]) {
        match self {
            Mat::F32(w) => out.copy_from_slice(&w[t * out.len()..(t + 1) * out.len()]),
            Mat::Q(w) => w.dequant_row(t, out),
        }
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: Mat,
    wk: Mat,
    wv: Mat,
    wo: Mat,
    ffn_norm: Vec<f32>,
    w_gate: Mat,
    w_up: Mat,
    w_down: Mat,
}

/// The model's weights.
pub struct Llama {
    pub cfg: LlamaConfig,
    /// Numeric backend id ([`BACKEND_F32_FIXED`] or [`BACKEND_INT8_EXACT`]).
    pub backend: u16,
    embed: Mat,
    layers: Vec<Layer>,
    out_norm: Vec<f32>,
    /// Output projection; `None` when tied to the embedding (as in SmolLM2).
    output: Option<Mat>,
    /// inv_freq[i] = θ^(−2i/head_dim), computed with our own exp/ln.
    inv_freq: Vec<f64>,
}

/// Cached keys or values: f32 (backends 1 and 2) or IEEE half (backend 3, rounded by
/// [`half::f32_to_f16`] when stored, read back exactly).
enum KvBuf {
    F32(Vec<f32>),
    F16(Vec<u16>),
}

impl KvBuf {
    fn new(half: bool, n: usize) -> Self {
        if half {
            KvBuf::F16(vec![0; n])
        } else {
            KvBuf::F32(vec![0.0; n])
        }
    }

    /// Stores `src` at element `at` (rounded to half for an F16 buffer).
    fn put(&mut self, at: usize, src: &[f32]) {
        match self {
            KvBuf::F32(b) => b[at..at + src.len()].copy_from_slice(src),
            KvBuf::F16(b) => half::store(src, &mut b[at..at + src.len()]),
        }
    }

    fn copy_within(&mut self, from: std::ops::Range<usize>, to: usize) {
        match self {
            KvBuf::F32(b) => b.copy_within(from, to),
            KvBuf::F16(b) => b.copy_within(from, to),
        }
    }

    /// Elements `r` as f32: borrowed as they are, or converted (exactly) into `buf`.
    fn rows<'a>(&'a self, r: std::ops::Range<usize>, buf: &'a mut Vec<f32>) -> &'a [f32] {
        match self {
            KvBuf::F32(b) => &b[r],
            KvBuf::F16(b) => {
                buf.resize(r.len(), 0.0);
                half::load(&b[r], buf);
                buf
            }
        }
    }
}

/// One stream's key/value cache: `[layer][kv_head][slot][head_dim]`, preallocated.
///
/// Slot `s` holds the token at RoPE position `offset + s`: positions are contiguous, and
/// [`KvCache::slide`] keeps them so by moving the newest entries down and re-rotating the
/// first (the start token, an attention sink) to the position just before them.
pub struct KvCache {
    k: KvBuf,
    v: KvBuf,
    /// The un-rotated keys of slot 0, `[layer][kv_head][head_dim]`, for re-rotation.
    sink_k: Vec<f32>,
    capacity: usize,
    /// Number of slots written so far (the next row goes to slot `len`). Private so that
    /// it only changes together with `offset` (`clear`, `slide`, `forward`).
    len: usize,
    /// RoPE position of slot 0.
    offset: usize,
}

impl KvCache {
    /// Positions this cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Empties the cache (the next row is position 0 in slot 0).
    pub fn clear(&mut self) {
        self.len = 0;
        self.offset = 0;
    }

    /// Slots written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The RoPE position the next row must carry.
    pub fn next_pos(&self) -> usize {
        self.offset + self.len
    }

    /// Forgets the newest slots down to `len` (rows computed speculatively whose input
    /// turned out wrong); later rows overwrite them. Slot 0's raw key stays as it is, so a
    /// later [`Llama::slide`] is unaffected. A longer `len` than written changes nothing.
    pub fn truncate(&mut self, len: usize) {
        if len == 0 {
            self.clear();
        } else {
            self.len = self.len.min(len);
        }
    }
}

/// One row of a forward call.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// Index into the caches slice.
    pub stream: usize,
    /// Input token.
    pub token: u32,
    /// RoPE position of the token; rows of one stream come in order, the first at that
    /// stream's [`KvCache::next_pos`], each next one position later.
    pub pos: usize,
}

fn md_u32(md: &std::collections::HashMap<String, gguf_file::Value>, key: &str) -> Result<u32> {
    md.get(key)
        .ok_or_else(|| model_err(format!("GGUF metadata lacks {key}")))?
        .to_u32()
        .map_err(|e| model_err(format!("GGUF metadata {key}: {e}")))
}

fn md_f32(md: &std::collections::HashMap<String, gguf_file::Value>, key: &str) -> Option<f32> {
    md.get(key).and_then(|v| v.to_f32().ok())
}

fn model_err(m: String) -> Error {
    Error::new(ErrorKind::Model(m))
}

/// RoPE variants the engine runs, for messages.
pub const SUPPORTED_ROPE: &str = "plain RoPE with any base, linear scaling, llama3 frequency \
factors; rotary dimension = head dimension";

/// The RoPE scaling of a model, as read from its metadata.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by the factor (GGUF `rope.scaling.type = linear`).
    Linear(f32),
    /// One divisor per frequency (Llama 3.1+: GGUF tensor `rope_freqs.weight`, or computed
    /// from the checkpoint's `rope_scaling` by [`llama3_rope_factors`]).
    Factors(Vec<f32>),
}

/// A weight as its source holds it: GGUF blocks (any ggml type) or a dense tensor (from
/// safetensors; converted to f32 exactly, as F16 and BF16 widen without rounding).
pub enum Weight {
    Quant(candle_core::quantized::QTensor),
    Dense(candle_core::Tensor),
}

impl LlamaConfig {
    /// Checks the shape against what the kernels assume (lane multiples, whole heads).
    pub fn validate(self) -> Result<Self> {
        let cfg = self;
        let ok = cfg.n_heads > 0
            && cfg.n_kv_heads > 0
            && cfg.n_heads % cfg.n_kv_heads == 0
            && cfg.dim % cfg.n_heads == 0
            && cfg.head_dim % 2 == 0
            && cfg.dim % LANES == 0
            && cfg.ffn_dim % LANES == 0
            && cfg.head_dim % LANES == 0
            && cfg.vocab > 0
            && cfg.n_layers > 0
            && cfg.rope_theta.is_finite()
            && cfg.rope_theta > 1.0
            && cfg.norm_eps.is_finite()
            && cfg.norm_eps >= 0.0;
        if !ok {
            return Err(Error::unsupported(
                "model shape",
                format!("{cfg:?}"),
                "heads dividing the width, kv heads dividing heads, width, feed-forward \
                 width and head dimension multiples of 8",
            ));
        }
        Ok(cfg)
    }

    /// Reads the llama hyper-parameters and refuses architectures this engine does not run.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self> {
        Ok(Self::from_gguf_rope(content)?.0)
    }

    /// The hyper-parameters and the RoPE scaling named in the metadata (a factors tensor,
    /// `rope_freqs.weight`, is read by the loader).
    fn from_gguf_rope(content: &gguf_file::Content) -> Result<(Self, RopeScaling)> {
        let md = &content.metadata;
        let arch = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != "llama" {
            return Err(Error::unsupported(
                "architecture",
                format!("'{arch}'"),
                "llama",
            ));
        }
        let dim = md_u32(md, "llama.embedding_length")? as usize;
        let n_heads = md_u32(md, "llama.attention.head_count")? as usize;
        let n_kv_heads = match md.get("llama.attention.head_count_kv") {
            Some(_) => md_u32(md, "llama.attention.head_count_kv")? as usize,
            None => n_heads,
        };
        let vocab = match md.get("llama.vocab_size").and_then(|v| v.to_u32().ok()) {
            Some(v) => v as usize,
            None => content
                .tensor_infos
                .get("token_embd.weight")
                .map(|t| t.shape.dims()[0])
                .ok_or_else(|| model_err("no token_embd.weight".into()))?,
        };
        let head_dim = dim.checked_div(n_heads).unwrap_or(0);
        // The engine's attention width is heads × head_dim = embedding width, and RoPE
        // turns the whole head: models that say otherwise compute something else.
        for key in [
            "llama.attention.key_length",
            "llama.attention.value_length",
            "llama.rope.dimension_count",
        ] {
            if let Some(v) = md.get(key).and_then(|v| v.to_u32().ok()) {
                if v as usize != head_dim {
                    return Err(Error::unsupported(
                        "head or rotary dimension",
                        format!("{key} = {v} (embedding / heads = {head_dim})"),
                        "head and rotary dimension = embedding width / heads",
                    ));
                }
            }
        }
        let scaling_type = md
            .get("llama.rope.scaling.type")
            .and_then(|v| v.to_string().ok())
            .cloned();
        let factor = md_f32(md, "llama.rope.scaling.factor")
            .or_else(|| md_f32(md, "llama.rope.scale_linear"));
        let bad_scaling = |t: &str| {
            Error::unsupported(
                "RoPE scaling",
                format!("'{t}' (factor {factor:?})"),
                SUPPORTED_ROPE,
            )
        };
        let rope = match scaling_type.as_deref() {
            Some("none") => RopeScaling::None,
            None | Some("linear") => match factor {
                None => RopeScaling::None,
                Some(1.0) => RopeScaling::None,
                Some(f) if f.is_finite() && f > 0.0 => RopeScaling::Linear(f),
                Some(_) => return Err(bad_scaling("linear")),
            },
            Some(other) => return Err(bad_scaling(other)),
        };
        let cfg = LlamaConfig {
            n_layers: md_u32(md, "llama.block_count")? as usize,
            dim,
            ffn_dim: md_u32(md, "llama.feed_forward_length")? as usize,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab,
            rope_theta: md_f32(md, "llama.rope.freq_base").unwrap_or(10000.0),
            norm_eps: md_f32(md, "llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            context_length: md_u32(md, "llama.context_length").unwrap_or(2048) as usize,
        };
        Ok((cfg.validate()?, rope))
    }
}

/// Llama 3.1's per-frequency RoPE divisors, from the checkpoint's `rope_scaling` numbers
/// (what llama.cpp's converter stores as `rope_freqs.weight`), computed in f64 with
/// lmzip's own exp/ln so that they are the same everywhere; rounded to f32 like the tensor.
pub fn llama3_rope_factors(
    head_dim: usize,
    theta: f32,
    factor: f64,
    low_freq_factor: f64,
    high_freq_factor: f64,
    original_context: f64,
) -> Vec<f32> {
    let ln_theta = ln_f64(theta as f64);
    let low_wavelen = original_context / low_freq_factor;
    let high_wavelen = original_context / high_freq_factor;
    (0..head_dim / 2)
        .map(|i| {
            let freq = exp_f64(-(2.0 * i as f64 / head_dim as f64) * ln_theta);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let f = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (original_context / wavelen - low_freq_factor)
                    / (high_freq_factor - low_freq_factor);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            f as f32
        })
        .collect()
}

impl Llama {
    /// Loads all weights of a llama GGUF file as f32 (backend [`BACKEND_F32_FIXED`]).
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        content: &gguf_file::Content,
        reader: &mut R,
    ) -> Result<Self> {
        Self::from_gguf_with(content, reader, BACKEND_F32_FIXED)
    }

    /// Loads a llama GGUF file for the given backend: [`BACKEND_F32_FIXED`] holds f32
    /// weights (any ggml type candle dequantizes); [`BACKEND_INT8_EXACT`] keeps every 2-D
    /// weight as integer blocks (Q4_0, Q4_1, Q8_0 as stored; F32/F16/BF16 matrices
    /// quantized to Q8_0-style blocks at load; other types refused), and
    /// [`BACKEND_INT8_F16KV`] does the same with a half-precision KV cache. Norm vectors
    /// stay f32 in all.
    pub fn from_gguf_with<R: std::io::Read + std::io::Seek>(
        content: &gguf_file::Content,
        reader: &mut R,
        backend: u16,
    ) -> Result<Self> {
        check_backend(backend)?;
        let (cfg, mut rope) = LlamaConfig::from_gguf_rope(content)?;
        let dev = Device::Cpu;
        let mut get = |name: &str| -> Result<Option<Weight>> {
            if !content.tensor_infos.contains_key(name) {
                return Ok(None);
            }
            let qt = content
                .tensor(reader, name, &dev)
                .map_err(|e| model_err(format!("tensor {name}: {e}")))?;
            Ok(Some(Weight::Quant(qt)))
        };
        if let Some(w) = get("rope_freqs.weight")? {
            if rope != RopeScaling::None {
                return Err(Error::unsupported(
                    "RoPE scaling",
                    "both a scaling type and rope_freqs.weight".to_string(),
                    SUPPORTED_ROPE,
                ));
            }
            let v = weight_f32(w, "rope_freqs.weight", &[cfg.head_dim / 2])?;
            rope = RopeScaling::Factors(v);
        }
        Self::from_weights(cfg, rope, backend, &mut get)
    }

    /// Builds the model from weights named as in GGUF llama files (`token_embd.weight`,
    /// `blk.N.attn_q.weight`, …, with attn_q/attn_k rows in GGUF's interleaved-RoPE order);
    /// `get` returns `None` for a tensor the source lacks. `output.weight` absent means the
    /// output is tied to the embedding.
    pub fn from_weights(
        cfg: LlamaConfig,
        rope: RopeScaling,
        backend: u16,
        get: &mut dyn FnMut(&str) -> Result<Option<Weight>>,
    ) -> Result<Self> {
        check_backend(backend)?;
        // `quant`: keep integer blocks (backend 2 matrices) instead of dequantizing.
        let mut load_any = |name: &str, want: &[usize], quant: bool| -> Result<Mat> {
            let w = get(name)?.ok_or_else(|| model_err(format!("tensor {name} is missing")))?;
            load_mat(w, name, want, quant)
        };
        let quant = backend != BACKEND_F32_FIXED;
        let (d, f, kv) = (cfg.dim, cfg.ffn_dim, cfg.n_kv_heads * cfg.head_dim);
        let embed = load_any("token_embd.weight", &[cfg.vocab, d], quant)?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = format!("blk.{i}");
            layers.push(Layer {
                attn_norm: load_any(&format!("{p}.attn_norm.weight"), &[d], false)?.into_f32(),
                wq: load_any(&format!("{p}.attn_q.weight"), &[d, d], quant)?,
                wk: load_any(&format!("{p}.attn_k.weight"), &[kv, d], quant)?,
                wv: load_any(&format!("{p}.attn_v.weight"), &[kv, d], quant)?,
                wo: load_any(&format!("{p}.attn_output.weight"), &[d, d], quant)?,
                ffn_norm: load_any(&format!("{p}.ffn_norm.weight"), &[d], false)?.into_f32(),
                w_gate: load_any(&format!("{p}.ffn_gate.weight"), &[f, d], quant)?,
                w_up: load_any(&format!("{p}.ffn_up.weight"), &[f, d], quant)?,
                w_down: load_any(&format!("{p}.ffn_down.weight"), &[d, f], quant)?,
            });
        }
        let out_norm = load_any("output_norm.weight", &[d], false)?.into_f32();
        let output = match get("output.weight")? {
            Some(w) => Some(load_mat(w, "output.weight", &[cfg.vocab, d], quant)?),
            None => None,
        };
        let half = cfg.head_dim / 2;
        let ln_theta = ln_f64(cfg.rope_theta as f64);
        if let RopeScaling::Factors(ff) = &rope {
            if ff.len() != half || ff.iter().any(|&x| !(x.is_finite() && x > 0.0)) {
                return Err(model_err(format!(
                    "RoPE frequency factors: {} positive values expected",
                    half
                )));
            }
        }
        // Scaling divides the frequency (f64, exact for a factor of 1, so plain RoPE keeps
        // its bits).
        let inv_freq = (0..half)
            .map(|i| {
                let f = exp_f64(-(2.0 * i as f64 / cfg.head_dim as f64) * ln_theta);
                match &rope {
                    RopeScaling::None => f,
                    RopeScaling::Linear(s) => f / *s as f64,
                    RopeScaling::Factors(ff) => f / ff[i] as f64,
                }
            })
            .collect();
        Ok(Llama {
            cfg,
            backend,
            embed,
            layers,
            out_norm,
            output,
            inv_freq,
        })
    }

    /// A cache for one stream holding up to `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        let n = self.cfg.n_layers * self.cfg.n_kv_heads * capacity * self.cfg.head_dim;
        let half = self.backend == BACKEND_INT8_F16KV;
        KvCache {
            k: KvBuf::new(half, n),
            v: KvBuf::new(half, n),
            sink_k: vec![0.0; self.cfg.n_layers * self.cfg.n_kv_heads * self.cfg.head_dim],
            capacity,
            len: 0,
            offset: 0,
        }
    }

    /// Slides a full part of a cache (window policy 1): keeps slot 0 (the start token) and
    /// the newest `keep − 1` slots, moved down to slots `1..keep` with their keys and values
    /// untouched, and re-rotates slot 0's key from its raw value to the position just before
    /// them, so positions stay contiguous. Exact: every kept value is copied, and the sink's
    /// key is computed from its un-rotated value by the same rotation as any new key.
    pub fn slide(&self, cache: &mut KvCache, keep: usize) -> Result<()> {
        let c = &self.cfg;
        if keep < 1 || keep > cache.len {
            return Err(Error::internal(format!(
                "slide: keep {keep} with {} slots",
                cache.len
            )));
        }
        let hd = c.head_dim;
        let from = cache.len - (keep - 1);
        for lh in 0..c.n_layers * c.n_kv_heads {
            let base = lh * cache.capacity * hd;
            cache
                .k
                .copy_within(base + from * hd..base + cache.len * hd, base + hd);
            cache
                .v
                .copy_within(base + from * hd..base + cache.len * hd, base + hd);
        }
        cache.offset += from - 1;
        let table = self.rope_table(cache.offset);
        let mut key = vec![0f32; hd];
        for lh in 0..c.n_layers * c.n_kv_heads {
            // Rotated in f32, then stored as any new key is (rounded to half in backend 3).
            key.copy_from_slice(&cache.sink_k[lh * hd..(lh + 1) * hd]);
            rope(&mut key, &table);
            cache.k.put(lh * cache.capacity * hd, &key);
        }
        cache.len = keep;
        Ok(())
    }

    /// Bytes one cache of `capacity` positions takes (for memory planning).
    pub fn cache_bytes(&self, capacity: usize) -> usize {
        let elem = if self.backend == BACKEND_INT8_F16KV {
            2
        } else {
            4
        };
        2 * elem * self.cfg.n_layers * self.cfg.n_kv_heads * capacity * self.cfg.head_dim
    }

    /// RoPE angles for one position, rounded to f32 once (identical on every platform).
    fn rope_table(&self, pos: usize) -> Vec<(f32, f32)> {
        self.inv_freq
            .iter()
            .map(|&f| {
                let (s, c) = sin_cos_f64(pos as f64 * f);
                (c as f32, s as f32)
            })
            .collect()
    }

    /// Runs the rows through the model and writes `rows.len() × vocab` logits.
    pub fn forward(&self, caches: &mut [KvCache], rows: &[Row], logits: &mut [f32]) -> Result<()> {
        let all: Vec<usize> = (0..rows.len()).collect();
        self.forward_select(caches, rows, &all, logits)
    }

    /// Runs the rows through the model and writes logits only for the rows listed in
    /// `want` (increasing indices into `rows`), `want.len() × vocab` values: rows that only
    /// fill the cache skip the output layer, a fifth of the model's work.
    pub fn forward_select(
        &self,
        caches: &mut [KvCache],
        rows: &[Row],
        want: &[usize],
        logits: &mut [f32],
    ) -> Result<()> {
        let c = &self.cfg;
        let n = rows.len();
        if logits.len() != want.len() * c.vocab || want.iter().any(|&i| i >= n) {
            return Err(Error::internal("forward: logits buffer has the wrong size"));
        }
        // Validate the rows against the caches before touching anything.
        // Each row's cache slot; positions must continue the stream's contiguous ones.
        let mut next: Vec<usize> = caches.iter().map(|k| k.len).collect();
        let mut slots = Vec::with_capacity(n);
        for r in rows {
            let ok = r.stream < caches.len()
                && next[r.stream] < caches[r.stream].capacity
                && r.pos == caches[r.stream].offset + next[r.stream]
                && (r.token as usize) < c.vocab;
            if !ok {
                return Err(Error::internal(format!("forward: bad row {r:?}")));
            }
            slots.push(next[r.stream]);
            next[r.stream] += 1;
        }
        let (d, hd, kvd) = (c.dim, c.head_dim, c.n_kv_heads * c.head_dim);
        let mut x = vec![0f32; n * d];
        for (i, r) in rows.iter().enumerate() {
            let t = r.token as usize;
            self.embed.row(t, &mut x[i * d..(i + 1) * d]);
        }
        let ropes: Vec<Vec<(f32, f32)>> = rows.iter().map(|r| self.rope_table(r.pos)).collect();
        let mut h = vec![0f32; n * d];
        let mut q = vec![0f32; n * d];
        let mut k = vec![0f32; n * kvd];
        let mut v = vec![0f32; n * kvd];
        let mut att = vec![0f32; n * d];
        let mut o = vec![0f32; n * d];
        let mut g = vec![0f32; n * c.ffn_dim];
        // Attention tasks: (stream, key/value head, up to ATT_ROWS of the stream's rows in
        // slot order), so that each cached chunk read serves several rows.
        let gq = (c.n_heads / c.n_kv_heads) * hd;
        let mut by_stream: Vec<Vec<usize>> = vec![Vec::new(); caches.len()];
        for (i, r) in rows.iter().enumerate() {
            by_stream[r.stream].push(i);
        }
        // (stream, kv head, the tile's row indices, their cache slots), the same every layer.
        let mut att_tasks: Vec<(usize, usize, &[usize], Vec<usize>)> = Vec::new();
        for (s, idx) in by_stream.iter().enumerate() {
            for tile in idx.chunks(ATT_ROWS) {
                let sl: Vec<usize> = tile.iter().map(|&i| slots[i]).collect();
                for kh in 0..c.n_kv_heads {
                    att_tasks.push((s, kh, tile, sl.clone()));
                }
            }
        }
        let mut u = vec![0f32; n * c.ffn_dim];
        for (li, l) in self.layers.iter().enumerate() {
            rms_norm(&x, &l.attn_norm, c.norm_eps, &mut h);
            let inp = self.input(&h, n, d);
            Mat::apply_many(
                &inp,
                n,
                d,
                &mut [
                    (&l.wq, d, &mut q),
                    (&l.wk, kvd, &mut k),
                    (&l.wv, kvd, &mut v),
                ],
            );
            // Slot 0's raw keys are kept for re-rotation when its window slides.
            for (i, r) in rows.iter().enumerate() {
                if slots[i] == 0 {
                    let at = li * kvd;
                    caches[r.stream].sink_k[at..at + kvd]
                        .copy_from_slice(&k[i * kvd..(i + 1) * kvd]);
                }
            }
            for i in 0..n {
                for hq in q[i * d..(i + 1) * d].chunks_exact_mut(hd) {
                    rope(hq, &ropes[i]);
                }
                for hk in k[i * kvd..(i + 1) * kvd].chunks_exact_mut(hd) {
                    rope(hk, &ropes[i]);
                }
            }
            // Write this layer's keys and values before any row reads the cache, so a row
            // sees exactly the positions up to its own whatever else the call carries.
            for (i, r) in rows.iter().enumerate() {
                let cache = &mut caches[r.stream];
                for kh in 0..c.n_kv_heads {
                    let at = ((li * c.n_kv_heads + kh) * cache.capacity + slots[i]) * hd;
                    cache
                        .k
                        .put(at, &k[i * kvd + kh * hd..i * kvd + (kh + 1) * hd]);
                    cache
                        .v
                        .put(at, &v[i * kvd + kh * hd..i * kvd + (kh + 1) * hd]);
                }
            }
            let caches_ro: &[KvCache] = caches;
            let lane_sum = self.backend == BACKEND_INT8_F16KV;
            let tiles: Vec<Vec<f32>> = att_tasks
                .par_iter()
                .map(|(s, kh, idx, sl)| {
                    let qs: Vec<&[f32]> = idx
                        .iter()
                        .map(|&i| &q[i * d + kh * gq..i * d + (kh + 1) * gq])
                        .collect();
                    attend_tile(c, li, &caches_ro[*s], *kh, sl, &qs, lane_sum)
                })
                .collect();
            for ((_, kh, idx, _), t) in att_tasks.iter().zip(&tiles) {
                for (&i, o) in idx.iter().zip(t.chunks_exact(gq)) {
                    att[i * d + kh * gq..i * d + (kh + 1) * gq].copy_from_slice(o);
                }
            }
            l.wo.apply(&self.input(&att, n, d), n, d, d, &mut o);
            for (xv, ov) in x.iter_mut().zip(&o) {
                *xv += *ov;
            }
            rms_norm(&x, &l.ffn_norm, c.norm_eps, &mut h);
            let inp = self.input(&h, n, d);
            Mat::apply_many(
                &inp,
                n,
                d,
                &mut [(&l.w_gate, c.ffn_dim, &mut g), (&l.w_up, c.ffn_dim, &mut u)],
            );
            for (gv, uv) in g.iter_mut().zip(&u) {
                *gv = silu(*gv) * *uv;
            }
            l.w_down
                .apply(&self.input(&g, n, c.ffn_dim), n, d, c.ffn_dim, &mut o);
            for (xv, ov) in x.iter_mut().zip(&o) {
                *xv += *ov;
            }
        }
        for (r, &slot) in rows.iter().zip(&slots) {
            caches[r.stream].len = slot + 1;
        }
        let mut xs = Vec::with_capacity(want.len() * d);
        for &i in want {
            xs.extend_from_slice(&x[i * d..(i + 1) * d]);
        }
        let m = want.len();
        rms_norm(&xs, &self.out_norm, c.norm_eps, &mut h[..m * d]);
        let w_out = self.output.as_ref().unwrap_or(&self.embed);
        w_out.apply(&self.input(&h[..m * d], m, d), m, c.vocab, d, logits);
        Ok(())
    }

    /// Prepares a matmul input: quantized once per activation for backend 2.
    fn input<'a>(&self, x: &'a [f32], rows: usize, k: usize) -> Input<'a> {
        let q = (self.backend != BACKEND_F32_FIXED).then(|| QAct::new(x, rows, k));
        Input { x, q }
    }
}

fn check_backend(backend: u16) -> Result<()> {
    if ![BACKEND_F32_FIXED, BACKEND_INT8_EXACT, BACKEND_INT8_F16KV].contains(&backend) {
        return Err(Error::unsupported(
            "numeric backend",
            format!("{backend} ({})", backend_name(backend)),
            "1 (f32-fixed-order), 2 (int8-exact), 3 (int8-exact with a 16-bit KV cache)",
        ));
    }
    Ok(())
}

/// A weight's values as f32, checked against the expected shape.
fn weight_f32(w: Weight, name: &str, want: &[usize]) -> Result<Vec<f32>> {
    match load_mat(w, name, want, false)? {
        Mat::F32(v) => Ok(v),
        Mat::Q(_) => Err(Error::internal("dequantized load gave blocks")),
    }
}

/// One weight in the backend's representation: f32 values (backend 1, and norm vectors),
/// or integer blocks (backend 2 matrices; dense sources quantized by the F32 rule).
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
                    "matrix shape for backend 2 (int8-exact)",
                    format!("{want:?}"),
                    "rows whose length is a multiple of 32",
                ))
            }
        };
        return Ok(Mat::Q(QMat::from_f32_q8(&v, n_out, k)));
    }
    Ok(Mat::F32(v))
}

/// y = x / sqrt(mean(x²) + eps) · w, row by row.
fn rms_norm(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let d = w.len();
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let scale = 1.0 / (sum_sq(xr) / d as f32 + eps).sqrt();
        for ((yv, xv), wv) in yr.iter_mut().zip(xr).zip(w) {
            *yv = (*xv * scale) * *wv;
        }
    }
}

/// Rotates adjacent pairs (GGUF's llama weights are permuted for this layout).
fn rope(x: &mut [f32], table: &[(f32, f32)]) {
    for (pair, &(cos, sin)) in x.chunks_exact_mut(2).zip(table) {
        let (a, b) = (pair[0], pair[1]);
        pair[0] = a * cos - b * sin;
        pair[1] = a * sin + b * cos;
    }
}

/// Cached positions per chunk: a chunk's keys (or values) are read from memory once and
/// used by every query of the tile — all rows and all heads of the group — while they sit in
/// L1 (64 positions × 64 dims × 4 bytes = 16 KB).
const ATT_CHUNK: usize = 64;

/// Rows of one stream per attention task: their scores (16 rows × 3 heads × 1,024
/// positions × 4 bytes = 192 KB) stay in L2, and each cached chunk serves all of them.
pub(crate) const ATT_ROWS: usize = 16;

/// Per-thread scratch of the attention: scores (then weights) per row and head, and the
/// f32 form of a chunk of a half cache for the portable path.
#[derive(Default)]
struct AttScratch {
    scores: Vec<f32>,
    keys: Vec<f32>,
    vals: Vec<f32>,
}

/// Causal attention of some rows of one stream (cache slots `slots`, increasing) for one
/// key/value head `kh` and its query heads; returns `rows × group × hd` outputs.
///
/// Definition (what the archive's bits depend on), per row and query head, over the row's
/// slots 0..=slot: `s[p] = dot(q, k[p]) · 1/√hd` in the lane order of [`dot`];
/// `m = max s`; `e[p] = exp_f32(s[p] − m)`; `sum = e[0] + e[1] + …` in position order
/// (backend 3, `lane_sum`: in the 8-lane order of [`sum_lanes`]); `w[p] = e[p] · (1/sum)`;
/// then every output element is accumulated from 0 in position order, `out += w[p] · v[p]`.
/// Cached keys and values are the f32 values stored, or for backend 3 the exact f32 values
/// of the stored halves.
///
/// How the work is ordered does not change a bit of that: positions are taken in chunks,
/// and each chunk serves every row and head of the tile while it is in L1 (an output's
/// accumulation carries over from one chunk to the next in position order). The AVX2 build
/// uses the same per-lane operations (tested bit for bit against the portable loops).
fn attend_tile(
    c: &LlamaConfig,
    layer: usize,
    cache: &KvCache,
    kh: usize,
    slots: &[usize],
    qs: &[&[f32]],
    lane_sum: bool,
) -> Vec<f32> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<AttScratch> = std::cell::RefCell::default();
    }
    let group = c.n_heads / c.n_kv_heads;
    let mut out = vec![0f32; slots.len() * group * c.head_dim];
    SCRATCH.with(|buf| {
        let mut buf = buf.borrow_mut();
        #[cfg(target_arch = "x86_64")]
        {
            if half::has_f16c() {
                // SAFETY: AVX2 and F16C are present (checked just above).
                unsafe {
                    attend_avx2(c, layer, cache, kh, slots, qs, lane_sum, &mut out, &mut buf)
                };
                return;
            }
        }
        attend_body::<false>(c, layer, cache, kh, slots, qs, lane_sum, &mut out, &mut buf);
    });
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_avx2(
    c: &LlamaConfig,
    layer: usize,
    cache: &KvCache,
    kh: usize,
    slots: &[usize],
    qs: &[&[f32]],
    lane_sum: bool,
    out: &mut [f32],
    buf: &mut AttScratch,
) {
    attend_body::<true>(c, layer, cache, kh, slots, qs, lane_sum, out, buf)
}

/// `AVX2`: use the [`attn_simd`] kernels (only from a function with AVX2 and F16C enabled).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_body<const AVX2: bool>(
    c: &LlamaConfig,
    layer: usize,
    cache: &KvCache,
    kh: usize,
    slots: &[usize],
    qs: &[&[f32]],
    lane_sum: bool,
    out: &mut [f32],
    buf: &mut AttScratch,
) {
    let hd = c.head_dim;
    let group = c.n_heads / c.n_kv_heads;
    let rows = slots.len();
    let Some(&last) = slots.last() else {
        return;
    };
    let nmax = last + 1;
    let scale = 1.0 / (hd as f32).sqrt();
    let AttScratch {
        scores,
        keys: kbuf,
        vals: vbuf,
    } = buf;
    // Row i, head j: scores at (i·group + j)·nmax + p.
    let need = rows * group * nmax;
    if scores.len() < need {
        scores.resize(need, 0.0);
    }
    let base = (layer * c.n_kv_heads + kh) * cache.capacity * hd;
    for p0 in (0..nmax).step_by(ATT_CHUNK) {
        let p1 = (p0 + ATT_CHUNK).min(nmax);
        let keys = if AVX2 {
            &[][..]
        } else {
            cache.k.rows(base + p0 * hd..base + p1 * hd, kbuf)
        };
        for (i, (&slot, q)) in slots.iter().zip(qs).enumerate() {
            if slot < p0 {
                continue;
            }
            let m = (slot + 1).min(p1) - p0;
            let sc = i * group * nmax + p0;
            #[cfg(target_arch = "x86_64")]
            if AVX2 {
                // SAFETY: AVX2 and F16C are present (AVX2 is only true when called from
                // `attend_avx2`); `q` holds `group × hd` values, the cache `m` rows from
                // `base + p0·hd`, and scores has room for `group` rows of `nmax` from `sc`.
                unsafe {
                    scores_avx2(
                        &cache.k,
                        base + p0 * hd,
                        q,
                        group,
                        m,
                        hd,
                        scale,
                        scores.as_mut_ptr().add(sc),
                        nmax,
                    )
                };
                continue;
            }
            for (j, qh) in q.chunks_exact(hd).enumerate() {
                let o = &mut scores[sc + j * nmax..sc + j * nmax + m];
                for (s, kp) in o.iter_mut().zip(keys.chunks_exact(hd)) {
                    *s = dot(qh, kp) * scale;
                }
            }
        }
    }
    for (i, &slot) in slots.iter().enumerate() {
        for j in 0..group {
            let at = (i * group + j) * nmax;
            let sc = &mut scores[at..at + slot + 1];
            // The maximum is exact in any order (a zero's sign cannot change s − max).
            let max = max_f32(sc);
            for s in sc.iter_mut() {
                *s = exp_f32(*s - max);
            }
            let sum = if lane_sum {
                sum_lanes(sc)
            } else {
                let mut sum = 0f32;
                for s in sc.iter() {
                    sum += *s;
                }
                sum
            };
            let inv = 1.0 / sum;
            for s in sc.iter_mut() {
                *s *= inv;
            }
        }
    }
    for p0 in (0..nmax).step_by(ATT_CHUNK) {
        let p1 = (p0 + ATT_CHUNK).min(nmax);
        let vals = if AVX2 {
            &[][..]
        } else {
            cache.v.rows(base + p0 * hd..base + p1 * hd, vbuf)
        };
        for (i, &slot) in slots.iter().enumerate() {
            if slot < p0 {
                continue;
            }
            let m = (slot + 1).min(p1) - p0;
            let w = i * group * nmax + p0;
            let o = &mut out[i * group * hd..(i + 1) * group * hd];
            #[cfg(target_arch = "x86_64")]
            if AVX2 {
                // SAFETY: as above; the weights hold `group` rows of `nmax` from `w`, and
                // `o` holds `group × hd` outputs.
                unsafe {
                    wsum_avx2(
                        &cache.v,
                        base + p0 * hd,
                        scores.as_ptr().add(w),
                        nmax,
                        group,
                        m,
                        hd,
                        o,
                    )
                };
                continue;
            }
            for (j, oh) in o.chunks_exact_mut(hd).enumerate() {
                let wj = &scores[w + j * nmax..w + j * nmax + m];
                for (&wgt, vp) in wj.iter().zip(vals.chunks_exact(hd)) {
                    for (ov, vv) in oh.iter_mut().zip(vp) {
                        *ov += wgt * *vv;
                    }
                }
            }
        }
    }
}

/// Query heads per score tile: 2 × 4 accumulators, 4 keys and a query fit AVX2's 16
/// registers (three heads spill).
const SCORE_HEADS: usize = 2;

/// Scores of all `group` query heads of one key/value head over `n` cached keys from
/// element `at`, by [`attn_simd::scores_tile`] in tiles of up to two heads; head `j`'s
/// scores go to `out + j · ostride`.
///
/// # Safety
/// AVX2 and F16C must be available; `qs` holds `group × hd` values; `cache` holds `n`
/// rows from `at`; `out` is valid for the writes described.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn scores_avx2(
    cache: &KvBuf,
    at: usize,
    qs: &[f32],
    group: usize,
    n: usize,
    hd: usize,
    scale: f32,
    out: *mut f32,
    ostride: usize,
) {
    use attn_simd::scores_tile;
    let mut j = 0;
    while j < group {
        let g = (group - j).min(SCORE_HEADS);
        let q = qs.as_ptr().add(j * hd);
        let o = out.add(j * ostride);
        let (k, half): (*const u8, bool) = match cache {
            KvBuf::F32(b) => (b.as_ptr().add(at) as _, false),
            KvBuf::F16(b) => (b.as_ptr().add(at) as _, true),
        };
        match (half, g) {
            (false, 3) => scores_tile::<3, false>(q, k, n, hd, scale, o, ostride),
            (false, 2) => scores_tile::<2, false>(q, k, n, hd, scale, o, ostride),
            (false, _) => scores_tile::<1, false>(q, k, n, hd, scale, o, ostride),
            (true, 3) => scores_tile::<3, true>(q, k, n, hd, scale, o, ostride),
            (true, 2) => scores_tile::<2, true>(q, k, n, hd, scale, o, ostride),
            (true, _) => scores_tile::<1, true>(q, k, n, hd, scale, o, ostride),
        }
        j += g;
    }
}

/// `out[j] += Σ_p w[j · wstride + p] · v[p]` for all `group` heads of one key/value head,
/// over `n` cached values from element `at`, by [`attn_simd::wsum_tile`] in tiles of up
/// to two heads.
///
/// # Safety
/// AVX2 and F16C must be available; `w` is valid for the reads described; `cache` holds
/// `n` rows from `at`; `out` holds `group × hd` values.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn wsum_avx2(
    cache: &KvBuf,
    at: usize,
    w: *const f32,
    wstride: usize,
    group: usize,
    n: usize,
    hd: usize,
    out: &mut [f32],
) {
    use attn_simd::wsum_tile;
    let mut j = 0;
    while j < group {
        let g = (group - j).min(2);
        let (wj, o) = (w.add(j * wstride), out.as_mut_ptr().add(j * hd));
        let (v, half): (*const u8, bool) = match cache {
            KvBuf::F32(b) => (b.as_ptr().add(at) as _, false),
            KvBuf::F16(b) => (b.as_ptr().add(at) as _, true),
        };
        match (half, g) {
            (false, 2) => wsum_tile::<2, false>(wj, wstride, n, v, hd, o),
            (false, _) => wsum_tile::<1, false>(wj, wstride, n, v, hd, o),
            (true, 2) => wsum_tile::<2, true>(wj, wstride, n, v, hd, o),
            (true, _) => wsum_tile::<1, true>(wj, wstride, n, v, hd, o),
        }
        j += g;
    }
}

/// AVX2 forms of the attention's two loops, element for element the same operations as
/// the portable loops in `attend_body` (tested bit-for-bit against them).
#[cfg(target_arch = "x86_64")]
mod attn_simd {
    use crate::engine::math::LANES;
    use std::arch::x86_64::*;

    /// Scores of `G` query heads (`qs`, `G × hd` consecutive) against `n` cached keys
    /// (`keys`: `n × hd` f32, or IEEE halves when `HALF`), written to `out[j · ostride + p]`.
    ///
    /// Four keys at a time: their 8-lane accumulators are reduced together by `vhaddps`,
    /// which forms exactly the pairs of `math::hsum`, `((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7))`
    /// (IEEE addition commutes). Each key vector is loaded (and converted, exactly) once for
    /// all `G` heads, and the `4·G` independent accumulation chains keep the adders busy.
    /// The last keys of a row that does not fill a group of four repeat the last key in the
    /// spare lanes, whose results are dropped: every key's result depends on its own lanes
    /// only, so it is the same as in a full group.
    ///
    /// # Safety
    /// AVX2 (and F16C when `HALF`) must be available; `qs`, `keys` and `out` must be valid
    /// for the sizes given.
    #[inline(always)]
    pub unsafe fn scores_tile<const G: usize, const HALF: bool>(
        qs: *const f32,
        keys: *const u8,
        n: usize,
        hd: usize,
        scale: f32,
        out: *mut f32,
        ostride: usize,
    ) {
        let sv = _mm_set1_ps(scale);
        let mut p = 0;
        while p < n {
            let kr: [usize; 4] = std::array::from_fn(|i| (p + i).min(n - 1) * hd);
            let mut a = [[_mm256_setzero_ps(); 4]; G];
            for c in (0..hd).step_by(LANES) {
                let kv: [__m256; 4] = std::array::from_fn(|i| load8::<HALF>(keys, kr[i] + c));
                for (j, aj) in a.iter_mut().enumerate() {
                    let qv = _mm256_loadu_ps(qs.add(j * hd + c));
                    for i in 0..4 {
                        aj[i] = _mm256_add_ps(aj[i], _mm256_mul_ps(qv, kv[i]));
                    }
                }
            }
            let m = (n - p).min(4);
            for (j, aj) in a.iter().enumerate() {
                let h = _mm256_hadd_ps(_mm256_hadd_ps(aj[0], aj[1]), _mm256_hadd_ps(aj[2], aj[3]));
                let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
                let s = _mm_mul_ps(s, sv);
                let o = out.add(j * ostride + p);
                if m == 4 {
                    _mm_storeu_ps(o, s);
                } else {
                    let mut tmp = [0f32; 4];
                    _mm_storeu_ps(tmp.as_mut_ptr(), s);
                    std::ptr::copy_nonoverlapping(tmp.as_ptr(), o, m);
                }
            }
            p += 4;
        }
    }

    /// `out[j · hd + e] += Σ_p w[j · wstride + p] · vals[p][e]` for `G` heads, accumulated onto
    /// `out` in position order per element (the definition's order). The head dimension is
    /// covered in passes of up to 32 elements; within a pass each value vector is loaded (and
    /// converted, exactly) once for all `G` heads.
    ///
    /// # Safety
    /// AVX2 (and F16C when `HALF`) must be available; `hd` a multiple of 8; `w` valid for
    /// `G × n`, `vals` for `n × hd`, `out` for `G × hd` elements.
    #[inline(always)]
    pub unsafe fn wsum_tile<const G: usize, const HALF: bool>(
        w: *const f32,
        wstride: usize,
        n: usize,
        vals: *const u8,
        hd: usize,
        out: *mut f32,
    ) {
        let mut e0 = 0;
        while e0 < hd {
            let m = ((hd - e0) / LANES).min(4);
            match m {
                4 => wsum_pass::<G, HALF, 4>(w, wstride, n, vals, hd, out, e0),
                3 => wsum_pass::<G, HALF, 3>(w, wstride, n, vals, hd, out, e0),
                2 => wsum_pass::<G, HALF, 2>(w, wstride, n, vals, hd, out, e0),
                _ => wsum_pass::<G, HALF, 1>(w, wstride, n, vals, hd, out, e0),
            }
            e0 += m * LANES;
        }
    }

    #[inline(always)]
    unsafe fn wsum_pass<const G: usize, const HALF: bool, const M: usize>(
        w: *const f32,
        wstride: usize,
        n: usize,
        vals: *const u8,
        hd: usize,
        out: *mut f32,
        e0: usize,
    ) {
        let mut acc: [[__m256; M]; G] = std::array::from_fn(|j| {
            std::array::from_fn(|r| _mm256_loadu_ps(out.add(j * hd + e0 + r * LANES)))
        });
        for p in 0..n {
            let v: [__m256; M] =
                std::array::from_fn(|r| load8::<HALF>(vals, p * hd + e0 + r * LANES));
            for (j, aj) in acc.iter_mut().enumerate() {
                let wt = _mm256_broadcast_ss(&*w.add(j * wstride + p));
                for r in 0..M {
                    aj[r] = _mm256_add_ps(aj[r], _mm256_mul_ps(wt, v[r]));
                }
            }
        }
        for (j, aj) in acc.iter().enumerate() {
            for (r, a) in aj.iter().enumerate() {
                _mm256_storeu_ps(out.add(j * hd + e0 + r * LANES), *a);
            }
        }
    }

    /// Eight cached values from element `i` of a key/value buffer: f32 as stored, or halves
    /// widened exactly by `vcvtph2ps`.
    #[inline(always)]
    pub unsafe fn load8<const HALF: bool>(base: *const u8, i: usize) -> __m256 {
        if HALF {
            _mm256_cvtph_ps(_mm_loadu_si128(
                (base as *const u16).add(i) as *const __m128i
            ))
        } else {
            _mm256_loadu_ps((base as *const f32).add(i))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5) * 4.0
    }

    /// An attention-only model shape and a full cache of `cap` positions holding `k` and
    /// `v` (`layers × kv_heads × cap × hd` values each, stored by the backend's rule).
    pub(super) fn attention_fixture(
        half: bool,
        (layers, kvh, group, hd, cap): (usize, usize, usize, usize, usize),
        k: &[f32],
        v: &[f32],
    ) -> (LlamaConfig, KvCache) {
        let cfg = LlamaConfig {
            n_layers: layers,
            dim: group * kvh * hd,
            ffn_dim: 8,
            n_heads: group * kvh,
            n_kv_heads: kvh,
            head_dim: hd,
            vocab: 8,
            rope_theta: 10000.0,
            norm_eps: 1e-5,
            context_length: cap,
        };
        let len = layers * kvh * cap * hd;
        let mut cache = KvCache {
            k: KvBuf::new(half, len),
            v: KvBuf::new(half, len),
            sink_k: Vec::new(),
            capacity: cap,
            len: cap,
            offset: 0,
        };
        cache.k.put(0, k);
        cache.v.put(0, v);
        (cfg, cache)
    }

    /// The AVX2 attention gives the portable loops' bits: f32 and half caches, one to five
    /// query heads per key/value head (tiles of three and their remainders), head sizes on
    /// and off the 32-element passes, key counts around the groups of four and the chunks.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn attention_avx2_matches_portable_bit_for_bit() {
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("f16c"))
        {
            return;
        }
        let mut seed = 5u64;
        for half in [false, true] {
            for (group, hd) in [(1usize, 8usize), (2, 24), (3, 64), (4, 40), (5, 136)] {
                let (kvh, cap) = (2, 140);
                let len = 2 * kvh * cap * hd;
                let kv: Vec<f32> = (0..len).map(|_| lcg(&mut seed)).collect();
                let vv: Vec<f32> = (0..len).map(|_| lcg(&mut seed)).collect();
                let (cfg, cache) = attention_fixture(half, (2, kvh, group, hd, cap), &kv, &vv);
                let tiles: [&[usize]; 6] = [
                    &[0],
                    &[3],
                    &[64],
                    &[130],
                    &[2, 3, 4, 6],
                    &[62, 63, 64, 65, 66, 129, 130],
                ];
                for slots in tiles {
                    let qs: Vec<Vec<f32>> = slots
                        .iter()
                        .map(|_| (0..group * hd).map(|_| lcg(&mut seed)).collect())
                        .collect();
                    let qr: Vec<&[f32]> = qs.iter().map(|v| v.as_slice()).collect();
                    for kh in 0..kvh {
                        let mut want = vec![0f32; slots.len() * group * hd];
                        let mut buf = AttScratch::default();
                        attend_body::<false>(
                            &cfg, 1, &cache, kh, slots, &qr, half, &mut want, &mut buf,
                        );
                        let mut got = vec![0f32; want.len()];
                        let mut buf = AttScratch::default();
                        unsafe {
                            attend_avx2(&cfg, 1, &cache, kh, slots, &qr, half, &mut got, &mut buf)
                        };
                        assert_eq!(
                            got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                            want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                            "half {half} group {group} hd {hd} slots {slots:?}"
                        );
                        // A row's result does not depend on the other rows of its tile.
                        let one = attend_tile(&cfg, 1, &cache, kh, &slots[..1], &qr[..1], half);
                        assert_eq!(one, want[..group * hd]);
                    }
                }
            }
        }
    }

    /// The portable scores and weighted sums are the definition's: `dot` per key, then
    /// position-ordered accumulation of the rounded weights (checked on one head here).
    #[test]
    fn attention_portable_follows_the_definition() {
        let mut seed = 9u64;
        let (hd, n) = (16usize, 5usize);
        let kv: Vec<f32> = (0..n * hd).map(|_| lcg(&mut seed)).collect();
        let vv: Vec<f32> = (0..n * hd).map(|_| lcg(&mut seed)).collect();
        let (cfg, cache) = attention_fixture(false, (1, 1, 1, hd, n), &kv, &vv);
        let q: Vec<f32> = (0..hd).map(|_| lcg(&mut seed)).collect();
        let scale = 1.0 / (hd as f32).sqrt();
        let s: Vec<f32> = kv.chunks_exact(hd).map(|k| dot(&q, k) * scale).collect();
        let m = s.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let e: Vec<f32> = s.iter().map(|&x| exp_f32(x - m)).collect();
        let mut sum = 0f32;
        for &x in &e {
            sum += x;
        }
        let inv = 1.0 / sum;
        let mut want = vec![0f32; hd];
        for (p, vp) in vv.chunks_exact(hd).enumerate() {
            let w = e[p] * inv;
            for (o, v) in want.iter_mut().zip(vp) {
                *o += w * *v;
            }
        }
        let mut got = vec![0f32; hd];
        let mut buf = AttScratch::default();
        attend_body::<false>(
            &cfg,
            0,
            &cache,
            0,
            &[n - 1],
            &[&q],
            false,
            &mut got,
            &mut buf,
        );
        assert_eq!(got, want);
    }
}

#[cfg(test)]
mod att_speed {
    use super::*;

    /// Prints the time of one row's attention over 1,000 cached positions (SmolLM2's
    /// shape: 3 key/value heads of 64, 3 query heads each, 30 layers): a probe for kernel
    /// work, not a test. `cargo test --release --lib att_speed -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing probe"]
    fn att_speed() {
        for half in [false, true] {
            let (kvh, group, hd, cap, layers) = (3usize, 3usize, 64usize, 1024usize, 30usize);
            let len = layers * kvh * cap * hd;
            let data: Vec<f32> = (0..len)
                .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            let (cfg, cache) =
                super::tests::attention_fixture(half, (layers, kvh, group, hd, cap), &data, &data);
            let q: Vec<f32> = (0..group * hd).map(|i| (i % 13) as f32 / 13.0).collect();
            for rows in [1usize, 16] {
                let slots: Vec<usize> = (1000 - rows..1000).collect();
                let qs: Vec<&[f32]> = slots.iter().map(|_| q.as_slice()).collect();
                let mut times = Vec::new();
                for _ in 0..5 {
                    let t = std::time::Instant::now();
                    for l in 0..layers {
                        for kh in 0..kvh {
                            std::hint::black_box(attend_tile(
                                &cfg, l, &cache, kh, &slots, &qs, half,
                            ));
                        }
                    }
                    times.push(t.elapsed().as_secs_f64() * 1e3 / rows as f64);
                }
                times.sort_by(f64::total_cmp);
                println!(
                    "half {half}, {rows} rows per tile: {:.3} ms per row (30 layers, ~1000 positions)",
                    times[2]
                );
            }
        }
    }
}
