//! The classical coder for bytes the language model does not help with: raw LZMA2 (liblzma).
//!
//! Binary regions (see `regions`) are joined into one stream and coded here, with no
//! forward pass. The stream is raw LZMA2 (no .xz container: the archive's own framing
//! already carries its length, a CRC-32 and the dictionary size), so a stream costs a few
//! bytes more than its LZMA2 chunks. The encoder tries two match-finder settings side by
//! side and keeps the smaller stream: `xz -9e`'s long matches win on images and faxes
//! (ptt5: 39,801 against 41,992 bytes), preset 9's short ones on spreadsheets (kennedy.xls:
//! 49,116 against 51,811). The decoder needs neither: LZMA2 records its own literal and
//! position settings, and the dictionary size is in the archive.
//!
//! liblzma is built from its bundled source (the crate's `static` feature), so every build
//! of lmzip writes the same bytes for the same input.

use crate::{Error, ErrorKind, Result};
use liblzma::stream::{Action, Filters, LzmaOptions, Status, Stream};

/// The method byte for raw LZMA2 (docs/FORMAT.md, "Regions").
pub const METHOD_LZMA2: u8 = 1;
/// Smallest and largest dictionary, as log2 of bytes: 4 KiB (liblzma's minimum) and
/// 64 MiB (`xz -9`'s).
pub const MIN_DICT_LOG2: u8 = 12;
pub const MAX_DICT_LOG2: u8 = 26;

/// A coded classical stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coded {
    /// The LZMA2 dictionary size as log2 of bytes; the decoder allocates this much.
    pub dict_log2: u8,
    pub bytes: Vec<u8>,
}

/// The dictionary for `len` bytes: the smallest power of two that holds them, within
/// [MIN_DICT_LOG2, MAX_DICT_LOG2]. A dictionary larger than the input gains nothing and
/// would only make the decoder allocate it.
pub fn dict_log2_for(len: usize) -> u8 {
    let mut log2 = MIN_DICT_LOG2;
    while log2 < MAX_DICT_LOG2 && (1usize << log2) < len {
        log2 += 1;
    }
    log2
}

fn lzma_err(e: liblzma::stream::Error) -> Error {
    Error::internal(format!("liblzma: {e}"))
}

fn filters(preset: u32, nice: Option<u32>, dict_log2: u8) -> Result<Filters> {
    let mut opts = LzmaOptions::new_preset(preset).map_err(lzma_err)?;
    opts.dict_size(1u32 << dict_log2);
    if let Some(n) = nice {
        opts.nice_len(n);
    }
    let mut f = Filters::new();
    f.lzma2(&opts);
    Ok(f)
}

/// One raw LZMA2 stream of `data` with the given settings.
fn encode_with(data: &[u8], preset: u32, nice: Option<u32>, dict_log2: u8) -> Result<Vec<u8>> {
    let mut s = Stream::new_raw_encoder(&filters(preset, nice, dict_log2)?).map_err(lzma_err)?;
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    loop {
        let at = s.total_in() as usize;
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(4096));
        }
        match s
            .process_vec(&data[at..], &mut out, Action::Finish)
            .map_err(lzma_err)?
        {
            Status::StreamEnd => return Ok(out),
            Status::Ok | Status::GetCheck | Status::MemNeeded => {}
        }
    }
}

/// Codes `data`: preset 9, and preset 9 with the longest matches (nice_len 273), run side
/// by side (rayon); the smaller stream is kept, on a tie the first.
pub fn encode(data: &[u8]) -> Result<Coded> {
    let dict_log2 = dict_log2_for(data.len());
    let (short, long) = rayon::join(
        || encode_with(data, 9, None, dict_log2),
        || encode_with(data, 9, Some(273), dict_log2),
    );
    let (short, long) = (short?, long?);
    let bytes = if long.len() < short.len() {
        long
    } else {
        short
    };
    Ok(Coded { dict_log2, bytes })
}

/// Decodes a stream that must give exactly `len` bytes and end exactly at the end of
/// `coded`; anything else is a corrupt archive (`what` names the structure).
pub fn decode(dict_log2: u8, coded: &[u8], len: usize, what: &'static str) -> Result<Vec<u8>> {
    if !(MIN_DICT_LOG2..=MAX_DICT_LOG2).contains(&dict_log2) {
        return Err(Error::new(ErrorKind::InvalidField {
            field: "classical dictionary size",
            value: dict_log2 as u64,
        }));
    }
    let corrupt = || Error::new(ErrorKind::ChecksumMismatch { what });
    let mut s = Stream::new_raw_decoder(&filters(6, None, dict_log2)?).map_err(lzma_err)?;
    // The declared length is checked against what decodes; reserve only a bounded part
    // of it up front, so a forged length cannot allocate.
    let mut out = Vec::with_capacity(len.min(1 << 20));
    loop {
        let at = s.total_in() as usize;
        // Room for one byte more than declared, to see a stream that runs past it.
        let room = (len + 1 - out.len()).min(1 << 20);
        out.reserve(room);
        let before = out.len();
        let status = s
            .process_vec(&coded[at..], &mut out, Action::Run)
            .map_err(|_| corrupt())?;
        if out.len() > len {
            return Err(corrupt());
        }
        match status {
            Status::StreamEnd => {
                if out.len() != len || s.total_in() as usize != coded.len() {
                    return Err(corrupt());
                }
                return Ok(out);
            }
            _ => {
                // No progress with input left or none: the stream is cut short.
                if out.len() == before && s.total_in() as usize == at {
                    return Err(Error::new(ErrorKind::Truncated { what }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Lcg;

    #[test]
    fn round_trips_and_refuses_damage() {
        let mut rng = Lcg(7);
        let random: Vec<u8> = (0..70_000).map(|_| rng.next() as u8).collect();
        let mut runs = vec![0u8; 5000];
        runs.extend(b"abcabcabc".repeat(300));
        for data in [&b""[..], b"x", &runs, &random] {
            let c = encode(data).unwrap();
            assert_eq!(c.dict_log2, dict_log2_for(data.len()));
            let back = decode(c.dict_log2, &c.bytes, data.len(), "t").unwrap();
            assert_eq!(back, data);
            // Wrong length either way, a cut, trailing bytes: all refused.
            assert!(decode(c.dict_log2, &c.bytes, data.len() + 1, "t").is_err());
            if !data.is_empty() {
                assert!(decode(c.dict_log2, &c.bytes, data.len() - 1, "t").is_err());
            }
            assert!(decode(c.dict_log2, &c.bytes[..c.bytes.len() - 1], data.len(), "t").is_err());
            let mut longer = c.bytes.clone();
            longer.push(0);
            assert!(decode(c.dict_log2, &longer, data.len(), "t").is_err());
        }
        // Random bytes expand by LZMA2's chunk headers only (3 bytes per 64 KiB chunk).
        let c = encode(&random).unwrap();
        assert!(c.bytes.len() <= random.len() + random.len() / 1000 + 8);
    }

    #[test]
    fn dictionary_sizes() {
        assert_eq!(dict_log2_for(0), 12);
        assert_eq!(dict_log2_for(4096), 12);
        assert_eq!(dict_log2_for(4097), 13);
        assert_eq!(dict_log2_for(usize::MAX), 26);
        assert!(decode(11, &[0], 0, "t").is_err());
        assert!(decode(27, &[0], 0, "t").is_err());
    }
}
