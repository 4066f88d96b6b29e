//! An output head that costs what the text uses: the head's rows for the symbols a text
//! has shown so far, gathered into a compact matrix that grows as new symbols appear.
//!
//! A logit depends only on its own row of the head and the hidden state, so the compact
//! matrix gives exactly the bits the full head gives for the same symbols; both coder
//! directions grow it identically, so they compute identical distributions.

use super::net::Net;
use super::weights::{Input, Mat};

/// The head's rows for a growing, ordered set of vocabulary ids.
pub struct ActiveHead {
    rows: Mat,
    ids: Vec<u32>,
    /// Position of each vocabulary id in `ids` ([`NOT_ACTIVE`] if absent).
    index: Vec<u32>,
    dim: usize,
    backend: u16,
}

/// The [`ActiveHead::index`] of an id not in the set.
pub const NOT_ACTIVE: u32 = u32::MAX;

impl ActiveHead {
    /// An empty set for `net`'s head.
    pub fn new(net: &Net) -> Self {
        let rows = match net.head() {
            Mat::F32(_) => Mat::F32(Vec::new()),
            Mat::Q(q) => Mat::Q(super::int8::QMat::empty_like(q)),
        };
        ActiveHead {
            rows,
            ids: Vec::new(),
            index: vec![NOT_ACTIVE; net.vocab()],
            dim: net.dim(),
            backend: net.backend(),
        }
    }

    /// Number of ids in the set.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The ids, in the order they were added (the order of the logits).
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Position of each vocabulary id in [`ActiveHead::ids`], [`NOT_ACTIVE`] if absent.
    pub fn index(&self) -> &[u32] {
        &self.index
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: u32) -> bool {
        self.index
            .get(id as usize)
            .is_some_and(|&i| i != NOT_ACTIVE)
    }

    /// Adds vocabulary id `id` as the next row; false (and nothing added) if it is
    /// already in the set or not a vocabulary id.
    pub fn push(&mut self, net: &Net, id: u32) -> bool {
        let o = id as usize;
        if o >= self.index.len() || self.index[o] != NOT_ACTIVE {
            return false;
        }
        self.index[o] = self.ids.len() as u32;
        match (&mut self.rows, net.head()) {
            (Mat::F32(dst), Mat::F32(src)) => {
                dst.extend_from_slice(&src[o * self.dim..(o + 1) * self.dim]);
            }
            (Mat::Q(dst), Mat::Q(src)) => dst.push_column(src, o),
            _ => unreachable!("head rows kept like the head"),
        }
        self.ids.push(id);
        true
    }

    /// Logits of the set's ids for `m` hidden states (`m × dim`): `m × len()` values,
    /// row by row.
    pub fn logits(&self, hidden: &[f32], m: usize, out: &mut [f32]) {
        let n = self.ids.len();
        debug_assert_eq!(out.len(), m * n);
        if n == 0 || m == 0 {
            return;
        }
        let inp = Input::new(self.backend, hidden, m, self.dim);
        self.rows.apply(&inp, m, n, self.dim, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{BACKEND_F32_FIXED, BACKEND_INT8_EXACT, BACKEND_INT8_F16KV};

    /// The compact head's logits are the full head's, bit for bit, for any set and order.
    #[test]
    fn active_logits_equal_the_full_heads() {
        for backend in [BACKEND_F32_FIXED, BACKEND_INT8_EXACT, BACKEND_INT8_F16KV] {
            let model = crate::testing::synthetic_model_with(backend).unwrap();
            let net = &model.net;
            let (d, v) = (net.dim(), net.vocab());
            let m = 3;
            let hidden: Vec<f32> = (0..m * d)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect();
            let mut full = vec![0f32; m * v];
            net.head_full(&hidden, m, &mut full);
            let mut head = ActiveHead::new(net);
            // Scattered ids, out of order, crossing groups of 8.
            let ids: Vec<u32> = (0..v as u32).rev().step_by(3).chain([1, 2, 9]).collect();
            for (k, &id) in ids.iter().enumerate() {
                head.push(net, id);
                if k % 7 == 0 || k + 1 == ids.len() {
                    let n = head.len();
                    let mut got = vec![0f32; m * n];
                    head.logits(&hidden, m, &mut got);
                    for r in 0..m {
                        for (j, &id) in head.ids().iter().enumerate() {
                            assert_eq!(
                                got[r * n + j].to_bits(),
                                full[r * v + id as usize].to_bits(),
                                "backend {backend} row {r} id {id}"
                            );
                        }
                    }
                }
            }
        }
    }
}
