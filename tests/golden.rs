//! Golden archives: files made once with the real default model that this build must still
//! decode (tests/golden/, format version 3, and tests/golden/v2/, the previous version,
//! which readers keep reading), and damaged or foreign archives it must refuse with a
//! named error kind (tests/golden-errors/, and tests/golden-errors/v2/).
//!
//! When the format changes, regenerate the version-3 files with one command (see
//! tests/golden/README.md); the version-2 files are never regenerated:
//!
//!     LMZIP_REGEN_GOLDEN=1 cargo test --release --test golden -- --ignored regenerate
//!
//! The damaged archives are derived from a fresh real-model archive through the `format`
//! API (parse, change one field, write back with valid checksums), so each one reaches the
//! check it is named after instead of failing earlier on a checksum.

use lmzip::format::{self, BlockEntry, Checksum, Frame, Header, Trailer};
use lmzip::model::Model;
use lmzip::pipeline::{self, CompressOptions};
use lmzip::{ChecksumKind, ErrorKind};
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
    /// Window, keep and window policy.
    window: (u32, u32, u8),
    checksum: ChecksumKind,
    /// Made with Gemma 3 270M instead of SmolLM2-135M.
    gemma: bool,
    /// The active head's K (0: off).
    active_log2: u8,
    /// The continuous cache's K (0: off; settings version 4).
    cache_log2: u8,
    /// The ASCII starting set's K and the escape probe's rate (0: off; settings
    /// version 5).
    ascii_probe: (u8, u8),
    /// Binary regions to the classical coder (version 4); off for the goldens of the
    /// model's path, which must stay version 3.
    regions: bool,
}

/// The settings of most goldens (the library's defaults before version 3).
const OLD_WINDOW: (u32, u32, u8) = (1024, 512, format::WINDOW_REPREFILL);
/// The library's defaults (settings preset 1).
const DEFAULT_WINDOW: (u32, u32, u8) = (1024, 896, format::WINDOW_SHIFT);

fn g(name: &'static str, original: &[u8], block_tokens: u32, streams: u16, backend: u16) -> Golden {
    Golden {
        name,
        original: original.to_vec(),
        block_tokens,
        streams,
        backend,
        window: OLD_WINDOW,
        checksum: ChecksumKind::Xxh64,
        gemma: false,
        active_log2: 0,
        cache_log2: 0,
        ascii_probe: (0, 0),
        regions: false,
    }
}

/// Version 4's golden: binary (a spreadsheet-like table of small integers and NULs), text,
/// binary. The text goes through the model, the rest through LZMA2.
fn mixed_bin() -> Vec<u8> {
    let mut v: Vec<u8> = (0..600u32)
        .map(|i| [0, 0, 1, (i * 7 % 13) as u8][(i % 4) as usize])
        .collect();
    for _ in 0..9 {
        v.extend_from_slice(ENGLISH);
        v.extend_from_slice(b"The rabbit hole went straight on like a tunnel for some way.\n");
    }
    v.extend((0..300u32).map(|i| (i * 31 % 7) as u8));
    v
}

/// Version 4 with the per-region CRLF transform and a classical stream in two parts: a
/// text with CRLF line ends, 70,000 bytes of a table, a text with LF line ends, 70,000
/// bytes of another table. Only the first text takes the transform; each binary region,
/// 64 KiB or more, is its own LZMA2 part. The texts are varied (the ledger lines), so
/// that the model beats coding everything classically.
fn parts_bin() -> Vec<u8> {
    let lines = gemma_long_text();
    let half = lines.len() / 2;
    let cut = half + lines[half..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut v: Vec<u8> = lines[..cut]
        .iter()
        .flat_map(|&b| {
            if b == b'\n' {
                vec![b'\r', b'\n']
            } else {
                vec![b]
            }
        })
        .collect();
    v.extend((0..70_000u32).map(|i| [0, 0, 1, (i * 7 % 13) as u8][(i % 4) as usize]));
    v.extend_from_slice(&lines[cut..]);
    v.extend((0..70_000u32).map(|i| [(i / 8 % 5) as u8, 0, 0xff, 0, 2, 0][(i % 6) as usize]));
    v
}

/// The real Gemma 3 270M for a backend, loaded once per test process (None without it,
/// outside CI).
fn gemma(backend: u16) -> Option<&'static Model> {
    static B2: OnceLock<Option<Model>> = OnceLock::new();
    static B3: OnceLock<Option<Model>> = OnceLock::new();
    let cell = if backend == 2 { &B2 } else { &B3 };
    cell.get_or_init(|| {
        lmzip::testing::real_gemma_model_path()
            .map(|p| Model::load_with(&p, backend).expect("Gemma loads"))
    })
    .as_ref()
}

/// The model a golden was made with (None when it is missing, outside CI).
fn model_of(g: &Golden) -> Option<&'static Model> {
    if g.gemma {
        gemma(g.backend)
    } else {
        real(g.backend)
    }
}

/// About 600 Gemma tokens of varied text: more than the 512 positions its sliding-window
/// layers keep, so the archive pins their cache's compaction.
fn gemma_long_text() -> Vec<u8> {
    let mut t = Vec::new();
    for i in 0..40u32 {
        let line = format!(
            "Entry {i}: the {} of {} reached {} units, and the ledger noted {}.\n",
            ["harvest", "river", "mill", "archive", "ferry"][(i % 5) as usize],
            ["Avalon", "Brest", "Corfu", "Dakar", "Eilat", "Faro", "Gdansk"][(i % 7) as usize],
            i * 37 % 101,
            ["nothing unusual", "a late frost", "a new bridge"][(i % 3) as usize],
        );
        t.extend_from_slice(line.as_bytes());
    }
    t
}

const ENGLISH: &[u8] =
    b"Alice was beginning to get very tired of sitting by her sister on the bank, \
    and of having nothing to do.\n";
/// Escapes (0x04, 0xFF), invalid UTF-8, NUL, CRLF, text that spells a special token.
const AWKWARD: &[u8] = b"a\0b\r\n\x04\xff\xc3\x28 <|endoftext|> \xe2\x82 caf\xc3\xa9";

/// The version-3 goldens. Each archive's settings are recorded in its header; the list
/// only says how to make it again.
fn goldens() -> Vec<Golden> {
    vec![
        // Four blocks of 16 tokens side by side: group frames, block CRCs.
        g("english.txt", ENGLISH, 16, 4, 1),
        // Its one LF has a CR before it, so it also takes the CRLF transform.
        g("awkward.bin", AWKWARD, 8, 2, 1),
        g("empty", b"", 1024, 64, 1),
        // One block: no frames, the header holds the block (settings as deltas).
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
        // Every setting the default: the header is the preset id and nothing more.
        Golden {
            window: DEFAULT_WINDOW,
            ..g(
                "defaults.txt",
                b"Every setting is the default, so the header names preset 1 and no deltas.\n",
                4096,
                16,
                3,
            )
        },
        // CRLF line ends with a lone CR inside a line: coded as LF, restored exactly.
        Golden {
            window: DEFAULT_WINDOW,
            ..g(
                "crlf.txt",
                b"Line one ends in CR LF.\r\nA lone \r stays as it is.\r\n\r\nThe end.\r\n",
                4096,
                16,
                3,
            )
        },
        // Gemma 3 270M with its defaults (the active head, K = 14): pins the second
        // architecture, its SentencePiece tokenizer (a rare word, bytes outside the
        // vocabulary) and the escape model.
        Golden {
            window: DEFAULT_WINDOW,
            gemma: true,
            active_log2: 14,
            ..g(
                "gemma.txt",
                "Gemma codes this line; a rare word (sesquipedalian) and café \u{1F600} \
                 take the escape.\n"
                    .as_bytes(),
                4096,
                16,
                3,
            )
        },
        // Gemma with the continuous cache (settings version 4): 256 keys, so the ring
        // wraps, over two blocks side by side, each learning from the other's keys.
        Golden {
            window: DEFAULT_WINDOW,
            gemma: true,
            active_log2: 14,
            cache_log2: 8,
            ..g("gemma-cache.txt", &gemma_long_text(), 200, 16, 3)
        },
        // Gemma with its defaults since settings version 5 (preset 4): the ASCII starting
        // set and the escape probe beside the cache, two blocks side by side.
        Golden {
            window: DEFAULT_WINDOW,
            gemma: true,
            active_log2: 14,
            cache_log2: 14,
            ascii_probe: (15, 22),
            ..g("gemma-probe.txt", &gemma_long_text()[..1500], 200, 16, 3)
        },
        // Gemma over more than its sliding-window layers' 512 positions in one block,
        // backend 2, the full head.
        Golden {
            window: DEFAULT_WINDOW,
            gemma: true,
            ..g("gemma-long.txt", &gemma_long_text(), 4096, 16, 2)
        },
        // Version 4: binary, text, binary regions, found by the encoder with the
        // defaults; the classical stream is raw LZMA2.
        Golden {
            window: DEFAULT_WINDOW,
            regions: true,
            ..g("mixed.bin", &mixed_bin(), 4096, 16, 1)
        },
        // Version 4 with the per-region CRLF transform (one of two text regions) and the
        // classical stream in two parts.
        Golden {
            window: DEFAULT_WINDOW,
            regions: true,
            ..g("parts.bin", &parts_bin(), 4096, 16, 1)
        },
        // The SHA-256 content checksum, in an archive of frames.
        Golden {
            checksum: ChecksumKind::Sha256,
            ..g(
                "sha256.txt",
                b"A stronger checksum is one option away.\n",
                8,
                2,
                1,
            )
        },
    ]
}

/// Version 2's goldens (tests/golden/v2/): name and backend.
const V2_GOLDENS: [(&str, u16); 6] = [
    ("english.txt", 1),
    ("awkward.bin", 1),
    ("empty", 1),
    ("backend2.txt", 2),
    ("shift.txt", 2),
    ("backend3.txt", 3),
];

fn compress(model: &Model, data: &[u8], block_tokens: u32, streams: u16) -> Vec<u8> {
    compress_golden(&g("", data, block_tokens, streams, model.backend()), model)
}

fn compress_golden(g: &Golden, model: &Model) -> Vec<u8> {
    let (window, keep, window_policy) = g.window;
    let opts = CompressOptions {
        block_tokens: g.block_tokens,
        streams: g.streams,
        window,
        keep,
        window_policy,
        checksum: g.checksum,
        regions: g.regions,
        ..CompressOptions::default()
    };
    let mut opts = opts;
    opts.predictor.active_log2 = g.active_log2;
    opts.predictor.cache_log2 = g.cache_log2;
    (opts.predictor.active_ascii_log2, opts.predictor.probe_rate) = g.ascii_probe;
    let mut a = Vec::new();
    pipeline::compress(model, &g.original, &opts, &mut a, &mut |_| {}).expect("compresses");
    a
}

fn decompress(model: &Model, archive: &[u8]) -> lmzip::Result<Vec<u8>> {
    let mut out = Vec::new();
    pipeline::decompress(model, &mut &archive[..], &mut out, &mut |_| {})?;
    Ok(out)
}

/// A version-3 archive taken apart: the header, its exact bytes, its groups (a one-block
/// archive's block as one group) and its end.
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
    let mut frames = format::Frames::new(&header);
    loop {
        match frames.next_frame(&mut r).unwrap() {
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

/// Bytes of a varint.
fn varint_len(v: u32) -> usize {
    let mut b = Vec::new();
    format::put_varint(&mut b, v);
    b.len()
}

impl Parsed {
    /// Writes the archive back, through `format`'s writers (valid checksums everywhere).
    fn assemble(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.header.write_to(&mut v).unwrap();
        assert_eq!(v, self.header_bytes);
        v.extend_from_slice(&self.body());
        v
    }

    /// Everything after the header.
    fn body(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for (entries, payloads) in &self.groups {
            if self.header.single.is_some() {
                format::write_single_payload(&mut v, &self.header, &payloads[0]).unwrap();
            } else {
                let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
                format::write_group(&mut v, &self.header, entries, &refs).unwrap();
            }
        }
        format::write_end(&mut v, &self.header, &self.trailer.checksum).unwrap();
        v
    }

    /// Where the settings preset id sits: after magic, version, descriptor, identities,
    /// num_symbols and start_token (FORMAT.md, "Header").
    fn preset_at(&self) -> usize {
        4 + 1
            + 1
            + format::MODEL_ID_LEN
            + format::TOKENIZER_ID_LEN
            + varint_len(self.header.num_symbols)
            + varint_len(self.header.start_token)
    }

    /// The header with bytes `at..` replaced and its CRC-16 (the last 2 bytes) recomputed.
    fn header_patched(&self, at: usize, bytes: &[u8]) -> Vec<u8> {
        let mut h = self.header_bytes.clone();
        h[at..at + bytes.len()].copy_from_slice(bytes);
        let crc_at = h.len() - 2;
        let crc = format::crc16(&h[..crc_at]);
        h[crc_at..].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// A header written from a changed copy of the parsed one.
    fn header_with(&self, change: impl FnOnce(&mut Header)) -> Vec<u8> {
        let mut h = self.header.clone();
        change(&mut h);
        let mut v = Vec::new();
        h.write_to(&mut v).unwrap();
        v
    }
}

type Expect = fn(&ErrorKind) -> bool;

/// Every refused version-3 archive: file name, what was done to it, the error kind it
/// must produce.
fn error_cases() -> Vec<(&'static str, &'static str, Expect)> {
    vec![
        ("bad-magic.lmz", "first byte changed", |k| {
            matches!(k, ErrorKind::BadMagic { .. })
        }),
        ("unsupported-version.lmz", "version byte set to 99", |k| {
            matches!(k, ErrorKind::UnsupportedVersion { found: 99, .. })
        }),
        (
            "reserved-bits.lmz",
            "header descriptor bit 7 set, header CRC valid",
            |k| matches!(k, ErrorKind::ReservedBitsSet { field, .. } if field.contains("header")),
        ),
        (
            "header-checksum.lmz",
            "one bit of the model identity flipped",
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
            "one bit of the block table's CRC-16 flipped",
            |k| matches!(k, ErrorKind::ChecksumMismatch { what } if *what == "group frame"),
        ),
        (
            "block-checksum.lmz",
            "first block's crc32 changed, frame CRC valid",
            |k| matches!(k, ErrorKind::ChecksumMismatch { what } if what.starts_with("block")),
        ),
        (
            "content-checksum.lmz",
            "end frame's checksum changed",
            |k| matches!(k, ErrorKind::ChecksumMismatch { what } if what.starts_with("content")),
        ),
        (
            "single-content-checksum.lmz",
            "one-block archive's checksum changed",
            |k| matches!(k, ErrorKind::ChecksumMismatch { what } if what.starts_with("content")),
        ),
        (
            "single-truncated-block.lmz",
            "one-block archive cut inside its payload",
            |k| matches!(k, ErrorKind::Truncated { what } if *what == "block"),
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
            "wrong-tokenizer.lmz",
            "tokenizer identity changed, header CRC valid",
            |k| matches!(k, ErrorKind::ModelMismatch { what, .. } if *what == "tokenizer"),
        ),
        (
            "unsupported-backend.lmz",
            "backend id 99, header CRC valid",
            |k| matches!(k, ErrorKind::UnsupportedBackend { id: 99 }),
        ),
        (
            "unknown-transform.lmz",
            "transform id 3, header CRC valid",
            |k| matches!(k, ErrorKind::InvalidField { field, value: 3 } if *field == "transform"),
        ),
        (
            "unknown-preset.lmz",
            "settings preset 5, header CRC valid",
            |k| matches!(k, ErrorKind::InvalidField { field, value: 5 } if field.contains("preset")),
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
        (
            "regions-table-checksum.lmz",
            "version 4: a bit of the region table flipped",
            |k| matches!(k, ErrorKind::ChecksumMismatch { what } if *what == "region table"),
        ),
        (
            "regions-classic-truncated.lmz",
            "version 4: cut in the middle of the classical stream",
            |k| matches!(k, ErrorKind::Truncated { what } if *what == "classical stream"),
        ),
        (
            "regions-classic-corrupt.lmz",
            "version 4: a bit of the classical stream flipped",
            |k| matches!(k, ErrorKind::ChecksumMismatch { what } if what.starts_with("classical")),
        ),
        (
            "regions-text-length.lmz",
            "version 4: a text region one byte longer than the text, table CRC valid",
            |k| matches!(k, ErrorKind::LengthMismatch { what, .. } if *what == "text regions"),
        ),
        (
            "parts-classic-corrupt.lmz",
            "version 4, two classical parts: a bit of the second part flipped",
            |k| matches!(k, ErrorKind::ChecksumMismatch { what } if what.starts_with("classical")),
        ),
        (
            "parts-length.lmz",
            "version 4, two classical parts: a byte moved from the second part's length to \
             the first's, table CRC valid",
            |k| matches!(k, ErrorKind::ChecksumMismatch { what } if what.starts_with("classical")),
        ),
        (
            "parts-crlf-flag.lmz",
            "version 4, per-region CRLF: the LF text region marked too, table CRC valid",
            |k| {
                matches!(k, ErrorKind::LengthMismatch { what, .. } if *what == "text regions")
                    || matches!(k, ErrorKind::ChecksumMismatch { .. })
            },
        ),
    ]
}

/// Version 2's refused archives (tests/golden-errors/v2/), made by the version-2 build.
fn v2_error_cases() -> Vec<(&'static str, Expect)> {
    vec![
        ("bad-magic.lmz", |k| matches!(k, ErrorKind::BadMagic { .. })),
        ("unsupported-version.lmz", |k| {
            matches!(k, ErrorKind::UnsupportedVersion { found: 99, .. })
        }),
        (
            "reserved-bits.lmz",
            |k| matches!(k, ErrorKind::ReservedBitsSet { field, .. } if field.contains("header")),
        ),
        (
            "header-checksum.lmz",
            |k| matches!(k, ErrorKind::ChecksumMismatch { what } if *what == "header"),
        ),
        (
            "truncated-header.lmz",
            |k| matches!(k, ErrorKind::Truncated { what } if *what == "header"),
        ),
        (
            "truncated-block.lmz",
            |k| matches!(k, ErrorKind::Truncated { what } if *what == "block"),
        ),
        ("truncated-end.lmz", |k| {
            matches!(k, ErrorKind::Truncated { .. })
        }),
        (
            "group-frame-checksum.lmz",
            |k| matches!(k, ErrorKind::ChecksumMismatch { what } if *what == "group frame"),
        ),
        (
            "block-checksum.lmz",
            |k| matches!(k, ErrorKind::ChecksumMismatch { what } if what.starts_with("block")),
        ),
        (
            "content-checksum.lmz",
            |k| matches!(k, ErrorKind::ChecksumMismatch { what } if what.starts_with("content")),
        ),
        (
            "end-frame-length.lmz",
            |k| matches!(k, ErrorKind::LengthMismatch { what, .. } if *what == "content length"),
        ),
        (
            "invalid-frame-tag.lmz",
            |k| matches!(k, ErrorKind::InvalidField { field, .. } if *field == "frame tag"),
        ),
        (
            "wrong-model.lmz",
            |k| matches!(k, ErrorKind::ModelMismatch { what, .. } if *what == "model"),
        ),
        ("unsupported-backend.lmz", |k| {
            matches!(k, ErrorKind::UnsupportedBackend { id: 99 })
        }),
        (
            "limit-predictor-settings.lmz",
            |k| matches!(k, ErrorKind::LimitExceeded { field, .. } if field.contains("predictor")),
        ),
        (
            "limit-block-bytes.lmz",
            |k| matches!(k, ErrorKind::LimitExceeded { field, .. } if field.contains("original")),
        ),
        (
            "limit-coded-length.lmz",
            |k| matches!(k, ErrorKind::LimitExceeded { field, .. } if field.contains("coded")),
        ),
        (
            "limit-group-blocks.lmz",
            |k| matches!(k, ErrorKind::LimitExceeded { field, .. } if field.contains("group")),
        ),
    ]
}

/// Builds the damaged archive `name` from a valid real-model archive of frames (`valid`),
/// a valid one-block archive (`single`) and one made with another model (`foreign`).
fn make_error_case(
    name: &str,
    valid: &[u8],
    single: &[u8],
    foreign: &[u8],
    mixed: &[u8],
    parts: &[u8],
) -> Vec<u8> {
    if name.starts_with("regions-") {
        return make_regions_case(name, mixed);
    }
    if name.starts_with("parts-") {
        return make_regions_case(name, parts);
    }
    let p = parse(valid);
    let hl = p.header_bytes.len();
    let with_header = |h: Vec<u8>| {
        let mut v = h;
        v.extend_from_slice(&p.body());
        v
    };
    let (entries, payloads) = &p.groups[0];
    let table_len = format::group_table_unchecked(entries, entries.len() as u32).len();
    match name {
        "bad-magic.lmz" => {
            let mut v = valid.to_vec();
            v[0] = b'B';
            v
        }
        "unsupported-version.lmz" => {
            let mut v = valid.to_vec();
            v[4] = 99;
            v
        }
        "reserved-bits.lmz" => with_header(p.header_patched(5, &[p.header_bytes[5] | 0x80])),
        "header-checksum.lmz" => {
            let mut v = valid.to_vec();
            v[6] ^= 0x01;
            v
        }
        "truncated-header.lmz" => valid[..hl / 2].to_vec(),
        "truncated-block.lmz" => {
            valid[..hl + table_len + entries[0].coded_len as usize / 2].to_vec()
        }
        "truncated-end.lmz" => valid[..valid.len() - 5].to_vec(),
        "group-frame-checksum.lmz" => {
            let mut v = valid.to_vec();
            v[hl + table_len - 1] ^= 0x01;
            v
        }
        "block-checksum.lmz" => {
            let mut q = parse(valid);
            q.groups[0].0[0].crc32 = q.groups[0].0[0].crc32.map(|c| c ^ 0x0000_0100);
            q.assemble()
        }
        "content-checksum.lmz" | "single-content-checksum.lmz" => {
            let mut q = parse(if name == "content-checksum.lmz" {
                valid
            } else {
                single
            });
            q.trailer.checksum = match q.trailer.checksum {
                Checksum::Xxh64(v) => Checksum::Xxh64(v ^ 1),
                Checksum::Sha256(mut d) => {
                    d[0] ^= 1;
                    Checksum::Sha256(d)
                }
            };
            q.assemble()
        }
        "single-truncated-block.lmz" => {
            let q = parse(single);
            let e = q.header.single.expect("one block");
            single[..q.header_bytes.len() + e.coded_len as usize / 2].to_vec()
        }
        "invalid-frame-tag.lmz" => {
            let mut v = valid.to_vec();
            assert_eq!(v[hl], format::TAG_GROUP);
            v[hl] = b'X';
            v
        }
        "wrong-model.lmz" => foreign.to_vec(),
        "wrong-tokenizer.lmz" => with_header(p.header_patched(
            4 + 1 + 1 + format::MODEL_ID_LEN,
            &[p.header_bytes[12] ^ 0xff],
        )),
        "unsupported-backend.lmz" => with_header(p.header_with(|h| h.backend = 99)),
        "unknown-transform.lmz" => with_header(p.header_patched(5, &[p.header_bytes[5] | 0x30])),
        "unknown-preset.lmz" => {
            assert_eq!(p.header_bytes[p.preset_at()], 1);
            with_header(p.header_patched(p.preset_at(), &[5]))
        }
        "limit-predictor-settings.lmz" => {
            // The header as far as the preset, then a delta map naming only the predictor
            // settings, with a length of 2000: refused before anything else is read.
            let mut v = p.header_bytes[..=p.preset_at()].to_vec();
            v[5] |= format::DESC_DELTAS;
            format::put_varint(&mut v, format::DELTA_PREDICTOR);
            format::put_varint(&mut v, 2000);
            v.extend_from_slice(&p.body());
            v
        }
        "limit-block-bytes.lmz" | "limit-coded-length.lmz" => {
            let mut forged = entries.clone();
            if name == "limit-block-bytes.lmz" {
                forged[0].original_len = format::MAX_BLOCK_BYTES + 1;
            } else {
                forged[0].coded_len = 4 * forged[0].symbol_count + 20;
            }
            let mut v = p.header_bytes.clone();
            v.extend_from_slice(&format::group_table_unchecked(&forged, forged.len() as u32));
            for pl in payloads {
                v.extend_from_slice(pl);
            }
            v
        }
        "limit-group-blocks.lmz" => {
            let mut v = p.header_bytes.clone();
            v.extend_from_slice(&format::group_table_unchecked(&[], u16::MAX as u32));
            v
        }
        other => panic!("no recipe for {other}"),
    }
}

/// Builds the damaged version-4 archive `name` from a valid one (`mixed.bin`'s or
/// `parts.bin`'s).
fn make_regions_case(name: &str, mixed: &[u8]) -> Vec<u8> {
    let mut r = mixed;
    let h = Header::read_from(&mut r).unwrap().unwrap();
    let section = format::RegionSection::read_from(&mut r, h.transform).unwrap();
    let at = h.encoded_len();
    let payload_at = mixed.len() - r.len();
    let mut v = mixed.to_vec();
    match name {
        "regions-table-checksum.lmz" => v[at + 1] ^= 0x01,
        "regions-classic-truncated.lmz" => {
            v.truncate(payload_at + section.coded_len() as usize / 2)
        }
        "regions-classic-corrupt.lmz" => v[payload_at + section.coded_len() as usize / 2] ^= 0x10,
        "regions-text-length.lmz" => {
            let mut forged = section.clone();
            forged.lens[2] += 1;
            let mut t = Vec::new();
            forged.write_to(&mut t).unwrap();
            v.splice(at..payload_at, t);
        }
        "parts-classic-corrupt.lmz" => {
            let first = section.parts[0].coded_len as usize;
            v[payload_at + first + section.parts[1].coded_len as usize / 2] ^= 0x10;
        }
        "parts-length.lmz" | "parts-crlf-flag.lmz" => {
            let mut forged = section.clone();
            if name == "parts-length.lmz" {
                forged.parts[0].len += 1;
                forged.parts[1].len -= 1;
            } else {
                forged.crlf.iter_mut().for_each(|m| *m = true);
            }
            let mut t = Vec::new();
            forged.write_to(&mut t).unwrap();
            v.splice(at..payload_at, t);
        }
        other => panic!("no recipe for {other}"),
    }
    v
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
        let Some(model) = model_of(&g) else {
            continue;
        };
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
        let again = compress_golden(&g, model);
        assert!(
            again == archive,
            "{}: re-encoding gives different bytes",
            g.name
        );
        checked += 1;
    }
    // Archives written back to back decode to their originals back to back.
    let cat = std::fs::read(golden_dir().join("concatenated.lmz")).unwrap();
    let mut want = ENGLISH.to_vec();
    want.extend_from_slice(AWKWARD);
    assert_eq!(decompress(real(1).unwrap(), &cat).unwrap(), want);
    eprintln!("{checked} golden archives and one concatenation decoded");
}

/// What the version-3 goldens pin about the layout: which archives have frames, which
/// took the transform, what the default header costs.
#[test]
fn golden_archives_have_the_expected_shape() {
    let read = |name: &str| {
        let a = std::fs::read(golden_dir().join(format!("{name}.lmz"))).unwrap();
        let h = Header::read_from(&mut &a[..]).unwrap().unwrap();
        (a, h)
    };
    let (a, h) = read("defaults.txt");
    let e = h.single.expect("one block, described by the header");
    // Magic, version, descriptor, identities (8), num_symbols (3), start token, preset,
    // the block's three lengths (1 + 1 + 1), CRC-16; then the payload and a 4-byte check.
    assert_eq!(h.encoded_len(), 4 + 1 + 1 + 8 + 3 + 1 + 1 + 3 + 2);
    assert_eq!(a.len() - e.coded_len as usize, h.encoded_len() + 4);
    assert_eq!(read("crlf.txt").1.transform, lmzip::Transform::CrlfToLf);
    assert_eq!(read("awkward.bin").1.transform, lmzip::Transform::CrlfToLf);
    assert_eq!(read("english.txt").1.transform, lmzip::Transform::None);
    assert!(read("english.txt").1.single.is_none());
    assert!(read("backend2.txt").1.single.is_some());
    assert_eq!(read("sha256.txt").1.checksum, ChecksumKind::Sha256);
    assert_eq!(read("empty").1.version, 3);
    // The per-region transform and two classical parts.
    let (a, h) = read("parts.bin");
    assert_eq!(h.transform, lmzip::Transform::CrlfPerRegion);
    let mut r = &a[h.encoded_len()..];
    let section = format::RegionSection::read_from(&mut r, h.transform).unwrap();
    assert_eq!(section.crlf, [true, false]);
    assert_eq!(section.parts.len(), 2);
    // Gemma's defaults are preset 2: no settings delta either.
    let (a, h) = read("gemma.txt");
    assert_eq!(a[5] & format::DESC_DELTAS, 0);
    assert_eq!(h.predictor, format::PRESET_2.predictor);
}

/// Readers keep reading version 2: every archive the version-2 build wrote decodes to its
/// original, alone, back to back, and followed by a version-3 archive.
#[test]
fn version_2_archives_still_decode() {
    if real(1).is_none() {
        return;
    }
    let dir = golden_dir().join("v2");
    for (name, backend) in V2_GOLDENS {
        let archive = std::fs::read(dir.join(format!("{name}.lmz"))).unwrap();
        assert_eq!(
            Header::read_from(&mut &archive[..])
                .unwrap()
                .unwrap()
                .version,
            2
        );
        let original = std::fs::read(dir.join(name)).unwrap();
        let back = decompress(real(backend).unwrap(), &archive)
            .unwrap_or_else(|e| panic!("v2/{name}: {e}"));
        assert_eq!(back, original, "v2/{name}");
    }
    let m = real(1).unwrap();
    let mut cat = std::fs::read(dir.join("concatenated.lmz")).unwrap();
    let mut want = std::fs::read(dir.join("english.txt")).unwrap();
    want.extend(std::fs::read(dir.join("awkward.bin")).unwrap());
    assert_eq!(decompress(m, &cat).unwrap(), want);
    // Versions mixed in one stream.
    cat.extend(std::fs::read(golden_dir().join("english.txt.lmz")).unwrap());
    want.extend_from_slice(ENGLISH);
    assert_eq!(decompress(m, &cat).unwrap(), want);
}

fn check_error_files(dir: &Path, cases: Vec<(&str, &str, Expect)>) {
    let Some(m) = real(1) else { return };
    let listed: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".lmz"))
        .collect();
    assert_eq!(
        listed.len(),
        cases.len(),
        "{} holds {listed:?}; regenerate",
        dir.display()
    );
    for (name, what, expect) in cases {
        let bytes = std::fs::read(dir.join(name))
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

#[test]
fn golden_error_archives_fail_with_their_named_kind() {
    check_error_files(&errors_dir(), error_cases());
}

#[test]
fn version_2_error_archives_still_fail_with_their_named_kind() {
    let cases = v2_error_cases()
        .into_iter()
        .map(|(n, e)| (n, "made by the version-2 build", e))
        .collect();
    check_error_files(&errors_dir().join("v2"), cases);
}

/// Rewrites the version-3 files of tests/golden and tests/golden-errors (never their v2/
/// folders). Ignored, and a no-op without LMZIP_REGEN_GOLDEN=1, so that no ordinary test
/// run changes committed files.
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
            if n != "README.md" && e.path().is_file() {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }
    let mut archives = std::collections::HashMap::new();
    for g in goldens() {
        let model = model_of(&g).expect("the real models are needed to regenerate");
        let a = compress_golden(&g, model);
        assert_eq!(decompress(model, &a).unwrap(), g.original, "{}", g.name);
        std::fs::write(gd.join(g.name), &g.original).unwrap();
        std::fs::write(gd.join(format!("{}.lmz", g.name)), &a).unwrap();
        archives.insert(g.name, a);
    }
    let mut cat = archives["english.txt"].clone();
    cat.extend_from_slice(&archives["awkward.bin"]);
    std::fs::write(gd.join("concatenated.lmz"), cat).unwrap();

    // The base of most damaged archives: two groups of two blocks, so that block-level
    // damage is reached after a whole group decodes; and a one-block archive.
    let base_text = b"It was the best of times, it was the worst of times.\n";
    let valid = compress(m1, base_text, 4, 2);
    assert!(parse(&valid).groups.len() >= 2);
    let single = compress(m1, base_text, 4096, 16);
    assert!(parse(&single).header.single.is_some());
    let synthetic = lmzip::testing::synthetic_model().unwrap();
    let foreign = compress(&synthetic, base_text, 4, 2);
    for (name, what, expect) in error_cases() {
        let bytes = make_error_case(
            name,
            &valid,
            &single,
            &foreign,
            &archives["mixed.bin"],
            &archives["parts.bin"],
        );
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
