//! Predictors: turn the model's logits (and, later, other models) into one distribution.
//!
//! Version 1 of the predictor settings has one predictor, the language model: a softmax of
//! its logits computed with our own exp in a fixed order. Symbols the tokenizer never
//! produces (the model's control tokens) and the raw-byte escapes get no probability mass
//! beyond the coder's floor of one count, so they stay codable but cost nothing to exclude.

use crate::coder::Cdf;
use crate::engine::math::exp_f32;
use crate::{Error, ErrorKind, Result};

/// Settings that change the distribution, recorded in the archive header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictorSettings {
    /// Predictor settings layout version (1).
    pub version: u8,
    /// Whether the model's control tokens are masked to the floor count.
    pub mask_control: bool,
}

/// Settings layout version this build writes and reads.
pub const SETTINGS_VERSION: u8 = 1;

impl Default for PredictorSettings {
    fn default() -> Self {
        PredictorSettings {
            version: SETTINGS_VERSION,
            mask_control: true,
        }
    }
}

impl PredictorSettings {
    /// Serialized form: `[version, flags]`; flag bit 0 = mask control tokens.
    pub fn to_bytes(&self) -> Vec<u8> {
        vec![self.version, self.mask_control as u8]
    }

    /// Parses and validates the serialized form.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        match b {
            [SETTINGS_VERSION, flags] => {
                if flags & !1 != 0 {
                    return Err(Error::new(ErrorKind::ReservedBitsSet {
                        field: "predictor flags",
                        value: *flags as u64,
                    }));
                }
                Ok(PredictorSettings {
                    version: SETTINGS_VERSION,
                    mask_control: flags & 1 == 1,
                })
            }
            [v, ..] if *v != SETTINGS_VERSION => Err(Error::new(ErrorKind::InvalidField {
                field: "predictor settings version",
                value: *v as u64,
            })),
            _ => Err(Error::new(ErrorKind::InvalidField {
                field: "predictor settings length",
                value: b.len() as u64,
            })),
        }
    }
}

/// Builds distributions. Holds scratch space so no step allocates; cloned per thread.
#[derive(Clone)]
pub struct Predictor {
    /// Per symbol: false if the symbol is held at the floor count.
    allowed: Vec<bool>,
    weights: Vec<f32>,
}

impl Predictor {
    /// `num_symbols` = vocabulary + escapes; `masked` lists vocabulary ids held at the floor.
    pub fn new(
        settings: &PredictorSettings,
        vocab: usize,
        num_symbols: usize,
        masked: &[u32],
    ) -> Self {
        let mut allowed = vec![false; num_symbols];
        allowed[..vocab].fill(true);
        if settings.mask_control {
            for &m in masked {
                if let Some(a) = allowed.get_mut(m as usize) {
                    *a = false;
                }
            }
        }
        Predictor {
            allowed,
            weights: vec![0.0; num_symbols],
        }
    }

    /// The distribution of the next symbol given the model's logits for this position.
    pub fn distribution(&mut self, logits: &[f32], cdf: &mut Cdf) {
        let mut max = f32::NEG_INFINITY;
        for (l, &a) in logits.iter().zip(&self.allowed) {
            if a {
                max = max.max(*l);
            }
        }
        for ((w, &l), &a) in self.weights.iter_mut().zip(logits).zip(&self.allowed) {
            *w = if a { exp_f32(l - max) } else { 0.0 };
        }
        // Symbols past the logits (the escapes) keep weight 0.
        for w in &mut self.weights[logits.len().min(self.allowed.len())..] {
            *w = 0.0;
        }
        cdf.build_from_weights(&self.weights);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_reject_unknown() {
        let s = PredictorSettings::default();
        assert_eq!(PredictorSettings::from_bytes(&s.to_bytes()).unwrap(), s);
        assert!(PredictorSettings::from_bytes(&[1, 2]).is_err());
        assert!(PredictorSettings::from_bytes(&[9, 0]).is_err());
        assert!(PredictorSettings::from_bytes(&[]).is_err());
    }

    #[test]
    fn masked_and_escape_symbols_get_the_floor() {
        let mut p = Predictor::new(&PredictorSettings::default(), 4, 6, &[0]);
        let mut cdf = Cdf::default();
        p.distribution(&[10.0, 1.0, 2.0, 3.0], &mut cdf);
        assert_eq!(cdf.freq(0), 1);
        assert_eq!(cdf.freq(4), 1);
        assert_eq!(cdf.freq(5), 1);
        assert!(cdf.freq(3) > cdf.freq(2) && cdf.freq(2) > cdf.freq(1));
    }
}
