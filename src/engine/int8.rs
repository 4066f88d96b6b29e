//! Backend 2, "int8-exact": integer weights, int8 activations, exact integer block dots.
//!
//! Definition (what every implementation must compute, bit for bit):
//!
//! * Weights keep their GGUF blocks of 32: Q4_1 (`d·q + m`, q in 0..=15), Q4_0
//!   (`d·(q − 8)`), Q8_0 (`d·q`, q in −128..=127). The f16 scales become f32 exactly. F32 and
//!   F16 matrices are quantized once at load to Q8_0-style blocks with an f32 scale, by the
//!   same rule as the activations (below); other GGUF types are refused.
//! * Activations: every row is cut in blocks of 32; `s = max|x| / 127` (f32 division), then
//!   `q = round_half_away_from_zero(x / s)` clamped to ±127 (an all-zero block, or one whose
//!   scale underflows to 0, gets `s = 0` and `q = 0`). `xsum` is the block's exact sum of q.
//! * Per output `y[r][o]` and block `b`, `isum = Σ wq·xq` exactly in i32 (Q4_0 uses `q − 8`).
//!   Then, sequentially over `b = 0, 1, …` from `acc = 0.0f32`:
//!   `acc = acc + (d·s)·(isum as f32)`, and for Q4_1 additionally
//!   `acc = acc + (m·s)·(xsum as f32)`. Each `·`, `+` is one rounded f32 operation in the
//!   order written; no fused multiply-add. `isum`/`xsum` are < 2^24 in magnitude, so the
//!   conversions are exact.
//!
//! Because the integer part is exact and the float part is a per-output sequential chain,
//! the result does not depend on SIMD width, tiling, threads or how many rows a call has.
//! Threads split output columns, never a reduction.
//!
//! Implementations: [`tile_scalar`] (portable, also used under `LMZIP_NO_SIMD=1`), an AVX2
//! one (`vpmaddubsw`/`vpmaddwd`) and a NEON one on aarch64 (`smull`/`addp`/`sadalp`, in
//! `int8_neon.rs`). All are tested against a plain reference that reads the raw GGUF bytes
//! directly. AVX-512/VNNI and the aarch64 `dotprod` (`sdot`) variants are not written.

pub use super::half::f16_to_f32;
use crate::{Error, ErrorKind, Result};
use candle_core::quantized::GgmlDType;
use rayon::prelude::*;

/// Values per quantization block.
pub const QK: usize = 32;
/// Output columns interleaved in one packed group (one AVX2 lane each).
const GC: usize = 8;
/// Column groups handed to one rayon task (32 output columns).
const GROUPS_PER_TASK: usize = 4;
/// Fewest activation rows quantized in parallel.
const PAR_ROWS: usize = 16;

fn model_err(m: String) -> Error {
    Error::new(ErrorKind::Model(m))
}

/// Round half away from zero of `v`, clamped to ±127, using exact operations only
/// (truncation of a value < 2^31 and the subtraction of its integer part are exact).
#[inline(always)]
fn round_clamp127(v: f32) -> i8 {
    let a = v.abs();
    let a = if a > 127.0 { 127.0 } else { a }; // also maps NaN to NaN (cast below gives 0)
    let t = a as i32;
    let frac = a - t as f32;
    let q = (t + (frac >= 0.5) as i32).min(127);
    (if v < 0.0 { -q } else { q }) as i8
}

/// Quantizes one block of 32 by the activation rule; returns (scale, exact sum of quants).
#[inline(always)]
pub fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let mut amax = 0f32;
    for &v in x {
        amax = amax.max(v.abs());
    }
    let s = amax / 127.0;
    if s == 0.0 {
        q.fill(0);
        return (0.0, 0);
    }
    let mut sum = 0i32;
    for (qv, &v) in q.iter_mut().zip(x) {
        *qv = round_clamp127(v / s);
        sum += *qv as i32;
    }
    (s, sum)
}

/// Activation rows quantized per block of 32.
pub struct QAct {
    pub rows: usize,
    pub k: usize,
    nb: usize,
    q: Vec<i8>,
    sx: Vec<f32>,
    xs: Vec<i32>,
}

impl QAct {
    /// Quantizes `rows × k` activations (`k` a multiple of 32).
    pub fn new(x: &[f32], rows: usize, k: usize) -> Self {
        assert_eq!(x.len(), rows * k, "QAct: x shape");
        assert_eq!(k % QK, 0, "QAct: k must be a multiple of {QK}");
        let nb = k / QK;
        let mut q = vec![0i8; rows * k];
        let mut sx = vec![0f32; rows * nb];
        let mut xs = vec![0i32; rows * nb];
        let one_row = |qr: &mut [i8], sr: &mut [f32], xr: &mut [i32], x: &[f32]| {
            for (i, (xb, qb)) in x.chunks_exact(QK).zip(qr.chunks_exact_mut(QK)).enumerate() {
                let (s, sum) = quantize_block(xb, qb);
                sr[i] = s;
                xr[i] = sum;
            }
        };
        // Rows are independent: quantize them in parallel (each block by the same rule),
        // unless there are too few for a parallel call to pay for waking the pool.
        if rows >= PAR_ROWS {
            q.par_chunks_mut(k)
                .zip(sx.par_chunks_mut(nb))
                .zip(xs.par_chunks_mut(nb))
                .zip(x.par_chunks(k))
                .for_each(|(((qr, sr), xr), x)| one_row(qr, sr, xr, x));
        } else {
            q.chunks_mut(k)
                .zip(sx.chunks_mut(nb))
                .zip(xs.chunks_mut(nb))
                .zip(x.chunks(k))
                .for_each(|(((qr, sr), xr), x)| one_row(qr, sr, xr, x));
        }
        QAct {
            rows,
            k,
            nb,
            q,
            sx,
            xs,
        }
    }
}

/// Weight block kind inside a [`QMat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WKind {
    /// Nibbles q in 0..=15, value d·(q − 8).
    Q4_0,
    /// Nibbles q in 0..=15, value d·q + m (GGUF Q4_1, and Q4_K's 32-value sub-blocks).
    Q4_1,
    /// Bytes q in −128..=127, value d·q (GGUF Q8_0, Q5_0 as q − 16, and F32/F16 matrices
    /// quantized at load).
    Q8_0,
    /// Bytes q in −32..=31 with an integer scale per 16 values: value d·sc·q (GGUF Q6_K).
    Q6K,
    /// Bytes q in −16..=15, value d·q (GGUF Q5_0), stored as q + 16 so that the AVX2
    /// kernel multiplies unsigned bytes without sign fixes: Σ(q+16)·x − 16·Σx = Σq·x exactly.
    Q5,
}

/// A weight matrix `n_out × k` repacked for the int8 kernels.
///
/// Columns are padded to groups of 8 (padding has zero quants and zero scales). For group
/// `g` and block `b`:
/// * Q4_0/Q4_1: 4 vectors of 32 bytes; vector `t` holds, for columns c = 0..8, the nibble
///   bytes `4t..4t+4` of that column's block in GGUF Q4_1 order (low nibble = value `4t+i`,
///   high = `16+4t+i`).
/// * Q8_0/Q6K: 8 vectors of 32 bytes; vector `j` holds, for c = 0..8, quants `4j..4j+4`.
/// * `d[(g·nb + b)·8 + c]` and (Q4_1) `m[…]` are the block's scale and min: the GGUF f16
///   bits as stored (widened to f32 exactly where used), or f32 where the block's scale is
///   a product (Q4_K: d·sc and −dmin·m, both exact in f32) or the matrix was quantized at
///   load. Keeping the halves cuts the bytes a one-row call streams per Q4_1 weight from
///   0.75 to 0.625; F16C's `vcvtph2ps` and [`f16_to_f32`] widen them to the same bits.
/// * Q6K: `sub[((g·nb + b)·8 + c)·2 + h]` is the integer scale of values `16h..16h+16`.
pub struct QMat {
    pub kind: WKind,
    pub n_out: usize,
    pub k: usize,
    nb: usize,
    groups: usize,
    q: Vec<u8>,
    d: Scales,
    /// Q4_1 only: the per-block minimum (empty otherwise).
    m: Scales,
    /// Q6K only: two integer scales per block (empty otherwise).
    sub: Vec<i8>,
}

/// Block scales of a [`QMat`].
enum Scales {
    /// IEEE half bits, from GGUF blocks.
    Half(Vec<u16>),
    /// f32: products of GGUF scales, or matrices quantized at load by the activation rule.
    Single(Vec<f32>),
}

impl Scales {
    fn new(single: bool, n: usize) -> Self {
        if single {
            Scales::Single(vec![0.0; n])
        } else {
            Scales::Half(vec![0; n])
        }
    }

    #[inline(always)]
    fn at(&self, i: usize) -> f32 {
        match self {
            Scales::Half(v) => f16_to_f32(v[i]),
            Scales::Single(v) => v[i],
        }
    }

    fn is_half(&self) -> bool {
        matches!(self, Scales::Half(_))
    }

    fn resize(&mut self, n: usize) {
        match self {
            Scales::Half(v) => v.resize(n, 0),
            Scales::Single(v) => v.resize(n, 0.0),
        }
    }

    /// Raw pointer to the scale of slot `i`: u16 halves or f32 values.
    fn ptr(&self, i: usize) -> *const u8 {
        match self {
            Scales::Half(v) => v[i..].as_ptr().cast(),
            Scales::Single(v) => v[i..].as_ptr().cast(),
        }
    }
}

/// Copies scale slot `si` of `src` to slot `di` of `dst` (same storage kind).
fn copy_scale(src: &Scales, si: usize, dst: &mut Scales, di: usize) {
    match (src, dst) {
        (Scales::Half(s), Scales::Half(d)) => d[di] = s[si],
        (Scales::Single(s), Scales::Single(d)) => d[di] = s[si],
        _ => unreachable!("column copied between different scale storage"),
    }
}

/// A GGUF block scale: the half as stored, or an exact f32 product.
#[derive(Clone, Copy)]
enum Scale {
    Half(u16),
    Single(f32),
}

/// One 32-value block decoded from any GGUF type, before packing.
struct Block32 {
    /// Values: nibbles 0..=15 for Q4 kinds, signed bytes otherwise.
    q: [i8; QK],
    d: Scale,
    m: Option<Scale>,
    sub: [i8; 2],
}

fn f16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Q4_K's 6-bit scale and min of sub-block `j` (0..8), as ggml's `get_scale_min_k4`.
fn q4k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Decodes GGUF blocks of `dtype` into 32-value blocks (`raw` holds whole super-blocks).
/// Exact: every value is the GGUF value, with its scale kept as the half or as an exact
/// product (Q4_K: d·sc has at most 11 + 6 significant bits, dmin·m too).
fn decode_blocks(dtype: GgmlDType, raw: &[u8], out: &mut Vec<Block32>) -> Option<WKind> {
    let blank = || Block32 {
        q: [0; QK],
        d: Scale::Half(0),
        m: None,
        sub: [0; 2],
    };
    match dtype {
        GgmlDType::Q4_0 | GgmlDType::Q4_1 => {
            let (bsz, qo) = if dtype == GgmlDType::Q4_0 {
                (18, 2)
            } else {
                (20, 4)
            };
            for blk in raw.chunks_exact(bsz) {
                let mut b = blank();
                b.d = Scale::Half(f16_at(blk, 0));
                if dtype == GgmlDType::Q4_1 {
                    b.m = Some(Scale::Half(f16_at(blk, 2)));
                }
                for j in 0..16 {
                    b.q[j] = (blk[qo + j] & 15) as i8;
                    b.q[j + 16] = (blk[qo + j] >> 4) as i8;
                }
                out.push(b);
            }
            Some(if dtype == GgmlDType::Q4_0 {
                WKind::Q4_0
            } else {
                WKind::Q4_1
            })
        }
        GgmlDType::Q8_0 => {
            for blk in raw.chunks_exact(34) {
                let mut b = blank();
                b.d = Scale::Half(f16_at(blk, 0));
                for j in 0..QK {
                    b.q[j] = blk[2 + j] as i8;
                }
                out.push(b);
            }
            Some(WKind::Q8_0)
        }
        GgmlDType::Q5_0 => {
            for blk in raw.chunks_exact(22) {
                let mut b = blank();
                b.d = Scale::Half(f16_at(blk, 0));
                let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                for j in 0..16 {
                    let h0 = (((qh >> j) << 4) & 0x10) as u8;
                    let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                    b.q[j] = ((blk[6 + j] & 15) | h0) as i8 - 16;
                    b.q[j + 16] = ((blk[6 + j] >> 4) | h1) as i8 - 16;
                }
                out.push(b);
            }
            Some(WKind::Q5)
        }
        GgmlDType::Q4K => {
            for sb in raw.chunks_exact(144) {
                let d = f16_to_f32(f16_at(sb, 0));
                let dmin = f16_to_f32(f16_at(sb, 2));
                let (scales, qs) = (&sb[4..16], &sb[16..144]);
                for j in 0..8 {
                    let (sc, mn) = q4k_scale_min(j, scales);
                    let mut b = blank();
                    b.d = Scale::Single(d * sc as f32);
                    // value = d·sc·q − dmin·m: the min is stored negated, as Q4_1 adds it.
                    b.m = Some(Scale::Single(-(dmin * mn as f32)));
                    let chunk = &qs[32 * (j / 2)..32 * (j / 2) + 32];
                    for (l, &byte) in chunk.iter().enumerate() {
                        b.q[l] = if j % 2 == 0 { byte & 15 } else { byte >> 4 } as i8;
                    }
                    out.push(b);
                }
            }
            Some(WKind::Q4_1)
        }
        GgmlDType::Q6K => {
            for sb in raw.chunks_exact(210) {
                let (ql, qh, sc) = (&sb[0..128], &sb[128..192], &sb[192..208]);
                let d = f16_at(sb, 208);
                // 256 values in two halves of 128; within a half, value l + 32·t comes from
                // ql[l + 32·(t & 1)] (low or high nibble by t / 2) and qh[l] bits 2t..2t+2.
                let mut vals = [0i8; 256];
                for n in 0..2 {
                    let (ql, qh) = (&ql[64 * n..64 * n + 64], &qh[32 * n..32 * n + 32]);
                    for l in 0..32 {
                        let q1 = (ql[l] & 15) | ((qh[l] & 3) << 4);
                        let q2 = (ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4);
                        let q3 = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                        let q4 = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                        for (t, q) in [q1, q2, q3, q4].into_iter().enumerate() {
                            vals[128 * n + l + 32 * t] = q as i8 - 32;
                        }
                    }
                }
                for j in 0..8 {
                    let mut b = blank();
                    b.d = Scale::Half(d);
                    b.q.copy_from_slice(&vals[32 * j..32 * j + 32]);
                    b.sub = [sc[2 * j] as i8, sc[2 * j + 1] as i8];
                    out.push(b);
                }
            }
            Some(WKind::Q6K)
        }
        _ => None,
    }
}

/// Bytes of one GGUF block of `dtype` and the values it holds.
fn ggml_block(dtype: GgmlDType) -> Option<(usize, usize)> {
    Some(match dtype {
        GgmlDType::Q4_0 => (18, 32),
        GgmlDType::Q4_1 => (20, 32),
        GgmlDType::Q5_0 => (22, 32),
        GgmlDType::Q8_0 => (34, 32),
        GgmlDType::Q4K => (144, 256),
        GgmlDType::Q6K => (210, 256),
        _ => return None,
    })
}

impl QMat {
    fn block_bytes(kind: WKind) -> usize {
        match kind {
            WKind::Q4_0 | WKind::Q4_1 => 16 * GC,
            WKind::Q8_0 | WKind::Q6K | WKind::Q5 => 32 * GC,
        }
    }

    /// Zero quants and scales; scales (and Q4_1 minimums) f32 when `single`, else halves.
    fn empty(kind: WKind, n_out: usize, k: usize, single: bool) -> Self {
        let nb = k / QK;
        let groups = n_out.div_ceil(GC);
        let ns = groups * nb * GC;
        QMat {
            kind,
            n_out,
            k,
            nb,
            groups,
            q: vec![0; groups * nb * Self::block_bytes(kind)],
            d: Scales::new(single, ns),
            m: Scales::new(single, if kind == WKind::Q4_1 { ns } else { 0 }),
            sub: vec![0; if kind == WKind::Q6K { 2 * ns } else { 0 }],
        }
    }

    /// Scale of scale slot `si` as f32.
    #[inline(always)]
    fn d_at(&self, si: usize) -> f32 {
        self.d.at(si)
    }

    /// Repacks raw GGUF tensor bytes (`n_out` rows of `k` values) exactly.
    pub fn from_ggml(dtype: GgmlDType, raw: &[u8], n_out: usize, k: usize) -> Result<Self> {
        if k % QK != 0 {
            return Err(model_err(format!(
                "int8 backend: row length {k} is not a multiple of {QK}"
            )));
        }
        if let GgmlDType::F32 | GgmlDType::F16 = dtype {
            let ew = if dtype == GgmlDType::F32 { 4 } else { 2 };
            if raw.len() != n_out * k * ew {
                return Err(model_err("int8 backend: tensor size mismatch".into()));
            }
            let x: Vec<f32> = if ew == 4 {
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            } else {
                raw.chunks_exact(2)
                    .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                    .collect()
            };
            return Ok(Self::from_f32_q8(&x, n_out, k));
        }
        let unsupported = || {
            Error::unsupported(
                "weight type for the integer backends (2, 3)",
                format!("{dtype:?}"),
                "Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K, F32, F16, BF16; backend 1 runs every \
                 type candle dequantizes",
            )
        };
        let (bsz, per) = ggml_block(dtype).ok_or_else(unsupported)?;
        if k % per != 0 || raw.len() != n_out * (k / per) * bsz {
            return Err(model_err("int8 backend: tensor size mismatch".into()));
        }
        let nb = k / QK;
        let row_bytes = (k / per) * bsz;
        let mut blocks = Vec::with_capacity(nb);
        let mut w: Option<QMat> = None;
        for o in 0..n_out {
            blocks.clear();
            let kind = decode_blocks(dtype, &raw[o * row_bytes..(o + 1) * row_bytes], &mut blocks)
                .ok_or_else(unsupported)?;
            let w = w.get_or_insert_with(|| {
                let single = matches!(blocks[0].d, Scale::Single(_));
                Self::empty(kind, n_out, k, single)
            });
            for (b, blk) in blocks.iter().enumerate() {
                w.put_block(o, b, blk);
            }
        }
        w.ok_or_else(|| model_err("int8 backend: empty tensor".into()))
    }

    /// Stores one decoded block as column `o`, block `b`.
    fn put_block(&mut self, o: usize, b: usize, blk: &Block32) {
        let (g, c) = (o / GC, o % GC);
        let si = (g * self.nb + b) * GC + c;
        let set = |s: &mut Scales, v: Scale| match (s, v) {
            (Scales::Half(s), Scale::Half(h)) => s[si] = h,
            (Scales::Single(s), Scale::Single(f)) => s[si] = f,
            (Scales::Single(s), Scale::Half(h)) => s[si] = f16_to_f32(h),
            (Scales::Half(_), Scale::Single(_)) => unreachable!("f32 scale in a half matrix"),
        };
        set(&mut self.d, blk.d);
        if let Some(m) = blk.m {
            set(&mut self.m, m);
        }
        if self.kind == WKind::Q6K {
            self.sub[2 * si] = blk.sub[0];
            self.sub[2 * si + 1] = blk.sub[1];
        }
        let base = (g * self.nb + b) * Self::block_bytes(self.kind);
        match self.kind {
            WKind::Q4_0 | WKind::Q4_1 => {
                for t in 0..4 {
                    for i in 0..4 {
                        let (lo, hi) = (blk.q[4 * t + i] as u8, blk.q[16 + 4 * t + i] as u8);
                        self.q[base + t * 32 + c * 4 + i] = lo | (hi << 4);
                    }
                }
            }
            WKind::Q8_0 | WKind::Q6K | WKind::Q5 => {
                let off = if self.kind == WKind::Q5 { 16 } else { 0 };
                for t in 0..8 {
                    for i in 0..4 {
                        self.q[base + t * 32 + c * 4 + i] = (blk.q[4 * t + i] + off) as u8;
                    }
                }
            }
        }
    }

    /// An empty matrix of `src`'s kind, width and scale storage, to gather columns into.
    pub fn empty_like(src: &QMat) -> Self {
        Self::empty(src.kind, 0, src.k, !src.d.is_half())
    }

    /// Appends column `o` of `src` (same kind, width and scale storage) as this matrix's
    /// next column: the same quants and scales, so its products have the same bits.
    pub fn push_column(&mut self, src: &QMat, o: usize) {
        debug_assert!(src.kind == self.kind && src.k == self.k && o < src.n_out);
        let (nb, bb) = (self.nb, Self::block_bytes(self.kind));
        let dst = self.n_out;
        if dst % GC == 0 {
            // A new group of 8 columns, zero until written.
            self.groups += 1;
            self.q.resize(self.groups * nb * bb, 0);
            let ns = self.groups * nb * GC;
            self.d.resize(ns);
            if self.kind == WKind::Q4_1 {
                self.m.resize(ns);
            }
            if self.kind == WKind::Q6K {
                self.sub.resize(2 * ns, 0);
            }
        }
        self.n_out += 1;
        let (sg, sc) = (o / GC, o % GC);
        let (dg, dc) = (dst / GC, dst % GC);
        let per = bb / 32; // 32-byte vectors per block: 4 (Q4) or 8
        for b in 0..nb {
            let (sbase, dbase) = ((sg * nb + b) * bb, (dg * nb + b) * bb);
            for t in 0..per {
                let (s0, d0) = (sbase + t * 32 + sc * 4, dbase + t * 32 + dc * 4);
                self.q[d0..d0 + 4].copy_from_slice(&src.q[s0..s0 + 4]);
            }
            let (ssi, dsi) = ((sg * nb + b) * GC + sc, (dg * nb + b) * GC + dc);
            copy_scale(&src.d, ssi, &mut self.d, dsi);
            if self.kind == WKind::Q4_1 {
                copy_scale(&src.m, ssi, &mut self.m, dsi);
            }
            if self.kind == WKind::Q6K {
                self.sub[2 * dsi] = src.sub[2 * ssi];
                self.sub[2 * dsi + 1] = src.sub[2 * ssi + 1];
            }
        }
    }

    /// Quantizes an f32 matrix to Q8_0-style blocks with f32 scales (activation rule).
    pub fn from_f32_q8(x: &[f32], n_out: usize, k: usize) -> Self {
        assert_eq!(k % QK, 0);
        let mut w = Self::empty(WKind::Q8_0, n_out, k, true);
        let nb = w.nb;
        let mut q = [0i8; QK];
        for o in 0..n_out {
            for b in 0..nb {
                let (s, _) = quantize_block(&x[o * k + b * QK..o * k + (b + 1) * QK], &mut q);
                let blk = Block32 {
                    q,
                    d: Scale::Single(s),
                    m: None,
                    sub: [0; 2],
                };
                w.put_block(o, b, &blk);
            }
        }
        w
    }

    /// Integer quants of column `o`, block `b` (Q4_0 already shifted to q − 8).
    #[inline(always)]
    fn unpack(&self, o: usize, b: usize, out: &mut [i32; QK]) {
        let (g, c) = (o / GC, o % GC);
        let base = (g * self.nb + b) * Self::block_bytes(self.kind);
        match self.kind {
            WKind::Q4_0 | WKind::Q4_1 => {
                let off = if self.kind == WKind::Q4_0 { 8 } else { 0 };
                for t in 0..4 {
                    for i in 0..4 {
                        let byte = self.q[base + t * 32 + c * 4 + i];
                        out[4 * t + i] = (byte & 15) as i32 - off;
                        out[16 + 4 * t + i] = (byte >> 4) as i32 - off;
                    }
                }
            }
            WKind::Q8_0 | WKind::Q6K => {
                for t in 0..8 {
                    for i in 0..4 {
                        out[4 * t + i] = self.q[base + t * 32 + c * 4 + i] as i8 as i32;
                    }
                }
            }
            WKind::Q5 => {
                for t in 0..8 {
                    for i in 0..4 {
                        out[4 * t + i] = self.q[base + t * 32 + c * 4 + i] as i32 - 16;
                    }
                }
            }
        }
    }

    /// The exact integer dot of column `o`'s block `b` with activation quants `x`: Σ q·x,
    /// for Q6K `sc₀·Σ₀..₁₆ q·x + sc₁·Σ₁₆..₃₂ q·x` (|·| < 2^24, so exact in i32 and f32).
    #[inline(always)]
    fn block_isum(&self, o: usize, b: usize, q: &[i32; QK], x: &[i8]) -> i32 {
        let dot = |r: std::ops::Range<usize>| -> i32 { r.map(|i| q[i] * x[i] as i32).sum() };
        if self.kind == WKind::Q6K {
            let si = ((o / GC) * self.nb + b) * GC + o % GC;
            self.sub[2 * si] as i32 * dot(0..16) + self.sub[2 * si + 1] as i32 * dot(16..32)
        } else {
            dot(0..QK)
        }
    }

    /// The f32 values row `o` stands for (for embedding lookups): Q4_1 `d·q + m`, Q6K
    /// `(d·sc)·q`, others `d·q` (exact products; Q4_1 rounds once in the addition).
    pub fn dequant_row(&self, o: usize, out: &mut [f32]) {
        assert_eq!(out.len(), self.k);
        let mut q = [0i32; QK];
        let (g, c) = (o / GC, o % GC);
        for b in 0..self.nb {
            self.unpack(o, b, &mut q);
            let si = (g * self.nb + b) * GC + c;
            let d = self.d_at(si);
            for (i, v) in out[b * QK..(b + 1) * QK].iter_mut().enumerate() {
                *v = match self.kind {
                    WKind::Q4_1 => d * q[i] as f32 + self.m.at(si),
                    WKind::Q6K => (d * self.sub[2 * si + i / 16] as f32) * q[i] as f32,
                    _ => d * q[i] as f32,
                };
            }
        }
    }
}

/// A raw output pointer that tasks write through at disjoint indices.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint column ranges of the output (see `qmatmul`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Taking `self` makes closures capture the whole (Send) wrapper, not the raw field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// y (rows × n_out, row-major) = int8-exact product of the activations and `w`ᵀ.
pub fn qmatmul(a: &QAct, w: &QMat, y: &mut [f32]) {
    qmatmul_many(a, &mut [(w, y)]);
}

/// [`qmatmul`] of one activation with several matrices (q, k and v; gate and up) in one
/// parallel call: a one-row call is short, and waking the thread pool once instead of
/// three times is a measurable part of it. Results are those of separate calls.
pub fn qmatmul_many(a: &QAct, outs: &mut [(&QMat, &mut [f32])]) {
    let mut tasks = Vec::new();
    let mut ptrs = Vec::with_capacity(outs.len());
    let mut ws: Vec<&QMat> = Vec::with_capacity(outs.len());
    for (i, (w, y)) in outs.iter_mut().enumerate() {
        ws.push(w);
        assert_eq!(a.k, w.k, "qmatmul: k mismatch");
        debug_assert_eq!(a.nb, w.nb);
        assert_eq!(y.len(), a.rows * w.n_out, "qmatmul: y shape");
        ptrs.push(OutPtr(y.as_mut_ptr()));
        tasks.extend((0..w.groups.div_ceil(GROUPS_PER_TASK)).map(|t| (i, t)));
    }
    tasks.into_par_iter().for_each(|(i, t)| {
        let w = ws[i];
        let g0 = t * GROUPS_PER_TASK;
        let g1 = (g0 + GROUPS_PER_TASK).min(w.groups);
        // SAFETY: this task writes only y_i[r * n_out + o] for columns o of groups g0..g1 of
        // matrix i, which no other task touches; every index is < rows * n_out (checked
        // above), and `outs` holds distinct mutable slices.
        unsafe { task_dispatch(a, w, g0, g1, ptrs[i].get()) };
    });
}

unsafe fn task_dispatch(a: &QAct, w: &QMat, g0: usize, g1: usize, y: *mut f32) {
    #[cfg(target_arch = "x86_64")]
    {
        // F16C widens the scales; every AVX2 CPU has it.
        if super::half::has_f16c() {
            return avx2::task(a, w, g0, g1, y);
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if super::kernels::simd_enabled() {
            return neon::task(a, w, g0, g1, y);
        }
    }
    tile_scalar(a, w, g0, g1, y)
}

/// Portable implementation: unpack a column's block to integers, exact i32 dot per row,
/// then the sequential f32 combination of the definition.
///
/// # Safety
/// `y` must be valid for `a.rows × w.n_out` writes; only columns of groups `g0..g1` are
/// written.
pub unsafe fn tile_scalar(a: &QAct, w: &QMat, g0: usize, g1: usize, y: *mut f32) {
    let nb = w.nb;
    let mut wq = vec![[0i32; QK]; nb];
    let mut acc = vec![0f32; a.rows];
    for o in g0 * GC..(g1 * GC).min(w.n_out) {
        for (b, blk) in wq.iter_mut().enumerate() {
            w.unpack(o, b, blk);
        }
        acc.fill(0.0);
        let (g, c) = (o / GC, o % GC);
        for (r, accr) in acc.iter_mut().enumerate() {
            let xr = &a.q[r * a.k..(r + 1) * a.k];
            for (b, blk) in wq.iter().enumerate() {
                let isum = w.block_isum(o, b, blk, &xr[b * QK..(b + 1) * QK]);
                let si = (g * nb + b) * GC + c;
                let s = a.sx[r * nb + b];
                *accr += (w.d_at(si) * s) * isum as f32;
                if w.kind == WKind::Q4_1 {
                    *accr += (w.m.at(si) * s) * a.xs[r * nb + b] as f32;
                }
            }
        }
        for (r, v) in acc.iter().enumerate() {
            *y.add(r * w.n_out + o) = *v;
        }
    }
}

#[cfg(target_arch = "aarch64")]
#[path = "int8_neon.rs"]
pub mod neon;

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    //! AVX2 tiles: 8 output columns (one per 32-bit lane) × up to 4 activation rows.
    //!
    //! Each 32-bit lane holds 4 consecutive k of one column, so `vpmaddubsw` (u8 × i8 →
    //! pairwise i16 sums) followed by `vpmaddwd` with ones gives per-column partial dots
    //! without any horizontal reduction; the activation's 4 bytes are broadcast.
    //!
    //! Saturation bounds (`vpmaddubsw` saturates each i16 pair sum to ±32767):
    //! * Q4: weights u8 in 0..=15, activations i8 in −127..=127: one pair ≤ 2·15·127 = 3810.
    //!   A block adds 8 such results per i16 lane (4 vectors × lo/hi nibbles) with wrapping
    //!   `vpaddw`: |sum| ≤ 8·3810 = 30480 < 32767, so nothing saturates or wraps.
    //! * Q8: weights i8 in −128..=127 go in as |w| (u8 ≤ 128, `vpsignb(w, w)` turns −128
    //!   into the byte 0x80 = 128) and activations as x·sign(w) (|x| ≤ 127, so the negation
    //!   is exact): one pair ≤ 2·128·127 = 32512 < 32767. Each maddubs result is widened to
    //!   i32 by `vpmaddwd` before any addition. Q5_0 values are at most 16 in magnitude and
    //!   Q6_K's 32, so the same path holds them with room to spare.
    //! * Q6_K: each half block's i32 sum is at most 16·32·127 = 65,024 in magnitude; times
    //!   its scale (|sc| ≤ 128) and added to the other half's, at most 16,646,144 < 2^24.
    //!
    //! All i32 sums are < 2^24, so `vcvtdq2ps` is exact.
    use super::*;
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2 and F16C must be available; `y` as for [`tile_scalar`].
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn task(a: &QAct, w: &QMat, g0: usize, g1: usize, y: *mut f32) {
        // Rows in chunks whose activations stay in L2 while the task's column groups pass
        // over them (a prefill call can carry thousands of rows: streaming all of them once
        // per column group would be memory-bound). Order of work only; results are per
        // output and do not depend on it.
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

    /// Activation rows per L2-resident chunk (64 rows × 1,536 bytes at most here).
    const ROW_CHUNK: usize = 64;

    #[inline(always)]
    unsafe fn tile<const R: usize>(a: &QAct, w: &QMat, g: usize, r0: usize, y: *mut f32) {
        let acc = match (w.kind, w.d.is_half()) {
            (WKind::Q4_1, true) => tile_q4::<R, true, false, true>(a, w, g, r0),
            (WKind::Q4_1, false) => tile_q4::<R, true, false, false>(a, w, g, r0),
            (WKind::Q4_0, true) => tile_q4::<R, false, true, true>(a, w, g, r0),
            (WKind::Q4_0, false) => tile_q4::<R, false, true, false>(a, w, g, r0),
            (WKind::Q8_0, true) => tile_q8::<R, true, false>(a, w, g, r0),
            (WKind::Q8_0, false) => tile_q8::<R, false, false>(a, w, g, r0),
            (WKind::Q6K, true) => tile_q8::<R, true, true>(a, w, g, r0),
            (WKind::Q6K, false) => tile_q8::<R, false, true>(a, w, g, r0),
            (WKind::Q5, true) => tile_q5::<R, true>(a, w, g, r0),
            (WKind::Q5, false) => tile_q5::<R, false>(a, w, g, r0),
        };
        for (i, v) in acc.iter().enumerate() {
            let mut tmp = [0f32; GC];
            _mm256_storeu_ps(tmp.as_mut_ptr(), *v);
            for (c, t) in tmp.iter().enumerate() {
                let o = g * GC + c;
                if o < w.n_out {
                    *y.add((r0 + i) * w.n_out + o) = *t;
                }
            }
        }
    }

    /// The 8 scales of one group and block from `p`: halves widened exactly by
    /// `vcvtph2ps` (`HALF`), or f32 as stored.
    #[inline(always)]
    unsafe fn load_scales8<const HALF: bool>(p: *const u8) -> __m256 {
        if HALF {
            _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
        } else {
            _mm256_loadu_ps(p as *const f32)
        }
    }

    #[inline(always)]
    unsafe fn bcast4(p: *const i8) -> __m256i {
        _mm256_set1_epi32(std::ptr::read_unaligned(p as *const i32))
    }

    /// acc += (d·s)·isum, then for Q4_1 acc += (m·s)·xsum: the definition's order.
    #[inline(always)]
    unsafe fn combine<const MIN: bool>(
        acc: __m256,
        isum: __m256i,
        dv: __m256,
        mv: __m256,
        s: f32,
        xs: i32,
    ) -> __m256 {
        let sv = _mm256_set1_ps(s);
        let acc = _mm256_add_ps(
            acc,
            _mm256_mul_ps(_mm256_mul_ps(dv, sv), _mm256_cvtepi32_ps(isum)),
        );
        if MIN {
            let t = _mm256_mul_ps(_mm256_mul_ps(mv, sv), _mm256_set1_ps(xs as f32));
            _mm256_add_ps(acc, t)
        } else {
            acc
        }
    }

    /// Q4_0 (`OFF8`) and Q4_1 (`MIN`) blocks, scales as halves (`HALF`) or f32.
    #[inline(always)]
    unsafe fn tile_q4<const R: usize, const MIN: bool, const OFF8: bool, const HALF: bool>(
        a: &QAct,
        w: &QMat,
        g: usize,
        r0: usize,
    ) -> [__m256; R] {
        let nb = w.nb;
        let mask = _mm256_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); R];
        let xrow: [*const i8; R] = std::array::from_fn(|i| a.q.as_ptr().add((r0 + i) * a.k));
        let wq = w.q.as_ptr().add(g * nb * 16 * GC);
        for b in 0..nb {
            let wp = wq.add(b * 16 * GC);
            let mut s16 = [_mm256_setzero_si256(); R];
            for t in 0..4 {
                let v = _mm256_loadu_si256(wp.add(t * 32) as *const __m256i);
                let lo = _mm256_and_si256(v, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
                for i in 0..R {
                    let xp = xrow[i].add(b * QK + 4 * t);
                    let pl = _mm256_maddubs_epi16(lo, bcast4(xp));
                    let ph = _mm256_maddubs_epi16(hi, bcast4(xp.add(16)));
                    s16[i] = _mm256_add_epi16(s16[i], _mm256_add_epi16(pl, ph));
                }
            }
            let si = (g * nb + b) * GC;
            let dv = load_scales8::<HALF>(w.d.ptr(si));
            let mv = if MIN {
                load_scales8::<HALF>(w.m.ptr(si))
            } else {
                _mm256_setzero_ps()
            };
            for i in 0..R {
                let ai = (r0 + i) * nb + b;
                let xs = *a.xs.get_unchecked(ai);
                let mut isum = _mm256_madd_epi16(s16[i], ones);
                if OFF8 {
                    isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(8 * xs));
                }
                acc[i] = combine::<MIN>(acc[i], isum, dv, mv, *a.sx.get_unchecked(ai), xs);
            }
        }
        acc
    }

    /// Q5 blocks: unsigned bytes u = q + 16 ≤ 31, so a pair sum of `vpmaddubsw` is at most
    /// 2·31·127 = 7,874 and four of them add in i16 without overflow (31,496); then
    /// Σu·x − 16·Σx = Σq·x, exact in i32.
    #[inline(always)]
    unsafe fn tile_q5<const R: usize, const HALF: bool>(
        a: &QAct,
        w: &QMat,
        g: usize,
        r0: usize,
    ) -> [__m256; R] {
        let nb = w.nb;
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); R];
        let xrow: [*const i8; R] = std::array::from_fn(|i| a.q.as_ptr().add((r0 + i) * a.k));
        let wq = w.q.as_ptr().add(g * nb * 32 * GC);
        let zero = _mm256_setzero_ps();
        for b in 0..nb {
            let wp = wq.add(b * 32 * GC);
            let mut s32 = [_mm256_setzero_si256(); R];
            for half in 0..2 {
                let mut s16 = [_mm256_setzero_si256(); R];
                for j in 4 * half..4 * half + 4 {
                    let v = _mm256_loadu_si256(wp.add(j * 32) as *const __m256i);
                    for i in 0..R {
                        let p = _mm256_maddubs_epi16(v, bcast4(xrow[i].add(b * QK + 4 * j)));
                        s16[i] = _mm256_add_epi16(s16[i], p);
                    }
                }
                for i in 0..R {
                    s32[i] = _mm256_add_epi32(s32[i], _mm256_madd_epi16(s16[i], ones));
                }
            }
            let si = (g * nb + b) * GC;
            let dv = load_scales8::<HALF>(w.d.ptr(si));
            for i in 0..R {
                let ai = (r0 + i) * nb + b;
                let xs = *a.xs.get_unchecked(ai);
                let isum = _mm256_sub_epi32(s32[i], _mm256_set1_epi32(16 * xs));
                acc[i] = combine::<false>(acc[i], isum, dv, zero, *a.sx.get_unchecked(ai), 0);
            }
        }
        acc
    }

    /// Q8_0 blocks, or with `SUB` Q6K blocks (the two halves' sums scaled by their integer
    /// scales, exactly in i32); scales as halves (`HALF`) or f32.
    #[inline(always)]
    unsafe fn tile_q8<const R: usize, const HALF: bool, const SUB: bool>(
        a: &QAct,
        w: &QMat,
        g: usize,
        r0: usize,
    ) -> [__m256; R] {
        let nb = w.nb;
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); R];
        let xrow: [*const i8; R] = std::array::from_fn(|i| a.q.as_ptr().add((r0 + i) * a.k));
        let wq = w.q.as_ptr().add(g * nb * 32 * GC);
        let zero = _mm256_setzero_ps();
        for b in 0..nb {
            let wp = wq.add(b * 32 * GC);
            // Values 0..16 (vectors 0..4) and 16..32 (vectors 4..8) summed apart for Q6K.
            let mut s32 = [[_mm256_setzero_si256(); 2]; R];
            for j in 0..8 {
                let v = _mm256_loadu_si256(wp.add(j * 32) as *const __m256i);
                let av = _mm256_sign_epi8(v, v);
                let h = if SUB { j / 4 } else { 0 };
                for i in 0..R {
                    let xv = _mm256_sign_epi8(bcast4(xrow[i].add(b * QK + 4 * j)), v);
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(av, xv), ones);
                    s32[i][h] = _mm256_add_epi32(s32[i][h], p);
                }
            }
            let si = (g * nb + b) * GC;
            let dv = load_scales8::<HALF>(w.d.ptr(si));
            let (sc0, sc1) = if SUB {
                // The 8 columns' (sc₀, sc₁) pairs: 16 bytes, de-interleaved and widened.
                let pairs = _mm_loadu_si128(w.sub.as_ptr().add(2 * si) as *const __m128i);
                let wide = _mm256_cvtepi8_epi16(pairs);
                let even = _mm256_srai_epi32(_mm256_slli_epi32(wide, 16), 16);
                let odd = _mm256_srai_epi32(wide, 16);
                (even, odd)
            } else {
                (_mm256_setzero_si256(), _mm256_setzero_si256())
            };
            for i in 0..R {
                let ai = (r0 + i) * nb + b;
                let isum = if SUB {
                    _mm256_add_epi32(
                        _mm256_mullo_epi32(s32[i][0], sc0),
                        _mm256_mullo_epi32(s32[i][1], sc1),
                    )
                } else {
                    s32[i][0]
                };
                acc[i] = combine::<false>(acc[i], isum, dv, zero, *a.sx.get_unchecked(ai), 0);
            }
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_rng::Lcg;

    /// A plausible f16 scale: positive or negative, exponent 2^-14 .. 2^-3.
    fn f16(r: &mut Lcg) -> [u8; 2] {
        let h = ((r.next() & 1) << 15) | ((1 + r.next() % 12) << 10) | (r.next() & 0x3ff);
        (h as u16).to_le_bytes()
    }

    fn random_raw(kind: GgmlDType, n_out: usize, k: usize, r: &mut Lcg) -> Vec<u8> {
        let (bsz, per) = ggml_block(kind).unwrap();
        let mut raw = Vec::new();
        for _ in 0..n_out * (k / per) {
            let start = raw.len();
            match kind {
                GgmlDType::Q4K => {
                    raw.extend_from_slice(&f16(r));
                    raw.extend_from_slice(&f16(r));
                }
                GgmlDType::Q6K => {}
                _ => raw.extend_from_slice(&f16(r)),
            }
            if kind == GgmlDType::Q4_1 {
                raw.extend_from_slice(&f16(r));
            }
            while raw.len() < start + bsz {
                raw.push(r.next() as u8);
            }
            if kind == GgmlDType::Q6K {
                // d (the last two bytes) a plausible half; the scales (bytes 192..208)
                // include the extremes −128 and 127.
                raw[start + 208..start + 210].copy_from_slice(&f16(r));
                raw[start + 192] = 0x80;
                raw[start + 193] = 0x7f;
            }
        }
        raw
    }

    /// One 32-value block as the definition reads it straight from the GGUF bytes (ggml's
    /// dequantization formulas): integer values, the scale, the min, and per-16 integer
    /// scales (1 where the type has none).
    fn reference_block(
        kind: GgmlDType,
        raw: &[u8],
        o: usize,
        b: usize,
        k: usize,
    ) -> ([i32; 32], f32, f32, [i32; 2]) {
        let (bsz, per) = ggml_block(kind).unwrap();
        let row = &raw[o * (k / per) * bsz..(o + 1) * (k / per) * bsz];
        let h = |blk: &[u8], at: usize| f16_to_f32(u16::from_le_bytes([blk[at], blk[at + 1]]));
        let mut q = [0i32; 32];
        match kind {
            GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q8_0 | GgmlDType::Q5_0 => {
                let blk = &row[b * bsz..(b + 1) * bsz];
                let (d, m) = (
                    h(blk, 0),
                    if kind == GgmlDType::Q4_1 {
                        h(blk, 2)
                    } else {
                        0.0
                    },
                );
                for i in 0..32 {
                    q[i] = match kind {
                        GgmlDType::Q8_0 => blk[2 + i] as i8 as i32,
                        GgmlDType::Q5_0 => {
                            let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                            let nib = if i < 16 {
                                blk[6 + i] & 15
                            } else {
                                blk[6 + i - 16] >> 4
                            };
                            (nib as i32 | (((qh >> i) & 1) << 4) as i32) - 16
                        }
                        _ => {
                            let qs = &blk[bsz - 16..];
                            let nib = if i < 16 { qs[i] & 15 } else { qs[i - 16] >> 4 };
                            nib as i32 - if kind == GgmlDType::Q4_0 { 8 } else { 0 }
                        }
                    };
                }
                (q, d, m, [1, 1])
            }
            GgmlDType::Q4K => {
                let sb = &row[(b / 8) * 144..(b / 8 + 1) * 144];
                let j = b % 8;
                let (sc, mn) = q4k_scale_min(j, &sb[4..16]);
                for (i, qi) in q.iter_mut().enumerate() {
                    let byte = sb[16 + 32 * (j / 2) + i];
                    *qi = if j % 2 == 0 { byte & 15 } else { byte >> 4 } as i32;
                }
                (q, h(sb, 0) * sc as f32, -(h(sb, 2) * mn as f32), [1, 1])
            }
            GgmlDType::Q6K => {
                let sb = &row[(b / 8) * 210..(b / 8 + 1) * 210];
                let j = b % 8; // values 32j..32j+32 of the super-block
                for (i, qi) in q.iter_mut().enumerate() {
                    let v = 32 * j + i; // 0..256
                    let (n, l, t) = (v / 128, v % 32, (v % 128) / 32);
                    let ql = sb[64 * n + l + 32 * (t & 1)];
                    let nib = if t < 2 { ql & 15 } else { ql >> 4 };
                    let hi = (sb[128 + 32 * n + l] >> (2 * t)) & 3;
                    *qi = (nib | (hi << 4)) as i32 - 32;
                }
                let sc = &sb[192..208];
                (
                    q,
                    h(sb, 208),
                    0.0,
                    [sc[2 * j] as i8 as i32, sc[2 * j + 1] as i8 as i32],
                )
            }
            _ => unreachable!(),
        }
    }

    /// The definition, read straight from the GGUF bytes: no packing involved.
    fn reference(kind: GgmlDType, raw: &[u8], n_out: usize, a: &QAct) -> Vec<f32> {
        let (k, nb) = (a.k, a.nb);
        let mut y = vec![0f32; a.rows * n_out];
        for r in 0..a.rows {
            for o in 0..n_out {
                let mut acc = 0f32;
                for b in 0..nb {
                    let (wq, d, m, sub) = reference_block(kind, raw, o, b, k);
                    let x = &a.q[r * k + b * QK..r * k + (b + 1) * QK];
                    let half = |h: usize| -> i32 {
                        (16 * h..16 * h + 16).map(|i| wq[i] * x[i] as i32).sum()
                    };
                    let isum = sub[0] * half(0) + sub[1] * half(1);
                    let s = a.sx[r * nb + b];
                    acc += (d * s) * isum as f32;
                    if matches!(kind, GgmlDType::Q4_1 | GgmlDType::Q4K) {
                        acc += (m * s) * a.xs[r * nb + b] as f32;
                    }
                }
                y[r * n_out + o] = acc;
            }
        }
        y
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn run(a: &QAct, w: &QMat, simd: bool) -> Vec<f32> {
        let mut y = vec![f32::NAN; a.rows * w.n_out];
        let p = y.as_mut_ptr();
        unsafe {
            if simd {
                #[cfg(target_arch = "x86_64")]
                avx2::task(a, w, 0, w.groups, p);
                #[cfg(target_arch = "aarch64")]
                neon::task(a, w, 0, w.groups, p);
            } else {
                tile_scalar(a, w, 0, w.groups, p);
            }
        }
        y
    }

    #[test]
    fn kernels_match_reference_bit_for_bit() {
        let mut r = Lcg(5);
        // The SIMD tile this machine has: AVX2 + F16C, or NEON (aarch64's baseline).
        let simd = {
            #[cfg(target_arch = "x86_64")]
            {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "aarch64")]
            {
                true
            }
            #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
            {
                false
            }
        };
        for kind in [
            GgmlDType::Q4_1,
            GgmlDType::Q4_0,
            GgmlDType::Q8_0,
            GgmlDType::Q5_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            for &k in &[256usize, 640, 1536] {
                // K-quant rows are whole super-blocks of 256.
                let k = if matches!(kind, GgmlDType::Q4K | GgmlDType::Q6K) && k % 256 != 0 {
                    768
                } else {
                    k
                };
                for &(rows, n_out) in &[
                    (1usize, 8usize),
                    (3, 13),
                    (4, 24),
                    (7, 40),
                    (17, 9),
                    (70, 19),
                ] {
                    let raw = random_raw(kind, n_out, k, &mut r);
                    let w = QMat::from_ggml(kind, &raw, n_out, k).unwrap();
                    let mut x: Vec<f32> = (0..rows * k).map(|_| r.f() * 4.0).collect();
                    // An all-zero block and an extreme block.
                    x[..QK].fill(0.0);
                    if rows > 1 {
                        x[k + QK..k + 2 * QK].iter_mut().for_each(|v| *v *= 1e6);
                    }
                    let a = QAct::new(&x, rows, k);
                    let want = bits(&reference(kind, &raw, n_out, &a));
                    assert_eq!(
                        bits(&run(&a, &w, false)),
                        want,
                        "scalar {kind:?} {rows}x{n_out}x{k}"
                    );
                    if simd {
                        assert_eq!(
                            bits(&run(&a, &w, true)),
                            want,
                            "simd {kind:?} {rows}x{n_out}x{k}"
                        );
                    }
                    // Through the threaded entry point, and row by row (batch invariance).
                    let mut y = vec![0f32; rows * n_out];
                    qmatmul(&a, &w, &mut y);
                    assert_eq!(bits(&y), want);
                    for rr in 0..rows {
                        let a1 = QAct::new(&x[rr * k..(rr + 1) * k], 1, k);
                        let mut y1 = vec![0f32; n_out];
                        qmatmul(&a1, &w, &mut y1);
                        assert_eq!(bits(&y1), want[rr * n_out..(rr + 1) * n_out]);
                    }
                }
            }
        }
    }

    /// The repacked blocks stand for exactly the values candle's own dequantization gives
    /// (an implementation independent of ours): the GGUF layouts are read right.
    #[test]
    fn repacked_values_equal_candles_dequantization() {
        use candle_core::quantized::{QStorage, QTensor};
        let mut r = Lcg(3);
        for kind in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let (n_out, k) = (11, 512);
            let raw = random_raw(kind, n_out, k, &mut r);
            let w = QMat::from_ggml(kind, &raw, n_out, k).unwrap();
            let st = QStorage::from_data(
                std::borrow::Cow::Owned(raw.clone()),
                &candle_core::Device::Cpu,
                kind,
            )
            .unwrap();
            let want = QTensor::new(st, (n_out, k))
                .unwrap()
                .dequantize(&candle_core::Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let mut row = vec![0f32; k];
            for o in 0..n_out {
                w.dequant_row(o, &mut row);
                assert_eq!(
                    bits(&row),
                    bits(&want[o * k..(o + 1) * k]),
                    "{kind:?} row {o}"
                );
            }
        }
    }

    #[test]
    fn f32_matrices_quantized_at_load_match_across_kernels() {
        // Their scales stay f32 (not halves): the other AVX2 scale path.
        let mut r = Lcg(11);
        let (n_out, k) = (21, 576);
        let wf: Vec<f32> = (0..n_out * k).map(|_| r.f() * 0.1).collect();
        let w = QMat::from_f32_q8(&wf, n_out, k);
        assert!(matches!(w.d, Scales::Single(_)));
        for rows in [1usize, 4, 9] {
            let x: Vec<f32> = (0..rows * k).map(|_| r.f()).collect();
            let a = QAct::new(&x, rows, k);
            let scalar = bits(&run(&a, &w, false));
            let mut y = vec![0f32; rows * n_out];
            qmatmul(&a, &w, &mut y);
            assert_eq!(bits(&y), scalar, "rows {rows}");
            // The definition, from the f32 scales and integer quants directly.
            for rr in 0..rows {
                for o in 0..n_out {
                    let mut acc = 0f32;
                    let mut q = [0i32; QK];
                    for b in 0..k / QK {
                        w.unpack(o, b, &mut q);
                        let xq = &a.q[rr * k + b * QK..rr * k + (b + 1) * QK];
                        let isum: i32 = q.iter().zip(xq).map(|(&w, &x)| w * x as i32).sum();
                        let si = (o / GC * w.nb + b) * GC + o % GC;
                        acc += (w.d_at(si) * a.sx[rr * (k / QK) + b]) * isum as f32;
                    }
                    assert_eq!(acc.to_bits(), scalar[rr * n_out + o]);
                }
            }
        }
    }

    #[test]
    fn every_rows_count_up_to_70_matches() {
        let mut r = Lcg(9);
        let (n_out, k) = (16, 64);
        for kind in [
            GgmlDType::Q4_1,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let k = if matches!(kind, GgmlDType::Q4K | GgmlDType::Q6K) {
                256
            } else {
                k
            };
            let raw = random_raw(kind, n_out, k, &mut r);
            let w = QMat::from_ggml(kind, &raw, n_out, k).unwrap();
            for rows in 1..=70 {
                let x: Vec<f32> = (0..rows * k).map(|_| r.f()).collect();
                let a = QAct::new(&x, rows, k);
                let want = bits(&reference(kind, &raw, n_out, &a));
                let mut y = vec![0f32; rows * n_out];
                qmatmul(&a, &w, &mut y);
                assert_eq!(bits(&y), want, "{kind:?} rows {rows}");
                assert_eq!(bits(&run(&a, &w, false)), want);
            }
        }
    }

    #[test]
    fn q8_extreme_weights_do_not_saturate() {
        // Every weight −128 and every activation ±127: the largest pair sums.
        let (n_out, k) = (8, 64);
        let mut raw = Vec::new();
        for _ in 0..n_out * 2 {
            raw.extend_from_slice(&0x3c00u16.to_le_bytes()); // d = 1.0
            raw.extend(std::iter::repeat_n(0x80u8, 32));
        }
        let w = QMat::from_ggml(GgmlDType::Q8_0, &raw, n_out, k).unwrap();
        let x = vec![-1.0f32; k];
        let a = QAct::new(&x, 1, k);
        let mut y = vec![0f32; n_out];
        qmatmul(&a, &w, &mut y);
        let s = 1.0f32 / 127.0;
        let want = (0f32 + s * (32 * 128 * 127) as f32) + s * (32 * 128 * 127) as f32;
        assert!(y.iter().all(|&v| v == want), "{y:?} vs {want}");
        assert_eq!(bits(&run(&a, &w, false)), bits(&y));
    }

    #[test]
    fn activation_rounding_rule() {
        let mut x = [0f32; QK];
        x[0] = 127.0;
        x[1] = 0.5;
        x[2] = -0.5;
        x[3] = 1.4999999;
        x[4] = -126.5;
        x[5] = 0.49999997;
        let mut q = [0i8; QK];
        let (s, sum) = quantize_block(&x, &mut q);
        assert_eq!(s, 1.0);
        assert_eq!(&q[..6], &[127, 1, -1, 1, -127, 0]);
        assert_eq!(sum, 1);
        let (s, sum) = quantize_block(&[0.0; QK], &mut q);
        assert_eq!((s, sum), (0.0, 0));
    }

    #[test]
    fn f16_conversion() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    #[test]
    fn unsupported_type_is_a_model_error() {
        let e = QMat::from_ggml(GgmlDType::Q5K, &[], 8, 256).err().unwrap();
        assert!(format!("{e}").contains("Q4_1"), "{e}");
    }
}

#[cfg(test)]
mod kernel_speed {
    use super::*;

    /// Q5_0 weights through their own unsigned kernel against the same values as Q8_0
    /// blocks through the signed one, alternately in one process (robust to a busy
    /// machine). `cargo test --release --lib q5_kernel_speed -- --ignored --nocapture`
    #[test]
    #[ignore = "timing probe"]
    fn q5_kernel_speed() {
        let (n_out, k, rows) = (2048usize, 640usize, 64usize);
        let mut seed = 1u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u8
        };
        let nb = k / QK;
        let (mut q5, mut q8) = (Vec::new(), Vec::new());
        for _ in 0..n_out * nb {
            let d = 0x2000u16.to_le_bytes();
            let vals: Vec<u8> = (0..32).map(|_| next() % 32).collect();
            q5.extend_from_slice(&d);
            let mut qh = 0u32;
            for (j, &v) in vals.iter().enumerate() {
                qh |= ((v as u32 >> 4) & 1) << j;
            }
            q5.extend_from_slice(&qh.to_le_bytes());
            for j in 0..16 {
                q5.push((vals[j] & 15) | ((vals[j + 16] & 15) << 4));
            }
            q8.extend_from_slice(&d);
            q8.extend(vals.iter().map(|&v| (v as i8 - 16) as u8));
        }
        let w5 = QMat::from_ggml(GgmlDType::Q5_0, &q5, n_out, k).unwrap();
        let w8 = QMat::from_ggml(GgmlDType::Q8_0, &q8, n_out, k).unwrap();
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 7919) % 255) as f32 / 64.0 - 2.0)
            .collect();
        let a = QAct::new(&x, rows, k);
        let (mut y5, mut y8) = (vec![0f32; rows * n_out], vec![0f32; rows * n_out]);
        let (mut t5, mut t8) = (Vec::new(), Vec::new());
        for _ in 0..15 {
            let t = std::time::Instant::now();
            qmatmul(&a, &w5, &mut y5);
            t5.push(t.elapsed().as_secs_f64());
            let t = std::time::Instant::now();
            qmatmul(&a, &w8, &mut y8);
            t8.push(t.elapsed().as_secs_f64());
        }
        assert_eq!(y5, y8, "same values, same bits");
        t5.sort_by(f64::total_cmp);
        t8.sort_by(f64::total_cmp);
        let gmac = (n_out * k * rows) as f64 / 1e9;
        println!(
            "Q5 kernel {:.2} ms ({:.1} GMAC/s), Q8 kernel {:.2} ms ({:.1} GMAC/s)",
            t5[7] * 1e3,
            gmac / t5[7],
            t8[7] * 1e3,
            gmac / t8[7]
        );
    }
}
