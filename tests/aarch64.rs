//! Archives made on x86-64 decode on aarch64, and aarch64 writes the same bytes: the
//! aarch64 build of lmzip (`target/aarch64-unknown-linux-gnu/release/lmzip`, or
//! `LMZIP_AARCH64_BIN`) runs under `qemu-aarch64` (or `LMZIP_QEMU_AARCH64`), with its NEON
//! kernels and with the portable ones (`LMZIP_NO_SIMD=1`), against this build's archives.
//!
//! tests/run.sh installs the cross toolchain and qemu-user and builds that binary before
//! the tests; under CI a missing binary or qemu is a failure, elsewhere the tests say what
//! is missing and skip. Build it again after changing the engine, or these tests compare
//! with an old binary:
//!
//!     bash tests/run.sh            # or, by hand (Debian):
//!     CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
//!     CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
//!       cargo build --release --target aarch64-unknown-linux-gnu --bin lmzip
//!
//! Emulation runs the model one to two orders of magnitude slower than the machine
//! itself, so the inputs are a few hundred bytes and the real models decode their
//! smallest golden archives.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The aarch64 lmzip and the qemu that runs it.
struct Arm {
    qemu: OsString,
    bin: PathBuf,
}

impl Arm {
    /// `lmzip` on aarch64 with `model`, NEON kernels (`simd`) or the portable ones.
    fn lmzip(&self, model: &Path, simd: bool) -> Command {
        let mut c = Command::new(&self.qemu);
        c.arg(&self.bin).env("LMZIP_MODEL", model);
        if std::env::var_os("QEMU_LD_PREFIX").is_none() {
            // Debian's cross C library (libc6-arm64-cross), where qemu finds the loader.
            c.env("QEMU_LD_PREFIX", "/usr/aarch64-linux-gnu");
        }
        if !simd {
            c.env("LMZIP_NO_SIMD", "1");
        }
        c
    }
}

/// The aarch64 build and qemu-aarch64, or `None` (with the reason on standard error) when
/// either is missing outside CI; under CI (env `CI` set) that is a failure.
fn arm() -> Option<Arm> {
    let bin = std::env::var_os("LMZIP_AARCH64_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/aarch64-unknown-linux-gnu/release/lmzip")
        });
    let qemu = std::env::var_os("LMZIP_QEMU_AARCH64").unwrap_or_else(|| "qemu-aarch64".into());
    let qemu_runs = Command::new(&qemu)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let missing = if !qemu_runs {
        format!(
            "{} does not run (Debian: apt-get install qemu-user)",
            qemu.to_string_lossy()
        )
    } else if !bin.is_file() {
        format!(
            "no aarch64 build at {} (tests/run.sh builds it)",
            bin.display()
        )
    } else {
        return Some(Arm { qemu, bin });
    };
    if std::env::var_os("CI").is_some() {
        panic!("CI is set and {missing}");
    }
    eprintln!("skipping: {missing}");
    None
}

/// The x86-64 lmzip of this build with `model`.
fn host(model: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lmzip"));
    c.env("LMZIP_MODEL", model);
    c
}

/// Runs `c`, checks that it succeeded and returns what it printed.
fn stdout_of(mut c: Command) -> Vec<u8> {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Compresses `input` with `flags` on x86-64 and on aarch64 (NEON, and portable when
/// `portable`): the archives must be the same bytes, and aarch64 must decode x86-64's.
fn check_same(arm: &Arm, model: &Path, input: &Path, flags: &[&str], portable: bool) {
    let t = Instant::now();
    let mut c = host(model);
    c.arg("-c").args(flags).arg(input);
    let x86 = stdout_of(c);
    let dir = input.parent().unwrap();
    let archive = dir.join("x86.lmz");
    std::fs::write(&archive, &x86).unwrap();
    let original = std::fs::read(input).unwrap();
    let kernels: &[bool] = if portable { &[true, false] } else { &[true] };
    for &simd in kernels {
        let what = if simd { "NEON" } else { "portable" };
        let mut c = arm.lmzip(model, simd);
        c.arg("-c").args(flags).arg(input);
        assert!(
            stdout_of(c) == x86,
            "{flags:?}: aarch64 ({what}) wrote other bytes than x86-64"
        );
        let mut d = arm.lmzip(model, simd);
        d.args(["-d", "-c"]).arg(&archive);
        assert!(
            stdout_of(d) == original,
            "{flags:?}: aarch64 ({what}) did not decode x86-64's archive"
        );
    }
    eprintln!(
        "{} {flags:?}: {} B -> {} B, same on aarch64, {:.1} s",
        model.file_name().unwrap().to_string_lossy(),
        original.len(),
        x86.len(),
        t.elapsed().as_secs_f64()
    );
}

/// A few lines of prose with the awkward parts: tabs and runs of spaces, UTF-8, text that
/// spells control tokens, invalid UTF-8 and a CR LF (about 300 bytes).
fn awkward_text() -> Vec<u8> {
    let mut t = Vec::new();
    for i in 0..4 {
        t.extend_from_slice(
            format!("The cat {i} sat on the mat, and the hat is on the cat.\n").as_bytes(),
        );
        match i {
            0 => t.extend_from_slice(b"  \tindented\t\ttabs    and   spaces\n\n\n"),
            1 => t.extend_from_slice(
                "naïve café — 東京 \u{2581}x <bos> <eos> <|endoftext|> 🚀\n".as_bytes(),
            ),
            2 => t.extend_from_slice(b"\x00\xff\xc3 raw bytes\r\n"),
            _ => {}
        }
    }
    t
}

/// The synthetic llama model (Q4_1 and F32 tensors) on backends 3, 2 and 1, blocks side by
/// side and a sliding window; then text with a binary region (format 4: LZMA2 beside the
/// model). NEON and portable kernels.
#[test]
fn aarch64_writes_the_same_llama_archives() {
    let Some(arm) = arm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("synthetic.gguf");
    lmzip::testing::write_synthetic_model(&model).unwrap();
    let input = dir.path().join("text");
    std::fs::write(&input, awkward_text()).unwrap();
    for backend in ["3", "2", "1"] {
        let flags = [
            "--no-regions",
            "--backend",
            backend,
            "--block-tokens",
            "40",
            "--streams",
            "3",
            "--window",
            "16",
            "--slide-keep",
            "11",
        ];
        check_same(&arm, &model, &input, &flags, true);
    }
    let mut mixed = awkward_text();
    mixed.extend((0..1500u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    mixed.extend_from_slice(&awkward_text());
    std::fs::write(&input, &mixed).unwrap();
    check_same(&arm, &model, &input, &["--backend", "3"], false);
}

/// The synthetic Gemma 3 model (Q8_0, Q5_0, Q4_K, Q6_K and F32 tensors; sliding-window and
/// global layers) on backends 3, 2 and 1, both window policies and the active head with
/// the continuous cache.
#[test]
fn aarch64_writes_the_same_gemma_archives() {
    let Some(arm) = arm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("synthetic-gemma3.gguf");
    lmzip::testing::write_synthetic_gemma_model(&model).unwrap();
    let input = dir.path().join("text");
    std::fs::write(&input, awkward_text()).unwrap();
    let shift = "--block-tokens 4096 --window 16 --slide-keep 12 --slide shift";
    let active =
        "--block-tokens 300 --streams 2 --window 16 --slide-keep 13 --active-log2 3 --cache-log2 8";
    let reprefill = "--block-tokens 100 --streams 3 --window 16 --slide-keep 8 --slide reprefill";
    for (backend, flags, portable) in [
        ("3", shift, true),
        ("3", active, false),
        ("3", reprefill, false),
        ("2", shift, true),
        ("2", active, false),
        ("1", shift, false),
    ] {
        let mut all = vec!["--no-regions", "--backend", backend];
        all.extend(flags.split_whitespace());
        check_same(&arm, &model, &input, &all, portable);
    }
}

/// Golden archives made on x86-64 with the real models decode on aarch64 (SmolLM2 on
/// backends 2 and 3, Gemma 3 270M on backend 3 with its active head, and with its
/// defaults of settings version 5), and aarch64 writes
/// SmolLM2's backend-2 archive of a short text byte for byte as x86-64 does.
#[test]
fn aarch64_decodes_real_model_goldens() {
    let Some(arm) = arm() else {
        return;
    };
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases = Vec::new();
    if let Some(smol) = lmzip::testing::real_model_path() {
        cases.push((smol.clone(), "backend2.txt"));
        cases.push((smol.clone(), "backend3.txt"));
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("short.txt");
        std::fs::write(&input, b"Portable archives, byte for byte.\n").unwrap();
        check_same(&arm, &smol, &input, &["--backend", "2"], false);
    }
    if let Some(gemma) = lmzip::testing::real_gemma_model_path() {
        cases.push((gemma.clone(), "gemma.txt"));
        // Predictor settings version 5: the ASCII starting set and the escape probe.
        cases.push((gemma, "gemma-probe.txt"));
    }
    for (model, name) in cases {
        let t = Instant::now();
        let mut d = arm.lmzip(&model, true);
        d.args(["-d", "-c"]).arg(golden.join(format!("{name}.lmz")));
        assert!(
            stdout_of(d) == std::fs::read(golden.join(name)).unwrap(),
            "{name}: aarch64 decoded other bytes"
        );
        eprintln!(
            "golden {name}: decoded on aarch64 in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
}
