//! `lmzip bench`: bits per byte, speed each way and peak memory, verified round trips.

use crate::model::Model;
use crate::pipeline::{compress, decompress, CompressOptions, Stats};
use crate::{Error, Result};
use serde::Serialize;
use std::time::Instant;

/// One file's measurements.
#[derive(Debug, Clone, Serialize)]
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
}

/// Compresses and decompresses `data` in memory and checks the result byte for byte.
pub fn bench_bytes(
    model: &Model,
    name: &str,
    data: &[u8],
    opts: &CompressOptions,
) -> Result<BenchResult> {
    let mut archive = Vec::new();
    let t0 = Instant::now();
    let cs: Stats = compress(model, data, opts, &mut archive, &mut |_| {})?;
    let ct = t0.elapsed().as_secs_f64();
    let mut restored = Vec::with_capacity(data.len());
    let t1 = Instant::now();
    let ds = decompress(model, &mut archive.as_slice(), &mut restored, &mut |_| {})?;
    let dt = t1.elapsed().as_secs_f64();
    let ok = restored == data;
    if !ok {
        return Err(Error::internal(format!(
            "{name}: round trip differs from the original"
        )));
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
    })
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

/// A fixed-width table of results for terminals.
pub fn render_table(results: &[BenchResult]) -> String {
    let mut s = format!(
        "{:<28} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8}\n",
        "file", "bytes", "lmz", "bpb", "c KB/s", "c tok/s", "d KB/s", "d tok/s", "RSS MiB"
    );
    for r in results {
        s += &format!(
            "{:<28} {:>9} {:>9} {:>7.4} {:>9.3} {:>9.1} {:>9.3} {:>9.1} {:>8.0}\n",
            r.file,
            r.bytes,
            r.compressed_bytes,
            r.bits_per_byte,
            r.compress_kb_per_s,
            r.compress_tokens_per_s,
            r.decompress_kb_per_s,
            r.decompress_tokens_per_s,
            r.peak_rss_mib
        );
    }
    s
}
