//! Text for people: archive descriptions (`lmzip info`) and bench tables (`lmzip bench`).

use super::peers::PeerResult;
use lmzip::bench::BenchResult;
use lmzip::model::identity::{describe_recorded, hex};
use lmzip::{ArchiveInfo, CompressOptions};
use serde::Serialize;
use std::fmt::Write as _;

/// The name of a window policy: how a full window slides.
fn slide_name(policy: u8) -> &'static str {
    if policy == lmzip::WINDOW_SHIFT {
        "shift"
    } else {
        "re-prefill"
    }
}

/// The lines `lmzip info` prints for the archives of one file.
pub fn archives(list: &[ArchiveInfo]) -> String {
    let mut s = String::new();
    let mut at = 0u64;
    for (i, a) in list.iter().enumerate() {
        // Writing to a String cannot fail.
        let _ = write_archive(&mut s, i + 1, at, list.len() > 1, a);
        at += a.archive_bytes;
    }
    s
}

/// Archive `n`, which starts at byte `at` of the file (said where there are several: the
/// members `--share` picks from).
fn write_archive(
    s: &mut String,
    n: usize,
    at: u64,
    several: bool,
    a: &ArchiveInfo,
) -> std::fmt::Result {
    if several {
        writeln!(
            s,
            "  archive {n}, at byte {at}: format version {}",
            a.version
        )?;
    } else {
        writeln!(s, "  archive {n}: format version {}", a.version)?;
    }
    writeln!(s, "    model        {}", describe_recorded(&a.model_sha256))?;
    let tokenizer_bits = if a.tokenizer_hash.len() < 32 {
        format!(", the first {} bits", 8 * a.tokenizer_hash.len())
    } else {
        String::new()
    };
    writeln!(
        s,
        "    tokenizer    {}{tokenizer_bits} ({} symbols)",
        hex(&a.tokenizer_hash),
        a.num_symbols
    )?;
    writeln!(
        s,
        "    backend      {} ({})",
        a.backend,
        lmzip::backend_name(a.backend)
    )?;
    writeln!(
        s,
        "    coder        range coder, {}-bit words, {}-bit probabilities",
        a.coder_word_bits, a.coder_precision_bits
    )?;
    writeln!(
        s,
        "    blocks       ≤ {} tokens each, {} side by side; window {} positions, slides keeping {} (policy {}: {})",
        a.block_tokens,
        a.streams,
        a.window,
        a.keep,
        a.window_policy,
        slide_name(a.window_policy)
    )?;
    let pred = match &a.predictor {
        Ok(p) => predictor_fields(p),
        Err(e) => format!("unreadable: {e}"),
    };
    writeln!(s, "    predictor    {pred}")?;
    if a.transform == lmzip::Transform::CrlfPerRegion {
        writeln!(
            s,
            "    transform    {} ({} of {})",
            a.transform.name(),
            a.crlf_regions,
            counted(a.text_regions, "text region", "text regions")
        )?;
    } else {
        writeln!(s, "    transform    {}", a.transform.name())?;
    }
    let (sum, value) = match a.content_checksum {
        lmzip::Checksum::Xxh64(v) => ("xxh64 (low 32 bits)", format!("{v:08x}")),
        lmzip::Checksum::Sha256(d) => ("sha256", hex(&d)),
    };
    let as_coded = if a.transform == lmzip::Transform::None {
        ""
    } else {
        " as coded"
    };
    writeln!(
        s,
        "    content      {} bytes{as_coded}, {} tokens, {} in {}, {sum} {value}",
        a.content_bytes,
        a.symbols,
        counted(a.blocks, "block", "blocks"),
        counted(a.groups, "group", "groups")
    )?;
    if a.binary_regions > 0 {
        writeln!(
            s,
            "    regions      {} binary ({} bytes) coded classically (LZMA2{}) in {} bytes",
            a.binary_regions,
            a.classic_bytes,
            if a.classic_parts > 1 {
                format!(", {} parts", a.classic_parts)
            } else {
                String::new()
            },
            a.classic_coded_bytes
        )?;
    }
    writeln!(
        s,
        "    archive      {} bytes ({} of framing), {:.4} bits per byte",
        a.archive_bytes,
        a.framing_bytes(),
        a.bits_per_byte()
    )
}

/// Predictor settings as a person reads them: the components, then each one's sizes and
/// rates, one component per line.
fn predictor_fields(p: &lmzip::PredictorSettings) -> String {
    let mut lines = vec![p.label()];
    if p.ngram {
        lines.push(format!(
            "token n-gram: orders 1-{}, 2^{} buckets each",
            p.ngram_order, p.ngram_bits
        ));
    }
    if p.matcher {
        lines.push(format!(
            "match model: from {} tokens, 2^{} entries",
            p.match_min, p.match_bits
        ));
    }
    if p.bias {
        lines.push(format!("adaptive bias: rate {}", p.bias_rate));
    }
    if p.ngram || p.matcher {
        let kind = match (p.mixer_ctx, p.mixer_shared) {
            (false, _) => "one global weight set",
            (true, true) => "per-context offsets on shared weights",
            (true, false) => "independent weights per context",
        };
        lines.push(format!("mixer: {kind}, rate {}", p.mixer_rate));
    }
    if p.sse {
        lines.push(format!("APM: rate {}", p.sse_rate));
    }
    if p.active_log2 > 0 {
        lines.push(format!(
            "active head: the first 2^{} ids and every symbol seen, an escape for the rest",
            p.active_log2
        ));
    }
    if p.active_ascii_log2 > 0 {
        lines.push(format!(
            "starting set also: the first 2^{} ids of ASCII bytes and every ASCII character",
            p.active_ascii_log2
        ));
    }
    if p.probe_rate > 0 {
        lines.push(format!(
            "escape probe on the hidden state: rate {}/64",
            p.probe_rate
        ));
    }
    if p.cache_log2 > 0 {
        lines.push(format!(
            "continuous cache: the hidden states of the last 2^{} positions, sharpness {}",
            p.cache_log2, p.cache_theta
        ));
    }
    if p.mask_control {
        lines.push("control tokens never predicted".to_string());
    }
    lines.join("\n                 ")
}

/// The ablation rows of one result.
pub fn ablation(r: &BenchResult) -> String {
    let mut s = format!(
        "ablation for {} ({} bytes; ideal code length, before framing):\n",
        r.file, r.bytes
    );
    let base = r.ablation.iter().find(|(n, _)| n == "llm").map(|x| x.1);
    for (name, bpb) in &r.ablation {
        let rel = base
            .map(|b| format!("{:+.1}%", (bpb / b - 1.0) * 100.0))
            .unwrap_or_default();
        s += &format!("  {name:<40} {bpb:>7.4} bpb {rel:>8}\n");
    }
    s
}

/// One file's bench figures: lmzip's, and the classical compressors' beside it.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct BenchRow {
    #[serde(flatten)]
    pub lmzip: BenchResult,
    pub peers: Vec<PeerResult>,
}

/// The sums over all files: bytes over bytes, seconds over seconds (so speeds and bits per
/// byte weigh each file by its size), the largest peak memory.
#[derive(Debug, Serialize)]
pub struct BenchTotal {
    pub file: String,
    pub files: usize,
    pub bytes: u64,
    pub compressed_bytes: u64,
    pub bits_per_byte: f64,
    pub symbols: u64,
    pub compress_seconds: f64,
    pub decompress_seconds: f64,
    pub compress_kb_per_s: f64,
    pub decompress_kb_per_s: f64,
    pub compress_tokens_per_s: f64,
    pub decompress_tokens_per_s: f64,
    pub peak_rss_mib: f64,
    pub classic_share: f64,
    pub peers: Vec<PeerResult>,
}

impl BenchTotal {
    pub fn of(name: &str, rows: &[BenchRow]) -> Self {
        let sum = |f: &dyn Fn(&BenchResult) -> f64| rows.iter().map(|r| f(&r.lmzip)).sum::<f64>();
        let bytes = rows.iter().map(|r| r.lmzip.bytes).sum::<u64>();
        let compressed = rows.iter().map(|r| r.lmzip.compressed_bytes).sum::<u64>();
        let symbols = rows.iter().map(|r| r.lmzip.symbols).sum::<u64>();
        let (ct, dt) = (sum(&|r| r.compress_seconds), sum(&|r| r.decompress_seconds));
        let classic = sum(&|r| r.classic_share * r.bytes as f64);
        let kb = bytes as f64 / 1000.0;
        let mut peers: Vec<PeerResult> = Vec::new();
        for r in rows {
            for (i, p) in r.peers.iter().enumerate() {
                match peers.get_mut(i) {
                    Some(t) => {
                        t.compressed_bytes += p.compressed_bytes;
                        t.compress_seconds += p.compress_seconds;
                        t.decompress_seconds += p.decompress_seconds;
                        t.round_trip_ok &= p.round_trip_ok;
                    }
                    None => peers.push(p.clone()),
                }
            }
        }
        BenchTotal {
            file: name.to_string(),
            files: rows.len(),
            bytes,
            compressed_bytes: compressed,
            bits_per_byte: bits_per_byte(compressed, bytes),
            symbols,
            compress_seconds: ct,
            decompress_seconds: dt,
            compress_kb_per_s: kb / ct.max(1e-9),
            decompress_kb_per_s: kb / dt.max(1e-9),
            compress_tokens_per_s: symbols as f64 / ct.max(1e-9),
            decompress_tokens_per_s: symbols as f64 / dt.max(1e-9),
            peak_rss_mib: rows
                .iter()
                .map(|r| r.lmzip.peak_rss_mib)
                .fold(0.0, f64::max),
            classic_share: classic / bytes.max(1) as f64,
            peers,
        }
    }
}

fn bits_per_byte(compressed: u64, bytes: u64) -> f64 {
    if bytes == 0 {
        0.0
    } else {
        compressed as f64 * 8.0 / bytes as f64
    }
}

/// The header line of [`table`].
pub fn table_header() -> String {
    format!(
        "{:<28} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}\n",
        "file",
        "bytes",
        "lmz",
        "bpb",
        "c KB/s",
        "c tok/s",
        "d KB/s",
        "d tok/s",
        "RSS MiB",
        "classic"
    )
}

/// One line of [`table`]: file, bytes, archive bytes, bits/byte, compress KB/s and
/// tokens/s, the same decompressing, peak MiB and classical share.
#[allow(clippy::too_many_arguments)]
fn table_line(
    file: &str,
    bytes: u64,
    lmz: u64,
    bpb: f64,
    c: (f64, f64),
    d: (f64, f64),
    rss: f64,
    classic: f64,
) -> String {
    format!(
        "{:<28} {:>9} {:>9} {:>7.4} {:>9.3} {:>9.1} {:>9.3} {:>9.1} {:>8.0} {:>7.1}%\n",
        file,
        bytes,
        lmz,
        bpb,
        c.0,
        c.1,
        d.0,
        d.1,
        rss,
        classic * 100.0
    )
}

/// One result's line of [`table`].
pub fn table_row(r: &BenchResult) -> String {
    table_line(
        &r.file,
        r.bytes,
        r.compressed_bytes,
        r.bits_per_byte,
        (r.compress_kb_per_s, r.compress_tokens_per_s),
        (r.decompress_kb_per_s, r.decompress_tokens_per_s),
        r.peak_rss_mib,
        r.classic_share,
    )
}

/// A fixed-width table of results for terminals, with the total row when there are
/// several files, then the classical compressors' sizes beside lmzip's.
pub fn table(rows: &[BenchRow], total: &BenchTotal) -> String {
    let mut s = table_header();
    for r in rows {
        s += &table_row(&r.lmzip);
    }
    if rows.len() > 1 {
        s += &table_line(
            &total.file,
            total.bytes,
            total.compressed_bytes,
            total.bits_per_byte,
            (total.compress_kb_per_s, total.compress_tokens_per_s),
            (total.decompress_kb_per_s, total.decompress_tokens_per_s),
            total.peak_rss_mib,
            total.classic_share,
        );
    }
    if !total.peers.is_empty() {
        s += &format!("\n{:<28} {:>9}", "file", "lmz");
        for p in &total.peers {
            s += &format!(" {:>20}", p.name);
        }
        s += "\n";
        let line = |file: &str, lmz: u64, peers: &[PeerResult]| {
            let mut l = format!("{file:<28} {lmz:>9}");
            for p in peers {
                let cell = format!("{} ({:.2}x)", p.compressed_bytes, ratio(p, lmz));
                l += &format!(" {cell:>20}");
            }
            l + "\n"
        };
        for r in rows {
            s += &line(&r.lmzip.file, r.lmzip.compressed_bytes, &r.peers);
        }
        if rows.len() > 1 {
            s += &line(&total.file, total.compressed_bytes, &total.peers);
        }
        s += &format!(
            "{:<28} {:>9}",
            "speed c/d KB/s",
            format!(
                "{:.1}/{:.1}",
                total.compress_kb_per_s, total.decompress_kb_per_s
            )
        );
        for p in &total.peers {
            let (c, d) = peer_kb_per_s(p, total.bytes);
            s += &format!(" {:>20}", format!("{c:.0}/{d:.0}"));
        }
        s += "\n(x: the compressor's size over lmzip's; every round trip verified)\n";
    }
    s
}

/// A peer's size over lmzip's.
fn ratio(p: &PeerResult, lmz: u64) -> f64 {
    p.compressed_bytes as f64 / lmz.max(1) as f64
}

/// A peer's speed each way in KB/s over `bytes` of input.
fn peer_kb_per_s(p: &PeerResult, bytes: u64) -> (f64, f64) {
    let kb = bytes as f64 / 1000.0;
    (
        kb / p.compress_seconds.max(1e-9),
        kb / p.decompress_seconds.max(1e-9),
    )
}

/// CSV: one row per file and compressor (lmzip first), then the totals.
pub fn bench_csv(rows: &[BenchRow], total: &BenchTotal) -> String {
    let mut s = String::from(
        "file,bytes,compressor,compressed_bytes,bits_per_byte,compress_seconds,decompress_seconds,round_trip_ok\n",
    );
    let mut line = |file: &str, bytes: u64, who: &str, packed: u64, ct: f64, dt: f64, ok: bool| {
        s += &format!(
            "{},{bytes},{},{packed},{:.6},{ct:.6},{dt:.6},{ok}\n",
            csv_field(file),
            csv_field(who),
            bits_per_byte(packed, bytes)
        );
    };
    for r in rows {
        let l = &r.lmzip;
        let (f, b) = (&l.file, l.bytes);
        line(
            f,
            b,
            "lmzip",
            l.compressed_bytes,
            l.compress_seconds,
            l.decompress_seconds,
            l.round_trip_ok,
        );
        for p in &r.peers {
            line(
                f,
                b,
                &p.name,
                p.compressed_bytes,
                p.compress_seconds,
                p.decompress_seconds,
                p.round_trip_ok,
            );
        }
    }
    let (f, b) = (&total.file, total.bytes);
    line(
        f,
        b,
        "lmzip",
        total.compressed_bytes,
        total.compress_seconds,
        total.decompress_seconds,
        true,
    );
    for p in &total.peers {
        line(
            f,
            b,
            &p.name,
            p.compressed_bytes,
            p.compress_seconds,
            p.decompress_seconds,
            p.round_trip_ok,
        );
    }
    s
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

/// Markdown: sizes (bytes, and each compressor's size over lmzip's), then speed each way
/// over all files, then the command that made them.
pub fn bench_markdown(rows: &[BenchRow], total: &BenchTotal, command: &str) -> String {
    let mut s = String::from("| file | bytes | lmzip | bits/byte |");
    let mut rule = String::from("|---|---:|---:|---:|");
    for p in &total.peers {
        s += &format!(" {} |", p.name);
        rule += "---:|";
    }
    s += "\n";
    s += &rule;
    s += "\n";
    let mut line = |file: &str, bytes: u64, lmz: u64, peers: &[PeerResult], bold: bool| {
        let b = if bold { "**" } else { "" };
        s += &format!(
            "| {b}{file}{b} | {bytes} | {b}{lmz}{b} | {:.4} |",
            bits_per_byte(lmz, bytes)
        );
        for p in peers {
            s += &format!(" {} ({:.2}×) |", p.compressed_bytes, ratio(p, lmz));
        }
        s += "\n";
    };
    for r in rows {
        line(
            &r.lmzip.file,
            r.lmzip.bytes,
            r.lmzip.compressed_bytes,
            &r.peers,
            false,
        );
    }
    if rows.len() > 1 {
        line(
            &total.file,
            total.bytes,
            total.compressed_bytes,
            &total.peers,
            true,
        );
    }
    s += "\n| compressor | size | bits/byte | compress KB/s | decompress KB/s |\n";
    s += "|---|---:|---:|---:|---:|\n";
    s += &format!(
        "| lmzip | {} | {:.4} | {:.2} | {:.2} |\n",
        total.compressed_bytes,
        total.bits_per_byte,
        total.compress_kb_per_s,
        total.decompress_kb_per_s
    );
    for p in &total.peers {
        let (c, d) = peer_kb_per_s(p, total.bytes);
        s += &format!(
            "| {} | {} | {:.4} | {c:.0} | {d:.0} |\n",
            p.name,
            p.compressed_bytes,
            bits_per_byte(p.compressed_bytes, total.bytes)
        );
    }
    s += &format!(
        "\n{} files, {} bytes; sizes in bytes, (×) = the compressor's size over lmzip's; every \
         round trip verified. Made by `{command}`.\n",
        total.files, total.bytes
    );
    s
}

/// What `lmzip bench` prints after its table: speculation counts, the settings, and the
/// ablation rows.
pub fn bench_summary(
    rows: &[BenchRow],
    total: &BenchTotal,
    opts: &CompressOptions,
    backend: u16,
) -> String {
    let mut s = table(rows, total);
    let results: Vec<&BenchResult> = rows.iter().map(|r| &r.lmzip).collect();
    for r in results.iter().filter(|r| r.decode_guessed > 0) {
        s += &format!(
            "{}: decoded {} symbols in {} forward calls; {} guessed rows, {} came true\n",
            r.file, r.symbols, r.decode_calls, r.decode_guessed, r.decode_guessed_right
        );
    }
    s += &format!(
        "threads {}, backend {backend}, streams ≤ {}, block tokens ≤ {}, window {} ({}s keeping {}), predictor {}; bits per byte count the whole archive, not the model file\n",
        rayon::current_num_threads(),
        opts.streams,
        opts.block_tokens,
        opts.window,
        slide_name(opts.window_policy),
        opts.keep,
        opts.predictor.label()
    );
    for r in results.iter().filter(|r| !r.ablation.is_empty()) {
        s += &ablation(r);
    }
    s
}

/// `n` and the noun for it: "1 group", "3 groups".
fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
