//! What an archive says about itself, read without a model.
//!
//! [`describe`] walks every archive's header and frames, checks their structure and
//! checksums, and returns the facts; the command renders them (`lmzip info`).

use super::io::Counting;
use crate::format::{self, ArchiveTally, Frame, Header};
use crate::predict::PredictorSettings;
use crate::{coder, Error, Result};
use std::io::Read;

/// One archive's description: its header's fields, and what its frames hold.
#[derive(Debug)]
pub struct ArchiveInfo {
    /// Format version (this build reads only its own).
    pub version: u16,
    /// The model identity the archive needs (its GGUF file's or folder manifest's SHA-256).
    pub model_sha256: [u8; 32],
    /// The tokenizer identity the archive needs.
    pub tokenizer_hash: [u8; 32],
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
    /// Original bytes, symbols, blocks and group frames.
    pub content_bytes: u64,
    pub symbols: u64,
    pub blocks: u64,
    pub groups: u64,
    /// SHA-256 of the original.
    pub content_sha256: [u8; 32],
    /// Bytes of the archive, header to end frame.
    pub archive_bytes: u64,
}

impl ArchiveInfo {
    /// The fields of a header; the counts start at zero.
    fn from_header(h: &Header) -> Self {
        ArchiveInfo {
            version: format::VERSION,
            model_sha256: h.model_sha256,
            tokenizer_hash: h.tokenizer_hash,
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
            content_bytes: 0,
            symbols: 0,
            blocks: 0,
            groups: 0,
            content_sha256: [0; 32],
            archive_bytes: 0,
        }
    }

    /// Archive bits per original byte (0 for empty content).
    pub fn bits_per_byte(&self) -> f64 {
        if self.content_bytes > 0 {
            self.archive_bytes as f64 * 8.0 / self.content_bytes as f64
        } else {
            0.0
        }
    }
}

/// Every archive in `r` (archives back to back included), described. Reads the whole input
/// and checks every structural checksum, but runs no model and decodes no payload.
pub fn describe<R: Read>(r: &mut R) -> Result<Vec<ArchiveInfo>> {
    let mut r = Counting::new(r);
    let mut archives = Vec::new();
    while let Some(h) = Header::read_from(&mut r)? {
        let start = r.count() - h.encoded_len() as u64;
        let mut info = ArchiveInfo::from_header(&h);
        let mut tally = ArchiveTally::new();
        loop {
            match format::read_frame(&mut r, &h)? {
                Frame::Group { entries, .. } => {
                    tally.add_group(&entries);
                    info.groups += 1;
                    info.blocks += entries.len() as u64;
                    info.symbols += entries.iter().map(|e| e.symbol_count as u64).sum::<u64>();
                }
                Frame::End(t) => {
                    tally.check(&t)?;
                    info.content_bytes = t.total_len;
                    info.content_sha256 = t.sha256;
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
