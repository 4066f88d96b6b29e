//! Deterministic scalar math: our own exp, ln, sin and cos, and fixed-order reductions.
//!
//! Everything here is built from IEEE-754 operations that every conforming platform rounds
//! identically (+, −, ×, ÷, sqrt, conversions), in an order written out in the source. libm's
//! transcendental functions are not used because their last bits differ between platforms,
//! and one differing bit in a probability makes an archive undecodable elsewhere. Rust never
//! contracts `a * b + c` into a fused multiply-add on its own, so the order below is the order
//! the machine executes, whatever the SIMD width.

/// Number of independent accumulation lanes in every reduction. Lane `j` sums the elements
/// whose index is `j` modulo `LANES`; lanes are then combined by a fixed pairwise tree. A
/// compiler may map the lanes onto one AVX register or two SSE registers: same result.
pub const LANES: usize = 8;

/// Combines the lanes of an accumulator in a fixed pairwise order.
#[inline(always)]
pub fn hsum(a: [f32; LANES]) -> f32 {
    ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
}

/// Largest element (NaN ignored; −∞ for an empty slice). Max is exact and order-free, so
/// the lane split changes only speed.
#[inline]
pub fn max_f32(xs: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            m[l] = if c[l] > m[l] { c[l] } else { m[l] };
        }
    }
    for (l, &x) in rest.iter().enumerate() {
        m[l] = if x > m[l] { x } else { m[l] };
    }
    m.into_iter()
        .fold(f32::NEG_INFINITY, |a, b| if b > a { b } else { a })
}

/// Index of the first element equal to `v`, checking 8 lanes at a time.
#[inline]
pub fn first_eq(xs: &[f32], v: f32) -> Option<usize> {
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for (k, c) in chunks.enumerate() {
        let mut hits = 0u32;
        for (l, &x) in c.iter().enumerate() {
            hits |= ((x == v) as u32) << l;
        }
        if hits != 0 {
            return Some(k * LANES + hits.trailing_zeros() as usize);
        }
    }
    rest.iter()
        .position(|&x| x == v)
        .map(|i| xs.len() - rest.len() + i)
}

/// Dot product in the fixed lane order. Lengths must be equal and a multiple of `LANES`
/// (the model's dimensions all are; callers check at load time).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    debug_assert_eq!(a.len() % LANES, 0);
    let mut acc = [0f32; LANES];
    for (ca, cb) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] += ca[l] * cb[l];
        }
    }
    hsum(acc)
}

/// [`dot`] with explicit AVX2 registers: one 8-wide register is exactly the `LANES`
/// accumulators (separate multiply and add, no FMA), then the same [`hsum`].
///
/// # Safety
/// AVX2 must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    assert!(a.len() == b.len() && a.len() % LANES == 0);
    let mut acc = _mm256_setzero_ps();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    for i in (0..a.len()).step_by(LANES) {
        acc = _mm256_add_ps(
            acc,
            _mm256_mul_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))),
        );
    }
    let mut l = [0f32; LANES];
    _mm256_storeu_ps(l.as_mut_ptr(), acc);
    hsum(l)
}

/// Sum of squares in the fixed lane order.
#[inline(always)]
pub fn sum_sq(a: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    for ca in a.chunks_exact(LANES) {
        for l in 0..LANES {
            acc[l] += ca[l] * ca[l];
        }
    }
    hsum(acc)
}

/// Σ a in the fixed 8-lane order: lane *j* adds the elements whose index is *j* mod 8, in
/// index order (a length that is not a multiple of 8 leaves the last lanes shorter), then
/// [`hsum`]. A chain eight times shorter than a sequential sum, and the same bits at any
/// SIMD width.
#[inline]
pub fn sum_lanes(a: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = a.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    for (l, &x) in rest.iter().enumerate() {
        acc[l] += x;
    }
    hsum(acc)
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 split so that n * LN2_HI is exact for |n| < 2^8 (Cody–Waite reduction).
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;

/// e^x in f32 with a relative error of a few ulp, branch-free so loops over it vectorize.
/// Inputs below −87 give 0-ish tiny values (clamped), above 88 are clamped.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E;
    // Round half away from zero through an exact truncating conversion.
    // (copysign instead of a branch so loops over this function vectorize.)
    // SAFETY: after the clamp |t| < 128, so t ± 0.5 is finite and inside i32; the unchecked
    // conversion then equals `as i32` and, unlike it, vectorizes (cvttps2dq).
    let n: i32 = unsafe { (t + 0.5f32.copysign(t)).to_int_unchecked() };
    let nf = n as f32;
    let r = (x - nf * LN2_HI) - nf * LN2_LO;
    // Taylor polynomial of e^r on |r| <= 0.35, Horner form, degree 7.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2^n by building the exponent bits; n is in [-126, 127] after the clamp.
    p * f32::from_bits(((n + 127) as u32) << 23)
}

/// Natural log in f32 for positive finite x (the mixer's stretch; a few ulp).
/// Zero and subnormals are clamped to the smallest normal; callers pass probabilities.
#[inline]
pub fn ln_f32(x: f32) -> f32 {
    let x = x.max(f32::MIN_POSITIVE);
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | (127 << 23));
    // Centre the mantissa on 1 so the series argument stays small: m in [√½, √2).
    if m > std::f32::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    // ln m = 2 atanh(s), s = (m−1)/(m+1), |s| <= 0.172: five odd terms reach f32 precision.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let series =
        s * (2.0 + s2 * (2.0 / 3.0 + s2 * (2.0 / 5.0 + s2 * (2.0 / 7.0 + s2 * (2.0 / 9.0)))));
    series + e as f32 * std::f32::consts::LN_2
}

/// Logit: ln(p / (1 − p)).
#[inline]
pub fn stretch(p: f32) -> f32 {
    ln_f32(p) - ln_f32(1.0 - p)
}

/// Logistic: 1 / (1 + e^−x).
#[inline]
pub fn squash(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// SiLU, x·σ(x), with our exp.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp_f32(-x))
}

/// e^x in f64 for table construction (not on a hot path): Cody–Waite reduction then a
/// Taylor series long enough for full double precision on |r| <= ln2/2.
pub fn exp_f64(x: f64) -> f64 {
    if x < -700.0 {
        return 0.0;
    }
    let x = x.min(700.0);
    const LN2_HI64: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO64: f64 = 1.908_214_929_270_587_7e-10;
    let t = x * std::f64::consts::LOG2_E;
    let n = (t + if t >= 0.0 { 0.5 } else { -0.5 }) as i64;
    let nf = n as f64;
    let r = (x - nf * LN2_HI64) - nf * LN2_LO64;
    let mut term = 1.0f64;
    let mut sum = 1.0f64;
    for i in 1..=20 {
        term = term * r / i as f64;
        sum += term;
    }
    sum * f64::from_bits(((n + 1023) as u64) << 52)
}

/// Natural log in f64 for positive finite x (table construction only).
pub fn ln_f64(x: f64) -> f64 {
    assert!(x > 0.0 && x.is_finite(), "ln_f64 of {x}");
    // x = m · 2^e with m in [1, 2): split through the bits (normal numbers only; the
    // model's constants are far from subnormal).
    let bits = x.to_bits();
    let e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | (1023u64 << 52));
    // ln m = 2 atanh((m−1)/(m+1)), |s| <= 1/3: the series converges fast.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0f64;
    let mut k = 1.0f64;
    for _ in 0..40 {
        sum += term / k;
        term *= s2;
        k += 2.0;
    }
    2.0 * sum + e as f64 * std::f64::consts::LN_2
}

/// (sin x, cos x) in f64 for table construction, for |x| up to about 1e6.
pub fn sin_cos_f64(x: f64) -> (f64, f64) {
    // Reduce by π/2 with a three-part constant so that the reduction stays accurate for the
    // angles RoPE needs (position × frequency, at most ~65536 rad).
    const PIO2_1: f64 = 1.570_796_326_734_125_6;
    const PIO2_2: f64 = 6.077_100_506_303_966e-11;
    const PIO2_3: f64 = 2.022_266_248_795_950_6e-21;
    let t = x * std::f64::consts::FRAC_2_PI;
    let q = (t + if t >= 0.0 { 0.5 } else { -0.5 }) as i64;
    let qf = q as f64;
    let r = ((x - qf * PIO2_1) - qf * PIO2_2) - qf * PIO2_3;
    let r2 = r * r;
    // Taylor series on |r| <= π/4.
    let mut s_term = r;
    let mut s = 0.0f64;
    let mut c_term = 1.0f64;
    let mut c = 0.0f64;
    for i in 0..12 {
        s += s_term;
        c += c_term;
        let k = (2 * i + 2) as f64;
        s_term = -s_term * r2 / (k * (k + 1.0));
        c_term = -c_term * r2 / ((k - 1.0) * k);
    }
    match q.rem_euclid(4) {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_is_accurate() {
        let mut worst = 0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let got = exp_f32(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 1e-6, "worst relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1000.0) < 1e-37);
    }

    #[test]
    fn f64_helpers_are_accurate() {
        for &x in &[-20.0, -1.0, -1e-3, 0.0, 0.5, 3.0, 11.5] {
            let (a, b) = (exp_f64(x), f64::exp(x));
            assert!(((a - b) / b).abs() < 1e-14, "exp {x}: {a} vs {b}");
        }
        for &x in &[1e-5, 0.3, 1.0, 2.0, 10000.0, 100000.0, 1e9] {
            let (a, b) = (ln_f64(x), f64::ln(x));
            assert!(
                (a - b).abs() < 1e-13 * b.abs().max(1.0),
                "ln {x}: {a} vs {b}"
            );
        }
        for i in 0..20000 {
            let x = i as f64 * 3.3 - 30000.0;
            let (s, c) = sin_cos_f64(x);
            assert!((s - x.sin()).abs() < 1e-11, "sin {x}");
            assert!((c - x.cos()).abs() < 1e-11, "cos {x}");
        }
    }

    #[test]
    fn ln_f32_is_accurate() {
        let mut x = 1e-30f32;
        while x < 1e30 {
            let (got, want) = (ln_f32(x) as f64, (x as f64).ln());
            assert!((got - want).abs() < 2e-6 * want.abs().max(1.0), "ln {x}");
            x *= 1.37;
        }
        assert!((squash(stretch(0.3)) - 0.3).abs() < 1e-6);
    }

    #[test]
    fn dot_uses_fixed_lane_order() {
        let a: Vec<f32> = (0..64).map(|i| 1.0 / (i as f32 + 1.0)).collect();
        let b: Vec<f32> = (0..64).map(|i| (i as f32).sqrt()).collect();
        let mut lanes = [0f32; LANES];
        for i in 0..64 {
            lanes[i % LANES] += a[i] * b[i];
        }
        assert_eq!(dot(&a, &b).to_bits(), hsum(lanes).to_bits());
    }
}
