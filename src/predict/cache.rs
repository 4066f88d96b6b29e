//! Continuous cache: what followed the earlier positions whose hidden state was most like
//! this one's.
//!
//! After Grave, Joulin and Usunier, "Improving neural language models with a continuous
//! cache" (ICLR 2017). Every coded position leaves a key, the model's final hidden state
//! quantized to int8, and the symbol that came there. A prediction scores every key by
//! cosine similarity with the current hidden state and gives each symbol the weight
//! Σ exp(θ·(cos − cos_max)) of the keys it followed. It reaches past the window and across
//! blocks (the keys of every stream and every earlier block are there), and it matches
//! contexts by meaning where the n-gram model needs the same tokens.
//!
//! Exact on both sides: the quantization is f32 in a fixed order, dot products are integer,
//! the similarities and weights are f32 in key order with our own exp.
use serde::{Deserialize, Serialize};

use crate::math::exp_f32;

/// Similarity buckets, each its own mixer slot (the mixer learns how far to trust a match
/// of each closeness).
pub const BUCKETS: usize = 6;

/// The bucket of the best similarity found.
fn bucket(cos_max: f32) -> usize {
    match cos_max {
        c if c < 0.80 => 0,
        c if c < 0.85 => 1,
        c if c < 0.90 => 2,
        c if c < 0.93 => 3,
        c if c < 0.96 => 4,
        _ => 5,
    }
}

/// Keys whose weight would fall below e^−CUT of the best one's are skipped.
const CUT: f32 = 10.0;

/// One position's hidden state as a key: int8 components and the reciprocal of its norm.
#[derive(Clone, Default)]
pub struct Key {
    q: Vec<i8>,
    inv_norm: f32,
}

impl Key {
    /// Quantizes `h` to int8 against its largest magnitude (all zeros when it has none).
    pub fn quantize(&mut self, h: &[f32]) {
        let m = h
            .iter()
            .fold(0f32, |m, &x| if x.abs() > m { x.abs() } else { m });
        self.q.clear();
        if !(m > 0.0 && m.is_finite()) {
            self.q.resize(h.len(), 0);
            self.inv_norm = 0.0;
            return;
        }
        let s = 127.0 / m;
        // Components stay in −127..=127 (the AVX2 dot product needs −128 absent); `as i8`
        // maps NaN to 0.
        self.q.extend(
            h.iter()
                .map(|&x| (x * s).round().clamp(-127.0, 127.0) as i8),
        );
        let n2: i32 = self.q.iter().map(|&x| i32::from(x) * i32::from(x)).sum();
        // n2 ≤ 127² · width < 2^24 for widths up to 1,040: exact as f32.
        self.inv_norm = if n2 > 0 {
            1.0 / (n2 as f32).sqrt()
        } else {
            0.0
        };
    }
}

/// Exact int8 dot product (an integer sum: the same in any order).
#[inline]
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}

/// The dot products of `q` with every key (rows of `q.len()` in `keys`), into `out`.
/// Integer sums, so the AVX2 and portable paths give the same values.
fn dots(q: &[i8], keys: &[i8], out: &mut Vec<i32>) {
    out.clear();
    if q.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::engine::kernels::use_avx2() {
        // SAFETY: AVX2 is present.
        unsafe { dots_avx2(q, keys, out) };
        return;
    }
    out.extend(keys.chunks_exact(q.len()).map(|k| dot_i8(q, k)));
}

/// [`dots`] with AVX2: |q|·sign(k, q) through `maddubs` (pairs of products at most
/// 2·127·127 < 2^15, so no saturation; −128 never occurs, see [`Key::quantize`]), then
/// pairs summed to 32 bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dots_avx2(q: &[i8], keys: &[i8], out: &mut Vec<i32>) {
    use std::arch::x86_64::*;
    let w = q.len();
    let n32 = w / 32 * 32;
    let ones = _mm256_set1_epi16(1);
    for k in keys.chunks_exact(w) {
        let mut acc = _mm256_setzero_si256();
        let mut i = 0;
        while i < n32 {
            let a = _mm256_loadu_si256(q.as_ptr().add(i) as *const __m256i);
            let b = _mm256_loadu_si256(k.as_ptr().add(i) as *const __m256i);
            let p = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
            i += 32;
        }
        let s = _mm_add_epi32(
            _mm256_castsi256_si128(acc),
            _mm256_extracti128_si256::<1>(acc),
        );
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        out.push(_mm_cvtsi128_si32(s) + dot_i8(&q[n32..], &k[n32..]));
    }
}

/// What the cache predicts at one position: symbols with probabilities, and the bucket of
/// the closest key.
#[derive(Clone, Default)]
pub struct Prediction {
    pub syms: Vec<u32>,
    pub p: Vec<f32>,
    pub bucket: usize,
    /// Each symbol's place in `syms` plus one (0: absent), indexed by symbol.
    index: Vec<u32>,
    dots: Vec<i32>,
}

impl Prediction {
    /// The probability the cache gave `sym`.
    pub fn prob(&self, sym: u32) -> f32 {
        match self.index.get(sym as usize) {
            Some(&j) if j > 0 => self.p[j as usize - 1],
            _ => 0.0,
        }
    }

    fn clear(&mut self) {
        for &s in &self.syms {
            self.index[s as usize] = 0;
        }
        self.syms.clear();
        self.p.clear();
    }
}

/// The keys of the last 2^k positions coded (a ring), and the symbols that followed them.
#[derive(Serialize, Deserialize)]
pub struct HiddenCache {
    width: usize,
    cap: usize,
    theta: f32,
    keys: Vec<i8>,
    inv_norms: Vec<f32>,
    syms: Vec<u32>,
    next: usize,
}

impl HiddenCache {
    /// A cache of `2^log2` keys of `width` components; `theta` sharpens the similarity.
    pub fn new(width: usize, log2: u8, theta: f32) -> Self {
        HiddenCache {
            width,
            cap: 1 << log2,
            theta,
            keys: Vec::new(),
            inv_norms: Vec::new(),
            syms: Vec::new(),
            next: 0,
        }
    }

    /// The prediction for the position whose hidden state is `key` into `out`; false (and
    /// `out` empty) when the cache has nothing to say.
    pub fn predict(&self, key: &Key, out: &mut Prediction) -> bool {
        out.clear();
        let n = self.syms.len();
        if n == 0 || key.inv_norm == 0.0 || key.q.len() != self.width {
            return false;
        }
        dots(&key.q, &self.keys, &mut out.dots);
        // |dot| < 2^24: exact as f32; then two products in a fixed order.
        let sim = |i: usize, d: i32| d as f32 * key.inv_norm * self.inv_norms[i];
        let mut max = f32::NEG_INFINITY;
        for (i, &d) in out.dots.iter().enumerate() {
            max = max.max(sim(i, d));
        }
        let floor = max - CUT / self.theta;
        let mut total = 0f32;
        for (i, &d) in out.dots.iter().enumerate() {
            let c = sim(i, d);
            if c < floor {
                continue;
            }
            let w = exp_f32(self.theta * (c - max));
            total += w;
            let sym = self.syms[i] as usize;
            if out.index.len() <= sym {
                out.index.resize(sym + 1, 0);
            }
            match out.index[sym] {
                0 => {
                    out.syms.push(sym as u32);
                    out.p.push(w);
                    out.index[sym] = out.syms.len() as u32;
                }
                j => out.p[j as usize - 1] += w,
            }
        }
        let inv = 1.0 / total;
        for p in &mut out.p {
            *p *= inv;
        }
        out.bucket = bucket(max);
        true
    }

    /// Adds the key of a position just coded and the symbol that came there, replacing the
    /// oldest key once the cache is full.
    pub fn insert(&mut self, key: &Key, sym: u32) {
        if key.q.len() != self.width {
            return;
        }
        if self.syms.len() < self.cap {
            self.keys.extend_from_slice(&key.q);
            self.inv_norms.push(key.inv_norm);
            self.syms.push(sym);
        } else {
            let i = self.next;
            self.keys[i * self.width..(i + 1) * self.width].copy_from_slice(&key.q);
            self.inv_norms[i] = key.inv_norm;
            self.syms[i] = sym;
        }
        self.next = (self.next + 1) % self.cap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closest_key_wins_and_probabilities_add_up() {
        let mut c = HiddenCache::new(4, 2, 30.0);
        let mut k = Key::default();
        for (h, s) in [
            ([1.0, 0.0, 0.0, 0.0], 7u32),
            ([0.0, 1.0, 0.0, 0.0], 8),
            ([0.9, 0.1, 0.0, 0.0], 7),
        ] {
            k.quantize(&h);
            c.insert(&k, s);
        }
        k.quantize(&[1.0, 0.05, 0.0, 0.0]);
        let mut out = Prediction::default();
        assert!(c.predict(&k, &mut out));
        assert!(out.prob(7) > 0.99, "{}", out.prob(7));
        let sum: f32 = out.p.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5);
        assert_eq!(out.bucket, BUCKETS - 1);
        // The ring: two more keys push out the two oldest (capacity 4).
        for s in [9, 10] {
            k.quantize(&[0.0, 0.0, 1.0, 0.0]);
            c.insert(&k, s);
        }
        assert_eq!(c.syms, [10, 8, 7, 9]);
    }

    #[test]
    fn avx2_and_portable_dots_agree() {
        let mut r = crate::test_rng::Lcg(7);
        for w in [1usize, 31, 32, 33, 640, 655] {
            let q: Vec<i8> = (0..w)
                .map(|_| ((r.next() % 255) as i32 - 127) as i8)
                .collect();
            let keys: Vec<i8> = (0..w * 5)
                .map(|_| ((r.next() % 255) as i32 - 127) as i8)
                .collect();
            let mut got = Vec::new();
            dots(&q, &keys, &mut got);
            let want: Vec<i32> = keys.chunks_exact(w).map(|k| dot_i8(&q, k)).collect();
            assert_eq!(got, want, "width {w}");
        }
    }

    #[test]
    fn zero_and_nan_states_say_nothing() {
        let mut c = HiddenCache::new(3, 4, 30.0);
        let mut k = Key::default();
        k.quantize(&[1.0, 2.0, 3.0]);
        c.insert(&k, 1);
        let mut out = Prediction::default();
        k.quantize(&[0.0, 0.0, 0.0]);
        assert!(!c.predict(&k, &mut out));
        k.quantize(&[f32::NAN, f32::NAN, f32::NAN]);
        assert!(!c.predict(&k, &mut out));
        assert!(out.syms.is_empty());
    }
}
