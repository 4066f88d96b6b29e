//! One stream's key/value cache: full-context layers and sliding-window layers.
//!
//! Full-context layers hold every position of the window in slot order: slot `s` is RoPE
//! position `offset + s`, and [`KvCache::slide`] keeps positions contiguous by moving the
//! newest entries down and re-rotating slot 0 (the start token, an attention sink). Layers
//! that only ever attend the last `local_window` positions (Gemma 3's local layers) keep a
//! short buffer of their own instead: when it fills, its newest `local_window − 1` entries
//! move to the front, so a long window costs memory only in the full-context layers.

use super::half;
use super::rope::Rope;
use crate::{Error, Result};

/// Cached keys or values: f32 (backends 1 and 2) or IEEE half (backend 3, rounded by
/// [`half::f32_to_f16`] when stored, read back exactly).
pub(crate) enum KvBuf {
    F32(Vec<f32>),
    F16(Vec<u16>),
}

impl KvBuf {
    pub(crate) fn new(half: bool, n: usize) -> Self {
        if half {
            KvBuf::F16(vec![0; n])
        } else {
            KvBuf::F32(vec![0.0; n])
        }
    }

    /// Stores `src` at element `at` (rounded to half for an F16 buffer).
    pub(crate) fn put(&mut self, at: usize, src: &[f32]) {
        match self {
            KvBuf::F32(b) => b[at..at + src.len()].copy_from_slice(src),
            KvBuf::F16(b) => half::store(src, &mut b[at..at + src.len()]),
        }
    }

    fn copy_within(&mut self, from: std::ops::Range<usize>, to: usize) {
        match self {
            KvBuf::F32(b) => b.copy_within(from, to),
            KvBuf::F16(b) => b.copy_within(from, to),
        }
    }

    /// Elements `r` as f32: borrowed as they are, or converted (exactly) into `buf`.
    pub(crate) fn rows<'a>(
        &'a self,
        r: std::ops::Range<usize>,
        buf: &'a mut Vec<f32>,
    ) -> &'a [f32] {
        match self {
            KvBuf::F32(b) => &b[r],
            KvBuf::F16(b) => {
                buf.resize(r.len(), 0.0);
                half::load(&b[r], buf);
                buf
            }
        }
    }
}

/// Which part of a cache a layer uses, with the layer's index within that part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayerKind {
    /// Attends every cached position (the whole window).
    Full(usize),
    /// Attends only the last `local_window` positions.
    Local(usize),
}

/// The shape a model gives its caches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CacheShape {
    pub kv_heads: usize,
    pub head_dim: usize,
    pub full_layers: usize,
    pub local_layers: usize,
    /// Positions a local layer attends (its own included).
    pub local_window: usize,
    /// Keys and values stored as halves (backend 3).
    pub half: bool,
}

/// Most rows of one stream a forward call may add to a sliding-window part (larger calls
/// are split by the caller, which gives the same bits).
pub(crate) const MAX_CALL_ROWS: usize = 256;

/// One part of a cache: `[layer][kv_head][slot][head_dim]`, preallocated.
struct Part {
    k: KvBuf,
    v: KvBuf,
    capacity: usize,
    /// Slots written so far (the next row goes to slot `len`).
    len: usize,
    /// RoPE position of slot 0.
    offset: usize,
}

impl Part {
    fn new(s: &CacheShape, layers: usize, capacity: usize) -> Self {
        let n = layers * s.kv_heads * capacity * s.head_dim;
        Part {
            k: KvBuf::new(s.half, n),
            v: KvBuf::new(s.half, n),
            capacity,
            len: 0,
            offset: 0,
        }
    }

    /// Moves slots `from..len` of every layer and head down to `to..`.
    fn move_down(&mut self, lh: usize, hd: usize, from: usize, to: usize) {
        for i in 0..lh {
            let base = i * self.capacity * hd;
            let r = base + from * hd..base + self.len * hd;
            self.k.copy_within(r.clone(), base + to * hd);
            self.v.copy_within(r, base + to * hd);
        }
    }
}

/// One stream's key/value cache.
pub struct KvCache {
    shape: CacheShape,
    full: Part,
    /// The un-rotated keys of full slot 0, `[layer][kv_head][head_dim]`, for re-rotation.
    sink_k: Vec<f32>,
    local: Part,
}

impl KvCache {
    /// A cache for `capacity` positions of full context.
    pub(crate) fn new(shape: CacheShape, capacity: usize) -> Self {
        let local_cap = if shape.local_layers > 0 {
            shape.local_window - 1 + MAX_CALL_ROWS
        } else {
            0
        };
        KvCache {
            full: Part::new(&shape, shape.full_layers, capacity),
            sink_k: vec![0.0; shape.full_layers * shape.kv_heads * shape.head_dim],
            local: Part::new(&shape, shape.local_layers, local_cap),
            shape,
        }
    }

    /// Whether the model has sliding-window layers.
    pub(crate) fn has_local(&self) -> bool {
        self.shape.local_layers > 0
    }

    /// Positions this cache can hold.
    pub fn capacity(&self) -> usize {
        self.full.capacity
    }

    /// Empties the cache (the next row is position 0 in slot 0).
    pub fn clear(&mut self) {
        for p in [&mut self.full, &mut self.local] {
            p.len = 0;
            p.offset = 0;
        }
    }

    /// Slots written so far.
    pub fn len(&self) -> usize {
        self.full.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.full.len == 0
    }

    /// The RoPE position the next row must carry.
    pub fn next_pos(&self) -> usize {
        self.full.offset + self.full.len
    }

    /// Forgets the newest slots down to `len` (rows computed speculatively whose input
    /// turned out wrong); later rows overwrite them. Slot 0's raw key stays as it is, so a
    /// later [`KvCache::slide`] is unaffected. A longer `len` than written changes nothing.
    /// Only rows of the latest forward call may be forgotten: a sliding-window part may
    /// have dropped older ones.
    pub fn truncate(&mut self, len: usize) {
        if len == 0 {
            self.clear();
        } else if len < self.full.len {
            let drop = self.full.len - len;
            self.full.len = len;
            self.local.len = self.local.len.saturating_sub(drop);
        }
    }

    /// Bytes a cache of this shape takes for `capacity` positions.
    pub(crate) fn bytes(shape: &CacheShape, capacity: usize) -> usize {
        let elem = if shape.half { 2 } else { 4 };
        let local = if shape.local_layers > 0 {
            shape.local_layers * (shape.local_window - 1 + MAX_CALL_ROWS)
        } else {
            0
        };
        2 * elem * shape.kv_heads * shape.head_dim * (shape.full_layers * capacity + local)
    }

    /// Room for `n` more rows: false if the full part would overflow. A sliding-window
    /// part full of older entries keeps its newest `local_window − 1` ones (all any new
    /// row attends) at the front; `n` must be at most [`MAX_CALL_ROWS`].
    pub(crate) fn make_room(&mut self, n: usize) -> Result<bool> {
        if self.full.len + n > self.full.capacity {
            return Ok(false);
        }
        if self.shape.local_layers > 0 && self.local.len + n > self.local.capacity {
            if n > MAX_CALL_ROWS {
                return Err(Error::internal(format!(
                    "forward: {n} rows of one stream in a call (at most {MAX_CALL_ROWS})"
                )));
            }
            let keep = self.shape.local_window - 1;
            let from = self.local.len - keep;
            let lh = self.shape.local_layers * self.shape.kv_heads;
            self.local.move_down(lh, self.shape.head_dim, from, 0);
            self.local.offset += from;
            self.local.len = keep;
        }
        Ok(true)
    }

    /// Slot of the `i`-th new row in a layer of `kind`.
    pub(crate) fn new_slot(&self, kind: LayerKind, i: usize) -> usize {
        match kind {
            LayerKind::Full(_) => self.full.len + i,
            LayerKind::Local(_) => self.local.len + i,
        }
    }

    /// The slots a row in `slot` attends, as the first and its own.
    pub(crate) fn visible(&self, kind: LayerKind, slot: usize) -> (usize, usize) {
        match kind {
            LayerKind::Full(_) => (0, slot),
            LayerKind::Local(_) => ((slot + 1).saturating_sub(self.shape.local_window), slot),
        }
    }

    /// Key and value buffers of a layer, with the element offset of its head `kh`'s slot 0.
    pub(crate) fn layer(&self, kind: LayerKind, kh: usize) -> (&KvBuf, &KvBuf, usize) {
        let (p, l) = match kind {
            LayerKind::Full(l) => (&self.full, l),
            LayerKind::Local(l) => (&self.local, l),
        };
        let base = (l * self.shape.kv_heads + kh) * p.capacity * self.shape.head_dim;
        (&p.k, &p.v, base)
    }

    /// Stores one row's keys and values (`kv_heads × head_dim` each) in `slot` of a layer.
    pub(crate) fn put(&mut self, kind: LayerKind, slot: usize, k: &[f32], v: &[f32]) {
        let (p, l) = match kind {
            LayerKind::Full(l) => (&mut self.full, l),
            LayerKind::Local(l) => (&mut self.local, l),
        };
        let hd = self.shape.head_dim;
        for kh in 0..self.shape.kv_heads {
            let at = ((l * self.shape.kv_heads + kh) * p.capacity + slot) * hd;
            p.k.put(at, &k[kh * hd..(kh + 1) * hd]);
            p.v.put(at, &v[kh * hd..(kh + 1) * hd]);
        }
    }

    /// Keeps a full layer's un-rotated keys of slot 0 for [`KvCache::slide`].
    pub(crate) fn set_sink(&mut self, full_layer: usize, k_raw: &[f32]) {
        let n = self.shape.kv_heads * self.shape.head_dim;
        self.sink_k[full_layer * n..(full_layer + 1) * n].copy_from_slice(k_raw);
    }

    /// Counts `n` new rows as written in every part.
    pub(crate) fn advance(&mut self, n: usize) {
        self.full.len += n;
        if self.shape.local_layers > 0 {
            self.local.len += n;
        }
    }

    /// Slides a full cache (window policy 1): keeps slot 0 (the start token) and the newest
    /// `keep − 1` slots, moved down to slots `1..keep` with their keys and values
    /// untouched, and re-rotates slot 0's key from its raw value to the position just
    /// before them (`rope`: the full layers' frequencies), so positions stay contiguous.
    /// Exact: every kept value is copied, and the sink's key is computed from its
    /// un-rotated value by the same rotation as any new key. Sliding-window parts are left
    /// as they are: their positions continue.
    pub fn slide(&mut self, keep: usize, rope: &Rope) -> Result<()> {
        let len = self.full.len;
        if keep < 1 || keep > len {
            return Err(Error::internal(format!(
                "slide: keep {keep} with {len} slots"
            )));
        }
        let (hd, lh) = (
            self.shape.head_dim,
            self.shape.full_layers * self.shape.kv_heads,
        );
        let from = len - (keep - 1);
        self.full.move_down(lh, hd, from, 1);
        self.full.offset += from - 1;
        let table = rope.table(self.full.offset);
        let mut key = vec![0f32; hd];
        for i in 0..lh {
            // Rotated in f32, then stored as any new key is (rounded to half in backend 3).
            key.copy_from_slice(&self.sink_k[i * hd..(i + 1) * hd]);
            rope.rotate(&mut key, &table);
            self.full.k.put(i * self.full.capacity * hd, &key);
        }
        self.full.len = keep;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A cache of `cap` full positions holding `k` and `v` (`layers × kv_heads × cap × hd`
    /// values each, stored by the backend's rule), all slots written.
    pub(crate) fn filled(
        half: bool,
        (layers, kvh, hd, cap): (usize, usize, usize, usize),
        k: &[f32],
        v: &[f32],
    ) -> KvCache {
        let shape = CacheShape {
            kv_heads: kvh,
            head_dim: hd,
            full_layers: layers,
            local_layers: 0,
            local_window: 0,
            half,
        };
        let mut c = KvCache::new(shape, cap);
        c.full.k.put(0, k);
        c.full.v.put(0, v);
        c.full.len = cap;
        c
    }

    #[test]
    fn local_part_keeps_the_window_when_it_fills() {
        let shape = CacheShape {
            kv_heads: 1,
            head_dim: 8,
            full_layers: 1,
            local_layers: 1,
            local_window: 4,
            half: false,
        };
        let mut c = KvCache::new(shape, 1000);
        let lcap = c.local.capacity;
        let mut written = 0usize;
        // Write rows one call of 100 at a time; each row's key is its position.
        for _ in 0..6 {
            assert!(c.make_room(100).unwrap());
            for i in 0..100 {
                let pos = written + i;
                let row = [pos as f32; 8];
                let s = c.new_slot(LayerKind::Local(0), i);
                assert!(s < lcap);
                c.put(LayerKind::Local(0), s, &row, &row);
                // What this row attends: the last 4 positions, its own included.
                let (lo, hi) = c.visible(LayerKind::Local(0), s);
                let (k, _, base) = c.layer(LayerKind::Local(0), 0);
                let mut buf = Vec::new();
                let seen: Vec<f32> = k
                    .rows(base + lo * 8..base + (hi + 1) * 8, &mut buf)
                    .chunks(8)
                    .map(|r| r[0])
                    .collect();
                let want: Vec<f32> = (pos.saturating_sub(3)..=pos).map(|p| p as f32).collect();
                assert_eq!(seen, want, "position {pos}");
            }
            c.advance(100);
            written += 100;
        }
        assert_eq!(c.next_pos(), 600);
    }
}
