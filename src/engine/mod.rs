//! The language model engine: loads a transformer (GGUF or checkpoint) and runs it
//! deterministically.
//!
//! Laid out as llama.cpp splits it: weights ([`weights`]), the key/value cache
//! ([`kv_cache`]), one archive's context of caches and outputs ([`context`]), attention kernels (`attention`), the steps every forward pass shares
//! ([`forward`]), RoPE ([`rope`]), matrix kernels ([`int8`], [`kernels`], [`half`]), and
//! one file per architecture ([`llama`], [`gemma3`]) behind [`Net`]. Numeric backends are named by an id recorded in
//! every archive header, because the exact logits — and so the archive — depend on the
//! arithmetic that produced them.

pub(crate) mod attention;
pub mod context;
pub mod device;
pub mod forward;
pub mod gemma3;
pub mod half;
pub mod head;
pub mod int8;
pub mod kernels;
pub mod kv_cache;
pub mod llama;
pub mod net;
pub mod rope;
pub mod weights;

/// The deterministic math now lives at the crate root ([`crate::math`]).
pub use crate::math;
pub use context::{Context, Slide};
pub use forward::Row;
pub use gemma3::{Gemma3, Gemma3Config};
pub use head::ActiveHead;
pub use kv_cache::KvCache;
pub use llama::{Llama, LlamaConfig};
pub use net::Net;
pub use rope::{llama3_rope_factors, RopeScaling, SUPPORTED_ROPE};
pub use weights::Weight;

/// Backend 1: f32 weights (exact dequantized values), f32 activations, every reduction in
/// the fixed lane order of [`math`], own exp/sin/cos. Bit-identical across thread counts,
/// batch shapes, SIMD widths (portable, SSE2, AVX2) and x86-64/aarch64 machines.
pub const BACKEND_F32_FIXED: u16 = 1;

/// Backend 2: weights kept as their integer GGUF blocks, activations quantized per block
/// of 32 to int8, exact i32 block dots combined by a fixed sequential f32 rule (see
/// [`int8`]); norms, RoPE, attention and SiLU as in backend 1. Bit-identical across thread
/// counts, batch shapes and the scalar/AVX2 kernels.
pub const BACKEND_INT8_EXACT: u16 = 2;

/// Backend 3: backend 2 with a 16-bit key/value cache. Every key (after RoPE) and value is
/// stored as IEEE half — clamped to ±65504, rounded to nearest even
/// ([`half::f32_to_f16`]) — and read back exactly; everything else as backend 2. Halves the
/// bytes attention reads per cached position, which bounds decoding speed at long context.
pub const BACKEND_INT8_F16KV: u16 = 3;

/// The backend new archives use (`--backend` picks another): backend 3. Against backend 2
/// in the same run (fields.c, README): decompression 10–14% faster, compression the same,
/// the key/value cache half the memory, for 0–0.3% more bytes; both are 2–3× faster than
/// backend 1.
pub const DEFAULT_BACKEND: u16 = BACKEND_INT8_F16KV;

/// Human-readable name of a backend id, for messages.
pub fn backend_name(id: u16) -> &'static str {
    match id {
        BACKEND_F32_FIXED => "f32-fixed-order (cpu)",
        BACKEND_INT8_EXACT => "int8-exact (cpu)",
        BACKEND_INT8_F16KV => "int8-exact, f16 KV cache (cpu)",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file;

    /// The real model, when present (required under CI).
    pub(crate) fn test_model_path() -> Option<std::path::PathBuf> {
        crate::testing::real_model_path()
    }

    #[test]
    fn real_model_predicts_paris_and_is_batch_invariant() {
        paris_and_batch_invariance(BACKEND_F32_FIXED);
    }

    #[test]
    fn real_model_int8_predicts_paris_and_is_batch_invariant() {
        paris_and_batch_invariance(BACKEND_INT8_EXACT);
    }

    fn paris_and_batch_invariance(backend: u16) {
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
                "position {p}: step-by-step logits differ from the batched call"
            );
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;
    use candle_core::quantized::gguf_file;

    fn load(backend: u16) -> Option<(gguf_file::Content, Net)> {
        let path = tests::test_model_path()?;
        let mut f = std::fs::File::open(&path).unwrap();
        let content = gguf_file::Content::read(&mut f).unwrap();
        let model = Net::from_gguf(&content, &mut f, backend).unwrap();
        Some((content, model))
    }

    /// All logits of one stream fed `tokens` in a single call.
    fn logits(model: &Net, tokens: &[u32]) -> Vec<f32> {
        crate::testing::stream_logits(model, tokens).unwrap()
    }

    /// Backend 2 is defined bit for bit: its logits hash must be the same on every machine,
    /// with or without SIMD (run once more under `LMZIP_NO_SIMD=1`).
    #[test]
    fn int8_logits_golden_hash() {
        let Some((_, model)) = load(BACKEND_INT8_EXACT) else {
            return;
        };
        let toks: Vec<u32> = (0..24u32).map(|i| (i * 977 + 13) % 49152).collect();
        let l = logits(&model, &toks);
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for v in &l {
            h = (h ^ v.to_bits() as u64).wrapping_mul(0x0100_0000_01b3);
        }
        eprintln!("int8 logits hash {h:#018x}");
        assert_eq!(h, GOLDEN);
    }
    const GOLDEN: u64 = 0x680f_31b0_3852_6bcc;

    /// Cost of a one-stream call by its row count, after 768 cached positions (what a
    /// speculative decoder pays for extra guessed rows).
    /// `cargo test --release --lib rows_cost -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn rows_cost() {
        let Some((_, model)) = load(BACKEND_INT8_F16KV) else {
            return;
        };
        let ctx = 768;
        let mut caches = vec![model.new_cache(ctx + 16)];
        let tok = |p: usize| ((p * 977 + 13) % 49152) as u32;
        let rows: Vec<Row> = (0..ctx)
            .map(|p| Row {
                stream: 0,
                token: tok(p),
                pos: p,
            })
            .collect();
        model
            .forward_select(&mut caches, &rows, &[], &mut [])
            .unwrap();
        let v = model.vocab();
        let mut base = 0.0;
        // LMZIP_ROWS=r: only that row count, many times (for a profiler).
        let only: Option<usize> = std::env::var("LMZIP_ROWS")
            .ok()
            .and_then(|v| v.parse().ok());
        let reps = if only.is_some() { 400 } else { 15 };
        for r in only.map_or(1..=8usize, |r| r..=r) {
            let rows: Vec<Row> = (ctx..ctx + r)
                .map(|p| Row {
                    stream: 0,
                    token: tok(p),
                    pos: p,
                })
                .collect();
            let want: Vec<usize> = (0..r).collect();
            let mut logits = vec![0f32; r * v];
            let mut t = Vec::new();
            for _ in 0..reps {
                let s = std::time::Instant::now();
                model
                    .forward_select(&mut caches, &rows, &want, &mut logits)
                    .unwrap();
                t.push(s.elapsed().as_secs_f64());
                caches[0].truncate(ctx);
            }
            t.sort_by(f64::total_cmp);
            let med = t[reps / 2];
            if base == 0.0 {
                base = med;
            }
            eprintln!("rows {r}: {:.2} ms ({:.2}x one row)", med * 1e3, med / base);
        }
    }

    /// Greedy longest-match tokenization with the GGUF vocabulary (good enough for stats).
    fn greedy_tokens(content: &gguf_file::Content, text: &str, n: usize) -> Vec<u32> {
        let vocab = content.metadata["tokenizer.ggml.tokens"].to_vec().unwrap();
        let map: std::collections::HashMap<String, u32> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string().unwrap().clone(), i as u32))
            .collect();
        let chars: Vec<char> = text
            .chars()
            .map(|c| match c {
                ' ' => 'Ġ',
                '\n' => 'Ċ',
                c => c,
            })
            .collect();
        let mut out = vec![map["<|endoftext|>"]];
        let mut i = 0;
        while out.len() < n && i < chars.len() {
            let mut best = None;
            for len in (1..=16.min(chars.len() - i)).rev() {
                let s: String = chars[i..i + len].iter().collect();
                if let Some(&id) = map.get(&s) {
                    best = Some((id, len));
                    break;
                }
            }
            let (id, len) = best.unwrap_or((0, 1));
            out.push(id);
            i += len;
        }
        out
    }

    #[test]
    #[ignore]
    fn int8_vs_f32_logits() {
        let Some((content, m1)) = load(BACKEND_F32_FIXED) else {
            return;
        };
        let (_, m2) = load(BACKEND_INT8_EXACT).unwrap();
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("corpora/files/canterbury/alice29.txt"),
        )
        .unwrap_or_else(|_| "The capital of France is Paris. ".repeat(40));
        let toks = greedy_tokens(&content, &text, 201);
        let v = m1.vocab();
        let (a, b) = (logits(&m1, &toks), logits(&m2, &toks));
        let (mut max_d, mut agree, mut sum_d) = (0f32, 0, 0f64);
        let mut max_p = vec![0f32; toks.len()];
        for p in 0..toks.len() {
            let (ra, rb) = (&a[p * v..(p + 1) * v], &b[p * v..(p + 1) * v]);
            for (x, y) in ra.iter().zip(rb) {
                max_d = max_d.max((x - y).abs());
                max_p[p] = max_p[p].max((x - y).abs());
                sum_d += (x - y).abs() as f64;
            }
            let top = |r: &[f32]| (0..v).max_by(|&i, &j| r[i].total_cmp(&r[j])).unwrap();
            agree += (top(ra) == top(rb)) as usize;
        }
        eprintln!(
            "{} positions: max |dlogit| {max_d:.4}, mean |dlogit| {:.5}, top-1 agreement {agree}/{}",
            toks.len(),
            sum_d / (toks.len() * v) as f64,
            toks.len()
        );
        max_p.sort_by(f32::total_cmp);
        eprintln!(
            "per-position max |dlogit|: median {:.3}, 90% {:.3}, max {:.3}",
            max_p[max_p.len() / 2],
            max_p[max_p.len() * 9 / 10],
            max_p[max_p.len() - 1]
        );
    }

    /// Backends to time: `LMZIP_SPEED_BACKENDS=2` (comma list) or both.
    fn speed_backends() -> Vec<u16> {
        std::env::var("LMZIP_SPEED_BACKENDS")
            .ok()
            .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .unwrap_or(vec![BACKEND_F32_FIXED, BACKEND_INT8_EXACT])
    }

    #[test]
    #[ignore]
    fn forward_speed() {
        for backend in speed_backends() {
            let Some((_, model)) = load(backend) else {
                return;
            };
            let v = model.vocab();
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
                    "{}: streams {streams} x {per} positions/call: {:.1} tok/s",
                    backend_name(backend),
                    n as f64 / s
                );
            }
        }
    }
}

#[cfg(test)]
mod reference_probe {
    use super::*;
    use candle_core::quantized::gguf_file;

    /// Compares this engine's logits with a reference's (llama.cpp's, saved as .npy with the
    /// token window as JSON): `LMZIP_REF_MODEL=… LMZIP_REF_LOGITS=x.npy LMZIP_REF_TOKENS=w.json
    /// cargo test --release --lib reference_logits -- --ignored --nocapture`.
    #[test]
    #[ignore = "needs a reference run"]
    fn reference_logits() {
        let var = |k: &str| std::env::var(k).expect(k);
        let model = var("LMZIP_REF_MODEL");
        let npy = std::fs::read(var("LMZIP_REF_LOGITS")).unwrap();
        let toks: Vec<u32> =
            serde_json::from_slice(&std::fs::read(var("LMZIP_REF_TOKENS")).unwrap()).unwrap();
        let hl = u16::from_le_bytes([npy[8], npy[9]]) as usize;
        let want: Vec<f32> = npy[10 + hl..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        for backend in [BACKEND_F32_FIXED, BACKEND_INT8_F16KV] {
            let mut f = std::fs::File::open(&model).unwrap();
            let content = gguf_file::Content::read(&mut f).unwrap();
            let net = Net::from_gguf(&content, &mut f, backend).unwrap();
            let v = net.vocab();
            let t = std::time::Instant::now();
            let got = crate::testing::stream_logits(&net, &toks).unwrap();
            let secs = t.elapsed().as_secs_f64();
            let n = toks.len();
            let (mut bits_got, mut bits_want, mut agree, mut maxd) = (0f64, 0f64, 0, 0f32);
            let ce = |row: &[f32], y: usize| {
                let m = row.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
                let z: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
                (m + z.ln() - row[y] as f64) / std::f64::consts::LN_2
            };
            for p in 0..n - 1 {
                let (a, b) = (&got[p * v..(p + 1) * v], &want[p * v..(p + 1) * v]);
                let y = toks[p + 1] as usize;
                bits_got += ce(a, y);
                bits_want += ce(b, y);
                for (x, y) in a.iter().zip(b) {
                    maxd = maxd.max((x - y).abs());
                }
                let top = |r: &[f32]| (0..v).max_by(|&i, &j| r[i].total_cmp(&r[j])).unwrap();
                agree += (top(a) == top(b)) as usize;
            }
            eprintln!(
                "backend {backend}: {n} positions in {secs:.1} s; bits/token ours {:.4} reference {:.4}; top-1 agreement {agree}/{}; max |dlogit| {maxd:.3}",
                bits_got / (n - 1) as f64,
                bits_want / (n - 1) as f64,
                n - 1
            );
        }
    }
}
