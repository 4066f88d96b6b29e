//! Backend 2, "int8-exact": integer weights and int8 activations with exact integer dot
//! products, combined per 32-block in a fixed order.
//!
//! A weight matrix is kept as its GGUF blocks, re-packed exactly: per 32 weights a scale d,
//! an offset m and 32 small integers q, value = d·q + m (Q4_1: q in 0..=15; Q4_0: q − 8; Q8_0:
//! m = 0). Each activation row is quantized per 32-block to q_x in −127..=127 with scale
//! s = max|x| / 127 (round half away from zero). Then every output is
//!
//! ```text
//! y = Σ_b [ (d_b·s_b) · Σ_j q_w·q_x  +  (m_b·s_b) · Σ_j q_x ]      (b in order, f32)
//! ```
//!
//! The inner sums are exact in i32 (|32·127·127| < 2^19), so any SIMD width computes the
//! same integers; the f32 part runs in block order with no fused multiply-add. Results are
//! therefore independent of SIMD width, tiling, threads and batch shape, like backend 1.

use rayon::prelude::*;

/// Values per block.
pub const QK: usize = 32;

/// A weight matrix `n_out × k` as integer blocks.
pub struct QMat {
    pub n_out: usize,
    pub k: usize,
    /// n_out × k integers, row-major.
    q: Vec<i8>,
    /// Per row, per block: scale and offset.
    d: Vec<f32>,
    m: Vec<f32>,
}

/// IEEE half → f32, exactly (every f16 is an f32).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: normalize.
            let mut e = 0i32;
            let mut m = man;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (((e + 1 + 127 - 15) as u32) << 23) | ((m & 0x3ff) << 13)
        }
        (0x1f, _) => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

fn rd16(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Rounds half away from zero through an exact truncating conversion.
#[inline(always)]
fn round_half_away(v: f32) -> i32 {
    (v + if v >= 0.0 { 0.5 } else { -0.5 }) as i32
}

impl QMat {
    /// Exact re-packing of GGUF block data. `kind` is "q4_0", "q4_1" or "q8_0".
    pub fn from_blocks(kind: &str, raw: &[u8], n_out: usize, k: usize) -> Option<QMat> {
        if k % QK != 0 {
            return None;
        }
        let blocks = n_out * k / QK;
        let size = match kind {
            "q4_0" => 18,
            "q4_1" => 20,
            "q8_0" => 34,
            _ => return None,
        };
        if raw.len() != blocks * size {
            return None;
        }
        let mut q = vec![0i8; n_out * k];
        let mut d = vec![0f32; blocks];
        let mut m = vec![0f32; blocks];
        for (i, blk) in raw.chunks_exact(size).enumerate() {
            let out = &mut q[i * QK..(i + 1) * QK];
            d[i] = rd16(blk, 0);
            match kind {
                "q4_1" => {
                    m[i] = rd16(blk, 2);
                    for j in 0..16 {
                        out[j] = (blk[4 + j] & 0x0f) as i8;
                        out[j + 16] = (blk[4 + j] >> 4) as i8;
                    }
                }
                "q4_0" => {
                    for j in 0..16 {
                        out[j] = (blk[2 + j] & 0x0f) as i8 - 8;
                        out[j + 16] = (blk[2 + j] >> 4) as i8 - 8;
                    }
                }
                _ => {
                    for j in 0..QK {
                        out[j] = blk[2 + j] as i8;
                    }
                }
            }
        }
        Some(QMat { n_out, k, q, d, m })
    }

    /// Deterministic 8-bit quantization of f32 weights (for tensors stored in other types):
    /// per block d = max|w| / 127, q = round(w / d).
    pub fn from_f32(w: &[f32], n_out: usize, k: usize) -> QMat {
        let blocks = n_out * k / QK;
        let mut q = vec![0i8; n_out * k];
        let mut d = vec![0f32; blocks];
        for (i, (wb, qb)) in w.chunks_exact(QK).zip(q.chunks_exact_mut(QK)).enumerate() {
            let (s, _) = quantize_block(wb, qb);
            d[i] = s;
        }
        QMat {
            n_out,
            k,
            q,
            d,
            m: vec![0.0; blocks],
        }
    }

    /// The value of one weight, as the blocks define it (for tests).
    pub fn value(&self, o: usize, j: usize) -> f32 {
        let b = (o * self.k + j) / QK;
        self.q[o * self.k + j] as f32 * self.d[b] + self.m[b]
    }
}

/// Quantizes one block; returns (scale, exact integer sum).
#[inline(always)]
fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let mut amax = 0f32;
    for &v in x {
        amax = amax.max(v.abs());
    }
    if amax == 0.0 || !amax.is_finite() {
        q.fill(0);
        return (0.0, 0);
    }
    let s = amax / 127.0;
    let mut sum = 0i32;
    for (qv, &v) in q.iter_mut().zip(x) {
        let r = round_half_away(v / s).clamp(-127, 127);
        *qv = r as i8;
        sum += r;
    }
    (s, sum)
}

/// Activation rows quantized per block.
pub struct QRows {
    pub rows: usize,
    pub k: usize,
    q: Vec<i8>,
    s: Vec<f32>,
    sum: Vec<i32>,
}

impl QRows {
    pub fn new() -> Self {
        QRows {
            rows: 0,
            k: 0,
            q: Vec::new(),
            s: Vec::new(),
            sum: Vec::new(),
        }
    }

    /// Quantizes `rows × k` activations.
    pub fn quantize(&mut self, x: &[f32], rows: usize, k: usize) {
        self.rows = rows;
        self.k = k;
        self.q.resize(rows * k, 0);
        self.s.resize(rows * k / QK, 0.0);
        self.sum.resize(rows * k / QK, 0);
        for (i, (xb, qb)) in x
            .chunks_exact(QK)
            .zip(self.q.chunks_exact_mut(QK))
            .enumerate()
        {
            let (s, sum) = quantize_block(xb, qb);
            self.s[i] = s;
            self.sum[i] = sum;
        }
    }
}

impl Default for QRows {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint column ranges (see `matmul_q`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

const COLS_PER_TASK: usize = 16;

/// y (rows × n_out) = x · wᵀ with the backend-2 definition.
pub fn matmul_q(x: &QRows, w: &QMat, y: &mut [f32]) {
    assert_eq!(x.k, w.k, "matmul_q: inner dimensions");
    assert_eq!(y.len(), x.rows * w.n_out, "matmul_q: output shape");
    let tasks = w.n_out.div_ceil(COLS_PER_TASK);
    let out = OutPtr(y.as_mut_ptr());
    (0..tasks).into_par_iter().for_each(|t| {
        let ptr = out;
        let o0 = t * COLS_PER_TASK;
        let o1 = (o0 + COLS_PER_TASK).min(w.n_out);
        // SAFETY: writes only y[r * n_out + o] for o in o0..o1 (disjoint per task), all
        // within rows * n_out (checked above).
        unsafe { tile_dispatch(x, w, o0, o1, ptr.0) }
    });
}

unsafe fn tile_dispatch(x: &QRows, w: &QMat, o0: usize, o1: usize, y: *mut f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if super::kernels::simd_enabled() && std::arch::is_x86_feature_detected!("avx2") {
            return tile_avx2(x, w, o0, o1, y);
        }
    }
    tile_body(x, w, o0, o1, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2(x: &QRows, w: &QMat, o0: usize, o1: usize, y: *mut f32) {
    tile_body(x, w, o0, o1, y)
}

/// Portable entry (what the AVX2 build is compared against in tests).
#[cfg(test)]
pub(crate) unsafe fn tile_portable(x: &QRows, w: &QMat, o0: usize, o1: usize, y: *mut f32) {
    tile_body(x, w, o0, o1, y)
}

#[inline(always)]
fn idot(a: &[i8], b: &[i8]) -> i32 {
    let mut s = 0i32;
    for j in 0..QK {
        s += a[j] as i32 * b[j] as i32;
    }
    s
}

/// 2 weight rows × up to 4 activation rows per tile; blocks in order.
#[inline(always)]
unsafe fn tile_body(x: &QRows, w: &QMat, o0: usize, o1: usize, y: *mut f32) {
    let k = w.k;
    let nb = k / QK;
    let n_out = w.n_out;
    let mut o = o0;
    while o < o1 {
        let pair = o + 1 < o1;
        let oo = [o, if pair { o + 1 } else { o }];
        let mut r = 0;
        while r < x.rows {
            let nr = (x.rows - r).min(4);
            let rr: [usize; 4] = std::array::from_fn(|i| r + i.min(nr - 1));
            let mut acc = [[0f32; 2]; 4];
            for b in 0..nb {
                let wq: [&[i8]; 2] =
                    std::array::from_fn(|c| &w.q[oo[c] * k + b * QK..oo[c] * k + (b + 1) * QK]);
                for i in 0..4 {
                    let xi = rr[i] * nb + b;
                    let xq = &x.q[xi * QK..(xi + 1) * QK];
                    let s = x.s[xi];
                    let xs = x.sum[xi] as f32;
                    for c in 0..2 {
                        let wb = oo[c] * nb + b;
                        let isum = idot(wq[c], xq) as f32;
                        acc[i][c] += (w.d[wb] * s) * isum;
                        acc[i][c] += (w.m[wb] * s) * xs;
                    }
                }
            }
            for (i, a) in acc.iter().enumerate().take(nr) {
                *y.add((r + i) * n_out + o) = a[0];
                if pair {
                    *y.add((r + i) * n_out + o + 1) = a[1];
                }
            }
            r += 4;
        }
        o += 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(s: &mut u64) -> u64 {
        *s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *s >> 33
    }

    fn random_q41(n_out: usize, k: usize, s: &mut u64) -> Vec<u8> {
        let mut raw = Vec::new();
        for _ in 0..n_out * k / QK {
            // d and m as f16 bit patterns of moderate size.
            let d: u16 = 0x2000 + (lcg(s) % 0x800) as u16;
            let m: u16 = 0xA000 + (lcg(s) % 0x800) as u16;
            raw.extend_from_slice(&d.to_le_bytes());
            raw.extend_from_slice(&m.to_le_bytes());
            for _ in 0..16 {
                raw.push(lcg(s) as u8);
            }
        }
        raw
    }

    /// The definition, written as plainly as possible.
    fn reference(x: &QRows, w: &QMat) -> Vec<f32> {
        let nb = w.k / QK;
        let mut y = vec![0f32; x.rows * w.n_out];
        for r in 0..x.rows {
            for o in 0..w.n_out {
                let mut acc = 0f32;
                for b in 0..nb {
                    let mut isum = 0i32;
                    for j in 0..QK {
                        isum += w.q[o * w.k + b * QK + j] as i32 * x.q[r * w.k + b * QK + j] as i32;
                    }
                    let s = x.s[r * nb + b];
                    acc += (w.d[o * nb + b] * s) * isum as f32;
                    acc += (w.m[o * nb + b] * s) * x.sum[r * nb + b] as f32;
                }
                y[r * w.n_out + o] = acc;
            }
        }
        y
    }

    #[test]
    fn f16_conversion_is_exact() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    #[test]
    fn kernels_match_the_definition_bit_for_bit() {
        let mut s = 3u64;
        for &(rows, n_out, k) in &[
            (1, 1, 32),
            (3, 5, 64),
            (9, 33, 576),
            (70, 7, 1536),
            (5, 2, 64),
        ] {
            let w = QMat::from_blocks("q4_1", &random_q41(n_out, k, &mut s), n_out, k).unwrap();
            let xf: Vec<f32> = (0..rows * k)
                .map(|_| (lcg(&mut s) % 20001) as f32 / 1000.0 - 10.0)
                .collect();
            let mut x = QRows::new();
            x.quantize(&xf, rows, k);
            let want = reference(&x, &w);
            let mut y = vec![0f32; rows * n_out];
            matmul_q(&x, &w, &mut y);
            assert_eq!(
                y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            let mut p = vec![0f32; rows * n_out];
            unsafe { tile_portable(&x, &w, 0, n_out, p.as_mut_ptr()) };
            assert_eq!(
                p.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            // Batch invariance: a single row alone.
            let mut x1 = QRows::new();
            x1.quantize(&xf[..k], 1, k);
            let mut y1 = vec![0f32; n_out];
            matmul_q(&x1, &w, &mut y1);
            assert_eq!(
                y1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want[..n_out]
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn repacking_is_exact() {
        let mut s = 5u64;
        let raw = random_q41(2, 64, &mut s);
        let w = QMat::from_blocks("q4_1", &raw, 2, 64).unwrap();
        // Element j of block 0: low nibble of byte j (j < 16), high nibble of byte j-16.
        let d = f16_to_f32(u16::from_le_bytes([raw[0], raw[1]]));
        let m = f16_to_f32(u16::from_le_bytes([raw[2], raw[3]]));
        assert_eq!(w.value(0, 0), (raw[4] & 0x0f) as f32 * d + m);
        assert_eq!(w.value(0, 17), (raw[5] >> 4) as f32 * d + m);
        assert!(QMat::from_blocks("q4_1", &raw[1..], 2, 64).is_none());
    }
}
