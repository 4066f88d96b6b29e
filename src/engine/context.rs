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

/// Values per wanted row for `net` in a mode: the hidden state or the vocabulary's logits.
fn output_width(net: &Net, hidden: bool) -> usize {
    if hidden {
        net.dim()
    } else {
        net.vocab()
    }
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
        output_width(self.net, self.active.is_some())
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

    /// One forward call for several contexts of the same network and mode, as if each
    /// had run its own `calls[i]` (rows, wanted rows): the engine's results do not depend
    /// on how rows are split into calls, so contexts of separate archives (each with its
    /// own caches, active set and predictors) share the cost of reading the weights.
    /// Each context's outputs are its own call's, in order.
    pub fn run_together(ctxs: &mut [&mut Context<'m>], calls: &[(&[Row], &[usize])]) -> Result<()> {
        if ctxs.len() != calls.len() {
            return Err(crate::Error::internal("run_together: one call per context"));
        }
        let Some(first) = ctxs.first() else {
            return Ok(());
        };
        let (net, hidden) = (first.net, first.active.is_some());
        if ctxs
            .iter()
            .any(|c| !std::ptr::eq(c.net, net) || c.active.is_some() != hidden)
        {
            return Err(crate::Error::internal(
                "run_together: contexts of different networks or modes",
            ));
        }
        let (mut caches, mut rows, mut want) = (Vec::new(), Vec::new(), Vec::new());
        let mut spans = Vec::with_capacity(ctxs.len());
        for (c, (r, w)) in ctxs.iter_mut().zip(calls) {
            let (stream0, row0) = (caches.len(), rows.len());
            spans.push((c.caches.len(), w.len()));
            caches.append(&mut c.caches);
            rows.extend(r.iter().map(|row| Row {
                stream: row.stream + stream0,
                ..*row
            }));
            want.extend(w.iter().map(|&i| i + row0));
        }
        let width = output_width(net, hidden);
        let mut out = vec![0f32; want.len() * width];
        let ran = if hidden {
            net.forward_hidden(&mut caches, &rows, &want, &mut out)
        } else {
            net.forward_select(&mut caches, &rows, &want, &mut out)
        };
        // The caches go back whatever happened: a failed call leaves each as it left it.
        let mut caches = caches.into_iter();
        let mut at = 0;
        for (c, (n, w)) in ctxs.iter_mut().zip(spans) {
            c.caches.extend(caches.by_ref().take(n));
            c.out.clear();
            c.out.extend_from_slice(&out[at * width..(at + w) * width]);
            at += w;
        }
        ran
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Contexts run together give each the outputs and caches it gets alone, in both
    /// modes, over several calls (the second continues the caches the first filled).
    #[test]
    fn run_together_equals_each_alone() {
        let model = crate::testing::synthetic_model().unwrap();
        let net = &model.net;
        let rows = |streams: usize, from: usize, n: usize, salt: u32| -> Vec<Row> {
            (0..streams)
                .flat_map(|s| {
                    (from..from + n).map(move |p| Row {
                        stream: s,
                        token: (p as u32 * 7 + s as u32 * 3 + salt) % 50,
                        pos: p,
                    })
                })
                .collect()
        };
        for hidden in [false, true] {
            let make = || {
                if hidden {
                    Context::with_active(net, 0..8)
                } else {
                    Context::new(net)
                }
            };
            let (mut a, mut b) = (make(), make());
            let (mut a1, mut b1) = (make(), make());
            a.prepare(2, 16);
            b.prepare(3, 16);
            a1.prepare(2, 16);
            b1.prepare(3, 16);
            for (from, n) in [(0, 4), (4, 1), (5, 3)] {
                let (ra, rb) = (rows(2, from, n, 1), rows(3, from, n, 2));
                let (wa, wb): (Vec<usize>, Vec<usize>) =
                    ((0..ra.len()).step_by(2).collect(), (0..rb.len()).collect());
                a.run(&ra, &wa).unwrap();
                b.run(&rb, &wb).unwrap();
                Context::run_together(&mut [&mut a1, &mut b1], &[(&ra, &wa), (&rb, &wb)]).unwrap();
                assert_eq!(a.out, a1.out);
                assert_eq!(b.out, b1.out);
                assert_eq!((a1.len(0), b1.len(2)), (a.len(0), b.len(2)));
            }
        }
    }
}
