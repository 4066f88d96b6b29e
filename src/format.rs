//! The container: header, group frames, end frame; parsing with every size bounded first.
//!
//! Byte-by-byte specification: docs/FORMAT.md. This module has no model dependency (of the
//! coder it reads only the parameters it records), so it can be fuzzed and tested alone.

use crate::coder;
use crate::{Error, ErrorKind, Result};
use std::io::{Read, Write};

/// Magic number: 0xB5 can start neither ASCII nor UTF-8, then "lmz".
pub const MAGIC: [u8; 4] = [0xB5, 0x6C, 0x6D, 0x7A];
/// Format version this build writes and reads.
pub const VERSION: u16 = 2;
/// Fixed part of the header before the predictor settings.
pub const HEADER_FIXED_LEN: usize = 103;
/// Largest header (fixed part, predictor settings, CRC).
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
/// Group frame tag.
pub const TAG_GROUP: u8 = 0x47;
/// End frame tag.
pub const TAG_END: u8 = 0x45;

/// Window policy 0: a full window is rebuilt by re-running the start token and the last
/// `keep − 1` symbols from position 0.
pub const WINDOW_REPREFILL: u8 = 0;
/// Window policy 1: a full window keeps its start token and newest `keep − 1` entries as
/// computed, with contiguous positions (see `KvCache::slide`); nothing is re-run.
pub const WINDOW_SHIFT: u8 = 1;

/// Everything decoding depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub model_sha256: [u8; 32],
    pub tokenizer_hash: [u8; 32],
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
}

/// One block's entry in a group frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockEntry {
    pub original_len: u32,
    pub symbol_count: u32,
    pub coded_len: u32,
    pub crc32: u32,
}

/// The end frame's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailer {
    pub total_len: u64,
    pub block_count: u64,
    pub sha256: [u8; 32],
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

impl Header {
    /// Length of the encoded header.
    pub fn encoded_len(&self) -> usize {
        HEADER_FIXED_LEN + self.predictor.len() + 4
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
        Ok(())
    }

    /// Writes the header; an invalid header is never written.
    pub fn write_to<W: Write>(&self, w: &mut W) -> Result<()> {
        self.validate()?;
        let mut b = Vec::with_capacity(self.encoded_len());
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&(self.encoded_len() as u16).to_le_bytes());
        b.extend_from_slice(&self.model_sha256);
        b.extend_from_slice(&self.tokenizer_hash);
        b.extend_from_slice(&self.backend.to_le_bytes());
        // The coder's parameters, recorded so that another coder is refused by name.
        b.push(coder::PRECISION as u8);
        b.push(coder::WORD_BITS as u8);
        b.extend_from_slice(&self.num_symbols.to_le_bytes());
        b.extend_from_slice(&self.block_tokens.to_le_bytes());
        b.extend_from_slice(&self.streams.to_le_bytes());
        b.push(self.window_policy);
        b.extend_from_slice(&self.start_token.to_le_bytes());
        b.extend_from_slice(&self.window.to_le_bytes());
        b.extend_from_slice(&self.keep.to_le_bytes());
        b.extend_from_slice(&(self.predictor.len() as u16).to_le_bytes());
        b.extend_from_slice(&self.predictor);
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        w.write_all(&b)?;
        Ok(())
    }

    /// Reads a header. `Ok(None)` on a clean end of input before its first byte (the end of
    /// a concatenation of archives).
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
        let mut b = vec![0u8; HEADER_FIXED_LEN];
        b[0] = first[0];
        // Check the magic as soon as it is complete, so plain text gets "not an archive"
        // rather than "truncated".
        read_exact_or(r, &mut b[1..4], "header")?;
        if b[..4] != MAGIC {
            return Err(Error::new(ErrorKind::BadMagic {
                found: [b[0], b[1], b[2], b[3]],
            }));
        }
        read_exact_or(r, &mut b[4..6], "header")?;
        let version = u16_at(&b, 4);
        if version != VERSION {
            return Err(Error::new(ErrorKind::UnsupportedVersion {
                found: version,
                supported: VERSION,
            }));
        }
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
        if header_len != HEADER_FIXED_LEN + p + 4 {
            return Err(invalid("header_len", header_len as u64));
        }
        b.resize(HEADER_FIXED_LEN + p + 4, 0);
        read_exact_or(r, &mut b[HEADER_FIXED_LEN..], "header")?;
        let crc_at = HEADER_FIXED_LEN + p;
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
            model_sha256: arr32(&b, 10),
            tokenizer_hash: arr32(&b, 42),
            backend: u16_at(&b, 74),
            num_symbols: u32_at(&b, 78),
            block_tokens: u32_at(&b, 82),
            streams: u16_at(&b, 86),
            window_policy: b[88],
            start_token: u32_at(&b, 89),
            window: u32_at(&b, 93),
            keep: u32_at(&b, 97),
            predictor: b[HEADER_FIXED_LEN..crc_at].to_vec(),
        };
        h.validate()?;
        Ok(Some(h))
    }
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

/// Writes a group frame.
pub fn write_group<W: Write>(
    w: &mut W,
    header: &Header,
    entries: &[BlockEntry],
    payloads: &[&[u8]],
) -> Result<()> {
    if entries.is_empty()
        || entries.len() > header.streams as usize
        || entries.len() != payloads.len()
    {
        return Err(invalid("group block count", entries.len() as u64));
    }
    let mut b = Vec::with_capacity(3 + 16 * entries.len() + 4);
    b.push(TAG_GROUP);
    b.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (e, p) in entries.iter().zip(payloads) {
        check_entry(header, e)?;
        if p.len() != e.coded_len as usize {
            return Err(invalid("block coded length", p.len() as u64));
        }
        b.extend_from_slice(&e.original_len.to_le_bytes());
        b.extend_from_slice(&e.symbol_count.to_le_bytes());
        b.extend_from_slice(&e.coded_len.to_le_bytes());
        b.extend_from_slice(&e.crc32.to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    w.write_all(&b)?;
    for p in payloads {
        w.write_all(p)?;
    }
    Ok(())
}

/// Writes the end frame.
pub fn write_end<W: Write>(w: &mut W, t: &Trailer) -> Result<()> {
    let mut b = Vec::with_capacity(53);
    b.push(TAG_END);
    b.extend_from_slice(&t.total_len.to_le_bytes());
    b.extend_from_slice(&t.block_count.to_le_bytes());
    b.extend_from_slice(&t.sha256);
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    w.write_all(&b)?;
    Ok(())
}

/// Reads the next frame, checking its CRC before trusting any size in it.
pub fn read_frame<R: Read>(r: &mut R, header: &Header) -> Result<Frame> {
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
                    crc32: u32_at(&b, at + 12),
                };
                check_entry(header, &e)?;
                entries.push(e);
            }
            let mut payloads = Vec::with_capacity(entries.len());
            for e in &entries {
                let mut p = vec![0u8; e.coded_len as usize];
                read_exact_or(r, &mut p, "block")?;
                payloads.push(p);
            }
            Ok(Frame::Group { entries, payloads })
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
                total_len: u64_at(&b, 1),
                block_count: u64_at(&b, 9),
                sha256: arr32(&b, 17),
            }))
        }
        other => Err(invalid("frame tag", other as u64)),
    }
}

/// Accumulates what the group frames declared, to check the end frame against.
#[derive(Debug, Default)]
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

    /// The end frame must agree with the groups read.
    pub fn check(&self, t: &Trailer) -> Result<()> {
        if t.block_count != self.blocks {
            return Err(Error::new(ErrorKind::LengthMismatch {
                what: "block count",
                expected: t.block_count,
                actual: self.blocks,
            }));
        }
        if t.total_len != self.total {
            return Err(Error::new(ErrorKind::LengthMismatch {
                what: "content length",
                expected: t.total_len,
                actual: self.total,
            }));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            model_sha256: [1; 32],
            tokenizer_hash: [2; 32],
            backend: 1,
            num_symbols: 49408,
            block_tokens: 1024,
            streams: 4,
            window_policy: 0,
            start_token: 0,
            window: 1024,
            keep: 512,
            predictor: vec![2, 1],
        }
    }

    fn sample() -> Vec<u8> {
        let h = header();
        let mut v = Vec::new();
        h.write_to(&mut v).unwrap();
        let e = [BlockEntry {
            original_len: 10,
            symbol_count: 3,
            coded_len: 8,
            crc32: 5,
        }];
        write_group(&mut v, &h, &e, &[&[9u8; 8]]).unwrap();
        write_end(
            &mut v,
            &Trailer {
                total_len: 10,
                block_count: 1,
                sha256: [3; 32],
            },
        )
        .unwrap();
        v
    }

    fn read_all(mut b: &[u8]) -> Result<()> {
        let h = Header::read_from(&mut b)?.ok_or_else(|| Error::truncated("header"))?;
        let mut t = ArchiveTally::new();
        loop {
            match read_frame(&mut b, &h)? {
                Frame::Group { entries, .. } => t.add_group(&entries),
                Frame::End(tr) => return t.check(&tr),
            }
        }
    }

    fn kind(r: Result<()>) -> String {
        format!("{:?}", r.expect_err("must fail").kind())
    }

    #[test]
    fn round_trip() {
        let v = sample();
        let mut r = &v[..];
        assert_eq!(Header::read_from(&mut r).unwrap().unwrap(), header());
        read_all(&v).unwrap();
        assert!(Header::read_from(&mut &[][..]).unwrap().is_none());
    }

    #[test]
    fn every_truncation_is_reported() {
        let v = sample();
        for cut in 1..v.len() {
            let k = kind(read_all(&v[..cut]));
            assert!(k.starts_with("Truncated"), "cut {cut}: {k}");
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
        assert!(kind(read_all(&with(4, 1))).starts_with("UnsupportedVersion"));
        // Bits past the magic are covered by the header CRC: any change is a mismatch.
        assert!(kind(read_all(&with(6, 1))).starts_with("ChecksumMismatch"));
        let hl = v.len() - 53 - (3 + 16 + 4 + 8);
        assert!(kind(read_all(&with(hl, b'X'))).contains("frame tag"));
        assert!(kind(read_all(&with(hl + 5, 0xFF))).starts_with("ChecksumMismatch"));
        let last = v.len() - 1;
        assert!(kind(read_all(&with(last, v[last] ^ 1))).starts_with("ChecksumMismatch"));
    }

    /// Rewrites a header field and fixes the CRC, to reach the checks behind it.
    fn forged(at: usize, bytes: &[u8]) -> Vec<u8> {
        let mut v = sample();
        v[at..at + bytes.len()].copy_from_slice(bytes);
        let crc_at = HEADER_FIXED_LEN + 2;
        let crc = crc32fast::hash(&v[..crc_at]);
        v[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        v
    }

    #[test]
    fn field_checks_behind_a_valid_crc() {
        assert!(kind(read_all(&forged(6, &[1, 0]))).starts_with("ReservedBitsSet"));
        assert!(kind(read_all(&forged(76, &[16]))).contains("precision"));
        assert!(kind(read_all(&forged(77, &[64]))).contains("word"));
        assert!(kind(read_all(&forged(74, &[0, 0]))).contains("backend"));
        assert!(kind(read_all(&forged(78, &0u32.to_le_bytes()))).contains("num_symbols"));
        assert!(kind(read_all(&forged(82, &u32::MAX.to_le_bytes()))).contains("block_tokens"));
        assert!(kind(read_all(&forged(86, &0u16.to_le_bytes()))).contains("streams"));
        assert!(kind(read_all(&forged(88, &[2]))).contains("window"));
        assert!(kind(read_all(&forged(89, &u32::MAX.to_le_bytes()))).contains("start_token"));
        assert!(kind(read_all(&forged(93, &1u32.to_le_bytes()))).contains("window"));
        assert!(kind(read_all(&forged(97, &1024u32.to_le_bytes()))).contains("keep"));
        assert!(kind(read_all(&forged(8, &9u16.to_le_bytes()))).contains("header_len"));
        assert!(kind(read_all(&forged(101, &4000u16.to_le_bytes()))).starts_with("LimitExceeded"));
    }

    #[test]
    fn huge_sizes_are_refused_before_allocating() {
        let h = header();
        let group = |n: u16, e: BlockEntry| {
            let mut b = vec![TAG_GROUP];
            b.extend_from_slice(&n.to_le_bytes());
            for _ in 0..n.min(4) {
                for x in [e.original_len, e.symbol_count, e.coded_len, e.crc32] {
                    b.extend_from_slice(&x.to_le_bytes());
                }
            }
            let crc = crc32fast::hash(&b);
            b.extend_from_slice(&crc.to_le_bytes());
            b
        };
        let ok = BlockEntry {
            original_len: 10,
            symbol_count: 3,
            coded_len: 8,
            crc32: 0,
        };
        let k = |b: Vec<u8>| {
            format!(
                "{:?}",
                read_frame(&mut &b[..], &h).expect_err("must fail").kind()
            )
        };
        assert!(k(group(60000, ok)).starts_with("LimitExceeded"));
        assert!(k(group(
            1,
            BlockEntry {
                original_len: u32::MAX,
                ..ok
            }
        ))
        .starts_with("LimitExceeded"));
        assert!(k(group(
            1,
            BlockEntry {
                symbol_count: 5000,
                ..ok
            }
        ))
        .starts_with("LimitExceeded"));
        assert!(k(group(
            1,
            BlockEntry {
                coded_len: u32::MAX - 3,
                ..ok
            }
        ))
        .starts_with("LimitExceeded"));
        assert!(k(group(1, BlockEntry { coded_len: 6, ..ok })).contains("coded length"));
        assert!(k(group(
            1,
            BlockEntry {
                symbol_count: 11,
                ..ok
            }
        ))
        .contains("symbol count"));
    }

    #[test]
    fn tally_mismatch() {
        let mut t = ArchiveTally::new();
        t.add_group(&[BlockEntry {
            original_len: 10,
            symbol_count: 3,
            coded_len: 8,
            crc32: 5,
        }]);
        assert!(t
            .check(&Trailer {
                total_len: 11,
                block_count: 1,
                sha256: [0; 32]
            })
            .is_err());
        assert!(t
            .check(&Trailer {
                total_len: 10,
                block_count: 2,
                sha256: [0; 32]
            })
            .is_err());
        assert!(t
            .check(&Trailer {
                total_len: 10,
                block_count: 1,
                sha256: [0; 32]
            })
            .is_ok());
    }
}
