//! Archives do not depend on how the work was split: thread count, rows per model call
//! (the encoder batches, the decoder steps), SIMD or the portable kernels, and an x86 CPU
//! without AVX2 or F16C (`qemu-x86_64 -cpu Nehalem`; tests/run.sh installs qemu-user, and
//! under CI a missing qemu is a failure). Two models: the real default model (SmolLM2,
//! backends 3, 2 and 1, window policy 1 with a window small enough to slide many times),
//! and Gemma 3 — the synthetic one from `lmzip::testing` (every backend, both window
//! policies, the active head, blocks long enough that the sliding-window layers' caches
//! compact) and, when present, the real Gemma 3 270M (required under CI).

use lmzip::model::Model;
use lmzip::pipeline::{self, CompressOptions};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const TEXT: &[u8] = b"Determinism means that the decoder, on any machine, with any number of \
threads, computes exactly the numbers the encoder computed. \x00\xff caf\xc3\xa9 <|endoftext|>\n";

fn opts(rows_per_call: usize) -> CompressOptions {
    CompressOptions {
        block_tokens: 24,
        streams: 3,
        window: 12,
        keep: 9,
        rows_per_call,
        regions: false,
        ..CompressOptions::default()
    }
}

fn compress(m: &Model, o: &CompressOptions) -> Vec<u8> {
    let mut a = Vec::new();
    pipeline::compress(m, TEXT, o, &mut a, &mut |_| {}).expect("compresses");
    a
}

fn decompress(m: &Model, a: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    pipeline::decompress(m, &mut &a[..], &mut out, &mut |_| {}).expect("decompresses");
    out
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn archives_do_not_depend_on_threads_or_batching() {
    let Some(path) = lmzip::testing::real_model_path() else {
        return;
    };
    for backend in [3u16, 2, 1] {
        let m = Model::load_with(&path, backend).unwrap();
        let reference = in_pool(1, || compress(&m, &opts(256)));
        // The encoder's rows per call (1 = the decoder's shape) and the thread count.
        for (threads, rows) in [(2, 256), (1, 1), (2, 1), (2, 7), (3, 5)] {
            let a = in_pool(threads, || compress(&m, &opts(rows)));
            assert!(
                a == reference,
                "backend {backend}: {threads} threads, {rows} rows per call"
            );
        }
        for threads in [1, 2, 3] {
            assert_eq!(in_pool(threads, || decompress(&m, &reference)), TEXT);
        }
    }
}

fn write_archive(dir: &Path, name: &str, backend: u16) -> PathBuf {
    let path = lmzip::testing::real_model_path().unwrap();
    let m = Model::load_with(&path, backend).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, compress(&m, &opts(256))).unwrap();
    p
}

fn lmzip() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lmzip"));
    if let Some(p) = lmzip::testing::real_model_path() {
        c.env("LMZIP_MODEL", p);
    }
    c
}

/// Runs a decompression command and checks it printed exactly `TEXT`.
fn assert_decodes_to_text(c: Command) {
    assert_prints(c, TEXT);
}

/// Runs a command and checks it succeeded and printed exactly `want`.
fn assert_prints(mut c: Command, want: &[u8]) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        c,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == want,
        "{c:?}: printed {} bytes, not the {} expected",
        out.stdout.len(),
        want.len()
    );
}

/// The portable kernels (`LMZIP_NO_SIMD=1`, one thread) decode the SIMD build's archive
/// and, compressing the same text with the same settings, write the same bytes.
#[test]
fn portable_kernels_match_simd() {
    if lmzip::testing::real_model_path().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for backend in [3u16, 2, 1] {
        let a = write_archive(dir.path(), &format!("b{backend}.lmz"), backend);
        let mut c = lmzip();
        c.args(["-d", "-c", "-T", "1"])
            .arg(&a)
            .env("LMZIP_NO_SIMD", "1");
        assert_decodes_to_text(c);
    }
}

/// The `qemu-x86_64` to run (`LMZIP_QEMU`, else from `PATH`), or `None` with a message
/// when it is not installed; under CI (env `CI` set) a missing qemu is a failure, since
/// tests/run.sh installs it.
fn qemu() -> Option<OsString> {
    let qemu = std::env::var_os("LMZIP_QEMU").unwrap_or_else(|| "qemu-x86_64".into());
    let ok = Command::new(&qemu)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some(qemu)
    } else if std::env::var_os("CI").is_some() {
        panic!(
            "CI is set and {} does not run: tests/run.sh installs it (Debian: apt-get install \
             qemu-user), or set LMZIP_QEMU",
            qemu.to_string_lossy()
        );
    } else {
        eprintln!(
            "skipping: {} not installed (Debian: apt-get install qemu-user)",
            qemu.to_string_lossy()
        );
        None
    }
}

/// `lmzip ARGS` under `qemu-x86_64 -cpu Nehalem`: SSE4.2, no AVX/AVX2/F16C, so the
/// portable kernels (and backend 3's portable half conversions) run on an emulated older
/// CPU.
fn lmzip_on_nehalem(qemu: &OsString, model: &Path) -> Command {
    let mut c = Command::new(qemu);
    c.args(["-cpu", "Nehalem", env!("CARGO_BIN_EXE_lmzip")])
        .env("LMZIP_MODEL", model);
    c
}

/// Short text for the real default model under emulation, where loading it takes about 7
/// s and each token about 3 s (so this takes about 20 s).
const SHORT_TEXT: &[u8] = b"Emulated.\n";

/// Decodes llama archives under `qemu-x86_64 -cpu Nehalem`: the synthetic llama model's
/// (`TEXT`, backends 3, 2 and 1), and the real default model's (`SHORT_TEXT`, backend 3).
#[cfg(target_arch = "x86_64")]
#[test]
fn decodes_on_an_emulated_cpu_without_avx2() {
    let Some(qemu) = qemu() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let synthetic = dir.path().join("synthetic.gguf");
    lmzip::testing::write_synthetic_model(&synthetic).unwrap();
    let mut runs = Vec::new();
    for backend in [3u16, 2, 1] {
        let m = Model::load_with(&synthetic, backend).unwrap();
        let a = dir.path().join(format!("synthetic-b{backend}.lmz"));
        std::fs::write(&a, compress(&m, &opts(256))).unwrap();
        runs.push((
            format!("synthetic llama, backend {backend}"),
            synthetic.clone(),
            a,
            TEXT,
        ));
    }
    if let Some(real) = lmzip::testing::real_model_path() {
        let m = Model::load_with(&real, 3).unwrap();
        let a = dir.path().join("real-b3.lmz");
        let mut archive = Vec::new();
        pipeline::compress(&m, SHORT_TEXT, &opts(256), &mut archive, &mut |_| {}).unwrap();
        std::fs::write(&a, archive).unwrap();
        runs.push(("SmolLM2, backend 3".to_string(), real, a, SHORT_TEXT));
    }
    for (what, model, a, text) in runs {
        let t = Instant::now();
        let mut c = lmzip_on_nehalem(&qemu, &model);
        c.args(["-d", "-c"]).arg(&a);
        assert_prints(c, text);
        eprintln!(
            "{what}: {} B decoded under qemu in {:.1} s",
            text.len(),
            t.elapsed().as_secs_f64()
        );
    }
}

/// The decoder's speculative rows (guessed next symbols fed ahead, kept only when they come
/// true) give exactly the token-by-token result: one and two streams, both window policies,
/// a window small enough that guesses meet slides and resets.
#[test]
fn speculative_decoding_matches_token_by_token() {
    let Some(path) = lmzip::testing::real_model_path() else {
        return;
    };
    let m = Model::load(&path).unwrap();
    // Repeats make the match model guess; the changes make some guesses wrong.
    let text: Vec<u8> = b"the cat sat on the mat. the cat sat on the hat. the cat sat on the mat. \
the dog sat on the mat. the cat sat on the mat. \xff\x00 the cat sat on the mat."
        .to_vec();
    for (streams, block, window, keep, policy) in [
        (1u16, 4096u32, 1024u32, 896u32, lmzip::format::WINDOW_SHIFT),
        (1, 4096, 14, 9, lmzip::format::WINDOW_SHIFT),
        (1, 4096, 14, 9, lmzip::format::WINDOW_REPREFILL),
        (2, 30, 12, 7, lmzip::format::WINDOW_SHIFT),
    ] {
        let o = CompressOptions {
            block_tokens: block,
            streams,
            window,
            keep,
            window_policy: policy,
            regions: false,
            ..CompressOptions::default()
        };
        let mut a = Vec::new();
        pipeline::compress(&m, &text, &o, &mut a, &mut |_| {}).unwrap();
        let run = |spec: bool| {
            let mut out = Vec::new();
            let st =
                pipeline::decompress_with(&m, &mut &a[..], &mut out, &mut |_| {}, 1 << 34, spec)
                    .expect("decompresses");
            (out, st)
        };
        let (plain, ps) = run(false);
        let (spec, ss) = run(true);
        let what = format!("streams {streams}, window {window}/{keep}, policy {policy}");
        assert_eq!(plain, text, "{what}");
        assert_eq!(spec, text, "{what}");
        assert_eq!(ps.guessed, 0, "{what}");
        assert!(ss.guessed_right > 0, "{what}: no guess came true");
        assert!(ss.guessed_right < ss.guessed, "{what}: no guess was wrong");
        assert!(
            ss.calls < ps.calls,
            "{what}: {} vs {} calls",
            ss.calls,
            ps.calls
        );
        eprintln!(
            "{what}: {} calls token by token, {} speculating ({} guessed rows, {} right)",
            ps.calls, ss.calls, ss.guessed, ss.guessed_right
        );
    }
}

// ---- Gemma 3 ----

/// Text for the synthetic Gemma model: prose with repeats, the user-defined newline, space
/// and tab runs, characters without a token of their own (byte fallback), a literal `▁`,
/// text that spells control tokens, NUL, CR and invalid UTF-8. 20 lines, about 1,500 bytes
/// and over 500 tokens: one block of it runs past the sliding-window caches' 259 slots
/// (window 4 − 1 + 256 rows), so they compact.
fn gemma_text() -> Vec<u8> {
    gemma_lines(20)
}

/// The first `n` lines of [`gemma_text`]'s pattern (4 lines: about 300 bytes).
fn gemma_lines(n: usize) -> Vec<u8> {
    let mut t = Vec::new();
    for i in 0..n {
        t.extend_from_slice(
            format!("The cat {i} sat on the mat, and the hat is on the cat.\n").as_bytes(),
        );
        match i % 5 {
            0 => t.extend_from_slice(b"  \tindented\t\ttabs    and   spaces\n\n\n"),
            1 => t.extend_from_slice("naïve café — 東京 \u{2581}x <bos> <eos> 🚀\n".as_bytes()),
            2 => t.extend_from_slice(b"\x00\xff\xc3 raw bytes\r\n"),
            _ => {}
        }
    }
    t
}

/// One encoder setting of the synthetic Gemma cases.
struct GemmaCase {
    what: &'static str,
    opts: CompressOptions,
    /// The same settings as `lmzip` flags (after `-c`).
    flags: Vec<String>,
}

/// The synthetic Gemma cases, by index: 0 a long block with a full window that slides
/// (shift); 1 a long block in a window that never slides, so the encoder's calls of 256
/// rows compact the sliding-window caches at other points than the decoder's single rows;
/// 2 three short blocks side by side with re-prefill; 3 and 4 the active head (2^3 ids
/// plus the ones seen) and the continuous cache (256 keys, so it wraps) with each policy.
fn gemma_cases() -> Vec<GemmaCase> {
    // (what, block tokens, streams, window, keep, re-prefill, active head log2)
    let table: [(&'static str, u32, u16, u32, u32, bool, u8); 5] = [
        (
            "long block, window 16 sliding (shift)",
            4096,
            1,
            16,
            12,
            false,
            0,
        ),
        (
            "long block, window 512 (no slide)",
            4096,
            1,
            512,
            448,
            false,
            0,
        ),
        ("3 blocks side by side, re-prefill", 200, 3, 16, 8, true, 0),
        ("active head, 2 blocks, shift", 300, 2, 16, 13, false, 3),
        (
            "active head, long block, re-prefill",
            4096,
            1,
            20,
            10,
            true,
            3,
        ),
    ];
    table
        .into_iter()
        .map(|(what, block, streams, window, keep, reprefill, k)| {
            let mut opts = CompressOptions {
                block_tokens: block,
                streams,
                window,
                keep,
                window_policy: if reprefill {
                    lmzip::format::WINDOW_REPREFILL
                } else {
                    lmzip::format::WINDOW_SHIFT
                },
                regions: false,
                ..CompressOptions::default()
            };
            opts.predictor.active_log2 = k;
            // With the active head, the continuous cache too, small enough to wrap around,
            // the ASCII starting set and the escape probe (settings version 5).
            let cache = if k > 0 { 8 } else { 0 };
            opts.predictor.cache_log2 = cache;
            let (ascii, probe) = if k > 0 { (4, 22) } else { (0, 0) };
            opts.predictor.active_ascii_log2 = ascii;
            opts.predictor.probe_rate = probe;
            let slide = if reprefill { "reprefill" } else { "shift" };
            let flags = format!(
                "--block-tokens {block} --streams {streams} --window {window} \
                 --slide-keep {keep} --slide {slide} --active-log2 {k} --cache-log2 {cache} \
                 --ascii-log2 {ascii} --escape-probe {probe}"
            );
            GemmaCase {
                what,
                opts,
                flags: flags.split_whitespace().map(String::from).collect(),
            }
        })
        .collect()
}

fn compress_with(m: &Model, data: &[u8], o: &CompressOptions) -> Vec<u8> {
    let mut a = Vec::new();
    pipeline::compress(m, data, o, &mut a, &mut |_| {}).expect("compresses");
    a
}

fn decompress_any(m: &Model, a: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    pipeline::decompress(m, &mut &a[..], &mut out, &mut |_| {}).expect("decompresses");
    out
}

/// Archives of the synthetic Gemma model are the same bytes for 1, 2 and 3 threads and 1,
/// 5, 7 or 256 rows per encoder call, and decode on 1 and 3 threads; every backend, every
/// case.
#[test]
fn gemma_archives_do_not_depend_on_threads_or_batching() {
    let t0 = Instant::now();
    let text = gemma_text();
    for backend in [3u16, 2, 1] {
        let m = lmzip::testing::synthetic_gemma_model_with(backend).unwrap();
        let symbols = m.tokenizer.encode(&text).len();
        assert!(
            symbols > 300,
            "{symbols} symbols: too few to compact the window caches"
        );
        for case in gemma_cases() {
            let what = format!("backend {backend}, {}", case.what);
            let with_rows = |rows| CompressOptions {
                rows_per_call: rows,
                ..case.opts.clone()
            };
            let reference = in_pool(1, || compress_with(&m, &text, &with_rows(256)));
            for (threads, rows) in [(2, 256), (1, 1), (2, 7), (3, 5)] {
                let a = in_pool(threads, || compress_with(&m, &text, &with_rows(rows)));
                assert!(
                    a == reference,
                    "{what}: {threads} threads, {rows} rows per call"
                );
            }
            for threads in [1, 3] {
                let back = in_pool(threads, || decompress_any(&m, &reference));
                assert!(back == text, "{what}: decoded on {threads} threads");
            }
        }
    }
    eprintln!(
        "synthetic Gemma, {} B: threads and batching checked in {:.1} s",
        text.len(),
        t0.elapsed().as_secs_f64()
    );
}

/// One archive of the synthetic Gemma model: what it is, its backend, case index and path.
struct GemmaArchive {
    what: String,
    backend: u16,
    case: usize,
    path: PathBuf,
}

/// The synthetic Gemma model written to `dir`, and archives of `text` for each (backend,
/// case indices).
fn gemma_archives(
    dir: &Path,
    text: &[u8],
    which: &[(u16, &[usize])],
) -> (PathBuf, Vec<GemmaArchive>) {
    let model = dir.join("synthetic-gemma3.gguf");
    lmzip::testing::write_synthetic_gemma_model(&model).unwrap();
    let cases = gemma_cases();
    let mut out = Vec::new();
    for &(backend, indices) in which {
        let m = Model::load_with(&model, backend).unwrap();
        for &case in indices {
            let path = dir.join(format!("b{backend}-{case}.lmz"));
            std::fs::write(&path, compress_with(&m, text, &cases[case].opts)).unwrap();
            out.push(GemmaArchive {
                what: format!("backend {backend}, {}", cases[case].what),
                backend,
                case,
                path,
            });
        }
    }
    (model, out)
}

/// The portable kernels (`LMZIP_NO_SIMD=1`, one thread) decode the synthetic Gemma
/// model's archives made with SIMD and, compressing the same text with the same settings,
/// write the same bytes: every case on backend 3, both policies and the active head on
/// backends 2 and 1.
#[test]
fn gemma_portable_kernels_match_simd() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let text = gemma_text();
    let (model, archives) = gemma_archives(
        dir.path(),
        &text,
        &[(3, &[0, 1, 2, 3, 4]), (2, &[0, 2, 3]), (1, &[0, 2, 3])],
    );
    let input = dir.path().join("text");
    std::fs::write(&input, &text).unwrap();
    let cases = gemma_cases();
    let portable = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lmzip"));
        c.env("LMZIP_MODEL", &model)
            .env("LMZIP_NO_SIMD", "1")
            .args(["-T", "1"]);
        c
    };
    for a in &archives {
        let mut d = portable();
        d.args(["-d", "-c"]).arg(&a.path);
        assert_prints(d, &text);
        let mut e = portable();
        // The archives above were made with regions off (the engine's path).
        e.args(["-c", "--no-regions", "--backend", &a.backend.to_string()])
            .args(&cases[a.case].flags)
            .arg(&input);
        let out = e.output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            a.what,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == std::fs::read(&a.path).unwrap(),
            "{}: the portable encoder wrote other bytes",
            a.what
        );
    }
    eprintln!(
        "synthetic Gemma: portable kernels checked in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// Decodes the synthetic Gemma model's archives of about 300 bytes (emulation is slow)
/// under `qemu-x86_64 -cpu Nehalem`: backends 3 and 2, a sliding window, the active head.
#[cfg(target_arch = "x86_64")]
#[test]
fn gemma_decodes_on_an_emulated_cpu_without_avx2() {
    let Some(qemu) = qemu() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = gemma_lines(4);
    let (model, archives) = gemma_archives(dir.path(), &text, &[(3, &[0, 3]), (2, &[0, 3])]);
    for a in &archives {
        let t = Instant::now();
        let mut c = lmzip_on_nehalem(&qemu, &model);
        c.args(["-d", "-c"]).arg(&a.path);
        assert_prints(c, &text);
        eprintln!(
            "synthetic Gemma, {}: {} B decoded under qemu in {:.1} s",
            a.what,
            text.len(),
            t.elapsed().as_secs_f64()
        );
    }
}

/// The real Gemma 3 270M (`LMZIP_GEMMA_MODEL` or models/, required under CI), backend 3:
/// archives of 300 bytes are the same for 1, 2 and 3 threads and 1, 7 or 256 rows per
/// call, and decode on 3 threads; with a sliding window (shift), and with the active head
/// and re-prefill. (The other backends and the sliding-window caches' compaction, which
/// needs over 512 positions here, are the synthetic model's cases.)
#[test]
fn real_gemma_archives_do_not_depend_on_threads_or_batching() {
    let Some(path) = lmzip::testing::real_gemma_model_path() else {
        return;
    };
    let t0 = Instant::now();
    let mut text = "Gemma reads this twice. The quick brown fox jumps over the lazy dog; \
the quick brown fox jumps over the lazy dog again.\n\n    indented\tand tabbed\n\
naïve café — 東京 🚀 <bos> <eos> \u{2581} \x00 and the end of the text, \
which repeats: the quick brown fox jumps over the lazy dog.\n"
        .as_bytes()
        .to_vec();
    text.extend_from_slice(b"\xff\xfe invalid UTF-8\r\n");
    let shift = CompressOptions {
        block_tokens: 40,
        streams: 2,
        window: 24,
        keep: 18,
        regions: false,
        ..CompressOptions::default()
    };
    let mut active = CompressOptions {
        block_tokens: 4096,
        streams: 1,
        window: 30,
        keep: 15,
        window_policy: lmzip::format::WINDOW_REPREFILL,
        regions: false,
        ..CompressOptions::default()
    };
    active.predictor.active_log2 = 12;
    active.predictor.cache_log2 = 8;
    active.predictor.active_ascii_log2 = lmzip::DEFAULT_ACTIVE_ASCII_LOG2;
    active.predictor.probe_rate = lmzip::DEFAULT_PROBE_RATE;
    let m = Model::load(&path).unwrap();
    assert_eq!(m.net.arch(), "gemma3");
    for (what, o) in [("shift", &shift), ("active head, re-prefill", &active)] {
        let with_rows = |rows| CompressOptions {
            rows_per_call: rows,
            ..o.clone()
        };
        let reference = in_pool(1, || compress_with(&m, &text, &with_rows(256)));
        for (threads, rows) in [(2, 256), (1, 1), (3, 7)] {
            let a = in_pool(threads, || compress_with(&m, &text, &with_rows(rows)));
            assert!(
                a == reference,
                "{what}: {threads} threads, {rows} rows per call"
            );
        }
        let back = in_pool(3, || decompress_any(&m, &reference));
        assert!(back == text, "{what}: decoded on 3 threads");
        eprintln!(
            "real Gemma, {what}: {} B -> {} B",
            text.len(),
            reference.len()
        );
    }
    eprintln!("real Gemma: checked in {:.1} s", t0.elapsed().as_secs_f64());
}
