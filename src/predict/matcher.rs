//! Match model: predicts what followed the latest earlier occurrence of the context.
//!
//! The occurrence is looked for in the shared history (any stream, any earlier block).
//!
//! LZP-style: a hash of the last `min_len` symbols points at the position after their most
//! recent occurrence. A candidate is verified symbol by symbol, so a prediction always rests
//! on a real match; its length (extended backwards up to `MAX_VERIFY`) grows while the
//! predictions keep coming true and selects the mixer weights, which learn how far to trust
//! a match of that length.
use serde::{Deserialize, Serialize};

use super::history::{History, UNKNOWN};
use super::{At, Input, Inputs, Predictor, Softmax};

/// Longest backward extension when a match is found.
const MAX_VERIFY: usize = 32;
/// Number of match-length buckets [`length_bucket`] returns (0 = no match).
pub const LENGTH_BUCKETS: usize = 6;

/// Mixer context of a match length.
pub fn length_bucket(len: u32) -> usize {
    match len {
        0 => 0,
        1..=5 => 1,
        6..=9 => 2,
        10..=15 => 3,
        16..=31 => 4,
        _ => 5,
    }
}

#[derive(Clone, Copy, Default, Serialize, Deserialize)]
struct State {
    /// Absolute index of the predicted symbol; meaningful when `len > 0`.
    ptr: usize,
    len: u32,
}

/// Hash table of contexts plus each stream's current match.
#[derive(Serialize, Deserialize)]
pub struct Matcher {
    min_len: usize,
    bits: u32,
    table: Vec<u32>,
    state: Vec<State>,
}

fn hash(ctx: &[u32]) -> u64 {
    let mut h = 0x243F_6A88_85A3_08D3u64;
    for &s in ctx {
        h = (h ^ s as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
    }
    h
}

impl Matcher {
    pub fn new(min_len: usize, bits: u32) -> Self {
        Matcher {
            min_len,
            bits,
            table: vec![0; 1 << bits],
            state: Vec::new(),
        }
    }

    /// Memory the table takes, in bytes.
    pub fn bytes(&self) -> usize {
        4 << self.bits
    }

    /// New group: every stream starts without a match; `restart` clears the table too
    /// (the history it points into was restarted).
    pub fn begin_group(&mut self, streams: usize, restart: bool) {
        self.state.clear();
        self.state.resize(streams, State::default());
        if restart {
            self.table.fill(0);
        }
    }

    /// The predicted next symbol of stream `s` and the match length behind it.
    pub fn predict(&self, hist: &History, s: usize) -> Option<(u32, u32)> {
        let st = self.state[s];
        if st.len == 0 {
            return None;
        }
        let sym = hist.at(st.ptr);
        (sym != UNKNOWN).then_some((sym, st.len))
    }

    /// Absolute history index of the symbol stream `s`'s current match predicts, if any.
    pub fn pointer(&self, s: usize) -> Option<usize> {
        let st = self.state[s];
        (st.len > 0).then_some(st.ptr)
    }

    /// After stream `s`'s symbol `sym` was pushed to `hist` at absolute index `at`.
    pub fn update(&mut self, hist: &History, s: usize, at: usize, sym: u32) {
        let mut st = self.state[s];
        if st.len > 0 {
            if hist.at(st.ptr) == sym {
                st.ptr += 1;
                st.len = st.len.saturating_add(1);
            } else {
                st.len = 0;
            }
        }
        let next = at + 1;
        if let Some(ctx) = hist.context_before(next, self.min_len) {
            let slot = (hash(ctx) >> (64 - self.bits)) as usize;
            if st.len == 0 {
                let c = self.table[slot] as usize;
                if c != 0 && c < next {
                    if let Some(cand) = hist.context_before(c, self.min_len) {
                        if cand == ctx {
                            // Extend the verified match backwards for its length.
                            let mut len = self.min_len;
                            while len < MAX_VERIFY && len < c {
                                let (a, b) = (hist.at(c - len - 1), hist.at(next - len - 1));
                                if a == UNKNOWN || a != b {
                                    break;
                                }
                                len += 1;
                            }
                            st = State {
                                ptr: c,
                                len: len as u32,
                            };
                        }
                    }
                }
            }
            // Indices fit u32: the history is capped well below 2^32 symbols.
            self.table[slot] = next as u32;
        }
        self.state[s] = st;
    }
}

impl Predictor for Matcher {
    /// The symbol the stream's current match predicts, as a mixer input; its length
    /// selects the mixer's context.
    fn contribute(&self, at: &At<'_>, inputs: &mut Inputs<'_>) {
        if let Some((sym, len)) = self.predict(at.hist, at.stream) {
            inputs.match_len = len;
            inputs.list.push(Input::Match(sym));
        }
    }

    fn learn(&mut self, at: &At<'_>, sym: u32, _llm: &Softmax<'_>) {
        self.update(at.hist, at.stream, at.pos, sym);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicts_a_repeat_across_streams() {
        let mut h = History::new(1 << 20);
        let mut m = Matcher::new(3, 12);
        h.begin_group(&[8, 8]);
        m.begin_group(2, false);
        let a = [1, 2, 3, 4, 5, 6, 7, 8];
        let b = [9, 9, 9, 1, 2, 3, 4, 5];
        for t in 0..8 {
            // As in the pipeline: every stream predicts, then streams update in order.
            let p1 = m.predict(&h, 1).map(|p| p.0);
            if t >= 6 {
                assert_eq!(p1, Some(b[t]), "t={t}");
            }
            for (s, seq) in [a, b].iter().enumerate() {
                let at = h.pos(s);
                h.push(s, seq[t]);
                m.update(&h, s, at, seq[t]);
            }
        }
    }
}
