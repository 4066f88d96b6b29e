//! The llama architecture (SmolLM2 and other Llama-style models), op by op in a fixed order.
//!
//! Weights come from a GGUF file through candle (or a safetensors folder, see
//! `crate::checkpoint`) and are held as the backend needs them: exact f32 values for
//! backend 1, integer blocks for backends 2 and 3. The shared steps (row checks, cache writes,
//! attention, norms) are in [`super::forward`].

use super::attention::AttnShape;
use super::forward::{add_in_place, plan, rms_norm, Row};
use super::kv_cache::{CacheShape, KvCache, LayerKind};
use super::rope::{Rope, RopeScaling, RopeStyle, SUPPORTED_ROPE};
use super::weights::{
    check_backend, model_err, weight_f32, Input, Loader, Mat, Weight, WeightSource,
};
use super::{BACKEND_F32_FIXED, BACKEND_INT8_F16KV};
use crate::math::{silu, LANES};
use crate::{Error, Result};
use candle_core::quantized::gguf_file;
use candle_core::Device;

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
    /// Numeric backend id (see [`super::BACKEND_INT8_F16KV`] and the others).
    pub backend: u16,
    embed: Mat,
    layers: Vec<Layer>,
    out_norm: Vec<f32>,
    /// Output projection; `None` when tied to the embedding (as in SmolLM2).
    output: Option<Mat>,
    rope: Rope,
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

    /// The hyper-parameters and the RoPE scaling named in the metadata (a factors tensor,
    /// `rope_freqs.weight`, is read by the loader).
    pub(crate) fn from_gguf(content: &gguf_file::Content) -> Result<(Self, RopeScaling)> {
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
                .ok_or_else(|| model_err("no token_embd.weight"))?,
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

impl Llama {
    /// Loads a llama GGUF file for the given backend: backend 1 holds f32 weights (any
    /// ggml type candle dequantizes); backends 2 and 3 keep every 2-D weight as integer
    /// blocks (see [`super::int8`] for the types re-packed exactly; F32/F16 matrices are
    /// quantized to Q8_0-style blocks at load; others refused). Norm vectors stay f32.
    pub fn from_gguf_with<R: std::io::Read + std::io::Seek>(
        content: &gguf_file::Content,
        reader: &mut R,
        backend: u16,
    ) -> Result<Self> {
        check_backend(backend)?;
        let (cfg, mut rope) = LlamaConfig::from_gguf(content)?;
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
        get: &mut WeightSource,
    ) -> Result<Self> {
        check_backend(backend)?;
        let mut ld = Loader {
            get,
            quant: backend != BACKEND_F32_FIXED,
        };
        let (d, f, kv) = (cfg.dim, cfg.ffn_dim, cfg.n_kv_heads * cfg.head_dim);
        let embed = ld.mat("token_embd.weight", &[cfg.vocab, d])?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = format!("blk.{i}");
            layers.push(Layer {
                attn_norm: ld.vec(&format!("{p}.attn_norm.weight"), d)?,
                wq: ld.mat(&format!("{p}.attn_q.weight"), &[d, d])?,
                wk: ld.mat(&format!("{p}.attn_k.weight"), &[kv, d])?,
                wv: ld.mat(&format!("{p}.attn_v.weight"), &[kv, d])?,
                wo: ld.mat(&format!("{p}.attn_output.weight"), &[d, d])?,
                ffn_norm: ld.vec(&format!("{p}.ffn_norm.weight"), d)?,
                w_gate: ld.mat(&format!("{p}.ffn_gate.weight"), &[f, d])?,
                w_up: ld.mat(&format!("{p}.ffn_up.weight"), &[f, d])?,
                w_down: ld.mat(&format!("{p}.ffn_down.weight"), &[d, f])?,
            });
        }
        let out_norm = ld.vec("output_norm.weight", d)?;
        let output = ld.mat_opt("output.weight", &[cfg.vocab, d])?;
        let rope = Rope::new(cfg.head_dim, cfg.rope_theta, &rope, RopeStyle::Interleaved)?;
        Ok(Llama {
            cfg,
            backend,
            embed,
            layers,
            out_norm,
            output,
            rope,
        })
    }

    fn cache_shape(&self) -> CacheShape {
        CacheShape {
            kv_heads: self.cfg.n_kv_heads,
            head_dim: self.cfg.head_dim,
            full_layers: self.cfg.n_layers,
            local_layers: 0,
            local_window: 0,
            half: self.backend == BACKEND_INT8_F16KV,
        }
    }

    /// A cache for one stream holding up to `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        KvCache::new(self.cache_shape(), capacity)
    }

    /// Slides a full cache by window policy 1 (see [`KvCache::slide`]).
    pub fn slide(&self, cache: &mut KvCache, keep: usize) -> Result<()> {
        cache.slide(keep, &self.rope)
    }

    /// Bytes one cache of `capacity` positions takes (for memory planning).
    pub fn cache_bytes(&self, capacity: usize) -> usize {
        KvCache::bytes(&self.cache_shape(), capacity)
    }

    /// Runs the rows through the model and writes `rows.len() × vocab` logits.
    pub fn forward(&self, caches: &mut [KvCache], rows: &[Row], logits: &mut [f32]) -> Result<()> {
        let all: Vec<usize> = (0..rows.len()).collect();
        self.forward_select(caches, rows, &all, logits)
    }

    /// The output head: its own matrix, or the embedding's when tied.
    pub(crate) fn head(&self) -> &Mat {
        self.output.as_ref().unwrap_or(&self.embed)
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
        let (m, d) = (want.len(), self.cfg.dim);
        if logits.len() != m * self.cfg.vocab {
            return Err(Error::internal("forward: logits buffer has the wrong size"));
        }
        let mut h = vec![0f32; m * d];
        self.forward_hidden(caches, rows, want, &mut h)?;
        let inp = Input::new(self.backend, &h, m, d);
        self.head().apply(&inp, m, self.cfg.vocab, d, logits);
        Ok(())
    }

    /// Runs the rows through the model and writes, for the rows listed in `want`, the
    /// final normed hidden state (`want.len() × dim` values): the output head's input.
    pub fn forward_hidden(
        &self,
        caches: &mut [KvCache],
        rows: &[Row],
        want: &[usize],
        hidden: &mut [f32],
    ) -> Result<()> {
        let c = &self.cfg;
        let n = rows.len();
        if hidden.len() != want.len() * c.dim || want.iter().any(|&i| i >= n) {
            return Err(Error::internal("forward: hidden buffer has the wrong size"));
        }
        let plan = plan(caches, rows, c.vocab)?;
        let (d, hd, kvd) = (c.dim, c.head_dim, c.n_kv_heads * c.head_dim);
        let shape = AttnShape {
            kv_heads: c.n_kv_heads,
            group: c.n_heads / c.n_kv_heads,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
            lane_sum: self.backend == BACKEND_INT8_F16KV,
        };
        let mut x = vec![0f32; n * d];
        for (i, r) in rows.iter().enumerate() {
            self.embed.row(r.token as usize, &mut x[i * d..(i + 1) * d]);
        }
        let ropes: Vec<_> = rows.iter().map(|r| self.rope.table(r.pos)).collect();
        let mut h = vec![0f32; n * d];
        let mut q = vec![0f32; n * d];
        let mut k = vec![0f32; n * kvd];
        let mut v = vec![0f32; n * kvd];
        let mut att = vec![0f32; n * d];
        let mut o = vec![0f32; n * d];
        let mut g = vec![0f32; n * c.ffn_dim];
        let mut u = vec![0f32; n * c.ffn_dim];
        for (li, l) in self.layers.iter().enumerate() {
            let kind = LayerKind::Full(li);
            rms_norm(&x, &l.attn_norm, c.norm_eps, &mut h);
            let inp = Input::new(self.backend, &h, n, d);
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
            plan.keep_sinks(caches, rows, li, &k, kvd);
            for i in 0..n {
                self.rope
                    .rotate_heads(&mut q[i * d..(i + 1) * d], hd, &ropes[i]);
                self.rope
                    .rotate_heads(&mut k[i * kvd..(i + 1) * kvd], hd, &ropes[i]);
            }
            plan.write_kv(caches, rows, kind, &k, &v, kvd);
            plan.attention(caches, rows, kind, &shape, &q, &mut att);
            l.wo.apply(&Input::new(self.backend, &att, n, d), n, d, d, &mut o);
            add_in_place(&mut x, &o);
            rms_norm(&x, &l.ffn_norm, c.norm_eps, &mut h);
            let inp = Input::new(self.backend, &h, n, d);
            Mat::apply_many(
                &inp,
                n,
                d,
                &mut [(&l.w_gate, c.ffn_dim, &mut g), (&l.w_up, c.ffn_dim, &mut u)],
            );
            for (gv, uv) in g.iter_mut().zip(&u) {
                *gv = silu(*gv) * *uv;
            }
            l.w_down.apply(
                &Input::new(self.backend, &g, n, c.ffn_dim),
                n,
                d,
                c.ffn_dim,
                &mut o,
            );
            add_in_place(&mut x, &o);
        }
        plan.finish(caches);
        let mut xs = Vec::with_capacity(want.len() * d);
        for &i in want {
            xs.extend_from_slice(&x[i * d..(i + 1) * d]);
        }
        rms_norm(&xs, &self.out_norm, c.norm_eps, hidden);
        Ok(())
    }
}
