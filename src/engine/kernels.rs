//! Matrix kernels with a reduction order fixed by definition, so results do not depend on
//! SIMD width, tiling, thread count or how many rows a call carries.
//!
//! Every output element `y[r][o] = Σ_k x[r][k]·w[o][k]` is computed by exactly one thread
//! with the lane order of [`crate::math::dot`]; threads split output columns, never a reduction.
//! The AVX2 variant is the same Rust source compiled with wider registers: the per-lane
//! operations are identical, so the bits are too (tested against the portable build).

use crate::math::{hsum, LANES};
use rayon::prelude::*;

/// Output columns handed to one task: small enough to balance two to sixteen threads,
/// large enough that the weight rows of a task stay in L2 while all rows stream past.
const COLS_PER_TASK: usize = 32;

/// A raw output pointer that tasks write through at disjoint indices.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint column ranges of the output (see `matmul`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// y (rows × n_out, row-major) = x (rows × k) · wᵀ, with w stored row-major as n_out × k.
pub fn matmul(x: &[f32], rows: usize, w: &[f32], n_out: usize, k: usize, y: &mut [f32]) {
    assert_eq!(x.len(), rows * k, "matmul: x shape");
    assert_eq!(w.len(), n_out * k, "matmul: w shape");
    assert_eq!(y.len(), rows * n_out, "matmul: y shape");
    assert_eq!(k % LANES, 0, "matmul: k must be a multiple of {LANES}");
    let out = OutPtr(y.as_mut_ptr());
    let tasks = n_out.div_ceil(COLS_PER_TASK);
    (0..tasks).into_par_iter().for_each(|t| {
        let o0 = t * COLS_PER_TASK;
        let o1 = (o0 + COLS_PER_TASK).min(n_out);
        // Move the whole wrapper in (not just its raw-pointer field, which is not Send).
        let ptr = out;
        // SAFETY: this task writes only y[r * n_out + o] for o in o0..o1, a column range no
        // other task touches, and every index is < rows * n_out (checked above).
        unsafe { tile_dispatch(x, rows, w, n_out, k, o0, o1, ptr.0) };
    });
}

#[allow(clippy::too_many_arguments)]
unsafe fn tile_dispatch(
    x: &[f32],
    rows: usize,
    w: &[f32],
    n_out: usize,
    k: usize,
    o0: usize,
    o1: usize,
    y: *mut f32,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if use_avx2() {
            return tile_avx2(x, rows, w, n_out, k, o0, o1, y);
        }
    }
    tile_portable(x, rows, w, n_out, k, o0, o1, y)
}

/// Whether wide SIMD may be used; `LMZIP_NO_SIMD=1` forces the portable path (used by the
/// tests that prove both give the same bits).
pub fn simd_enabled() -> bool {
    use std::sync::OnceLock;
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("LMZIP_NO_SIMD").is_none_or(|v| v == "0"))
}

/// Whether the AVX2 kernels run: the CPU has AVX2 and [`simd_enabled`]. The one switch
/// every kernel dispatch asks (matmuls of both backends, attention).
#[cfg(target_arch = "x86_64")]
pub fn use_avx2() -> bool {
    simd_enabled() && std::arch::is_x86_feature_detected!("avx2")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2(
    x: &[f32],
    rows: usize,
    w: &[f32],
    n_out: usize,
    k: usize,
    o0: usize,
    o1: usize,
    y: *mut f32,
) {
    tile_body(x, rows, w, n_out, k, o0, o1, y)
}

#[allow(clippy::too_many_arguments)]
unsafe fn tile_portable(
    x: &[f32],
    rows: usize,
    w: &[f32],
    n_out: usize,
    k: usize,
    o0: usize,
    o1: usize,
    y: *mut f32,
) {
    tile_body(x, rows, w, n_out, k, o0, o1, y)
}

/// Register tile: 4 input rows × 2 weight rows, each accumulator `LANES` wide.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_body(
    x: &[f32],
    rows: usize,
    w: &[f32],
    n_out: usize,
    k: usize,
    o0: usize,
    o1: usize,
    y: *mut f32,
) {
    let mut o = o0;
    while o < o1 {
        let pair = o + 1 < o1;
        let w0 = &w[o * k..(o + 1) * k];
        let w1 = if pair {
            &w[(o + 1) * k..(o + 2) * k]
        } else {
            w0
        };
        let mut r = 0;
        while r < rows {
            let nr = (rows - r).min(4);
            let mut acc = [[[0f32; LANES]; 2]; 4];
            let xr: [&[f32]; 4] = std::array::from_fn(|i| {
                let rr = r + i.min(nr - 1);
                &x[rr * k..(rr + 1) * k]
            });
            let mut c = 0;
            while c < k {
                let wa = &w0[c..c + LANES];
                let wb = &w1[c..c + LANES];
                for i in 0..4 {
                    let xa = &xr[i][c..c + LANES];
                    for l in 0..LANES {
                        acc[i][0][l] += xa[l] * wa[l];
                        acc[i][1][l] += xa[l] * wb[l];
                    }
                }
                c += LANES;
            }
            for (i, a) in acc.iter().enumerate().take(nr) {
                *y.add((r + i) * n_out + o) = hsum(a[0]);
                if pair {
                    *y.add((r + i) * n_out + o + 1) = hsum(a[1]);
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
    use crate::math::dot;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    #[test]
    fn matmul_matches_reference_dot_bit_for_bit() {
        let mut s = 7u64;
        for &(rows, n_out, k) in &[(1, 1, 8), (3, 5, 16), (9, 67, 64), (4, 2, 576)] {
            let x: Vec<f32> = (0..rows * k).map(|_| lcg(&mut s)).collect();
            let w: Vec<f32> = (0..n_out * k).map(|_| lcg(&mut s)).collect();
            let mut y = vec![0f32; rows * n_out];
            matmul(&x, rows, &w, n_out, k, &mut y);
            for r in 0..rows {
                for o in 0..n_out {
                    let want = dot(&x[r * k..(r + 1) * k], &w[o * k..(o + 1) * k]);
                    assert_eq!(y[r * n_out + o].to_bits(), want.to_bits(), "r{r} o{o}");
                }
            }
            // Batch invariance: each row alone gives the same bits as inside the batch.
            for r in 0..rows {
                let mut y1 = vec![0f32; n_out];
                matmul(&x[r * k..(r + 1) * k], 1, &w, n_out, k, &mut y1);
                assert_eq!(
                    y1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    y[r * n_out..(r + 1) * n_out]
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_portable_agree() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let mut s = 11u64;
        let (rows, n_out, k) = (7, 13, 1536);
        let x: Vec<f32> = (0..rows * k).map(|_| lcg(&mut s)).collect();
        let w: Vec<f32> = (0..n_out * k).map(|_| lcg(&mut s)).collect();
        let mut a = vec![0f32; rows * n_out];
        let mut b = vec![0f32; rows * n_out];
        unsafe {
            tile_avx2(&x, rows, &w, n_out, k, 0, n_out, a.as_mut_ptr());
            tile_portable(&x, rows, &w, n_out, k, 0, n_out, b.as_mut_ptr());
        }
        assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}
