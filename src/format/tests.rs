//! Container tests: version 3 as written, version 2 as read (from bytes laid out by a
//! test-only copy of the version-2 writer).

use super::*;

/// A version-3 header of an archive of frames (four streams).
fn header() -> Header {
    Header {
        version: 3,
        model: HashPrefix::of(&[1; 32], MODEL_ID_LEN),
        tokenizer: HashPrefix::of(&[2; 32], TOKENIZER_ID_LEN),
        backend: 1,
        num_symbols: 49408,
        block_tokens: 1024,
        streams: 4,
        window_policy: 0,
        start_token: 0,
        window: 1024,
        keep: 512,
        predictor: vec![2, 1],
        transform: Transform::None,
        checksum: ChecksumKind::Xxh64,
        single: None,
    }
}

/// The preset's settings, as lmzip writes them by default.
fn default_header() -> Header {
    let p = &PRESET_1;
    Header {
        backend: p.backend,
        block_tokens: p.block_tokens,
        window: p.window,
        keep: p.keep,
        window_policy: p.window_policy,
        predictor: p.predictor.to_vec(),
        ..header()
    }
}

fn entry() -> BlockEntry {
    BlockEntry {
        original_len: 10,
        symbol_count: 3,
        coded_len: 8,
        crc32: Some(5),
    }
}

const CONTENT: Checksum = Checksum::Xxh64(0x0bad_cafe);

/// An archive of frames: header, one group of one block, end frame.
fn sample() -> Vec<u8> {
    let h = header();
    let mut v = Vec::new();
    h.write_to(&mut v).unwrap();
    write_group(&mut v, &h, &[entry()], &[&[9u8; 8]]).unwrap();
    write_end(&mut v, &h, &CONTENT).unwrap();
    v
}

/// A one-block archive: header (with the block's lengths), payload, checksum.
fn single_header() -> Header {
    Header {
        streams: 1,
        single: Some(BlockEntry {
            crc32: None,
            ..entry()
        }),
        ..default_header()
    }
}

fn sample_single() -> Vec<u8> {
    let h = single_header();
    let mut v = Vec::new();
    h.write_to(&mut v).unwrap();
    write_single_payload(&mut v, &h, &[9u8; 8]).unwrap();
    write_end(&mut v, &h, &CONTENT).unwrap();
    v
}

/// Reads a whole archive's structure; returns its trailer.
fn read_all(mut b: &[u8]) -> Result<Trailer> {
    let h = Header::read_from(&mut b)?.ok_or_else(|| Error::truncated("header"))?;
    let mut t = ArchiveTally::new();
    let mut frames = Frames::new(&h);
    loop {
        match frames.next_frame(&mut b)? {
            Frame::Group { entries, payloads } => {
                assert_eq!(entries.len(), payloads.len());
                t.add_group(&entries)
            }
            Frame::End(tr) => {
                t.check(&tr)?;
                return Ok(tr);
            }
        }
    }
}

fn kind<T: std::fmt::Debug>(r: Result<T>) -> String {
    format!("{:?}", r.expect_err("must fail").kind())
}

#[test]
fn check_values() {
    // CRC-16/IBM-SDLC's and XXH64's published check values.
    assert_eq!(crc16(b"123456789"), 0x906e);
    assert_eq!(
        Checksum::of(ChecksumKind::Xxh64, b""),
        Checksum::Xxh64(0x51d8_e999)
    );
    assert_eq!(
        Checksum::of(ChecksumKind::Xxh64, b"").to_bytes(),
        [0x99, 0xe9, 0xd8, 0x51]
    );
}

#[test]
fn varints_have_one_encoding() {
    for v in [
        0,
        1,
        127,
        128,
        16383,
        16384,
        1 << 21,
        (1 << 28) - 1,
        1 << 28,
        u32::MAX,
    ] {
        let mut b = Vec::new();
        put_varint(&mut b, v);
        let mut r = &b[..];
        let mut t = Tape::new(&mut r, "x", 16, &[]);
        assert_eq!(t.varint("x").unwrap(), v);
        assert!(r.is_empty());
    }
    for bad in [
        &[0x80, 0x00][..],                     // 0 in two bytes
        &[0xff, 0x00],                         // 127 in two bytes
        &[0xff, 0xff, 0xff, 0xff, 0x10],       // 2^32
        &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01], // six bytes
    ] {
        let mut r = bad;
        let mut t = Tape::new(&mut r, "x", 16, &[]);
        assert!(kind(t.varint("x")).starts_with("InvalidField"), "{bad:?}");
    }
}

#[test]
fn round_trip() {
    let v = sample();
    let mut r = &v[..];
    let h = Header::read_from(&mut r).unwrap().unwrap();
    assert_eq!(h, header());
    assert_eq!(h.encoded_len(), v.len() - r.len());
    assert_eq!(read_all(&v).unwrap().checksum, CONTENT);
    assert!(Header::read_from(&mut &[][..]).unwrap().is_none());

    let v = sample_single();
    let mut r = &v[..];
    let h = Header::read_from(&mut r).unwrap().unwrap();
    assert_eq!(h, single_header());
    assert_eq!(r.len(), 8 + 4, "payload and checksum follow the header");
    assert_eq!(read_all(&v).unwrap().checksum, CONTENT);
}

/// Every setting away from the preset, every descriptor option: read back equal, and the
/// writer's encoding is the reader's (one encoding per header).
#[test]
fn deltas_and_options_round_trip() {
    let many = Header {
        backend: 2,
        block_tokens: 16,
        window: 12,
        keep: 9,
        window_policy: WINDOW_REPREFILL,
        predictor: vec![2, 0x3f, 1, 8, 2, 8, 0, 0, 0, 0, 0, 0],
        transform: Transform::CrlfToLf,
        checksum: ChecksumKind::Sha256,
        ..default_header()
    };
    let variants = [
        default_header(),
        single_header(),
        many.clone(),
        Header {
            streams: 1,
            single: Some(BlockEntry {
                crc32: None,
                original_len: MAX_BLOCK_BYTES,
                symbol_count: 16,
                coded_len: 4 * 16 + 16,
            }),
            ..many.clone()
        },
        Header {
            window: 2048,
            ..default_header()
        },
        Header {
            predictor: vec![],
            ..default_header()
        },
    ];
    for h in variants {
        let mut b = Vec::new();
        h.write_to(&mut b).unwrap();
        assert_eq!(b.len(), h.encoded_len());
        let back = Header::read_from(&mut &b[..]).unwrap().unwrap();
        assert_eq!(back, h);
        let mut again = Vec::new();
        back.write_to(&mut again).unwrap();
        assert_eq!(again, b);
    }
}

/// The point of version 3: a default one-block archive of a few kilobytes spends at most
/// 32 bytes on framing (version 2: 195).
#[test]
fn default_one_block_archive_framing_is_small() {
    let h = Header {
        streams: 1,
        single: Some(BlockEntry {
            original_len: 24_000,
            symbol_count: 6_600,
            coded_len: 4 * 900,
            crc32: None,
        }),
        ..default_header()
    };
    let framing = h.encoded_len() + h.checksum.byte_len();
    assert!(framing <= 32, "{framing} bytes");
    // The preset costs one byte; the settings nothing more.
    let frames = Header {
        single: None,
        ..h.clone()
    };
    assert_eq!(frames.encoded_len(), 4 + 1 + 1 + 6 + 2 + 3 + 1 + 1 + 1 + 2);
}

#[test]
fn every_truncation_is_reported() {
    for v in [sample(), sample_single()] {
        for cut in 1..v.len() {
            let k = kind(read_all(&v[..cut]));
            assert!(k.starts_with("Truncated"), "cut {cut}: {k}");
        }
    }
}

/// Every single-bit flip of a header is refused: the CRC-16 detects every error of up to
/// three bits, so none reaches a field.
#[test]
fn every_header_bit_flip_is_refused() {
    for v in [sample(), sample_single()] {
        let hl = Header::read_from(&mut &v[..])
            .unwrap()
            .unwrap()
            .encoded_len();
        for bit in 0..hl * 8 {
            let mut b = v.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(Header::read_from(&mut &b[..]).is_err(), "bit {bit}");
        }
    }
}

#[test]
fn named_errors() {
    let v = sample();
    let with = |at: usize, val: u8| {
        let mut b = v.clone();
        b[at] = val;
        b
    };
    assert!(kind(read_all(&with(0, 0x42))).starts_with("BadMagic"));
    assert!(kind(read_all(&with(4, 1))).contains("UnsupportedVersion { found: 1,"));
    assert!(kind(read_all(&with(4, 99))).contains("found: 99"));
    assert!(kind(read_all(&with(6, 0))).starts_with("ChecksumMismatch"));
    let hl = header().encoded_len();
    assert!(kind(read_all(&with(hl, b'X'))).contains("frame tag"));
    assert!(kind(read_all(&with(hl + 3, 0xFF))).starts_with("ChecksumMismatch"));
    // The table's CRC-16 (after tag, count and one entry of 1 + 1 + 1 + 4 bytes).
    assert!(kind(read_all(&with(hl + 9, v[hl + 9] ^ 1))).starts_with("ChecksumMismatch"));
    // A truncated version-2 version field.
    assert!(
        kind(Header::read_from(&mut &[0xB5, 0x6C, 0x6D, 0x7A, 2][..])).starts_with("Truncated")
    );
    assert!(
        kind(Header::read_from(&mut &[0xB5, 0x6C, 0x6D, 0x7A, 2, 1][..])).contains("found: 258")
    );
}

/// A version-3 header laid out by hand: magic, version, descriptor, identities, then
/// `body` (varints from num_symbols on), then a valid CRC-16.
fn raw(desc: u8, body: &[u32], tail: &[u8]) -> Vec<u8> {
    let mut b = MAGIC.to_vec();
    b.push(3);
    b.push(desc);
    b.extend_from_slice(&[1; MODEL_ID_LEN]);
    b.extend_from_slice(&[2; TOKENIZER_ID_LEN]);
    for &x in body {
        put_varint(&mut b, x);
    }
    b.extend_from_slice(tail);
    let crc = crc16(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn raw_layout_is_the_writers() {
    let mut b = Vec::new();
    default_header().write_to(&mut b).unwrap();
    assert_eq!(b, raw(0, &[49408, 0, 1, 4], &[]));
    let mut b = Vec::new();
    single_header().write_to(&mut b).unwrap();
    assert_eq!(b, raw(DESC_SINGLE, &[49408, 0, 1, 10, 3, 2], &[]));
    let mut b = Vec::new();
    header().write_to(&mut b).unwrap();
    // Backend 1, block_tokens 1024, keep 512, window policy 0 (a byte), predictor [2, 1]
    // (length, bytes): map 0b1110101; then streams.
    let want = raw(
        DESC_DELTAS,
        &[49408, 0, 1, 0x75, 1, 1024, 512],
        &[0, 2, 2, 1, 4],
    );
    assert_eq!(b, want);
}

#[test]
fn field_checks_behind_a_valid_crc() {
    let k = |b: Vec<u8>| kind(Header::read_from(&mut &b[..]));
    let d = DESC_DELTAS;
    // Descriptor: reserved bits, unknown checksum kind and transform.
    assert!(k(raw(0x80, &[49408, 0, 1, 4], &[])).starts_with("ReservedBitsSet"));
    assert!(k(raw(0x40, &[49408, 0, 1, 4], &[])).starts_with("ReservedBitsSet"));
    assert!(k(raw(2 << 2, &[49408, 0, 1, 4], &[])).contains("checksum kind"));
    assert!(k(raw(3 << 4, &[49408, 0, 1, 4], &[])).contains("transform"));
    // The per-region transform needs version 4's region section.
    assert!(k(raw(2 << 4, &[49408, 0, 1, 4], &[])).contains("transform"));
    let mut v4 = raw(2 << 4, &[49408, 0, 1, 4], &[]);
    v4[4] = VERSION_REGIONS as u8;
    let at = v4.len() - 2;
    let crc = crc16(&v4[..at]);
    v4[at..].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(
        Header::read_from(&mut &v4[..]).unwrap().unwrap().transform,
        Transform::CrlfPerRegion
    );
    // Settings: unknown preset, an empty delta map, a delta equal to the preset, unknown
    // delta bits (refused before the CRC: their length is unknown).
    assert!(k(raw(0, &[49408, 0, 5, 4], &[])).contains("preset"));
    assert!(k(raw(d, &[49408, 0, 1, 0, 4], &[])).contains("delta map"));
    assert!(k(raw(d, &[49408, 0, 1, 1, 3, 4], &[])).contains("equal to the preset"));
    assert!(k(raw(d, &[49408, 0, 1, 0x80, 1, 4], &[])).starts_with("ReservedBitsSet"));
    // Field ranges.
    assert!(k(raw(d, &[49408, 0, 1, 1, 0, 4], &[])).contains("backend id"));
    assert!(k(raw(d, &[49408, 0, 1, 1, 70000, 4], &[])).contains("backend id"));
    assert!(k(raw(d, &[49408, 0, 1, 2], &[16, 32, 4])).contains("precision"));
    assert!(k(raw(d, &[49408, 0, 1, 2], &[24, 64, 4])).contains("word"));
    assert!(k(raw(0, &[0, 0, 1, 4], &[])).contains("num_symbols"));
    assert!(k(raw(0, &[49408, 49408, 1, 4], &[])).contains("start_token"));
    assert!(k(raw(0, &[49408, 0, 1, 0], &[])).contains("streams"));
    assert!(k(raw(0, &[49408, 0, 1, 1025], &[])).contains("streams"));
    assert!(k(raw(0, &[49408, 0, 1, 70000], &[])).contains("streams"));
    assert!(k(raw(d, &[49408, 0, 1, 4, u32::MAX, 4], &[])).contains("block_tokens"));
    assert!(k(raw(d, &[49408, 0, 1, 8, 1, 4], &[])).contains("window"));
    assert!(k(raw(d, &[49408, 0, 1, 16, 1024, 4], &[])).contains("keep"));
    assert!(k(raw(d, &[49408, 0, 1, 32], &[2, 4])).contains("window policy"));
    assert!(k(raw(d, &[49408, 0, 1, 64, 2000], &[])).starts_with("LimitExceeded"));
    // A non-canonical varint (num_symbols 5 in two bytes).
    let mut b = raw(0, &[], &[0x85, 0x00, 0, 1, 4]);
    assert!(k(b.clone()).contains("num_symbols"));
    // The single block's entry is checked like a group frame's.
    let s = DESC_SINGLE;
    assert!(k(raw(s, &[49408, 0, 1, 0, 1, 1], &[])).contains("original length"));
    assert!(k(raw(s, &[49408, 0, 1, 10, 5000, 1], &[])).contains("symbol count"));
    assert!(k(raw(s, &[49408, 0, 1, 10, 3, 8], &[])).contains("coded length"));
    assert!(k(raw(s, &[49408, 0, 1, 10, 3, u32::MAX], &[])).contains("coded length"));
    // And a valid one reads.
    b = raw(s, &[49408, 0, 1, 10, 3, 7], &[]);
    assert!(Header::read_from(&mut &b[..]).is_ok());
}

#[test]
fn writers_refuse_what_readers_would() {
    let mut sink = Vec::new();
    assert!(Header {
        version: 2,
        ..header()
    }
    .write_to(&mut sink)
    .is_err());
    assert!(Header {
        model: HashPrefix::of(&[1; 32], 32),
        ..header()
    }
    .write_to(&mut sink)
    .is_err());
    // A one-block header needs one stream and no block CRC.
    assert!(Header {
        single: Some(entry()),
        streams: 1,
        ..header()
    }
    .write_to(&mut sink)
    .is_err());
    assert!(write_group(&mut sink, &single_header(), &[entry()], &[&[0; 8]]).is_err());
    let no_crc = BlockEntry {
        crc32: None,
        ..entry()
    };
    assert!(write_group(&mut sink, &header(), &[no_crc], &[&[0; 8]]).is_err());
    assert!(write_end(&mut sink, &header(), &Checksum::Sha256([0; 32])).is_err());
    assert!(write_single_payload(&mut sink, &single_header(), &[0; 4]).is_err());
}

#[test]
fn huge_sizes_are_refused_before_allocating() {
    let h = header();
    let k = |b: Vec<u8>| {
        let mut r = &b[..];
        kind(Frames::new(&h).next_frame(&mut r))
    };
    let ok = entry();
    assert!(k(group_table_unchecked(&[], 60000)).starts_with("LimitExceeded"));
    assert!(k(group_table_unchecked(&[], u32::MAX)).starts_with("LimitExceeded"));
    let forged = |e: BlockEntry| group_table_unchecked(&[e], 1);
    assert!(k(forged(BlockEntry {
        original_len: u32::MAX,
        ..ok
    }))
    .starts_with("LimitExceeded"));
    assert!(k(forged(BlockEntry {
        symbol_count: 5000,
        ..ok
    }))
    .starts_with("LimitExceeded"));
    assert!(k(forged(BlockEntry {
        coded_len: u32::MAX - 3,
        ..ok
    }))
    .starts_with("LimitExceeded"));
    assert!(k(forged(BlockEntry {
        symbol_count: 11,
        ..ok
    }))
    .contains("symbol count"));
}

#[test]
fn tally_checks_version_2_totals_only() {
    let mut t = ArchiveTally::new();
    t.add_group(&[entry()]);
    let tr = |total_len, block_count| Trailer {
        total_len,
        block_count,
        checksum: Checksum::Sha256([0; 32]),
    };
    assert!(t.check(&tr(Some(11), Some(1))).is_err());
    assert!(t.check(&tr(Some(10), Some(2))).is_err());
    assert!(t.check(&tr(Some(10), Some(1))).is_ok());
    assert!(t.check(&tr(None, None)).is_ok());
}

/// Preset 1 is what the library writes by default, so a default archive's settings cost
/// one byte. If the defaults change, this fails: define preset 2 for the new defaults
/// (docs/FORMAT.md, "Settings presets") rather than change preset 1, whose meaning old
/// archives rely on.
#[test]
fn preset_1_is_the_library_default() {
    let o = crate::pipeline::CompressOptions::default();
    let p = &PRESET_1;
    assert_eq!(o.predictor.to_bytes(), p.predictor);
    assert_eq!(
        (o.block_tokens, o.window, o.keep, o.window_policy),
        (p.block_tokens, p.window, p.keep, p.window_policy)
    );
    assert_eq!(crate::engine::DEFAULT_BACKEND, p.backend);
    assert_eq!((coder::PRECISION, coder::WORD_BITS), (24, 32));
}

/// Presets 2, 3 and 4 are the library's defaults for large vocabularies (Gemma 3): the
/// active head, then with the continuous cache, then with the ASCII starting set and the
/// escape probe (`CompressOptions::for_model`). A header takes one
/// exactly when its predictor settings are that preset's, costs no more than preset 1's,
/// and the same settings as preset 1 plus a predictor delta (a second encoding) are refused.
#[test]
fn presets_2_3_and_4_are_the_large_vocabulary_defaults() {
    use crate::predict::{DEFAULT_ACTIVE_ASCII_LOG2, DEFAULT_CACHE_LOG2, DEFAULT_PROBE_RATE};
    for (cache_log2, ascii, probe, preset) in [
        (0, 0, 0, &PRESET_2),
        (DEFAULT_CACHE_LOG2, 0, 0, &PRESET_3),
        (
            DEFAULT_CACHE_LOG2,
            DEFAULT_ACTIVE_ASCII_LOG2,
            DEFAULT_PROBE_RATE,
            &PRESET_4,
        ),
    ] {
        let mut o = crate::pipeline::CompressOptions::default();
        o.predictor.active_log2 = 14;
        o.predictor.cache_log2 = cache_log2;
        o.predictor.active_ascii_log2 = ascii;
        o.predictor.probe_rate = probe;
        assert_eq!(o.predictor.to_bytes(), preset.predictor);
        let h = Header {
            predictor: preset.predictor.to_vec(),
            ..default_header()
        };
        let mut b = Vec::new();
        h.write_to(&mut b).unwrap();
        let mut p1 = Vec::new();
        default_header().write_to(&mut p1).unwrap();
        assert_eq!(b.len(), p1.len());
        let back = Header::read_from(&mut &b[..]).unwrap().unwrap();
        assert_eq!(back.predictor, preset.predictor);
        let with_delta = default_header_bytes_with_predictor(&h);
        assert!(with_delta.len() > b.len());
        let e = Header::read_from(&mut &with_delta[..]).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::InvalidField { .. }), "{e:?}");
    }
}

/// `h`'s version-3 bytes written against preset 1, its predictor as a delta.
fn default_header_bytes_with_predictor(h: &Header) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&MAGIC);
    b.push(VERSION as u8);
    b.push(DESC_DELTAS | h.checksum.id() << DESC_CHECKSUM_SHIFT);
    b.extend_from_slice(h.model.bytes());
    b.extend_from_slice(h.tokenizer.bytes());
    put_varint(&mut b, h.num_symbols);
    put_varint(&mut b, h.start_token);
    put_varint(&mut b, PRESET_DEFAULTS);
    put_varint(&mut b, DELTA_PREDICTOR);
    put_varint(&mut b, h.predictor.len() as u32);
    b.extend_from_slice(&h.predictor);
    put_varint(&mut b, h.streams as u32);
    let crc = crc16(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

// Version 2, read only: bytes laid out by the version-2 writer as it was.

fn v2_header() -> Header {
    Header {
        version: 2,
        model: HashPrefix::of(&[1; 32], 32),
        tokenizer: HashPrefix::of(&[2; 32], 32),
        checksum: ChecksumKind::Sha256,
        ..header()
    }
}

fn v2_bytes(h: &Header) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&((HEADER_FIXED_LEN_V2 + h.predictor.len() + 4) as u16).to_le_bytes());
    b.extend_from_slice(h.model.bytes());
    b.extend_from_slice(h.tokenizer.bytes());
    b.extend_from_slice(&h.backend.to_le_bytes());
    b.push(coder::PRECISION as u8);
    b.push(coder::WORD_BITS as u8);
    b.extend_from_slice(&h.num_symbols.to_le_bytes());
    b.extend_from_slice(&h.block_tokens.to_le_bytes());
    b.extend_from_slice(&h.streams.to_le_bytes());
    b.push(h.window_policy);
    b.extend_from_slice(&h.start_token.to_le_bytes());
    b.extend_from_slice(&h.window.to_le_bytes());
    b.extend_from_slice(&h.keep.to_le_bytes());
    b.extend_from_slice(&(h.predictor.len() as u16).to_le_bytes());
    b.extend_from_slice(&h.predictor);
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn v2_group(entries: &[BlockEntry], n: u16) -> Vec<u8> {
    let mut b = vec![TAG_GROUP];
    b.extend_from_slice(&n.to_le_bytes());
    for e in entries {
        for x in [
            e.original_len,
            e.symbol_count,
            e.coded_len,
            e.crc32.unwrap_or(0),
        ] {
            b.extend_from_slice(&x.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn v2_sample() -> Vec<u8> {
    let mut v = v2_bytes(&v2_header());
    v.extend_from_slice(&v2_group(&[entry()], 1));
    v.extend_from_slice(&[9u8; 8]);
    let mut e = vec![TAG_END];
    e.extend_from_slice(&10u64.to_le_bytes());
    e.extend_from_slice(&1u64.to_le_bytes());
    e.extend_from_slice(&[3; 32]);
    let crc = crc32fast::hash(&e);
    e.extend_from_slice(&crc.to_le_bytes());
    v.extend_from_slice(&e);
    v
}

#[test]
fn version_2_reads() {
    let v = v2_sample();
    let mut r = &v[..];
    let h = Header::read_from(&mut r).unwrap().unwrap();
    assert_eq!(h, v2_header());
    assert_eq!(h.encoded_len(), v.len() - r.len());
    let t = read_all(&v).unwrap();
    assert_eq!(t.checksum, Checksum::Sha256([3; 32]));
    assert_eq!((t.total_len, t.block_count), (Some(10), Some(1)));
    for cut in 1..v.len() {
        let k = kind(read_all(&v[..cut]));
        assert!(k.starts_with("Truncated"), "cut {cut}: {k}");
    }
}

#[test]
fn version_2_named_errors() {
    let v = v2_sample();
    let with = |at: usize, val: u8| {
        let mut b = v.clone();
        b[at] = val;
        b
    };
    assert!(kind(read_all(&with(4, 1))).starts_with("UnsupportedVersion"));
    assert!(kind(read_all(&with(12, 0))).starts_with("ChecksumMismatch"));
    let hl = v2_header().encoded_len();
    assert!(kind(read_all(&with(hl, b'X'))).contains("frame tag"));
    assert!(kind(read_all(&with(hl + 5, 0xFF))).starts_with("ChecksumMismatch"));
    let last = v.len() - 1;
    assert!(kind(read_all(&with(last, v[last] ^ 1))).starts_with("ChecksumMismatch"));
    // Totals that disagree with the groups.
    let mut e = v.clone();
    let at = v.len() - 53 + 1;
    e[at] = 11;
    let crc = crc32fast::hash(&e[v.len() - 53..v.len() - 4]);
    e[last - 3..].copy_from_slice(&crc.to_le_bytes());
    assert!(kind(read_all(&e)).starts_with("LengthMismatch"));
}

/// Rewrites a version-2 header field and fixes its CRC, to reach the checks behind it.
fn v2_forged(at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut v = v2_sample();
    v[at..at + bytes.len()].copy_from_slice(bytes);
    let crc_at = HEADER_FIXED_LEN_V2 + 2;
    let crc = crc32fast::hash(&v[..crc_at]);
    v[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    v
}

#[test]
fn version_2_field_checks_behind_a_valid_crc() {
    let k = |b: Vec<u8>| kind(read_all(&b));
    assert!(k(v2_forged(6, &[1, 0])).starts_with("ReservedBitsSet"));
    assert!(k(v2_forged(76, &[16])).contains("precision"));
    assert!(k(v2_forged(77, &[64])).contains("word"));
    assert!(k(v2_forged(74, &[0, 0])).contains("backend"));
    assert!(k(v2_forged(78, &0u32.to_le_bytes())).contains("num_symbols"));
    assert!(k(v2_forged(82, &u32::MAX.to_le_bytes())).contains("block_tokens"));
    assert!(k(v2_forged(86, &0u16.to_le_bytes())).contains("streams"));
    assert!(k(v2_forged(88, &[2])).contains("window"));
    assert!(k(v2_forged(89, &u32::MAX.to_le_bytes())).contains("start_token"));
    assert!(k(v2_forged(93, &1u32.to_le_bytes())).contains("window"));
    assert!(k(v2_forged(97, &1024u32.to_le_bytes())).contains("keep"));
    assert!(k(v2_forged(8, &9u16.to_le_bytes())).contains("header_len"));
    assert!(k(v2_forged(101, &4000u16.to_le_bytes())).starts_with("LimitExceeded"));
}

#[test]
fn version_2_huge_sizes_are_refused_before_allocating() {
    let h = v2_header();
    let k = |b: Vec<u8>| kind(Frames::new(&h).next_frame(&mut &b[..]));
    assert!(k(v2_group(&[], 60000)).starts_with("LimitExceeded"));
    assert!(k(v2_group(
        &[BlockEntry {
            coded_len: u32::MAX - 3,
            ..entry()
        }],
        1
    ))
    .starts_with("LimitExceeded"));
}

/// A region section: text, binary, text, binary (two text regions).
fn section() -> RegionSection {
    RegionSection {
        lens: vec![100, 70_000, 50, 80_000],
        crlf: Vec::new(),
        parts: vec![ClassicPart {
            len: 150_000,
            dict_log2: 18,
            coded_len: 900,
        }],
        crc32: 0x1234_5678,
    }
}

/// The same regions with the classical stream in two parts (method 2).
fn two_parts() -> RegionSection {
    let part = |len, coded_len| ClassicPart {
        len,
        dict_log2: 17,
        coded_len,
    };
    RegionSection {
        parts: vec![part(70_000, 500), part(80_000, 400)],
        ..section()
    }
}

fn section_bytes(s: &RegionSection) -> Vec<u8> {
    let mut b = Vec::new();
    s.write_to(&mut b).unwrap();
    b
}

/// Region sections with one part (method 1), several (method 2) and the per-region CRLF
/// flags read back to themselves; method 1's bytes are the layout it always had.
#[test]
fn region_sections_round_trip() {
    let one = section();
    let b = section_bytes(&one);
    // n, four lengths, method, dict, coded_len, crc32, crc16.
    assert_eq!(b.len(), 1 + 1 + 3 + 1 + 3 + 1 + 1 + 2 + 4 + 2);
    assert_eq!(b[9], crate::classic::METHOD_LZMA2);
    assert_eq!(
        RegionSection::read_from(&mut &b[..], Transform::None).unwrap(),
        one
    );
    let mut two = two_parts();
    two.crlf = vec![true, false];
    let b = section_bytes(&two);
    assert_eq!(b[9], 1, "the flags byte follows the lengths");
    assert_eq!(b[10], METHOD_LZMA2_PARTS);
    let back = RegionSection::read_from(&mut &b[..], Transform::CrlfPerRegion).unwrap();
    assert_eq!(back, two);
    assert_eq!((back.coded_len(), back.dict_log2()), (900, 17));
    // Read with another transform, the flags byte is taken for the method: refused.
    assert!(RegionSection::read_from(&mut &b[..], Transform::None).is_err());
}

/// What a reader refuses behind a valid CRC, and what a writer refuses to write.
#[test]
fn region_section_field_checks() {
    let k = |b: &[u8], t| kind(RegionSection::read_from(&mut &b[..], t));
    let forge = |b: &mut Vec<u8>| {
        let at = b.len() - 2;
        let crc = crc16(&b[..at]);
        b[at..].copy_from_slice(&crc.to_le_bytes());
    };
    let mut s = section();
    s.crlf = vec![false, true];
    let good = section_bytes(&s);
    // Flags: a reserved bit (a third text region that does not exist), none set.
    let mut b = good.clone();
    b[9] = 0b110;
    forge(&mut b);
    assert!(k(&b, Transform::CrlfPerRegion).starts_with("ReservedBitsSet"));
    b[9] = 0;
    forge(&mut b);
    assert!(k(&b, Transform::CrlfPerRegion).contains("CRLF region flags"));
    // Method: unknown.
    let mut b = section_bytes(&section());
    b[9] = 3;
    forge(&mut b);
    assert!(k(&b, Transform::None).contains("classical method"));
    // Parts: lengths that do not add up, a count of 1 under method 2, over the limit.
    let two = two_parts();
    let mut bad = two.clone();
    bad.parts[1].len += 1;
    assert!(bad.write_to(&mut Vec::new()).is_err());
    let mut b = section_bytes(&two);
    // n, lengths (1 + 1 + 3 + 1 + 3), method, count, then the first part's length.
    assert_eq!(b[10], 2);
    let at = b.len() - 2 - 4 - (3 + 1 + 2);
    b[at] ^= 1;
    forge(&mut b);
    assert!(k(&b, Transform::None).contains("classical part length"));
    let mut b = section_bytes(&two);
    b[10] = 1;
    let one_part: Vec<u8> = b[..b.len() - 6 - 6]
        .iter()
        .chain(&b[b.len() - 6..])
        .copied()
        .collect();
    let mut b = one_part;
    forge(&mut b);
    assert!(k(&b, Transform::None).contains("part"));
    let mut b = section_bytes(&two);
    b[10] = 0x81;
    b.insert(11, 0x02);
    forge(&mut b);
    assert!(k(&b, Transform::None).starts_with("LimitExceeded"));
    // A marked empty first region is refused by the writer.
    let mut s = section();
    s.lens[0] = 0;
    s.crlf = vec![true, false];
    assert!(s.write_to(&mut Vec::new()).is_err());
}
