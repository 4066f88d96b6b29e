//! The Gemma 3 architecture (Gemma 3 270M and its family), op by op in a fixed order.
//!
//! As llama.cpp's `gemma3` graph: embeddings scaled by √width; per layer an RMS norm, q/k/v
//! projections, RMS norms of each query and key head, RoPE in NeoX pairing (base 10,000 on
//! sliding-window layers, the file's base on full-context ones), attention, an RMS norm of
//! its output before the residual add, then the same shape around a GELU-gated
//! feed-forward; the output head is tied to the embedding. Five of every six layers attend
//! only the last `sliding_window` positions and keep only those in their cache
//! ([`super::kv_cache`]). GGUF norm weights already include Gemma's `1 +`.

use super::attention::AttnShape;
use super::forward::{add_in_place, plan, rms_norm, rms_norm_in_place, Row};
use super::kv_cache::{CacheShape, KvCache, LayerKind};
use super::rope::{Rope, RopeScaling, RopeStyle, SUPPORTED_ROPE};
use super::weights::{check_backend, model_err, Input, Loader, Mat, Weight, WeightSource};
use super::{BACKEND_F32_FIXED, BACKEND_INT8_F16KV};
use crate::math::{exp_f32, LANES};
use crate::{Error, Result};
use candle_core::quantized::gguf_file;
use candle_core::Device;

/// RoPE base of the sliding-window layers (fixed by the architecture, not in the file).
const LOCAL_ROPE_BASE: f32 = 10_000.0;
/// One layer in this many attends the full context (the last of each run).
const FULL_EVERY: usize = 6;

/// Hyper-parameters read from the GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Gemma3Config {
    pub n_layers: usize,
    pub dim: usize,
    pub ffn_dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    /// RoPE base of the full-context layers.
    pub rope_theta: f32,
    /// Positions a sliding-window layer attends (its own included).
    pub sliding_window: usize,
    pub norm_eps: f32,
    pub context_length: usize,
    /// Scale of the attention scores.
    pub attn_scale: f32,
}

impl Gemma3Config {
    /// Whether layer `i` attends the full context.
    pub fn is_full(&self, i: usize) -> bool {
        i % FULL_EVERY == FULL_EVERY - 1
    }

    /// Reads the hyper-parameters; refuses what the kernels or this file cannot run.
    pub(crate) fn from_gguf(content: &gguf_file::Content) -> Result<(Self, RopeScaling)> {
        let md = &content.metadata;
        let u = |key: &str| -> Result<usize> {
            md.get(key)
                .ok_or_else(|| model_err(format!("GGUF metadata lacks {key}")))?
                .to_u32()
                .map(|v| v as usize)
                .map_err(|e| model_err(format!("GGUF metadata {key}: {e}")))
        };
        let f = |key: &str| md.get(key).and_then(|v| v.to_f32().ok());
        let vocab = content
            .tensor_infos
            .get("token_embd.weight")
            .map(|t| t.shape.dims()[0])
            .ok_or_else(|| model_err("no token_embd.weight"))?;
        let n_layers = u("gemma3.block_count")?;
        let dim = u("gemma3.embedding_length")?;
        let n_heads = u("gemma3.attention.head_count")?;
        let head_dim = u("gemma3.attention.key_length")?;
        if u("gemma3.attention.value_length")? != head_dim {
            return Err(Error::unsupported(
                "attention shape",
                "key and value heads of different sizes".to_string(),
                "key_length = value_length",
            ));
        }
        // As llama.cpp: 1/√head_dim, except the 62-layer (27B) model's 1/√(width/heads).
        let attn_scale = if n_layers == 62 {
            1.0 / ((dim / n_heads) as f32).sqrt()
        } else {
            1.0 / (head_dim as f32).sqrt()
        };
        let scaling = match md
            .get("gemma3.rope.scaling.type")
            .and_then(|v| v.to_string().ok())
            .map(|s| s.as_str())
        {
            None | Some("none") => RopeScaling::None,
            Some("linear") => match f("gemma3.rope.scaling.factor") {
                None => RopeScaling::None,
                Some(1.0) => RopeScaling::None,
                Some(x) if x.is_finite() && x > 0.0 => RopeScaling::Linear(x),
                Some(x) => {
                    return Err(Error::unsupported(
                        "RoPE scaling",
                        format!("linear, factor {x}"),
                        SUPPORTED_ROPE,
                    ))
                }
            },
            Some(other) => {
                return Err(Error::unsupported(
                    "RoPE scaling",
                    format!("'{other}'"),
                    SUPPORTED_ROPE,
                ))
            }
        };
        let cfg = Gemma3Config {
            n_layers,
            dim,
            ffn_dim: u("gemma3.feed_forward_length")?,
            n_heads,
            n_kv_heads: u("gemma3.attention.head_count_kv").unwrap_or(n_heads),
            head_dim,
            vocab,
            rope_theta: f("gemma3.rope.freq_base").unwrap_or(1_000_000.0),
            sliding_window: u("gemma3.attention.sliding_window")?,
            norm_eps: f("gemma3.attention.layer_norm_rms_epsilon").unwrap_or(1e-6),
            context_length: u("gemma3.context_length").unwrap_or(32_768),
            attn_scale,
        };
        let ok = cfg.n_heads > 0
            && cfg.n_kv_heads > 0
            && cfg.n_heads % cfg.n_kv_heads == 0
            && cfg.head_dim % LANES == 0
            && cfg.dim % LANES == 0
            && cfg.ffn_dim % LANES == 0
            && cfg.n_layers > 0
            && cfg.sliding_window >= 2
            && cfg.rope_theta.is_finite()
            && cfg.rope_theta > 1.0
            && cfg.norm_eps.is_finite()
            && cfg.norm_eps >= 0.0;
        if !ok {
            return Err(Error::unsupported(
                "model shape",
                format!("{cfg:?}"),
                "kv heads dividing heads; width, feed-forward width and head dimension \
                 multiples of 8; a sliding window of at least 2",
            ));
        }
        Ok((cfg, scaling))
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: Mat,
    wk: Mat,
    wv: Mat,
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    wo: Mat,
    post_attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    w_gate: Mat,
    w_up: Mat,
    w_down: Mat,
    post_ffn_norm: Vec<f32>,
    kind: LayerKind,
}

/// The model's weights.
pub struct Gemma3 {
    pub cfg: Gemma3Config,
    /// Numeric backend id.
    pub backend: u16,
    embed: Mat,
    /// √width, rounded to f32 once (as llama.cpp's `sqrtf(n_embd)`).
    embed_scale: f32,
    layers: Vec<Layer>,
    out_norm: Vec<f32>,
    rope_full: Rope,
    rope_local: Rope,
}

/// GELU, tanh form: x·σ(2·√(2/π)·(x + 0.044715·x³)), which equals
/// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))); with our exp, in this order.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    // 2·√(2/π), rounded to f32 once.
    const C2: f32 =
        (2.0 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2) as f32;
    let z = C2 * (x + 0.044715 * ((x * x) * x));
    x / (1.0 + exp_f32(-z))
}

impl Gemma3 {
    /// Loads a Gemma 3 GGUF file for the given backend (weights as in [`super::Llama`]).
    pub fn from_gguf_with<R: std::io::Read + std::io::Seek>(
        content: &gguf_file::Content,
        reader: &mut R,
        backend: u16,
    ) -> Result<Self> {
        check_backend(backend)?;
        let (cfg, scaling) = Gemma3Config::from_gguf(content)?;
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
        Self::from_weights(cfg, scaling, backend, &mut get)
    }

    /// Builds the model from weights named as in GGUF `gemma3` files.
    pub fn from_weights(
        cfg: Gemma3Config,
        scaling: RopeScaling,
        backend: u16,
        get: &mut WeightSource,
    ) -> Result<Self> {
        check_backend(backend)?;
        let mut ld = Loader {
            get,
            quant: backend != BACKEND_F32_FIXED,
        };
        let (d, f, hd) = (cfg.dim, cfg.ffn_dim, cfg.head_dim);
        let (qd, kv) = (cfg.n_heads * hd, cfg.n_kv_heads * hd);
        let embed = ld.mat("token_embd.weight", &[cfg.vocab, d])?;
        let (mut n_full, mut n_local) = (0, 0);
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = format!("blk.{i}");
            let kind = if cfg.is_full(i) {
                n_full += 1;
                LayerKind::Full(n_full - 1)
            } else {
                n_local += 1;
                LayerKind::Local(n_local - 1)
            };
            layers.push(Layer {
                attn_norm: ld.vec(&format!("{p}.attn_norm.weight"), d)?,
                wq: ld.mat(&format!("{p}.attn_q.weight"), &[qd, d])?,
                wk: ld.mat(&format!("{p}.attn_k.weight"), &[kv, d])?,
                wv: ld.mat(&format!("{p}.attn_v.weight"), &[kv, d])?,
                q_norm: ld.vec(&format!("{p}.attn_q_norm.weight"), hd)?,
                k_norm: ld.vec(&format!("{p}.attn_k_norm.weight"), hd)?,
                wo: ld.mat(&format!("{p}.attn_output.weight"), &[d, qd])?,
                post_attn_norm: ld.vec(&format!("{p}.post_attention_norm.weight"), d)?,
                ffn_norm: ld.vec(&format!("{p}.ffn_norm.weight"), d)?,
                w_gate: ld.mat(&format!("{p}.ffn_gate.weight"), &[f, d])?,
                w_up: ld.mat(&format!("{p}.ffn_up.weight"), &[f, d])?,
                w_down: ld.mat(&format!("{p}.ffn_down.weight"), &[d, f])?,
                post_ffn_norm: ld.vec(&format!("{p}.post_ffw_norm.weight"), d)?,
                kind,
            });
        }
        if ld.mat_opt("output.weight", &[cfg.vocab, d])?.is_some() {
            return Err(Error::unsupported(
                "output head",
                "a separate output.weight".to_string(),
                "Gemma 3's head tied to the embedding",
            ));
        }
        let out_norm = ld.vec("output_norm.weight", d)?;
        let rope_full = Rope::new(hd, cfg.rope_theta, &scaling, RopeStyle::Neox)?;
        let rope_local = Rope::new(hd, LOCAL_ROPE_BASE, &RopeScaling::None, RopeStyle::Neox)?;
        Ok(Gemma3 {
            embed_scale: (d as f32).sqrt(),
            cfg,
            backend,
            embed,
            layers,
            out_norm,
            rope_full,
            rope_local,
        })
    }

    fn cache_shape(&self) -> CacheShape {
        let full = (0..self.cfg.n_layers)
            .filter(|&i| self.cfg.is_full(i))
            .count();
        CacheShape {
            kv_heads: self.cfg.n_kv_heads,
            head_dim: self.cfg.head_dim,
            full_layers: full,
            local_layers: self.cfg.n_layers - full,
            local_window: self.cfg.sliding_window,
            half: self.backend == BACKEND_INT8_F16KV,
        }
    }

    /// A cache for one stream holding up to `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        KvCache::new(self.cache_shape(), capacity)
    }

    /// Slides a full cache by window policy 1 (see [`KvCache::slide`]); the sliding-window
    /// layers keep their own last positions.
    pub fn slide(&self, cache: &mut KvCache, keep: usize) -> Result<()> {
        cache.slide(keep, &self.rope_full)
    }

    /// Bytes one cache of `capacity` positions takes (for memory planning).
    pub fn cache_bytes(&self, capacity: usize) -> usize {
        KvCache::bytes(&self.cache_shape(), capacity)
    }

    /// The output head (tied to the embedding).
    pub(crate) fn head(&self) -> &Mat {
        &self.embed
    }

    /// Runs the rows through the model and writes logits only for the rows listed in
    /// `want` (increasing indices into `rows`), `want.len() × vocab` values.
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
        let (d, hd) = (c.dim, c.head_dim);
        let (qd, kvd) = (c.n_heads * hd, c.n_kv_heads * hd);
        let shape = AttnShape {
            kv_heads: c.n_kv_heads,
            group: c.n_heads / c.n_kv_heads,
            head_dim: hd,
            scale: c.attn_scale,
            lane_sum: self.backend == BACKEND_INT8_F16KV,
        };
        let mut x = vec![0f32; n * d];
        for (i, r) in rows.iter().enumerate() {
            let xr = &mut x[i * d..(i + 1) * d];
            self.embed.row(r.token as usize, xr);
            for v in xr.iter_mut() {
                *v *= self.embed_scale;
            }
        }
        let ropes_full: Vec<_> = rows.iter().map(|r| self.rope_full.table(r.pos)).collect();
        let ropes_local: Vec<_> = rows.iter().map(|r| self.rope_local.table(r.pos)).collect();
        let mut h = vec![0f32; n * d];
        let mut q = vec![0f32; n * qd];
        let mut k = vec![0f32; n * kvd];
        let mut v = vec![0f32; n * kvd];
        let mut att = vec![0f32; n * qd];
        let mut o = vec![0f32; n * d];
        let mut g = vec![0f32; n * c.ffn_dim];
        let mut u = vec![0f32; n * c.ffn_dim];
        for l in &self.layers {
            rms_norm(&x, &l.attn_norm, c.norm_eps, &mut h);
            let inp = Input::new(self.backend, &h, n, d);
            Mat::apply_many(
                &inp,
                n,
                d,
                &mut [
                    (&l.wq, qd, &mut q),
                    (&l.wk, kvd, &mut k),
                    (&l.wv, kvd, &mut v),
                ],
            );
            rms_norm_in_place(&mut q, &l.q_norm, c.norm_eps);
            rms_norm_in_place(&mut k, &l.k_norm, c.norm_eps);
            let (rope, tables) = match l.kind {
                LayerKind::Full(fi) => {
                    // Slot 0's normed, un-rotated keys are kept for re-rotation on slides.
                    plan.keep_sinks(caches, rows, fi, &k, kvd);
                    (&self.rope_full, &ropes_full)
                }
                LayerKind::Local(_) => (&self.rope_local, &ropes_local),
            };
            for i in 0..n {
                rope.rotate_heads(&mut q[i * qd..(i + 1) * qd], hd, &tables[i]);
                rope.rotate_heads(&mut k[i * kvd..(i + 1) * kvd], hd, &tables[i]);
            }
            plan.write_kv(caches, rows, l.kind, &k, &v, kvd);
            plan.attention(caches, rows, l.kind, &shape, &q, &mut att);
            l.wo.apply(&Input::new(self.backend, &att, n, qd), n, d, qd, &mut o);
            rms_norm_in_place(&mut o, &l.post_attn_norm, c.norm_eps);
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
                *gv = gelu_tanh(*gv) * *uv;
            }
            l.w_down.apply(
                &Input::new(self.backend, &g, n, c.ffn_dim),
                n,
                d,
                c.ffn_dim,
                &mut o,
            );
            rms_norm_in_place(&mut o, &l.post_ffn_norm, c.norm_eps);
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
