//! The steps every architecture's forward pass shares: checking a call's rows against the
//! caches, writing keys and values, attention over the caches, norms.
//!
//! Each row of a call is one (stream, token, position); a row's result depends only on that
//! row and its stream's cache, so the encoder may score many known positions per call
//! while the decoder goes one token at a time, and both get the same bits.

use super::attention::{attend_tile, AttnShape, ATT_ROWS};
use super::kv_cache::{KvCache, LayerKind, MAX_CALL_ROWS};
use crate::math::sum_sq;
use crate::{Error, Result};
use rayon::prelude::*;

/// One row of a forward call.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// Index into the caches slice.
    pub stream: usize,
    /// Input token.
    pub token: u32,
    /// RoPE position of the token; rows of one stream come in order, the first at that
    /// stream's [`KvCache::next_pos`], each next one position later.
    pub pos: usize,
}

/// A checked call: where each row goes and how attention is tiled.
pub(crate) struct Plan {
    /// Row `i` is the `nth[i]`-th row of its stream in this call.
    nth: Vec<usize>,
    /// Rows per stream in this call.
    per_stream: Vec<usize>,
    /// Attention tiles: (stream, the tile's row indices in slot order), up to
    /// [`ATT_ROWS`] rows of one stream each, so that each cached chunk read serves several
    /// rows.
    tiles: Vec<(usize, Vec<usize>)>,
}

/// Validates `rows` against the caches before anything is touched (positions continue each
/// stream's contiguous ones, tokens are in the vocabulary, the window has room), then makes
/// room in the sliding-window parts.
pub(crate) fn plan(caches: &mut [KvCache], rows: &[Row], vocab: usize) -> Result<Plan> {
    let mut per_stream = vec![0usize; caches.len()];
    let mut nth = Vec::with_capacity(rows.len());
    for r in rows {
        let ok = r.stream < caches.len() && {
            let c = &caches[r.stream];
            let i = per_stream[r.stream];
            c.len() + i < c.capacity() && r.pos == c.next_pos() + i && (r.token as usize) < vocab
        };
        if !ok {
            return Err(Error::internal(format!("forward: bad row {r:?}")));
        }
        nth.push(per_stream[r.stream]);
        per_stream[r.stream] += 1;
    }
    if per_stream.iter().any(|&n| n > MAX_CALL_ROWS) && caches.iter().any(|c| c.has_local()) {
        return Err(Error::internal(format!(
            "forward: more than {MAX_CALL_ROWS} rows of one stream in a call"
        )));
    }
    for (c, &n) in caches.iter_mut().zip(&per_stream) {
        if n > 0 && !c.make_room(n)? {
            return Err(Error::internal("forward: cache full"));
        }
    }
    let mut by_stream: Vec<Vec<usize>> = vec![Vec::new(); caches.len()];
    for (i, r) in rows.iter().enumerate() {
        by_stream[r.stream].push(i);
    }
    let tiles = by_stream
        .into_iter()
        .enumerate()
        .flat_map(|(s, idx)| {
            idx.chunks(ATT_ROWS)
                .map(|t| (s, t.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(Plan {
        nth,
        per_stream,
        tiles,
    })
}

impl Plan {
    /// The cache slot of row `i` in a layer of `kind`.
    pub(crate) fn slot(
        &self,
        caches: &[KvCache],
        rows: &[Row],
        i: usize,
        kind: LayerKind,
    ) -> usize {
        caches[rows[i].stream].new_slot(kind, self.nth[i])
    }

    /// Stores every row's keys and values (`kv` values per row each) in its slot of a
    /// layer, before any row of the call reads the cache: a row then sees exactly the
    /// positions up to its own, whatever else the call carries.
    pub(crate) fn write_kv(
        &self,
        caches: &mut [KvCache],
        rows: &[Row],
        kind: LayerKind,
        k: &[f32],
        v: &[f32],
        kv: usize,
    ) {
        for (i, r) in rows.iter().enumerate() {
            let slot = self.slot(caches, rows, i, kind);
            caches[r.stream].put(
                kind,
                slot,
                &k[i * kv..(i + 1) * kv],
                &v[i * kv..(i + 1) * kv],
            );
        }
    }

    /// Keeps the un-rotated keys of rows going to slot 0 of a full layer (for sliding).
    pub(crate) fn keep_sinks(
        &self,
        caches: &mut [KvCache],
        rows: &[Row],
        layer: usize,
        k: &[f32],
        kv: usize,
    ) {
        for (i, r) in rows.iter().enumerate() {
            if self.slot(caches, rows, i, LayerKind::Full(layer)) == 0 {
                caches[r.stream].set_sink(layer, &k[i * kv..(i + 1) * kv]);
            }
        }
    }

    /// Attention of every row over its stream's cache in a layer: `q` holds each row's
    /// `kv_heads × group × head_dim` query values, `out` receives as many outputs.
    pub(crate) fn attention(
        &self,
        caches: &[KvCache],
        rows: &[Row],
        kind: LayerKind,
        shape: &AttnShape,
        q: &[f32],
        out: &mut [f32],
    ) {
        let kv_heads = shape.kv_heads;
        let d = kv_heads * shape.group * shape.head_dim;
        let gq = shape.group * shape.head_dim;
        let tasks: Vec<(usize, usize, &[usize])> = self
            .tiles
            .iter()
            .flat_map(|(s, idx)| (0..kv_heads).map(move |kh| (*s, kh, idx.as_slice())))
            .collect();
        let results: Vec<Vec<f32>> = tasks
            .par_iter()
            .map(|&(s, kh, idx)| {
                let cache = &caches[s];
                let ranges: Vec<(usize, usize)> = idx
                    .iter()
                    .map(|&i| cache.visible(kind, self.slot(caches, rows, i, kind)))
                    .collect();
                let qs: Vec<&[f32]> = idx
                    .iter()
                    .map(|&i| &q[i * d + kh * gq..i * d + (kh + 1) * gq])
                    .collect();
                let (kb, vb, base) = cache.layer(kind, kh);
                attend_tile(shape, kb, vb, base, &ranges, &qs)
            })
            .collect();
        for ((_, kh, idx), t) in tasks.iter().zip(&results) {
            for (&i, o) in idx.iter().zip(t.chunks_exact(gq)) {
                out[i * d + kh * gq..i * d + (kh + 1) * gq].copy_from_slice(o);
            }
        }
    }

    /// Counts the call's rows as written in every cache.
    pub(crate) fn finish(&self, caches: &mut [KvCache]) {
        for (c, &n) in caches.iter_mut().zip(&self.per_stream) {
            c.advance(n);
        }
    }
}

/// y = x / sqrt(mean(x²) + eps) · w, row by row (rows of `w.len()` values).
pub(crate) fn rms_norm(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let d = w.len();
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let scale = 1.0 / (sum_sq(xr) / d as f32 + eps).sqrt();
        for ((yv, xv), wv) in yr.iter_mut().zip(xr).zip(w) {
            *yv = (*xv * scale) * *wv;
        }
    }
}

/// [`rms_norm`] in place.
pub(crate) fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let d = w.len();
    for xr in x.chunks_exact_mut(d) {
        let scale = 1.0 / (sum_sq(xr) / d as f32 + eps).sqrt();
        for (xv, wv) in xr.iter_mut().zip(w) {
            *xv = (*xv * scale) * *wv;
        }
    }
}

/// x += y, element by element.
pub(crate) fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (xv, yv) in x.iter_mut().zip(y) {
        *xv += *yv;
    }
}
