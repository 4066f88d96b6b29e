//! Causal attention over a stream's cached keys and values, in a fixed order.
//!
//! Definition (what the archive's bits depend on), per row and query head, over the row's
//! visible slots `lo..=slot` (all earlier slots of a full-context layer; the last
//! `local_window` of a sliding-window one): `s[p] = dot(q, k[p]) · scale` in the lane order
//! of [`dot`]; `m = max s`; `e[p] = exp_f32(s[p] − m)`; `sum = e[lo] + e[lo+1] + …` in
//! position order (backend 3, `lane_sum`: in the 8-lane order of [`sum_lanes`] over the
//! visible slots); `w[p] = e[p] · (1/sum)`; then every output element is accumulated from 0
//! in position order, `out += w[p] · v[p]`. Cached keys and values are the f32 values
//! stored, or for backend 3 the exact f32 values of the stored halves.
//!
//! How the work is ordered does not change a bit of that: positions are taken in chunks,
//! and each chunk serves every row and head of a tile while it is in L1 (an output's
//! accumulation carries over from one chunk to the next in position order). The AVX2 build
//! uses the same per-lane operations (tested bit for bit against the portable loops).

#[cfg(target_arch = "x86_64")]
use super::half;
use super::kv_cache::KvBuf;
use crate::math::{dot, exp_f32, max_f32, sum_lanes};

/// The attention shape of one layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttnShape {
    /// Key/value heads.
    pub kv_heads: usize,
    /// Query heads per key/value head.
    pub group: usize,
    pub head_dim: usize,
    /// Score scale (1/√head_dim for the models run today).
    pub scale: f32,
    /// Softmax denominator in 8 lanes (backend 3) instead of sequentially.
    pub lane_sum: bool,
}

/// Cached positions per chunk: a chunk's keys (or values) are read from memory once and
/// used by every query of the tile — all rows and all heads of the group — while they sit in
/// L1 (64 positions × 64 dims × 4 bytes = 16 KB).
const ATT_CHUNK: usize = 64;

/// Rows of one stream per attention task: their scores (16 rows × 3 heads × 1,024
/// positions × 4 bytes = 192 KB) stay in L2, and each cached chunk serves all of them.
pub(crate) const ATT_ROWS: usize = 16;

/// Per-thread scratch of the attention: scores (then weights) per row and head, and the
/// f32 form of a chunk of a half cache for the portable path.
#[derive(Default)]
struct AttScratch {
    scores: Vec<f32>,
    keys: Vec<f32>,
    vals: Vec<f32>,
}

/// Causal attention of some rows of one stream for one key/value head and its query
/// heads: `rows[i] = (lo, slot)`, the visible slots of row `i` (slots increasing); `k`, `v`
/// the layer's buffers with `base` the element offset of this head's slot 0. Returns
/// `rows × group × head_dim` outputs (see the module's definition).
pub(crate) fn attend_tile(
    shape: &AttnShape,
    k: &KvBuf,
    v: &KvBuf,
    base: usize,
    rows: &[(usize, usize)],
    qs: &[&[f32]],
) -> Vec<f32> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<AttScratch> = std::cell::RefCell::default();
    }
    let mut out = vec![0f32; rows.len() * shape.group * shape.head_dim];
    SCRATCH.with(|buf| {
        let mut buf = buf.borrow_mut();
        #[cfg(target_arch = "x86_64")]
        {
            if half::has_f16c() {
                // SAFETY: AVX2 and F16C are present (checked just above).
                unsafe { attend_avx2(shape, k, v, base, rows, qs, &mut out, &mut buf) };
                return;
            }
        }
        attend_body::<false>(shape, k, v, base, rows, qs, &mut out, &mut buf);
    });
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_avx2(
    shape: &AttnShape,
    k: &KvBuf,
    v: &KvBuf,
    base: usize,
    rows: &[(usize, usize)],
    qs: &[&[f32]],
    out: &mut [f32],
    buf: &mut AttScratch,
) {
    attend_body::<true>(shape, k, v, base, rows, qs, out, buf)
}

/// `AVX2`: use the [`attn_simd`] kernels (only from a function with AVX2 and F16C enabled).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_body<const AVX2: bool>(
    shape: &AttnShape,
    kbuf_all: &KvBuf,
    vbuf_all: &KvBuf,
    base: usize,
    rows: &[(usize, usize)],
    qs: &[&[f32]],
    out: &mut [f32],
    buf: &mut AttScratch,
) {
    let (hd, group, scale) = (shape.head_dim, shape.group, shape.scale);
    let Some(&(_, last)) = rows.last() else {
        return;
    };
    let first = rows.iter().map(|r| r.0).min().unwrap_or(0);
    let nmax = last + 1;
    let AttScratch {
        scores,
        keys: kbuf,
        vals: vbuf,
    } = buf;
    // Row i, head j: the score of slot p at (i·group + j)·nmax + p.
    let need = rows.len() * group * nmax;
    if scores.len() < need {
        scores.resize(need, 0.0);
    }
    for p0 in (first..nmax).step_by(ATT_CHUNK) {
        let p1 = (p0 + ATT_CHUNK).min(nmax);
        let keys = if AVX2 {
            &[][..]
        } else {
            kbuf_all.rows(base + p0 * hd..base + p1 * hd, kbuf)
        };
        for (i, (&(lo, slot), q)) in rows.iter().zip(qs).enumerate() {
            let (a, b) = (lo.max(p0), (slot + 1).min(p1));
            if a >= b {
                continue;
            }
            let sc = i * group * nmax + a;
            #[cfg(target_arch = "x86_64")]
            if AVX2 {
                // SAFETY: AVX2 and F16C are present (AVX2 is only true when called from
                // `attend_avx2`); `q` holds `group × hd` values, the buffer `b − a` rows
                // from `base + a·hd`, and scores has room for `group` rows of `nmax` from
                // `sc`.
                unsafe {
                    scores_avx2(
                        kbuf_all,
                        base + a * hd,
                        q,
                        group,
                        b - a,
                        hd,
                        scale,
                        scores.as_mut_ptr().add(sc),
                        nmax,
                    )
                };
                continue;
            }
            for (j, qh) in q.chunks_exact(hd).enumerate() {
                let o = &mut scores[sc + j * nmax..sc + j * nmax + (b - a)];
                let ks = &keys[(a - p0) * hd..(b - p0) * hd];
                for (s, kp) in o.iter_mut().zip(ks.chunks_exact(hd)) {
                    *s = dot(qh, kp) * scale;
                }
            }
        }
    }
    for (i, &(lo, slot)) in rows.iter().enumerate() {
        for j in 0..group {
            let at = (i * group + j) * nmax;
            let sc = &mut scores[at + lo..at + slot + 1];
            // The maximum is exact in any order (a zero's sign cannot change s − max).
            let max = max_f32(sc);
            for s in sc.iter_mut() {
                *s = exp_f32(*s - max);
            }
            let sum = if shape.lane_sum {
                sum_lanes(sc)
            } else {
                let mut sum = 0f32;
                for s in sc.iter() {
                    sum += *s;
                }
                sum
            };
            let inv = 1.0 / sum;
            for s in sc.iter_mut() {
                *s *= inv;
            }
        }
    }
    for p0 in (first..nmax).step_by(ATT_CHUNK) {
        let p1 = (p0 + ATT_CHUNK).min(nmax);
        let vals = if AVX2 {
            &[][..]
        } else {
            vbuf_all.rows(base + p0 * hd..base + p1 * hd, vbuf)
        };
        for (i, &(lo, slot)) in rows.iter().enumerate() {
            let (a, b) = (lo.max(p0), (slot + 1).min(p1));
            if a >= b {
                continue;
            }
            let w = i * group * nmax + a;
            let o = &mut out[i * group * hd..(i + 1) * group * hd];
            #[cfg(target_arch = "x86_64")]
            if AVX2 {
                // SAFETY: as above; the weights hold `group` rows of `nmax` from `w`, and
                // `o` holds `group × hd` outputs.
                unsafe {
                    wsum_avx2(
                        vbuf_all,
                        base + a * hd,
                        scores.as_ptr().add(w),
                        nmax,
                        group,
                        b - a,
                        hd,
                        o,
                    )
                };
                continue;
            }
            let vs = &vals[(a - p0) * hd..(b - p0) * hd];
            for (j, oh) in o.chunks_exact_mut(hd).enumerate() {
                let wj = &scores[w + j * nmax..w + j * nmax + (b - a)];
                for (&wgt, vp) in wj.iter().zip(vs.chunks_exact(hd)) {
                    for (ov, vv) in oh.iter_mut().zip(vp) {
                        *ov += wgt * *vv;
                    }
                }
            }
        }
    }
}

/// Query heads per score tile: 2 × 4 accumulators, 4 keys and a query fit AVX2's 16
/// registers (three heads spill).
#[cfg(target_arch = "x86_64")]
const SCORE_HEADS: usize = 2;

/// Scores of all `group` query heads of one key/value head over `n` cached keys from
/// element `at`, by [`attn_simd::scores_tile`] in tiles of up to two heads; head `j`'s
/// scores go to `out + j · ostride`.
///
/// # Safety
/// AVX2 and F16C must be available; `qs` holds `group × hd` values; `cache` holds `n`
/// rows from `at`; `out` is valid for the writes described.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn scores_avx2(
    cache: &KvBuf,
    at: usize,
    qs: &[f32],
    group: usize,
    n: usize,
    hd: usize,
    scale: f32,
    out: *mut f32,
    ostride: usize,
) {
    use attn_simd::scores_tile;
    let mut j = 0;
    while j < group {
        let g = (group - j).min(SCORE_HEADS);
        let q = qs.as_ptr().add(j * hd);
        let o = out.add(j * ostride);
        let (k, half): (*const u8, bool) = match cache {
            KvBuf::F32(b) => (b.as_ptr().add(at) as _, false),
            KvBuf::F16(b) => (b.as_ptr().add(at) as _, true),
        };
        match (half, g) {
            (false, 3) => scores_tile::<3, false>(q, k, n, hd, scale, o, ostride),
            (false, 2) => scores_tile::<2, false>(q, k, n, hd, scale, o, ostride),
            (false, _) => scores_tile::<1, false>(q, k, n, hd, scale, o, ostride),
            (true, 3) => scores_tile::<3, true>(q, k, n, hd, scale, o, ostride),
            (true, 2) => scores_tile::<2, true>(q, k, n, hd, scale, o, ostride),
            (true, _) => scores_tile::<1, true>(q, k, n, hd, scale, o, ostride),
        }
        j += g;
    }
}

/// `out[j] += Σ_p w[j · wstride + p] · v[p]` for all `group` heads of one key/value head,
/// over `n` cached values from element `at`, by [`attn_simd::wsum_tile`] in tiles of up
/// to two heads.
///
/// # Safety
/// AVX2 and F16C must be available; `w` is valid for the reads described; `cache` holds
/// `n` rows from `at`; `out` holds `group × hd` values.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn wsum_avx2(
    cache: &KvBuf,
    at: usize,
    w: *const f32,
    wstride: usize,
    group: usize,
    n: usize,
    hd: usize,
    out: &mut [f32],
) {
    use attn_simd::wsum_tile;
    let mut j = 0;
    while j < group {
        let g = (group - j).min(2);
        let (wj, o) = (w.add(j * wstride), out.as_mut_ptr().add(j * hd));
        let (v, half): (*const u8, bool) = match cache {
            KvBuf::F32(b) => (b.as_ptr().add(at) as _, false),
            KvBuf::F16(b) => (b.as_ptr().add(at) as _, true),
        };
        match (half, g) {
            (false, 2) => wsum_tile::<2, false>(wj, wstride, n, v, hd, o),
            (false, _) => wsum_tile::<1, false>(wj, wstride, n, v, hd, o),
            (true, 2) => wsum_tile::<2, true>(wj, wstride, n, v, hd, o),
            (true, _) => wsum_tile::<1, true>(wj, wstride, n, v, hd, o),
        }
        j += g;
    }
}

/// AVX2 forms of the attention's two loops, element for element the same operations as
/// the portable loops in `attend_body` (tested bit-for-bit against them).
#[cfg(target_arch = "x86_64")]
mod attn_simd {
    use crate::math::LANES;
    use std::arch::x86_64::*;

    /// Scores of `G` query heads (`qs`, `G × hd` consecutive) against `n` cached keys
    /// (`keys`: `n × hd` f32, or IEEE halves when `HALF`), written to `out[j · ostride + p]`.
    ///
    /// Four keys at a time: their 8-lane accumulators are reduced together by `vhaddps`,
    /// which forms exactly the pairs of `math::hsum`, `((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7))`
    /// (IEEE addition commutes). Each key vector is loaded (and converted, exactly) once for
    /// all `G` heads, and the `4·G` independent accumulation chains keep the adders busy.
    /// The last keys of a row that does not fill a group of four repeat the last key in the
    /// spare lanes, whose results are dropped: every key's result depends on its own lanes
    /// only, so it is the same as in a full group.
    ///
    /// # Safety
    /// AVX2 (and F16C when `HALF`) must be available; `qs`, `keys` and `out` must be valid
    /// for the sizes given.
    #[inline(always)]
    pub unsafe fn scores_tile<const G: usize, const HALF: bool>(
        qs: *const f32,
        keys: *const u8,
        n: usize,
        hd: usize,
        scale: f32,
        out: *mut f32,
        ostride: usize,
    ) {
        let sv = _mm_set1_ps(scale);
        let mut p = 0;
        while p < n {
            let kr: [usize; 4] = std::array::from_fn(|i| (p + i).min(n - 1) * hd);
            let mut a = [[_mm256_setzero_ps(); 4]; G];
            for c in (0..hd).step_by(LANES) {
                let kv: [__m256; 4] = std::array::from_fn(|i| load8::<HALF>(keys, kr[i] + c));
                for (j, aj) in a.iter_mut().enumerate() {
                    let qv = _mm256_loadu_ps(qs.add(j * hd + c));
                    for i in 0..4 {
                        aj[i] = _mm256_add_ps(aj[i], _mm256_mul_ps(qv, kv[i]));
                    }
                }
            }
            let m = (n - p).min(4);
            for (j, aj) in a.iter().enumerate() {
                let h = _mm256_hadd_ps(_mm256_hadd_ps(aj[0], aj[1]), _mm256_hadd_ps(aj[2], aj[3]));
                let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
                let s = _mm_mul_ps(s, sv);
                let o = out.add(j * ostride + p);
                if m == 4 {
                    _mm_storeu_ps(o, s);
                } else {
                    let mut tmp = [0f32; 4];
                    _mm_storeu_ps(tmp.as_mut_ptr(), s);
                    std::ptr::copy_nonoverlapping(tmp.as_ptr(), o, m);
                }
            }
            p += 4;
        }
    }

    /// `out[j · hd + e] += Σ_p w[j · wstride + p] · vals[p][e]` for `G` heads, accumulated onto
    /// `out` in position order per element (the definition's order). The head dimension is
    /// covered in passes of up to 32 elements; within a pass each value vector is loaded (and
    /// converted, exactly) once for all `G` heads.
    ///
    /// # Safety
    /// AVX2 (and F16C when `HALF`) must be available; `hd` a multiple of 8; `w` valid for
    /// `G × n`, `vals` for `n × hd`, `out` for `G × hd` elements.
    #[inline(always)]
    pub unsafe fn wsum_tile<const G: usize, const HALF: bool>(
        w: *const f32,
        wstride: usize,
        n: usize,
        vals: *const u8,
        hd: usize,
        out: *mut f32,
    ) {
        let mut e0 = 0;
        while e0 < hd {
            let m = ((hd - e0) / LANES).min(4);
            match m {
                4 => wsum_pass::<G, HALF, 4>(w, wstride, n, vals, hd, out, e0),
                3 => wsum_pass::<G, HALF, 3>(w, wstride, n, vals, hd, out, e0),
                2 => wsum_pass::<G, HALF, 2>(w, wstride, n, vals, hd, out, e0),
                _ => wsum_pass::<G, HALF, 1>(w, wstride, n, vals, hd, out, e0),
            }
            e0 += m * LANES;
        }
    }

    #[inline(always)]
    unsafe fn wsum_pass<const G: usize, const HALF: bool, const M: usize>(
        w: *const f32,
        wstride: usize,
        n: usize,
        vals: *const u8,
        hd: usize,
        out: *mut f32,
        e0: usize,
    ) {
        let mut acc: [[__m256; M]; G] = std::array::from_fn(|j| {
            std::array::from_fn(|r| _mm256_loadu_ps(out.add(j * hd + e0 + r * LANES)))
        });
        for p in 0..n {
            let v: [__m256; M] =
                std::array::from_fn(|r| load8::<HALF>(vals, p * hd + e0 + r * LANES));
            for (j, aj) in acc.iter_mut().enumerate() {
                let wt = _mm256_broadcast_ss(&*w.add(j * wstride + p));
                for r in 0..M {
                    aj[r] = _mm256_add_ps(aj[r], _mm256_mul_ps(wt, v[r]));
                }
            }
        }
        for (j, aj) in acc.iter().enumerate() {
            for (r, a) in aj.iter().enumerate() {
                _mm256_storeu_ps(out.add(j * hd + e0 + r * LANES), *a);
            }
        }
    }

    /// Eight cached values from element `i` of a key/value buffer: f32 as stored, or halves
    /// widened exactly by `vcvtph2ps`.
    #[inline(always)]
    pub unsafe fn load8<const HALF: bool>(base: *const u8, i: usize) -> __m256 {
        if HALF {
            _mm256_cvtph_ps(_mm_loadu_si128(
                (base as *const u16).add(i) as *const __m128i
            ))
        } else {
            _mm256_loadu_ps((base as *const f32).add(i))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kv_cache::tests::filled;
    use crate::engine::kv_cache::{KvCache, LayerKind};

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5) * 4.0
    }

    fn shape(group: usize, hd: usize, half: bool) -> AttnShape {
        AttnShape {
            kv_heads: 1,
            group,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
            lane_sum: half,
        }
    }

    fn run<const AVX2: bool>(
        sh: &AttnShape,
        cache: &KvCache,
        layer: usize,
        kh: usize,
        rows: &[(usize, usize)],
        qs: &[&[f32]],
    ) -> Vec<f32> {
        let (k, v, base) = cache.layer(LayerKind::Full(layer), kh);
        let mut out = vec![0f32; rows.len() * sh.group * sh.head_dim];
        let mut buf = AttScratch::default();
        #[cfg(target_arch = "x86_64")]
        if AVX2 {
            unsafe { attend_avx2(sh, k, v, base, rows, qs, &mut out, &mut buf) };
            return out;
        }
        attend_body::<false>(sh, k, v, base, rows, qs, &mut out, &mut buf);
        out
    }

    /// The AVX2 attention gives the portable loops' bits: f32 and half caches, one to five
    /// query heads per key/value head (tiles of three and their remainders), head sizes on
    /// and off the 32-element passes, key counts around the groups of four and the chunks,
    /// rows that see all earlier slots and rows that see a window of them.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn attention_avx2_matches_portable_bit_for_bit() {
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("f16c"))
        {
            return;
        }
        let mut seed = 5u64;
        for half in [false, true] {
            for (group, hd) in [
                (1usize, 8usize),
                (2, 24),
                (3, 64),
                (4, 40),
                (5, 136),
                (4, 256),
            ] {
                let (kvh, cap) = (2, 140);
                let len = 2 * kvh * cap * hd;
                let kv: Vec<f32> = (0..len).map(|_| lcg(&mut seed)).collect();
                let vv: Vec<f32> = (0..len).map(|_| lcg(&mut seed)).collect();
                let cache = filled(half, (2, kvh, hd, cap), &kv, &vv);
                let sh = shape(group, hd, half);
                let tiles: [&[usize]; 6] = [
                    &[0],
                    &[3],
                    &[64],
                    &[130],
                    &[2, 3, 4, 6],
                    &[62, 63, 64, 65, 66, 129, 130],
                ];
                for slots in tiles {
                    for window in [usize::MAX, 5, 64, 70] {
                        let rows: Vec<(usize, usize)> = slots
                            .iter()
                            .map(|&s| ((s + 1).saturating_sub(window), s))
                            .collect();
                        let qs: Vec<Vec<f32>> = slots
                            .iter()
                            .map(|_| (0..group * hd).map(|_| lcg(&mut seed)).collect())
                            .collect();
                        let qr: Vec<&[f32]> = qs.iter().map(|v| v.as_slice()).collect();
                        for kh in 0..kvh {
                            let want = run::<false>(&sh, &cache, 1, kh, &rows, &qr);
                            let got = run::<true>(&sh, &cache, 1, kh, &rows, &qr);
                            assert_eq!(
                                got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                                want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                                "half {half} group {group} hd {hd} rows {rows:?}"
                            );
                            // A row's result does not depend on the other rows of its tile.
                            let (k, v, base) = cache.layer(LayerKind::Full(1), kh);
                            let one = attend_tile(&sh, k, v, base, &rows[..1], &qr[..1]);
                            assert_eq!(one, want[..group * hd]);
                        }
                    }
                }
            }
        }
    }

    /// The portable scores and weighted sums are the definition's: `dot` per key, then
    /// position-ordered accumulation of the rounded weights (checked on one head here, over
    /// all slots and over a window of them).
    #[test]
    fn attention_portable_follows_the_definition() {
        let mut seed = 9u64;
        let (hd, n) = (16usize, 5usize);
        let kv: Vec<f32> = (0..n * hd).map(|_| lcg(&mut seed)).collect();
        let vv: Vec<f32> = (0..n * hd).map(|_| lcg(&mut seed)).collect();
        let cache = filled(false, (1, 1, hd, n), &kv, &vv);
        let q: Vec<f32> = (0..hd).map(|_| lcg(&mut seed)).collect();
        let scale = 1.0 / (hd as f32).sqrt();
        for lo in [0usize, 2] {
            let s: Vec<f32> = kv
                .chunks_exact(hd)
                .skip(lo)
                .map(|k| dot(&q, k) * scale)
                .collect();
            let m = s.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let e: Vec<f32> = s.iter().map(|&x| exp_f32(x - m)).collect();
            let mut sum = 0f32;
            for &x in &e {
                sum += x;
            }
            let inv = 1.0 / sum;
            let mut want = vec![0f32; hd];
            for (p, vp) in vv.chunks_exact(hd).skip(lo).enumerate() {
                let w = e[p] * inv;
                for (o, v) in want.iter_mut().zip(vp) {
                    *o += w * *v;
                }
            }
            let got = run::<false>(&shape(1, hd, false), &cache, 0, 0, &[(lo, n - 1)], &[&q]);
            assert_eq!(got, want);
        }
    }
}

#[cfg(test)]
mod att_speed {
    use super::*;
    use crate::engine::kv_cache::tests::filled;
    use crate::engine::kv_cache::LayerKind;

    /// Prints the time of one row's attention over 1,000 cached positions (SmolLM2's
    /// shape: 3 key/value heads of 64, 3 query heads each, 30 layers): a probe for kernel
    /// work, not a test. `cargo test --release --lib att_speed -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing probe"]
    fn att_speed() {
        for half in [false, true] {
            let (kvh, group, hd, cap, layers) = (3usize, 3usize, 64usize, 1024usize, 30usize);
            let len = layers * kvh * cap * hd;
            let data: Vec<f32> = (0..len)
                .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            let cache = filled(half, (layers, kvh, hd, cap), &data, &data);
            let sh = AttnShape {
                kv_heads: kvh,
                group,
                head_dim: hd,
                scale: 0.125,
                lane_sum: half,
            };
            let q: Vec<f32> = (0..group * hd).map(|i| (i % 13) as f32 / 13.0).collect();
            for rows in [1usize, 16] {
                let slots: Vec<(usize, usize)> = (1000 - rows..1000).map(|s| (0, s)).collect();
                let qs: Vec<&[f32]> = slots.iter().map(|_| q.as_slice()).collect();
                let mut times = Vec::new();
                for _ in 0..5 {
                    let t = std::time::Instant::now();
                    for l in 0..layers {
                        for kh in 0..kvh {
                            let (k, v, base) = cache.layer(LayerKind::Full(l), kh);
                            std::hint::black_box(attend_tile(&sh, k, v, base, &slots, &qs));
                        }
                    }
                    times.push(t.elapsed().as_secs_f64() * 1e3 / rows as f64);
                }
                times.sort_by(f64::total_cmp);
                println!(
                    "half {half}, {rows} rows per tile: {:.3} ms per row (30 layers, ~1000 positions)",
                    times[2]
                );
            }
        }
    }
}
