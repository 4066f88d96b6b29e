//! The symbols coded so far, shared by all streams, laid out in original-file order.
//!
//! Each group's blocks get consecutive regions sized by their symbol counts (known to both
//! directions from the group frame), so a region's end runs straight into the next block's
//! start, as in the original file. Positions not yet coded hold [`UNKNOWN`]; encoder and
//! decoder fill them in the same order (step by step, streams in order), so at every moment
//! both hold the same history.
use serde::{Deserialize, Serialize};

/// Marks a position whose symbol is not known yet.
pub const UNKNOWN: u32 = u32::MAX;

/// Coded symbols of every block so far.
#[derive(Serialize, Deserialize)]
pub struct History {
    syms: Vec<u32>,
    base: Vec<usize>,
    filled: Vec<usize>,
    cap: usize,
}

impl History {
    /// `cap`: most symbols kept; past it the history restarts at the next group.
    pub fn new(cap: usize) -> Self {
        History {
            syms: Vec::new(),
            base: Vec::new(),
            filled: Vec::new(),
            cap,
        }
    }

    /// Lays out the next group's blocks. Returns true if the history was restarted (anything
    /// that points into it must be reset).
    pub fn begin_group(&mut self, lens: &[usize]) -> bool {
        let total: usize = lens.iter().sum();
        let restart = !self.syms.is_empty() && self.syms.len() + total > self.cap;
        if restart {
            self.syms.clear();
        }
        self.base.clear();
        self.filled.clear();
        let mut at = self.syms.len();
        for &l in lens {
            self.base.push(at);
            self.filled.push(0);
            at += l;
        }
        self.syms.resize(at, UNKNOWN);
        restart
    }

    /// Absolute index of stream `s`'s next symbol.
    pub fn pos(&self, s: usize) -> usize {
        self.base[s] + self.filled[s]
    }

    /// Symbol at an absolute index (`UNKNOWN` if not coded yet or out of range).
    pub fn at(&self, i: usize) -> u32 {
        self.syms.get(i).copied().unwrap_or(UNKNOWN)
    }

    /// The `k` symbols before absolute index `end`, if all are known.
    pub fn context_before(&self, end: usize, k: usize) -> Option<&[u32]> {
        let c = self.syms.get(end.checked_sub(k)?..end)?;
        (!c.contains(&UNKNOWN)).then_some(c)
    }

    /// Records stream `s`'s next symbol.
    pub fn push(&mut self, s: usize, sym: u32) {
        let i = self.pos(s);
        self.syms[i] = sym;
        self.filled[s] += 1;
    }

    /// Number of positions laid out (known or not).
    pub fn len(&self) -> usize {
        self.syms.len()
    }

    /// True before the first group.
    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }
}
