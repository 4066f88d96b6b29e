//! Entropy coding: a distribution → an integer CDF totalling 2^24 → constriction's range coder.
//!
//! The CDF is built with basic IEEE operations in a fixed order from the predictor's
//! probabilities, so encoder and decoder derive the same integers from the same inputs. Every
//! symbol gets at least frequency 1, so any symbol — escapes included — stays codable.

use constriction::stream::model::{DecoderModel, EncoderModel, EntropyModel};
use constriction::stream::queue::{DefaultRangeDecoder, DefaultRangeEncoder};
use constriction::stream::{Decode, Encode};
use std::num::NonZeroU32;

/// Bits of probability precision; recorded in the header (`format` writes and checks it).
pub const PRECISION: usize = 24;
/// Bits per coder word (constriction's default range coder writes `u32` words); recorded
/// in the header.
pub const WORD_BITS: usize = u32::BITS as usize;
/// Total of every CDF.
pub const TOTAL: u32 = 1 << PRECISION;

/// A quantized distribution over symbols `0..n`, as a left-cumulative table.
#[derive(Debug, Clone, Default)]
pub struct Cdf {
    /// cum[i] = Σ_{j<i} freq[j]; cum[n] = TOTAL.
    cum: Vec<u32>,
}

impl Cdf {
    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.cum.len().saturating_sub(1)
    }

    /// True when the table has no symbols (never for a built CDF).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frequency of one symbol.
    pub fn freq(&self, sym: usize) -> u32 {
        self.cum[sym + 1] - self.cum[sym]
    }

    /// Builds the table from non-negative weights (not necessarily normalized).
    ///
    /// Each symbol gets 1 + ⌊w·scale⌋ with scale chosen so the sum stays below 2^24; the
    /// remainder goes to the heaviest symbol (lowest index on ties). All arithmetic is f32
    /// in index order or integer, so the result is a pure function of the weights' bits.
    pub fn build_from_weights(&mut self, weights: &[f32]) {
        let n = weights.len();
        assert!(
            n >= 2 && n < (TOTAL as usize) / 4,
            "alphabet size {n} out of range"
        );
        // Reserve one count per symbol plus slack for rounding in the scaled sum.
        let budget = (TOTAL as usize - n - n / 64 - 1024) as f32;
        // Sum in f64, element i in lane i mod 8, lanes combined pairwise: a fixed order
        // that vectorizes.
        let mut lanes = [0f64; 8];
        let chunks = weights.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for l in 0..8 {
                lanes[l] += c[l] as f64;
            }
        }
        for (l, &w) in rest.iter().enumerate() {
            lanes[l] += w as f64;
        }
        let sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
            + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
        // The heaviest symbol, lowest index on ties (NaN never wins).
        let top = crate::math::max_f32(weights);
        let best = crate::math::first_eq(weights, top).unwrap_or(0);
        let scale = if sum > 0.0 && sum.is_finite() {
            (budget as f64 / sum) as f32
        } else {
            0.0
        };
        // Frequencies first (a flat, vectorizable pass), then the prefix sum in place.
        self.cum.resize(n + 1, 0);
        self.cum[0] = 0;
        for (c, &w) in self.cum[1..].iter_mut().zip(weights) {
            // NaN or negative weights count as zero (`max` drops NaN, and `min` maps the
            // NaN of ∞·0 to the budget).
            let f = (w.max(0.0) * scale).min(budget);
            // SAFETY: f is in [0, budget] and budget < 2^24, so it fits an i32 exactly; the
            // unchecked conversion equals `as` here and vectorizes.
            *c = 1 + unsafe { f.to_int_unchecked::<i32>() } as u32;
        }
        let freqs_best = self.cum[best + 1];
        let mut acc: u32 = 0;
        for c in &mut self.cum[1..] {
            acc += *c;
            *c = acc;
        }
        // Hand the rounding remainder to the heaviest symbol. `acc` can exceed TOTAL only if
        // rounding ran past all the slack reserved above, which the bounds rule out; the
        // saturating path keeps the table valid even then.
        if acc <= TOTAL {
            let extra = TOTAL - acc;
            for c in &mut self.cum[best + 1..] {
                *c += extra;
            }
        } else {
            let excess = (acc - TOTAL).min(freqs_best - 1);
            for c in &mut self.cum[best + 1..] {
                *c -= excess;
            }
            // Anything left over is taken from the last symbols' counts, keeping each ≥ 1.
            let mut i = n;
            while self.cum[n] > TOTAL && i > 0 {
                let over = self.cum[n] - TOTAL;
                let take = over.min(self.cum[i] - self.cum[i - 1] - 1);
                for c in &mut self.cum[i..] {
                    *c -= take;
                }
                i -= 1;
            }
        }
        debug_assert_eq!(self.cum[n], TOTAL);
    }

    /// Cost in bits of coding `sym` with this table.
    pub fn cost_bits(&self, sym: usize) -> f64 {
        (TOTAL as f64 / self.freq(sym) as f64).log2()
    }
}

impl EntropyModel<PRECISION> for Cdf {
    type Symbol = usize;
    type Probability = u32;
}

impl EncoderModel<PRECISION> for Cdf {
    fn left_cumulative_and_probability(
        &self,
        symbol: impl std::borrow::Borrow<usize>,
    ) -> Option<(u32, NonZeroU32)> {
        let s = *symbol.borrow();
        if s + 1 >= self.cum.len() {
            return None;
        }
        let left = self.cum[s];
        NonZeroU32::new(self.cum[s + 1] - left).map(|p| (left, p))
    }
}

impl DecoderModel<PRECISION> for Cdf {
    fn quantile_function(&self, quantile: u32) -> (usize, u32, NonZeroU32) {
        // The last index whose left cumulative is <= quantile. Frequencies are ≥ 1, so the
        // found interval is non-empty; a quantile ≥ TOTAL (impossible from the coder) maps
        // to the last symbol rather than panicking.
        let n = self.len();
        let idx = self.cum[..n]
            .partition_point(|&c| c <= quantile)
            .saturating_sub(1);
        let left = self.cum[idx];
        let p = self.cum[idx + 1] - left;
        (idx, left, NonZeroU32::new(p).unwrap_or(NonZeroU32::MIN))
    }
}

/// Encodes one block's symbols; call [`BlockEncoder::finish`] for the payload bytes.
pub struct BlockEncoder {
    enc: DefaultRangeEncoder,
}

impl Default for BlockEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockEncoder {
    pub fn new() -> Self {
        BlockEncoder {
            enc: DefaultRangeEncoder::new(),
        }
    }

    /// Codes one symbol under `cdf`.
    pub fn encode(&mut self, sym: u32, cdf: &Cdf) -> crate::Result<()> {
        self.enc
            .encode_symbol(sym as usize, cdf)
            .map_err(|e| crate::Error::internal(format!("range encoder: {e}")))
    }

    /// The payload: the coder's u32 words, little-endian.
    pub fn finish(self) -> Vec<u8> {
        let words = self
            .enc
            .into_compressed()
            .unwrap_or_else(|never| match never {});
        let mut out = Vec::with_capacity(words.len() * 4);
        for w in words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }
}

/// Decodes one block's symbols from its payload.
pub struct BlockDecoder {
    dec: DefaultRangeDecoder,
}

impl BlockDecoder {
    /// The payload length must be a multiple of 4 (the format checks it).
    pub fn new(payload: &[u8]) -> crate::Result<Self> {
        if payload.len() % 4 != 0 {
            return Err(crate::Error::new(crate::ErrorKind::InvalidField {
                field: "coded block length",
                value: payload.len() as u64,
            }));
        }
        let words: Vec<u32> = payload
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let dec = DefaultRangeDecoder::from_compressed(words).map_err(|_| {
            crate::Error::new(crate::ErrorKind::InvalidField {
                field: "coded block",
                value: 0,
            })
        })?;
        Ok(BlockDecoder { dec })
    }

    /// Decodes one symbol under `cdf`. Invalid data decodes to some symbol without error
    /// (a property of range coding); the block checksum catches it.
    pub fn decode(&mut self, cdf: &Cdf) -> crate::Result<u32> {
        self.dec
            .decode_symbol(cdf)
            .map(|s| s as u32)
            // Only corrupt input can make the coder fail (the CDF is always valid).
            .map_err(|_| {
                crate::Error::new(crate::ErrorKind::ChecksumMismatch {
                    what: "block (range coder rejected the data)",
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (s >> 40) as f32 / (1u64 << 24) as f32;
                u * u * u * u
            })
            .collect()
    }

    #[test]
    fn cdf_totals_and_minimum_frequency() {
        let mut cdf = Cdf::default();
        for &n in &[2usize, 3, 257, 49408] {
            for w in [weights(n, 1), vec![0.0; n], {
                let mut v = vec![0.0; n];
                v[n - 1] = 1e30;
                v
            }] {
                cdf.build_from_weights(&w);
                assert_eq!(cdf.len(), n);
                assert_eq!(cdf.cum[n], TOTAL);
                assert!((0..n).all(|i| cdf.freq(i) >= 1));
            }
        }
        // NaN and infinities do not break the table.
        cdf.build_from_weights(&[f32::NAN, f32::INFINITY, 1.0, -3.0]);
        assert_eq!(cdf.cum[4], TOTAL);
        assert!((0..4).all(|i| cdf.freq(i) >= 1));
    }

    #[test]
    fn round_trip_through_range_coder() {
        let n = 49408;
        let mut cdfs = Vec::new();
        let mut syms = Vec::new();
        for i in 0..300u64 {
            let mut c = Cdf::default();
            c.build_from_weights(&weights(n, i));
            syms.push(((i * 7919) % n as u64) as u32);
            cdfs.push(c);
        }
        let mut enc = BlockEncoder::new();
        for (s, c) in syms.iter().zip(&cdfs) {
            enc.encode(*s, c).unwrap();
        }
        let payload = enc.finish();
        let mut dec = BlockDecoder::new(&payload).unwrap();
        for (s, c) in syms.iter().zip(&cdfs) {
            assert_eq!(dec.decode(c).unwrap(), *s);
        }
    }

    #[test]
    fn pinned_test_vector() {
        // Pins the exact coded words for a fixed input: if constriction or our CDF rule
        // changes, this fails before any archive silently changes meaning.
        let mut c = Cdf::default();
        c.build_from_weights(&[0.5, 0.25, 0.125, 0.125]);
        let freqs: Vec<u32> = (0..4).map(|i| c.freq(i)).collect();
        assert_eq!(freqs, vec![8389120, 4194048, 2097024, 2097024]);
        let mut enc = BlockEncoder::new();
        for s in [0u32, 1, 2, 3, 0, 0, 3] {
            enc.encode(s, &c).unwrap();
        }
        let payload = enc.finish();
        assert_eq!(payload, vec![19, 20, 158, 91]);
        let mut dec = BlockDecoder::new(&payload).unwrap();
        for s in [0u32, 1, 2, 3, 0, 0, 3] {
            assert_eq!(dec.decode(&c).unwrap(), s);
        }
    }
}
