//! What an archive says about itself, read without a model.
//!
//! [`describe`] walks every archive's header and frames, checks their structure and
//! checksums, and returns the facts; the command renders them (`lmzip info`).

use super::io::Counting;
use crate::format::{self, ArchiveTally, Checksum, Frame, Header, RegionSection};
use crate::predict::PredictorSettings;
use crate::transform::Transform;
use crate::{coder, Error, Result};
use std::io::Read;

/// One archive's description: its header's fields, and what its frames hold.
#[derive(Debug)]
pub struct ArchiveInfo {
    /// Format version (2, 3, or 4 with binary regions).
    pub version: u16,
    /// The leading bytes of the model identity (its GGUF file's or folder manifest's
    /// SHA-256) that the archive records: all 32 in version 2, the first 6 in version 3.
    pub model_sha256: Vec<u8>,
    /// The leading bytes of the tokenizer identity the archive records (32 or 2).
    pub tokenizer_hash: Vec<u8>,
    /// Symbols of the alphabet: vocabulary and escapes.
    pub num_symbols: u32,
    /// Numeric backend id.
    pub backend: u16,
    /// Range coder word and probability bits.
    pub coder_word_bits: usize,
    pub coder_precision_bits: usize,
    /// Most symbols per block, and most blocks side by side.
    pub block_tokens: u32,
    pub streams: u16,
    /// Context window and what a slide keeps, in positions; window policy id.
    pub window: u32,
    pub keep: u32,
    pub window_policy: u8,
    /// The predictor settings, or why they do not parse.
    pub predictor: Result<PredictorSettings>,
    /// The transform the input went through before coding.
    pub transform: Transform,
    /// Bytes as coded (after the transform; the original is longer by the CRs the CRLF
    /// transform removed, which only decoding counts), symbols, blocks and group frames
    /// (a one-block version-3 archive has its block in the header: one group, no frame).
    pub content_bytes: u64,
    pub symbols: u64,
    pub blocks: u64,
    pub groups: u64,
    /// The content checksum: of the original, before the transform.
    pub content_checksum: Checksum,
    /// Bytes of the archive, header to end frame, and of its blocks' payloads (the rest is
    /// framing).
    pub archive_bytes: u64,
    pub payload_bytes: u64,
    /// Version 4: binary regions, their bytes (included in `content_bytes`) and their
    /// classical stream's bytes (included in `payload_bytes`).
    pub binary_regions: u64,
    pub classic_bytes: u64,
    pub classic_coded_bytes: u64,
    /// Version 4: the classical stream's independently coded parts (1 when it is one
    /// stream), and the text regions with the per-region CRLF transform.
    pub classic_parts: u64,
    pub crlf_regions: u64,
    pub text_regions: u64,
}

impl ArchiveInfo {
    /// The fields of a header; the counts start at zero.
    fn from_header(h: &Header) -> Self {
        ArchiveInfo {
            version: h.version,
            model_sha256: h.model.bytes().to_vec(),
            tokenizer_hash: h.tokenizer.bytes().to_vec(),
            num_symbols: h.num_symbols,
            backend: h.backend,
            coder_word_bits: coder::WORD_BITS,
            coder_precision_bits: coder::PRECISION,
            block_tokens: h.block_tokens,
            streams: h.streams,
            window: h.window,
            keep: h.keep,
            window_policy: h.window_policy,
            predictor: PredictorSettings::from_bytes(&h.predictor),
            transform: h.transform,
            content_bytes: 0,
            symbols: 0,
            blocks: 0,
            groups: 0,
            content_checksum: Checksum::of(h.checksum, b""),
            archive_bytes: 0,
            payload_bytes: 0,
            binary_regions: 0,
            classic_bytes: 0,
            classic_coded_bytes: 0,
            classic_parts: 0,
            crlf_regions: 0,
            text_regions: 0,
        }
    }

    /// Archive bits per byte as coded (0 for empty content).
    pub fn bits_per_byte(&self) -> f64 {
        if self.content_bytes > 0 {
            self.archive_bytes as f64 * 8.0 / self.content_bytes as f64
        } else {
            0.0
        }
    }

    /// Bytes of the archive that are not block payload: header, frame tables, checksums.
    pub fn framing_bytes(&self) -> u64 {
        self.archive_bytes - self.payload_bytes
    }
}

/// Every archive in `r` (archives back to back included), described. Reads the whole input
/// and checks every structural checksum, but runs no model and decodes no payload.
pub fn describe<R: Read>(r: &mut R) -> Result<Vec<ArchiveInfo>> {
    let mut r = Counting::new(r);
    let mut archives = Vec::new();
    loop {
        let start = r.count();
        let Some(h) = Header::read_from(&mut r)? else {
            break;
        };
        let mut info = ArchiveInfo::from_header(&h);
        if h.version >= format::VERSION_REGIONS {
            let section = RegionSection::read_from(&mut r, h.transform)?;
            // Read, not decoded: its length is all a description needs.
            section.read_payload(&mut r)?;
            info.binary_regions = section.lens.len() as u64 / 2;
            info.classic_bytes = section.binary_len();
            info.classic_coded_bytes = section.coded_len();
            info.classic_parts = section.parts.len() as u64;
            info.crlf_regions = section.crlf.iter().filter(|&&m| m).count() as u64;
            info.text_regions = section.lens.len().div_ceil(2) as u64;
        }
        let mut tally = ArchiveTally::new();
        let mut frames = format::Frames::new(&h);
        loop {
            match frames.next_frame(&mut r)? {
                Frame::Group { entries, .. } => {
                    tally.add_group(&entries);
                    info.groups += 1;
                    info.blocks += entries.len() as u64;
                    info.symbols += entries.iter().map(|e| e.symbol_count as u64).sum::<u64>();
                    info.payload_bytes += entries.iter().map(|e| e.coded_len as u64).sum::<u64>();
                }
                Frame::End(t) => {
                    tally.check(&t)?;
                    info.content_bytes = tally.coded_bytes() + info.classic_bytes;
                    info.payload_bytes += info.classic_coded_bytes;
                    info.content_checksum = t.checksum;
                    info.archive_bytes = r.count() - start;
                    break;
                }
            }
        }
        archives.push(info);
    }
    if archives.is_empty() {
        return Err(Error::truncated("header"));
    }
    Ok(archives)
}
