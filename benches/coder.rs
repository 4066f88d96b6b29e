//! Criterion benchmarks for the per-symbol work outside the model: the predictor ensemble
//! (predict + update over a 49,408-symbol alphabet, with and without the continuous cache
//! of 16,384 keys), building the 24-bit CDF, and range coding with it.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use lmzip::coder::{BlockDecoder, BlockEncoder, Cdf};
use lmzip::predict::{Ensemble, PredictorSettings, Scratch};

const VOCAB: usize = 49152;
const SYMBOLS: usize = VOCAB + 256;

/// Logits shaped like a language model's: a few strong candidates over a long flat tail.
fn fake_logits(seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..VOCAB)
        .map(|i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            if i % 997 == 0 {
                8.0 + u
            } else {
                u * 6.0 - 3.0
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let logits = fake_logits(1);
    let mut cdf = Cdf::default();
    // A text-like symbol stream: a repeating phrase with variations, so the n-gram and
    // match models have something to find (their cost depends on what they find).
    let text: Vec<u32> = (0..4096u32)
        .map(|i| (i % 37) * 131 + (i / 512) % 3)
        .collect();
    // Hidden states of Gemma 3 270M's width, one per phrase position (the cache's keys).
    let hidden: Vec<Vec<f32>> = (0..37u64)
        .map(|k| fake_logits(k + 2)[..640].to_vec())
        .collect();
    let cached = PredictorSettings {
        cache_log2: lmzip::DEFAULT_CACHE_LOG2,
        active_log2: 14,
        ..PredictorSettings::default()
    };
    for (name, settings) in [
        ("llm only", PredictorSettings::llm_only()),
        ("default ensemble", PredictorSettings::default()),
        ("default ensemble + continuous cache", cached),
    ] {
        let mut e = Ensemble::new(
            &settings,
            VOCAB,
            SYMBOLS,
            &(0..17).collect::<Vec<u32>>(),
            640,
        );
        e.begin_group(&[1 << 20]);
        let mut sc = Scratch::default();
        let mut i = 0usize;
        c.bench_function(&format!("{name}: predict + update (49,408 symbols)"), |b| {
            b.iter(|| {
                let h = &hidden[i % hidden.len()];
                e.predict(
                    0,
                    black_box(&logits),
                    Some(h),
                    lmzip::predict::Alphabet::Full,
                    &mut sc,
                );
                cdf.build_from_weights(sc.weights());
                e.update(0, text[i % text.len()], lmzip::predict::Alphabet::Full, &sc);
                i += 1;
            })
        });
    }
    let weights: Vec<f32> = logits
        .iter()
        .map(|l| (l / 4.0).exp())
        .chain(std::iter::repeat_n(0.0, 256))
        .collect();
    c.bench_function("cdf from weights (49,408 symbols)", |b| {
        b.iter(|| cdf.build_from_weights(black_box(&weights)))
    });
    cdf.build_from_weights(&weights);
    let syms: Vec<u32> = (0..1000).map(|i| (i * 997 % VOCAB) as u32).collect();
    c.bench_function("range encode 1000 symbols", |b| {
        b.iter(|| {
            let mut e = BlockEncoder::new();
            for &s in &syms {
                e.encode(s, &cdf).unwrap();
            }
            black_box(e.finish())
        })
    });
    let mut e = BlockEncoder::new();
    for &s in &syms {
        e.encode(s, &cdf).unwrap();
    }
    let payload = e.finish();
    c.bench_function("range decode 1000 symbols", |b| {
        b.iter(|| {
            let mut d = BlockDecoder::new(&payload).unwrap();
            for _ in 0..syms.len() {
                black_box(d.decode(&cdf).unwrap());
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
