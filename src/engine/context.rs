//! One archive's model context: a key/value cache per stream and the outputs of the last
//! forward call.
//!
//! Both coder directions ask the context for logits and tell it how a stream's window
//! moves; they never touch a cache themselves, as llama.cpp's callers ask its
//! `llama_context`.

use super::forward::Row;
use super::kv_cache::KvCache;
use super::net::Net;
use crate::Result;

/// What a stream's cache needs before the rows of its next symbol run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slide {
    /// Nothing: the rows append to the cache.
    None,
    /// Window policy 0 (re-prefill): the cache is emptied, and the rows rebuild it from the
    /// start token and the last `keep − 1` symbols at positions `0..keep`.
    Reset,
    /// Window policy 1 (shift): the cache keeps the start token and its newest `keep − 1`
    /// entries as they are ([`KvCache::slide`]); the row goes in after them.
    Shift,
}

/// The caches and logits of one archive.
pub struct Context<'m> {
    net: &'m Net,
    caches: Vec<KvCache>,
    logits: Vec<f32>,
}

impl<'m> Context<'m> {
    /// No caches yet: each group sizes them for what it actually holds (see `prepare`), so a
    /// header that declares many streams or a long window costs nothing until frames
    /// carrying that many blocks arrive.
    pub fn new(net: &'m Net) -> Self {
        Context {
            net,
            caches: Vec::new(),
            logits: Vec::new(),
        }
    }

    /// Caches for `n` streams of at least `cap` positions, emptied.
    pub fn prepare(&mut self, n: usize, cap: usize) {
        if self.caches.len() < n || self.caches.first().is_some_and(|c| c.capacity() < cap) {
            let cap = cap.max(self.caches.first().map_or(0, |c| c.capacity()));
            self.caches = (0..n.max(self.caches.len()))
                .map(|_| self.net.new_cache(cap))
                .collect();
        }
        self.reset();
    }

    /// Empties every stream's cache.
    pub fn reset(&mut self) {
        for c in &mut self.caches {
            c.clear();
        }
    }

    /// Entries in stream `s`'s cache.
    pub fn len(&self, s: usize) -> usize {
        self.caches[s].len()
    }

    /// Positions stream `s`'s cache can hold.
    pub fn capacity(&self, s: usize) -> usize {
        self.caches[s].capacity()
    }

    /// Makes room in stream `s`'s full cache as `slide` says, keeping `keep` entries when
    /// it shifts.
    pub fn make_room(&mut self, s: usize, slide: Slide, keep: usize) -> Result<()> {
        match slide {
            Slide::None => Ok(()),
            Slide::Shift => self.net.slide(&mut self.caches[s], keep),
            Slide::Reset => {
                self.caches[s].clear();
                Ok(())
            }
        }
    }

    /// Cuts stream `s`'s cache back to its first `len` entries (rows of wrong guesses).
    pub fn truncate(&mut self, s: usize, len: usize) {
        self.caches[s].truncate(len);
    }

    /// Runs `rows`; logits for the rows in `want` replace the last call's, in that order.
    pub fn run(&mut self, rows: &[Row], want: &[usize]) -> Result<()> {
        self.logits.resize(want.len() * self.net.vocab(), 0.0);
        self.net
            .forward_select(&mut self.caches, rows, want, &mut self.logits)
    }

    /// The logits of the last call's `i`-th wanted row.
    pub fn logits(&self, i: usize) -> &[f32] {
        let v = self.net.vocab();
        &self.logits[i * v..(i + 1) * v]
    }
}
