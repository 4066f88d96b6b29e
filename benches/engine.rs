//! Forward-pass throughput of the model engine, per backend and stream count.
//!
//! Not a criterion benchmark: one forward step over 64 streams takes seconds, so this
//! prints tokens per second directly (median of the timed steps). Usage:
//!
//! ```text
//! cargo bench --bench engine -- [--backend 1,2] [--streams 1,8,64] [--ctx 512] [--steps 8]
//! ```
//!
//! Each configuration fills every stream's cache to `ctx` positions in one prefill call
//! (timed: that is the encoder's pattern), then times `steps` decode steps of one position
//! per stream with logits for every row (the decoder's pattern). Threads: rayon's default
//! (set `RAYON_NUM_THREADS` to pin).

use candle_core::quantized::gguf_file;
use lmzip::engine::{Net, Row};
use std::time::Instant;

fn list(args: &[String], name: &str, default: &str) -> Vec<usize> {
    let v = args
        .iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .unwrap_or(default);
    v.split(',').map(|x| x.parse().expect(name)).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let backends = list(&args, "--backend", "1,2");
    let streams = list(&args, "--streams", "1,8,64");
    let ctx = list(&args, "--ctx", "512")[0];
    let steps = list(&args, "--steps", "8")[0];
    let path = lmzip::testing::real_model_path().expect("model");
    for &backend in &backends {
        let mut f = std::fs::File::open(&path).expect("open model");
        let content = gguf_file::Content::read(&mut f).expect("gguf");
        let model = Net::from_gguf(&content, &mut f, backend as u16).expect("load");
        let v = model.vocab();
        for &s in &streams {
            let mut caches: Vec<_> = (0..s).map(|_| model.new_cache(ctx + steps)).collect();
            let tok = |st: usize, p: usize| ((st * 7919 + p * 104_729) % 40_000) as u32 + 100;
            // Prefill: ctx positions per stream, logits for none (cache filling only).
            let rows: Vec<Row> = (0..s)
                .flat_map(|st| {
                    (0..ctx).map(move |p| Row {
                        stream: st,
                        token: tok(st, p),
                        pos: p,
                    })
                })
                .collect();
            let t = Instant::now();
            model
                .forward_select(&mut caches, &rows, &[], &mut [])
                .expect("prefill");
            let prefill = (s * ctx) as f64 / t.elapsed().as_secs_f64();
            let mut logits = vec![0f32; s * v];
            let mut times = Vec::new();
            for i in 0..steps {
                let rows: Vec<Row> = (0..s)
                    .map(|st| Row {
                        stream: st,
                        token: tok(st, ctx + i),
                        pos: ctx + i,
                    })
                    .collect();
                let t = Instant::now();
                model
                    .forward(&mut caches, &rows, &mut logits)
                    .expect("step");
                times.push(s as f64 / t.elapsed().as_secs_f64());
            }
            println!(
                "backend {backend} streams {s:3} ctx {ctx}: prefill {prefill:8.1} tok/s, \
                 decode {:8.1} tok/s (median of {steps})",
                median(times)
            );
        }
    }
}
