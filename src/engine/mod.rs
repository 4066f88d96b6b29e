//! The language model engine: loads GGUF weights and runs the forward pass deterministically.
//!
//! Numeric backends are named by an id recorded in every archive header, because the exact
//! logits — and so the archive — depend on the arithmetic that produced them.

pub mod int8;
pub mod kernels;
pub mod llama;
pub mod math;

pub use llama::{KvCache, Llama, LlamaConfig, Row};

/// Backend 1: f32 weights (exact dequantized values), f32 activations, every reduction in
/// the fixed lane order of [`math`], own exp/sin/cos. Bit-identical across thread counts,
/// batch shapes, SIMD widths (portable, SSE2, AVX2) and x86-64/aarch64 machines.
pub const BACKEND_F32_FIXED: u16 = 1;

/// Backend 2: integer weights (exact re-packing of the GGUF blocks), int8 activations per
/// 32-block, exact integer dot products, per-block f32 combination in order (see [`int8`]).
/// Same independence from threads, batch shape and SIMD width as backend 1. Experimental:
/// its kernel is still the compiler-vectorized one and measured about 2× slower than
/// backend 1, so it is not the default until a hand-written SIMD kernel lands.
pub const BACKEND_INT8_EXACT: u16 = 2;

/// The backend new archives use (`--backend` may pick another).
pub const DEFAULT_BACKEND: u16 = BACKEND_F32_FIXED;

/// Human-readable name of a backend id, for messages.
pub fn backend_name(id: u16) -> &'static str {
    match id {
        BACKEND_F32_FIXED => "f32-fixed-order (cpu)",
        BACKEND_INT8_EXACT => "int8-exact (cpu)",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file;

    /// The real model, when present (required under CI).
    pub(crate) fn test_model_path() -> Option<std::path::PathBuf> {
        let p = std::env::var_os("LMZIP_MODEL")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("models")
                    .join("SmolLM2-135M-Instruct.Q4_1.gguf")
            });
        if p.is_file() {
            Some(p)
        } else if std::env::var_os("CI").is_some() {
            panic!(
                "CI is set and the model is missing at {}: run `bash models/fetch.sh`",
                p.display()
            );
        } else {
            eprintln!("skipping: model not found at {}", p.display());
            None
        }
    }

    #[test]
    fn real_model_predicts_paris_and_is_batch_invariant() {
        let Some(path) = test_model_path() else {
            return;
        };
        let mut f = std::fs::File::open(&path).unwrap();
        let content = gguf_file::Content::read(&mut f).unwrap();
        let tokens = content.metadata["tokenizer.ggml.tokens"].to_vec().unwrap();
        let id = |s: &str| {
            tokens
                .iter()
                .position(|t| t.to_string().map(|x| x == s).unwrap_or(false))
                .unwrap() as u32
        };
        for backend in [BACKEND_F32_FIXED, BACKEND_INT8_EXACT] {
            let model = Llama::from_gguf_with(&content, &mut f, backend).unwrap();
            let prompt: Vec<u32> = ["<|endoftext|>", "The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"]
                .iter()
                .map(|s| id(s))
                .collect();
            let v = model.cfg.vocab;
            // All positions in one call (prefill-style).
            let mut caches = vec![model.new_cache(16)];
            let rows: Vec<Row> = prompt
                .iter()
                .enumerate()
                .map(|(p, &t)| Row {
                    stream: 0,
                    token: t,
                    pos: p,
                })
                .collect();
            let mut all = vec![0f32; rows.len() * v];
            model.forward(&mut caches, &rows, &mut all).unwrap();
            let last = &all[(rows.len() - 1) * v..];
            let best = (0..v).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap();
            assert_eq!(
                best as u32,
                id("ĠParis"),
                "top token {}",
                tokens[best].to_string().unwrap()
            );
            // One position per call, two streams side by side: same bits.
            let mut caches = vec![model.new_cache(16), model.new_cache(16)];
            let mut one = vec![0f32; 2 * v];
            for (p, &t) in prompt.iter().enumerate() {
                let rows = [
                    Row {
                        stream: 0,
                        token: t,
                        pos: p,
                    },
                    Row {
                        stream: 1,
                        token: prompt[p.min(2)],
                        pos: p,
                    },
                ];
                model.forward(&mut caches, &rows, &mut one).unwrap();
                let a: Vec<u32> = one[..v].iter().map(|x| x.to_bits()).collect();
                let b: Vec<u32> = all[p * v..(p + 1) * v]
                    .iter()
                    .map(|x| x.to_bits())
                    .collect();
                assert!(
                a == b,
                "backend {backend}, position {p}: step-by-step logits differ from the batched call"
            );
            }
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;
    #[test]
    #[ignore]
    fn forward_speed() {
        let Some(path) = tests::test_model_path() else {
            return;
        };
        let mut f = std::fs::File::open(&path).unwrap();
        let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
        for backend in [BACKEND_F32_FIXED, BACKEND_INT8_EXACT] {
            let model = Llama::from_gguf_with(&content, &mut f, backend).unwrap();
            let v = model.cfg.vocab;
            for &(streams, per) in &[(1usize, 1usize), (16, 1), (64, 1), (16, 16), (64, 4)] {
                let mut caches: Vec<KvCache> = (0..streams).map(|_| model.new_cache(512)).collect();
                let steps = 64 / per;
                let t = std::time::Instant::now();
                let mut n = 0;
                for st in 0..steps.min(if streams == 1 { 16 } else { steps }) {
                    let rows: Vec<Row> = (0..per)
                        .flat_map(|p| {
                            (0..streams).map(move |s| Row {
                                stream: s,
                                token: ((s * 31 + p * 7 + st) % 40000) as u32 + 20,
                                pos: st * per + p,
                            })
                        })
                        .collect();
                    let mut logits = vec![0f32; rows.len() * v];
                    model.forward(&mut caches, &rows, &mut logits).unwrap();
                    n += rows.len();
                }
                let s = t.elapsed().as_secs_f64();
                eprintln!(
                    "backend {backend}: streams {streams} x {per} positions/call: {:.1} tok/s",
                    n as f64 / s
                );
            }
        }
    }
}
