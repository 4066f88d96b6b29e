//! Rotary position embeddings: angle tables from our own sin/cos, in either pairing.
//!
//! A table holds (cos, sin) per frequency for one position, computed in f64 by
//! [`crate::math`] and rounded to f32 once, so that every platform rotates with the same
//! bits. Llama weights in GGUF are permuted so that RoPE turns adjacent pairs
//! (`Interleaved`); Gemma's are not, and it turns element `i` with `i + head_dim / 2`
//! (`Neox`, llama.cpp's name for it).

use crate::math::{exp_f64, ln_f64, sin_cos_f64};
use crate::{Error, ErrorKind, Result};

/// RoPE variants the engine runs, for messages.
pub const SUPPORTED_ROPE: &str = "plain RoPE with any base, linear scaling, llama3 frequency \
factors; rotary dimension = head dimension";

/// The RoPE scaling of a model, as read from its metadata.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by the factor (GGUF `rope.scaling.type = linear`).
    Linear(f32),
    /// One divisor per frequency (Llama 3.1+: GGUF tensor `rope_freqs.weight`, or computed
    /// from the checkpoint's `rope_scaling` by [`llama3_rope_factors`]).
    Factors(Vec<f32>),
}

/// Which elements of a head RoPE turns together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Elements (2i, 2i + 1): GGUF llama weights are permuted for this.
    Interleaved,
    /// Elements (i, i + head_dim/2): Gemma, GPT-NeoX.
    Neox,
}

/// The frequencies of one RoPE configuration.
#[derive(Debug, Clone)]
pub struct Rope {
    /// inv_freq[i] = θ^(−2i/head_dim), divided by the scaling, in f64.
    inv_freq: Vec<f64>,
    style: RopeStyle,
}

/// (cos, sin) per frequency for one position.
pub type RopeTable = Vec<(f32, f32)>;

impl Rope {
    /// Frequencies for a head of `head_dim` (even) with base `theta`.
    pub fn new(
        head_dim: usize,
        theta: f32,
        scaling: &RopeScaling,
        style: RopeStyle,
    ) -> Result<Self> {
        let half = head_dim / 2;
        if let RopeScaling::Factors(ff) = scaling {
            if ff.len() != half || ff.iter().any(|&x| !(x.is_finite() && x > 0.0)) {
                return Err(Error::new(ErrorKind::Model(format!(
                    "RoPE frequency factors: {half} positive values expected"
                ))));
            }
        }
        let ln_theta = ln_f64(theta as f64);
        // Scaling divides the frequency (f64, exact for a factor of 1, so plain RoPE keeps
        // its bits).
        let inv_freq = (0..half)
            .map(|i| {
                let f = exp_f64(-(2.0 * i as f64 / head_dim as f64) * ln_theta);
                match scaling {
                    RopeScaling::None => f,
                    RopeScaling::Linear(s) => f / *s as f64,
                    RopeScaling::Factors(ff) => f / ff[i] as f64,
                }
            })
            .collect();
        Ok(Rope { inv_freq, style })
    }

    /// Angles for one position, rounded to f32 once (identical on every platform).
    pub fn table(&self, pos: usize) -> RopeTable {
        self.inv_freq
            .iter()
            .map(|&f| {
                let (s, c) = sin_cos_f64(pos as f64 * f);
                (c as f32, s as f32)
            })
            .collect()
    }

    /// Rotates one head (`x.len()` = head_dim) by a position's table.
    #[inline]
    pub fn rotate(&self, x: &mut [f32], table: &[(f32, f32)]) {
        match self.style {
            RopeStyle::Interleaved => {
                for (pair, &(cos, sin)) in x.chunks_exact_mut(2).zip(table) {
                    let (a, b) = (pair[0], pair[1]);
                    pair[0] = a * cos - b * sin;
                    pair[1] = a * sin + b * cos;
                }
            }
            RopeStyle::Neox => {
                let half = x.len() / 2;
                let (lo, hi) = x.split_at_mut(half);
                for ((a, b), &(cos, sin)) in lo.iter_mut().zip(hi.iter_mut()).zip(table) {
                    let (x0, x1) = (*a, *b);
                    *a = x0 * cos - x1 * sin;
                    *b = x0 * sin + x1 * cos;
                }
            }
        }
    }

    /// Rotates every head of a row (`x.len()` a multiple of `head_dim`).
    pub fn rotate_heads(&self, x: &mut [f32], head_dim: usize, table: &[(f32, f32)]) {
        for h in x.chunks_exact_mut(head_dim) {
            self.rotate(h, table);
        }
    }
}

/// Llama 3.1's per-frequency RoPE divisors, from the checkpoint's `rope_scaling` numbers
/// (what llama.cpp's converter stores as `rope_freqs.weight`), computed in f64 with
/// lmzip's own exp/ln so that they are the same everywhere; rounded to f32 like the tensor.
pub fn llama3_rope_factors(
    head_dim: usize,
    theta: f32,
    factor: f64,
    low_freq_factor: f64,
    high_freq_factor: f64,
    original_context: f64,
) -> Vec<f32> {
    let ln_theta = ln_f64(theta as f64);
    let low_wavelen = original_context / low_freq_factor;
    let high_wavelen = original_context / high_freq_factor;
    (0..head_dim / 2)
        .map(|i| {
            let freq = exp_f64(-(2.0 * i as f64 / head_dim as f64) * ln_theta);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let f = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (original_context / wavelen - low_freq_factor)
                    / (high_freq_factor - low_freq_factor);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            f as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_pairings_rotate_by_the_same_angles() {
        let r1 = Rope::new(8, 10000.0, &RopeScaling::None, RopeStyle::Interleaved).unwrap();
        let r2 = Rope::new(8, 10000.0, &RopeScaling::None, RopeStyle::Neox).unwrap();
        let t = r1.table(5);
        let x: Vec<f32> = (0..8).map(|i| i as f32 + 1.0).collect();
        let mut a = x.clone();
        r1.rotate(&mut a, &t);
        // The Neox layout of the same pairs: (x0, x2, x4, x6 | x1, x3, x5, x7).
        let mut b: Vec<f32> = (0..4)
            .map(|i| x[2 * i])
            .chain((0..4).map(|i| x[2 * i + 1]))
            .collect();
        r2.rotate(&mut b, &t);
        for i in 0..4 {
            assert_eq!(a[2 * i], b[i]);
            assert_eq!(a[2 * i + 1], b[4 + i]);
        }
        // Position 0 is the identity.
        let mut c = x.clone();
        r2.rotate(&mut c, &r2.table(0));
        assert_eq!(c, x);
    }
}
