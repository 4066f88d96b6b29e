//! NEON tiles of the int8 kernels (aarch64): 8 output columns × up to 4 activation rows,
//! the same integer sums and the same f32 operations as [`super::tile_scalar`].
//!
//! Requires only the base ARMv8-A Advanced SIMD and FP units (every aarch64 Linux CPU has
//! them; no `dotprod`, no FEAT_FP16 arithmetic), so there is no runtime detection:
//! `LMZIP_NO_SIMD=1` alone selects the portable tile instead.
//!
//! A packed vector of 32 bytes holds 4 consecutive quants of each of 8 columns (see
//! [`super::QMat`]); NEON takes it as two 16-byte halves, columns 0–3 and 4–7. For one half
//! and a broadcast of the activation's 4 bytes, `smull`/`smull2` form the 16 byte products
//! as i16 (|w·x| ≤ 128·127 = 16,256), `addp` adds neighbouring products (≤ 32,512: no
//! overflow for any weight kind), and `sadalp` adds neighbouring pairs into each column's
//! i32 accumulator: exactly Σ w·x over the column's 4 bytes. Every block's i32 sum is below
//! 2^24 in magnitude (see the bounds in [`super::avx2`]), so `scvtf` converts it exactly,
//! and the scale products are separate `fmul`/`fadd` (never fused), as in the definition.
//! Half scales are widened by `fcvtl` (`half::neon::widen8`), which is exact.

// The tiles index several per-row and per-half arrays with the same counters.
#![allow(clippy::needless_range_loop)]

use super::*;
use std::arch::aarch64::*;

/// # Safety
/// `y` as for [`super::tile_scalar`]. (NEON is part of the aarch64 target's baseline.)
pub unsafe fn task(a: &QAct, w: &QMat, g0: usize, g1: usize, y: *mut f32) {
    // Rows in chunks that stay in L2 while the task's groups pass over them: order of work
    // only, as in the AVX2 task.
    for c0 in (0..a.rows).step_by(ROW_CHUNK) {
        let c1 = (c0 + ROW_CHUNK).min(a.rows);
        for g in g0..g1 {
            let mut r = c0;
            while r < c1 {
                let nr = (c1 - r).min(4);
                match nr {
                    4 => tile::<4>(a, w, g, r, y),
                    3 => tile::<3>(a, w, g, r, y),
                    2 => tile::<2>(a, w, g, r, y),
                    _ => tile::<1>(a, w, g, r, y),
                }
                r += nr;
            }
        }
    }
}

/// Activation rows per L2-resident chunk.
const ROW_CHUNK: usize = 64;

/// Eight columns as two 4-lane halves.
type F8 = [float32x4_t; 2];
type I8x = [int32x4_t; 2];

#[inline(always)]
unsafe fn tile<const R: usize>(a: &QAct, w: &QMat, g: usize, r0: usize, y: *mut f32) {
    let acc = match (w.kind, w.d.is_half()) {
        (WKind::Q4_1, true) => tile_q4::<R, true, false, true>(a, w, g, r0),
        (WKind::Q4_1, false) => tile_q4::<R, true, false, false>(a, w, g, r0),
        (WKind::Q4_0, true) => tile_q4::<R, false, true, true>(a, w, g, r0),
        (WKind::Q4_0, false) => tile_q4::<R, false, true, false>(a, w, g, r0),
        (WKind::Q8_0, true) => tile_q8::<R, true, false, 0>(a, w, g, r0),
        (WKind::Q8_0, false) => tile_q8::<R, false, false, 0>(a, w, g, r0),
        (WKind::Q6K, true) => tile_q8::<R, true, true, 0>(a, w, g, r0),
        (WKind::Q6K, false) => tile_q8::<R, false, true, 0>(a, w, g, r0),
        (WKind::Q5, true) => tile_q8::<R, true, false, 16>(a, w, g, r0),
        (WKind::Q5, false) => tile_q8::<R, false, false, 16>(a, w, g, r0),
    };
    for (i, v) in acc.iter().enumerate() {
        let mut tmp = [0f32; GC];
        vst1q_f32(tmp.as_mut_ptr(), v[0]);
        vst1q_f32(tmp.as_mut_ptr().add(4), v[1]);
        for (c, t) in tmp.iter().enumerate() {
            let o = g * GC + c;
            if o < w.n_out {
                *y.add((r0 + i) * w.n_out + o) = *t;
            }
        }
    }
}

/// The 8 scales of one group and block from `p`: halves widened exactly by `fcvtl`
/// (`HALF`), or f32 as stored.
#[inline(always)]
unsafe fn load_scales8<const HALF: bool>(p: *const u8) -> F8 {
    if HALF {
        crate::engine::half::neon::widen8(vld1q_u16(p as *const u16))
    } else {
        let p = p as *const f32;
        [vld1q_f32(p), vld1q_f32(p.add(4))]
    }
}

/// The activation's 4 bytes at `p`, repeated over 16 bytes.
#[inline(always)]
unsafe fn bcast4(p: *const i8) -> int8x16_t {
    vreinterpretq_s8_s32(vdupq_n_s32(std::ptr::read_unaligned(p as *const i32)))
}

/// acc + Σ over each column's 4 bytes of `w · x` (see the module's bounds).
#[inline(always)]
unsafe fn dot4(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(w), vget_low_s8(x));
    let hi = vmull_high_s8(w, x);
    vpadalq_s16(acc, vpaddq_s16(lo, hi))
}

/// acc += (d·s)·isum, then for Q4_1 acc += (m·s)·xsum: the definition's order.
#[inline(always)]
unsafe fn combine<const MIN: bool>(acc: F8, isum: I8x, dv: F8, mv: F8, s: f32, xs: i32) -> F8 {
    let sv = vdupq_n_f32(s);
    let mut out = acc;
    for h in 0..2 {
        out[h] = vaddq_f32(
            out[h],
            vmulq_f32(vmulq_f32(dv[h], sv), vcvtq_f32_s32(isum[h])),
        );
        if MIN {
            let t = vmulq_f32(vmulq_f32(mv[h], sv), vdupq_n_f32(xs as f32));
            out[h] = vaddq_f32(out[h], t);
        }
    }
    out
}

/// Q4_0 (`OFF8`) and Q4_1 (`MIN`) blocks, scales as halves (`HALF`) or f32.
#[inline(always)]
unsafe fn tile_q4<const R: usize, const MIN: bool, const OFF8: bool, const HALF: bool>(
    a: &QAct,
    w: &QMat,
    g: usize,
    r0: usize,
) -> [F8; R] {
    let nb = w.nb;
    let mask = vdupq_n_u8(0x0f);
    let zero = [vdupq_n_f32(0.0); 2];
    let mut acc = [zero; R];
    let xrow: [*const i8; R] = std::array::from_fn(|i| a.q.as_ptr().add((r0 + i) * a.k));
    let wq = w.q.as_ptr().add(g * nb * 16 * GC);
    for b in 0..nb {
        let wp = wq.add(b * 16 * GC);
        let mut s32 = [[vdupq_n_s32(0); 2]; R];
        for t in 0..4 {
            for h in 0..2 {
                let v = vld1q_u8(wp.add(t * 32 + 16 * h));
                let lo = vreinterpretq_s8_u8(vandq_u8(v, mask));
                let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v));
                for i in 0..R {
                    let xp = xrow[i].add(b * QK + 4 * t);
                    s32[i][h] = dot4(s32[i][h], lo, bcast4(xp));
                    s32[i][h] = dot4(s32[i][h], hi, bcast4(xp.add(16)));
                }
            }
        }
        let si = (g * nb + b) * GC;
        let dv = load_scales8::<HALF>(w.d.ptr(si));
        let mv = if MIN {
            load_scales8::<HALF>(w.m.ptr(si))
        } else {
            zero
        };
        for i in 0..R {
            let ai = (r0 + i) * nb + b;
            let xs = *a.xs.get_unchecked(ai);
            let mut isum = s32[i];
            if OFF8 {
                let off = vdupq_n_s32(8 * xs);
                isum = [vsubq_s32(isum[0], off), vsubq_s32(isum[1], off)];
            }
            acc[i] = combine::<MIN>(acc[i], isum, dv, mv, *a.sx.get_unchecked(ai), xs);
        }
    }
    acc
}

/// Byte quants: Q8_0, Q5 (`BIAS` 16: stored q + 16, so Σ(q+16)·x − 16·Σx = Σq·x), or with
/// `SUB` Q6K (the two halves' sums times their integer scales, exactly in i32).
#[inline(always)]
unsafe fn tile_q8<const R: usize, const HALF: bool, const SUB: bool, const BIAS: i32>(
    a: &QAct,
    w: &QMat,
    g: usize,
    r0: usize,
) -> [F8; R] {
    let nb = w.nb;
    let zero = [vdupq_n_f32(0.0); 2];
    let mut acc = [zero; R];
    let xrow: [*const i8; R] = std::array::from_fn(|i| a.q.as_ptr().add((r0 + i) * a.k));
    let wq = w.q.as_ptr().add(g * nb * 32 * GC);
    for b in 0..nb {
        let wp = wq.add(b * 32 * GC);
        // Per row, half (columns 0–3, 4–7) and, for Q6K, values 0..16 and 16..32 apart.
        let mut s32 = [[[vdupq_n_s32(0); 2]; 2]; R];
        for j in 0..8 {
            let part = if SUB { j / 4 } else { 0 };
            for h in 0..2 {
                let v = vld1q_s8(wp.add(j * 32 + 16 * h) as *const i8);
                for i in 0..R {
                    let x = bcast4(xrow[i].add(b * QK + 4 * j));
                    s32[i][part][h] = dot4(s32[i][part][h], v, x);
                }
            }
        }
        let si = (g * nb + b) * GC;
        let dv = load_scales8::<HALF>(w.d.ptr(si));
        // The 8 columns' (sc₀, sc₁) pairs: 16 bytes, de-interleaved and widened.
        let (sc0, sc1) = if SUB {
            let pairs = vld2_s8(w.sub.as_ptr().add(2 * si));
            let (e, o) = (vmovl_s8(pairs.0), vmovl_s8(pairs.1));
            (
                [vmovl_s16(vget_low_s16(e)), vmovl_high_s16(e)],
                [vmovl_s16(vget_low_s16(o)), vmovl_high_s16(o)],
            )
        } else {
            ([vdupq_n_s32(0); 2], [vdupq_n_s32(0); 2])
        };
        for i in 0..R {
            let ai = (r0 + i) * nb + b;
            let mut isum = s32[i][0];
            for h in 0..2 {
                if SUB {
                    isum[h] = vaddq_s32(
                        vmulq_s32(s32[i][0][h], sc0[h]),
                        vmulq_s32(s32[i][1][h], sc1[h]),
                    );
                }
                if BIAS != 0 {
                    let xs = *a.xs.get_unchecked(ai);
                    isum[h] = vsubq_s32(isum[h], vdupq_n_s32(BIAS * xs));
                }
            }
            acc[i] = combine::<false>(acc[i], isum, dv, zero, *a.sx.get_unchecked(ai), 0);
        }
    }
    acc
}
