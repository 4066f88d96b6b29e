//! `--model hf:ORG/NAME…` against a hub-shaped HTTP server on 127.0.0.1 that the test starts
//! and stops (through HF_ENDPOINT), with a tiny generated model; then the cache alone.

use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::contains;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const TEXT: &[u8] = b"The quick brown fox jumps over the lazy dog.\nAnd then it slept.\n";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A minimal hub: `GET /api/models/ORG/NAME/revision/REV` lists the files of `root/ORG/NAME`;
/// `GET /ORG/NAME/resolve/REV/FILE` serves one with the headers hf-hub reads (etag,
/// x-repo-commit, Content-Range for ranges). REV must be `main` or [`COMMIT`].
struct Hub {
    url: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Hub {
    fn start(root: PathBuf) -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s, l) = (stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let _ = serve(&root, stream, &l);
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        Hub {
            url,
            stop,
            thread: Some(thread),
            log,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    lmzip::model::identity::hex(&sha2::Sha256::digest(b))
}

fn serve(root: &Path, mut stream: TcpStream, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    log.lock().unwrap().push(path.clone());
    let rev_ok = |r: &str| r == "main" || r == COMMIT;
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (status, headers, body): (&str, Vec<(String, String)>, Vec<u8>) = match parts.as_slice() {
        ["api", "models", org, name, "revision", rev] if rev_ok(rev) => {
            match std::fs::read_dir(root.join(org).join(name)) {
                Ok(dir) => {
                    let mut files: Vec<String> = dir
                        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .collect();
                    files.sort();
                    let siblings: Vec<serde_json::Value> = files
                        .iter()
                        .map(|f| serde_json::json!({ "rfilename": f }))
                        .collect();
                    let body = serde_json::json!({
                        "id": format!("{org}/{name}"), "sha": COMMIT, "siblings": siblings
                    });
                    (
                        "200 OK",
                        vec![("Content-Type".into(), "application/json".into())],
                        serde_json::to_vec(&body).unwrap(),
                    )
                }
                Err(_) => ("404 Not Found", vec![], b"no such repository".to_vec()),
            }
        }
        [org, name, "resolve", rev, file @ ..] if rev_ok(rev) => {
            match std::fs::read(root.join(org).join(name).join(file.join("/"))) {
                Ok(data) => {
                    let total = data.len();
                    let mut headers = vec![
                        ("ETag".into(), format!("\"{}\"", sha256_hex(&data))),
                        ("X-Repo-Commit".into(), COMMIT.into()),
                    ];
                    let span = range.as_deref().and_then(|r| {
                        let (a, b) = r.strip_prefix("bytes=")?.split_once('-')?;
                        let a: usize = a.parse().ok()?;
                        let b: usize = if b.is_empty() {
                            total.checked_sub(1)?
                        } else {
                            b.parse::<usize>().ok()?.min(total.checked_sub(1)?)
                        };
                        (a <= b).then_some((a, b))
                    });
                    match span {
                        Some((a, b)) => {
                            headers
                                .push(("Content-Range".into(), format!("bytes {a}-{b}/{total}")));
                            ("206 Partial Content", headers, data[a..=b].to_vec())
                        }
                        None => ("200 OK", headers, data),
                    }
                }
                Err(_) => ("404 Not Found", vec![], b"no such file".to_vec()),
            }
        }
        _ => ("404 Not Found", vec![], b"not found".to_vec()),
    };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)?;
    stream.flush()?;
    // Drain anything unread so the client sees an orderly close.
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(10)));
    let _ = reader.read(&mut [0u8; 64]);
    Ok(())
}

/// `lmzip --model MODEL ARGS…` with the hub environment and nothing inherited that could
/// reach another hub or cache.
fn lmzip(home: &Path, endpoint: &str, model: &str) -> Command {
    let mut c = Command::cargo_bin("lmzip").unwrap();
    c.env_remove("LMZIP_MODEL")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN")
        .env("HF_HOME", home)
        .env("HF_ENDPOINT", endpoint)
        .arg("--model")
        .arg(model);
    c
}

#[test]
fn hub_models_through_a_local_server_then_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("hub/test-org/tiny");
    lmzip::testing::write_synthetic_checkpoint(
        &Default::default(),
        &repo,
        candle_core::DType::F32,
        2,
    )
    .unwrap();
    let gguf = repo.join("tiny.Q4_1.gguf");
    lmzip::testing::write_synthetic_model(&gguf).unwrap();
    // What the folder and the GGUF make locally, without any hub.
    let local_folder = dir.path().join("local");
    lmzip::testing::write_synthetic_checkpoint(
        &Default::default(),
        &local_folder,
        candle_core::DType::F32,
        2,
    )
    .unwrap();
    let folder_archive = lmzip(
        dir.path(),
        "http://127.0.0.1:9",
        local_folder.to_str().unwrap(),
    )
    .arg("-c")
    .write_stdin(TEXT)
    .assert()
    .success()
    .get_output()
    .stdout
    .clone();

    let home = dir.path().join("hf-home");
    let mut hub = Hub::start(dir.path().join("hub"));
    let t0 = std::time::Instant::now();
    // The folder model: listed, fetched, and the same identity as the local copy.
    lmzip(&home, &hub.url, "hf:test-org/tiny")
        .arg("-dc")
        .write_stdin(folder_archive.clone())
        .assert()
        .success()
        .stdout(TEXT);
    let reqs = hub.requests();
    eprintln!("folder model fetched in {:?}: {reqs:?}", t0.elapsed());
    assert!(reqs.contains(&"/api/models/test-org/tiny/revision/main".to_string()));
    for f in [
        "config.json",
        "tokenizer.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        assert!(
            reqs.iter()
                .any(|r| r.ends_with(&format!("/resolve/{COMMIT}/{f}"))),
            "{f} fetched at the pinned commit"
        );
    }
    assert!(
        !reqs.iter().any(|r| r.ends_with(".gguf")),
        "only the files the folder model needs"
    );
    let snapshot = home
        .join("hub/models--test-org--tiny/snapshots")
        .join(COMMIT);
    assert!(snapshot.join("config.json").is_file());
    assert_eq!(
        std::fs::read_to_string(home.join("hub/models--test-org--tiny/refs/main")).unwrap(),
        COMMIT
    );

    // One GGUF file of the repository, by name and by pinned revision.
    let n = hub.requests().len();
    let gguf_archive = lmzip(&home, &hub.url, "hf:test-org/tiny:tiny.Q4_1.gguf")
        .arg("-c")
        .write_stdin(TEXT)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(hub.requests()[n..]
        .iter()
        .any(|r| r.ends_with("/resolve/main/tiny.Q4_1.gguf")));
    lmzip(dir.path(), "http://127.0.0.1:9", gguf.to_str().unwrap())
        .arg("-dc")
        .write_stdin(gguf_archive.clone())
        .assert()
        .success()
        .stdout(TEXT);
    lmzip(&home, &hub.url, &format!("hf:test-org/tiny@{COMMIT}"))
        .arg("-dc")
        .write_stdin(folder_archive.clone())
        .assert()
        .success()
        .stdout(TEXT);

    // Errors from the hub are named.
    lmzip(&home, &hub.url, "hf:test-org/missing")
        .arg("-c")
        .write_stdin(TEXT)
        .assert()
        .code(1)
        .stderr(contains("hf:test-org/missing").and(contains("listing the repository")));
    lmzip(&home, &hub.url, "hf:test-org/tiny:absent.gguf")
        .arg("-c")
        .write_stdin(TEXT)
        .assert()
        .code(1)
        .stderr(contains("fetching absent.gguf"));

    // Server gone: the cache alone serves both, with or without HF_HUB_OFFLINE.
    hub.stop();
    let n = hub.requests().len();
    for offline in [false, true] {
        let mut c = lmzip(&home, &hub.url, "hf:test-org/tiny");
        if offline {
            c.env("HF_HUB_OFFLINE", "1");
        }
        c.arg("-dc")
            .write_stdin(folder_archive.clone())
            .assert()
            .success()
            .stdout(TEXT);
        let mut c = lmzip(&home, &hub.url, "hf:test-org/tiny:tiny.Q4_1.gguf");
        if offline {
            c.env("HF_HUB_OFFLINE", "1");
        }
        c.arg("-dc")
            .write_stdin(gguf_archive.clone())
            .assert()
            .success()
            .stdout(TEXT);
    }
    assert_eq!(hub.requests().len(), n, "no request once cached");
    // Offline and not cached: said so, nothing fetched.
    lmzip(&home, &hub.url, "hf:test-org/other")
        .env("HF_HUB_OFFLINE", "1")
        .arg("-c")
        .write_stdin(TEXT)
        .assert()
        .code(1)
        .stderr(contains("HF_HUB_OFFLINE"));
}
