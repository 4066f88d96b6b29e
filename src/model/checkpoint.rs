//! Hugging Face model folders (config.json, tokenizer.json, safetensors) mapped onto the engine.
//!
//! A folder holds a llama-architecture checkpoint as `transformers` saves it. Its tensors
//! are renamed to the GGUF names the engine loads, and the query/key projections are
//! permuted into GGUF's row order: llama.cpp's converter reorders each head's q and k rows
//! so that RoPE can rotate adjacent pairs (x\[2i\], x\[2i+1\]), while `transformers` rotates
//! x\[i\] with x\[i + head_dim/2\]. The engine rotates adjacent pairs, so without the same
//! permutation a checkpoint would compute a different function.

use crate::engine::{llama3_rope_factors, RopeScaling, Weight, SUPPORTED_ROPE};
use crate::engine::{Llama, LlamaConfig};
use crate::{Error, ErrorKind, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{Device, Tensor};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The weights index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The weights of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";

fn model_err(m: impl Into<String>) -> Error {
    Error::new(ErrorKind::Model(m.into()))
}

/// The files of the folder that define the model's behaviour, by name: config.json,
/// tokenizer.json, and the weights (model.safetensors, or the index and every shard it
/// names). Other files (tokenizer_config.json, generation_config.json, …) are not read.
pub fn model_files(dir: &Path) -> Result<Vec<String>> {
    let mut names = vec!["config.json".to_string(), "tokenizer.json".to_string()];
    let index = dir.join(INDEX_FILE);
    if index.is_file() {
        names.push(INDEX_FILE.to_string());
        names.extend(shards_of_index(&std::fs::read(&index)?)?);
    } else {
        names.push(SINGLE_FILE.to_string());
    }
    for n in &names {
        if !dir.join(n).is_file() {
            return Err(model_err(format!(
                "{} has no {n} (a model folder needs config.json, tokenizer.json and \
                 {SINGLE_FILE} or {INDEX_FILE} with its shards)",
                dir.display()
            )));
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// The shard file names an index's weight_map points to, each a plain name in the folder.
pub fn shards_of_index(index: &[u8]) -> Result<Vec<String>> {
    let v: Value = serde_json::from_slice(index)
        .map_err(|e| model_err(format!("{INDEX_FILE} is not valid JSON: {e}")))?;
    let map = v["weight_map"]
        .as_object()
        .ok_or_else(|| model_err(format!("{INDEX_FILE} has no weight_map")))?;
    let mut shards: Vec<String> = Vec::new();
    for f in map.values() {
        let f = f
            .as_str()
            .ok_or_else(|| model_err(format!("{INDEX_FILE}: weight_map values are file names")))?;
        // Only files beside the index: a name must not lead elsewhere.
        let plain = !f.is_empty()
            && !f.contains(['/', '\\'])
            && !f.chars().any(char::is_control)
            && f != "."
            && f != ".."
            && f.ends_with(".safetensors");
        if !plain {
            return Err(model_err(format!(
                "{INDEX_FILE} names '{f}', not a .safetensors file beside it"
            )));
        }
        if !shards.iter().any(|s| s == f) {
            shards.push(f.to_string());
        }
    }
    if shards.is_empty() {
        return Err(model_err(format!("{INDEX_FILE} names no shards")));
    }
    Ok(shards)
}

/// What config.json says, beyond the engine's hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct HfConfig {
    pub cfg: LlamaConfig,
    pub rope: RopeScaling,
    /// Output projection tied to the embedding (no lm_head.weight).
    pub tied: bool,
    pub bos_token_id: Option<u32>,
}

fn get_usize(v: &Value, key: &str) -> Result<usize> {
    v[key]
        .as_u64()
        .and_then(|x| usize::try_from(x).ok())
        .ok_or_else(|| model_err(format!("config.json lacks an integer {key}")))
}

/// Reads a llama config.json and refuses what the engine does not compute.
pub fn parse_config(json: &[u8]) -> Result<HfConfig> {
    let v: Value = serde_json::from_slice(json)
        .map_err(|e| model_err(format!("config.json is not valid JSON: {e}")))?;
    let model_type = v["model_type"].as_str().unwrap_or("(none)");
    if model_type != "llama" {
        return Err(Error::unsupported(
            "architecture",
            format!("'{model_type}'"),
            "llama (config.json model_type \"llama\")",
        ));
    }
    let act = v["hidden_act"].as_str().unwrap_or("silu");
    if act != "silu" {
        return Err(Error::unsupported("activation", format!("'{act}'"), "silu"));
    }
    for flag in ["attention_bias", "mlp_bias"] {
        if v[flag].as_bool() == Some(true) {
            return Err(Error::unsupported(
                "projection biases",
                flag.to_string(),
                "llama without biases",
            ));
        }
    }
    let dim = get_usize(&v, "hidden_size")?;
    let n_heads = get_usize(&v, "num_attention_heads")?;
    let n_kv_heads = match v.get("num_key_value_heads") {
        Some(Value::Null) | None => n_heads,
        Some(_) => get_usize(&v, "num_key_value_heads")?,
    };
    let head_dim = dim.checked_div(n_heads).unwrap_or(0);
    if let Some(hd) = v["head_dim"].as_u64() {
        if hd as usize != head_dim {
            return Err(Error::unsupported(
                "head or rotary dimension",
                format!("head_dim = {hd} (hidden_size / heads = {head_dim})"),
                "head and rotary dimension = hidden_size / heads",
            ));
        }
    }
    if let Some(p) = v["partial_rotary_factor"].as_f64() {
        if p != 1.0 {
            return Err(Error::unsupported(
                "RoPE scaling",
                format!("partial_rotary_factor {p}"),
                SUPPORTED_ROPE,
            ));
        }
    }
    let rope_theta = v["rope_theta"].as_f64().unwrap_or(10000.0) as f32;
    let rope = match &v["rope_scaling"] {
        Value::Null => RopeScaling::None,
        rs => {
            let kind = rs["rope_type"]
                .as_str()
                .or_else(|| rs["type"].as_str())
                .unwrap_or("(none)");
            let num = |k: &str, d: f64| rs[k].as_f64().unwrap_or(d);
            match kind {
                "default" => RopeScaling::None,
                "linear" => {
                    let f = num("factor", 1.0) as f32;
                    if !(f.is_finite() && f > 0.0) {
                        return Err(Error::unsupported(
                            "RoPE scaling",
                            format!("linear with factor {f}"),
                            SUPPORTED_ROPE,
                        ));
                    }
                    if f == 1.0 {
                        RopeScaling::None
                    } else {
                        RopeScaling::Linear(f)
                    }
                }
                "llama3" => {
                    let (low, high) = (num("low_freq_factor", 1.0), num("high_freq_factor", 4.0));
                    let ok = low > 0.0 && high > low && num("factor", 8.0) > 0.0;
                    if !ok {
                        return Err(Error::unsupported(
                            "RoPE scaling",
                            format!("llama3 with factors {rs}"),
                            SUPPORTED_ROPE,
                        ));
                    }
                    RopeScaling::Factors(llama3_rope_factors(
                        head_dim,
                        rope_theta,
                        num("factor", 8.0),
                        low,
                        high,
                        num("original_max_position_embeddings", 8192.0),
                    ))
                }
                other => {
                    return Err(Error::unsupported(
                        "RoPE scaling",
                        format!("'{other}'"),
                        SUPPORTED_ROPE,
                    ))
                }
            }
        }
    };
    let cfg = LlamaConfig {
        n_layers: get_usize(&v, "num_hidden_layers")?,
        dim,
        ffn_dim: get_usize(&v, "intermediate_size")?,
        n_heads,
        n_kv_heads,
        head_dim,
        vocab: get_usize(&v, "vocab_size")?,
        rope_theta,
        // transformers' LlamaConfig defaults.
        norm_eps: v["rms_norm_eps"].as_f64().unwrap_or(1e-6) as f32,
        context_length: v["max_position_embeddings"].as_u64().unwrap_or(2048) as usize,
    }
    .validate()?;
    Ok(HfConfig {
        cfg,
        rope,
        tied: v["tie_word_embeddings"].as_bool().unwrap_or(false),
        bos_token_id: v["bos_token_id"].as_u64().map(|b| b as u32),
    })
}

/// The checkpoint name of an engine (GGUF) tensor, and for q/k the head count of the
/// RoPE permutation; `None` for a tensor a checkpoint does not hold.
fn hf_name(gguf: &str, c: &HfConfig) -> Option<(String, Option<usize>)> {
    match gguf {
        "token_embd.weight" => return Some(("model.embed_tokens.weight".into(), None)),
        "output_norm.weight" => return Some(("model.norm.weight".into(), None)),
        "output.weight" if !c.tied => return Some(("lm_head.weight".into(), None)),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (n, t) = rest.split_once('.')?;
    let (hf, heads) = match t {
        "attn_norm.weight" => ("input_layernorm.weight", None),
        "attn_q.weight" => ("self_attn.q_proj.weight", Some(c.cfg.n_heads)),
        "attn_k.weight" => ("self_attn.k_proj.weight", Some(c.cfg.n_kv_heads)),
        "attn_v.weight" => ("self_attn.v_proj.weight", None),
        "attn_output.weight" => ("self_attn.o_proj.weight", None),
        "ffn_norm.weight" => ("post_attention_layernorm.weight", None),
        "ffn_gate.weight" => ("mlp.gate_proj.weight", None),
        "ffn_up.weight" => ("mlp.up_proj.weight", None),
        "ffn_down.weight" => ("mlp.down_proj.weight", None),
        _ => return None,
    };
    Some((format!("model.layers.{n}.{hf}"), heads))
}

/// Reorders a q or k projection from the checkpoint's rotate-half layout to GGUF's
/// interleaved one (llama.cpp's `permute`): within each head, row j·(hd/2) + i becomes
/// row 2i + j. Pure data movement, so values stay exact.
pub fn permute_for_interleaved_rope(w: &Tensor, heads: usize) -> Result<Tensor> {
    swap_within_heads(w, heads, true)
}

/// The inverse of [`permute_for_interleaved_rope`] (GGUF rows → checkpoint rows), used to
/// write test checkpoints equivalent to a GGUF file.
pub fn unpermute_from_interleaved_rope(w: &Tensor, heads: usize) -> Result<Tensor> {
    swap_within_heads(w, heads, false)
}

/// Views each head's rows as a 2 × hd/2 grid (`to_interleaved`) or an hd/2 × 2 grid (back)
/// and transposes it.
fn swap_within_heads(w: &Tensor, heads: usize, to_interleaved: bool) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    if heads == 0 || rows % (2 * heads) != 0 {
        return Err(model_err(format!(
            "projection with {rows} rows cannot be split into {heads} heads"
        )));
    }
    let half = rows / heads / 2;
    let grid = if to_interleaved {
        (heads, 2, half, cols)
    } else {
        (heads, half, 2, cols)
    };
    Ok(w.reshape(grid)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// Loads the engine from the folder's safetensors files (`shards`: paths).
pub fn load_llama(shards: &[PathBuf], c: &HfConfig, backend: u16) -> Result<Llama> {
    // SAFETY: the files are mapped read-only for the duration of loading; every value is
    // copied out (to f32 or integer blocks) before the maps are dropped. A concurrent
    // writer could change the bytes, as with any file read, but not memory safety of
    // the copies.
    let st = unsafe { MmapedSafetensors::multi(shards) }
        .map_err(|e| model_err(format!("cannot read the safetensors weights: {e}")))?;
    // Biases and other extra parameters would be silently dropped: refuse them.
    for (name, _) in st.tensors() {
        if name.ends_with(".bias") {
            return Err(Error::unsupported(
                "projection biases",
                format!("tensor {name}"),
                "llama without biases",
            ));
        }
    }
    let dev = Device::Cpu;
    let mut get = |gguf: &str| -> Result<Option<Weight>> {
        let Some((name, heads)) = hf_name(gguf, c) else {
            return Ok(None);
        };
        let view = match st.get(&name) {
            Ok(v) => v,
            Err(_) => return Err(model_err(format!("tensor {name} is missing"))),
        };
        let dtype = candle_core::DType::try_from(view.dtype());
        if !matches!(
            dtype,
            Ok(candle_core::DType::F32 | candle_core::DType::F16 | candle_core::DType::BF16)
        ) {
            return Err(Error::unsupported(
                "safetensors weight type",
                format!("{:?} (tensor {name})", view.dtype()),
                "F32, F16, BF16",
            ));
        }
        let t = st
            .load(&name, &dev)
            .map_err(|e| model_err(format!("tensor {name}: {e}")))?;
        let t = match heads {
            Some(h) => permute_for_interleaved_rope(&t, h)?,
            None => t,
        };
        Ok(Some(Weight::Dense(t)))
    };
    Llama::from_weights(c.cfg.clone(), c.rope.clone(), backend, &mut get)
}
