//! Speculative decoding: rows for guessed next symbols, run with a stream's own row.
//!
//! Because the engine's result for a row does not depend on the other rows of its call, the
//! decoder can feed guesses of the next symbols (from the match and n-gram models) as extra
//! rows: when a guess comes true, the logits its row gave are exactly those a
//! token-by-token decoder would compute, and the next step needs no forward call; when it
//! does not, the cache is cut back. Guesses decide only which rows run, never a
//! probability, so the archive format is unaffected.

use super::options::Stats;
use super::predictor_run::PredictorRun;
use crate::engine::Context;
use crate::predict::{DraftKind, DRAFT_KINDS};

/// Most guessed rows a decoder adds after a stream's row.
pub(crate) const MAX_GUESSES: usize = 4;
/// Speculation runs while a step has at most this many streams: a call with few rows is
/// bound by streaming the weights, so extra rows cost little; with many it is bound by
/// arithmetic, and wrong guesses would cost their full share.
pub(crate) const SPECULATE_STREAMS: usize = 2;
/// A guess is added while the estimated chance that every guess so far comes true stays at
/// least this (an extra row costs about a sixth to a third of a one-row call).
const MIN_CHAIN: f64 = 0.4;

/// Whether the decoder speculates (`LMZIP_NO_SPECULATION=1` turns it off, to compare).
pub(crate) fn speculation_on() -> bool {
    std::env::var_os("LMZIP_NO_SPECULATION").is_none_or(|v| v == "0")
}

/// Where a stream's logits for this step's symbol come from.
#[derive(Clone, Copy)]
pub(crate) enum Src {
    /// This step's call, at this index of its wanted rows.
    Call(usize),
    /// Guessed row `j` of an earlier call, whose guess came true.
    Guessed(usize),
}

/// The speculation of one stream: its guesses in flight and their rows' logits.
pub(crate) struct Speculation {
    /// `guesses[j]` was fed as the input of guessed row `j`, whose output (`width` values
    /// at `outputs[j·width..]`) predicts the symbol after it.
    guesses: Vec<u32>,
    kinds: Vec<DraftKind>,
    outputs: Vec<f32>,
    width: usize,
    /// Guesses are vocabulary ids below this.
    vocab: usize,
    /// Cache length with the stream's real rows, before the guessed ones.
    base_len: usize,
    /// The guessed row whose logits predict the stream's next symbol, once confirmed.
    next: Option<usize>,
}

impl Speculation {
    /// Nothing guessed yet; guesses are vocabulary ids below `vocab`.
    pub(crate) fn new(vocab: usize) -> Self {
        Speculation {
            guesses: Vec::new(),
            kinds: Vec::new(),
            outputs: Vec::new(),
            width: 0,
            vocab,
            base_len: 0,
            next: None,
        }
    }

    /// The guessed row a confirmed guess left for this step, if any (once).
    pub(crate) fn take_confirmed(&mut self) -> Option<usize> {
        self.next.take()
    }

    /// A new call for the stream: earlier guesses are dropped; its cache will hold
    /// `base_len` entries once the stream's own rows ran.
    pub(crate) fn start(&mut self, base_len: usize) {
        self.guesses.clear();
        self.kinds.clear();
        self.base_len = base_len;
    }

    /// Cache length once the stream's own rows ran (guessed rows go after it).
    pub(crate) fn base_len(&self) -> usize {
        self.base_len
    }

    /// Drafts up to `max` guesses of stream `s`'s next symbols and keeps those whose chain
    /// is likely enough to come true (see [`GuessRates::keep`]).
    pub(crate) fn draft(
        &mut self,
        run: &PredictorRun,
        rates: &GuessRates,
        s: usize,
        max: usize,
    ) -> &[u32] {
        run.ensemble()
            .draft(s, max, self.vocab, &mut self.guesses, &mut self.kinds);
        let k = rates.keep(&self.kinds);
        self.guesses.truncate(k);
        self.kinds.truncate(k);
        &self.guesses
    }

    /// Copies the guessed rows' outputs (logits or hidden states) out of the state (the
    /// next call overwrites them); `first` is the index of the first guessed row among the
    /// call's wanted rows.
    pub(crate) fn keep_outputs(&mut self, state: &Context, first: usize) {
        self.outputs.clear();
        self.width = state.width();
        for j in 0..self.guesses.len() {
            self.outputs.extend_from_slice(state.output(first + j));
        }
    }

    /// The output of guessed row `j`.
    pub(crate) fn output(&self, j: usize) -> &[f32] {
        &self.outputs[j * self.width..(j + 1) * self.width]
    }

    /// The symbol predicted by `src`'s logits decoded as `sym`: the guess that followed
    /// those logits came true or not. Returns the cache length to cut back to when it did
    /// not.
    pub(crate) fn settle(
        &mut self,
        src: Src,
        sym: u32,
        rates: &mut GuessRates,
        stats: &mut Stats,
    ) -> Option<usize> {
        let c = match src {
            Src::Call(_) => 0,
            Src::Guessed(j) => j + 1,
        };
        if c >= self.guesses.len() {
            return None;
        }
        let right = self.guesses[c] == sym;
        rates.record(self.kinds[c], right);
        stats.guessed_right += right as u64;
        if right {
            self.next = Some(c);
            None
        } else {
            self.guesses.clear();
            Some(self.base_len + c)
        }
    }
}

/// How often guesses of each kind came true in this run, with a prior (decoder-side only).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct GuessRates {
    tried: [f64; DRAFT_KINDS],
    right: [f64; DRAFT_KINDS],
}

impl GuessRates {
    pub(crate) fn new() -> Self {
        // Priors from alice29, fields.c, grammar.lsp and the OOD report: matches and
        // single-continuation contexts come true about 70-80% of the time, others 20-40%.
        GuessRates {
            tried: [4.0; DRAFT_KINDS],
            right: [3.0, 3.0, 1.0],
        }
    }

    fn rate(&self, k: DraftKind) -> f64 {
        self.right[k as usize] / self.tried[k as usize]
    }

    fn record(&mut self, k: DraftKind, right: bool) {
        self.tried[k as usize] += 1.0;
        self.right[k as usize] += right as u32 as f64;
    }

    /// How many of the guesses to run: while the chance all of them hold stays high.
    fn keep(&self, kinds: &[DraftKind]) -> usize {
        let mut p = 1.0;
        for (j, &k) in kinds.iter().enumerate() {
            p *= self.rate(k);
            if p < MIN_CHAIN {
                return j;
            }
        }
        kinds.len()
    }
}
