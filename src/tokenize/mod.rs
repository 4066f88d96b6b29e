//! Text ⇄ symbols, lossless for every byte sequence.
//!
//! The coded alphabet is the model's vocabulary (ids `0..V`) plus 256 raw-byte escapes
//! (`V + b`). Decoding a symbol means appending its bytes, from our own table; the
//! segmenter — GPT-2 byte-level BPE (HF `tokenizers`, built from the GGUF's vocabulary and
//! merges) or SentencePiece-style BPE with byte fallback (`spm`, Gemma) — is only the
//! encoder's way of choosing a good symbol sequence, and the encoder checks its output.
//! Special tokens are not registered as such, so text that spells `<|endoftext|>` is coded
//! as plain text; bytes with no single-byte token and invalid UTF-8 go through escapes or
//! single-byte tokens.

pub(crate) mod spm;

use crate::{Error, ErrorKind, Result};
use candle_core::quantized::gguf_file;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{PreTokenizerWrapper, TokenizerImpl};

type Hf = TokenizerImpl<
    BPE,
    tokenizers::NormalizerWrapper,
    PreTokenizerWrapper,
    tokenizers::PostProcessorWrapper,
    tokenizers::DecoderWrapper,
>;

/// Longest run handed to the BPE tokenizer in one call; longer valid runs are cut at a
/// line break (or any char boundary) to bound its memory.
const MAX_RUN: usize = 1 << 18;

/// How the encoder cuts text into tokens.
enum Segmenter {
    /// GPT-2 byte-level BPE with merges.
    Bpe(Box<Hf>),
    /// SentencePiece-style BPE by token scores, byte fallback.
    Spm(Box<spm::Spm>),
}

/// Lossless tokenizer over the vocabulary plus byte escapes.
pub struct Tokenizer {
    seg: Segmenter,
    /// Bytes of every symbol, vocabulary then escapes, concatenated.
    bytes: Vec<u8>,
    /// Offsets into `bytes`: symbol i is bytes[offs[i]..offs[i+1]].
    offs: Vec<u32>,
    vocab_size: usize,
    /// For each byte value: the single-byte vocabulary token, if any.
    byte_token: [Option<u32>; 256],
    ids: HashMap<String, u32>,
    identity: [u8; 32],
}

/// GPT-2's byte-level map: every byte is shown as a printable char (printable Latin-1 bytes
/// as themselves, the rest as U+0100 onwards, in byte order).
fn byte_level_chars() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        out[b as usize] = if printable {
            b as char
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('\0')
        };
    }
    out
}

fn tok_err(m: impl Into<String>) -> Error {
    Error::new(ErrorKind::Tokenizer(m.into()))
}

/// The pre-tokenizers a GGUF file can name.
fn builtin_pre(pre: &str) -> Result<PreTokenizerWrapper> {
    Ok(match pre {
        "smollm" => Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, true)),
        ])
        .into(),
        "gpt2" | "default" => ByteLevel::new(false, false, true).into(),
        other => {
            return Err(Error::unsupported(
                "pre-tokenizer",
                format!("'{other}'"),
                "smollm, gpt2 (GGUF); any byte-level one from a tokenizer.json directory",
            ))
        }
    })
}

/// The `smollm` and `gpt2` pre-tokenizers as `tokenizer.json` writes them, in
/// [`canonical_json`] form without `trim_offsets` (which moves offsets, not boundaries).
const SMOLLM_PRE_JSON: &str = r#"{"pretokenizers":[{"individual_digits":true,"type":"Digits"},{"add_prefix_space":false,"type":"ByteLevel","use_regex":true}],"type":"Sequence"}"#;
const GPT2_PRE_JSON: &str = r#"{"add_prefix_space":false,"type":"ByteLevel","use_regex":true}"#;

/// Whether a pre-tokenizer description contains a ByteLevel step.
fn mentions_byte_level(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(m) => {
            m.get("type").and_then(|t| t.as_str()) == Some("ByteLevel")
                || m.values().any(mentions_byte_level)
        }
        serde_json::Value::Array(a) => a.iter().any(mentions_byte_level),
        _ => false,
    }
}

fn strip_key(v: &mut serde_json::Value, key: &str) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove(key);
            m.values_mut().for_each(|x| strip_key(x, key));
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| strip_key(x, key)),
        _ => {}
    }
}

/// JSON with object keys in byte order and no spaces, whatever serde_json's map order.
pub(crate) fn canonical_json(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::String((*k).clone()), canonical_json(&m[*k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(canonical_json).collect();
            format!("[{}]", parts.join(","))
        }
        other => other.to_string(),
    }
}

impl Tokenizer {
    /// Builds the tokenizer from a GGUF file's metadata.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self> {
        let md = &content.metadata;
        let get_str = |k: &str| md.get(k).and_then(|v| v.to_string().ok()).cloned();
        let model = get_str("tokenizer.ggml.model").unwrap_or_default();
        if model != "gpt2" && model != "llama" {
            return Err(Error::unsupported(
                "tokenizer model",
                format!("'{model}'"),
                "gpt2 byte-level BPE, llama (SentencePiece-style BPE with byte fallback)",
            ));
        }
        let pre = get_str("tokenizer.ggml.pre").unwrap_or_else(|| "default".into());
        let list = |k: &str| -> Result<Vec<String>> {
            md.get(k)
                .ok_or_else(|| tok_err(format!("GGUF metadata lacks {k}")))?
                .to_vec()
                .map_err(|e| tok_err(format!("{k}: {e}")))?
                .iter()
                .map(|v| {
                    v.to_string()
                        .cloned()
                        .map_err(|e| tok_err(format!("{k}: {e}")))
                })
                .collect()
        };
        if model == "llama" {
            let nums = |k: &str| -> Result<Vec<gguf_file::Value>> {
                md.get(k)
                    .ok_or_else(|| tok_err(format!("GGUF metadata lacks {k}")))?
                    .to_vec()
                    .cloned()
                    .map_err(|e| tok_err(format!("{k}: {e}")))
            };
            let scores = nums("tokenizer.ggml.scores")?
                .iter()
                .map(|v| v.to_f32().map_err(|e| tok_err(format!("token score: {e}"))))
                .collect::<Result<Vec<f32>>>()?;
            let types = nums("tokenizer.ggml.token_type")?
                .iter()
                .map(|v| v.to_i32().map_err(|e| tok_err(format!("token type: {e}"))))
                .collect::<Result<Vec<i32>>>()?;
            let add_space = md
                .get("tokenizer.ggml.add_space_prefix")
                .and_then(|v| v.to_bool().ok())
                .unwrap_or(true);
            if add_space {
                // A prefix space is not part of the input: lossless coding cannot add it.
                return Err(Error::unsupported(
                    "tokenizer option",
                    "add_space_prefix = true".to_string(),
                    "SentencePiece vocabularies without a space prefix (Gemma 3)",
                ));
            }
            return Self::from_spm(list("tokenizer.ggml.tokens")?, &scores, &types);
        }
        Self::from_parts(
            list("tokenizer.ggml.tokens")?,
            list("tokenizer.ggml.merges")?,
            &pre,
        )
    }

    /// Builds a SentencePiece-style tokenizer from the vocabulary as the GGUF spells it
    /// (`▁` for spaces, `<0xXX>` byte-fallback tokens), scores and GGUF token types.
    pub fn from_spm(tokens: Vec<String>, scores: &[f32], types: &[i32]) -> Result<Self> {
        if scores.len() != tokens.len() || types.len() != tokens.len() {
            return Err(tok_err("token scores or types do not match the vocabulary"));
        }
        let seg = spm::Spm::new(&tokens, scores, types)
            .ok_or_else(|| tok_err("the vocabulary lacks some of the 256 <0xXX> byte tokens"))?;
        let mut bytes = Vec::new();
        let mut offs = Vec::with_capacity(tokens.len() + 257);
        let mut ids = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            offs.push(bytes.len() as u32);
            match (types[i], spm::parse_byte_token(t)) {
                (spm::TYPE_BYTE, Some(b)) => bytes.push(b),
                (spm::TYPE_NORMAL, _) => {
                    bytes.extend_from_slice(t.replace(spm::SPACE_MARK, " ").as_bytes())
                }
                _ => bytes.extend_from_slice(t.as_bytes()),
            }
            if bytes.len() == offs[i] as usize {
                return Err(tok_err(format!("token {i} stands for no bytes")));
            }
            ids.entry(t.clone()).or_insert(i as u32);
        }
        for b in 0..=255u8 {
            offs.push(bytes.len() as u32);
            bytes.push(b);
        }
        offs.push(bytes.len() as u32);
        // Identity: everything segmentation and decoding read — texts, scores, types.
        let mut h = Sha256::new();
        h.update(b"lmzip tokenizer spm v1\0");
        h.update((tokens.len() as u32).to_le_bytes());
        for (i, t) in tokens.iter().enumerate() {
            h.update(types[i].to_le_bytes());
            h.update(scores[i].to_bits().to_le_bytes());
            h.update((t.len() as u32).to_le_bytes());
            h.update(t.as_bytes());
        }
        let byte_token = seg.byte_tokens().map(Some);
        Ok(Tokenizer {
            seg: Segmenter::Spm(Box::new(seg)),
            bytes,
            offs,
            vocab_size: tokens.len(),
            byte_token,
            ids,
            identity: h.finalize().into(),
        })
    }

    /// GGUF token types this tokenizer never produces (the predictor holds them at the
    /// floor): unknown, control and user-defined for GPT-2 BPE, where user-defined tokens
    /// are special ones; unknown and control for SentencePiece, whose user-defined tokens
    /// (newline and space runs, tags) are ordinary text.
    pub fn never_produced_types(&self) -> std::ops::RangeInclusive<i32> {
        match self.seg {
            Segmenter::Bpe(_) => 2..=4,
            Segmenter::Spm(_) => 2..=3,
        }
    }

    /// Builds the tokenizer from byte-level token strings, merges ("a b") and the
    /// pre-tokenizer name (`smollm`: digits split one by one, then GPT-2 byte-level).
    pub fn from_parts(tokens: Vec<String>, merges: Vec<String>, pre: &str) -> Result<Self> {
        let merge_pairs: Vec<(String, String)> = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| tok_err(format!("malformed merge '{m}'")))
            })
            .collect::<Result<_>>()?;
        Self::build(tokens, merge_pairs, builtin_pre(pre)?, pre, false)
    }

    /// Builds the tokenizer from a Hugging Face `tokenizer.json` (byte-level BPE only).
    /// Returns it with the ids of its added tokens (special or user-defined: the ones a
    /// GGUF conversion marks as control/user-defined, which the predictor holds at the
    /// floor).
    pub fn from_hf_json(json: &[u8]) -> Result<(Self, Vec<u32>)> {
        use serde_json::Value;
        let v: Value = serde_json::from_slice(json)
            .map_err(|e| tok_err(format!("tokenizer.json is not valid JSON: {e}")))?;
        let model = &v["model"];
        let kind = model["type"].as_str().unwrap_or("(none)");
        if kind != "BPE" {
            return Err(Error::unsupported(
                "tokenizer model",
                format!("'{kind}'"),
                "byte-level BPE (tokenizer.json model type BPE with a ByteLevel pre-tokenizer)",
            ));
        }
        // Options that change what the BPE emits in ways the byte-level table cannot
        // describe are refused rather than approximated.
        let set = |k: &str| !matches!(&model[k], Value::Null | Value::Bool(false));
        let empty = |k: &str| matches!(&model[k], Value::Null) || model[k].as_str() == Some("");
        if set("dropout") || set("byte_fallback") || set("fuse_unk") {
            return Err(Error::unsupported(
                "BPE option",
                "dropout, byte_fallback or fuse_unk".to_string(),
                "deterministic byte-level BPE",
            ));
        }
        if !empty("continuing_subword_prefix") || !empty("end_of_word_suffix") {
            return Err(Error::unsupported(
                "BPE option",
                "a subword prefix or suffix".to_string(),
                "deterministic byte-level BPE",
            ));
        }
        if !v["normalizer"].is_null() {
            let t = v["normalizer"]["type"].as_str().unwrap_or("?");
            return Err(Error::unsupported(
                "normalizer",
                format!("'{t}'"),
                "none (lossless coding needs the text as it is)",
            ));
        }
        let pre_json = &v["pre_tokenizer"];
        if !mentions_byte_level(pre_json) {
            return Err(Error::unsupported(
                "pre-tokenizer",
                format!("'{}'", pre_json["type"].as_str().unwrap_or("none")),
                "a ByteLevel pre-tokenizer (alone or in a Sequence)",
            ));
        }
        let pre: PreTokenizerWrapper = serde_json::from_value(pre_json.clone())
            .map_err(|e| tok_err(format!("tokenizer.json pre_tokenizer: {e}")))?;
        let ignore_merges = model["ignore_merges"].as_bool().unwrap_or(false);
        // The name recorded in the tokenizer identity: the GGUF name when the pre-tokenizer
        // is one of the built-in ones (so a GGUF and its source checkpoint share identity),
        // else the canonical JSON, which fixes the segmentation.
        let mut canon = pre_json.clone();
        strip_key(&mut canon, "trim_offsets");
        let canon = canonical_json(&canon);
        let mut name = match canon.as_str() {
            SMOLLM_PRE_JSON => "smollm".to_string(),
            GPT2_PRE_JSON => "gpt2".to_string(),
            _ => format!("json:{canon}"),
        };
        if ignore_merges {
            name.push_str(";ignore_merges");
        }

        let mut slots: Vec<Option<String>> = Vec::new();
        let mut put = |id: u64, t: &str| -> Result<()> {
            let i = usize::try_from(id)
                .ok()
                .filter(|&i| i < (1 << 24))
                .ok_or_else(|| tok_err(format!("token id {id} out of range")))?;
            if slots.len() <= i {
                slots.resize(i + 1, None);
            }
            match &slots[i] {
                Some(old) if old != t => {
                    Err(tok_err(format!("token id {i} is both '{old}' and '{t}'")))
                }
                _ => {
                    slots[i] = Some(t.to_string());
                    Ok(())
                }
            }
        };
        let vocab = model["vocab"]
            .as_object()
            .ok_or_else(|| tok_err("tokenizer.json has no model.vocab"))?;
        for (t, id) in vocab {
            let id = id
                .as_u64()
                .ok_or_else(|| tok_err(format!("vocab entry '{t}' has no integer id")))?;
            put(id, t)?;
        }
        let mut added = Vec::new();
        for a in v["added_tokens"].as_array().into_iter().flatten() {
            let (Some(id), Some(t)) = (a["id"].as_u64(), a["content"].as_str()) else {
                return Err(tok_err("malformed added_tokens entry"));
            };
            put(id, t)?;
            added.push(id as u32);
        }
        added.sort_unstable();
        added.dedup();
        let tokens: Vec<String> = slots
            .into_iter()
            .enumerate()
            .map(|(i, t)| t.ok_or_else(|| tok_err(format!("no token has id {i}"))))
            .collect::<Result<_>>()?;
        let mut merges = Vec::new();
        for m in model["merges"].as_array().into_iter().flatten() {
            let pair = match m {
                Value::String(s) => s
                    .split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string())),
                Value::Array(p) => match (p.first().and_then(Value::as_str), p.get(1)) {
                    (Some(a), Some(Value::String(b))) if p.len() == 2 => {
                        Some((a.to_string(), b.clone()))
                    }
                    _ => None,
                },
                _ => None,
            };
            merges.push(pair.ok_or_else(|| tok_err(format!("malformed merge {m}")))?);
        }
        let t = Self::build(tokens, merges, pre, &name, ignore_merges)?;
        Ok((t, added))
    }

    /// The common constructor: vocabulary in id order, merges in rank order, the
    /// pre-tokenizer and the name its identity records.
    fn build(
        tokens: Vec<String>,
        merge_pairs: Vec<(String, String)>,
        pre_tok: PreTokenizerWrapper,
        pre: &str,
        ignore_merges: bool,
    ) -> Result<Self> {
        // Merges as GGUF spells them ("a b"), for the identity.
        let merges: Vec<String> = merge_pairs
            .iter()
            .map(|(a, b)| format!("{a} {b}"))
            .collect();
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merge_pairs)
            .ignore_merges(ignore_merges)
            .build()
            .map_err(|e| tok_err(format!("building BPE: {e}")))?;
        let mut hf: Hf = TokenizerImpl::new(bpe);
        hf.with_pre_tokenizer(Some(pre_tok));

        // Symbol byte table: byte-level chars map back to their bytes; any other char
        // (only in special tokens) stands for its own UTF-8.
        let map = byte_level_chars();
        let mut inverse: HashMap<char, u8> = HashMap::with_capacity(256);
        for (b, c) in map.iter().enumerate() {
            inverse.insert(*c, b as u8);
        }
        let mut bytes = Vec::new();
        let mut offs = Vec::with_capacity(tokens.len() + 257);
        let mut byte_token = [None; 256];
        let mut ids = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            offs.push(bytes.len() as u32);
            for ch in t.chars() {
                match inverse.get(&ch) {
                    Some(&b) => bytes.push(b),
                    None => bytes.extend_from_slice(ch.encode_utf8(&mut [0u8; 4]).as_bytes()),
                }
            }
            let start = offs[i] as usize;
            if bytes.len() - start == 1
                && t.chars().count() == 1
                && inverse.contains_key(&t.chars().next().unwrap_or('\0'))
            {
                let b = bytes[start] as usize;
                byte_token[b].get_or_insert(i as u32);
            }
            if bytes.len() == start {
                return Err(tok_err(format!("token {i} stands for no bytes")));
            }
            ids.entry(t.clone()).or_insert(i as u32);
        }
        for b in 0..=255u8 {
            offs.push(bytes.len() as u32);
            bytes.push(b);
        }
        offs.push(bytes.len() as u32);

        let mut h = Sha256::new();
        h.update(b"lmzip tokenizer v1\0");
        h.update((pre.len() as u32).to_le_bytes());
        h.update(pre.as_bytes());
        h.update((offs.len() as u32 - 1).to_le_bytes());
        for w in offs.windows(2) {
            let s = &bytes[w[0] as usize..w[1] as usize];
            h.update((s.len() as u32).to_le_bytes());
            h.update(s);
        }
        h.update((merges.len() as u32).to_le_bytes());
        for m in &merges {
            h.update((m.len() as u32).to_le_bytes());
            h.update(m.as_bytes());
        }
        let identity = h.finalize().into();
        Ok(Tokenizer {
            seg: Segmenter::Bpe(Box::new(hf)),
            bytes,
            offs,
            vocab_size: tokens.len(),
            byte_token,
            ids,
            identity,
        })
    }

    /// Number of vocabulary tokens V.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Size of the coded alphabet: V + 256.
    pub fn num_symbols(&self) -> usize {
        self.vocab_size + 256
    }

    /// The bytes a symbol stands for; empty for an id outside the alphabet.
    pub fn symbol_bytes(&self, sym: u32) -> &[u8] {
        let i = sym as usize;
        match (self.offs.get(i), self.offs.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.bytes[a as usize..b as usize],
            _ => &[],
        }
    }

    /// sha256 over everything decoding depends on.
    pub fn identity(&self) -> [u8; 32] {
        self.identity
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// The symbol for one raw byte: its single-byte token, else its escape.
    fn byte_symbol(&self, b: u8) -> u32 {
        self.byte_token[b as usize].unwrap_or(self.vocab_size as u32 + b as u32)
    }

    /// Encodes arbitrary bytes. The concatenation of `symbol_bytes` over the result equals
    /// `data` exactly: each BPE run is checked and replaced by per-byte symbols if not.
    pub fn encode(&self, data: &[u8]) -> Vec<u32> {
        let mut out = Vec::with_capacity(data.len() / 3 + 16);
        let mut i = 0;
        while i < data.len() {
            // A maximal valid UTF-8 run made of bytes that each have a token.
            let run_end = self.run_end(data, i);
            if run_end == i {
                out.push(self.byte_symbol(data[i]));
                i += 1;
                continue;
            }
            self.encode_run(&data[i..run_end], &mut out);
            i = run_end;
        }
        out
    }

    /// End of the codable valid-UTF-8 run starting at `i` (== i if data[i] cannot start one),
    /// cut to at most MAX_RUN bytes, preferably after a newline.
    fn run_end(&self, data: &[u8], i: usize) -> usize {
        let limit = (i + MAX_RUN).min(data.len());
        let valid = match std::str::from_utf8(&data[i..limit]) {
            Ok(_) => limit,
            Err(e) => i + e.valid_up_to(),
        };
        let end = data[i..valid]
            .iter()
            .position(|&b| self.byte_token[b as usize].is_none())
            .map_or(valid, |p| i + p);
        if end == limit && limit < data.len() {
            // Cut the long run at its last newline so the BPE sees whole lines.
            if let Some(p) = data[i..end].iter().rposition(|&b| b == b'\n') {
                if p > 0 {
                    return i + p + 1;
                }
            }
            // Else at a char boundary (the run is valid UTF-8 up to `end`).
            let mut e = end;
            while e > i && (data[e] & 0xC0) == 0x80 {
                e -= 1;
            }
            return if e > i { e } else { end };
        }
        end
    }

    /// Tokenizes one valid UTF-8 run with the BPE, verifying the bytes.
    fn encode_run(&self, run: &[u8], out: &mut Vec<u32>) {
        let start = out.len();
        let ok = std::str::from_utf8(run)
            .ok()
            .map(|s| {
                match &self.seg {
                    Segmenter::Bpe(hf) => match hf.encode(s, false) {
                        Ok(enc) => out.extend_from_slice(enc.get_ids()),
                        Err(_) => return false,
                    },
                    Segmenter::Spm(spm) => spm.encode(s, out),
                }
                self.reproduces(&out[start..], run)
            })
            .unwrap_or(false);
        if !ok {
            out.truncate(start);
            self.encode_bytes(run, out);
        }
    }

    /// The per-byte fallback: always correct, never compact.
    fn encode_bytes(&self, run: &[u8], out: &mut Vec<u32>) {
        out.extend(run.iter().map(|&b| self.byte_symbol(b)));
    }

    /// Whether `syms` decode to exactly `want`.
    fn reproduces(&self, syms: &[u32], want: &[u8]) -> bool {
        let mut at = 0;
        for &s in syms {
            let b = self.symbol_bytes(s);
            if b.is_empty() || want.get(at..at + b.len()) != Some(b) {
                return false;
            }
            at += b.len();
        }
        at == want.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real() -> Option<Tokenizer> {
        let p = std::env::var_os("LMZIP_MODEL")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
            });
        if !p.is_file() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set and the model is missing at {}",
                p.display()
            );
            eprintln!("skipping: no model at {}", p.display());
            return None;
        }
        let mut f = std::fs::File::open(p).unwrap();
        let c = gguf_file::Content::read(&mut f).unwrap();
        Some(Tokenizer::from_gguf(&c).unwrap())
    }

    fn decode(t: &Tokenizer, s: &[u32]) -> Vec<u8> {
        s.iter().flat_map(|&x| t.symbol_bytes(x).to_vec()).collect()
    }

    #[test]
    fn lossless_on_awkward_inputs() {
        let Some(t) = real() else { return };
        assert_eq!(t.num_symbols(), 49152 + 256);
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            (0..=255u8).collect(),
            b"\xff".to_vec(),
            b"ok \xc3\x28 \xe2\x82 \xed\xa0\x80 \xf0\x9f\x98 \xc0\xaf end".to_vec(),
            b"a\0b\r\n\x01\x04\x06\x13\x14\x16\x1d\x7f".to_vec(),
            "12345678901234567890 東京 🚀 naïve".as_bytes().to_vec(),
        ];
        for b in 0..=255u8 {
            cases.push(vec![b]);
        }
        let mut s = 1u64;
        cases.push(
            (0..100_000)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (s >> 56) as u8
                })
                .collect(),
        );
        for c in &cases {
            assert_eq!(decode(&t, &t.encode(c)), *c);
        }
        // Bytes without a token go through escapes; others through their byte token.
        // 21 byte values have no single-byte token in this vocabulary.
        let esc: Vec<u8> = (0..=255u8)
            .filter(|&b| t.byte_token[b as usize].is_none())
            .collect();
        let mut want = vec![0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xC0, 0xC1, 0xF1, 0xF2];
        want.extend(0xF5..=0xFF);
        assert_eq!(esc, want);
        let s = t.encode(&esc);
        assert!(
            s.iter().all(|&x| x as usize >= t.vocab_size()),
            "all escapes: {s:?}"
        );
    }

    #[test]
    fn special_tokens_are_plain_text_and_english_is_compact() {
        let Some(t) = real() else { return };
        let s = t.encode(b"<|endoftext|>");
        assert!(s.len() > 1 && !s.contains(&0), "{s:?}");
        assert_eq!(t.token_id("<|endoftext|>"), Some(0));
        let hello = t.encode(b"Hello world");
        assert_eq!(hello.len(), 2, "{hello:?}");
        let digits = t.encode(b"2025");
        assert_eq!(digits.len(), 4, "digits are split one by one");
    }

    #[test]
    fn corpora_round_trip() {
        let Some(t) = real() else { return };
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for rel in [
            "canterbury/alice29.txt",
            "enwik8/enwik6",
            "canterbury/kennedy.xls",
        ] {
            let Some(d) = [root.join("corpora/files"), root.join("../shared/corpora")]
                .iter()
                .find_map(|b| std::fs::read(b.join(rel)).ok())
            else {
                continue;
            };
            let d = &d[..d.len().min(300_000)];
            let t0 = std::time::Instant::now();
            let s = t.encode(d);
            eprintln!(
                "{rel}: {} bytes → {} symbols ({:.2} bytes/symbol) in {:?}",
                d.len(),
                s.len(),
                d.len() as f64 / s.len() as f64,
                t0.elapsed()
            );
            assert_eq!(decode(&t, &s), d);
        }
    }

    #[test]
    fn fallback_and_identity() {
        let toks: Vec<String> = ["a", "b", "ab", "Ġ"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let t = Tokenizer::from_parts(toks.clone(), vec!["a b".into()], "gpt2").unwrap();
        assert_eq!(t.encode(b"abab"), vec![2, 2]);
        // "c" has no token: escape V + 'c'.
        assert_eq!(t.encode(b"abc"), vec![2, 4 + b'c' as u32]);
        let mut out = Vec::new();
        t.encode_bytes(b"ab ", &mut out);
        assert_eq!(out, vec![0, 1, 3]);
        assert!(!t.reproduces(&[2], b"ba"));
        let t2 = Tokenizer::from_parts(toks, vec![], "gpt2").unwrap();
        assert_ne!(t.identity(), t2.identity());
        assert!(Tokenizer::from_parts(vec!["a".into()], vec![], "llama-bpe").is_err());
    }
}

#[cfg(test)]
mod reference_probe {
    use super::*;

    /// Agreement of our segmentation with a reference's token ids (llama.cpp's, as JSON):
    /// `LMZIP_REF_MODEL=… LMZIP_REF_DIR=dir cargo test --release --lib tokenizer_agreement --
    /// --ignored --nocapture` compares every `dir/NAME.gemma.json` with the corpus file NAME.
    #[test]
    #[ignore = "needs a reference run"]
    fn tokenizer_agreement() {
        let var = |k: &str| std::env::var(k).expect(k);
        let mut f = std::fs::File::open(var("LMZIP_REF_MODEL")).unwrap();
        let c = gguf_file::Content::read(&mut f).unwrap();
        let t = Tokenizer::from_gguf(&c).unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora/files");
        let mut names: Vec<_> = std::fs::read_dir(var("LMZIP_REF_DIR"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".gemma.json")
                    .map(String::from)
            })
            .collect();
        names.sort();
        for name in names {
            let want: Vec<u32> = serde_json::from_slice(
                &std::fs::read(
                    std::path::Path::new(&var("LMZIP_REF_DIR")).join(format!("{name}.gemma.json")),
                )
                .unwrap(),
            )
            .unwrap();
            let Some(data) = ["canterbury", "calgary", "enwik8", "ood"]
                .iter()
                .find_map(|d| std::fs::read(root.join(d).join(&name)).ok())
            else {
                continue;
            };
            let t0 = std::time::Instant::now();
            let got = t.encode(&data);
            let secs = t0.elapsed().as_secs_f64();
            let back: Vec<u8> = got
                .iter()
                .flat_map(|&s| t.symbol_bytes(s).to_vec())
                .collect();
            assert_eq!(back, data, "{name}: not lossless");
            // Share of identical tokens: longest common prefix, then a diff by lines.
            let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
            let mut m = 0;
            {
                // Multiset overlap as a cheap agreement measure.
                let mut counts = std::collections::HashMap::new();
                for &x in &want {
                    *counts.entry(x).or_insert(0i64) += 1;
                }
                for &x in &got {
                    if let Some(c) = counts.get_mut(&x) {
                        if *c > 0 {
                            *c -= 1;
                            m += 1;
                        }
                    }
                }
            }
            eprintln!(
                "{name}: {} bytes, ours {} tokens, llama.cpp {}; identical sequences: {}; common prefix {same}; token multiset overlap {:.4}; {:.2} MB/s",
                data.len(),
                got.len(),
                want.len(),
                got == want,
                m as f64 / want.len().max(got.len()) as f64,
                data.len() as f64 / secs / 1e6
            );
        }
    }
}
