//! End-to-end tests: the real `lmzip` binary with the real default model.
//!
//! Under CI (env `CI` set) a missing model is a failure, not a skip.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn model_path() -> Option<PathBuf> {
    lmzip::testing::real_model_path()
}

fn lmzip(model: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lmzip"));
    c.env("LMZIP_MODEL", model);
    c
}

fn run_stdin(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Compresses through stdin/stdout and back; returns the archive.
fn round_trip(model: &Path, data: &[u8], extra: &[&str]) -> Vec<u8> {
    let mut c = lmzip(model);
    c.args(["compress", "-c"]).args(extra);
    let out = run_stdin(c, data);
    assert!(out.status.success(), "compress failed: {}", stderr(&out));
    let archive = out.stdout;
    let mut d = lmzip(model);
    d.args(["decompress", "-c"]);
    let back = run_stdin(d, &archive);
    assert!(
        back.status.success(),
        "decompress failed: {}",
        stderr(&back)
    );
    assert!(
        back.stdout == data,
        "round trip differs ({} vs {} bytes)",
        back.stdout.len(),
        data.len()
    );
    archive
}

fn corpus(rel: &str, n: usize) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for base in [root.join("corpora/files"), root.join("../shared/corpora")] {
        if let Ok(mut d) = std::fs::read(base.join(rel)) {
            d.truncate(n);
            return d;
        }
    }
    panic!("corpus file {rel} missing: run `bash corpora/fetch.sh`");
}

#[test]
fn round_trips_of_awkward_inputs() {
    let Some(m) = model_path() else { return };
    // Several inputs per process would be faster, but each case must stand alone.
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("one byte", b"x".to_vec()),
        ("one unrepresentable byte", vec![0xFF]),
        ("all 256 byte values", all_bytes),
        (
            "invalid utf-8",
            b"ok \xff\xfe bad \xc3\x28 \xed\xa0\x80 \xf0\x9f\x98 end\xc0".to_vec(),
        ),
        (
            "special token text",
            b"<|endoftext|>Hello<|im_start|>user\n<|im_end|><repo_name>".to_vec(),
        ),
        (
            "crlf nul control",
            b"line one\r\nline\0two\r\n\x01\x02\x03\x04\x1b[0m\t\x7f\r\n".to_vec(),
        ),
        (
            "unicode",
            "naïve café — 東京 🚀 ∑ x² \u{feff}".as_bytes().to_vec(),
        ),
    ];
    for (name, data) in cases {
        eprintln!("case: {name}");
        let archive = round_trip(&m, &data, &["--block-tokens", "64"]);
        assert!(
            archive.len() >= 4 && archive[..4] == [0xB5, 0x6C, 0x6D, 0x7A],
            "{name}: magic"
        );
    }
}

#[test]
fn round_trips_real_text_and_compresses_it() {
    let Some(m) = model_path() else { return };
    for (rel, n) in [("canterbury/alice29.txt", 3000), ("enwik8/enwik6", 3000)] {
        let data = corpus(rel, n);
        let archive = round_trip(&m, &data, &["--block-tokens", "128"]);
        let bpb = archive.len() as f64 * 8.0 / data.len() as f64;
        eprintln!(
            "{rel} first {n} bytes: {} → {} bytes, {bpb:.3} bits/byte",
            data.len(),
            archive.len()
        );
        // A sanity bound, not a benchmark: the model must be doing real work.
        assert!(bpb < 3.0, "{rel}: {bpb} bits per byte");
    }
}

#[test]
fn files_are_written_safely() {
    let Some(m) = model_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("note.txt");
    std::fs::write(&input, b"The quick brown fox jumps over the lazy dog.\n").unwrap();
    let ok = lmzip(&m).arg(&input).output().unwrap();
    assert!(ok.status.success(), "{}", stderr(&ok));
    let lmz = dir.path().join("note.txt.lmz");
    assert!(
        lmz.is_file() && input.is_file(),
        "input kept, output written"
    );
    // Refuses to overwrite without -f, and exits 1.
    let again = lmzip(&m).arg(&input).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    // Decompress next to it: the original exists, so -d needs -f or -o.
    let refused = lmzip(&m).args(["-d"]).arg(&lmz).output().unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let out = dir.path().join("restored.txt");
    let d = lmzip(&m)
        .args(["-d", "-o"])
        .arg(&out)
        .arg(&lmz)
        .output()
        .unwrap();
    assert!(d.status.success(), "{}", stderr(&d));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&input).unwrap());
    // -t verifies without writing.
    let t = lmzip(&m).arg("-t").arg(&lmz).output().unwrap();
    assert!(t.status.success(), "{}", stderr(&t));
    // Concatenated archives decompress to the concatenation.
    let other = dir.path().join("b.txt");
    std::fs::write(&other, b"second part\n").unwrap();
    assert!(lmzip(&m).arg(&other).output().unwrap().status.success());
    let mut cat = std::fs::read(&lmz).unwrap();
    cat.extend(std::fs::read(dir.path().join("b.txt.lmz")).unwrap());
    let mut c = lmzip(&m);
    c.args(["-d", "-c"]);
    let both = run_stdin(c, &cat);
    assert!(both.status.success(), "{}", stderr(&both));
    let mut want = std::fs::read(&input).unwrap();
    want.extend(b"second part\n");
    assert_eq!(both.stdout, want);
    // Usage errors exit 2.
    assert_eq!(
        lmzip(&m)
            .arg("--no-such-flag")
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn damaged_archives_are_rejected_without_output() {
    let Some(m) = model_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = b"Alice was beginning to get very tired of sitting by her sister on the bank.\n";
    let archive = round_trip(&m, data, &[]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // A one-block archive: a header of about 28 bytes, the payload, a 4-byte checksum.
        ("truncated header", archive[..12].to_vec(), "truncated"),
        (
            "truncated block",
            archive[..archive.len() - 8].to_vec(),
            "truncated",
        ),
        (
            "not an archive",
            b"hello world, plain text".to_vec(),
            "not an lmzip archive",
        ),
        (
            "flipped payload bit",
            {
                let mut a = archive.clone();
                let i = a.len() - 8;
                a[i] ^= 0x10;
                a
            },
            "",
        ),
        (
            "flipped header bit",
            {
                let mut a = archive.clone();
                a[8] ^= 1; // inside the model identity
                a
            },
            "checksum",
        ),
    ];
    for (name, bad, needle) in cases {
        let path = dir.path().join(format!("{}.lmz", name.replace(' ', "_")));
        std::fs::write(&path, &bad).unwrap();
        let o = lmzip(&m).arg("-d").arg(&path).output().unwrap();
        let msg = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {msg}");
        assert!(
            msg.to_lowercase().contains(needle),
            "{name}: message {msg:?} lacks {needle:?}"
        );
        assert!(
            !path.with_extension("").exists(),
            "{name}: partial output left behind"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{name}: temporary file left behind");
    }
}

#[test]
fn wrong_or_missing_model_is_a_clear_error() {
    let Some(m) = model_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let missing = lmzip(Path::new("/nonexistent/model.gguf"))
        .args(["-c"])
        .arg(&m)
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("models/fetch.sh"),
        "{}",
        stderr(&missing)
    );
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"GGUF but not really").unwrap();
    let mut c = lmzip(&junk);
    c.args(["-c"]);
    let bad = run_stdin(c, b"text");
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("not a readable GGUF"),
        "{}",
        stderr(&bad)
    );
    // An archive that names another model: rewrite the header's model hash.
    let archive = round_trip(&m, b"some text", &[]);
    let mut r = &archive[..];
    let mut h = lmzip::format::Header::read_from(&mut r).unwrap().unwrap();
    h.model = lmzip::format::HashPrefix::of(&[7u8; 32], lmzip::format::MODEL_ID_LEN);
    let mut forged = Vec::new();
    h.write_to(&mut forged).unwrap();
    forged.extend_from_slice(r);
    let mut d = lmzip(&m);
    d.args(["-d", "-c"]);
    let o = run_stdin(d, &forged);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("needs a different model"),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn an_interrupted_run_leaves_nothing_behind() {
    let Some(m) = model_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.txt");
    std::fs::write(&input, corpus("canterbury/alice29.txt", 40_000)).unwrap();
    let mut child = lmzip(&m)
        .arg(&input)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Long enough for the model to load and the temporary output to exist; far shorter
    // than compressing 40 KB takes.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "exit status after SIGTERM");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["big.txt".to_string()], "only the input remains");
}

#[test]
fn every_numeric_backend_round_trips() {
    let Some(m) = model_path() else { return };
    let data = b"Backend two keeps integer weights; backend one keeps f32. All are exact.\n";
    for b in ["1", "2", "3"] {
        let archive = round_trip(&m, data, &["--backend", b]);
        assert_eq!(
            lmzip::peek_backend(&archive).map(|x| x.to_string()),
            Some(b.into())
        );
    }
}

/// `--model gemma3-270m` and `--model smollm2-135m` find the fetched files in models/;
/// `info` and the mismatch error name the model an archive needs by its short name.
#[test]
fn known_models_by_name() {
    let Some(gemma) = lmzip::testing::real_gemma_model_path() else {
        return;
    };
    let fetched = |f: &str| Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(f);
    let known = lmzip::model::known::GEMMA3_270M;
    if !fetched(known.file).is_file() || model_path().is_none() {
        // Short names look only in the models folders, not at LMZIP_GEMMA_MODEL.
        eprintln!("skipping: {} is not in models/", gemma.display());
        return;
    }
    let named = |name: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lmzip"));
        c.env_remove("LMZIP_MODEL").args(["--model", name]);
        c
    };
    let dir = tempfile::tempdir().unwrap();
    let text = b"Known models by name.\n";
    let mut c = named("gemma3-270m");
    c.arg("-c");
    let out = run_stdin(c, text);
    assert!(out.status.success(), "{}", stderr(&out));
    let archive = dir.path().join("a.lmz");
    std::fs::write(&archive, &out.stdout).unwrap();
    let info = Command::new(env!("CARGO_BIN_EXE_lmzip"))
        .arg("info")
        .arg(&archive)
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains(known.file) && info.contains("--model gemma3-270m"),
        "{info}"
    );
    let back = named("gemma3-270m")
        .args(["-d", "-c"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(back.status.success(), "{}", stderr(&back));
    assert_eq!(back.stdout, text);
    let wrong = named("smollm2-135m")
        .args(["-d", "-c"])
        .arg(&archive)
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    let e = stderr(&wrong);
    assert!(
        e.contains("needs a different model") && e.contains("--model gemma3-270m"),
        "{e}"
    );
}

/// Whether both known models are in models/ (under CI they must be: a failure, not a skip).
fn both_known_models() -> bool {
    let in_models = |k: &lmzip::model::known::KnownModel| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(k.file)
            .is_file()
    };
    if in_models(&lmzip::model::known::SMOLLM2_135M) && in_models(&lmzip::model::known::GEMMA3_270M)
    {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI: models/fetch.sh installs both models"
    );
    eprintln!("skipping: both known models must be in models/");
    false
}

/// `lmzip` with no `LMZIP_MODEL`: models come from flags, archives or the models folder.
fn plain() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lmzip"));
    c.env_remove("LMZIP_MODEL");
    c
}

/// `lmzip -d` finds the known model an archive names in the models folder when no
/// `--model` and no `LMZIP_MODEL` is given (SmolLM2 named, at level 1; Gemma 3 at the default
/// level and `--best`); a model named on the command line still wins.
#[test]
fn decoding_finds_the_known_model_an_archive_names() {
    if !both_known_models() {
        return;
    }
    let (smol, gemma) = (
        lmzip::model::known::SMOLLM2_135M,
        lmzip::model::known::GEMMA3_270M,
    );
    let dir = tempfile::tempdir().unwrap();
    let text = b"The archive names its model; lmzip finds it.\n";
    for (flags, model) in [
        (&["--model", "smollm2-135m", "-1"][..], &smol),
        (&[][..], &gemma),
        (&["--best"][..], &gemma),
    ] {
        let mut c = plain();
        c.args(flags).arg("-c");
        let out = run_stdin(c, text);
        assert!(out.status.success(), "{flags:?}: {}", stderr(&out));
        let archive = dir.path().join("a.lmz");
        std::fs::write(&archive, &out.stdout).unwrap();
        let info = plain().arg("info").arg(&archive).output().unwrap();
        let info = String::from_utf8_lossy(&info.stdout);
        assert!(info.contains(model.file), "{flags:?}: {info}");
        let back = plain().args(["-d", "-c"]).arg(&archive).output().unwrap();
        assert!(back.status.success(), "{flags:?}: {}", stderr(&back));
        assert_eq!(back.stdout, text, "{flags:?}");
    }
    let mut c = plain();
    c.args(["--model", "smollm2-135m", "-c"]);
    let archive = dir.path().join("s.lmz");
    std::fs::write(&archive, run_stdin(c, text).stdout).unwrap();
    let wrong = plain()
        .args(["--model", "gemma3-270m", "-d", "-c"])
        .arg(&archive)
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("--model smollm2-135m"),
        "{}",
        stderr(&wrong)
    );
}

/// `--model auto` codes each file with the installed known model whose archive is the
/// smaller (byte for byte the archive that model writes when named), one archive per
/// input, each decoded with no `--model`; it refuses what it cannot combine with.
#[test]
fn auto_model_picks_the_smaller_archive() {
    if !both_known_models() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let inputs: [(&str, &[u8]); 2] = [
        (
            "a.c",
            b"int main(void) {\n    return add(1, 2) == 3 ? 0 : 1;\n}\n",
        ),
        (
            "b.txt",
            b"Alice was beginning to get very tired of sitting by her sister.\n",
        ),
    ];
    for (name, text) in inputs {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let out = plain()
        .args(["--model", "auto", "-v"])
        .args(inputs.map(|(n, _)| dir.path().join(n)))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--model auto, first"),
        "{}",
        stderr(&out)
    );
    for (name, text) in inputs {
        let archive = std::fs::read(dir.path().join(format!("{name}.lmz"))).unwrap();
        let by = |m: &str| {
            let mut c = plain();
            c.args(["--model", m, "-c"]);
            run_stdin(c, text).stdout
        };
        let (g, s) = (by("gemma3-270m"), by("smollm2-135m"));
        let expect = if s.len() < g.len() { s } else { g };
        assert_eq!(archive, expect, "{name}");
        let back = plain()
            .args(["-d", "-c"])
            .arg(dir.path().join(format!("{name}.lmz")))
            .output()
            .unwrap();
        assert!(back.status.success(), "{}", stderr(&back));
        assert_eq!(back.stdout, text, "{name}");
    }
    for flags in [
        &["--model", "auto", "--member-size", "1000", "-c"][..],
        &["bench", "--model", "auto"][..],
    ] {
        let out = plain()
            .args(flags)
            .arg(dir.path().join("a.c"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--model auto"), "{}", stderr(&out));
    }
}

/// `lmzip bench --report` with the real model, looked at as a person would: headless
/// Chromium renders the page to a PNG (tests/run.sh installs Chromium; under CI a missing
/// one fails). The picture is kept as `target/report-screenshot.png`.
#[test]
fn bench_report_renders_in_a_browser() {
    let Some(model) = model_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("alice.txt");
    std::fs::write(&text, corpus("canterbury/alice29.txt", 1500)).unwrap();
    let page = dir.path().join("report.html");
    let out = lmzip(&model)
        .args(["bench", "--report"])
        .arg(&page)
        .arg(&text)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<h2>alice.txt</h2>") && html.contains("Alice"));
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok());
    let Some(chromium) = chromium else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: tests/run.sh installs chromium"
        );
        eprintln!("skipping the screenshot: no chromium");
        return;
    };
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/report-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1150,1100",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    // A blank page of that size compresses to a few KB; text, colours and a plot do not.
    assert!(png.len() > 40_000, "{} bytes", png.len());
}

/// Several files in one run, coded side by side by the real model, give each the archive
/// a run of its own writes, and decode side by side to the inputs.
#[test]
fn many_files_in_one_run_equal_runs_of_their_own() {
    let Some(m) = model_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut odd = b"NUL \0 and \xff\xfe invalid UTF-8, <|endoftext|> spelled out.\n".to_vec();
    odd.extend_from_slice(&corpus("canterbury/alice29.txt", 400));
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("alice.txt", corpus("canterbury/alice29.txt", 3000)),
        (
            "report.txt",
            corpus("ood/deprivation-2025-technical-report.txt", 2000),
        ),
        ("odd.bin", odd),
    ];
    let mut names = Vec::new();
    for (n, d) in &files {
        std::fs::write(dir.path().join(n), d).unwrap();
        names.push(dir.path().join(n));
    }
    let out = lmzip(&m).args(&names).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut archives = Vec::new();
    for (n, _) in &files {
        let a = dir.path().join(format!("{n}.lmz"));
        let alone = lmzip(&m)
            .arg("-c")
            .arg(dir.path().join(n))
            .output()
            .unwrap();
        assert!(alone.status.success(), "{}", stderr(&alone));
        assert_eq!(std::fs::read(&a).unwrap(), alone.stdout, "{n}");
        std::fs::remove_file(dir.path().join(n)).unwrap();
        archives.push(a);
    }
    let out = lmzip(&m).arg("-d").args(&archives).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for (n, d) in &files {
        assert_eq!(&std::fs::read(dir.path().join(n)).unwrap(), d, "{n}");
    }
}
