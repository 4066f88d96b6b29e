//! The predictor settings an archive records: which models run, their table sizes and rates.

use super::ngram;
use crate::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

/// Settings that change the distribution, recorded in the archive header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PredictorSettings {
    /// The model's control tokens are held at the coder's floor count.
    pub mask_control: bool,
    /// Token n-gram model on, with orders 1..=`ngram_order` and 2^`ngram_bits` buckets each.
    pub ngram: bool,
    pub ngram_order: u8,
    pub ngram_bits: u8,
    /// Match model on, with `match_min`-symbol contexts and 2^`match_bits` table entries.
    pub matcher: bool,
    pub match_min: u8,
    pub match_bits: u8,
    /// Adaptive logit bias on, learning rate `bias_rate` / 2^20.
    pub bias: bool,
    pub bias_rate: u16,
    /// Mixer weights selected by context (else one global set); learning rate / 2^16.
    pub mixer_ctx: bool,
    /// With `mixer_ctx`: context weights are offsets on one shared, jointly trained set.
    pub mixer_shared: bool,
    pub mixer_rate: u16,
    /// APM/SSE stage on, rate / 2^16.
    pub sse: bool,
    pub sse_rate: u16,
    /// The active head: 0 = off (every step's distribution covers every symbol); else each
    /// step covers the symbols coded so far plus the first 2^`active_log2` vocabulary ids
    /// that are not masked, and an escape for the rest (settings version 3).
    pub active_log2: u8,
    /// The continuous cache ([`super::cache`]): 0 = off; else it keeps the hidden states
    /// of the last 2^`cache_log2` positions, and `cache_theta` sharpens its similarity
    /// (settings version 4; needs the active head, whose calls give hidden states).
    pub cache_log2: u8,
    pub cache_theta: u8,
    /// With the active head: 0 = its starting set is the first ids alone; else the set also
    /// holds the first 2^`active_ascii_log2` ids whose bytes are all ASCII and every id of
    /// one ASCII byte (settings version 5). Large multilingual vocabularies number English
    /// words and punctuation late (Gemma 3's single characters come after id 236,000).
    pub active_ascii_log2: u8,
    /// With the active head: the escape model's linear probe on the hidden state, learning
    /// rate `probe_rate` / 64; 0 = off (settings version 5).
    pub probe_rate: u8,
}

/// Settings layout version this build writes with the ASCII starting set or the escape
/// probe on (version 4 is written with the continuous cache and neither of them, 3 with
/// the active head alone, 2 without the active head; all are read).
pub const SETTINGS_VERSION: u8 = 5;
/// Serialized length of version 2.
const SETTINGS_LEN_V2: usize = 12;
/// Serialized length of version 3: version 2's fields, the active head's size, a reserved 0.
const SETTINGS_LEN_V3: usize = 14;
/// Serialized length of version 4: version 3's fields, the cache's size and sharpness.
const SETTINGS_LEN_V4: usize = 16;
/// Serialized length of version 5: version 4's fields (the cache's size may be 0, off),
/// the ASCII starting set's size and the escape probe's rate.
const SETTINGS_LEN_V5: usize = 18;
/// The ASCII starting set the defaults use where the active head is on: 2^15 ids
/// (measured on the first 40 KB of alice29.txt, the OOD report and enwik6: −0.5 to −0.8%
/// beside the first 2^14 ids alone; 2^16 gains 0.2% more for a head half again as large).
pub const DEFAULT_ACTIVE_ASCII_LOG2: u8 = 15;
/// The escape probe's default rate, /64 (0.25 and 0.5 measured alike on alice29.txt's
/// first 40 KB, 1 and 2 worse).
pub const DEFAULT_PROBE_RATE: u8 = 22;
/// The continuous cache's size range, as powers of two.
pub const CACHE_LOG2: std::ops::RangeInclusive<u8> = 8..=20;
/// The cache size the defaults use where the active head is on: 16,384 positions.
pub const DEFAULT_CACHE_LOG2: u8 = 14;
/// The cache's default sharpness θ (measured: 30 beat 15, 20, 50, 100 and 300 on alice29.txt,
/// the OOD report and enwik6).
pub const DEFAULT_CACHE_THETA: u8 = 30;
/// Largest starting set of the active head, as a power of two.
pub const MAX_ACTIVE_LOG2: u8 = 24;
/// Most symbols the shared history keeps before it restarts (bounds its memory: 4 bytes
/// per symbol, 256 MiB).
pub const HISTORY_CAP: usize = 1 << 26;

impl Default for PredictorSettings {
    fn default() -> Self {
        PredictorSettings {
            mask_control: true,
            ngram: true,
            ngram_order: 4,
            ngram_bits: 18,
            matcher: true,
            match_min: 3,
            match_bits: 20,
            bias: true,
            bias_rate: 2048,
            mixer_ctx: true,
            mixer_shared: true,
            mixer_rate: 1311,
            sse: true,
            sse_rate: 1311,
            active_log2: 0,
            cache_log2: 0,
            cache_theta: DEFAULT_CACHE_THETA,
            active_ascii_log2: 0,
            probe_rate: 0,
        }
    }
}

impl PredictorSettings {
    /// The language model alone (version 1's predictor).
    pub fn llm_only() -> Self {
        PredictorSettings {
            ngram: false,
            matcher: false,
            bias: false,
            sse: false,
            ..Self::default()
        }
    }

    /// Short name of what is switched on, for tables.
    pub fn label(&self) -> String {
        let mut parts = vec!["llm"];
        if self.bias {
            parts.push("bias");
        }
        if self.ngram {
            parts.push("ngram");
        }
        if self.matcher {
            parts.push("match");
        }
        if (self.ngram || self.matcher) && !self.mixer_ctx {
            parts.push("global-mixer");
        }
        if (self.ngram || self.matcher) && self.mixer_ctx && !self.mixer_shared {
            parts.push("context-mixer");
        }
        if self.sse {
            parts.push("sse");
        }
        if self.cache_log2 > 0 {
            parts.push("cache");
        }
        if self.active_log2 > 0 {
            parts.push("active-head");
        }
        if self.active_ascii_log2 > 0 {
            parts.push("ascii-set");
        }
        if self.probe_rate > 0 {
            parts.push("escape-probe");
        }
        parts.join("+")
    }

    fn flags(&self) -> u8 {
        (self.mask_control as u8)
            | (self.ngram as u8) << 1
            | (self.matcher as u8) << 2
            | (self.bias as u8) << 3
            | (self.mixer_ctx as u8) << 4
            | (self.sse as u8) << 5
            | (self.mixer_shared as u8) << 6
    }

    /// Serialized form (docs/FORMAT.md): version, flags, four table sizes, three rates; in
    /// version 3 the active head's size and a reserved byte; in version 4 also the
    /// continuous cache's size and sharpness.
    pub fn to_bytes(&self) -> Vec<u8> {
        let version = if self.active_ascii_log2 > 0 || self.probe_rate > 0 {
            5
        } else if self.cache_log2 > 0 {
            4
        } else if self.active_log2 > 0 {
            3
        } else {
            2
        };
        let mut b = vec![
            version,
            self.flags(),
            self.ngram_order,
            self.ngram_bits,
            self.match_min,
            self.match_bits,
        ];
        b.extend_from_slice(&self.bias_rate.to_le_bytes());
        b.extend_from_slice(&self.mixer_rate.to_le_bytes());
        b.extend_from_slice(&self.sse_rate.to_le_bytes());
        if version >= 3 {
            b.extend_from_slice(&[self.active_log2, 0]);
        }
        if version >= 4 {
            b.extend_from_slice(&[self.cache_log2, self.cache_theta]);
        }
        if version == 5 {
            b.extend_from_slice(&[self.active_ascii_log2, self.probe_rate]);
        }
        b
    }

    /// Parses and validates the serialized form; every value outside its range is refused
    /// before anything is allocated from it.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        let bad = |field: &'static str, value: u64| {
            Err(Error::new(ErrorKind::InvalidField { field, value }))
        };
        let version = match b.first() {
            None => return bad("predictor settings length", 0),
            Some(&v) if !(2..=5).contains(&v) => {
                return Err(Error::new(ErrorKind::UnsupportedPredictor { version: v }))
            }
            Some(&v) => v,
        };
        let want = match version {
            2 => SETTINGS_LEN_V2,
            3 => SETTINGS_LEN_V3,
            4 => SETTINGS_LEN_V4,
            _ => SETTINGS_LEN_V5,
        };
        if b.len() != want {
            return bad("predictor settings length", b.len() as u64);
        }
        let flags = b[1];
        if flags & !0x7f != 0 {
            return Err(Error::new(ErrorKind::ReservedBitsSet {
                field: "predictor flags",
                value: flags as u64,
            }));
        }
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let s = PredictorSettings {
            mask_control: flags & 1 != 0,
            ngram: flags & 2 != 0,
            ngram_order: b[2],
            ngram_bits: b[3],
            matcher: flags & 4 != 0,
            match_min: b[4],
            match_bits: b[5],
            bias: flags & 8 != 0,
            bias_rate: u16_at(6),
            mixer_ctx: flags & 16 != 0,
            mixer_shared: flags & 64 != 0,
            mixer_rate: u16_at(8),
            sse: flags & 32 != 0,
            sse_rate: u16_at(10),
            active_log2: if version >= 3 { b[12] } else { 0 },
            cache_log2: if version >= 4 { b[14] } else { 0 },
            cache_theta: if version >= 4 {
                b[15]
            } else {
                DEFAULT_CACHE_THETA
            },
            active_ascii_log2: if version == 5 { b[16] } else { 0 },
            probe_rate: if version == 5 { b[17] } else { 0 },
        };
        if version >= 3 && !(1..=MAX_ACTIVE_LOG2).contains(&s.active_log2) {
            return bad("active head size", s.active_log2 as u64);
        }
        // Version 5 may leave the cache off (size 0); version 4 exists to turn it on.
        let cache_off = version == 5 && s.cache_log2 == 0;
        if version >= 4 && !cache_off && !CACHE_LOG2.contains(&s.cache_log2) {
            return bad("cache size", s.cache_log2 as u64);
        }
        if version >= 4 && s.cache_theta == 0 {
            return bad("cache sharpness", 0);
        }
        if version == 5 && s.active_ascii_log2 > MAX_ACTIVE_LOG2 {
            return bad("ASCII starting set size", s.active_ascii_log2 as u64);
        }
        if version >= 3 && b[13] != 0 {
            return Err(Error::new(ErrorKind::ReservedBitsSet {
                field: "predictor settings byte 13",
                value: b[13] as u64,
            }));
        }
        if !(1..=8).contains(&s.ngram_order) {
            return bad("n-gram order", s.ngram_order as u64);
        }
        if !(8..=22).contains(&s.ngram_bits) {
            return bad("n-gram table bits", s.ngram_bits as u64);
        }
        if !(2..=16).contains(&s.match_min) {
            return bad("match minimum length", s.match_min as u64);
        }
        if !(8..=24).contains(&s.match_bits) {
            return bad("match table bits", s.match_bits as u64);
        }
        Ok(s)
    }

    /// Memory the predictor state takes at most, in bytes (documented limit), for a model
    /// whose hidden states have `width` components.
    pub fn memory_bytes(&self, num_symbols: usize, width: usize) -> usize {
        let mut m = num_symbols * 4 * 2; // bias + allowed mask, roughly
        if self.cache_log2 > 0 {
            m += (width + 8) << self.cache_log2;
        }
        if self.ngram {
            m += self.ngram_order as usize
                * (1usize << self.ngram_bits)
                * std::mem::size_of::<[u32; 1 + 2 * ngram::SLOTS]>();
        }
        if self.matcher {
            m += 4 << self.match_bits;
            m += HISTORY_CAP * 4;
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `good` with each (byte index, value) set in turn is refused.
    fn refuses_each(good: &[u8], cases: &[(usize, u8)]) {
        for &(i, v) in cases {
            let mut bad = good.to_vec();
            bad[i] = v;
            assert!(
                PredictorSettings::from_bytes(&bad).is_err(),
                "version {} byte {i} = {v}",
                good[0]
            );
        }
    }

    #[test]
    fn settings_round_trip_and_reject_unknown() {
        let active = PredictorSettings {
            active_log2: 13,
            ..PredictorSettings::default()
        };
        for s in [
            PredictorSettings::default(),
            PredictorSettings::llm_only(),
            active.clone(),
        ] {
            assert_eq!(PredictorSettings::from_bytes(&s.to_bytes()).unwrap(), s);
        }
        let cache = PredictorSettings {
            cache_log2: 14,
            cache_theta: 30,
            ..active.clone()
        };
        let c = cache.to_bytes();
        assert_eq!((c[0], c.len()), (4, 16));
        assert_eq!(PredictorSettings::from_bytes(&c).unwrap(), cache);
        refuses_each(&c, &[(14, 7), (14, 21), (15, 0)]);
        assert!(PredictorSettings::from_bytes(&c[..14]).is_err());
        let v5 = PredictorSettings {
            active_ascii_log2: DEFAULT_ACTIVE_ASCII_LOG2,
            probe_rate: DEFAULT_PROBE_RATE,
            ..cache.clone()
        };
        let f = v5.to_bytes();
        assert_eq!((f[0], f.len()), (5, 18));
        assert_eq!(f[1..16], c[1..16]);
        assert_eq!(PredictorSettings::from_bytes(&f).unwrap(), v5);
        // Version 5 may turn the cache off; either new field alone selects it.
        for s in [
            PredictorSettings {
                cache_log2: 0,
                ..v5.clone()
            },
            PredictorSettings {
                probe_rate: 0,
                ..v5.clone()
            },
            PredictorSettings {
                active_ascii_log2: 0,
                ..v5.clone()
            },
        ] {
            let b = s.to_bytes();
            assert_eq!(b[0], 5);
            assert_eq!(PredictorSettings::from_bytes(&b).unwrap(), s);
        }
        refuses_each(&f, &[(14, 7), (15, 0), (16, 25)]);
        assert!(PredictorSettings::from_bytes(&f[..16]).is_err());
        let mut v4_cache_off = c.clone();
        v4_cache_off[14] = 0;
        assert!(PredictorSettings::from_bytes(&v4_cache_off).is_err());
        let b = active.to_bytes();
        assert_eq!((b[0], b.len()), (3, 14));
        let mut bad = b.clone();
        bad[12] = 25;
        assert!(PredictorSettings::from_bytes(&bad).is_err());
        let mut bad = b.clone();
        bad[13] = 1;
        assert!(PredictorSettings::from_bytes(&bad).is_err());
        assert!(PredictorSettings::from_bytes(&b[..12]).is_err());
        let good = PredictorSettings::default().to_bytes();
        let mut b = good.clone();
        b[1] |= 0x80;
        assert!(PredictorSettings::from_bytes(&b).is_err());
        let mut b = good.clone();
        b[3] = 40;
        assert!(PredictorSettings::from_bytes(&b).is_err());
        assert!(PredictorSettings::from_bytes(&[1, 1]).is_err());
        assert!(PredictorSettings::from_bytes(&good[..5]).is_err());
        assert!(PredictorSettings::from_bytes(&[]).is_err());
    }
}
