//! The llama-architecture forward pass, written out op by op in a fixed order.
//!
//! Weights come from a GGUF file through candle and are held as f32 (the exact values the
//! quantized blocks stand for). Each row of a call is one (stream, token, position); a row's
//! result depends only on that row and its stream's cache, so the encoder may score many
//! known positions per call while the decoder goes one token at a time, and both get the
//! same bits.

use super::int8::{qmatmul, QAct, QMat};
use super::kernels::matmul;
use super::math::{dot, exp_f32, exp_f64, ln_f64, silu, sin_cos_f64, sum_sq, LANES};
use super::{backend_name, BACKEND_F32_FIXED, BACKEND_INT8_EXACT};
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

/// One stream's key/value cache: `[layer][kv_head][slot][head_dim]`, preallocated.
///
/// Slot `s` holds the token at RoPE position `offset + s`: positions are contiguous, and
/// [`KvCache::slide`] keeps them so by moving the newest entries down and re-rotating the
/// first (the start token, an attention sink) to the position just before them.
pub struct KvCache {
    k: Vec<f32>,
    v: Vec<f32>,
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
    /// quantized to Q8_0-style blocks at load; other types refused). Norm vectors stay f32
    /// in both.
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
        let quant = backend == BACKEND_INT8_EXACT;
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
        KvCache {
            k: vec![0.0; n],
            v: vec![0.0; n],
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
        for lh in 0..c.n_layers * c.n_kv_heads {
            let at = lh * cache.capacity * hd;
            let dst = &mut cache.k[at..at + hd];
            dst.copy_from_slice(&cache.sink_k[lh * hd..(lh + 1) * hd]);
            rope(dst, &table);
        }
        cache.len = keep;
        Ok(())
    }

    /// Bytes one cache of `capacity` positions takes (for memory planning).
    pub fn cache_bytes(&self, capacity: usize) -> usize {
        2 * 4 * self.cfg.n_layers * self.cfg.n_kv_heads * capacity * self.cfg.head_dim
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
        let mut u = vec![0f32; n * c.ffn_dim];
        for (li, l) in self.layers.iter().enumerate() {
            rms_norm(&x, &l.attn_norm, c.norm_eps, &mut h);
            let inp = self.input(&h, n, d);
            l.wq.apply(&inp, n, d, d, &mut q);
            l.wk.apply(&inp, n, kvd, d, &mut k);
            l.wv.apply(&inp, n, kvd, d, &mut v);
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
                    cache.k[at..at + hd]
                        .copy_from_slice(&k[i * kvd + kh * hd..i * kvd + (kh + 1) * hd]);
                    cache.v[at..at + hd]
                        .copy_from_slice(&v[i * kvd + kh * hd..i * kvd + (kh + 1) * hd]);
                }
            }
            let caches_ro: &[KvCache] = caches;
            att.par_chunks_mut(d)
                .zip(q.par_chunks(d))
                .zip(rows.par_iter().zip(slots.par_iter()))
                .for_each(|((out, qr), (r, &slot))| {
                    attend(c, li, &caches_ro[r.stream], slot, qr, out);
                });
            l.wo.apply(&self.input(&att, n, d), n, d, d, &mut o);
            for (xv, ov) in x.iter_mut().zip(&o) {
                *xv += *ov;
            }
            rms_norm(&x, &l.ffn_norm, c.norm_eps, &mut h);
            let inp = self.input(&h, n, d);
            l.w_gate.apply(&inp, n, c.ffn_dim, d, &mut g);
            l.w_up.apply(&inp, n, c.ffn_dim, d, &mut u);
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
        let q = (self.backend == BACKEND_INT8_EXACT).then(|| QAct::new(x, rows, k));
        Input { x, q }
    }
}

fn check_backend(backend: u16) -> Result<()> {
    if backend != BACKEND_F32_FIXED && backend != BACKEND_INT8_EXACT {
        return Err(Error::unsupported(
            "numeric backend",
            format!("{backend} ({})", backend_name(backend)),
            "1 (f32-fixed-order), 2 (int8-exact)",
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

/// Causal attention of one row over its stream's cache slots 0..=pos, all heads.
///
/// Definition (what the archive's bits depend on), per query head: `s[p] = dot(q, k[p]) ·
/// 1/√hd` in the lane order of [`dot`]; `m = max s`; `e[p] = exp_f32(s[p] − m)`;
/// `sum = e[0] + e[1] + …` in position order; then every output element is accumulated in
/// position order, `out += (e[p] · (1/sum)) · v[p]`. The query heads that share a key/value
/// head are computed together so each cached row is read once; the AVX2 build is the same
/// source with wider registers (lane-wise operations only, so identical bits).
fn attend(c: &LlamaConfig, layer: usize, cache: &KvCache, pos: usize, q: &[f32], out: &mut [f32]) {
    thread_local! {
        static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCORES.with(|buf| {
        let mut buf = buf.borrow_mut();
        let group = c.n_heads / c.n_kv_heads;
        // Scores of every head of a group, then one 1/sum per head.
        let need = group * (pos + 2);
        if buf.len() < need {
            buf.resize(need, 0.0);
        }
        #[cfg(target_arch = "x86_64")]
        {
            if super::kernels::use_avx2() {
                // SAFETY: AVX2 is present (checked just above).
                unsafe { attend_avx2(c, layer, cache, pos, q, out, &mut buf[..need]) };
                return;
            }
        }
        attend_body::<false>(c, layer, cache, pos, q, out, &mut buf[..need]);
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn attend_avx2(
    c: &LlamaConfig,
    layer: usize,
    cache: &KvCache,
    pos: usize,
    q: &[f32],
    out: &mut [f32],
    scores: &mut [f32],
) {
    attend_body::<true>(c, layer, cache, pos, q, out, scores)
}

/// `AVX2`: use [`super::math::dot_avx2`] (only from a function with AVX2 enabled).
#[inline(always)]
fn attend_body<const AVX2: bool>(
    c: &LlamaConfig,
    layer: usize,
    cache: &KvCache,
    pos: usize,
    q: &[f32],
    out: &mut [f32],
    scores: &mut [f32],
) {
    let hd = c.head_dim;
    let group = c.n_heads / c.n_kv_heads;
    let n = pos + 1;
    let scale = 1.0 / (hd as f32).sqrt();
    let (scores, inv) = scores.split_at_mut(group * n);
    for kh in 0..c.n_kv_heads {
        let base = (layer * c.n_kv_heads + kh) * cache.capacity * hd;
        let keys = &cache.k[base..base + n * hd];
        let vals = &cache.v[base..base + n * hd];
        let qs = &q[kh * group * hd..(kh + 1) * group * hd];
        #[cfg(target_arch = "x86_64")]
        if AVX2 {
            for (j, qh) in qs.chunks_exact(hd).enumerate() {
                // SAFETY: AVX2 is only true when called from `attend_avx2`.
                unsafe { attn_simd::scores(qh, keys, scale, &mut scores[j * n..(j + 1) * n]) };
            }
        }
        if !AVX2 {
            for (p, kp) in keys.chunks_exact(hd).enumerate() {
                for (j, qh) in qs.chunks_exact(hd).enumerate() {
                    scores[j * n + p] = dot(qh, kp) * scale;
                }
            }
        }
        for (j, sc) in scores.chunks_exact_mut(n).enumerate() {
            let mut max = f32::NEG_INFINITY;
            for s in sc.iter() {
                max = max.max(*s);
            }
            for s in sc.iter_mut() {
                *s = exp_f32(*s - max);
            }
            let mut sum = 0f32;
            for s in sc.iter() {
                sum += *s;
            }
            inv[j] = 1.0 / sum;
        }
        let outs = &mut out[kh * group * hd..(kh + 1) * group * hd];
        #[cfg(target_arch = "x86_64")]
        if AVX2 {
            for (j, oh) in outs.chunks_exact_mut(hd).enumerate() {
                // SAFETY: as above.
                unsafe { attn_simd::weighted_sum(&scores[j * n..(j + 1) * n], inv[j], vals, oh) };
            }
            continue;
        }
        outs.fill(0.0);
        for (p, vp) in vals.chunks_exact(hd).enumerate() {
            for (j, oh) in outs.chunks_exact_mut(hd).enumerate() {
                let wgt = scores[j * n + p] * inv[j];
                for (ov, vv) in oh.iter_mut().zip(vp) {
                    *ov += wgt * *vv;
                }
            }
        }
    }
}

/// AVX2 forms of the attention's two loops, element for element the same operations as
/// the portable loops in `attend_body` (tested bit-for-bit against them).
#[cfg(target_arch = "x86_64")]
mod attn_simd {
    use crate::engine::math::{dot_avx2, LANES};
    use std::arch::x86_64::*;

    /// `out[p] = dot(q, keys[p]) · scale` for every key row. Four keys at a time: their
    /// 8-lane accumulators are reduced together by `vhaddps`, which forms exactly the pairs
    /// of `math::hsum`, `((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7))` (IEEE addition commutes).
    ///
    /// # Safety
    /// AVX2 must be available.
    #[target_feature(enable = "avx2")]
    pub unsafe fn scores(q: &[f32], keys: &[f32], scale: f32, out: &mut [f32]) {
        let hd = q.len();
        assert!(hd % LANES == 0 && keys.len() == out.len() * hd);
        let n = out.len();
        let (qp, kp) = (q.as_ptr(), keys.as_ptr());
        let sv = _mm_set1_ps(scale);
        let mut p = 0;
        while p + 4 <= n {
            let mut a = [_mm256_setzero_ps(); 4];
            for c in (0..hd).step_by(LANES) {
                let qv = _mm256_loadu_ps(qp.add(c));
                for (i, ai) in a.iter_mut().enumerate() {
                    let kv = _mm256_loadu_ps(kp.add((p + i) * hd + c));
                    *ai = _mm256_add_ps(*ai, _mm256_mul_ps(qv, kv));
                }
            }
            let h = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
            let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
            _mm_storeu_ps(out.as_mut_ptr().add(p), _mm_mul_ps(s, sv));
            p += 4;
        }
        for (pp, o) in out.iter_mut().enumerate().skip(p) {
            *o = dot_avx2(q, &keys[pp * hd..(pp + 1) * hd]) * scale;
        }
    }

    /// `out = Σ_p (w[p] · inv) · vals[p]`, accumulated from +0 in position order per
    /// element, with up to 64 output elements held in registers across all positions.
    ///
    /// # Safety
    /// AVX2 must be available.
    #[target_feature(enable = "avx2")]
    pub unsafe fn weighted_sum(w: &[f32], inv: f32, vals: &[f32], out: &mut [f32]) {
        let hd = out.len();
        assert!(hd % LANES == 0 && vals.len() == w.len() * hd);
        let mut e0 = 0;
        while e0 < hd {
            match (hd - e0) / LANES {
                1 => chunk::<1>(w, inv, vals, out, e0),
                2 => chunk::<2>(w, inv, vals, out, e0),
                3 => chunk::<3>(w, inv, vals, out, e0),
                4 => chunk::<4>(w, inv, vals, out, e0),
                5 => chunk::<5>(w, inv, vals, out, e0),
                6 => chunk::<6>(w, inv, vals, out, e0),
                7 => chunk::<7>(w, inv, vals, out, e0),
                _ => chunk::<8>(w, inv, vals, out, e0),
            }
            e0 += 8 * LANES;
        }
    }

    #[inline(always)]
    unsafe fn chunk<const M: usize>(w: &[f32], inv: f32, vals: &[f32], out: &mut [f32], e0: usize) {
        let hd = out.len();
        let vp = vals.as_ptr().add(e0);
        let mut acc = [_mm256_setzero_ps(); M];
        for (p, &wp) in w.iter().enumerate() {
            let wt = _mm256_set1_ps(wp * inv);
            for (r, a) in acc.iter_mut().enumerate() {
                let v = _mm256_loadu_ps(vp.add(p * hd + r * LANES));
                *a = _mm256_add_ps(*a, _mm256_mul_ps(wt, v));
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(e0 + r * LANES), *a);
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

    /// The AVX2 attention loops give the portable loops' bits (scores and weighted sums,
    /// every key count around the 4-key blocks, head sizes on and off the 64-register tile).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn attention_avx2_matches_portable_bit_for_bit() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let mut seed = 5u64;
        for hd in [8usize, 24, 64, 128, 136] {
            for n in [1usize, 3, 4, 5, 8, 13] {
                let q: Vec<f32> = (0..hd).map(|_| lcg(&mut seed)).collect();
                let keys: Vec<f32> = (0..n * hd).map(|_| lcg(&mut seed)).collect();
                let scale = 1.0 / (hd as f32).sqrt();
                let want: Vec<u32> = keys
                    .chunks_exact(hd)
                    .map(|k| (dot(&q, k) * scale).to_bits())
                    .collect();
                let mut got = vec![0f32; n];
                unsafe { attn_simd::scores(&q, &keys, scale, &mut got) };
                assert_eq!(got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want);
                let w: Vec<f32> = (0..n).map(|_| lcg(&mut seed).abs()).collect();
                let inv = 1.0 / w.iter().sum::<f32>();
                let mut want = vec![0f32; hd];
                for (p, vp) in keys.chunks_exact(hd).enumerate() {
                    let wgt = w[p] * inv;
                    for (o, v) in want.iter_mut().zip(vp) {
                        *o += wgt * *v;
                    }
                }
                let mut got = vec![0f32; hd];
                unsafe { attn_simd::weighted_sum(&w, inv, &keys, &mut got) };
                assert_eq!(
                    got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    "hd {hd} n {n}"
                );
            }
        }
    }
}
