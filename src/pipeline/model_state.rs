//! One archive's model state: a KV cache per stream and the logits of the last call.
//!
//! Both directions ask this state for logits and tell it how a stream's window moves; they
//! never touch a cache themselves (as llama.cpp's callers ask its context). It is meant to
//! move into the engine as its context.

use super::window::Slide;
use crate::engine::{KvCache, Row};
use crate::model::Model;
use crate::Result;

/// The caches and logits of one archive.
pub(crate) struct ModelState<'m> {
    model: &'m Model,
    caches: Vec<KvCache>,
    logits: Vec<f32>,
}

impl<'m> ModelState<'m> {
    /// No caches yet: each group sizes them for what it actually holds (see `prepare`), so a
    /// header that declares many streams or a long window costs nothing until frames
    /// carrying that many blocks arrive.
    pub(crate) fn new(model: &'m Model) -> Self {
        ModelState {
            model,
            caches: Vec::new(),
            logits: Vec::new(),
        }
    }

    /// Caches for `n` streams of at least `cap` positions, emptied.
    pub(crate) fn prepare(&mut self, n: usize, cap: usize) {
        if self.caches.len() < n || self.caches.first().is_some_and(|c| c.capacity() < cap) {
            let cap = cap.max(self.caches.first().map_or(0, |c| c.capacity()));
            self.caches = (0..n.max(self.caches.len()))
                .map(|_| self.model.llama.new_cache(cap))
                .collect();
        }
        self.reset();
    }

    /// Empties every stream's cache.
    pub(crate) fn reset(&mut self) {
        for c in &mut self.caches {
            c.clear();
        }
    }

    /// Entries in stream `s`'s cache.
    pub(crate) fn len(&self, s: usize) -> usize {
        self.caches[s].len()
    }

    /// Positions stream `s`'s cache can hold.
    pub(crate) fn capacity(&self, s: usize) -> usize {
        self.caches[s].capacity()
    }

    /// Makes room in stream `s`'s full cache as `slide` says (see
    /// [`Window::rows_for`](super::window::Window::rows_for)), keeping `keep` entries when
    /// it shifts.
    pub(crate) fn make_room(&mut self, s: usize, slide: Slide, keep: usize) -> Result<()> {
        match slide {
            Slide::None => Ok(()),
            Slide::Shift => self.model.llama.slide(&mut self.caches[s], keep),
            Slide::Reset => {
                self.caches[s].clear();
                Ok(())
            }
        }
    }

    /// Cuts stream `s`'s cache back to its first `len` entries (rows of wrong guesses).
    pub(crate) fn truncate(&mut self, s: usize, len: usize) {
        self.caches[s].truncate(len);
    }

    /// Runs `rows`; logits for the rows in `want` replace the last call's, in that order.
    pub(crate) fn run(&mut self, rows: &[Row], want: &[usize]) -> Result<()> {
        let vocab = self.model.llama.cfg.vocab;
        self.logits.resize(want.len() * vocab, 0.0);
        self.model
            .llama
            .forward_select(&mut self.caches, rows, want, &mut self.logits)
    }

    /// The logits of the last call's `i`-th wanted row.
    pub(crate) fn logits(&self, i: usize) -> &[f32] {
        let v = self.model.llama.cfg.vocab;
        &self.logits[i * v..(i + 1) * v]
    }
}
