//! Text for people: archive descriptions (`lmzip info`) and bench tables (`lmzip bench`).

use lmzip::bench::BenchResult;
use lmzip::model::identity::{describe_recorded, hex};
use lmzip::{ArchiveInfo, CompressOptions};
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
    for (i, a) in list.iter().enumerate() {
        // Writing to a String cannot fail.
        let _ = write_archive(&mut s, i + 1, a);
    }
    s
}

fn write_archive(s: &mut String, n: usize, a: &ArchiveInfo) -> std::fmt::Result {
    writeln!(s, "  archive {n}: format version {}", a.version)?;
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
    writeln!(s, "    transform    {}", a.transform.name())?;
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
        "    content      {} bytes{as_coded}, {} tokens, {} blocks in {} groups, {sum} {value}",
        a.content_bytes, a.symbols, a.blocks, a.groups
    )?;
    if a.binary_regions > 0 {
        writeln!(
            s,
            "    regions      {} binary ({} bytes) coded classically (LZMA2) in {} bytes",
            a.binary_regions, a.classic_bytes, a.classic_coded_bytes
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

/// One result's line of [`table`].
pub fn table_row(r: &BenchResult) -> String {
    format!(
        "{:<28} {:>9} {:>9} {:>7.4} {:>9.3} {:>9.1} {:>9.3} {:>9.1} {:>8.0} {:>7.1}%\n",
        r.file,
        r.bytes,
        r.compressed_bytes,
        r.bits_per_byte,
        r.compress_kb_per_s,
        r.compress_tokens_per_s,
        r.decompress_kb_per_s,
        r.decompress_tokens_per_s,
        r.peak_rss_mib,
        r.classic_share * 100.0
    )
}

/// A fixed-width table of results for terminals.
pub fn table(results: &[BenchResult]) -> String {
    let mut s = table_header();
    for r in results {
        s += &table_row(r);
    }
    s
}

/// What `lmzip bench` prints after its table: speculation counts, the settings, and the
/// ablation rows.
pub fn bench_summary(results: &[BenchResult], opts: &CompressOptions, backend: u16) -> String {
    let mut s = table(results);
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
