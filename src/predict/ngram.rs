//! Token n-gram model: counts of what followed each of the last 1..=N symbols.
//!
//! The counts are hashed into fixed-size tables, so memory is bounded whatever the input.
//!
//! Each order has `2^bits` buckets; a bucket belongs to one context (checked by a 32-bit
//! tag) and keeps up to [`SLOTS`] continuations with counts. A new context takes the bucket
//! over; a new continuation in a full bucket replaces the least counted one. Everything is
//! integer, so the encoder and decoder hold identical tables.
use serde::{Deserialize, Serialize};

use super::{At, Input, Inputs, Predictor, Softmax};

/// Continuations kept per context.
pub const SLOTS: usize = 6;
/// Count at which a bucket's counts are halved (keeps recent statistics weighted).
const COUNT_LIMIT: u16 = 1023;

#[derive(Clone, Copy, Default, Serialize, Deserialize)]
struct Bucket {
    tag: u32,
    syms: [u32; SLOTS],
    counts: [u16; SLOTS],
}

/// What one order predicts: continuations with their counts.
#[derive(Clone, Copy, Default, Debug)]
pub struct Seen {
    pub syms: [u32; SLOTS],
    pub counts: [u16; SLOTS],
    /// Number of filled slots.
    pub n: u8,
    /// Sum of the filled counts.
    pub total: u32,
}

impl Seen {
    /// Count of `sym` in this context (0 if unseen).
    pub fn count(&self, sym: u32) -> u32 {
        (0..self.n as usize)
            .find(|&i| self.syms[i] == sym)
            .map_or(0, |i| self.counts[i] as u32)
    }

    /// The most counted continuation (the first on ties), if any.
    pub fn most_counted(&self) -> Option<u32> {
        let n = self.n as usize;
        (0..n)
            .reduce(|b, j| {
                if self.counts[j] > self.counts[b] {
                    j
                } else {
                    b
                }
            })
            .map(|b| self.syms[b])
    }

    /// Confidence bucket for the mixer: total count class × deterministic (one continuation).
    pub fn confidence(&self) -> usize {
        let class = match self.total {
            0..=1 => 0,
            2 => 1,
            3..=4 => 2,
            5..=8 => 3,
            9..=16 => 4,
            _ => 5,
        };
        class * 2 + (self.n == 1) as usize
    }
}

/// Number of confidence buckets [`Seen::confidence`] returns.
pub const CONFIDENCES: usize = 12;

/// Hashed n-gram tables for orders 1..=`max_order`.
#[derive(Serialize, Deserialize)]
pub struct NGram {
    max_order: usize,
    bits: u32,
    tables: Vec<Vec<Bucket>>,
}

/// Hash of the last `ctx.len()` symbols; order is mixed in so orders never share tags.
fn hash(ctx: &[u32]) -> u64 {
    let mut h = (ctx.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for &s in ctx {
        h = (h ^ s as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        h ^= h >> 32;
    }
    h
}

impl NGram {
    /// Tables for orders 1..=`max_order`, `2^bits` buckets each.
    pub fn new(max_order: usize, bits: u32) -> Self {
        NGram {
            max_order,
            bits,
            tables: (0..max_order)
                .map(|_| vec![Bucket::default(); 1 << bits])
                .collect(),
        }
    }

    /// Highest order.
    pub fn max_order(&self) -> usize {
        self.max_order
    }

    /// Memory the tables take, in bytes.
    pub fn bytes(&self) -> usize {
        self.max_order * (1usize << self.bits) * std::mem::size_of::<Bucket>()
    }

    fn slot(&self, ctx: &[u32]) -> (usize, u32) {
        let h = hash(ctx);
        ((h >> (64 - self.bits)) as usize, (h as u32) | 1)
    }

    /// What followed the context `ctx` (its length is the order) so far, if anything.
    pub fn lookup(&self, ctx: &[u32]) -> Option<Seen> {
        let order = ctx.len();
        if order == 0 || order > self.max_order {
            return None;
        }
        let (i, tag) = self.slot(ctx);
        let b = &self.tables[order - 1][i];
        if b.tag != tag {
            return None;
        }
        let n = b.counts.iter().take_while(|&&c| c > 0).count();
        if n == 0 {
            return None;
        }
        let total = b.counts[..n].iter().map(|&c| c as u32).sum();
        Some(Seen {
            syms: b.syms,
            counts: b.counts,
            n: n as u8,
            total,
        })
    }

    /// Records that `sym` followed `ctx`.
    pub fn update(&mut self, ctx: &[u32], sym: u32) {
        let order = ctx.len();
        if order == 0 || order > self.max_order {
            return;
        }
        let (i, tag) = self.slot(ctx);
        let b = &mut self.tables[order - 1][i];
        if b.tag != tag {
            *b = Bucket {
                tag,
                ..Bucket::default()
            };
        }
        // Slots are kept filled from the front: counts > 0 first, then empties.
        let mut hit = None;
        let mut empty = None;
        for j in 0..SLOTS {
            if b.counts[j] == 0 {
                empty = Some(j);
                break;
            }
            if b.syms[j] == sym {
                hit = Some(j);
                break;
            }
        }
        match (hit, empty) {
            (Some(j), _) => {
                b.counts[j] += 1;
                if b.counts[j] >= COUNT_LIMIT {
                    for c in &mut b.counts {
                        // Halve but keep filled slots filled.
                        if *c > 0 {
                            *c = (*c / 2).max(1);
                        }
                    }
                }
            }
            (None, Some(j)) => {
                b.syms[j] = sym;
                b.counts[j] = 1;
            }
            (None, None) => {
                // Replace the least counted continuation (the last such on ties: the most
                // recently added among equals tends to sit later).
                let mut m = 0;
                for j in 1..SLOTS {
                    if b.counts[j] <= b.counts[m] {
                        m = j;
                    }
                }
                b.syms[m] = sym;
                b.counts[m] = 1;
            }
        }
    }
}

impl Predictor for NGram {
    /// One mixer input per order whose context has been seen.
    fn contribute(&self, at: &At<'_>, inputs: &mut Inputs<'_>) {
        for order in 1..=self.max_order {
            if let Some(seen) = at
                .hist
                .context_before(at.pos, order)
                .and_then(|c| self.lookup(c))
            {
                inputs.list.push(Input::Order { order, seen });
            }
        }
    }

    fn learn(&mut self, at: &At<'_>, sym: u32, _llm: &Softmax<'_>) {
        for order in 1..=self.max_order {
            if let Some(c) = at.hist.context_before(at.pos, order) {
                self.update(c, sym);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_replaces() {
        let mut g = NGram::new(2, 8);
        assert!(g.lookup(&[1, 2]).is_none());
        g.update(&[1, 2], 7);
        g.update(&[1, 2], 7);
        g.update(&[1, 2], 9);
        let s = g.lookup(&[1, 2]).unwrap();
        assert_eq!((s.count(7), s.count(9), s.total, s.n), (2, 1, 3, 2));
        assert_eq!(s.most_counted(), Some(7));
        for k in 0..10 {
            g.update(&[1, 2], 100 + k);
        }
        let s = g.lookup(&[1, 2]).unwrap();
        assert_eq!(s.n as usize, SLOTS);
        assert_eq!(s.count(7), 2, "the most counted continuation survives");
        assert!(g.lookup(&[2]).is_none());
        assert!(g.lookup(&[1, 2, 3]).is_none());
    }
}
