//! IEEE half-precision conversions, exact and identical on every machine (backend 3's
//! 16-bit key/value cache; f16 scales of GGUF blocks).

/// IEEE half → f32, exact (every f16 is an f32).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if man == 0 {
            sign
        } else {
            // Subnormal: man · 2^-24, exact in f32.
            let v = man as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
    } else if exp == 0x1f {
        sign | 0x7f80_0000 | (man << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}

/// Largest finite f16, the saturation bound of [`f32_to_f16`].
pub const F16_MAX: f32 = 65504.0;

/// f32 → IEEE half with saturation: `x` is first clamped to ±[`F16_MAX`] (NaN stays NaN),
/// then rounded to nearest, ties to even, subnormal results included; a NaN becomes the
/// quiet NaN with the top 10 payload bits, as `vcvtps2ph` gives. This is backend 3's rule
/// for storing keys and values; the F16C instruction computes the same bits (tested).
pub fn f32_to_f16(x: f32) -> u16 {
    // `clamp` keeps NaN as NaN.
    let x = x.clamp(-F16_MAX, F16_MAX);
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        // Only NaN gets here (infinities were clamped).
        return sign | 0x7e00 | (man >> 13) as u16;
    }
    let e = exp - 127 + 15;
    if e >= 1 {
        // Normal half (e ≤ 30 after clamping); rounding may carry into the exponent, which
        // is the correct next value (65504 never rounds up: its low 13 bits are zero).
        let mut h = ((e as u32) << 10) | (man >> 13);
        let rem = man & 0x1fff;
        if rem > 0x1000 || (rem == 0x1000 && h & 1 == 1) {
            h += 1;
        }
        return sign | h as u16;
    }
    // Subnormal half: the value m·2^(exp−150) in units of 2^−24 is m >> (14 − e).
    let shift = (14 - e) as u32;
    if shift >= 25 || exp == 0 {
        // Below half of the smallest subnormal (f32 subnormals included): ±0.
        return sign;
    }
    let m = man | 0x80_0000;
    let mut h = m >> shift;
    let rem = m & ((1 << shift) - 1);
    let half = 1 << (shift - 1);
    if rem > half || (rem == half && h & 1 == 1) {
        h += 1;
    }
    sign | h as u16
}

/// Converts `src` into `dst` by [`f32_to_f16`] (F16C where the CPU has it: same bits).
pub fn store(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "half::store: lengths");
    #[cfg(target_arch = "x86_64")]
    {
        if has_f16c() {
            // SAFETY: F16C and AVX2 are present (checked just above).
            unsafe { store_f16c(src, dst) };
            return;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if super::kernels::simd_enabled() {
            // SAFETY: NEON and FP are part of the aarch64 baseline.
            unsafe { neon::store(src, dst) };
            return;
        }
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f32_to_f16(s);
    }
}

/// Converts `src` into `dst` by [`f16_to_f32`].
pub fn load(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "half::load: lengths");
    #[cfg(target_arch = "x86_64")]
    {
        if has_f16c() {
            // SAFETY: F16C and AVX2 are present (checked just above).
            unsafe { load_f16c(src, dst) };
            return;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if super::kernels::simd_enabled() {
            // SAFETY: NEON and FP are part of the aarch64 baseline.
            unsafe { neon::load(src, dst) };
            return;
        }
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f16_to_f32(s);
    }
}

/// aarch64 conversions by `fcvtn` and `fcvtl` (base ARMv8-A FP/SIMD; the half-precision
/// intrinsics of `std::arch` need an unstable type, so these are two instructions of inline
/// assembly). `fcvtn` rounds by FPCR's mode, which Linux leaves at round-to-nearest-even
/// with no flush-to-zero and no default NaN: then it gives [`f32_to_f16`]'s bits after the
/// same clamp (a NaN keeps its sign and top payload bits, quieted), as the tests check.
#[cfg(target_arch = "aarch64")]
pub(super) mod neon {
    use super::{f16_to_f32, f32_to_f16, F16_MAX};
    use std::arch::aarch64::*;
    use std::arch::asm;

    /// # Safety
    /// None beyond the baseline: NEON and FP are always present on aarch64.
    pub unsafe fn store(src: &[f32], dst: &mut [u16]) {
        let n8 = src.len() / 8 * 8;
        let (hi, lo) = (vdupq_n_f32(F16_MAX), vdupq_n_f32(-F16_MAX));
        for i in (0..n8).step_by(8) {
            let p = src.as_ptr().add(i);
            // `fmin`/`fmax` return NaN when either operand is NaN, so NaN passes through.
            let a = vmaxq_f32(lo, vminq_f32(hi, vld1q_f32(p)));
            let b = vmaxq_f32(lo, vminq_f32(hi, vld1q_f32(p.add(4))));
            let h: uint16x8_t;
            asm!(
                "fcvtn {h:v}.4h, {a:v}.4s",
                "fcvtn2 {h:v}.8h, {b:v}.4s",
                a = in(vreg) a,
                b = in(vreg) b,
                h = out(vreg) h,
                options(pure, nomem, nostack, preserves_flags),
            );
            vst1q_u16(dst.as_mut_ptr().add(i), h);
        }
        for i in n8..src.len() {
            dst[i] = f32_to_f16(src[i]);
        }
    }

    /// Eight halves widened to f32 by `fcvtl`/`fcvtl2` (lanes 0–3, 4–7): exact whatever
    /// FPCR says (half subnormals become f32 normals; NaNs stay NaNs). The int8 kernels
    /// widen their block scales with it too.
    #[inline(always)]
    pub(in crate::engine) unsafe fn widen8(h: uint16x8_t) -> [float32x4_t; 2] {
        let (lo, hi): (float32x4_t, float32x4_t);
        // SAFETY: register-only conversions.
        asm!(
            "fcvtl {lo:v}.4s, {h:v}.4h",
            "fcvtl2 {hi:v}.4s, {h:v}.8h",
            h = in(vreg) h,
            lo = out(vreg) lo,
            hi = out(vreg) hi,
            options(pure, nomem, nostack, preserves_flags),
        );
        [lo, hi]
    }

    /// `fcvtl` is exact (every half is an f32), so this equals [`f16_to_f32`].
    ///
    /// # Safety
    /// None beyond the baseline.
    pub unsafe fn load(src: &[u16], dst: &mut [f32]) {
        let n8 = src.len() / 8 * 8;
        for i in (0..n8).step_by(8) {
            let [a, b] = widen8(vld1q_u16(src.as_ptr().add(i)));
            vst1q_f32(dst.as_mut_ptr().add(i), a);
            vst1q_f32(dst.as_mut_ptr().add(i + 4), b);
        }
        for i in n8..src.len() {
            dst[i] = f16_to_f32(src[i]);
        }
    }
}

/// Whether the F16C kernels run (with the AVX2 ones; `LMZIP_NO_SIMD=1` turns both off).
#[cfg(target_arch = "x86_64")]
pub fn has_f16c() -> bool {
    super::kernels::use_avx2() && std::arch::is_x86_feature_detected!("f16c")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn store_f16c(src: &[f32], dst: &mut [u16]) {
    use std::arch::x86_64::*;
    let n8 = src.len() / 8 * 8;
    let (hi, lo) = (_mm256_set1_ps(F16_MAX), _mm256_set1_ps(-F16_MAX));
    for i in (0..n8).step_by(8) {
        let x = _mm256_loadu_ps(src.as_ptr().add(i));
        // min/max return their second operand when either is NaN, so NaN passes through.
        let x = _mm256_max_ps(lo, _mm256_min_ps(hi, x));
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
        _mm_storeu_si128(dst.as_mut_ptr().add(i) as *mut __m128i, h);
    }
    for i in n8..src.len() {
        dst[i] = f32_to_f16(src[i]);
    }
}

/// `vcvtph2ps` is exact (every half is an f32), so this equals [`f16_to_f32`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn load_f16c(src: &[u16], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let n8 = src.len() / 8 * 8;
    for i in (0..n8).step_by(8) {
        let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
        _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
    }
    for i in n8..src.len() {
        dst[i] = f16_to_f32(src[i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every f16 converts to f32 and back to itself (NaNs to a NaN); F16C's conversion to
    /// f32 gives the same bits as the portable one for every half [`f32_to_f16`] can
    /// produce. (It quiets a signaling NaN, which the portable widening keeps as it is; a
    /// cache never holds one, because storing always yields a quiet NaN.)
    #[test]
    fn every_half_round_trips() {
        let all: Vec<u16> = (0..=u16::MAX).collect();
        let mut fast = vec![0f32; all.len()];
        load(&all, &mut fast);
        for (&h, f) in all.iter().zip(&fast) {
            let signaling = h & 0x7c00 == 0x7c00 && h & 0x3ff != 0 && h & 0x200 == 0;
            if signaling {
                assert!(f.is_nan());
                continue;
            }
            assert_eq!(f.to_bits(), f16_to_f32(h).to_bits(), "{h:#06x}");
        }
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            if !x.is_nan() {
                continue;
            }
            assert_eq!(
                f32_to_f16(x) & 0x7e00,
                0x7e00,
                "stored NaNs are quiet: {h:#06x}"
            );
        }
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            let back = f32_to_f16(x);
            if x.is_nan() {
                assert!(f16_to_f32(back).is_nan());
            } else if x.is_infinite() {
                // Saturation: infinities are clamped to the largest finite half.
                assert_eq!(back, (h & 0x8000) | 0x7bff);
            } else {
                assert_eq!(back, h, "{h:#06x}");
            }
        }
    }

    /// Round to nearest even at the midpoints, subnormals, saturation, signed zero.
    #[test]
    fn rounding_cases() {
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        assert_eq!(f32_to_f16(-0.0), 0x8000);
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1).
        assert_eq!(f32_to_f16(1.0 + 1.0 / 2048.0), 0x3c00);
        // 1 + 3·2^-11 is halfway between odd 1+2^-10 and even 1+2^-9: up.
        assert_eq!(f32_to_f16(1.0 + 3.0 / 2048.0), 0x3c02);
        assert_eq!(f32_to_f16(1e6), 0x7bff);
        assert_eq!(f32_to_f16(f32::NEG_INFINITY), 0xfbff);
        assert_eq!(f32_to_f16(65519.0), 0x7bff);
        // Smallest subnormal 2^-24; half of it ties to 0; a bit more rounds up.
        assert_eq!(f32_to_f16(2f32.powi(-24)), 1);
        assert_eq!(f32_to_f16(2f32.powi(-25)), 0);
        assert_eq!(f32_to_f16(2f32.powi(-25) * 1.0001), 1);
        assert_eq!(f32_to_f16(1.5 * 2f32.powi(-24)), 2);
        assert_eq!(f32_to_f16(2.5 * 2f32.powi(-24)), 2);
        // Largest subnormal rounding up into the smallest normal.
        assert_eq!(f32_to_f16(2f32.powi(-14) * (1.0 - 2f32.powi(-12))), 0x0400);
        assert_eq!(f32_to_f16(f32::MIN_POSITIVE / 2.0), 0);
    }

    /// The SIMD path (F16C, or NEON's `fcvtn`) gives the portable rule's bits. Sampled here (every exponent, sign,
    /// and the low mantissa bits around each rounding boundary); the exhaustive check over
    /// all 2^32 inputs is `cargo test --release -- --ignored simd_store_exhaustive`.
    #[test]
    fn simd_store_matches_portable_sampled() {
        let mut bits = Vec::new();
        let mut seed = 0x1234_5678_9abc_def0u64;
        for sign in [0u32, 1] {
            for exp in 0..256u32 {
                for low in [0u32, 1, 0xfff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x3000] {
                    for _ in 0..8 {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                        let man = ((seed >> 40) as u32 & 0x7f_e000) | low;
                        bits.push((sign << 31) | (exp << 23) | (man & 0x7f_ffff));
                        let any = (seed >> 20) as u32 & 0x7f_ffff;
                        bits.push((sign << 31) | (exp << 23) | any);
                    }
                }
            }
        }
        check_simd_store(&bits);
    }

    #[test]
    #[ignore = "4 billion conversions: run on demand"]
    fn simd_store_exhaustive() {
        let chunk = 1u64 << 24;
        let mut start = 0u64;
        while start < 1 << 32 {
            let bits: Vec<u32> = (start..start + chunk).map(|b| b as u32).collect();
            check_simd_store(&bits);
            start += chunk;
        }
    }

    /// Checks the SIMD store against [`f32_to_f16`] (nothing to check on a machine whose
    /// store is the portable loop).
    fn check_simd_store(bits: &[u32]) {
        let x: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        let mut got = vec![0u16; x.len()];
        #[cfg(target_arch = "x86_64")]
        {
            if !has_f16c() {
                return;
            }
            unsafe { store_f16c(&x, &mut got) };
        }
        #[cfg(target_arch = "aarch64")]
        unsafe {
            neon::store(&x, &mut got)
        };
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        return;
        for (i, (&g, &v)) in got.iter().zip(&x).enumerate() {
            let want = f32_to_f16(v);
            assert_eq!(g, want, "input {:#010x}", bits[i]);
        }
    }
}
