//! Test support (feature `testing`): tiny synthetic models that load in milliseconds, a
//! llama one (like SmolLM2) and a Gemma 3 one ([`synthetic_gemma_gguf`]).
//!
//! With them, tests and fuzzers run the real pipeline instead of loading the 98 MB default
//! model or Gemma 3 270M.
//!
//! The model is written as a genuine GGUF file (candle's `gguf_file::write`) with the same
//! metadata keys and tensor names the loader reads from SmolLM2, so `Model::load` takes the
//! same path for it as for the real model: GGUF parsing, the gpt2/smollm tokenizer built from
//! `tokenizer.ggml.*`, Q4_1 weight matrices, F32 norms, tied output embedding.
//!
//! Everything is derived from a seed by a fixed integer generator, and the llama model's
//! Q4_1 blocks are built bit by bit rather than by candle's quantizer, so that file's bytes
//! (and therefore its SHA-256, which archives record) do not depend on the candle version or
//! the machine. The Gemma model's K-quants and Q5_0/Q8_0 blocks come from candle's quantizer.
//! Not part of the stable API.

use crate::model::Model;
use crate::{Error, ErrorKind, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QStorage, QTensor};
use candle_core::Device;
use std::borrow::Cow;
use std::path::Path;

/// Shape of the synthetic model. The defaults are small enough that a forward pass over one
/// row costs a few microseconds, yet exercise everything the real model does: several
/// layers, grouped-query attention (kv heads < heads), RoPE, SwiGLU.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSpec {
    pub seed: u64,
    pub layers: usize,
    /// Embedding width; a multiple of the weight type's block (32; 256 for K-quants) and
    /// of the head count.
    pub dim: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// Feed-forward width; a multiple of the weight type's block.
    pub ffn: usize,
    /// ggml type of every weight matrix (the embedding included). Q4_1 is built bit by
    /// bit; other types are quantized by candle from seed-derived f32 values, so their
    /// bytes may change with candle's quantizer (tests compare models, not hashes).
    pub wtype: GgmlDType,
    pub rope_theta: f32,
    pub rope: SyntheticRope,
    /// Output projection tied to the embedding (no `output.weight`), as in SmolLM2.
    pub tied: bool,
}

/// RoPE scaling of the synthetic model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SyntheticRope {
    None,
    /// `llama.rope.scaling.type = linear` with this factor.
    Linear(f32),
    /// Llama 3.1 frequency factors (`rope_freqs.weight`) for factor 8, low 1, high 4 and
    /// an original context of [`LLAMA3_ORIGINAL_CONTEXT`].
    Llama3,
}

/// The original context of the synthetic llama3 RoPE, short so that the tiny head
/// dimensions see all three regimes (unscaled, scaled, interpolated).
pub const LLAMA3_ORIGINAL_CONTEXT: f64 = 64.0;

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            seed: 0x6c6d_7a69_7000_0001,
            layers: 2,
            dim: 64,
            heads: 4,
            kv_heads: 2,
            ffn: 128,
            wtype: GgmlDType::Q4_1,
            rope_theta: 10000.0,
            rope: SyntheticRope::None,
            tied: true,
        }
    }
}

impl SyntheticSpec {
    /// The default model with another weight type, its widths raised to the type's block.
    pub fn with_type(wtype: GgmlDType) -> Self {
        let block = wtype.block_size().max(32);
        SyntheticSpec {
            wtype,
            dim: 64usize.next_multiple_of(block),
            ffn: 128usize.next_multiple_of(block),
            ..Default::default()
        }
    }
}

/// Bytes deliberately left without a single-byte token, so inputs containing them go
/// through the escape symbols as with the real vocabulary (which lacks 21 byte values).
pub const SYNTHETIC_MISSING_BYTES: [u8; 8] = [0x04, 0x06, 0x1D, 0xC0, 0xC1, 0xF5, 0xFE, 0xFF];

/// BPE merges in byte-level spelling (`Ġ` is a space, `Ċ` a newline), in rank order. Each
/// result is added to the vocabulary, so English text gets multi-byte tokens.
const MERGES: &[(&str, &str)] = &[
    ("Ġ", "t"),
    ("Ġ", "a"),
    ("h", "e"),
    ("i", "n"),
    ("r", "e"),
    ("o", "n"),
    ("Ġt", "he"),
    ("e", "r"),
    ("Ġ", "s"),
    ("a", "t"),
    ("e", "n"),
    ("o", "r"),
    ("Ġ", "w"),
    ("Ġ", "o"),
    ("i", "s"),
    ("e", "s"),
    ("Ġ", "c"),
    ("Ġ", "b"),
    ("a", "n"),
    ("Ġ", "f"),
    ("Ġ", "m"),
    ("Ġ", "p"),
    ("l", "l"),
    ("o", "u"),
    ("i", "t"),
    ("Ġ", "d"),
    ("e", "d"),
    ("Ġa", "n"),
    ("Ġan", "d"),
    ("in", "g"),
    ("Ġ", "h"),
    ("Ġ", "i"),
    ("a", "r"),
    ("Ġo", "f"),
    ("Ġt", "o"),
    ("Ġ", "in"),
    ("Ġ", "T"),
    ("Ċ", "Ċ"),
    ("Ġ", "Ġ"),
    ("ĠĠ", "ĠĠ"),
];

/// splitmix64: a fixed, well-mixed integer sequence (no dependency on `rand`'s versions).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1), from 24 bits (exact in f32).
    fn unit(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u32 << 23) as f32) - 1.0
    }
}

/// GPT-2's byte-level character for a byte (same map as `tokenize`).
fn byte_char(b: u8) -> char {
    let printable = |x: u8| matches!(x, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return b as char;
    }
    let n = (0..=b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(255 + n).unwrap_or('\0')
}

/// f32 → IEEE half bits, for the normal, in-range values this module produces
/// (|x| in [2^-14, 65504]); truncates the mantissa, which is all a seed-derived scale needs.
fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xFF) as i32 - 127 + 15;
    let mant = ((b >> 13) & 0x3FF) as u16;
    sign | ((exp.clamp(1, 30) as u16) << 10) | mant
}

/// The synthetic vocabulary: control tokens, byte tokens, merge results; and the merges.
pub fn synthetic_vocabulary() -> (Vec<String>, Vec<String>, Vec<i32>) {
    // GGUF token types: 1 normal, 3 control.
    let mut tokens = vec!["<|endoftext|>".to_string(), "<|im_start|>".to_string()];
    let mut types = vec![3, 3];
    for b in 0..=255u8 {
        if !SYNTHETIC_MISSING_BYTES.contains(&b) {
            tokens.push(byte_char(b).to_string());
            types.push(1);
        }
    }
    let mut merges = Vec::with_capacity(MERGES.len());
    for (a, b) in MERGES {
        merges.push(format!("{a} {b}"));
        tokens.push(format!("{a}{b}"));
        types.push(1);
    }
    (tokens, merges, types)
}

/// A Q4_1 matrix of `rows × cols` with seed-derived blocks: scale d per 32 weights, offset
/// m = -8·d so the weights are centred on zero, nibbles uniform.
fn q4_1(rng: &mut Rng, rows: usize, cols: usize, scale: f32) -> Result<QTensor> {
    let blocks = rows * cols / 32;
    let mut raw = Vec::with_capacity(blocks * 20);
    for _ in 0..blocks {
        let d = scale * (0.75 + 0.25 * rng.unit().abs()) / 8.0;
        raw.extend_from_slice(&f16_bits(d).to_le_bytes());
        raw.extend_from_slice(&f16_bits(-8.0 * d).to_le_bytes());
        for _ in 0..16 {
            raw.push(rng.next() as u8);
        }
    }
    // candle views these bytes as 20-byte blocks with 2-byte alignment; a Vec<u8> from the
    // global allocator is at least 8-aligned on every platform Rust supports with std.
    let storage = QStorage::from_data(Cow::Owned(raw), &Device::Cpu, GgmlDType::Q4_1)?;
    Ok(QTensor::new(storage, (rows, cols))?)
}

/// A weight matrix of the spec's type: Q4_1 bit by bit, others quantized by candle from
/// seed-derived values of the same spread (uniform, scaled like Q4_1's nibbles).
fn matrix(
    rng: &mut Rng,
    spec: &SyntheticSpec,
    rows: usize,
    cols: usize,
    scale: f32,
) -> Result<QTensor> {
    if spec.wtype == GgmlDType::Q4_1 {
        return q4_1(rng, rows, cols, scale);
    }
    let v: Vec<f32> = (0..rows * cols).map(|_| scale * rng.unit()).collect();
    let t = candle_core::Tensor::from_vec(v, (rows, cols), &Device::Cpu)?;
    Ok(QTensor::quantize(&t, spec.wtype)?)
}

fn f32_vector(rng: &mut Rng, n: usize) -> Result<QTensor> {
    let raw: Vec<u8> = (0..n)
        .flat_map(|_| (1.0 + 0.1 * rng.unit()).to_le_bytes())
        .collect();
    let storage = QStorage::from_data(Cow::Owned(raw), &Device::Cpu, GgmlDType::F32)?;
    Ok(QTensor::new(storage, (n,))?)
}

/// The GGUF file's bytes for `spec`.
pub fn synthetic_gguf(spec: &SyntheticSpec) -> Result<Vec<u8>> {
    use gguf_file::Value;
    let bad = |m: &str| Error::new(ErrorKind::Model(format!("synthetic model: {m}")));
    let block = spec.wtype.block_size().max(32);
    if spec.dim % block != 0 || spec.ffn % block != 0 || spec.heads == 0 || spec.kv_heads == 0 {
        return Err(bad(
            "dim and ffn must be multiples of the block size, heads > 0",
        ));
    }
    let (tokens, merges, types) = synthetic_vocabulary();
    let vocab = tokens.len();
    let head_dim = spec.dim / spec.heads;
    let kv = spec.kv_heads * head_dim;
    let mut rng = Rng(spec.seed);

    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    // A large embedding scale makes the output distribution far from uniform, so coding
    // costs vary by symbol as with a trained model.
    tensors.push((
        "token_embd.weight".into(),
        matrix(&mut rng, spec, vocab, spec.dim, 2.0)?,
    ));
    let w = 1.0 / (spec.dim as f32).sqrt();
    for i in 0..spec.layers {
        let p = format!("blk.{i}");
        let mut t = |name: &str, q: QTensor| tensors.push((format!("{p}.{name}.weight"), q));
        t("attn_norm", f32_vector(&mut rng, spec.dim)?);
        t("attn_q", matrix(&mut rng, spec, spec.dim, spec.dim, w)?);
        t("attn_k", matrix(&mut rng, spec, kv, spec.dim, w)?);
        t("attn_v", matrix(&mut rng, spec, kv, spec.dim, w)?);
        t(
            "attn_output",
            matrix(&mut rng, spec, spec.dim, spec.dim, w)?,
        );
        t("ffn_norm", f32_vector(&mut rng, spec.dim)?);
        t("ffn_gate", matrix(&mut rng, spec, spec.ffn, spec.dim, w)?);
        t("ffn_up", matrix(&mut rng, spec, spec.ffn, spec.dim, w)?);
        t(
            "ffn_down",
            matrix(
                &mut rng,
                spec,
                spec.dim,
                spec.ffn,
                1.0 / (spec.ffn as f32).sqrt(),
            )?,
        );
    }
    tensors.push(("output_norm.weight".into(), f32_vector(&mut rng, spec.dim)?));
    if !spec.tied {
        tensors.push((
            "output.weight".into(),
            matrix(&mut rng, spec, vocab, spec.dim, 2.0)?,
        ));
    }
    if spec.rope == SyntheticRope::Llama3 {
        let f = llama3_factors(spec);
        let raw: Vec<u8> = f.iter().flat_map(|x| x.to_le_bytes()).collect();
        let storage = QStorage::from_data(Cow::Owned(raw), &Device::Cpu, GgmlDType::F32)?;
        tensors.push((
            "rope_freqs.weight".into(),
            QTensor::new(storage, (f.len(),))?,
        ));
    }

    let strings = |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        (
            "general.name",
            Value::String("lmzip synthetic test model".into()),
        ),
        ("llama.block_count", Value::U32(spec.layers as u32)),
        ("llama.context_length", Value::U32(2048)),
        ("llama.embedding_length", Value::U32(spec.dim as u32)),
        ("llama.feed_forward_length", Value::U32(spec.ffn as u32)),
        ("llama.attention.head_count", Value::U32(spec.heads as u32)),
        (
            "llama.attention.head_count_kv",
            Value::U32(spec.kv_heads as u32),
        ),
        ("llama.rope.freq_base", Value::F32(spec.rope_theta)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.vocab_size", Value::U32(vocab as u32)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.merges", strings(&merges)),
        (
            "tokenizer.ggml.token_type",
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
    ];
    let mut metadata = metadata;
    if let SyntheticRope::Linear(f) = spec.rope {
        metadata.push(("llama.rope.scaling.type", Value::String("linear".into())));
        metadata.push(("llama.rope.scaling.factor", Value::F32(f)));
    }
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &md, &ts)?;
    Ok(out.into_inner())
}

/// Shape of the synthetic Gemma 3 model (`general.architecture = gemma3`). The defaults
/// cost microseconds per row yet exercise what Gemma 3 270M does: sliding-window layers
/// (0–4 and 6) around a full-context one (5, as every sixth layer), a sliding window of 4
/// so a block of a few hundred positions compacts the window caches, grouped-query
/// attention, head dimension independent of the width, query/key norms, the norms after
/// attention and feed-forward, GELU, the tied head, and Gemma 3 270M's weight types: Q8_0
/// embedding and value projections, Q5_0 query/key/gate/up, Q4_K attention output, Q6_K and
/// Q4_K feed-forward down, one F32 matrix, F32 norms.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticGemmaSpec {
    pub seed: u64,
    /// Layers; layer `i` attends the full context when `i % 6 == 5`.
    pub layers: usize,
    /// Embedding width: a multiple of 32.
    pub dim: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// Head dimension; `heads × head_dim` a multiple of 256 (the Q4_K attention output).
    pub head_dim: usize,
    /// Feed-forward width: a multiple of 256 (the K-quant feed-forward down).
    pub ffn: usize,
    /// Positions a sliding-window layer attends (`gemma3.attention.sliding_window`).
    pub sliding_window: usize,
    /// RoPE base of the full-context layers.
    pub rope_theta: f32,
}

impl Default for SyntheticGemmaSpec {
    fn default() -> Self {
        SyntheticGemmaSpec {
            seed: 0x6c6d_7a69_7067_3301,
            layers: 7,
            dim: 64,
            heads: 4,
            kv_heads: 2,
            head_dim: 64,
            ffn: 256,
            sliding_window: 4,
            rope_theta: 1_000_000.0,
        }
    }
}

/// Merged tokens of the synthetic SentencePiece vocabulary (`▁` is a space), best score
/// first; every one is the concatenation of two earlier tokens or characters, so the merge
/// reaches it.
const GEMMA_MERGES: &[&str] = &[
    "▁t", "in", "▁a", "er", "on", "he", "re", "en", "at", "▁s", "▁the", "▁c", "or", "is", "an",
    "▁w", "▁o", "it", "ing", "▁an", "▁and", "▁of", "▁to", "es", "ed", "▁in", "ou", "ar", "▁th",
    "ll", "▁m", "▁d", "▁p", "▁b", "▁f", "▁h", "▁T", "▁ca", "▁cat", "at.",
];

/// User-defined tokens (GGUF type 4): newline, space and tab runs, as Gemma's vocabulary
/// has; the segmenter cuts them out before merging.
const GEMMA_USER: &[&str] = &["\n", "\n\n", "\n\n\n", "  ", "   ", "    ", "\t", "\t\t"];

/// Characters with a token of their own; every other character (all non-ASCII but these)
/// becomes its bytes' `<0xXX>` tokens.
fn gemma_chars() -> Vec<String> {
    let mut v: Vec<String> = vec![SPACE_MARK.to_string()];
    v.extend((b'!'..=b'~').map(|b| (b as char).to_string()));
    v.extend(["é", "—", "東"].map(String::from));
    v
}

/// `▁`, SentencePiece's space.
const SPACE_MARK: &str = "\u{2581}";

/// The synthetic Gemma vocabulary as the GGUF spells it: texts, scores and GGUF token
/// types (3 control `<pad>`, `<eos>`, `<bos>` at ids 0–2; 4 user-defined; 6 the 256 byte
/// tokens; 1 merged tokens and single characters).
pub fn synthetic_gemma_vocabulary() -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let mut tokens: Vec<String> = Vec::new();
    let mut scores = Vec::new();
    let mut types = Vec::new();
    let mut push = |t: String, score: f32, ty: i32| {
        tokens.push(t);
        scores.push(score);
        types.push(ty);
    };
    for t in ["<pad>", "<eos>", "<bos>"] {
        push(t.to_string(), -1000.0, 3);
    }
    for t in GEMMA_USER {
        push(t.to_string(), -1000.0, 4);
    }
    for b in 0..=255u8 {
        push(format!("<0x{b:02X}>"), 0.0, 6);
    }
    for (i, t) in GEMMA_MERGES.iter().enumerate() {
        push(t.to_string(), -(i as f32), 1);
    }
    // Single characters score below every merge, as in Gemma's vocabulary.
    for (i, c) in gemma_chars().into_iter().enumerate() {
        push(c, -1000.0 - i as f32, 1);
    }
    (tokens, scores, types)
}

/// The GGUF file's bytes for a synthetic Gemma 3 model. Matrices are quantized by candle
/// from seed-derived values, so the bytes may change with candle's quantizer (tests
/// compare archives made in one run, never hashes of this file).
pub fn synthetic_gemma_gguf(spec: &SyntheticGemmaSpec) -> Result<Vec<u8>> {
    use gguf_file::Value;
    let bad = |m: &str| Error::new(ErrorKind::Model(format!("synthetic Gemma model: {m}")));
    let qd = spec.heads * spec.head_dim;
    let kv = spec.kv_heads * spec.head_dim;
    if spec.dim % 32 != 0
        || qd % 256 != 0
        || spec.ffn % 256 != 0
        || spec.head_dim % 8 != 0
        || spec.kv_heads == 0
        || spec.heads % spec.kv_heads != 0
    {
        return Err(bad(
            "dim a multiple of 32, heads × head_dim and ffn of 256, \
             head_dim of 8, kv heads dividing heads",
        ));
    }
    let (tokens, scores, types) = synthetic_gemma_vocabulary();
    let vocab = tokens.len();
    let mut rng = Rng(spec.seed);
    let mut mat = |rows: usize, cols: usize, scale: f32, t: GgmlDType| -> Result<QTensor> {
        let v: Vec<f32> = (0..rows * cols).map(|_| scale * rng.unit()).collect();
        if t == GgmlDType::F32 {
            let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            let storage = QStorage::from_data(Cow::Owned(raw), &Device::Cpu, GgmlDType::F32)?;
            return Ok(QTensor::new(storage, (rows, cols))?);
        }
        let t2 = candle_core::Tensor::from_vec(v, (rows, cols), &Device::Cpu)?;
        Ok(QTensor::quantize(&t2, t)?)
    };
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    // Embedding values of ±2 give a peaked output distribution through the tied head.
    tensors.push((
        "token_embd.weight".into(),
        mat(vocab, spec.dim, 2.0, GgmlDType::Q8_0)?,
    ));
    let w = 1.0 / (spec.dim as f32).sqrt();
    let mut norms: Vec<(String, usize)> = Vec::new();
    for i in 0..spec.layers {
        let p = format!("blk.{i}");
        let odd = i % 2 == 1;
        let mut t = |name: &str, q: QTensor| tensors.push((format!("{p}.{name}.weight"), q));
        t("attn_q", mat(qd, spec.dim, w, GgmlDType::Q5_0)?);
        // One matrix kept as F32, which the integer backends quantize by their own rule.
        let k_type = if i == spec.layers - 1 {
            GgmlDType::F32
        } else {
            GgmlDType::Q5_0
        };
        t("attn_k", mat(kv, spec.dim, w, k_type)?);
        let v_type = if odd {
            GgmlDType::Q5_0
        } else {
            GgmlDType::Q8_0
        };
        t("attn_v", mat(kv, spec.dim, w, v_type)?);
        let o_scale = 1.0 / (qd as f32).sqrt();
        t("attn_output", mat(spec.dim, qd, o_scale, GgmlDType::Q4K)?);
        t("ffn_gate", mat(spec.ffn, spec.dim, w, GgmlDType::Q5_0)?);
        t("ffn_up", mat(spec.ffn, spec.dim, w, GgmlDType::Q5_0)?);
        let d_type = if odd { GgmlDType::Q4K } else { GgmlDType::Q6K };
        let d_scale = 1.0 / (spec.ffn as f32).sqrt();
        t("ffn_down", mat(spec.dim, spec.ffn, d_scale, d_type)?);
        for (name, n) in [
            ("attn_norm", spec.dim),
            ("attn_q_norm", spec.head_dim),
            ("attn_k_norm", spec.head_dim),
            ("post_attention_norm", spec.dim),
            ("ffn_norm", spec.dim),
            ("post_ffw_norm", spec.dim),
        ] {
            norms.push((format!("{p}.{name}.weight"), n));
        }
    }
    norms.push(("output_norm.weight".into(), spec.dim));
    for (name, n) in norms {
        tensors.push((name, f32_vector(&mut rng, n)?));
    }

    let strings = |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
    let u = |x: usize| Value::U32(x as u32);
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("gemma3".into())),
        (
            "general.name",
            Value::String("lmzip synthetic Gemma 3 test model".into()),
        ),
        ("gemma3.context_length", u(32_768)),
        ("gemma3.embedding_length", u(spec.dim)),
        ("gemma3.block_count", u(spec.layers)),
        ("gemma3.feed_forward_length", u(spec.ffn)),
        ("gemma3.attention.head_count", u(spec.heads)),
        ("gemma3.attention.head_count_kv", u(spec.kv_heads)),
        ("gemma3.attention.key_length", u(spec.head_dim)),
        ("gemma3.attention.value_length", u(spec.head_dim)),
        ("gemma3.attention.layer_norm_rms_epsilon", Value::F32(1e-6)),
        ("gemma3.rope.freq_base", Value::F32(spec.rope_theta)),
        ("gemma3.attention.sliding_window", u(spec.sliding_window)),
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.pre", Value::String("default".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        (
            "tokenizer.ggml.scores",
            Value::Array(scores.into_iter().map(Value::F32).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(2)),
        ("tokenizer.ggml.eos_token_id", Value::U32(1)),
        ("tokenizer.ggml.padding_token_id", Value::U32(0)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
        ("tokenizer.ggml.add_space_prefix", Value::Bool(false)),
    ];
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &md, &ts)?;
    Ok(out.into_inner())
}

/// Writes the default synthetic Gemma 3 model to `path`.
pub fn write_synthetic_gemma_model(path: &Path) -> Result<()> {
    std::fs::write(path, synthetic_gemma_gguf(&SyntheticGemmaSpec::default())?)?;
    Ok(())
}

/// Loads the default synthetic Gemma 3 model for `backend` (as [`synthetic_model_with`]).
pub fn synthetic_gemma_model_with(backend: u16) -> Result<Model> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("synthetic-gemma3.gguf");
    write_synthetic_gemma_model(&path)?;
    Model::load_with(&path, backend)
}

/// The llama3 RoPE factors of the synthetic model (the function the loader applies to a
/// checkpoint's `rope_scaling`, so GGUF and folder agree).
fn llama3_factors(spec: &SyntheticSpec) -> Vec<f32> {
    crate::engine::llama3_rope_factors(
        spec.dim / spec.heads,
        spec.rope_theta,
        8.0,
        1.0,
        4.0,
        LLAMA3_ORIGINAL_CONTEXT,
    )
}

/// Every logit of one stream fed `tokens` at positions 0.. in a single forward call
/// (`tokens.len() × vocab` values), for tests that compare models or backends.
pub fn stream_logits(model: &crate::engine::Net, tokens: &[u32]) -> Result<Vec<f32>> {
    let mut caches = vec![model.new_cache(tokens.len())];
    let rows: Vec<crate::engine::Row> = tokens
        .iter()
        .enumerate()
        .map(|(p, &t)| crate::engine::Row {
            stream: 0,
            token: t,
            pos: p,
        })
        .collect();
    let mut out = vec![0f32; rows.len() * model.vocab()];
    model.forward(&mut caches, &rows, &mut out)?;
    Ok(out)
}

/// Writes the default synthetic model to `path`.
pub fn write_synthetic_model(path: &Path) -> Result<()> {
    std::fs::write(path, synthetic_gguf(&SyntheticSpec::default())?)?;
    Ok(())
}

/// Loads the default synthetic model for `backend` (the file lives in a temporary folder
/// only while loading; `Model::path` then names a file that no longer exists).
pub fn synthetic_model_with(backend: u16) -> Result<Model> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("synthetic.gguf");
    write_synthetic_model(&path)?;
    Model::load_with(&path, backend)
}

/// Writes a Hugging Face model folder equivalent to the synthetic GGUF of `spec`:
/// config.json, tokenizer.json and the weights in `shards` safetensors files (with
/// model.safetensors.index.json when more than one). Every tensor is the GGUF tensor's
/// dequantized values, renamed, with attn_q/attn_k rows put back in the checkpoint's
/// rotate-half order (the inverse of llama.cpp's permutation). Matrices are stored as
/// `dtype` and must convert exactly (an F16 GGUF for F16, any type for F32); norm vectors
/// stay F32, as mixed-precision checkpoints keep them.
pub fn write_synthetic_checkpoint(
    spec: &SyntheticSpec,
    dir: &Path,
    dtype: candle_core::DType,
    shards: usize,
) -> Result<()> {
    use crate::model::checkpoint::unpermute_from_interleaved_rope;
    use candle_core::{DType, Tensor};
    let bad = |m: String| Error::new(ErrorKind::Model(format!("synthetic checkpoint: {m}")));
    let gguf = synthetic_gguf(spec)?;
    let mut r = std::io::Cursor::new(&gguf);
    let content = gguf_file::Content::read(&mut r)?;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for name in names {
        let t = content
            .tensor(&mut r, name, &Device::Cpu)?
            .dequantize(&Device::Cpu)?;
        let hf = match name.as_str() {
            "rope_freqs.weight" => continue,
            "token_embd.weight" => "model.embed_tokens.weight".to_string(),
            "output_norm.weight" => "model.norm.weight".to_string(),
            "output.weight" => "lm_head.weight".to_string(),
            other => {
                let rest = other
                    .strip_prefix("blk.")
                    .ok_or_else(|| bad(other.into()))?;
                let (n, t) = rest.split_once('.').ok_or_else(|| bad(other.into()))?;
                let hf = match t {
                    "attn_norm.weight" => "input_layernorm.weight",
                    "attn_q.weight" => "self_attn.q_proj.weight",
                    "attn_k.weight" => "self_attn.k_proj.weight",
                    "attn_v.weight" => "self_attn.v_proj.weight",
                    "attn_output.weight" => "self_attn.o_proj.weight",
                    "ffn_norm.weight" => "post_attention_layernorm.weight",
                    "ffn_gate.weight" => "mlp.gate_proj.weight",
                    "ffn_up.weight" => "mlp.up_proj.weight",
                    "ffn_down.weight" => "mlp.down_proj.weight",
                    _ => return Err(bad(format!("unexpected tensor {other}"))),
                };
                format!("model.layers.{n}.{hf}")
            }
        };
        let t = if hf.ends_with("q_proj.weight") {
            unpermute_from_interleaved_rope(&t, spec.heads)?
        } else if hf.ends_with("k_proj.weight") {
            unpermute_from_interleaved_rope(&t, spec.kv_heads)?
        } else {
            t
        };
        let t = if t.rank() == 2 && dtype != DType::F32 {
            let c = t.to_dtype(dtype)?;
            let back: Vec<f32> = c.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            if back != t.flatten_all()?.to_vec1::<f32>()? {
                return Err(bad(format!("{name} is not exact in {dtype:?}")));
            }
            c
        } else {
            t
        };
        tensors.push((hf, t));
    }
    std::fs::create_dir_all(dir)?;
    let shards = shards.clamp(1, tensors.len());
    if shards == 1 {
        candle_core::safetensors::save(
            &tensors
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
            dir.join(crate::model::checkpoint::SINGLE_FILE),
        )?;
    } else {
        let mut map = serde_json::Map::new();
        for k in 0..shards {
            let file = format!("model-{:05}-of-{shards:05}.safetensors", k + 1);
            let part: std::collections::HashMap<String, Tensor> = tensors
                .iter()
                .skip(k)
                .step_by(shards)
                .map(|(n, t)| (n.clone(), t.clone()))
                .collect();
            for n in part.keys() {
                map.insert(n.clone(), serde_json::Value::String(file.clone()));
            }
            candle_core::safetensors::save(&part, dir.join(&file))?;
        }
        let index = serde_json::json!({ "metadata": {}, "weight_map": map });
        std::fs::write(
            dir.join(crate::model::checkpoint::INDEX_FILE),
            serde_json::to_vec_pretty(&index).map_err(|e| bad(e.to_string()))?,
        )?;
    }
    let (tokens, merges, _) = synthetic_vocabulary();
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::Value::from(i)))
        .collect();
    let merges: Vec<Vec<&str>> = merges
        .iter()
        .filter_map(|m| m.split_once(' ').map(|(a, b)| vec![a, b]))
        .collect();
    let added: Vec<serde_json::Value> = tokens[..2]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges}
    });
    let rope_scaling = match spec.rope {
        SyntheticRope::None => serde_json::Value::Null,
        SyntheticRope::Linear(f) => serde_json::json!({"type": "linear", "factor": f}),
        SyntheticRope::Llama3 => serde_json::json!({"rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": LLAMA3_ORIGINAL_CONTEXT}),
    };
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": spec.dim,
        "intermediate_size": spec.ffn,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "vocab_size": tokens.len(),
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": spec.rope_theta,
        "rope_scaling": rope_scaling,
        "tie_word_embeddings": spec.tied,
        "attention_bias": false,
        "mlp_bias": false,
        "bos_token_id": 0,
        "eos_token_id": 0,
    });
    let json = |v: &serde_json::Value| serde_json::to_vec_pretty(v).map_err(|e| bad(e.to_string()));
    std::fs::write(dir.join("tokenizer.json"), json(&tokenizer)?)?;
    std::fs::write(dir.join("config.json"), json(&config)?)?;
    Ok(())
}

/// The original behind the archive the corruption fuzzer mutates (fuzz/), shared with the
/// seed writer so that seeds and fuzzer agree on the header: several blocks, an escape.
pub const FUZZ_ORIGINAL: &[u8] =
    b"The quick brown fox jumps over the lazy dog. \xff\x04 Then it sat in the sun.\n";

/// The encoder settings of the fuzzed archive: 16-token blocks, up to 4 side by side.
pub fn fuzz_options() -> crate::pipeline::CompressOptions {
    crate::pipeline::CompressOptions {
        block_tokens: 16,
        streams: 4,
        regions: false,
        ..Default::default()
    }
}

/// Loads the default synthetic model for the default backend.
pub fn synthetic_model() -> Result<Model> {
    synthetic_model_with(crate::engine::DEFAULT_BACKEND)
}

/// The real default model for tests: `LMZIP_MODEL` (when set and non-empty), else
/// `models/SmolLM2-135M-Instruct.Q4_1.gguf` in this repository. `None` (with a message)
/// when it is missing, so a developer without the model can still run the fast tests; under
/// CI (env `CI` set) a missing model is a failure, never a silent skip.
pub fn real_model_path() -> Option<std::path::PathBuf> {
    real_path("LMZIP_MODEL", crate::model::known::SMOLLM2_135M)
}

/// The real Gemma 3 270M for tests: `LMZIP_GEMMA_MODEL` (when set and non-empty), else
/// `models/gemma-3-270m-q4_k_m.gguf` in this repository; missing, as [`real_model_path`]
/// (a failure under CI).
pub fn real_gemma_model_path() -> Option<std::path::PathBuf> {
    real_path("LMZIP_GEMMA_MODEL", crate::model::known::GEMMA3_270M)
}

fn real_path(var: &str, k: crate::model::known::KnownModel) -> Option<std::path::PathBuf> {
    let p = std::env::var_os(var)
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("models")
                .join(k.file)
        });
    if p.is_file() {
        Some(p)
    } else if std::env::var_os("CI").is_some() {
        panic!(
            "CI is set and the model {} is missing at {}: run `bash models/fetch.sh {}` \
             (or set {var})",
            k.name,
            p.display(),
            k.name
        );
    } else {
        eprintln!(
            "skipping: model {} not found at {} (run `bash models/fetch.sh {}` or set {var})",
            k.name,
            p.display(),
            k.name
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{self, CompressOptions};

    #[test]
    fn byte_chars_match_the_tokenizer() {
        // The tokenizer's own table is private; check the well-known fixed points.
        assert_eq!(byte_char(b' '), 'Ġ');
        assert_eq!(byte_char(b'\n'), 'Ċ');
        assert_eq!(byte_char(b'a'), 'a');
        assert_eq!(byte_char(0), 'Ā');
        assert_eq!(f16_bits(1.0), 0x3C00);
        assert_eq!(f16_bits(-2.0), 0xC000);
    }

    #[test]
    fn synthetic_gemma_model_loads_and_round_trips() {
        let t0 = std::time::Instant::now();
        let spec = SyntheticGemmaSpec::default();
        let bytes = synthetic_gemma_gguf(&spec).unwrap();
        assert_eq!(bytes, synthetic_gemma_gguf(&spec).unwrap());
        // The file has the types Gemma 3 270M's has, and its metadata as the engine reads it.
        let content = gguf_file::Content::read(&mut std::io::Cursor::new(&bytes)).unwrap();
        let mut kinds: Vec<GgmlDType> = content
            .tensor_infos
            .values()
            .map(|t| t.ggml_dtype)
            .collect();
        kinds.sort_by_key(|k| format!("{k:?}"));
        kinds.dedup();
        assert_eq!(
            kinds,
            [
                GgmlDType::F32,
                GgmlDType::Q4K,
                GgmlDType::Q5_0,
                GgmlDType::Q6K,
                GgmlDType::Q8_0
            ]
        );
        assert!(!content.tensor_infos.contains_key("output.weight"));
        let (cfg, _) = crate::engine::Gemma3Config::from_gguf(&content).unwrap();
        assert_eq!(cfg.sliding_window, 4);
        let full: Vec<usize> = (0..cfg.n_layers).filter(|&i| cfg.is_full(i)).collect();
        assert_eq!(full, [5]);
        for backend in [1, 2, 3] {
            let m = synthetic_gemma_model_with(backend).unwrap();
            assert_eq!(m.net.arch(), "gemma3");
            assert_eq!(m.start_token, 2, "<bos>");
            assert_eq!(m.control_tokens, vec![0, 1, 2]);
            let text =
                "the cat sat on the mat.\n\n  the cat and\tthe hat \u{2581} naïve 東京 \u{1F680}";
            let syms = m.tokenizer.encode(text.as_bytes());
            assert!(syms.len() < text.len(), "merges apply: {syms:?}");
            let id = |t: &str| m.tokenizer.token_id(t).unwrap();
            for t in [
                "\u{2581}the",
                "\n\n",
                "  ",
                "\t",
                "<0xC3>",
                "<0xF0>",
                "\u{6771}",
            ] {
                assert!(syms.contains(&id(t)), "{t} in {syms:?}");
            }
            // A block of a few hundred positions: the window caches compact.
            let mut data = b"the cat sat on the mat; the hat is on the cat. ".repeat(12);
            data.extend_from_slice(b"\x00\xff\xc3 \n\n\n\n   end");
            for policy in [crate::format::WINDOW_SHIFT, crate::format::WINDOW_REPREFILL] {
                let opts = CompressOptions {
                    block_tokens: 400,
                    streams: 2,
                    window: 40,
                    keep: 24,
                    window_policy: policy,
                    regions: false,
                    ..CompressOptions::default()
                };
                let mut archive = Vec::new();
                pipeline::compress(&m, &data, &opts, &mut archive, &mut |_| {}).unwrap();
                let mut back = Vec::new();
                pipeline::decompress(&m, &mut &archive[..], &mut back, &mut |_| {}).unwrap();
                assert!(back == data, "backend {backend}, policy {policy}");
            }
        }
        assert!(t0.elapsed().as_secs() < 30, "{:?}", t0.elapsed());
    }

    #[test]
    fn synthetic_model_loads_and_round_trips_quickly() {
        let t0 = std::time::Instant::now();
        let bytes = synthetic_gguf(&SyntheticSpec::default()).unwrap();
        assert_eq!(bytes, synthetic_gguf(&SyntheticSpec::default()).unwrap());
        for backend in [1, 2] {
            let m = synthetic_model_with(backend).unwrap();
            assert_eq!(m.start_token, 0);
            assert_eq!(m.control_tokens, vec![0, 1]);
            assert!(m.tokenizer.vocab_size() > 280 && m.tokenizer.vocab_size() < 300);
            let text = b"the cat and the dog sat in the sun, then they went home.\n\xff\x04 12345";
            let syms = m.tokenizer.encode(text);
            assert!(syms.len() < text.len(), "merges apply: {syms:?}");
            let opts = CompressOptions {
                block_tokens: 16,
                streams: 3,
                regions: false,
                ..CompressOptions::default()
            };
            let mut archive = Vec::new();
            pipeline::compress(&m, text, &opts, &mut archive, &mut |_| {}).unwrap();
            let mut back = Vec::new();
            pipeline::decompress(&m, &mut &archive[..], &mut back, &mut |_| {}).unwrap();
            assert_eq!(back, text);
        }
        // Generous: typically tens of milliseconds.
        assert!(t0.elapsed().as_secs() < 20, "{:?}", t0.elapsed());
    }
}
