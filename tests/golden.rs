//! Golden archives: files made once with the real default model that this build must still
//! decode (tests/golden/), and damaged or foreign archives it must refuse with a named error
//! kind (tests/golden-errors/).
//!
//! When the format changes, regenerate every file with one command (see
//! tests/golden/README.md):
//!
//!     LMZIP_REGEN_GOLDEN=1 cargo test --release --test golden -- --ignored regenerate
//!
//! The damaged archives are derived from a fresh real-model archive through the `format`
//! API (parse, change one field, write back with valid checksums), so each one reaches the
//! check it is named after instead of failing earlier on a checksum.

use lmzip::format::{self, BlockEntry, Frame, Header, Trailer};
use lmzip::model::Model;
use lmzip::pipeline::{self, CompressOptions};
use lmzip::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn golden_dir() -> PathBuf {
    root().join("tests/golden")
}

fn errors_dir() -> PathBuf {
    root().join("tests/golden-errors")
}

fn model_path() -> Option<PathBuf> {
    lmzip::testing::real_model_path()
}

/// The real model for a backend, loaded once per test process.
fn real(backend: u16) -> Option<&'static Model> {
    static B1: OnceLock<Option<Model>> = OnceLock::new();
    static B2: OnceLock<Option<Model>> = OnceLock::new();
    static B3: OnceLock<Option<Model>> = OnceLock::new();
    let cell = match backend {
        2 => &B2,
        3 => &B3,
        _ => &B1,
    };
    cell.get_or_init(|| model_path().map(|p| Model::load_with(&p, backend).expect("model loads")))
        .as_ref()
}

/// One golden archive: a name, its original, and the settings it was made with. Small on
/// purpose: decoding with the real model runs at tens of tokens per second.
struct Golden {
    name: &'static str,
    original: Vec<u8>,
    block_tokens: u32,
    streams: u16,
    backend: u16,
    /// Window, keep and window policy (the library's defaults at the time unless set).
    window: (u32, u32, u8),
}

fn goldens() -> Vec<Golden> {
    let g = |name, original: &[u8], block_tokens, streams, backend| Golden {
        name,
        original: original.to_vec(),
        block_tokens,
        streams,
        backend,
        window: (1024, 512, format::WINDOW_REPREFILL),
    };
    vec![
        g(
            "english.txt",
            b"Alice was beginning to get very tired of sitting by her sister on the bank, \
              and of having nothing to do.\n",
            16,
            4,
            1,
        ),
        // Escapes (0x04, 0xFF), invalid UTF-8, NUL, CRLF, text that spells a special token.
        g(
            "awkward.bin",
            b"a\0b\r\n\x04\xff\xc3\x28 <|endoftext|> \xe2\x82 caf\xc3\xa9",
            8,
            2,
            1,
        ),
        g("empty", b"", 1024, 64, 1),
        g(
            "backend2.txt",
            b"Backend two keeps the integer weights.\n",
            1024,
            64,
            2,
        ),
        // Window policy 1 (shift) with a window of 12 positions that slides many times in
        // each of the two blocks: pins the slide's exact definition (kept entries, the start
        // token's re-rotated key, contiguous positions).
        Golden {
            window: (12, 9, format::WINDOW_SHIFT),
            ..g(
                "shift.txt",
                b"The window shifts: the start token stays, the newest entries move down, and \
                  positions continue where they were.\n",
                20,
                2,
                2,
            )
        },
        // Backend 3 (16-bit KV cache, lane-ordered softmax sum) with the sliding window:
        // pins the half rounding of stored keys and values, including the re-rotated sink.
        Golden {
            window: (12, 9, format::WINDOW_SHIFT),
            ..g(
                "backend3.txt",
                b"Backend three stores keys and values as halves; the window still slides \
                  exactly, and the sums run in eight lanes.\n",
                20,
                2,
                3,
            )
        },
    ]
}

fn compress(model: &Model, data: &[u8], block_tokens: u32, streams: u16) -> Vec<u8> {
    compress_with(
        model,
        data,
        block_tokens,
        streams,
        (1024, 512, format::WINDOW_REPREFILL),
    )
}

fn compress_with(
    model: &Model,
    data: &[u8],
    block_tokens: u32,
    streams: u16,
    (window, keep, window_policy): (u32, u32, u8),
) -> Vec<u8> {
    let opts = CompressOptions {
        block_tokens,
        streams,
        window,
        keep,
        window_policy,
        ..CompressOptions::default()
    };
    let mut a = Vec::new();
    pipeline::compress(model, data, &opts, &mut a, &mut |_| {}).expect("compresses");
    a
}

fn decompress(model: &Model, archive: &[u8]) -> lmzip::Result<Vec<u8>> {
    let mut out = Vec::new();
    pipeline::decompress(model, &mut &archive[..], &mut out, &mut |_| {})?;
    Ok(out)
}

/// An archive taken apart: the header, its exact bytes, and its frames.
struct Parsed {
    header: Header,
    header_bytes: Vec<u8>,
    groups: Vec<(Vec<BlockEntry>, Vec<Vec<u8>>)>,
    trailer: Trailer,
}

fn parse(archive: &[u8]) -> Parsed {
    let mut r = archive;
    let header = Header::read_from(&mut r).unwrap().unwrap();
    let header_bytes = archive[..header.encoded_len()].to_vec();
    let mut groups = Vec::new();
    loop {
        match format::read_frame(&mut r, &header).unwrap() {
            Frame::Group { entries, payloads } => groups.push((entries, payloads)),
            Frame::End(trailer) => {
                return Parsed {
                    header,
                    header_bytes,
                    groups,
                    trailer,
                }
            }
        }
    }
}

/// A group frame written field by field (FORMAT.md, "Group frame"), bypassing the writer's
/// own checks so that out-of-limit entries can be forged; the frame CRC is valid.
fn raw_group(entries: &[BlockEntry], count: u16) -> Vec<u8> {
    let mut b = vec![format::TAG_GROUP];
    b.extend_from_slice(&count.to_le_bytes());
    for e in entries {
        for x in [e.original_len, e.symbol_count, e.coded_len, e.crc32] {
            b.extend_from_slice(&x.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

impl Parsed {
    /// Writes the archive back, through `format`'s writers (valid checksums everywhere).
    fn assemble(&self) -> Vec<u8> {
        let mut v = self.header_bytes.clone();
        for (entries, payloads) in &self.groups {
            let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
            format::write_group(&mut v, &self.header, entries, &refs).unwrap();
        }
        format::write_end(&mut v, &self.trailer).unwrap();
        v
    }

    /// The header with bytes `at..` replaced and its CRC (the last 4 bytes) recomputed.
    fn header_patched(&self, at: usize, bytes: &[u8]) -> Vec<u8> {
        let mut h = self.header_bytes.clone();
        h[at..at + bytes.len()].copy_from_slice(bytes);
        let crc_at = h.len() - 4;
        let crc = crc32fast::hash(&h[..crc_at]);
        h[crc_at..].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Everything after the header.
    fn body(&self) -> Vec<u8> {
        self.assemble()[self.header_bytes.len()..].to_vec()
    }
}

type Expect = fn(&ErrorKind) -> bool;

/// Every refused archive: file name, what was done to it, the error kind it must produce.
fn error_cases() -> Vec<(&'static str, &'static str, Expect)> {
    vec![
        ("bad-magic.lmz", "first byte changed", |k| {
            matches!(k, ErrorKind::BadMagic { .. })
        }),
        ("unsupported-version.lmz", "version field set to 99", |k| {
            matches!(k, ErrorKind::UnsupportedVersion { found: 99, .. })
        }),
        (
            "reserved-bits.lmz",
            "header flag bit 0 set, header CRC valid",
            |k| matches!(k, ErrorKind::ReservedBitsSet { field, .. } if field.contains("header")),
        ),
        (
            "header-checksum.lmz",
            "one bit of the model hash flipped",
            |k| matches!(k, ErrorKind::ChecksumMismatch { what } if *what == "header"),
        ),
        (
            "truncated-header.lmz",
            "cut inside the header",
            |k| matches!(k, ErrorKind::Truncated { what } if *what == "header"),
        ),
        (
            "truncated-block.lmz",
            "cut inside the first block's payload",
            |k| matches!(k, ErrorKind::Truncated { what } if *what == "block"),
        ),
        ("truncated-end.lmz", "end frame missing", |k| {
            matches!(k, ErrorKind::Truncated { .. })
        }),
        (
            "group-frame-checksum.lmz",
            "one bit of the block table flipped",
            |k| matches!(k, ErrorKind::ChecksumMismatch { what } if *what == "group frame"),
        ),
        (
            "block-checksum.lmz",
            "first block's crc32 changed, frame CRC valid",
            |k| matches!(k, ErrorKind::ChecksumMismatch { what } if what.starts_with("block")),
        ),
        (
            "content-checksum.lmz",
            "end frame's SHA-256 changed, frame CRC valid",
            |k| matches!(k, ErrorKind::ChecksumMismatch { what } if what.starts_with("content")),
        ),
        (
            "end-frame-length.lmz",
            "end frame's total length off by one",
            |k| matches!(k, ErrorKind::LengthMismatch { what, .. } if *what == "content length"),
        ),
        (
            "invalid-frame-tag.lmz",
            "group tag replaced by 'X'",
            |k| matches!(k, ErrorKind::InvalidField { field, .. } if *field == "frame tag"),
        ),
        (
            "wrong-model.lmz",
            "made with the synthetic test model",
            |k| matches!(k, ErrorKind::ModelMismatch { what, .. } if *what == "model"),
        ),
        (
            "unsupported-backend.lmz",
            "backend id 99, header CRC valid",
            |k| matches!(k, ErrorKind::UnsupportedBackend { id: 99 }),
        ),
        (
            "limit-predictor-settings.lmz",
            "predictor settings length 2000 (> 1024)",
            |k| matches!(k, ErrorKind::LimitExceeded { field, .. } if field.contains("predictor")),
        ),
        (
            "limit-block-bytes.lmz",
            "block original_len 2^24 + 1, frame CRC valid",
            |k| matches!(k, ErrorKind::LimitExceeded { field, .. } if field.contains("original")),
        ),
        (
            "limit-coded-length.lmz",
            "block coded_len beyond 4 * symbols + 16, frame CRC valid",
            |k| matches!(k, ErrorKind::LimitExceeded { field, .. } if field.contains("coded")),
        ),
        (
            "limit-group-blocks.lmz",
            "group of 65535 blocks (> streams), nothing after",
            |k| matches!(k, ErrorKind::LimitExceeded { field, .. } if field.contains("group")),
        ),
    ]
}

/// Builds the damaged archive `name` from a valid real-model archive.
fn make_error_case(name: &str, valid: &[u8], synthetic_archive: &[u8]) -> Vec<u8> {
    let p = parse(valid);
    let hl = p.header_bytes.len();
    let with_header = |h: Vec<u8>| {
        let mut v = h;
        v.extend_from_slice(&p.body());
        v
    };
    match name {
        "bad-magic.lmz" => {
            let mut v = valid.to_vec();
            v[0] = b'B';
            v
        }
        "unsupported-version.lmz" => {
            let mut v = valid.to_vec();
            v[4..6].copy_from_slice(&99u16.to_le_bytes());
            v
        }
        "reserved-bits.lmz" => with_header(p.header_patched(6, &1u16.to_le_bytes())),
        "header-checksum.lmz" => {
            let mut v = valid.to_vec();
            v[12] ^= 0x01;
            v
        }
        "truncated-header.lmz" => valid[..hl / 2].to_vec(),
        "truncated-block.lmz" => {
            let (entries, _) = &p.groups[0];
            let table = 3 + 16 * entries.len() + 4;
            valid[..hl + table + entries[0].coded_len as usize / 2].to_vec()
        }
        "truncated-end.lmz" => valid[..valid.len() - 53].to_vec(),
        "group-frame-checksum.lmz" => {
            let mut v = valid.to_vec();
            v[hl + 3] ^= 0x01;
            v
        }
        "block-checksum.lmz" => {
            let mut q = parse(valid);
            q.groups[0].0[0].crc32 ^= 0x0000_0100;
            q.assemble()
        }
        "content-checksum.lmz" => {
            let mut q = parse(valid);
            q.trailer.sha256[0] ^= 0x01;
            q.assemble()
        }
        "end-frame-length.lmz" => {
            let mut q = parse(valid);
            q.trailer.total_len += 1;
            q.assemble()
        }
        "invalid-frame-tag.lmz" => {
            let mut v = valid.to_vec();
            assert_eq!(v[hl], format::TAG_GROUP);
            v[hl] = b'X';
            v
        }
        "wrong-model.lmz" => synthetic_archive.to_vec(),
        "unsupported-backend.lmz" => with_header(p.header_patched(74, &99u16.to_le_bytes())),
        "limit-predictor-settings.lmz" => {
            // P sits in the last two bytes before the settings (FORMAT.md, offset 93).
            let mut v = p.header_patched(format::HEADER_FIXED_LEN - 2, &2000u16.to_le_bytes());
            v.extend_from_slice(&p.body());
            v
        }
        "limit-block-bytes.lmz" | "limit-coded-length.lmz" => {
            let (entries, payloads) = &p.groups[0];
            let mut forged = entries.clone();
            if name == "limit-block-bytes.lmz" {
                forged[0].original_len = format::MAX_BLOCK_BYTES + 1;
            } else {
                forged[0].coded_len = 4 * forged[0].symbol_count + 20;
            }
            let mut v = p.header_bytes.clone();
            v.extend_from_slice(&raw_group(&forged, forged.len() as u16));
            for pl in payloads {
                v.extend_from_slice(pl);
            }
            v
        }
        "limit-group-blocks.lmz" => {
            let mut v = p.header_bytes.clone();
            v.extend_from_slice(&raw_group(&[], u16::MAX));
            v
        }
        other => panic!("no recipe for {other}"),
    }
}

#[test]
fn golden_archives_decode_to_their_originals() {
    if real(1).is_none() {
        return;
    }
    let mut checked = 0;
    for g in goldens() {
        let path = golden_dir().join(format!("{}.lmz", g.name));
        let archive = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; regenerate with tests/golden/README.md",
                path.display()
            )
        });
        let original = std::fs::read(golden_dir().join(g.name)).unwrap();
        assert_eq!(original, g.original, "{}: stored original", g.name);
        let model = real(g.backend).unwrap();
        assert_eq!(
            pipeline::peek_backend(&archive),
            Some(g.backend),
            "{}",
            g.name
        );
        let back = decompress(model, &archive).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (format changed? see tests/golden/README.md)",
                g.name
            )
        });
        assert_eq!(back, original, "{}", g.name);
        // The encoder is deterministic: today's build must write the same bytes. A change
        // here means the format (or the model's arithmetic) changed: bump the version and
        // regenerate.
        let again = compress_with(model, &original, g.block_tokens, g.streams, g.window);
        assert!(
            again == archive,
            "{}: re-encoding gives different bytes",
            g.name
        );
        checked += 1;
    }
    // Archives written back to back decode to their originals back to back.
    let cat = std::fs::read(golden_dir().join("concatenated.lmz")).unwrap();
    let mut want = std::fs::read(golden_dir().join("english.txt")).unwrap();
    want.extend(std::fs::read(golden_dir().join("awkward.bin")).unwrap());
    assert_eq!(decompress(real(1).unwrap(), &cat).unwrap(), want);
    eprintln!("{} golden archives and one concatenation decoded", checked);
}

#[test]
fn golden_error_archives_fail_with_their_named_kind() {
    let Some(m) = real(1) else { return };
    let cases = error_cases();
    let listed: Vec<String> = std::fs::read_dir(errors_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".lmz"))
        .collect();
    assert_eq!(
        listed.len(),
        cases.len(),
        "tests/golden-errors holds {listed:?}; regenerate"
    );
    for (name, what, expect) in cases {
        let bytes = std::fs::read(errors_dir().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}; regenerate (tests/golden/README.md)"));
        match decompress(m, &bytes) {
            Ok(out) => panic!("{name} ({what}): decoded {} bytes, must fail", out.len()),
            Err(e) => assert!(
                expect(e.kind()),
                "{name} ({what}): wrong error kind {:?}",
                e.kind()
            ),
        }
    }
}

/// Rewrites tests/golden and tests/golden-errors. Ignored, and a no-op without
/// LMZIP_REGEN_GOLDEN=1, so that no ordinary test run changes committed files.
#[test]
#[ignore = "rewrites the golden files; run with LMZIP_REGEN_GOLDEN=1"]
fn regenerate() {
    if std::env::var_os("LMZIP_REGEN_GOLDEN").is_none_or(|v| v != "1") {
        eprintln!("LMZIP_REGEN_GOLDEN=1 is not set: nothing written");
        return;
    }
    let m1 = real(1).expect("the real model is needed to regenerate");
    let (gd, ed) = (golden_dir(), errors_dir());
    for d in [&gd, &ed] {
        std::fs::create_dir_all(d).unwrap();
        for e in std::fs::read_dir(d).unwrap().filter_map(|e| e.ok()) {
            let n = e.file_name().to_string_lossy().into_owned();
            if n != "README.md" {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }
    let mut archives = std::collections::HashMap::new();
    for g in goldens() {
        let model = real(g.backend).unwrap();
        let a = compress_with(model, &g.original, g.block_tokens, g.streams, g.window);
        assert_eq!(decompress(model, &a).unwrap(), g.original, "{}", g.name);
        std::fs::write(gd.join(g.name), &g.original).unwrap();
        std::fs::write(gd.join(format!("{}.lmz", g.name)), &a).unwrap();
        archives.insert(g.name, a);
    }
    let mut cat = archives["english.txt"].clone();
    cat.extend_from_slice(&archives["awkward.bin"]);
    std::fs::write(gd.join("concatenated.lmz"), cat).unwrap();

    // The base of every damaged archive: two groups of two blocks, so that block-level
    // damage is reached after a whole group decodes.
    let base_text = b"It was the best of times, it was the worst of times.\n";
    let valid = compress(m1, base_text, 4, 2);
    assert!(parse(&valid).groups.len() >= 2);
    let synthetic = lmzip::testing::synthetic_model().unwrap();
    let foreign = compress(&synthetic, base_text, 4, 2);
    for (name, what, expect) in error_cases() {
        let bytes = make_error_case(name, &valid, &foreign);
        let err = decompress(m1, &bytes).expect_err(name);
        assert!(expect(err.kind()), "{name} ({what}): {:?}", err.kind());
        std::fs::write(ed.join(name), bytes).unwrap();
    }
    eprintln!(
        "golden files written to {} and {}",
        gd.display(),
        ed.display()
    );
}
