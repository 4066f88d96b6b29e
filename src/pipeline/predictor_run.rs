//! One predictor configuration run over an archive, with the coder's CDFs it builds.
//!
//! A run holds its ensemble, per-row scratch, the CDFs built from the ensemble's weights,
//! and the ideal code length so far.

use crate::coder::Cdf;
use crate::engine::Context;
use crate::model::Model;
use crate::predict::{Alphabet, Ensemble, PredictorSettings, Scratch};
use rayon::prelude::*;

/// One row of a step: its stream, logits, and final hidden state (active head only).
pub(crate) type Item<'a> = (usize, &'a [f32], Option<&'a [f32]>);

/// One predictor variant: the coded one, or one measured alongside (`compress_measure`).
pub(crate) struct PredictorRun {
    ens: Ensemble,
    scratch: Vec<Scratch>,
    cdfs: Vec<Cdf>,
    bits: f64,
    /// With tracing: each symbol's cost, per stream for the group being coded, then
    /// in input order once the group is done (blocks of a group are consecutive).
    trace: Option<(Vec<Vec<f32>>, Vec<f32>)>,
}

/// The active head's starting set, in id order: the first `2^active_log2` vocabulary ids
/// the model may predict (tokenizers number frequent tokens first) and, with
/// `active_ascii_log2`, the first `2^active_ascii_log2` of them whose bytes are all ASCII
/// and every one of a single ASCII byte. A large multilingual vocabulary numbers its
/// English words and punctuation after many other scripts' pieces, so the first ids alone
/// leave them out; the set depends on the model and the settings only, never the input.
pub(crate) fn initial_active(model: &Model, s: &PredictorSettings) -> Vec<u32> {
    let tk = &model.tokenizer;
    let masked: std::collections::HashSet<u32> = model.control_tokens.iter().copied().collect();
    let allowed = (0..tk.vocab_size() as u32).filter(|id| !masked.contains(id));
    let mut set: Vec<u32> = allowed
        .clone()
        .take(1usize << s.active_log2.min(31))
        .collect();
    if s.active_ascii_log2 > 0 {
        let ascii = |id: &u32| {
            let b = tk.symbol_bytes(*id);
            !b.is_empty() && b.is_ascii()
        };
        set.extend(
            allowed
                .clone()
                .filter(ascii)
                .take(1usize << s.active_ascii_log2.min(31)),
        );
        set.extend(allowed.filter(|id| ascii(id) && tk.symbol_bytes(*id).len() == 1));
        set.sort_unstable();
        set.dedup();
    }
    set
}

/// The alphabet a step's prediction uses: the context's active set as it stood with `m`
/// members, or every symbol.
pub(crate) fn alphabet<'c>(ctx: &'c Context, m: usize) -> Alphabet<'c> {
    match ctx.active() {
        Some(h) => Alphabet::Active {
            ids: &h.ids()[..m],
            index: h.index(),
        },
        None => Alphabet::Full,
    }
}

impl PredictorRun {
    /// A run for `settings` with room for `streams` rows per step.
    pub(crate) fn new(model: &Model, settings: &PredictorSettings, streams: usize) -> Self {
        let tk = &model.tokenizer;
        PredictorRun {
            ens: Ensemble::new(
                settings,
                tk.vocab_size(),
                tk.num_symbols(),
                &model.control_tokens,
                model.net.dim(),
            ),
            scratch: vec![Scratch::default(); streams],
            cdfs: vec![Cdf::default(); streams],
            bits: 0.0,
            trace: None,
        }
    }

    /// Records each symbol's cost from now on ([`PredictorRun::take_trace`]).
    pub(crate) fn start_trace(&mut self) {
        self.trace = Some((Vec::new(), Vec::new()));
    }

    /// The costs recorded since [`PredictorRun::start_trace`], in input order.
    pub(crate) fn take_trace(&mut self) -> Vec<f32> {
        self.flush_trace();
        self.trace.take().map(|t| t.1).unwrap_or_default()
    }

    /// Moves the finished group's per-stream costs after the earlier groups'.
    fn flush_trace(&mut self) {
        if let Some((streams, done)) = &mut self.trace {
            for s in streams.drain(..) {
                done.extend(s);
            }
        }
    }

    /// Starts a group whose blocks have `lens` symbols.
    pub(crate) fn begin_group(&mut self, lens: &[usize]) {
        self.ens.begin_group(lens);
        self.flush_trace();
        if let Some((streams, _)) = &mut self.trace {
            *streams = lens.iter().map(|&l| Vec::with_capacity(l)).collect();
        }
    }

    /// The coder's tables for one step, from each stream's logits over `alphabet`:
    /// `items[i]` = (stream, logits, hidden state where the model gives it) gives
    /// [`PredictorRun::cdf`]`(i)`. The rows run in parallel; each reads only shared state,
    /// so the result does not depend on the thread count.
    pub(crate) fn predict(&mut self, items: &[Item<'_>], alphabet: Alphabet) {
        let ens = &self.ens;
        self.scratch[..items.len()]
            .par_iter_mut()
            .zip(self.cdfs[..items.len()].par_iter_mut())
            .zip(items.par_iter())
            .for_each(|((sc, cdf), &(s, logits, hidden))| {
                ens.predict(s, logits, hidden, alphabet, sc);
                cdf.build_from_weights(sc.weights());
            });
    }

    /// The table of the last step's `i`-th item.
    pub(crate) fn cdf(&self, i: usize) -> &Cdf {
        &self.cdfs[i]
    }

    /// The table of a symbol new to the active set (after the escape): the language
    /// model's distribution over the rest, from every vocabulary id's logits.
    pub(crate) fn new_symbol_cdf(&self, logits: &[f32], alphabet: Alphabet, cdf: &mut Cdf) {
        let mut w = Vec::new();
        self.ens.predict_new(logits, alphabet, &mut w);
        cdf.build_from_weights(&w);
    }

    /// Learns the step's symbols (of `streams`, in order) and adds their cost: each one's
    /// under the step's table, plus `extra[i]` bits where the symbol was new to the set.
    pub(crate) fn update(
        &mut self,
        streams: impl Iterator<Item = usize>,
        syms: &[u32],
        alphabet: Alphabet,
        extra: &[f64],
    ) {
        for (i, (s, &y)) in streams.zip(syms).enumerate() {
            let code = code_of(alphabet, y);
            let cost = self.cdfs[i].cost_bits(code) + extra.get(i).copied().unwrap_or(0.0);
            self.bits += cost;
            if let Some(t) = self.trace.as_mut().and_then(|t| t.0.get_mut(s)) {
                t.push(cost as f32);
            }
            self.ens.update(s, y, alphabet, &self.scratch[i]);
        }
    }

    /// Sum over the symbols learned of their cost in bits under the coded tables.
    pub(crate) fn bits(&self) -> f64 {
        self.bits
    }

    /// The state a checkpoint keeps: the ensemble and the code length so far.
    pub(crate) fn state(&self) -> super::resume::RunRef<'_> {
        super::resume::RunRef {
            ens: &self.ens,
            bits: self.bits,
        }
    }

    /// Takes up a saved state ([`PredictorRun::state`]); the per-row scratch and tables
    /// are rebuilt by the next step.
    pub(crate) fn restore(&mut self, saved: super::resume::RunState) {
        self.ens = saved.ens;
        self.bits = saved.bits;
    }

    /// The ensemble, for guesses of the next symbols ([`Ensemble::draft`]).
    pub(crate) fn ensemble(&self) -> &Ensemble {
        &self.ens
    }
}

/// The index `sym` is coded as in a step's table over `alphabet`: its own, or the escape.
pub(crate) fn code_of(alphabet: Alphabet, sym: u32) -> usize {
    alphabet
        .index_of(sym)
        .or(alphabet.escape())
        .unwrap_or(sym as usize)
}
