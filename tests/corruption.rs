//! Corruption sweep with the synthetic model (fast): every single-bit flip of a small
//! archive of frames and of a one-block archive (with the CRLF transform), and a seeded
//! sample of bit flips, truncations, insertions and deletions in a
//! larger one. Each damaged archive must be refused with an error, or — only where the
//! damage cannot change what is decoded, e.g. range-coder flush bits nobody reads — decode
//! to exactly the original. Never different output, never a panic, never an allocation
//! beyond the format's limits, never a long stall.

use lmzip::model::Model;
use lmzip::pipeline::{self, CompressOptions};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Records the largest single allocation, to show sizes are refused before allocating.
struct Watch;

static LARGEST: AtomicUsize = AtomicUsize::new(0);
/// Bytes allocated and not yet freed, and the most of them at any time since the last reset.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    LARGEST.fetch_max(n, Ordering::Relaxed);
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

/// Resets the peak to what is live now and returns the old peak.
fn reset_peak() -> usize {
    PEAK.swap(LIVE.load(Ordering::Relaxed), Ordering::Relaxed)
}

unsafe impl GlobalAlloc for Watch {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grew(l.size());
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        grew(l.size());
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        grew(new);
        System.realloc(p, l, new)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        System.dealloc(p, l)
    }
}

#[global_allocator]
static GLOBAL: Watch = Watch;

/// The counters are process-wide: tests in this file take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The largest buffer a valid synthetic-model archive of these sizes needs is well under
/// 1 MiB; the format's own ceiling for one buffer is a 16 MiB block. Anything above this
/// means a size was trusted before it was checked. Peak memory also holds the default
/// predictor's tables (n-gram orders 1–4 at 2^18 buckets, the match table, mixer and APM:
/// about 45 MB, fixed by the header's predictor settings, not by declared sizes).
const ALLOCATION_CAP: usize = 32 << 20;
const PEAK_CAP: usize = 64 << 20;
/// One damaged small archive decodes in well under a millisecond; this is a stall.
const TIME_CAP: Duration = Duration::from_secs(5);

struct Tally {
    cases: usize,
    errors: BTreeMap<String, usize>,
    identical: usize,
    slowest: Duration,
}

impl Tally {
    fn new() -> Self {
        Tally {
            cases: 0,
            errors: BTreeMap::new(),
            identical: 0,
            slowest: Duration::ZERO,
        }
    }

    /// Decodes one damaged archive and checks the outcome.
    fn check(&mut self, m: &Model, archive: &[u8], original: &[u8], what: &str) {
        let t = Instant::now();
        let mut out = Vec::new();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pipeline::decompress(m, &mut &archive[..], &mut out, &mut |_| {})
        }));
        let took = t.elapsed();
        self.cases += 1;
        self.slowest = self.slowest.max(took);
        assert!(took < TIME_CAP, "{what}: took {took:?}");
        match r {
            Err(_) => panic!("{what}: panicked"),
            Ok(Ok(_)) => {
                assert!(out == original, "{what}: decoded to different bytes");
                self.identical += 1;
            }
            Ok(Err(e)) => {
                let k = format!("{:?}", e.kind());
                let name = k.split([' ', '(', '{']).next().unwrap_or("?").to_string();
                if name == "Internal" && !self.errors.contains_key("Internal") {
                    eprintln!("{what}: {e}");
                }
                *self.errors.entry(name).or_default() += 1;
            }
        }
    }
}

struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

fn text(n: usize, seed: u64) -> Vec<u8> {
    let words = [
        "the",
        "of",
        "and",
        "a",
        "to",
        "in",
        "is",
        "was",
        "that",
        "it",
        "for",
        "on",
        "with",
        "as",
        "at",
        "by",
        "sun",
        "river",
        "dog",
        "1024",
        "café",
        "\u{1F680}",
    ];
    let mut r = Lcg(seed);
    let mut v = Vec::new();
    while v.len() < n {
        v.extend_from_slice(words[r.below(words.len())].as_bytes());
        v.push(if r.below(12) == 0 { b'\n' } else { b' ' });
        if r.below(50) == 0 {
            v.push(0xFF); // an escape
        }
    }
    v.truncate(n);
    v
}

fn compress(m: &Model, data: &[u8], block_tokens: u32, streams: u16) -> Vec<u8> {
    compress_with(
        m,
        data,
        CompressOptions {
            block_tokens,
            streams,
            regions: false,
            ..CompressOptions::default()
        },
    )
}

fn compress_with(m: &Model, data: &[u8], opts: CompressOptions) -> Vec<u8> {
    let mut a = Vec::new();
    pipeline::compress(m, data, &opts, &mut a, &mut |_| {}).unwrap();
    a
}

#[test]
fn corruption_sweep() {
    // One worker thread: the synthetic model's steps are microseconds long, so waking
    // rayon workers for each would cost more than the work, on a machine with 2 cores.
    let _turn = serial();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(sweep);
}

fn sweep() {
    let m = lmzip::testing::synthetic_model().unwrap();
    // Panics are caught and reported as failures by `check`; keep their noise out.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let t0 = Instant::now();
    LARGEST.store(0, Ordering::Relaxed);
    let base = LIVE.load(Ordering::Relaxed);
    reset_peak();

    // Every bit of a small archive: two groups of two blocks.
    let small_text = b"The sun rose over the river and the dog ran \xff home.\n";
    let small = compress(&m, small_text, 6, 2);
    let mut all = Tally::new();
    for i in 0..small.len() * 8 {
        let mut a = small.clone();
        a[i / 8] ^= 1 << (i % 8);
        all.check(&m, &a, small_text, &format!("small: bit {i}"));
    }

    // Every bit of a one-block archive (no frames: the header holds the block, whose only
    // check is the content checksum) whose CRLF line ends were coded as LF.
    let one_text = b"The sun rose\r\nover the river \r and the dog ran \xff home.\r\n";
    let one = compress(&m, one_text, 4096, 16);
    let h = lmzip::format::Header::read_from(&mut &one[..])
        .unwrap()
        .unwrap();
    assert!(h.single.is_some() && h.transform == lmzip::Transform::CrlfToLf);
    let mut single = Tally::new();
    for i in 0..one.len() * 8 {
        let mut a = one.clone();
        a[i / 8] ^= 1 << (i % 8);
        single.check(&m, &a, one_text, &format!("one block: bit {i}"));
    }
    // Every bit of a version-4 archive: binary, text, binary regions; its classical
    // stream is covered by the section's CRC-16 (lengths) and CRC-32 (content).
    let mut mixed_text = vec![0u8; 80];
    mixed_text.extend_from_slice(b"The sun rose over the river and the dog ran home.\n");
    mixed_text.extend((0..90u8).map(|i| i % 5));
    let regions = lmzip::regions::Regions {
        lens: vec![0, 80, 50, 90],
    };
    let mut mixed = Vec::new();
    lmzip::pipeline::compress_regions(
        &m,
        &mixed_text,
        &regions,
        &CompressOptions::default(),
        &mut mixed,
    )
    .unwrap();
    assert_eq!(mixed[4], 4);
    let mut v4 = Tally::new();
    for i in 0..mixed.len() * 8 {
        let mut a = mixed.clone();
        a[i / 8] ^= 1 << (i % 8);
        v4.check(&m, &a, &mixed_text, &format!("regions: bit {i}"));
    }
    for cut in 0..mixed.len() {
        v4.check(
            &m,
            &mixed[..cut],
            &mixed_text,
            &format!("regions: cut at {cut}"),
        );
    }
    let small_largest = LARGEST.swap(0, Ordering::Relaxed);
    let small_peak = reset_peak() - base;

    // A seeded sample in a larger archive: several groups of several blocks.
    let big_text = text(2500, 7);
    let big = compress(&m, &big_text, 64, 4);
    let mut sample = Tally::new();
    let mut r = Lcg(0x5eed);
    for n in 0..200 {
        let i = r.below(big.len() * 8);
        let mut a = big.clone();
        a[i / 8] ^= 1 << (i % 8);
        sample.check(&m, &a, &big_text, &format!("big: flip {n} at bit {i}"));
    }
    for n in 0..60 {
        let cut = r.below(big.len());
        sample.check(
            &m,
            &big[..cut],
            &big_text,
            &format!("big: cut {n} at {cut}"),
        );
    }
    for n in 0..80 {
        let at = r.below(big.len() + 1);
        let mut a = big.clone();
        a.insert(at, r.below(256) as u8);
        sample.check(&m, &a, &big_text, &format!("big: insert {n} at {at}"));
    }
    for n in 0..40 {
        let at = r.below(big.len());
        let mut a = big.clone();
        a.remove(at);
        sample.check(&m, &a, &big_text, &format!("big: delete {n} at {at}"));
    }
    // The SHA-256 content checksum: a sample of flips and cuts.
    let sha = compress_with(
        &m,
        &big_text,
        CompressOptions {
            block_tokens: 64,
            streams: 4,
            checksum: lmzip::ChecksumKind::Sha256,
            regions: false,
            ..CompressOptions::default()
        },
    );
    for n in 0..100 {
        let i = r.below(sha.len() * 8);
        let mut a = sha.clone();
        a[i / 8] ^= 1 << (i % 8);
        sample.check(&m, &a, &big_text, &format!("sha256: flip {n} at bit {i}"));
    }
    for n in 0..20 {
        let cut = r.below(sha.len());
        sample.check(
            &m,
            &sha[..cut],
            &big_text,
            &format!("sha256: cut {n} at {cut}"),
        );
    }
    let big_largest = LARGEST.load(Ordering::Relaxed);
    let big_peak = reset_peak() - base;
    std::panic::set_hook(hook);

    eprintln!(
        "small archive ({} bytes): {} single-bit flips: {} identical output, errors {:?}; \
         slowest {:?}; largest allocation {} bytes, peak {} bytes",
        small.len(),
        all.cases,
        all.identical,
        all.errors,
        all.slowest,
        small_largest,
        small_peak
    );
    eprintln!(
        "one-block archive ({} bytes): {} single-bit flips: {} identical output, errors {:?}; \
         slowest {:?}",
        one.len(),
        single.cases,
        single.identical,
        single.errors,
        single.slowest,
    );
    eprintln!(
        "large archive ({} bytes, {} original): {} sampled cases: {} identical output, \
         errors {:?}; slowest {:?}; largest allocation {} bytes, peak {} bytes; total {:?}",
        big.len(),
        big_text.len(),
        sample.cases,
        sample.identical,
        sample.errors,
        sample.slowest,
        big_largest,
        big_peak,
        t0.elapsed()
    );
    eprintln!(
        "version-4 archive ({} bytes): {} single-bit flips and every cut: {} identical \
         output, errors {:?}; slowest {:?}",
        mixed.len(),
        v4.cases,
        v4.identical,
        v4.errors,
        v4.slowest,
    );
    assert_eq!(v4.cases, mixed.len() * 9);
    assert!(v4.identical * 20 < v4.cases);
    assert_eq!(all.cases, small.len() * 8);
    // The header, tables and end frame are all covered by CRCs; only payload bits can be
    // harmless, and only a few of them (the coder's flush).
    assert_eq!(single.cases, one.len() * 8);
    for t in [&all, &single] {
        assert!(
            t.identical * 20 < t.cases,
            "too many harmless flips: {} of {}",
            t.identical,
            t.cases
        );
    }
    assert!(small_largest <= ALLOCATION_CAP && big_largest <= ALLOCATION_CAP);
    assert!(small_peak <= PEAK_CAP && big_peak <= PEAK_CAP);
}

/// Writes seed inputs for the fuzz targets into fuzz/corpus/<target>/ (git-ignored). Run
/// before fuzzing: `LMZIP_FUZZ_SEEDS=1 cargo test --release --test corruption -- --ignored`.
#[test]
#[ignore = "writes fuzz seeds; run with LMZIP_FUZZ_SEEDS=1"]
fn write_fuzz_seeds() {
    if std::env::var_os("LMZIP_FUZZ_SEEDS").is_none_or(|v| v != "1") {
        return;
    }
    let m = lmzip::testing::synthetic_model().unwrap();
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let d = base.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), bytes).unwrap();
    };
    let texts: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("short", b"the cat sat".to_vec()),
        ("words", text(400, 3)),
        ("bytes", (0..=255u8).collect()),
    ];
    let mut cat = Vec::new();
    for (i, (name, t)) in texts.iter().enumerate() {
        let a = compress(&m, t, 8 + 8 * i as u32, 1 + i as u16);
        write("parse", &format!("{name}.lmz"), &a);
        cat.extend_from_slice(&a);
        let mut rt = vec![(i * 37) as u8];
        rt.extend_from_slice(t);
        write("round_trip", name, &rt);
    }
    // Text between NULs: a version-4 archive with regions.
    let mut mixed = vec![0u8; 300];
    mixed.extend(text(1500, 5));
    mixed.extend(vec![0u8; 300]);
    let regions = lmzip::regions::Regions {
        lens: vec![0, 300, 1500, 300],
    };
    let mut a = Vec::new();
    pipeline::compress_regions(&m, &mixed, &regions, &CompressOptions::default(), &mut a).unwrap();
    write("parse", "regions.lmz", &a);
    cat.extend_from_slice(&a);
    // A CRLF text and an LF text between long tables: the per-region CRLF transform's
    // flags and a classical stream in two parts.
    let table = |k: u32| (0..70_000u32).map(move |i| [0, 1, (i % k) as u8, 0][(i % 4) as usize]);
    let mut parts = b"the cat sat\r\n".repeat(100);
    parts.extend(table(13));
    parts.extend(b"the dog ran\n".repeat(100));
    parts.extend(table(5));
    let regions = lmzip::regions::Regions {
        lens: vec![1300, 70_000, 1200, 70_000],
    };
    let mut a = Vec::new();
    pipeline::compress_regions(&m, &parts, &regions, &CompressOptions::default(), &mut a).unwrap();
    assert_eq!(a[5] >> 4 & 3, 2, "transform 2");
    write("parse", "parts.lmz", &a);
    cat.extend_from_slice(&a);
    write("parse", "concatenated.lmz", &cat);
    // Every golden archive (real-model headers: each settings version and preset, the
    // continuous cache, the escape probe) is a parse seed too.
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for entry in std::fs::read_dir(golden).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "lmz") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            write(
                "parse",
                &format!("golden-{name}"),
                &std::fs::read(&path).unwrap(),
            );
        }
    }
    // The corruption target prepends the header itself: its seed is the valid tail.
    let opts = lmzip::testing::fuzz_options();
    let mut a = Vec::new();
    pipeline::compress(
        &m,
        lmzip::testing::FUZZ_ORIGINAL,
        &opts,
        &mut a,
        &mut |_| {},
    )
    .unwrap();
    let h = lmzip::format::Header::read_from(&mut &a[..])
        .unwrap()
        .unwrap();
    write("decompress_corrupt", "valid-tail", &a[h.encoded_len()..]);
    let mut twice = a[h.encoded_len()..].to_vec();
    twice.extend_from_slice(&a);
    write("decompress_corrupt", "valid-tail-then-archive", &twice);
}

/// A header that is valid by every documented rule: the most streams and the longest
/// blocks the format allows, for the given model.
fn forged_header(m: &Model, streams: u16, block_tokens: u32) -> Vec<u8> {
    use lmzip::format::{HashPrefix, MODEL_ID_LEN, TOKENIZER_ID_LEN};
    let h = lmzip::format::Header {
        version: lmzip::format::VERSION,
        model: HashPrefix::of(&m.sha256, MODEL_ID_LEN),
        tokenizer: HashPrefix::of(&m.tokenizer.identity(), TOKENIZER_ID_LEN),
        backend: m.net.backend(),
        num_symbols: m.tokenizer.num_symbols() as u32,
        block_tokens,
        streams,
        window_policy: 0,
        start_token: m.start_token,
        window: lmzip::format::MAX_WINDOW,
        keep: 512,
        predictor: lmzip::predict::PredictorSettings::default().to_bytes(),
        transform: lmzip::Transform::None,
        checksum: lmzip::ChecksumKind::Xxh64,
        single: None,
    };
    let mut v = Vec::new();
    h.write_to(&mut v).unwrap();
    v
}

/// Peak bytes allocated while decoding `archive` (expected to fail).
fn peak_while_decoding(m: &Model, archive: &[u8]) -> (usize, String) {
    let base = LIVE.load(Ordering::Relaxed);
    reset_peak();
    let r = pipeline::decompress(m, &mut &archive[..], &mut std::io::sink(), &mut |_| {});
    let peak = reset_peak() - base;
    (peak, format!("{:?}", r.err().map(|e| format!("{e}"))))
}

/// Regression (found by this sweep, fixed in src/pipeline/decode.rs): the decoder used to
/// allocate one model cache per *declared* stream, each for the *declared* window, before
/// reading a single frame; caches are now sized per group from what the frame holds, and
/// the header's worst case is checked against the decoder's memory limit. A 101-byte header with streams = 1024 and block_tokens = 65536 (both
/// within the documented limits) makes it reserve 1024 × 2 × layers · kv_heads · 65536 ·
/// head_dim · 4 bytes — 34 GB with this tiny model, about 3.2 TB with SmolLM2 — and fail
/// only afterwards on the missing frame. Linux overcommit usually hides it (the pages are
/// never touched); under `ulimit -v` or `vm.overcommit_memory = 2` the process aborts.
#[test]
fn header_sizes_do_not_reserve_caches_before_any_frame() {
    let _turn = serial();
    let m = lmzip::testing::synthetic_model().unwrap();
    let archive = forged_header(&m, lmzip::format::MAX_STREAMS, 65536);
    let (peak, err) = peak_while_decoding(&m, &archive);
    eprintln!(
        "{} header bytes: peak {peak} bytes allocated, then {err}",
        archive.len()
    );
    assert!(
        peak < 1 << 30,
        "peak {peak} bytes for a {}-byte input",
        archive.len()
    );
}

/// Regression (found by this sweep, fixed in src/pipeline/decode.rs): the decoder used to
/// reserve `original_len` bytes of output per block (`Vec::with_capacity`) before decoding;
/// reservations are now capped and buffers grow with what decodes. Entries
/// may declare original_len = 2^24 with symbol_count = 1 and coded_len = 0, so a 16 KB group
/// frame makes it reserve 1024 × 16 MiB = 16 GiB. The reserve could be bounded by what the
/// block can produce (symbol_count × the longest symbol).
#[test]
fn declared_lengths_do_not_reserve_output_before_decoding() {
    let _turn = serial();
    let m = lmzip::testing::synthetic_model().unwrap();
    let n = lmzip::format::MAX_STREAMS;
    let mut archive = forged_header(&m, n, 16);
    let entry = lmzip::format::BlockEntry {
        original_len: lmzip::format::MAX_BLOCK_BYTES,
        symbol_count: 1,
        coded_len: 0,
        crc32: Some(0),
    };
    let entries = vec![entry; n as usize];
    archive.extend_from_slice(&lmzip::format::group_table_unchecked(&entries, n as u32));
    let (peak, err) = peak_while_decoding(&m, &archive);
    eprintln!(
        "{} bytes of input: peak {peak} bytes allocated, then {err}",
        archive.len()
    );
    assert!(
        peak < 1 << 30,
        "peak {peak} bytes for a {}-byte input",
        archive.len()
    );
}
