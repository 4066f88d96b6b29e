//! The container: header, group frames, end frame; parsing with every size bounded first.
//!
//! Byte-by-byte specification: docs/FORMAT.md. This build writes version 3 and reads
//! versions 2 and 3. Version 3 spends bytes only where they carry information, as zstd's
//! frames do: a short model identity, varints, the settings as a preset plus the fields
//! that differ from it, one 32-bit content checksum, and no frames at all in a one-block
//! archive (its header describes the block). This module has no model dependency (of the
//! coder it reads only the parameters it records), so it can be fuzzed and tested alone.

use crate::coder;
use crate::transform::Transform;
use crate::{Error, ErrorKind, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

/// Magic number: 0xB5 can start neither ASCII nor UTF-8, then "lmz".
pub const MAGIC: [u8; 4] = [0xB5, 0x6C, 0x6D, 0x7A];
/// Format version this build writes.
pub const VERSION: u16 = 3;
/// The format version of an archive with binary regions: version 3 with a region section
/// after the header (docs/FORMAT.md, "Regions"). The newest version this build reads. An
/// archive without binary regions is written as version 3, so older readers still read it.
pub const VERSION_REGIONS: u16 = 4;
/// Oldest format version this build reads.
pub const OLDEST_VERSION: u16 = 2;
/// Version 2: fixed part of the header before the predictor settings.
pub const HEADER_FIXED_LEN_V2: usize = 103;
/// Largest header (no valid version-3 header comes near it; version 2's is at most 1131).
pub const MAX_HEADER_LEN: usize = 4096;
/// Largest predictor settings blob.
pub const MAX_PREDICTOR_LEN: usize = 1024;
/// Largest alphabet.
pub const MAX_SYMBOLS: u32 = 1 << 20;
/// Largest block, in symbols.
pub const MAX_BLOCK_TOKENS: u32 = 1 << 20;
/// Largest context window, in positions.
pub const MAX_WINDOW: u32 = 1 << 15;
/// Most blocks in one group.
pub const MAX_STREAMS: u16 = 1024;
/// Largest original block, in bytes.
pub const MAX_BLOCK_BYTES: u32 = 1 << 24;
/// Largest group frame table: tag, count and 1024 entries of three 5-byte varints and a
/// CRC-32, then the CRC-16 (version 2's is 16,391 bytes).
const MAX_TABLE_LEN: usize = 1 + 5 + 1024 * 19 + 2;
/// Group frame tag.
pub const TAG_GROUP: u8 = 0x47;
/// End frame tag.
pub const TAG_END: u8 = 0x45;
/// Bytes of the model's SHA-256 a version-3 header records.
pub const MODEL_ID_LEN: usize = 6;
/// Bytes of the tokenizer identity a version-3 header records.
pub const TOKENIZER_ID_LEN: usize = 2;

/// Window policy 0: a full window is rebuilt by re-running the start token and the last
/// `keep − 1` symbols from position 0.
pub const WINDOW_REPREFILL: u8 = 0;
/// Window policy 1: a full window keeps its start token and newest `keep − 1` entries as
/// computed, with contiguous positions (see `KvCache::slide`); nothing is re-run.
pub const WINDOW_SHIFT: u8 = 1;

/// Version 3 descriptor bit: the archive is one block, described by the header; no frames
/// follow, only its payload and the content checksum.
pub const DESC_SINGLE: u8 = 0x01;
/// Version 3 descriptor bit: a settings delta map follows the preset id.
pub const DESC_DELTAS: u8 = 0x02;
/// Version 3 descriptor bits 2–3: the content checksum kind.
const DESC_CHECKSUM_SHIFT: u32 = 2;
/// Version 3 descriptor bits 4–5: the transform id.
const DESC_TRANSFORM_SHIFT: u32 = 4;
/// Version 3 descriptor bits that must be 0.
pub const DESC_RESERVED: u8 = 0xC0;

/// Delta map bits (version 3): which settings differ from the preset, in the order their
/// values follow.
pub const DELTA_BACKEND: u32 = 1 << 0;
pub const DELTA_CODER: u32 = 1 << 1;
pub const DELTA_BLOCK_TOKENS: u32 = 1 << 2;
pub const DELTA_WINDOW: u32 = 1 << 3;
pub const DELTA_KEEP: u32 = 1 << 4;
pub const DELTA_WINDOW_POLICY: u32 = 1 << 5;
pub const DELTA_PREDICTOR: u32 = 1 << 6;
/// The delta map bits version 3 defines; the others must be 0.
const DELTA_KNOWN: u32 = (1 << 7) - 1;

/// What a settings preset stands for: the value of every setting not given as a delta.
#[derive(Debug)]
pub struct Preset {
    pub backend: u16,
    pub precision: u8,
    pub word_bits: u8,
    pub block_tokens: u32,
    pub window: u32,
    pub keep: u32,
    pub window_policy: u8,
    pub predictor: &'static [u8],
}

/// Id of preset 1, lmzip's defaults when version 3 was defined.
pub const PRESET_DEFAULTS: u32 = 1;

/// Preset 1: lmzip's defaults when version 3 was defined. Its meaning never changes: new
/// defaults get a new preset id, so that old archives keep theirs.
pub const PRESET_1: Preset = Preset {
    backend: 3,
    precision: 24,
    word_bits: 32,
    block_tokens: 4096,
    window: 1024,
    keep: 896,
    window_policy: WINDOW_SHIFT,
    // Predictor settings version 2: flags 0x7f, n-gram order 4 with 2^18 buckets, match
    // length 3 with 2^20 entries, rates 2048, 1311, 1311 (little-endian u16).
    predictor: &[2, 0x7f, 4, 18, 3, 20, 0x00, 0x08, 0x1f, 0x05, 0x1f, 0x05],
};

/// Id of preset 2: preset 1 with the active head on (Gemma 3's defaults).
pub const PRESET_ACTIVE_HEAD: u32 = 2;

/// Preset 2: preset 1 but for the predictor settings, which are version 3 with the active
/// head at K = 14, the default for models with large vocabularies. It saves a Gemma
/// archive the 16 bytes of a predictor delta. A header uses it exactly when its predictor
/// settings are these (and then has no predictor delta), so each header keeps one encoding.
pub const PRESET_2: Preset = Preset {
    predictor: &[
        3, 0x7f, 4, 18, 3, 20, 0x00, 0x08, 0x1f, 0x05, 0x1f, 0x05, 14, 0,
    ],
    ..PRESET_1
};

/// Id of preset 3: preset 2 with the continuous cache on (Gemma 3's defaults since the
/// cache). An id added within the field, as predictor settings versions are: a reader
/// that predates it refuses it by name (*invalid field*, settings preset), as it would
/// refuse the settings version it stands for.
pub const PRESET_CACHE: u32 = 3;

/// Preset 3: preset 1 but for the predictor settings, which are version 4: the active head
/// at K = 14 and the continuous cache of 2^14 keys with sharpness 30.
pub const PRESET_3: Preset = Preset {
    predictor: &[
        4, 0x7f, 4, 18, 3, 20, 0x00, 0x08, 0x1f, 0x05, 0x1f, 0x05, 14, 0, 14, 30,
    ],
    ..PRESET_1
};

/// Id of preset 4: preset 3 with the ASCII starting set and the escape probe (Gemma 3's
/// defaults since them). Added within the field, as preset 3 was.
pub const PRESET_PROBE: u32 = 4;

/// Preset 4: preset 1 but for the predictor settings, which are version 5: preset 3's,
/// then the ASCII starting set at K = 15 and the escape probe at rate 22/64.
pub const PRESET_4: Preset = Preset {
    predictor: &[
        5, 0x7f, 4, 18, 3, 20, 0x00, 0x08, 0x1f, 0x05, 0x1f, 0x05, 14, 0, 14, 30, 15, 22,
    ],
    ..PRESET_1
};

fn preset(id: u32) -> Option<&'static Preset> {
    match id {
        PRESET_DEFAULTS => Some(&PRESET_1),
        PRESET_ACTIVE_HEAD => Some(&PRESET_2),
        PRESET_CACHE => Some(&PRESET_3),
        PRESET_PROBE => Some(&PRESET_4),
        _ => None,
    }
}

/// The preset a header is written with: 2, 3 or 4 exactly when its predictor settings are
/// that preset's, else 1.
fn preset_for(predictor: &[u8]) -> (u32, &'static Preset) {
    if predictor == PRESET_2.predictor {
        (PRESET_ACTIVE_HEAD, &PRESET_2)
    } else if predictor == PRESET_3.predictor {
        (PRESET_CACHE, &PRESET_3)
    } else if predictor == PRESET_4.predictor {
        (PRESET_PROBE, &PRESET_4)
    } else {
        (PRESET_DEFAULTS, &PRESET_1)
    }
}

/// The CRC-16 of headers and group frame tables (version 3): CRC-16/IBM-SDLC, also known
/// as X-25 (polynomial 0x1021 reflected, initial and final XOR 0xFFFF; "123456789" gives
/// 0x906E), the 16-bit member of the HDLC family whose CRC-32 checks blocks.
pub fn crc16(bytes: &[u8]) -> u16 {
    const X25: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_SDLC);
    X25.checksum(bytes)
}

/// The leading bytes of a SHA-256 that an archive records: all 32 in version 2; in version
/// 3 the first [`MODEL_ID_LEN`] of the model identity and [`TOKENIZER_ID_LEN`] of the
/// tokenizer identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashPrefix {
    bytes: [u8; 32],
    len: u8,
}

impl HashPrefix {
    /// The first `len` bytes of `full` (1 ..= 32).
    pub fn of(full: &[u8; 32], len: usize) -> Self {
        let len = len.clamp(1, 32);
        let mut bytes = [0u8; 32];
        bytes[..len].copy_from_slice(&full[..len]);
        HashPrefix {
            bytes,
            len: len as u8,
        }
    }

    fn from_slice(b: &[u8]) -> Self {
        let mut bytes = [0u8; 32];
        let len = b.len().min(32);
        bytes[..len].copy_from_slice(&b[..len]);
        HashPrefix {
            bytes,
            len: len as u8,
        }
    }

    /// The recorded bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Whether `full` starts with the recorded bytes.
    pub fn matches(&self, full: &[u8; 32]) -> bool {
        full.starts_with(self.bytes())
    }
}

/// Which checksum covers an archive's whole original content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChecksumKind {
    /// The low 32 bits of XXH64 with seed 0 (zstd's content checksum): 4 bytes. Detects a
    /// corrupted archive with probability 1 − 2^−32, as gzip's CRC-32 does.
    #[default]
    Xxh64,
    /// SHA-256: 32 bytes (version 2 always).
    Sha256,
}

impl ChecksumKind {
    fn id(self) -> u8 {
        match self {
            ChecksumKind::Xxh64 => 0,
            ChecksumKind::Sha256 => 1,
        }
    }

    fn from_id(id: u8) -> Option<Self> {
        match id {
            0 => Some(ChecksumKind::Xxh64),
            1 => Some(ChecksumKind::Sha256),
            _ => None,
        }
    }

    /// Bytes the checksum takes in the archive.
    pub fn byte_len(self) -> usize {
        match self {
            ChecksumKind::Xxh64 => 4,
            ChecksumKind::Sha256 => 32,
        }
    }

    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumKind::Xxh64 => "xxh64",
            ChecksumKind::Sha256 => "sha256",
        }
    }
}

/// A content checksum as an archive stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// The low 32 bits of XXH64 (seed 0).
    Xxh64(u32),
    Sha256([u8; 32]),
}

impl Checksum {
    /// The checksum of `data`.
    pub fn of(kind: ChecksumKind, data: &[u8]) -> Self {
        let mut h = ContentHasher::new(kind);
        h.update(data);
        h.finish()
    }

    pub fn kind(&self) -> ChecksumKind {
        match self {
            Checksum::Xxh64(_) => ChecksumKind::Xxh64,
            Checksum::Sha256(_) => ChecksumKind::Sha256,
        }
    }

    /// The bytes as stored (XXH64's low 32 bits little-endian).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Checksum::Xxh64(v) => v.to_le_bytes().to_vec(),
            Checksum::Sha256(d) => d.to_vec(),
        }
    }

    fn from_bytes(kind: ChecksumKind, b: &[u8]) -> Self {
        match kind {
            ChecksumKind::Xxh64 => Checksum::Xxh64(u32_at(b, 0)),
            ChecksumKind::Sha256 => Checksum::Sha256(arr32(b, 0)),
        }
    }
}

/// Computes a content checksum piece by piece.
pub struct ContentHasher(Hasher);

enum Hasher {
    Xxh64(Box<xxhash_rust::xxh64::Xxh64>),
    Sha256(Sha256),
}

impl ContentHasher {
    pub fn new(kind: ChecksumKind) -> Self {
        ContentHasher(match kind {
            ChecksumKind::Xxh64 => Hasher::Xxh64(Box::new(xxhash_rust::xxh64::Xxh64::new(0))),
            ChecksumKind::Sha256 => Hasher::Sha256(Sha256::new()),
        })
    }

    pub fn update(&mut self, data: &[u8]) {
        match &mut self.0 {
            Hasher::Xxh64(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Checksum {
        match self.0 {
            // The low 32 bits, as zstd keeps them.
            Hasher::Xxh64(h) => Checksum::Xxh64(h.digest() as u32),
            Hasher::Sha256(h) => Checksum::Sha256(h.finalize().into()),
        }
    }
}

/// Everything decoding depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Format version: 3, or 4 when a region section follows the header; 2 when read
    /// from one.
    pub version: u16,
    /// The model identity (docs/FORMAT.md, "Model identity"), or its first bytes.
    pub model: HashPrefix,
    /// The tokenizer identity, or its first bytes.
    pub tokenizer: HashPrefix,
    pub backend: u16,
    pub num_symbols: u32,
    pub block_tokens: u32,
    pub streams: u16,
    pub window_policy: u8,
    pub start_token: u32,
    /// Context window: most positions (start token included) in a stream's cache.
    pub window: u32,
    /// Positions kept when the window slides (start token included).
    pub keep: u32,
    pub predictor: Vec<u8>,
    /// The transform applied to the input before tokenizing (version 2: none).
    pub transform: Transform,
    /// The content checksum's kind (version 2: SHA-256).
    pub checksum: ChecksumKind,
    /// Version 3: the archive's only block when it has exactly one (no frames follow; its
    /// entry has no CRC-32, the content checksum covers it).
    pub single: Option<BlockEntry>,
}

/// One block's entry in a group frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockEntry {
    /// Bytes of the block as coded (after the header's transform).
    pub original_len: u32,
    pub symbol_count: u32,
    pub coded_len: u32,
    /// CRC-32 of the block's bytes as coded; absent for a one-block version-3 archive's
    /// block, which the content checksum covers.
    pub crc32: Option<u32>,
}

/// The end of an archive: its content checksum and, in version 2, the totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailer {
    /// Version 2: the sum of original_len and the number of blocks, checked against the
    /// group frames read.
    pub total_len: Option<u64>,
    pub block_count: Option<u64>,
    pub checksum: Checksum,
}

/// A frame after the header.
#[derive(Debug)]
pub enum Frame {
    Group {
        entries: Vec<BlockEntry>,
        payloads: Vec<Vec<u8>>,
    },
    End(Trailer),
}

fn invalid(field: &'static str, value: u64) -> Error {
    Error::new(ErrorKind::InvalidField { field, value })
}

fn limit(field: &'static str, value: u64, limit: u64) -> Error {
    Error::new(ErrorKind::LimitExceeded {
        field,
        value,
        limit,
    })
}

/// Reads exactly `buf.len()` bytes; a short read is `Truncated { what }`.
fn read_exact_or<R: Read>(r: &mut R, buf: &mut [u8], what: &'static str) -> Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => return Err(Error::truncated(what)),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
fn arr32(b: &[u8], at: usize) -> [u8; 32] {
    let mut a = [0u8; 32];
    a.copy_from_slice(&b[at..at + 32]);
    a
}

/// Appends `v` as an unsigned LEB128 varint: 7 bits per byte, low first, high bit set on
/// every byte but the last.
pub fn put_varint(b: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        b.push(v as u8 | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

/// Reads a structure piece by piece and keeps its bytes, for its CRC; never more than
/// `cap` bytes, never more than the input supplies.
struct Tape<'r, R> {
    r: &'r mut R,
    buf: Vec<u8>,
    what: &'static str,
    cap: usize,
}

impl<'r, R: Read> Tape<'r, R> {
    fn new(r: &'r mut R, what: &'static str, cap: usize, start: &[u8]) -> Self {
        Tape {
            r,
            buf: start.to_vec(),
            what,
            cap,
        }
    }

    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let at = self.buf.len();
        if at + n > self.cap {
            return Err(limit(self.what, (at + n) as u64, self.cap as u64));
        }
        self.buf.resize(at + n, 0);
        read_exact_or(self.r, &mut self.buf[at..], self.what)?;
        Ok(&self.buf[at..])
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// A varint of at most 5 bytes and 32 bits, in its one shortest form (no trailing zero
    /// group), so that every value has exactly one encoding.
    fn varint(&mut self, field: &'static str) -> Result<u32> {
        let mut v = 0u64;
        for i in 0..5 {
            let b = self.u8()?;
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                if (i > 0 && b == 0) || v > u32::MAX as u64 {
                    return Err(invalid(field, v));
                }
                return Ok(v as u32);
            }
        }
        Err(invalid(field, v))
    }
}

/// The settings a version-3 header gives as deltas, before they are checked.
#[derive(Default)]
struct Deltas {
    map: u32,
    backend: Option<u32>,
    coder: Option<(u8, u8)>,
    block_tokens: Option<u32>,
    window: Option<u32>,
    keep: Option<u32>,
    window_policy: Option<u8>,
    predictor: Option<Vec<u8>>,
}

/// A delta's value, or the preset's. A delta equal to the preset's value is refused (the
/// writer never writes one), so that every header has exactly one encoding.
fn pick<T: PartialEq>(
    delta: Option<T>,
    preset: T,
    field: &'static str,
    shown: impl Fn(&T) -> u64,
) -> Result<T> {
    match delta {
        Some(v) if v == preset => Err(invalid(field, shown(&v))),
        Some(v) => Ok(v),
        None => Ok(preset),
    }
}

impl Header {
    /// Length of the encoded header.
    pub fn encoded_len(&self) -> usize {
        if self.version == 2 {
            HEADER_FIXED_LEN_V2 + self.predictor.len() + 4
        } else {
            self.v3_bytes().len()
        }
    }

    /// Checks every field's range (shared by reader and writer).
    fn validate(&self) -> Result<()> {
        if self.backend == 0 {
            return Err(invalid("backend id", 0));
        }
        if self.num_symbols < 2 || self.num_symbols > MAX_SYMBOLS {
            return Err(invalid("num_symbols", self.num_symbols as u64));
        }
        if self.block_tokens == 0 || self.block_tokens > MAX_BLOCK_TOKENS {
            return Err(invalid("block_tokens", self.block_tokens as u64));
        }
        if self.streams == 0 || self.streams > MAX_STREAMS {
            return Err(invalid("streams", self.streams as u64));
        }
        if self.window_policy > WINDOW_SHIFT {
            return Err(invalid("window policy", self.window_policy as u64));
        }
        if self.window < 2 || self.window > MAX_WINDOW {
            return Err(invalid("window", self.window as u64));
        }
        if self.keep < 1 || self.keep >= self.window {
            return Err(invalid("keep", self.keep as u64));
        }
        if self.start_token >= self.num_symbols {
            return Err(invalid("start_token", self.start_token as u64));
        }
        if self.predictor.len() > MAX_PREDICTOR_LEN {
            return Err(limit(
                "predictor settings length",
                self.predictor.len() as u64,
                MAX_PREDICTOR_LEN as u64,
            ));
        }
        let ids = match self.version {
            2 => (32, 32),
            _ => (MODEL_ID_LEN, TOKENIZER_ID_LEN),
        };
        if self.model.bytes().len() != ids.0 {
            return Err(invalid("model identity length", self.model.len as u64));
        }
        if self.tokenizer.bytes().len() != ids.1 {
            return Err(invalid(
                "tokenizer identity length",
                self.tokenizer.len as u64,
            ));
        }
        if let Some(e) = &self.single {
            if self.streams != 1 || e.crc32.is_some() {
                return Err(invalid("single block streams", self.streams as u64));
            }
            check_entry(self, e)?;
        }
        let v2_fields = self.transform == Transform::None
            && self.checksum == ChecksumKind::Sha256
            && self.single.is_none();
        if self.version == 2 && !v2_fields {
            return Err(invalid("version 2 field", 2));
        }
        // The per-region transform's flags live in the region section.
        if self.transform == Transform::CrlfPerRegion && self.version != VERSION_REGIONS {
            return Err(invalid("transform", self.transform.id() as u64));
        }
        Ok(())
    }

    /// Writes the header (version 3); an invalid header is never written.
    pub fn write_to<W: Write>(&self, w: &mut W) -> Result<()> {
        if self.version != VERSION && self.version != VERSION_REGIONS {
            return Err(invalid("format version to write", self.version as u64));
        }
        self.validate()?;
        w.write_all(&self.v3_bytes())?;
        Ok(())
    }

    /// The version-3 encoding (docs/FORMAT.md, "Header"): the settings that differ from
    /// the preset (2 with the active head's default predictor, else 1) are written as
    /// deltas, everything else takes no bytes.
    fn v3_bytes(&self) -> Vec<u8> {
        let (preset_id, p) = preset_for(&self.predictor);
        let coder = (coder::PRECISION as u8, coder::WORD_BITS as u8);
        let mut map = 0;
        for (differs, bit) in [
            (self.backend != p.backend, DELTA_BACKEND),
            (coder != (p.precision, p.word_bits), DELTA_CODER),
            (self.block_tokens != p.block_tokens, DELTA_BLOCK_TOKENS),
            (self.window != p.window, DELTA_WINDOW),
            (self.keep != p.keep, DELTA_KEEP),
            (self.window_policy != p.window_policy, DELTA_WINDOW_POLICY),
            (self.predictor != p.predictor, DELTA_PREDICTOR),
        ] {
            if differs {
                map |= bit;
            }
        }
        let mut desc =
            self.checksum.id() << DESC_CHECKSUM_SHIFT | self.transform.id() << DESC_TRANSFORM_SHIFT;
        if self.single.is_some() {
            desc |= DESC_SINGLE;
        }
        if map != 0 {
            desc |= DESC_DELTAS;
        }
        let mut b = Vec::with_capacity(48 + self.predictor.len());
        b.extend_from_slice(&MAGIC);
        b.push(self.version as u8);
        b.push(desc);
        b.extend_from_slice(self.model.bytes());
        b.extend_from_slice(self.tokenizer.bytes());
        put_varint(&mut b, self.num_symbols);
        put_varint(&mut b, self.start_token);
        put_varint(&mut b, preset_id);
        if map != 0 {
            put_varint(&mut b, map);
            if map & DELTA_BACKEND != 0 {
                put_varint(&mut b, self.backend as u32);
            }
            if map & DELTA_CODER != 0 {
                b.extend_from_slice(&[coder.0, coder.1]);
            }
            if map & DELTA_BLOCK_TOKENS != 0 {
                put_varint(&mut b, self.block_tokens);
            }
            if map & DELTA_WINDOW != 0 {
                put_varint(&mut b, self.window);
            }
            if map & DELTA_KEEP != 0 {
                put_varint(&mut b, self.keep);
            }
            if map & DELTA_WINDOW_POLICY != 0 {
                b.push(self.window_policy);
            }
            if map & DELTA_PREDICTOR != 0 {
                put_varint(&mut b, self.predictor.len() as u32);
                b.extend_from_slice(&self.predictor);
            }
        }
        match &self.single {
            Some(e) => {
                put_varint(&mut b, e.original_len);
                put_varint(&mut b, e.symbol_count);
                put_varint(&mut b, e.coded_len / 4);
            }
            None => put_varint(&mut b, self.streams as u32),
        }
        let crc = crc16(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads a header of version 2 or 3. `Ok(None)` on a clean end of input before its
    /// first byte (the end of a concatenation of archives).
    pub fn read_from<R: Read>(r: &mut R) -> Result<Option<Header>> {
        let mut first = [0u8; 1];
        loop {
            match r.read(&mut first) {
                Ok(0) => return Ok(None),
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut b = [0u8; 5];
        b[0] = first[0];
        // Check the magic as soon as it is complete, so plain text gets "not an archive"
        // rather than "truncated".
        read_exact_or(r, &mut b[1..4], "header")?;
        if b[..4] != MAGIC {
            return Err(Error::new(ErrorKind::BadMagic {
                found: [b[0], b[1], b[2], b[3]],
            }));
        }
        read_exact_or(r, &mut b[4..5], "header")?;
        let unsupported = |found| {
            Error::new(ErrorKind::UnsupportedVersion {
                found,
                supported: VERSION_REGIONS,
            })
        };
        match b[4] {
            3 | 4 => Self::read_v3(r, &b).map(Some),
            // Version 2's version field is a u16: its second byte must be 0.
            2 => {
                let mut hi = [0u8; 1];
                read_exact_or(r, &mut hi, "header")?;
                if hi[0] != 0 {
                    return Err(unsupported(u16::from_le_bytes([2, hi[0]])));
                }
                Self::read_v2(r, &b).map(Some)
            }
            v => Err(unsupported(v as u16)),
        }
    }

    /// Version 3 or 4 (the same header), after its magic and version byte (`start`). Only what is needed to find
    /// the CRC is read before it is checked: the descriptor's layout bits, the delta map
    /// and the varints' lengths. Everything is interpreted after.
    fn read_v3<R: Read>(r: &mut R, start: &[u8]) -> Result<Header> {
        let mut t = Tape::new(r, "header", MAX_HEADER_LEN, start);
        let desc = t.u8()?;
        let model = HashPrefix::from_slice(t.take(MODEL_ID_LEN)?);
        let tokenizer = HashPrefix::from_slice(t.take(TOKENIZER_ID_LEN)?);
        let num_symbols = t.varint("num_symbols")?;
        let start_token = t.varint("start_token")?;
        let preset_id = t.varint("settings preset")?;
        let mut d = Deltas::default();
        if desc & DESC_DELTAS != 0 {
            d.map = t.varint("settings delta map")?;
            // Fields this version does not define have no known length: the CRC cannot
            // be found behind them.
            if d.map & !DELTA_KNOWN != 0 {
                return Err(Error::new(ErrorKind::ReservedBitsSet {
                    field: "settings delta map",
                    value: d.map as u64,
                }));
            }
            if d.map & DELTA_BACKEND != 0 {
                d.backend = Some(t.varint("backend id")?);
            }
            if d.map & DELTA_CODER != 0 {
                d.coder = Some((t.u8()?, t.u8()?));
            }
            if d.map & DELTA_BLOCK_TOKENS != 0 {
                d.block_tokens = Some(t.varint("block_tokens")?);
            }
            if d.map & DELTA_WINDOW != 0 {
                d.window = Some(t.varint("window")?);
            }
            if d.map & DELTA_KEEP != 0 {
                d.keep = Some(t.varint("keep")?);
            }
            if d.map & DELTA_WINDOW_POLICY != 0 {
                d.window_policy = Some(t.u8()?);
            }
            if d.map & DELTA_PREDICTOR != 0 {
                let p = t.varint("predictor settings length")? as usize;
                if p > MAX_PREDICTOR_LEN {
                    return Err(limit(
                        "predictor settings length",
                        p as u64,
                        MAX_PREDICTOR_LEN as u64,
                    ));
                }
                d.predictor = Some(t.take(p)?.to_vec());
            }
        }
        let (streams, single) = if desc & DESC_SINGLE != 0 {
            let original_len = t.varint("block original length")?;
            let symbol_count = t.varint("block symbol count")?;
            let words = t.varint("block coded length")?;
            (1, Some((original_len, symbol_count, words)))
        } else {
            (t.varint("streams")?, None)
        };
        let body = t.buf.len();
        let crc = u16_at(t.take(2)?, 0);
        if crc16(&t.buf[..body]) != crc {
            return Err(Error::new(ErrorKind::ChecksumMismatch { what: "header" }));
        }

        // The bytes are as written: interpret them.
        if desc & DESC_RESERVED != 0 {
            return Err(Error::new(ErrorKind::ReservedBitsSet {
                field: "header descriptor",
                value: desc as u64,
            }));
        }
        let kind = (desc >> DESC_CHECKSUM_SHIFT) & 3;
        let checksum = ChecksumKind::from_id(kind)
            .ok_or_else(|| invalid("content checksum kind", kind as u64))?;
        let tid = (desc >> DESC_TRANSFORM_SHIFT) & 3;
        let transform = Transform::from_id(tid).ok_or_else(|| invalid("transform", tid as u64))?;
        let p = preset(preset_id).ok_or_else(|| invalid("settings preset", preset_id as u64))?;
        if desc & DESC_DELTAS != 0 && d.map == 0 {
            return Err(invalid("settings delta map", 0));
        }
        let same = "setting delta equal to the preset";
        let backend = pick(d.backend, p.backend as u32, same, |&v| v as u64)?;
        if backend > u16::MAX as u32 {
            return Err(invalid("backend id", backend as u64));
        }
        let coder = (p.precision, p.word_bits);
        let (precision, word_bits) = pick(d.coder, coder, same, |c| c.0 as u64)?;
        if precision as usize != coder::PRECISION {
            return Err(invalid("coder precision bits", precision as u64));
        }
        if word_bits as usize != coder::WORD_BITS {
            return Err(invalid("coder word bits", word_bits as u64));
        }
        if streams > MAX_STREAMS as u32 {
            return Err(invalid("streams", streams as u64));
        }
        let single = match single {
            None => None,
            Some((original_len, symbol_count, words)) => Some(BlockEntry {
                original_len,
                symbol_count,
                coded_len: coded_len_of(words)?,
                crc32: None,
            }),
        };
        let h = Header {
            version: start[4] as u16,
            model,
            tokenizer,
            backend: backend as u16,
            num_symbols,
            block_tokens: pick(d.block_tokens, p.block_tokens, same, |&v| v as u64)?,
            streams: streams as u16,
            window_policy: pick(d.window_policy, p.window_policy, same, |&v| v as u64)?,
            start_token,
            window: pick(d.window, p.window, same, |&v| v as u64)?,
            keep: pick(d.keep, p.keep, same, |&v| v as u64)?,
            predictor: pick(d.predictor, p.predictor.to_vec(), same, |v| v.len() as u64)?,
            transform,
            checksum,
            single,
        };
        // One encoding per header: preset 2 or 3 exactly when the predictor settings are its.
        if preset_for(&h.predictor).0 != preset_id {
            return Err(invalid("settings preset", preset_id as u64));
        }
        h.validate()?;
        Ok(h)
    }

    /// Version 2, after its magic and the low byte of its version (`start`; the high byte
    /// was read and is 0). A fixed layout: magic, version, flags, header_len, identities,
    /// fields, settings, CRC-32.
    fn read_v2<R: Read>(r: &mut R, start: &[u8]) -> Result<Header> {
        let mut b = vec![0u8; HEADER_FIXED_LEN_V2];
        b[..5].copy_from_slice(start);
        read_exact_or(r, &mut b[6..], "header")?;
        let p = u16_at(&b, 101) as usize;
        if p > MAX_PREDICTOR_LEN {
            return Err(limit(
                "predictor settings length",
                p as u64,
                MAX_PREDICTOR_LEN as u64,
            ));
        }
        let header_len = u16_at(&b, 8) as usize;
        if header_len != HEADER_FIXED_LEN_V2 + p + 4 {
            return Err(invalid("header_len", header_len as u64));
        }
        b.resize(HEADER_FIXED_LEN_V2 + p + 4, 0);
        read_exact_or(r, &mut b[HEADER_FIXED_LEN_V2..], "header")?;
        let crc_at = HEADER_FIXED_LEN_V2 + p;
        if crc32fast::hash(&b[..crc_at]) != u32_at(&b, crc_at) {
            return Err(Error::new(ErrorKind::ChecksumMismatch { what: "header" }));
        }
        let flags = u16_at(&b, 6);
        if flags != 0 {
            return Err(Error::new(ErrorKind::ReservedBitsSet {
                field: "header flags",
                value: flags as u64,
            }));
        }
        if b[76] as usize != coder::PRECISION {
            return Err(invalid("coder precision bits", b[76] as u64));
        }
        if b[77] as usize != coder::WORD_BITS {
            return Err(invalid("coder word bits", b[77] as u64));
        }
        let h = Header {
            version: 2,
            model: HashPrefix::of(&arr32(&b, 10), 32),
            tokenizer: HashPrefix::of(&arr32(&b, 42), 32),
            backend: u16_at(&b, 74),
            num_symbols: u32_at(&b, 78),
            block_tokens: u32_at(&b, 82),
            streams: u16_at(&b, 86),
            window_policy: b[88],
            start_token: u32_at(&b, 89),
            window: u32_at(&b, 93),
            keep: u32_at(&b, 97),
            predictor: b[HEADER_FIXED_LEN_V2..crc_at].to_vec(),
            transform: Transform::None,
            checksum: ChecksumKind::Sha256,
            single: None,
        };
        h.validate()?;
        Ok(h)
    }
}

/// Most region lengths in a region section.
pub const MAX_REGIONS: u32 = 1 << 20;
/// Most classical parts (method 2).
pub const MAX_CLASSIC_PARTS: u32 = 256;
const MAX_REGION_TABLE_LEN: usize = 5
    + 5 * MAX_REGIONS as usize
    + (MAX_REGIONS as usize).div_ceil(16)
    + 1
    + 5
    + 11 * MAX_CLASSIC_PARTS as usize
    + 4
    + 2;
/// Method byte of a classical stream in several parts, each raw LZMA2.
pub const METHOD_LZMA2_PARTS: u8 = 2;

/// One independently coded piece of the binary stream (docs/FORMAT.md, "Regions").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassicPart {
    /// Bytes of the binary stream it decodes to.
    pub len: u32,
    /// Its LZMA2 dictionary size, log2 of bytes.
    pub dict_log2: u8,
    /// Bytes of its coded stream.
    pub coded_len: u32,
}

/// Version 4's region section (docs/FORMAT.md, "Regions"): which bytes of the original
/// the language model coded and which the classical coder did, and the classical stream's
/// framing. Its payload follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionSection {
    /// Alternating region lengths, text first: the first may be 0, no other is; at least
    /// one binary region.
    pub lens: Vec<u32>,
    /// With the per-region CRLF transform (header transform 2): one flag per text region,
    /// set where its CRLF line ends were coded as LF. Empty with any other transform.
    pub crlf: Vec<bool>,
    /// The classical stream's parts, in order: one (method 1, raw LZMA2) or several
    /// (method 2), whose decoded lengths add up to the binary stream's.
    pub parts: Vec<ClassicPart>,
    /// CRC-32 of the binary stream (the binary regions joined).
    pub crc32: u32,
}

impl RegionSection {
    /// Bytes in binary regions (the classical stream's decoded length).
    pub fn binary_len(&self) -> u64 {
        self.lens.iter().skip(1).step_by(2).map(|&l| l as u64).sum()
    }

    /// Bytes in text regions (what the language model's blocks must add up to, before the
    /// transform).
    pub fn text_len(&self) -> u64 {
        self.lens.iter().step_by(2).map(|&l| l as u64).sum()
    }

    /// Bytes of the classical payload (every part's).
    pub fn coded_len(&self) -> u64 {
        self.parts.iter().map(|p| p.coded_len as u64).sum()
    }

    /// The largest dictionary a part needs, log2 of bytes (parts decode one at a time).
    pub fn dict_log2(&self) -> u8 {
        self.parts.iter().map(|p| p.dict_log2).max().unwrap_or(0)
    }

    /// The method byte: 1 for one part, 2 for several.
    pub fn method(&self) -> u8 {
        if self.parts.len() == 1 {
            crate::classic::METHOD_LZMA2
        } else {
            METHOD_LZMA2_PARTS
        }
    }

    fn text_regions(&self) -> usize {
        self.lens.len().div_ceil(2)
    }

    fn validate(&self) -> Result<()> {
        let n = self.lens.len();
        if n < 2 || n > MAX_REGIONS as usize {
            return Err(invalid("region count", n as u64));
        }
        if let Some(i) = self.lens.iter().skip(1).position(|&l| l == 0) {
            return Err(invalid("region length", (i + 1) as u64));
        }
        if !self.crlf.is_empty() {
            if self.crlf.len() != self.text_regions() {
                return Err(invalid("CRLF region flags", self.crlf.len() as u64));
            }
            if !self.crlf.iter().any(|&m| m) {
                return Err(invalid("CRLF region flags", 0));
            }
            // A marked region holds at least a CR LF; only the first region can be empty.
            if self.crlf[0] && self.lens[0] == 0 {
                return Err(invalid("CRLF region flags", 1));
            }
        }
        if self.parts.is_empty() || self.parts.len() > MAX_CLASSIC_PARTS as usize {
            return Err(invalid("classical part count", self.parts.len() as u64));
        }
        for p in &self.parts {
            if !(crate::classic::MIN_DICT_LOG2..=crate::classic::MAX_DICT_LOG2)
                .contains(&p.dict_log2)
            {
                return Err(invalid("classical dictionary size", p.dict_log2 as u64));
            }
            if p.coded_len == 0 {
                return Err(invalid("classical coded length", 0));
            }
            if p.len == 0 {
                return Err(invalid("classical part length", 0));
            }
        }
        let parts_len: u64 = self.parts.iter().map(|p| p.len as u64).sum();
        if parts_len != self.binary_len() {
            return Err(invalid("classical part length", parts_len));
        }
        Ok(())
    }

    /// Writes the section (not its payload); an invalid section is never written.
    pub fn write_to<W: Write>(&self, w: &mut W) -> Result<()> {
        self.validate()?;
        let mut b = Vec::with_capacity(16 + 3 * self.lens.len() + 11 * self.parts.len());
        put_varint(&mut b, self.lens.len() as u32);
        for &l in &self.lens {
            put_varint(&mut b, l);
        }
        if !self.crlf.is_empty() {
            let mut flags = vec![0u8; self.crlf.len().div_ceil(8)];
            for (i, _) in self.crlf.iter().enumerate().filter(|m| *m.1) {
                flags[i / 8] |= 1 << (i % 8);
            }
            b.extend_from_slice(&flags);
        }
        b.push(self.method());
        if let [p] = &self.parts[..] {
            b.push(p.dict_log2);
            put_varint(&mut b, p.coded_len);
        } else {
            put_varint(&mut b, self.parts.len() as u32);
            for p in &self.parts {
                put_varint(&mut b, p.len);
                b.push(p.dict_log2);
                put_varint(&mut b, p.coded_len);
            }
        }
        b.extend_from_slice(&self.crc32.to_le_bytes());
        let crc = crc16(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        w.write_all(&b)?;
        Ok(())
    }

    /// Reads a section of an archive whose header has `transform` (the per-region CRLF
    /// transform adds the region flags): its CRC-16 is checked before any field is
    /// interpreted; only the counts (each checked against its limit first), the method
    /// byte and the varints' lengths are used to find it.
    pub fn read_from<R: Read>(r: &mut R, transform: Transform) -> Result<RegionSection> {
        let mut t = Tape::new(r, "region table", MAX_REGION_TABLE_LEN, &[]);
        let n = t.varint("region count")?;
        if n > MAX_REGIONS {
            return Err(limit("region count", n as u64, MAX_REGIONS as u64));
        }
        let mut lens = Vec::with_capacity((n as usize).min(1 << 12));
        for _ in 0..n {
            lens.push(t.varint("region length")?);
        }
        let text_regions = lens.len().div_ceil(2);
        let flags = if transform == Transform::CrlfPerRegion {
            t.take(text_regions.div_ceil(8))?.to_vec()
        } else {
            Vec::new()
        };
        let method = t.u8()?;
        let mut parts = Vec::new();
        match method {
            crate::classic::METHOD_LZMA2 => {
                let dict_log2 = t.u8()?;
                let coded_len = t.varint("classical coded length")?;
                // The one part is the whole binary stream; a length over 32 bits is
                // refused below as an invalid region count or length.
                let len = lens
                    .iter()
                    .skip(1)
                    .step_by(2)
                    .map(|&l| l as u64)
                    .sum::<u64>();
                parts.push(ClassicPart {
                    len: len.min(u32::MAX as u64) as u32,
                    dict_log2,
                    coded_len,
                });
            }
            METHOD_LZMA2_PARTS => {
                let k = t.varint("classical part count")?;
                if k > MAX_CLASSIC_PARTS {
                    return Err(limit(
                        "classical part count",
                        k as u64,
                        MAX_CLASSIC_PARTS as u64,
                    ));
                }
                for _ in 0..k {
                    let len = t.varint("classical part length")?;
                    let dict_log2 = t.u8()?;
                    let coded_len = t.varint("classical coded length")?;
                    parts.push(ClassicPart {
                        len,
                        dict_log2,
                        coded_len,
                    });
                }
            }
            // Unknown methods have no known layout: the CRC cannot be found behind them.
            other => return Err(invalid("classical method", other as u64)),
        }
        let crc32 = u32_at(t.take(4)?, 0);
        let body = t.buf.len();
        let crc = u16_at(t.take(2)?, 0);
        if crc16(&t.buf[..body]) != crc {
            return Err(Error::new(ErrorKind::ChecksumMismatch {
                what: "region table",
            }));
        }
        // Flags past the last text region are reserved.
        let mut crlf = Vec::new();
        if !flags.is_empty() {
            for (i, byte) in flags.iter().enumerate() {
                let used = (text_regions - 8 * i).min(8);
                if used < 8 && byte >> used != 0 {
                    return Err(Error::new(ErrorKind::ReservedBitsSet {
                        field: "CRLF region flags",
                        value: *byte as u64,
                    }));
                }
            }
            crlf = (0..text_regions)
                .map(|i| flags[i / 8] >> (i % 8) & 1 == 1)
                .collect();
        }
        let binary: u64 = lens.iter().skip(1).step_by(2).map(|&l| l as u64).sum();
        if method == crate::classic::METHOD_LZMA2 && binary > u32::MAX as u64 {
            return Err(limit("classical part length", binary, u32::MAX as u64));
        }
        if method == METHOD_LZMA2_PARTS && parts.len() < 2 {
            return Err(invalid("classical part count", parts.len() as u64));
        }
        let s = RegionSection {
            lens,
            crlf,
            parts,
            crc32,
        };
        s.validate()?;
        Ok(s)
    }

    /// Reads the classical payload that follows the section, only as far as the input
    /// supplies it (a forged length allocates nothing beyond the input).
    pub fn read_payload<R: Read>(&self, r: &mut R) -> Result<Vec<u8>> {
        let total = self.coded_len();
        let mut p = Vec::with_capacity((total as usize).min(1 << 16));
        r.take(total).read_to_end(&mut p)?;
        if p.len() as u64 != total {
            return Err(Error::new(ErrorKind::Truncated {
                what: "classical stream",
            }));
        }
        Ok(p)
    }
}

/// Bytes of a payload of `words` 32-bit words.
fn coded_len_of(words: u32) -> Result<u32> {
    words
        .checked_mul(4)
        .ok_or_else(|| limit("block coded length", words as u64 * 4, u32::MAX as u64))
}

fn check_entry(h: &Header, e: &BlockEntry) -> Result<()> {
    if e.original_len == 0 || e.original_len > MAX_BLOCK_BYTES {
        return Err(limit(
            "block original length",
            e.original_len as u64,
            MAX_BLOCK_BYTES as u64,
        ));
    }
    if e.symbol_count == 0 || e.symbol_count > h.block_tokens {
        return Err(limit(
            "block symbol count",
            e.symbol_count as u64,
            h.block_tokens as u64,
        ));
    }
    if e.symbol_count > e.original_len {
        return Err(invalid("block symbol count", e.symbol_count as u64));
    }
    let max_coded = 4 * e.symbol_count as u64 + 16;
    if e.coded_len as u64 > max_coded {
        return Err(limit("block coded length", e.coded_len as u64, max_coded));
    }
    if e.coded_len % 4 != 0 {
        return Err(invalid("block coded length", e.coded_len as u64));
    }
    Ok(())
}

/// A version-3 group frame's table for `entries` as given (`count` as the block count,
/// whatever the entries' number), with a valid CRC-16 but none of the writer's checks: the
/// writer's encoding, and for tests that forge out-of-limit frames. An entry without a
/// CRC-32 gets 0.
#[doc(hidden)]
pub fn group_table_unchecked(entries: &[BlockEntry], count: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + 19 * entries.len());
    b.push(TAG_GROUP);
    put_varint(&mut b, count);
    for e in entries {
        put_varint(&mut b, e.original_len);
        put_varint(&mut b, e.symbol_count);
        put_varint(&mut b, e.coded_len / 4);
        b.extend_from_slice(&e.crc32.unwrap_or(0).to_le_bytes());
    }
    let crc = crc16(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Writes a group frame (version 3, an archive of frames).
pub fn write_group<W: Write>(
    w: &mut W,
    header: &Header,
    entries: &[BlockEntry],
    payloads: &[&[u8]],
) -> Result<()> {
    if header.version < VERSION || header.single.is_some() {
        return Err(invalid(
            "group frame in this archive",
            header.version as u64,
        ));
    }
    if entries.is_empty()
        || entries.len() > header.streams as usize
        || entries.len() != payloads.len()
    {
        return Err(invalid("group block count", entries.len() as u64));
    }
    for (e, p) in entries.iter().zip(payloads) {
        check_entry(header, e)?;
        if p.len() != e.coded_len as usize {
            return Err(invalid("block coded length", p.len() as u64));
        }
        if e.crc32.is_none() {
            return Err(invalid("block crc32", 0));
        }
    }
    w.write_all(&group_table_unchecked(entries, entries.len() as u32))?;
    for p in payloads {
        w.write_all(p)?;
    }
    Ok(())
}

/// Writes the payload of a one-block archive, right after its header.
pub fn write_single_payload<W: Write>(w: &mut W, header: &Header, payload: &[u8]) -> Result<()> {
    match &header.single {
        Some(e) if e.coded_len as usize == payload.len() => Ok(w.write_all(payload)?),
        _ => Err(invalid("block coded length", payload.len() as u64)),
    }
}

/// Writes the end of an archive: the end frame's tag (in an archive of frames) and the
/// content checksum.
pub fn write_end<W: Write>(w: &mut W, header: &Header, checksum: &Checksum) -> Result<()> {
    if header.version < VERSION || checksum.kind() != header.checksum {
        return Err(invalid(
            "content checksum kind",
            checksum.kind().id() as u64,
        ));
    }
    let mut b = Vec::with_capacity(33);
    if header.single.is_none() {
        b.push(TAG_END);
    }
    b.extend_from_slice(&checksum.to_bytes());
    w.write_all(&b)?;
    Ok(())
}

/// Reads an archive's frames after its header, in order: its group frames (a one-block
/// version-3 archive: its block, as one group), then its end.
pub struct Frames<'h> {
    header: &'h Header,
    /// A one-block archive's block has been read.
    single_read: bool,
}

impl<'h> Frames<'h> {
    pub fn new(header: &'h Header) -> Self {
        Frames {
            header,
            single_read: false,
        }
    }

    /// Reads the next frame, checking its CRC before trusting any size in it, and every
    /// size against the limits before allocating for it.
    pub fn next_frame<R: Read>(&mut self, r: &mut R) -> Result<Frame> {
        let h = self.header;
        if h.version == 2 {
            return read_frame_v2(r, h);
        }
        if let Some(e) = &h.single {
            if !self.single_read {
                self.single_read = true;
                let mut p = vec![0u8; e.coded_len as usize];
                read_exact_or(r, &mut p, "block")?;
                return Ok(Frame::Group {
                    entries: vec![*e],
                    payloads: vec![p],
                });
            }
            return read_checksum(r, h.checksum, "content checksum");
        }
        let mut tag = [0u8; 1];
        read_exact_or(r, &mut tag, "frame tag")?;
        match tag[0] {
            TAG_GROUP => {
                let mut t = Tape::new(r, "group frame", MAX_TABLE_LEN, &tag);
                let n = t.varint("group block count")?;
                if n == 0 || n > h.streams as u32 {
                    return Err(limit("group block count", n as u64, h.streams as u64));
                }
                let mut raw = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let original_len = t.varint("block original length")?;
                    let symbol_count = t.varint("block symbol count")?;
                    let words = t.varint("block coded length")?;
                    let crc = u32_at(t.take(4)?, 0);
                    raw.push((original_len, symbol_count, words, crc));
                }
                let body = t.buf.len();
                let crc = u16_at(t.take(2)?, 0);
                if crc16(&t.buf[..body]) != crc {
                    return Err(Error::new(ErrorKind::ChecksumMismatch {
                        what: "group frame",
                    }));
                }
                let mut entries = Vec::with_capacity(raw.len());
                for (original_len, symbol_count, words, crc) in raw {
                    let e = BlockEntry {
                        original_len,
                        symbol_count,
                        coded_len: coded_len_of(words)?,
                        crc32: Some(crc),
                    };
                    check_entry(h, &e)?;
                    entries.push(e);
                }
                read_payloads(r, entries)
            }
            TAG_END => read_checksum(r, h.checksum, "end frame"),
            other => Err(invalid("frame tag", other as u64)),
        }
    }
}

/// The payloads of checked entries; each read only as the input supplies it.
fn read_payloads<R: Read>(r: &mut R, entries: Vec<BlockEntry>) -> Result<Frame> {
    let mut payloads = Vec::with_capacity(entries.len());
    for e in &entries {
        let mut p = vec![0u8; e.coded_len as usize];
        read_exact_or(r, &mut p, "block")?;
        payloads.push(p);
    }
    Ok(Frame::Group { entries, payloads })
}

/// A version-3 archive's end: its content checksum.
fn read_checksum<R: Read>(r: &mut R, kind: ChecksumKind, what: &'static str) -> Result<Frame> {
    let mut b = [0u8; 32];
    let b = &mut b[..kind.byte_len()];
    read_exact_or(r, b, what)?;
    Ok(Frame::End(Trailer {
        total_len: None,
        block_count: None,
        checksum: Checksum::from_bytes(kind, b),
    }))
}

/// Version 2's frames: 'G', u16 count, 16-byte entries, CRC-32, payloads; 'E', totals,
/// SHA-256, CRC-32.
fn read_frame_v2<R: Read>(r: &mut R, header: &Header) -> Result<Frame> {
    let mut tag = [0u8; 1];
    read_exact_or(r, &mut tag, "frame tag")?;
    match tag[0] {
        TAG_GROUP => {
            let mut nb = [0u8; 2];
            read_exact_or(r, &mut nb, "group frame")?;
            let n = u16::from_le_bytes(nb);
            if n == 0 || n > header.streams {
                return Err(limit("group block count", n as u64, header.streams as u64));
            }
            let mut b = vec![0u8; 3 + 16 * n as usize + 4];
            b[0] = tag[0];
            b[1..3].copy_from_slice(&nb);
            read_exact_or(r, &mut b[3..], "group frame")?;
            let crc_at = b.len() - 4;
            if crc32fast::hash(&b[..crc_at]) != u32_at(&b, crc_at) {
                return Err(Error::new(ErrorKind::ChecksumMismatch {
                    what: "group frame",
                }));
            }
            let mut entries = Vec::with_capacity(n as usize);
            for i in 0..n as usize {
                let at = 3 + 16 * i;
                let e = BlockEntry {
                    original_len: u32_at(&b, at),
                    symbol_count: u32_at(&b, at + 4),
                    coded_len: u32_at(&b, at + 8),
                    crc32: Some(u32_at(&b, at + 12)),
                };
                check_entry(header, &e)?;
                entries.push(e);
            }
            read_payloads(r, entries)
        }
        TAG_END => {
            let mut b = vec![0u8; 53];
            b[0] = TAG_END;
            read_exact_or(r, &mut b[1..], "end frame")?;
            if crc32fast::hash(&b[..49]) != u32_at(&b, 49) {
                return Err(Error::new(ErrorKind::ChecksumMismatch {
                    what: "end frame",
                }));
            }
            Ok(Frame::End(Trailer {
                total_len: Some(u64_at(&b, 1)),
                block_count: Some(u64_at(&b, 9)),
                checksum: Checksum::Sha256(arr32(&b, 17)),
            }))
        }
        other => Err(invalid("frame tag", other as u64)),
    }
}

/// Accumulates what the group frames declared, to check a version-2 end frame against.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ArchiveTally {
    blocks: u64,
    total: u64,
}

impl ArchiveTally {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_group(&mut self, entries: &[BlockEntry]) {
        self.blocks += entries.len() as u64;
        self.total += entries.iter().map(|e| e.original_len as u64).sum::<u64>();
    }

    /// Blocks and their bytes as coded, so far.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }
    pub fn coded_bytes(&self) -> u64 {
        self.total
    }

    /// The end frame's totals, where it has them, must agree with the groups read.
    pub fn check(&self, t: &Trailer) -> Result<()> {
        if let Some(expected) = t.block_count.filter(|&b| b != self.blocks) {
            return Err(Error::new(ErrorKind::LengthMismatch {
                what: "block count",
                expected,
                actual: self.blocks,
            }));
        }
        if let Some(expected) = t.total_len.filter(|&b| b != self.total) {
            return Err(Error::new(ErrorKind::LengthMismatch {
                what: "content length",
                expected,
                actual: self.total,
            }));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
