//! Archives do not depend on how the work was split: thread count, rows per model call
//! (the encoder batches, the decoder steps), SIMD or the portable kernels, and — when
//! `qemu-x86_64` is installed — an x86 CPU without AVX2 or F16C. Real model, backends 3, 2
//! and 1, window policy 1 with a window small enough to slide many times.

use lmzip::model::Model;
use lmzip::pipeline::{self, CompressOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

const TEXT: &[u8] = b"Determinism means that the decoder, on any machine, with any number of \
threads, computes exactly the numbers the encoder computed. \x00\xff caf\xc3\xa9 <|endoftext|>\n";

fn opts(rows_per_call: usize) -> CompressOptions {
    CompressOptions {
        block_tokens: 24,
        streams: 3,
        window: 12,
        keep: 9,
        rows_per_call,
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
fn assert_decodes_to_text(mut c: Command) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, TEXT);
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

/// Decodes under `qemu-x86_64 -cpu Nehalem` (SSE4.2, no AVX/AVX2/F16C, so the portable kernels
/// run on an emulated older CPU) when qemu-user is installed; says so and passes otherwise
/// (it is an extra check, not part of the project's requirements on CI machines).
#[test]
fn decodes_on_an_emulated_cpu_without_avx2() {
    if lmzip::testing::real_model_path().is_none() {
        return;
    }
    let qemu = std::env::var_os("LMZIP_QEMU").unwrap_or_else(|| "qemu-x86_64".into());
    if Command::new(&qemu).arg("--version").output().is_err() {
        eprintln!("skipping: qemu-x86_64 not installed (Debian: apt install qemu-user)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Backend 3 there also runs the portable half conversions (Nehalem has no F16C).
    for backend in [3u16, 2] {
        let a = write_archive(dir.path(), &format!("b{backend}.lmz"), backend);
        let mut c = Command::new(&qemu);
        c.args(["-cpu", "Nehalem", env!("CARGO_BIN_EXE_lmzip"), "-d", "-c"])
            .arg(&a)
            .env("LMZIP_MODEL", lmzip::testing::real_model_path().unwrap());
        assert_decodes_to_text(c);
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
