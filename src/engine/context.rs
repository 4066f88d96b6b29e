//! One archive's model context: a key/value cache per stream, the outputs of the last
//! forward call, and (with the active head) the head rows of the symbols seen so far.
//!
//! Both coder directions ask the context for outputs and tell it how a stream's window
//! moves; they never touch a cache themselves, as llama.cpp's callers ask its
//! `llama_context`. A context runs in one of two modes: full logits per wanted row, or the
//! row's final hidden state, from which the caller asks logits over the active set
//! ([`Context::head`]) and, for a symbol new to the archive, over every id
//! ([`Context::head_full`]).

use super::forward::Row;
use super::head::ActiveHead;
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

/// The caches and outputs of one archive.
pub struct Context<'m> {
    net: &'m Net,
    caches: Vec<KvCache>,
    /// The last call's outputs: `width` values per wanted row.
    out: Vec<f32>,
    /// Present in active mode: outputs are hidden states, logits come from here.
    active: Option<ActiveHead>,
}

impl<'m> Context<'m> {
    /// A context whose calls give full logits. No caches yet: each group sizes them for
    /// what it actually holds (see `prepare`), so a header that declares many streams or a
    /// long window costs nothing until frames carrying that many blocks arrive.
    pub fn new(net: &'m Net) -> Self {
        Context {
            net,
            caches: Vec::new(),
            out: Vec::new(),
            active: None,
        }
    }

    /// A context whose calls give hidden states, with the active set starting as
    /// `initial` (vocabulary ids, in order; repeats and others ignored).
    pub fn with_active(net: &'m Net, initial: impl IntoIterator<Item = u32>) -> Self {
        let mut head = ActiveHead::new(net);
        for id in initial {
            head.push(net, id);
        }
        Context {
            active: Some(head),
            ..Self::new(net)
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

    /// Values per wanted row of a call: the vocabulary's logits, or (active mode) the
    /// hidden state.
    pub fn width(&self) -> usize {
        if self.active.is_some() {
            self.net.dim()
        } else {
            self.net.vocab()
        }
    }

    /// Runs `rows`; the outputs of the rows in `want` replace the last call's, in order.
    pub fn run(&mut self, rows: &[Row], want: &[usize]) -> Result<()> {
        self.out.resize(want.len() * self.width(), 0.0);
        if self.active.is_some() {
            self.net
                .forward_hidden(&mut self.caches, rows, want, &mut self.out)
        } else {
            self.net
                .forward_select(&mut self.caches, rows, want, &mut self.out)
        }
    }

    /// The output of the last call's `i`-th wanted row ([`Context::width`] values).
    pub fn output(&self, i: usize) -> &[f32] {
        let w = self.width();
        &self.out[i * w..(i + 1) * w]
    }

    /// The active set, if this context has one.
    pub fn active(&self) -> Option<&ActiveHead> {
        self.active.as_ref()
    }

    /// Adds a symbol to the active set (nothing if there is none, or it is already in it,
    /// or it is not a vocabulary id).
    pub fn activate(&mut self, sym: u32) {
        if let Some(h) = &mut self.active {
            h.push(self.net, sym);
        }
    }

    /// Logits over the whole active set for `hidden` (rows of [`Context::width`] values):
    /// `rows × active len` values, row by row, into `out`.
    pub fn head(&self, hidden: &[f32], out: &mut Vec<f32>) {
        let Some(h) = &self.active else {
            return;
        };
        let n = hidden.len() / self.net.dim();
        out.resize(n * h.len(), 0.0);
        h.logits(hidden, n, out);
    }

    /// Logits of every vocabulary id for hidden states (rows of [`Context::width`]
    /// values): `rows × vocab` values into `out`. One call reads the head once for all
    /// rows, so the symbols new to the set of a whole call or step go together.
    pub fn head_full(&self, hidden: &[f32], out: &mut Vec<f32>) {
        let n = hidden.len() / self.net.dim();
        out.resize(n * self.net.vocab(), 0.0);
        self.net.head_full(hidden, n, out);
    }
}
