//! The command line, flag by flag: every flag, error message and exit status (0 success,
//! 1 error, 2 usage, 130 interrupted), with the synthetic test model passed by `--model`
//! so that each case runs in milliseconds. tests/cli.rs covers the real model.

use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::contains;
use std::path::{Path, PathBuf};

/// A scratch folder holding the synthetic model.
struct Env {
    dir: tempfile::TempDir,
    model: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("synthetic.gguf");
    lmzip::testing::write_synthetic_model(&model).unwrap();
    Env { dir, model }
}

impl Env {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// `lmzip --model SYNTHETIC`, run in the scratch folder, with no LMZIP_MODEL around.
    fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("lmzip").unwrap();
        c.current_dir(self.dir.path())
            .env_remove("LMZIP_MODEL")
            .arg("--model")
            .arg(&self.model);
        c
    }

    /// `lmzip --model SYNTHETIC ARGS…` started in the scratch folder, its output piped.
    fn spawn(&self, args: &[&str]) -> std::process::Child {
        std::process::Command::new(env!("CARGO_BIN_EXE_lmzip"))
            .current_dir(self.dir.path())
            .env_remove("LMZIP_MODEL")
            .arg("--model")
            .arg(&self.model)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Names in the scratch folder other than the model, sorted.
    fn names(&self) -> Vec<String> {
        names_in(self.dir.path())
            .into_iter()
            .filter(|n| n != "synthetic.gguf")
            .collect()
    }

    fn compress(&self, data: &[u8]) -> Vec<u8> {
        self.cmd()
            .arg("-c")
            .write_stdin(data)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone()
    }
}

fn names_in(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

const TEXT: &[u8] =
    b"The quick brown fox jumps over the lazy dog.\nAnd then it slept in the sun.\n";

fn is_root() -> bool {
    // Root ignores permission bits, so "unwritable folder" needs another route there.
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

#[test]
fn compress_then_decompress_files_keeps_inputs() {
    let e = env();
    let input = e.write("note.txt", TEXT);
    e.cmd().arg(&input).assert().success().stdout("").stderr("");
    assert_eq!(e.names(), ["note.txt", "note.txt.lmz"]);
    assert_eq!(std::fs::read(&input).unwrap(), TEXT, "input kept");
    // The original exists: decompressing next to it needs -f.
    e.cmd()
        .args(["-d", "note.txt.lmz"])
        .assert()
        .code(1)
        .stderr(contains("note.txt already exists; use -f to overwrite"));
    std::fs::remove_file(&input).unwrap();
    e.cmd().args(["-d", "note.txt.lmz"]).assert().success();
    assert_eq!(std::fs::read(&input).unwrap(), TEXT);
    assert_eq!(e.names(), ["note.txt", "note.txt.lmz"], "archive kept too");
    // Subcommand spelling, -k accepted, -f overwrites.
    e.cmd()
        .args(["decompress", "-k", "-f", "note.txt.lmz"])
        .assert()
        .success();
    e.cmd()
        .args(["compress", "-f", "note.txt"])
        .assert()
        .success();
    assert_eq!(e.names(), ["note.txt", "note.txt.lmz"]);
}

#[test]
fn several_files_in_one_call_and_partial_failure() {
    let e = env();
    for n in ["a.txt", "b.txt", "c.txt"] {
        e.write(
            n,
            format!("file {n}: {}", String::from_utf8_lossy(TEXT)).as_bytes(),
        );
    }
    e.cmd().args(["a.txt", "b.txt", "c.txt"]).assert().success();
    for n in ["a.txt", "b.txt", "c.txt"] {
        std::fs::remove_file(e.path(n)).unwrap();
    }
    // A missing file among them: the others are still done, the status is 1.
    e.cmd()
        .args(["-d", "a.txt.lmz", "missing.lmz", "c.txt.lmz"])
        .assert()
        .code(1)
        .stderr(contains("lmzip: missing.lmz: cannot open"));
    assert!(e.path("a.txt").is_file() && e.path("c.txt").is_file());
    assert!(!e.path("b.txt").exists());
    assert!(std::fs::read(e.path("c.txt"))
        .unwrap()
        .starts_with(b"file c.txt"));
}

/// Many files in one run are coded side by side, each archive byte for byte the one a run
/// of its own writes; `-r` walks folders (archives left out compressing, only archives
/// decompressing); a damaged archive among them fails alone, with its name, and leaves no
/// partial file; `--verify` and `-t` work side by side too.
#[test]
fn many_files_side_by_side_and_recursive() {
    let e = env();
    std::fs::create_dir_all(e.path("docs/sub")).unwrap();
    let files = [
        ("docs/a.txt", TEXT.repeat(2)),
        ("docs/b.txt", b"short".to_vec()),
        ("docs/sub/c.txt", TEXT.repeat(9)),
        ("docs/sub/d.txt", b"the cat sat on the mat\r\n".repeat(5)),
        ("docs/sub/empty.txt", Vec::new()),
    ];
    for (n, d) in &files {
        e.write(n, d);
    }
    // Regions off: the synthetic model would lose to the classical coder and run nothing.
    e.cmd()
        .args(["--no-regions", "--verify", "-r", "docs"])
        .assert()
        .success()
        .stderr("");
    for (n, d) in &files {
        let alone = e
            .cmd()
            .args(["--no-regions", "-c", n])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        assert_eq!(e.read(&format!("{n}.lmz")), alone, "{n}");
        assert_eq!(&e.read(n), d, "{n} kept");
    }
    // Compressing again skips the archives and refuses to overwrite without -f.
    e.cmd()
        .args(["-r", "docs"])
        .assert()
        .code(1)
        .stderr(contains("already exists; use -f to overwrite"))
        .stderr(contains(".lmz.lmz").not());
    e.cmd().args(["-t", "-r", "docs"]).assert().success();
    for (n, _) in &files {
        std::fs::remove_file(e.path(n)).unwrap();
    }
    let mut bad = e.read("docs/sub/c.txt.lmz");
    let at = bad.len() - 10;
    bad[at] ^= 0x40;
    e.write("docs/sub/c.txt.lmz", &bad);
    e.cmd()
        .args(["-d", "-r", "docs"])
        .assert()
        .code(1)
        .stderr(contains("docs/sub/c.txt.lmz"));
    for (n, d) in &files {
        if *n == "docs/sub/c.txt" {
            assert!(
                !e.path(n).exists(),
                "nothing written for the damaged archive"
            );
        } else {
            assert_eq!(&e.read(n), d, "{n}");
        }
    }
    assert!(names_in(&e.path("docs/sub"))
        .iter()
        .all(|n| !n.ends_with(".tmp")));
}

#[test]
fn standard_input_and_output() {
    let e = env();
    let archive = e.compress(TEXT);
    assert_eq!(&archive[..4], &[0xB5, 0x6C, 0x6D, 0x7A]);
    // `-` and no file at all both mean standard input, to standard output.
    let dash = e
        .cmd()
        .arg("-")
        .write_stdin(TEXT)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(dash, archive, "same bytes whichever way stdin is named");
    e.cmd()
        .args(["-d", "-"])
        .write_stdin(archive.clone())
        .assert()
        .success()
        .stdout(TEXT);
    e.cmd()
        .args(["decompress"])
        .write_stdin(archive.clone())
        .assert()
        .success()
        .stdout(TEXT);
    // -c with a file: to stdout, nothing written beside it.
    let input = e.write("in.txt", TEXT);
    let via_c = e.cmd().arg("-c").arg(&input).assert().success();
    assert_eq!(via_c.get_output().stdout, archive);
    assert_eq!(e.names(), ["in.txt"]);
    // -o - is standard output too.
    e.cmd()
        .args(["-o", "-", "in.txt"])
        .assert()
        .success()
        .stdout(archive.clone());
    // Concatenated archives decode to the concatenation.
    let mut two = archive.clone();
    two.extend_from_slice(&archive);
    let mut want = TEXT.to_vec();
    want.extend_from_slice(TEXT);
    e.cmd()
        .args(["-dc"])
        .write_stdin(two)
        .assert()
        .success()
        .stdout(want);
    // Empty input is a valid archive of nothing.
    let empty = e.compress(b"");
    e.cmd()
        .args(["-dc"])
        .write_stdin(empty)
        .assert()
        .success()
        .stdout("");
}

#[test]
fn output_name_test_mode_and_info() {
    let e = env();
    e.write("in.txt", TEXT);
    e.cmd().args(["-o", "out.bin", "in.txt"]).assert().success();
    e.cmd()
        .args(["-d", "-o", "back.txt", "out.bin"])
        .assert()
        .success();
    assert_eq!(std::fs::read(e.path("back.txt")).unwrap(), TEXT);
    // -t decodes and verifies, writes nothing, says OK unless -q.
    e.cmd()
        .args(["-t", "out.bin"])
        .assert()
        .success()
        .stdout("")
        .stderr(contains("out.bin: OK:"));
    e.cmd()
        .args(["test", "-q", "out.bin"])
        .assert()
        .success()
        .stderr("");
    assert_eq!(e.names(), ["back.txt", "in.txt", "out.bin"]);
    // info needs no model and names the format version.
    Command::cargo_bin("lmzip")
        .unwrap()
        .current_dir(e.dir.path())
        .args(["info", "out.bin"])
        .assert()
        .success()
        .stdout(contains("format version").and(contains("content      75 bytes")));
    Command::cargo_bin("lmzip")
        .unwrap()
        .current_dir(e.dir.path())
        .args(["info", "in.txt"])
        .assert()
        .code(1)
        .stderr(contains("not an lmzip archive"));
}

/// CRLF text is coded as LF and restored; `--no-transform` codes it as it is; `--checksum
/// sha256` swaps the 4-byte content checksum for SHA-256; `info` says which and what the
/// framing costs.
#[test]
fn crlf_transform_and_checksum_flags() {
    let e = env();
    let crlf = b"The quick brown fox\r\njumps over the lazy dog.\r\nA lone \r stays.\r\n";
    e.write("crlf.txt", crlf);
    let info = |name: &str| {
        let o = Command::cargo_bin("lmzip")
            .unwrap()
            .current_dir(e.dir.path())
            .args(["info", name])
            .assert()
            .success();
        String::from_utf8(o.get_output().stdout.clone()).unwrap()
    };
    for (flags, archive, transform, checksum) in [
        (&[][..], "a.lmz", "CRLF line ends coded as LF", "xxh64"),
        (
            &["--no-transform"][..],
            "b.lmz",
            "transform    none",
            "xxh64",
        ),
        (&["--checksum", "sha256"][..], "c.lmz", "CRLF", "sha256"),
    ] {
        // The synthetic model's text archive can lose to coding it all classically; this
        // test is about the model's path.
        e.cmd()
            .arg("compress")
            .arg("--no-regions")
            .args(flags)
            .args(["-o", archive, "crlf.txt"])
            .assert()
            .success();
        let text = info(archive);
        assert!(text.contains("format version 3"), "{text}");
        assert!(
            text.contains(transform) && text.contains(checksum),
            "{text}"
        );
        assert!(text.contains("of framing"), "{text}");
        e.cmd()
            .args(["-d", "-c", archive])
            .assert()
            .success()
            .stdout(crlf.to_vec());
    }
    let size = |n: &str| std::fs::metadata(e.path(n)).unwrap().len();
    // SHA-256 costs 28 bytes more than the 4-byte checksum.
    assert_eq!(size("c.lmz"), size("a.lmz") + 28);
    // Text with a bare LF is left alone.
    let mixed = b"one\r\ntwo\nthree\r\n";
    e.write("mixed.txt", mixed);
    e.cmd()
        .args(["-o", "m.lmz", "mixed.txt"])
        .assert()
        .success();
    assert!(info("m.lmz").contains("transform    none"));
    e.cmd()
        .args(["-d", "-c", "m.lmz"])
        .assert()
        .success()
        .stdout(mixed.to_vec());
}

#[test]
fn verbose_reports_ratio_and_speed() {
    let e = env();
    e.write("in.txt", TEXT);
    e.cmd().args(["-v", "in.txt"]).assert().success().stderr(
        contains("in.txt: compressed 75 →")
            .and(contains("ratio"))
            .and(contains("bits/byte"))
            .and(contains("KB/s"))
            .and(contains("tokens/s")),
    );
    e.cmd()
        .args(["-v", "-d", "-c", "in.txt.lmz"])
        .assert()
        .success()
        .stdout(TEXT)
        .stderr(contains("decompressed").and(contains("→ 75 bytes")));
    // stdin is named as such.
    e.cmd()
        .args(["-v", "-c"])
        .write_stdin(TEXT)
        .assert()
        .success()
        .stderr(contains("(stdin): compressed 75"));
}

/// `--verify` decodes the new archive before keeping it: same archive as without, text
/// and binary alike.
#[test]
fn verify_option() {
    let e = env();
    let mut bin = vec![0u8; 3000];
    bin.extend_from_slice(TEXT);
    e.write("in.txt", TEXT);
    e.write("in.bin", &bin);
    for name in ["in.txt", "in.bin"] {
        e.cmd().args(["-o", "plain.lmz", name]).assert().success();
        e.cmd()
            .args(["--verify", "-o", "verified.lmz", name])
            .assert()
            .success();
        assert_eq!(e.read("plain.lmz"), e.read("verified.lmz"), "{name}");
        e.cmd()
            .args(["-d", "-c", "verified.lmz"])
            .assert()
            .success()
            .stdout(e.read(name));
        std::fs::remove_file(e.path("plain.lmz")).unwrap();
        std::fs::remove_file(e.path("verified.lmz")).unwrap();
    }
}

#[test]
fn rm_removes_inputs_only_after_success() {
    let e = env();
    e.write("a.txt", TEXT);
    e.cmd().args(["--rm", "a.txt"]).assert().success();
    assert_eq!(e.names(), ["a.txt.lmz"]);
    // A damaged archive: decompression fails, the archive stays, no output appears.
    let mut bad = std::fs::read(e.path("a.txt.lmz")).unwrap();
    let n = bad.len();
    bad[n - 30] ^= 0x40;
    std::fs::write(e.path("bad.lmz"), &bad).unwrap();
    e.cmd()
        .args(["-d", "--rm", "bad.lmz"])
        .assert()
        .code(1)
        .stderr(contains("lmzip: bad.lmz:"));
    assert_eq!(e.names(), ["a.txt.lmz", "bad.lmz"]);
    // -k after --rm wins (the later flag), and -c never removes.
    e.cmd()
        .args(["-d", "--rm", "-k", "a.txt.lmz"])
        .assert()
        .success();
    assert_eq!(e.names(), ["a.txt", "a.txt.lmz", "bad.lmz"]);
    e.cmd()
        .args(["-dc", "--rm", "a.txt.lmz"])
        .assert()
        .success()
        .stdout(TEXT);
    e.cmd().args(["-t", "--rm", "a.txt.lmz"]).assert().success();
    assert!(e.path("a.txt.lmz").is_file());
    e.cmd()
        .args(["-d", "-f", "--rm", "a.txt.lmz"])
        .assert()
        .success();
    assert_eq!(e.names(), ["a.txt", "bad.lmz"]);
}

#[test]
#[cfg(unix)]
fn output_keeps_input_permissions_and_mtime() {
    use std::os::unix::fs::PermissionsExt;
    let e = env();
    let input = e.write("p.txt", TEXT);
    std::fs::set_permissions(&input, std::fs::Permissions::from_mode(0o640)).unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(&input)
        .unwrap()
        .set_modified(old)
        .unwrap();
    e.cmd().arg("p.txt").assert().success();
    let m = std::fs::metadata(e.path("p.txt.lmz")).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o640);
    assert_eq!(m.modified().unwrap(), old);
    std::fs::remove_file(&input).unwrap();
    e.cmd().args(["-d", "p.txt.lmz"]).assert().success();
    let m = std::fs::metadata(&input).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o640);
    assert_eq!(m.modified().unwrap(), old);
}

#[test]
fn suffix_rules() {
    let e = env();
    e.write("x.lmz", TEXT);
    e.cmd().arg("x.lmz").assert().code(1).stderr(contains(
        "already has the .lmz suffix (use -f to compress it again)",
    ));
    e.cmd().args(["-f", "x.lmz"]).assert().success();
    assert!(e.path("x.lmz.lmz").is_file());
    e.write("y.txt", TEXT);
    e.cmd()
        .args(["-d", "y.txt"])
        .assert()
        .code(1)
        .stderr(contains("unknown suffix (expected .lmz); use -o OUT or -c"));
}

#[test]
fn unwritable_destination_is_a_clear_error_and_keeps_the_input() {
    let e = env();
    e.write("in.txt", TEXT);
    e.cmd()
        .args(["-o", "no/such/folder/out.lmz", "in.txt"])
        .assert()
        .code(1)
        .stderr(contains("cannot create a file in no/such/folder"));
    e.cmd()
        .args(["--rm", "-o", "/proc/out.lmz", "in.txt"])
        .assert()
        .code(1)
        .stderr(contains("cannot create a file in /proc"));
    assert_eq!(e.names(), ["in.txt"], "input kept, nothing left behind");
    #[cfg(unix)]
    if !is_root() {
        use std::os::unix::fs::PermissionsExt;
        let ro = e.path("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        e.cmd()
            .args(["--rm", "-o", "ro/out.lmz", "in.txt"])
            .assert()
            .code(1)
            .stderr(contains("cannot create a file in ro"));
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(names_in(&ro).is_empty());
        assert!(e.path("in.txt").is_file());
    } else {
        eprintln!("running as root: permission bits do not apply, read-only folder case skipped");
    }
}

#[test]
#[cfg(target_os = "linux")]
fn full_disk_is_a_clear_error() {
    let e = env();
    e.write("in.txt", TEXT);
    let full = std::fs::File::options().write(true).open("/dev/full");
    let Ok(full) = full else {
        eprintln!("no /dev/full: skipped");
        return;
    };
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_lmzip"))
        .current_dir(e.dir.path())
        .arg("--model")
        .arg(&e.model)
        .args(["--rm", "-c", "in.txt"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("No space left on device"));
    assert!(e.path("in.txt").is_file(), "input kept");

    // A small tmpfs in a private mount namespace (no root needed where user namespaces
    // are allowed): the output does not fit, the temporary file must not stay behind.
    // Incompressible bytes (xorshift64*, top byte): the n-gram and match models learn any
    // arithmetic pattern, and then the archive would fit in the small tmpfs.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let big: Vec<u8> = (0..60_000)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect();
    e.write("big.bin", &big);
    let mnt = e.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=32k tmpfs '{m}' || exit 77; \
         '{bin}' --model '{model}' --rm -o '{m}/big.lmz' big.bin; echo \"status $?\"; \
         ls -A '{m}'",
        m = mnt.display(),
        bin = env!("CARGO_BIN_EXE_lmzip"),
        model = e.model.display(),
    );
    let out = std::process::Command::new("unshare")
        .args(["-rm", "sh", "-c", &script])
        .current_dir(e.dir.path())
        .output();
    match out {
        Ok(o) if o.status.code() == Some(0) => {
            let stdout = String::from_utf8_lossy(&o.stdout);
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert_eq!(
                stdout, "status 1\n",
                "exit 1, folder empty; stderr: {stderr}"
            );
            assert!(stderr.contains("No space left on device"), "{stderr}");
            assert!(e.path("big.bin").is_file(), "input kept");
        }
        other => eprintln!("cannot mount a private tmpfs here ({other:?}): tmpfs case skipped"),
    }
}

#[test]
fn refuses_compressed_data_to_a_terminal_without_force() {
    let e = env();
    e.write("in.txt", TEXT);
    // `script` runs the command with a pseudo-terminal as its standard output.
    let run = |force: &str| {
        std::process::Command::new("script")
            .args(["-qec"])
            .arg(format!(
                "'{}' --model '{}' {force} -c in.txt",
                env!("CARGO_BIN_EXE_lmzip"),
                e.model.display()
            ))
            .arg("/dev/null")
            .current_dir(e.dir.path())
            .output()
    };
    match run("") {
        Ok(o) => {
            assert_eq!(o.status.code(), Some(1));
            assert!(String::from_utf8_lossy(&o.stdout)
                .contains("refusing to write compressed data to a terminal"));
            let forced = run("-f").unwrap();
            assert_eq!(forced.status.code(), Some(0));
        }
        Err(err) => eprintln!("no `script` ({err}): terminal case skipped"),
    }
}

#[test]
fn usage_errors_exit_2() {
    let e = env();
    e.write("a", TEXT);
    e.write("b", TEXT);
    let cases: &[&[&str]] = &[
        &["--no-such-flag"],
        &["--streams", "0", "a"],
        &["--block-tokens", "8", "a"],
        &["--backend", "4", "a"],
        &["-q", "-v", "a"],
        &["--threads", "0", "a"],
        &["-o", "out", "a", "b"],
        &["-", "-"],
        &["completions", "tcsh"],
        &["bench"],
        &["info"],
        // Options that belong after the subcommand's name.
        &["-d", "info", "a"],
        &["--streams", "4", "compress", "a"],
    ];
    for args in cases {
        e.cmd()
            .args(*args)
            .assert()
            .code(2)
            .stderr(contains("error:"));
    }
    e.cmd()
        .args(["-d", "test", "a"])
        .assert()
        .code(2)
        .stderr(contains(
            "--decompress must come after the subcommand name (test …)",
        ));
    assert_eq!(e.names(), ["a", "b"], "no usage error writes anything");
}

#[test]
fn runtime_errors_exit_1_with_a_message() {
    let e = env();
    e.write("in.txt", TEXT);
    std::fs::create_dir(e.path("folder")).unwrap();
    e.cmd()
        .arg("folder")
        .assert()
        .code(1)
        .stderr(contains("lmzip: folder: not a regular file; skipped"));
    e.cmd()
        .args(["-d", "-c", "in.txt"])
        .assert()
        .code(1)
        .stderr(contains("not an lmzip archive (magic bytes 54 68 65 20)"));
    // Missing model: says how to get one.
    Command::cargo_bin("lmzip")
        .unwrap()
        .current_dir(e.dir.path())
        .args(["--model", "/nonexistent/model.gguf", "-c", "in.txt"])
        .assert()
        .code(1)
        .stderr(contains("models/fetch.sh"));
    e.write("junk.gguf", b"GGUF but not really");
    Command::cargo_bin("lmzip")
        .unwrap()
        .current_dir(e.dir.path())
        .args(["--model", "junk.gguf", "-c", "in.txt"])
        .assert()
        .code(1)
        .stderr(contains("not a readable GGUF"));
    // Another model than the archive's: named, nothing written.
    let archive = e.compress(TEXT);
    let other = e.path("other.gguf");
    let spec = lmzip::testing::SyntheticSpec {
        seed: 2,
        ..Default::default()
    };
    std::fs::write(&other, lmzip::testing::synthetic_gguf(&spec).unwrap()).unwrap();
    Command::cargo_bin("lmzip")
        .unwrap()
        .args(["--model"])
        .arg(&other)
        .args(["-dc"])
        .write_stdin(archive.clone())
        .assert()
        .code(1)
        .stdout("")
        .stderr(contains("this archive needs a different model"));
    // Damage: truncated. To standard output, blocks are written as each is verified, so a
    // cut archive gives a prefix of the original and status 1 (as gzip does).
    for cut in [archive.len() / 2, archive.len() - 10] {
        let o = e
            .cmd()
            .args(["-dc"])
            .write_stdin(archive[..cut].to_vec())
            .assert()
            .code(1)
            .stderr(contains("archive is truncated"));
        assert!(TEXT.starts_with(&o.get_output().stdout), "prefix only");
    }
    let mut flipped = archive.clone();
    flipped[20] ^= 1;
    e.cmd()
        .args(["-dc"])
        .write_stdin(flipped)
        .assert()
        .code(1)
        .stderr(contains("checksum mismatch in header"));
    // An unknown numeric backend, header CRC valid: named before any model is loaded.
    let mut r = &archive[..];
    let mut h = lmzip::format::Header::read_from(&mut r).unwrap().unwrap();
    h.backend = 99;
    let mut forged = Vec::new();
    h.write_to(&mut forged).unwrap();
    forged.extend_from_slice(r);
    e.cmd()
        .args(["-dc"])
        .write_stdin(forged)
        .assert()
        .code(1)
        .stderr(contains("archive uses numeric backend 99"));
}

#[test]
fn help_version_completions_and_man_page() {
    let mut c = Command::cargo_bin("lmzip").unwrap();
    c.arg("--help").assert().success().stdout(
        contains("Examples:")
            .and(contains("lmzip -d notes.txt.lmz"))
            .and(contains("Exit status: 0 success, 1 error"))
            .and(contains("130 interrupted")),
    );
    let mut c = Command::cargo_bin("lmzip").unwrap();
    c.arg("--version")
        .assert()
        .success()
        .stdout(contains(env!("CARGO_PKG_VERSION")));
    for (shell, marker) in [
        ("bash", "_lmzip()"),
        ("zsh", "#compdef lmzip"),
        ("fish", "complete -c lmzip"),
    ] {
        let mut c = Command::cargo_bin("lmzip").unwrap();
        c.args(["completions", shell])
            .assert()
            .success()
            .stdout(contains(marker).and(contains("block-tokens")));
    }
    let mut c = Command::cargo_bin("lmzip").unwrap();
    c.arg("man")
        .assert()
        .success()
        .stdout(contains(".TH lmzip").and(contains("block\\-tokens")));
}

/// `lmzip bench --report`: one self-contained page with a section per file, a plot line
/// per predictor run (the coded one and the language model alone; every variant with
/// --ablation), written whole; it cannot be combined with --resume. (`--no-regions`:
/// the synthetic model loses to the classical coder, which the page has no symbols of.)
#[test]
fn bench_writes_a_report() {
    let e = env();
    std::fs::create_dir(e.dir.path().join("corp")).unwrap();
    e.write("corp/a.txt", TEXT);
    e.write("corp/b<c>.txt", b"if x < y && y > z then \"w\"\r\n");
    e.cmd()
        .args(["bench", "corp", "--no-regions", "--report", "r.html"])
        .assert()
        .success()
        .stderr(contains("report written to r.html"));
    let page = String::from_utf8(e.read("r.html")).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("<h2>a.txt</h2>") && page.contains("<h2>b&lt;c&gt;.txt</h2>"));
    assert_eq!(page.matches("<polyline").count(), 4, "two runs per file");
    assert!(!page.contains("<script") && !page.contains("http://") && !page.contains("https://"));
    e.cmd()
        .args([
            "bench",
            "corp/a.txt",
            "--no-regions",
            "--ablation",
            "--report",
            "r.html",
        ])
        .assert()
        .success();
    let page = String::from_utf8(e.read("r.html")).unwrap();
    assert!(page.matches("<polyline").count() > 5);
    assert!(e.names().iter().all(|n| !n.ends_with(".tmp")));
    e.cmd()
        .args(["bench", "corp", "--report", "r.html", "--resume", "st"])
        .assert()
        .code(2);
}

#[test]
fn bench_with_json() {
    let e = env();
    e.write("in.txt", TEXT);
    e.cmd()
        .args(["bench", "--json", "in.txt"])
        .assert()
        .success()
        .stdout(contains("\"bytes\":75").or(contains("\"original_bytes\":75")));
}

/// `lmzip bench DIR`: the folder's files (hidden ones skipped) in name order, a total row
/// named after the folder, peers beside lmzip (crates and an external command, every round
/// trip checked), as a table, CSV, Markdown and JSON.
#[test]
fn bench_folder_with_peers_and_totals() {
    let e = env();
    std::fs::create_dir(e.dir.path().join("corp")).unwrap();
    e.write("corp/b.txt", TEXT);
    e.write("corp/a.txt", &TEXT[..40]);
    e.write("corp/.hidden", b"not measured");
    let peers = [
        "--vs",
        "xz,zstd,brotli",
        "--vs-cmd",
        "copy",
        "cat {in} > {out}",
        "cat {in} > {out}",
    ];
    let out = e
        .cmd()
        .args(["bench", "corp", "--csv"])
        .args(peers)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    // Header, 2 files × 5 compressors, 5 totals.
    assert_eq!(lines.len(), 16, "{csv}");
    assert!(lines[1].starts_with("a.txt,40,lmzip,"), "{csv}");
    assert!(lines[10].starts_with("b.txt,75,copy,75,8.000000,"), "{csv}");
    assert!(lines[11].starts_with("total (Corp),115,lmzip,"), "{csv}");
    assert!(lines.iter().skip(1).all(|l| l.ends_with(",true")), "{csv}");
    e.cmd()
        .args(["bench", "corp", "--markdown"])
        .args(peers)
        .assert()
        .success()
        .stdout(
            contains("| **total (Corp)** | 115 |")
                .and(contains("| xz -9e |"))
                .and(contains("| copy | 115 | 8.0000 |"))
                .and(contains("Made by `")),
        );
    e.cmd()
        .args(["bench", "corp", "--vs", "zstd"])
        .assert()
        .success()
        .stdout(contains("total (Corp)").and(contains("zstd -19")));
    e.cmd()
        .args(["bench", "corp", "--json"])
        .assert()
        .success()
        .stdout(contains(
            "\"file\":\"total (Corp)\",\"files\":2,\"bytes\":115",
        ));
    e.cmd()
        .args(["bench", "corp", "--vs", "gzip"])
        .assert()
        .failure()
        .stderr(contains("unknown compressor 'gzip'"));
    e.cmd()
        .args([
            "bench",
            "corp",
            "--vs-cmd",
            "lossy",
            "head -c 3 {in} > {out}",
            "cat {in} > {out}",
        ])
        .assert()
        .failure()
        .stderr(contains("round trip differs"));
}

#[test]
#[cfg(unix)]
fn interrupt_removes_partial_output_and_exits_130() {
    let e = env();
    // Big enough that the synthetic model takes seconds, so the signal lands mid-run.
    let big: Vec<u8> = TEXT.iter().copied().cycle().take(3_000_000).collect();
    e.write("big.txt", &big);
    for signal in ["INT", "TERM"] {
        // Once the temporary output exists, the run is past reading its input.
        let child = e.spawn(&["--rm", "big.txt"]);
        let out = interrupt_when(child, signal, || {
            e.names().iter().any(|n| n.ends_with(".tmp"))
        });
        assert_eq!(out.status.code(), Some(130), "{signal}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("interrupted; partial output removed")
        );
        assert_eq!(e.names(), ["big.txt"], "{signal}: only the input remains");
    }
}

#[test]
fn model_folder_round_trips_and_needs_itself() {
    let e = env();
    let folder = e.path("folder-model");
    lmzip::testing::write_synthetic_checkpoint(
        &Default::default(),
        &folder,
        candle_core::DType::F32,
        2,
    )
    .unwrap();
    let with_folder = || {
        let mut c = Command::cargo_bin("lmzip").unwrap();
        c.current_dir(e.dir.path())
            .env_remove("LMZIP_MODEL")
            .arg("--model")
            .arg(&folder);
        c
    };
    let archive = with_folder()
        .arg("-c")
        .write_stdin(TEXT)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    with_folder()
        .arg("-dc")
        .write_stdin(archive.clone())
        .assert()
        .success()
        .stdout(TEXT);
    // The same weights as a GGUF file are another model: each archive needs its own.
    e.cmd()
        .arg("-dc")
        .write_stdin(archive.clone())
        .assert()
        .code(1)
        .stdout("")
        .stderr(contains("this archive needs a different model"));
    with_folder()
        .arg("-dc")
        .write_stdin(e.compress(TEXT))
        .assert()
        .code(1)
        .stderr(contains("this archive needs a different model").and(contains("folder-model")));
    // The identity covers the weights: a changed shard is a different model.
    let shard = folder.join("model-00002-of-00002.safetensors");
    let mut bytes = std::fs::read(&shard).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&shard, bytes).unwrap();
    with_folder()
        .arg("-dc")
        .write_stdin(archive)
        .assert()
        .code(1)
        .stderr(contains("this archive needs a different model"));
    // A folder without its tokenizer is named as such.
    std::fs::remove_file(folder.join("tokenizer.json")).unwrap();
    with_folder()
        .arg("-c")
        .write_stdin(TEXT)
        .assert()
        .code(1)
        .stderr(contains("has no tokenizer.json"));
}

#[test]
fn device_option() {
    let e = env();
    for ok in ["auto", "cpu"] {
        let a = e
            .cmd()
            .args(["--device", ok, "-c"])
            .write_stdin(TEXT)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        e.cmd()
            .args(["--device", ok, "-dc"])
            .write_stdin(a)
            .assert()
            .success()
            .stdout(TEXT);
    }
    for cuda in ["cuda", "cuda:1"] {
        e.cmd()
            .args(["--device", cuda, "-c"])
            .write_stdin(TEXT)
            .assert()
            .code(1)
            .stdout("")
            .stderr(contains("device cuda:").and(contains("supported: cpu")));
    }
    e.cmd()
        .args(["--device", "gpu", "-c"])
        .write_stdin(TEXT)
        .assert()
        .code(2)
        .stderr(contains("not a device"));
}

#[test]
fn hub_names_without_network() {
    let e = env();
    let home = e.path("hf-home");
    let run = |model: &str| {
        let mut c = Command::cargo_bin("lmzip").unwrap();
        c.current_dir(e.dir.path())
            .env_remove("LMZIP_MODEL")
            .env_remove("HF_HUB_CACHE")
            .env("HF_HOME", &home)
            .env("HF_HUB_OFFLINE", "1")
            // Nothing listens here: a request would fail rather than leave the machine.
            .env("HF_ENDPOINT", "http://127.0.0.1:9")
            .args(["--model", model, "-c"])
            .write_stdin(TEXT);
        c
    };
    run("hf:a/b/c")
        .assert()
        .code(1)
        .stderr(contains("not a valid hub model name"));
    run("hf:org/name@main:model.gguf").assert().code(1).stderr(
        contains("not (completely) in the Hugging Face cache").and(contains("HF_HUB_OFFLINE")),
    );
    assert!(!home.exists(), "nothing written to the cache");
}

/// `tar -I lmzip` works both ways (tar runs the command as a filter: no arguments to
/// compress, `-d` to decompress), and the tar's headers and padding go to the classical
/// coder: the archive is a version-4 one with binary regions.
#[test]
fn tar_uses_lmzip_as_its_compressor() {
    let e = env();
    std::fs::create_dir(e.path("d")).unwrap();
    e.write("d/a.txt", TEXT);
    e.write("d/b.txt", &TEXT.repeat(20));
    let bin = assert_cmd::cargo::cargo_bin("lmzip");
    let filter = format!("{} --model {}", bin.display(), e.model.display());
    let tar = |args: &[&str]| {
        let status = std::process::Command::new("tar")
            .current_dir(e.dir.path())
            .env_remove("LMZIP_MODEL")
            .arg("-I")
            .arg(&filter)
            .args(args)
            .status()
            .expect("tar runs");
        assert!(status.success(), "tar {args:?}");
    };
    tar(&["-cf", "d.tar.lmz", "d"]);
    std::fs::create_dir(e.path("x")).unwrap();
    tar(&["-xf", "d.tar.lmz", "-C", "x"]);
    assert_eq!(e.read("x/d/a.txt"), TEXT);
    assert_eq!(e.read("x/d/b.txt"), TEXT.repeat(20));
    let info = e
        .cmd()
        .args(["info", "d.tar.lmz"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let info = String::from_utf8(info).unwrap();
    assert!(
        info.contains("format version 4") && info.contains("coded classically"),
        "{info}"
    );
}

/// Sends `signal` to `child` once `ready` holds, and waits for its exit status.
#[cfg(unix)]
fn interrupt_when(
    child: std::process::Child,
    signal: &str,
    ready: impl Fn() -> bool,
) -> std::process::Output {
    let mut child = child;
    let t0 = std::time::Instant::now();
    while !ready() {
        assert!(
            t0.elapsed().as_secs() < 120,
            "the awaited file never appeared"
        );
        if let Some(s) = child.try_wait().unwrap() {
            panic!("finished before the signal ({s}); make the input bigger");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let ok = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
    child.wait_with_output().unwrap()
}

/// `--resume`: a compression stopped at a group boundary, or interrupted by a signal,
/// leaves its checkpoint (never an archive) and the same command continues it to the
/// archive an uninterrupted run writes, byte for byte; the checkpoint then goes. A
/// checkpoint of another input is refused; --resume needs an output file.
#[test]
#[cfg(unix)]
fn resume_continues_an_interrupted_compression() {
    let e = env();
    let text: Vec<u8> = TEXT.iter().copied().cycle().take(20_000).collect();
    e.write("in.txt", &text);
    let knobs = ["--block-tokens", "64", "--streams", "2"];
    let whole = e
        .cmd()
        .args(["-c", "in.txt"])
        .args(knobs)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    e.cmd()
        .args(["--resume", "in.txt"])
        .args(knobs)
        .env("LMZIP_TEST_STOP_AFTER_GROUPS", "2")
        .assert()
        .code(1)
        .stderr(contains("progress kept in in.txt.lmz.resume"));
    assert_eq!(e.names(), ["in.txt", "in.txt.lmz.resume"]);
    // The checkpoint is not an archive.
    e.cmd()
        .args(["-t", "in.txt.lmz.resume"])
        .assert()
        .code(1)
        .stderr(contains("not an lmzip archive"));
    e.cmd()
        .args(["--resume", "-v", "in.txt"])
        .args(knobs)
        .assert()
        .success()
        .stderr(contains("resumed after 2 groups"));
    assert_eq!(e.names(), ["in.txt", "in.txt.lmz"]);
    assert!(e.read("in.txt.lmz") == whole, "resumed archive differs");

    // Another input under the same name meets the old checkpoint: refused, kept.
    std::fs::remove_file(e.path("in.txt.lmz")).unwrap();
    e.cmd()
        .args(["--resume", "in.txt"])
        .args(knobs)
        .env("LMZIP_TEST_STOP_AFTER_GROUPS", "1")
        .assert()
        .code(1);
    e.write("in.txt", &text[1..]);
    e.cmd()
        .args(["--resume", "in.txt"])
        .args(knobs)
        .assert()
        .code(1)
        .stderr(contains("belongs to another run").and(contains("delete it to start over")));
    assert_eq!(e.names(), ["in.txt", "in.txt.lmz.resume"]);
    std::fs::remove_file(e.path("in.txt.lmz.resume")).unwrap();

    // A real interruption: Ctrl-C once the first checkpoint exists. Through the model
    // (no regions), in groups of 16 blocks of 256 symbols: about 18 groups, seconds.
    let big: Vec<u8> = TEXT.iter().copied().cycle().take(100_000).collect();
    e.write("big.txt", &big);
    let knobs = ["--no-regions", "--block-tokens", "256"];
    let whole = e
        .cmd()
        .args(["-c", "big.txt"])
        .args(knobs)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let mut args = vec!["--resume", "big.txt"];
    args.extend(knobs);
    let child = e.spawn(&args);
    let out = interrupt_when(child, "INT", || e.path("big.txt.lmz.resume").exists());
    assert_eq!(out.status.code(), Some(130));
    assert!(String::from_utf8_lossy(&out.stderr).contains("progress kept in big.txt.lmz.resume"));
    assert!(!e.path("big.txt.lmz").exists());
    e.cmd()
        .args(["--resume", "-v", "big.txt"])
        .args(knobs)
        .assert()
        .success()
        .stderr(contains("resumed after"));
    assert!(e.read("big.txt.lmz") == whole, "resumed archive differs");
    assert!(!e.path("big.txt.lmz.resume").exists());

    for bad in [
        &["--resume", "-c", "in.txt"][..],
        &["-d", "--resume", "x.lmz"],
    ] {
        e.cmd()
            .args(bad)
            .assert()
            .code(2)
            .stderr(contains("--resume"));
    }
}

/// `lmzip bench --resume DIR`: interrupted while compressing a file, then while decoding
/// it (after a decoder checkpoint), the same command finishes with the figures an
/// uninterrupted run prints (sizes and bits per byte); finished files are not measured
/// again.
#[test]
#[cfg(unix)]
fn bench_resume_survives_interruptions() {
    let e = env();
    std::fs::create_dir(e.path("corp")).unwrap();
    e.write("corp/a.txt", TEXT);
    let big: Vec<u8> = TEXT.iter().copied().cycle().take(100_000).collect();
    e.write("corp/b.txt", &big);
    let knobs = ["--no-regions", "--block-tokens", "256"];
    let sizes = |json: &[u8]| -> Vec<(String, u64)> {
        String::from_utf8_lossy(json)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["file"].as_str().unwrap().to_string(),
                    v["compressed_bytes"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let whole = e
        .cmd()
        .args(["bench", "--json", "corp"])
        .args(knobs)
        .output()
        .unwrap();
    assert!(whole.status.success());
    let mut args = vec!["bench", "--json", "--resume", "state", "corp"];
    args.extend(knobs);
    let spawn = || e.spawn(&args);
    let found = |name: &str| {
        std::fs::read_dir(e.path("state"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|d| d.path().join(name).exists())
    };
    let out = interrupt_when(spawn(), "INT", || found("compress.ckpt"));
    assert_eq!(out.status.code(), Some(130));
    let out = interrupt_when(spawn(), "TERM", || found("decode.ckpt"));
    assert_eq!(out.status.code(), Some(130));
    let out = spawn().wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a.txt (1 of 2): measured by an earlier run")
    );
    assert_eq!(sizes(&out.stdout), sizes(&whole.stdout));
    // Done: only the kept rows remain, and a rerun prints them again without measuring.
    assert_eq!(names_in(&e.path("state")), ["rows.jsonl"]);
    let again = e
        .cmd()
        .args(["bench", "--json", "--resume", "state", "corp"])
        .args(knobs)
        .output()
        .unwrap();
    assert_eq!(sizes(&again.stdout), sizes(&whole.stdout));
}

/// GNU parallel's path, or `None` outside CI when it is missing (the test says so and
/// skips); under CI (`CI` set) a missing parallel is a failure: tests/run.sh installs it.
fn gnu_parallel() -> Option<&'static str> {
    let ok = std::process::Command::new("parallel")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"GNU parallel"));
    if ok {
        return Some("parallel");
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set and GNU parallel is missing (tests/run.sh installs it)"
    );
    eprintln!("skipping: GNU parallel is not installed (apt-get install parallel)");
    None
}

#[test]
fn members_and_shares_join_with_cat() {
    let e = env();
    let text: Vec<u8> = TEXT.iter().copied().cycle().take(9_000).collect();
    e.write("in.txt", &text);
    let run = |args: &[&str]| {
        e.cmd()
            .args(args)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone()
    };
    let whole = run(&["-c", "--member-size", "2K", "in.txt"]);
    e.write("whole.lmz", &whole);
    // Five members (2,048 bytes and up to the next line end each), each an archive.
    let info = String::from_utf8(run(&["info", "whole.lmz"])).unwrap();
    assert_eq!(info.matches("format version").count(), 5, "{info}");
    assert_eq!(run(&["-dc", "whole.lmz"]), text);

    // Shares made apart join into the same bytes, however many shares and even empty ones.
    for k in [1usize, 2, 3, 7] {
        let mut joined = Vec::new();
        for i in 1..=k {
            let share = format!("{i}/{k}");
            joined.extend(run(&[
                "-c",
                "--member-size",
                "2K",
                "--share",
                &share,
                "in.txt",
            ]));
        }
        assert!(joined == whole, "{k} shares differ from one run");
        // Decoding share by share gives the input piece by piece.
        let mut out = Vec::new();
        for i in 1..=k {
            out.extend(run(&["-dc", "--share", &format!("{i}/{k}"), "whole.lmz"]));
        }
        assert!(out == text, "{k} decoded shares differ from the input");
    }
    // -t checks one share alone.
    e.cmd()
        .args(["-t", "--share", "2/2", "whole.lmz"])
        .assert()
        .success();

    // GNU parallel, as across machines: local jobs here, --sshlogin there (README).
    let Some(parallel) = gnu_parallel() else {
        return;
    };
    let bin = assert_cmd::cargo::cargo_bin("lmzip");
    let lmzip = format!("{} --model {}", bin.display(), e.model.display());
    let sh = |script: String| {
        let status = std::process::Command::new("sh")
            .current_dir(e.dir.path())
            .env_remove("LMZIP_MODEL")
            .arg("-c")
            .arg(&script)
            .status()
            .unwrap();
        assert!(status.success(), "{script}");
    };
    sh(format!(
        "{parallel} -j 3 '{lmzip} -c --member-size 2K --share {{}}/3 in.txt > part.{{}}' ::: 1 2 3 \
         && cat part.1 part.2 part.3 > joined.lmz"
    ));
    assert!(e.read("joined.lmz") == whole, "parallel shares differ");
    sh(format!(
        "{parallel} -j 3 '{lmzip} -dc --share {{}}/3 joined.lmz > out.{{}}' ::: 1 2 3 \
         && cat out.1 out.2 out.3 > joined.txt"
    ));
    assert!(e.read("joined.txt") == text, "parallel decoding differs");
}

#[test]
fn member_and_share_usage_errors() {
    let e = env();
    e.write("in.txt", TEXT);
    for args in [
        &["--share", "1/2", "-c", "in.txt"][..],
        &["--member-size", "1K", "--share", "1/2", "in.txt"],
        &["--member-size", "1K", "--share", "0/2", "-c", "in.txt"],
        &["--member-size", "1K", "--share", "3/2", "-c", "in.txt"],
        &["--member-size", "0", "-c", "in.txt"],
        &["--member-size", "12Q", "-c", "in.txt"],
        &["-d", "--member-size", "1K", "-c", "in.txt"],
        &["--member-size", "1K", "--resume", "in.txt"],
    ] {
        e.cmd().args(args).assert().code(2);
    }
}
