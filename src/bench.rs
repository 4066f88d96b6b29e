//! `lmzip bench`: bits per byte, speed each way and peak memory, verified round trips.
//!
//! This measures; the command renders (see the CLI).

use crate::model::Model;
use crate::pipeline::{
    compress_measure, decompress, decompress_resumable, run_fingerprint, write_replacing, Compare,
    CompressOptions, Stats,
};
use crate::predict::PredictorSettings;
use crate::{Checkpoint, Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// One file's measurements.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchResult {
    pub file: String,
    pub bytes: u64,
    pub compressed_bytes: u64,
    pub bits_per_byte: f64,
    pub symbols: u64,
    pub blocks: u64,
    pub streams: u16,
    pub block_tokens: u32,
    pub threads: usize,
    pub compress_seconds: f64,
    pub decompress_seconds: f64,
    pub compress_kb_per_s: f64,
    pub decompress_kb_per_s: f64,
    pub compress_tokens_per_s: f64,
    pub decompress_tokens_per_s: f64,
    /// Peak resident memory of the process so far, in MiB (Linux; 0 elsewhere).
    pub peak_rss_mib: f64,
    pub round_trip_ok: bool,
    /// Share of the input's bytes in binary regions, coded classically (LZMA2) with no
    /// model run; the rest went through the language model.
    pub classic_share: f64,
    /// Predictor variant → bits per byte of its ideal code length (the coded
    /// configuration first), measured on the same model outputs.
    pub ablation: Vec<(String, f64)>,
    /// Seconds in the model's forward pass / in predictors and coder, compressing.
    pub model_seconds: f64,
    pub predict_seconds: f64,
    pub window: u32,
    /// Decoding: forward calls, guessed rows and guesses that came true (speculation).
    pub decode_calls: u64,
    pub decode_guessed: u64,
    pub decode_guessed_right: u64,
    /// Each symbol's cost, when the options asked for a trace (`--report`).
    #[serde(skip)]
    pub trace: Option<crate::Trace>,
}

/// The ablation variants for `base`: the LLM alone, each component added alone, each
/// component removed, and each other kind of mixer (global weights; context weights shared or not).
pub fn ablation_variants(base: &PredictorSettings) -> Vec<PredictorSettings> {
    // The active head's set and escape (its probe included) shape the language model's
    // own distribution: every variant keeps the base's (a removal row measures the probe).
    let llm = PredictorSettings {
        active_log2: base.active_log2,
        active_ascii_log2: base.active_ascii_log2,
        probe_rate: base.probe_rate,
        ..PredictorSettings::llm_only()
    };
    let mut v = vec![
        llm.clone(),
        PredictorSettings {
            bias: true,
            ..llm.clone()
        },
        PredictorSettings {
            ngram: true,
            ..llm.clone()
        },
        PredictorSettings {
            matcher: true,
            ..llm.clone()
        },
        PredictorSettings {
            ngram: true,
            matcher: true,
            ..llm.clone()
        },
    ];
    if base.cache_log2 > 0 {
        v.push(PredictorSettings {
            cache_log2: base.cache_log2,
            cache_theta: base.cache_theta,
            ..llm.clone()
        });
    }
    for f in 0..7 {
        let mut s = base.clone();
        match f {
            0 => s.bias = false,
            1 => s.ngram = false,
            2 => s.matcher = false,
            3 => s.sse = false,
            4 => s.cache_log2 = 0,
            5 => s.probe_rate = 0,
            _ => s.mixer_ctx = false,
        }
        if s != *base {
            v.push(s);
        }
    }
    if base.mixer_ctx && (base.ngram || base.matcher) {
        v.push(PredictorSettings {
            mixer_shared: !base.mixer_shared,
            ..base.clone()
        });
    }
    v
}

/// Compresses and decompresses `data` in memory and checks the result byte for byte.
///
/// With `resume` (a folder of its own for this file), compression and then decompression
/// save their progress there after each group of blocks and take up what an interrupted
/// run left ([`compress_kept`], `decode.ckpt`): the figures are those of an uninterrupted
/// run, its seconds the sum of every run's.
pub fn bench_bytes(
    model: &Model,
    name: &str,
    data: &[u8],
    opts: &CompressOptions,
    ablation: bool,
    resume: Option<&Path>,
) -> Result<BenchResult> {
    let variants = if ablation {
        ablation_variants(&opts.predictor)
    } else if opts.trace {
        // A report compares the coded predictors with the language model's own.
        vec![PredictorSettings::llm_only()]
    } else {
        Vec::new()
    };
    let (archive, cs, ct) = match resume {
        Some(dir) => compress_kept(model, data, opts, &variants, dir)?,
        None => timed_compress(model, data, opts, &variants, None)?,
    };
    // Decoded bytes are checked as they come, not kept.
    let mut cmp = Compare::new(data);
    let t1 = Instant::now();
    let ds = match resume {
        Some(dir) => {
            let checkpoint = Checkpoint::new(dir.join("decode.ckpt"));
            let s = decompress_resumable(model, &archive, &mut cmp, &mut |_| {}, &checkpoint);
            s.and_then(|s| checkpoint.remove().map(|_| s))
        }
        None => decompress(model, &mut archive.as_slice(), &mut cmp, &mut |_| {}),
    };
    let differs = || Error::internal(format!("{name}: round trip differs from the original"));
    let ds = ds.map_err(|e| match e.is_io_kind(std::io::ErrorKind::InvalidData) {
        true => differs(),
        false => e,
    })?;
    let dt = t1.elapsed().as_secs_f64() + ds.resumed_seconds;
    let ok = cmp.is_complete();
    if !ok {
        return Err(differs());
    }
    let kb = data.len() as f64 / 1000.0;
    Ok(BenchResult {
        file: name.to_string(),
        bytes: data.len() as u64,
        compressed_bytes: archive.len() as u64,
        bits_per_byte: if data.is_empty() {
            0.0
        } else {
            archive.len() as f64 * 8.0 / data.len() as f64
        },
        symbols: cs.symbols,
        blocks: cs.blocks,
        streams: opts.streams.min(cs.blocks.max(1) as u16),
        block_tokens: opts.block_tokens,
        threads: rayon::current_num_threads(),
        compress_seconds: ct,
        decompress_seconds: dt,
        compress_kb_per_s: kb / ct.max(1e-9),
        decompress_kb_per_s: kb / dt.max(1e-9),
        compress_tokens_per_s: cs.symbols as f64 / ct.max(1e-9),
        decompress_tokens_per_s: ds.symbols as f64 / dt.max(1e-9),
        peak_rss_mib: peak_rss_mib(),
        round_trip_ok: ok,
        classic_share: cs.classic_bytes as f64 / data.len().max(1) as f64,
        ablation: if ablation {
            let bpb = |bits: f64| bits / data.len().max(1) as f64;
            std::iter::once((opts.predictor.label() + " (coded)", bpb(cs.ideal_bits)))
                .chain(
                    variants
                        .iter()
                        .zip(&cs.variant_bits)
                        .map(|(v, &b)| (v.label(), bpb(b))),
                )
                .collect()
        } else {
            Vec::new()
        },
        model_seconds: cs.model_seconds,
        predict_seconds: cs.predict_seconds,
        window: opts.window,
        decode_calls: ds.calls,
        decode_guessed: ds.guessed,
        decode_guessed_right: ds.guessed_right,
        trace: cs.trace,
    })
}

/// Compresses `data` (through `checkpoint` when given): the archive, its stats, and the
/// wall-clock seconds over every run (earlier, interrupted ones included).
fn timed_compress(
    model: &Model,
    data: &[u8],
    opts: &CompressOptions,
    variants: &[PredictorSettings],
    checkpoint: Option<&Checkpoint>,
) -> Result<(Vec<u8>, Stats, f64)> {
    let mut archive = Vec::new();
    let t0 = Instant::now();
    let stats = compress_measure(
        model,
        data,
        opts,
        variants,
        &mut archive,
        &mut |_| {},
        checkpoint,
    )?;
    let seconds = t0.elapsed().as_secs_f64() + stats.resumed_seconds;
    Ok((archive, stats, seconds))
}

/// A finished compression kept for the decoding half of a resumable bench.
#[derive(Serialize, Deserialize)]
struct Kept {
    /// The run it belongs to (input, model, options, variants, lmzip build), in hex.
    run: String,
    /// XXH64 of the kept archive.
    archive_xxh64: u64,
    stats: Stats,
    seconds: f64,
}

/// The compressing half of a resumable bench, in `dir`: an archive this same run finished
/// earlier (`compressed.lmz`, its figures in `compressed.json`) is taken as it is;
/// otherwise compression resumes from `compress.ckpt` and saves there after each group,
/// and its archive and figures are kept for decoding. Returns the archive, its stats and
/// the compression's wall-clock seconds over every run.
fn compress_kept(
    model: &Model,
    data: &[u8],
    opts: &CompressOptions,
    variants: &[PredictorSettings],
    dir: &Path,
) -> Result<(Vec<u8>, Stats, f64)> {
    let run: String = run_fingerprint(model, opts, variants, data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (json, lmz) = (dir.join("compressed.json"), dir.join("compressed.lmz"));
    if let (Ok(j), Ok(archive)) = (std::fs::read(&json), std::fs::read(&lmz)) {
        if let Ok(k) = serde_json::from_slice::<Kept>(&j) {
            if k.run == run && k.archive_xxh64 == xxhash_rust::xxh64::xxh64(&archive, 0) {
                return Ok((archive, k.stats, k.seconds));
            }
        }
    }
    std::fs::create_dir_all(dir)?;
    let checkpoint = Checkpoint::new(dir.join("compress.ckpt"));
    let (archive, stats, seconds) = timed_compress(model, data, opts, variants, Some(&checkpoint))?;
    let kept = Kept {
        run,
        archive_xxh64: xxhash_rust::xxh64::xxh64(&archive, 0),
        stats: stats.clone(),
        seconds,
    };
    let json_bytes = serde_json::to_vec(&kept).map_err(|e| Error::internal(e.to_string()))?;
    // The archive first: its figures name it by checksum, so a crash between the two
    // writes leaves nothing that would be taken up.
    write_replacing(&lmz, &archive)?;
    write_replacing(&json, &json_bytes)?;
    checkpoint.remove()?;
    Ok((archive, stats, seconds))
}

/// Peak resident set size (VmHWM) in MiB, from /proc on Linux.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
