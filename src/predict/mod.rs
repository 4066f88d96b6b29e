//! Predictors behind one trait, mixed and calibrated into each symbol's weight.
//!
//! The language model, a token n-gram model, a match model and an adaptive bias are mixed
//! by a learned, context-selected mixer, calibrated by an APM stage, and blended with the
//! continuous cache, which reads the model's hidden states.
//!
//! Data flow for one position of one stream (`Ensemble::predict`):
//!   each [`Predictor`] contributes: the bias shifts the logits, the n-gram orders 1..N and
//!   the match model add sparse distributions as mixer inputs
//!   logits + bias → softmax (own exp, fixed lane order)
//!   mixer: weights chosen by (match length × LLM confidence, input slot) → linear mixture
//!   APM on "the next symbol is the top candidate"
//!   continuous cache: (1 − λ)·that + λ·(what followed the most similar hidden states) →
//!   final weights (the coder builds its CDF from them)
//! After the symbol is known, `Ensemble::update` trains the mixer and the APM, and every
//! predictor learns the symbol. Streams predict in parallel from the same state and then
//! update one after another in stream order, in both directions, so the decoder's state
//! always equals the encoder's. Models are shared by all streams: a block learns from every
//! block coded before it and from its neighbours' earlier positions.
use serde::{Deserialize, Serialize};

pub mod bias;
pub mod cache;
pub mod history;
pub mod matcher;
pub mod mixer;
pub mod ngram;
pub mod novelty;
mod settings;

pub use settings::{
    PredictorSettings, CACHE_LOG2, DEFAULT_ACTIVE_ASCII_LOG2, DEFAULT_CACHE_LOG2,
    DEFAULT_CACHE_THETA, DEFAULT_PROBE_RATE, HISTORY_CAP, MAX_ACTIVE_LOG2, SETTINGS_VERSION,
};

use crate::math::{exp_f32, first_eq, hsum, max_f32, squash, sum_lanes, LANES};
use bias::LogitBias;
use cache::HiddenCache;
use history::{History, UNKNOWN};
use matcher::Matcher;
use mixer::{Apm, ApmAt, Mixer};
use ngram::{NGram, Seen};
use novelty::{entropy, Novelty, NoveltyAt, SetView};

/// The symbols one step's distribution covers, and how weights are indexed.
#[derive(Clone, Copy)]
pub enum Alphabet<'a> {
    /// Every symbol, vocabulary then escapes: weight `i` is symbol `i`'s.
    Full,
    /// The active set: weight `j` is symbol `ids[j]`'s, and weight `ids.len()` the
    /// escape's (a symbol outside the set). `index[sym]` is a vocabulary symbol's place in
    /// the set; one at or beyond `ids.len()` is not in it yet.
    Active { ids: &'a [u32], index: &'a [u32] },
}

impl Alphabet<'_> {
    /// The weight index of `sym`, or `None` when it is coded through the escape.
    #[inline]
    pub fn index_of(&self, sym: u32) -> Option<usize> {
        match self {
            Alphabet::Full => Some(sym as usize),
            Alphabet::Active { ids, index } => index
                .get(sym as usize)
                .map(|&i| i as usize)
                .filter(|&i| i < ids.len()),
        }
    }

    /// The escape's weight index (active sets only).
    pub fn escape(&self) -> Option<usize> {
        match self {
            Alphabet::Full => None,
            Alphabet::Active { ids, .. } => Some(ids.len()),
        }
    }

    /// The symbol of weight index `i` (not the escape).
    pub fn symbol(&self, i: usize) -> u32 {
        match self {
            Alphabet::Full => i as u32,
            Alphabet::Active { ids, .. } => ids[i],
        }
    }
}

/// Where a stream stands in the shared history: what a model reads to predict the stream's
/// next symbol, or to learn the one that came.
pub struct At<'a> {
    pub hist: &'a History,
    pub stream: usize,
    /// Absolute history index of the symbol predicted (or learned: then already stored).
    pub pos: usize,
}

/// One input to the mixer at one position.
#[derive(Clone, Copy, Debug)]
pub enum Input {
    /// The language model's distribution (always the first input).
    Llm,
    /// What n-gram order `order` has seen follow its context.
    Order { order: usize, seen: Seen },
    /// The symbol the match model predicts.
    Match(u32),
}

/// What the predictors contribute at one position, gathered before mixing.
pub struct Inputs<'a> {
    /// The language model's logits for the position, which a model may shift before the
    /// softmax (the logit bias); indexed as `alphabet` says.
    pub logits: &'a mut [f32],
    pub alphabet: Alphabet<'a>,
    /// Mixer inputs, the language model's first, then in the order the models add them.
    pub list: &'a mut Vec<Input>,
    /// Length of the match behind a match input (0: none); selects the mixer's context.
    pub match_len: u32,
}

/// The language model's distribution at a position as the prediction used it: softmax
/// numerators of the (shifted) logits and the reciprocal of their sum.
pub struct Softmax<'a> {
    pub e: &'a [f32],
    pub inv_z: f32,
    /// How `e` is indexed.
    pub alphabet: Alphabet<'a>,
    /// The symbol's index in `e`; `None` when it came through the escape.
    pub index: Option<usize>,
}

/// One model of the ensemble, as paq8px's models each offer `mix` and `update`: what it
/// says about a stream's next symbol, and what it learns once the symbol is known. Both
/// directions call them in the same order with the same arguments, and every model's
/// arithmetic is integer or f32 in a fixed order, so encoder and decoder stay identical.
pub trait Predictor {
    /// Adds this model's view of the next symbol at `at` to `inputs`. Reads shared state
    /// only, so the rows of one step can run in parallel.
    fn contribute(&self, at: &At<'_>, inputs: &mut Inputs<'_>);
    /// Learns `sym`, the symbol that came at `at` (already in `at.hist`); `llm` is the
    /// language model's distribution as the prediction used it.
    fn learn(&mut self, at: &At<'_>, sym: u32, llm: &Softmax<'_>);
}

/// Per-row working state: what `predict` saw, kept for `update`.
#[derive(Clone, Default)]
pub struct Scratch {
    /// Softmax numerators of the (biased) logits; 0 for masked symbols.
    e: Vec<f32>,
    /// Final weights, one per symbol, not normalized: the coder's CDF is built from them.
    weights: Vec<f32>,
    inv_z: f32,
    argmax: u32,
    ctx: usize,
    slots: Vec<usize>,
    inputs: Vec<Input>,
    w: Vec<f32>,
    /// Top candidate and where the APM read it.
    sse: Option<(u32, ApmAt)>,
    /// Where the escape's probability was read (active sets only).
    novelty: Option<NoveltyAt>,
    /// The top (biased) logit.
    max: f32,
    /// The position's hidden state as a cache key, and what the cache predicted.
    key: cache::Key,
    cache: cache::Prediction,
    /// The cache stage's bucket and λ, when it ran.
    blend: Option<(usize, f32)>,
    /// `key` is this prediction's (the cache learns it with the symbol).
    keyed: bool,
    /// The escape probe's input: the hidden state scaled to unit RMS (empty: no probe).
    probe: Vec<f32>,
}

impl Scratch {
    /// The weights of the last [`Ensemble::predict`] into this scratch, one per weight
    /// index of its [`Alphabet`], not normalized; masked symbols get 0.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }
}

/// The weight of `sym` in `weights` as `alphabet` indexes them (never the escape's).
#[inline]
fn weight_of<'w>(weights: &'w mut [f32], alphabet: Alphabet, sym: u32) -> Option<&'w mut f32> {
    let limit = alphabet.escape().unwrap_or(weights.len());
    alphabet
        .index_of(sym)
        .filter(|&i| i < limit)
        .and_then(|i| weights.get_mut(i))
}

/// The models of the ensemble, each absent when its setting is off.
#[derive(Serialize, Deserialize)]
struct Models {
    bias: Option<LogitBias>,
    ngram: Option<NGram>,
    matcher: Option<Matcher>,
}

impl Models {
    /// The models present, in contribution order: the bias (it shifts the logits), then
    /// the n-gram orders and the match model, whose mixer inputs keep that order.
    fn iter(&self) -> impl Iterator<Item = &dyn Predictor> {
        let bias = self.bias.iter().map(|m| m as &dyn Predictor);
        let ngram = self.ngram.iter().map(|m| m as &dyn Predictor);
        let matcher = self.matcher.iter().map(|m| m as &dyn Predictor);
        bias.chain(ngram).chain(matcher)
    }

    /// The models present, mutably, in the same order.
    fn iter_mut(&mut self) -> impl Iterator<Item = &mut dyn Predictor> {
        let bias = self.bias.iter_mut().map(|m| m as &mut dyn Predictor);
        let ngram = self.ngram.iter_mut().map(|m| m as &mut dyn Predictor);
        let matcher = self.matcher.iter_mut().map(|m| m as &mut dyn Predictor);
        bias.chain(ngram).chain(matcher)
    }
}

/// All predictor state for one archive.
#[derive(Serialize, Deserialize)]
pub struct Ensemble {
    s: PredictorSettings,
    vocab: usize,
    num_symbols: usize,
    /// 0 for allowed vocabulary symbols, −∞ for masked ones (added to the logits).
    mask: Vec<f32>,
    hist: History,
    models: Models,
    mixer: Mixer,
    apm: Apm,
    novelty: Novelty,
    /// The continuous cache (outside [`Models`]: it reads hidden states, not symbols), and
    /// its stage's λ per similarity bucket, as a logit.
    cache: Option<HiddenCache>,
    cache_u: [f32; cache::BUCKETS],
    /// Mixer slots: 0 = LLM, then n-gram order k's confidences, then match (agrees with
    /// the LLM's top symbol or not).
    order_slot0: usize,
    match_slot0: usize,
}

/// Where a guess of [`Ensemble::draft`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DraftKind {
    /// The match model's continuation.
    Match = 0,
    /// An n-gram context that has only ever seen this continuation, at least twice.
    Sure = 1,
    /// Any other n-gram context's most counted continuation.
    Likely = 2,
}

/// Number of [`DraftKind`]s.
pub const DRAFT_KINDS: usize = 3;

/// The cache stage's starting λ, as a logit (λ ≈ 0.05).
const CACHE_U0: f32 = -3.0;

/// Number of global mixer contexts.
const CONTEXTS: usize = matcher::LENGTH_BUCKETS * mixer::LLM_BUCKETS;

impl Ensemble {
    /// `num_symbols` = vocabulary + escapes; `masked` lists vocabulary ids held at the floor;
    /// `width` is the model's hidden size (the continuous cache's keys).
    pub fn new(
        s: &PredictorSettings,
        vocab: usize,
        num_symbols: usize,
        masked: &[u32],
        width: usize,
    ) -> Self {
        let mut mask = vec![0f32; vocab];
        if s.mask_control {
            for &m in masked {
                if let Some(a) = mask.get_mut(m as usize) {
                    *a = f32::NEG_INFINITY;
                }
            }
        }
        let orders = if s.ngram { s.ngram_order as usize } else { 0 };
        let order_slot0 = 1;
        let match_slot0 = order_slot0 + orders * ngram::CONFIDENCES;
        let mut init = vec![0.0f32];
        init.resize(match_slot0, -2.0);
        init.extend_from_slice(&[-1.0, -1.0]);
        Ensemble {
            vocab,
            num_symbols,
            mask,
            hist: History::new(HISTORY_CAP),
            models: Models {
                bias: s
                    .bias
                    .then(|| LogitBias::new(vocab, s.bias_rate as f32 / (1u32 << 20) as f32)),
                ngram: s
                    .ngram
                    .then(|| NGram::new(s.ngram_order as usize, s.ngram_bits as u32)),
                matcher: s
                    .matcher
                    .then(|| Matcher::new(s.match_min as usize, s.match_bits as u32)),
            },
            mixer: Mixer::new(
                CONTEXTS,
                &init,
                s.mixer_rate as f32 / (1u32 << 16) as f32,
                s.mixer_ctx && s.mixer_shared,
            ),
            apm: Apm::new(CONTEXTS, s.sse_rate as f32 / (1u32 << 16) as f32),
            novelty: Novelty::with_probe(s.probe_rate as f32 / 64.0),
            cache: (s.cache_log2 > 0)
                .then(|| HiddenCache::new(width, s.cache_log2, s.cache_theta as f32)),
            cache_u: [CACHE_U0; cache::BUCKETS],
            order_slot0,
            match_slot0,
            s: s.clone(),
        }
    }

    /// Starts a group whose blocks have `lens` symbols.
    pub fn begin_group(&mut self, lens: &[usize]) {
        let restart = self.hist.begin_group(lens);
        if let Some(m) = &mut self.models.matcher {
            m.begin_group(lens.len(), restart);
        }
    }

    /// The distribution of stream `stream`'s next symbol given the model's logits for it
    /// (one per symbol of `alphabet`'s set, or the vocabulary's) and, where the model gives
    /// it, its final hidden state, as weights in `sc` ([`Scratch::weights`]). Reads shared
    /// state only, so the rows of one step can run in parallel.
    pub fn predict(
        &self,
        stream: usize,
        logits: &[f32],
        hidden: Option<&[f32]>,
        alphabet: Alphabet,
        sc: &mut Scratch,
    ) {
        let n = match alphabet {
            Alphabet::Full => self.vocab,
            Alphabet::Active { ids, .. } => ids.len(),
        };
        sc.weights.resize(
            match alphabet {
                Alphabet::Full => self.num_symbols,
                Alphabet::Active { ids, .. } => ids.len() + 1,
            },
            0.0,
        );
        sc.e.clear();
        sc.e.extend_from_slice(&logits[..n]);
        sc.inputs.clear();
        sc.inputs.push(Input::Llm);
        let at = At {
            hist: &self.hist,
            stream,
            pos: self.hist.pos(stream),
        };
        let mut inputs = Inputs {
            logits: &mut sc.e,
            alphabet,
            list: &mut sc.inputs,
            match_len: 0,
        };
        for m in self.models.iter() {
            m.contribute(&at, &mut inputs);
        }
        let match_len = inputs.match_len;
        // Masked symbols go to −∞ after the bias: (l + b) + m, as one expression would.
        match alphabet {
            Alphabet::Full => {
                for (x, &m) in sc.e.iter_mut().zip(&self.mask) {
                    *x += m;
                }
            }
            Alphabet::Active { ids, .. } => {
                for (x, &id) in sc.e.iter_mut().zip(ids) {
                    *x += self.mask[id as usize];
                }
            }
        }
        let p_max = self.softmax(sc);
        let ctx = self.mix(sc, alphabet, match_len, p_max);
        sc.sse = None;
        if self.s.sse {
            self.calibrate(sc, alphabet, ctx);
        }
        sc.blend = None;
        sc.keyed = false;
        if let (Some(c), Some(h)) = (&self.cache, hidden) {
            sc.key.quantize(h);
            sc.keyed = true;
            if c.predict(&sc.key, &mut sc.cache) {
                self.blend_cache(sc, alphabet);
            }
        }
        sc.novelty = None;
        if let Some(esc) = alphabet.escape() {
            self.escape(sc, stream, esc, p_max, hidden);
        }
    }

    /// The continuous cache's stage: the final distribution is (1 − λ)·(the weights so far,
    /// normalized) + λ·(the cache's), with λ learned per similarity bucket. A last stage,
    /// not a mixer input: measured, it gains more here (−1.10% against −0.96% on the OOD
    /// report's first 60 KB), since the mixer's softmax over its inputs makes the cache
    /// compete with the n-gram orders for weight instead of correcting their sum.
    fn blend_cache(&self, sc: &mut Scratch, alphabet: Alphabet) {
        let limit = alphabet.escape().unwrap_or(sc.weights.len());
        let total = sum_lanes(&sc.weights[..limit]);
        if !(total > 0.0 && total.is_finite()) {
            return;
        }
        let b = sc.cache.bucket;
        let lambda = squash(self.cache_u[b]);
        let a = (1.0 - lambda) / total;
        for w in &mut sc.weights[..limit] {
            *w *= a;
        }
        for (&sym, &p) in sc.cache.syms.iter().zip(&sc.cache.p) {
            if let Some(w) = weight_of(&mut sc.weights, alphabet, sym) {
                *w += lambda * p;
            }
        }
        sc.blend = Some((b, lambda));
    }

    /// The escape's weight: its learned probability against the set's total weight.
    fn escape(
        &self,
        sc: &mut Scratch,
        stream: usize,
        esc: usize,
        p_max: f32,
        hidden: Option<&[f32]>,
    ) {
        sc.probe.clear();
        if let (true, Some(h)) = (self.novelty.probing(), hidden) {
            novelty::probe_input(h, &mut sc.probe);
        }
        let view = SetView {
            p_max,
            lse: sc.max - crate::math::ln_f32(sc.inv_z),
            max: sc.max,
            entropy: entropy(&sc.e, sc.inv_z),
            probe: self.novelty.probe(&sc.probe),
        };
        let (p, at) = self.novelty.predict(stream, &view);
        sc.weights[esc] = sum_lanes(&sc.weights[..esc]) * (p / (1.0 - p));
        sc.novelty = Some(at);
    }

    /// The distribution of a symbol known to be outside the active set (`alphabet`, the
    /// set as the step's prediction used it): the language model's softmax over the rest of
    /// the vocabulary, every other symbol weight 0. `logits` holds every vocabulary id's.
    pub fn predict_new(&self, logits: &[f32], alphabet: Alphabet, weights: &mut Vec<f32>) {
        let v = self.vocab;
        weights.clear();
        weights.resize(self.num_symbols, 0.0);
        let x = &mut weights[..v];
        for ((x, &l), &m) in x.iter_mut().zip(logits).zip(&self.mask) {
            *x = l + m;
        }
        if let Alphabet::Active { ids, .. } = alphabet {
            for &id in ids {
                x[id as usize] = f32::NEG_INFINITY;
            }
        }
        let max = max_f32(x);
        for x in x.iter_mut() {
            let y = exp_f32(*x - max);
            *x = if *x > f32::NEG_INFINITY { y } else { 0.0 };
        }
    }

    /// Softmax of `sc.e` in place over the allowed symbols, written as flat passes over
    /// 8-lane chunks so they vectorize; every sum is in the fixed lane order of `hsum`.
    /// Sets `sc.inv_z` and `sc.argmax`; returns the top probability.
    fn softmax(&self, sc: &mut Scratch) -> f32 {
        let max = max_f32(&sc.e);
        sc.max = max;
        let argmax = first_eq(&sc.e, max).unwrap_or(0) as u32;
        let mut lanes = [0f32; LANES];
        let mut chunks = sc.e.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for l in 0..LANES {
                let x = c[l];
                // Masked (−∞) and NaN logits get exactly zero.
                let y = exp_f32(x - max);
                c[l] = if x > f32::NEG_INFINITY { y } else { 0.0 };
                lanes[l] += c[l];
            }
        }
        for (l, x) in chunks.into_remainder().iter_mut().enumerate() {
            let y = exp_f32(*x - max);
            *x = if *x > f32::NEG_INFINITY { y } else { 0.0 };
            lanes[l] += *x;
        }
        sc.inv_z = 1.0 / hsum(lanes);
        sc.argmax = argmax;
        sc.inv_z // e = 1 exactly at the argmax
    }

    /// The mixer slot of each input, the global context, and the mixture into `sc.weights`.
    /// Returns the global context (the APM's, even when the mixer uses one weight set).
    fn mix(&self, sc: &mut Scratch, alphabet: Alphabet, match_len: u32, p_max: f32) -> usize {
        let v = sc.e.len();
        sc.slots.clear();
        for inp in &sc.inputs {
            sc.slots.push(match *inp {
                Input::Llm => 0,
                Input::Order { order, seen } => {
                    self.order_slot0 + (order - 1) * ngram::CONFIDENCES + seen.confidence()
                }
                Input::Match(sym) => {
                    let agrees = alphabet.index_of(sym) == Some(sc.argmax as usize);
                    self.match_slot0 + agrees as usize
                }
            });
        }
        let ctx = matcher::length_bucket(match_len) * mixer::LLM_BUCKETS + mixer::llm_bucket(p_max);
        sc.ctx = if self.s.mixer_ctx { ctx } else { 0 };
        let w_llm = if sc.inputs.len() > 1 {
            self.mixer.weights(sc.ctx, &sc.slots, &mut sc.w);
            sc.w[0]
        } else {
            sc.w.clear();
            sc.w.push(1.0);
            1.0
        };
        let scale = w_llm * sc.inv_z;
        for (w, &e) in sc.weights.iter_mut().zip(&sc.e) {
            *w = e * scale;
        }
        sc.weights[v..].fill(0.0);
        for (inp, &wi) in sc.inputs.iter().zip(&sc.w).skip(1) {
            match *inp {
                Input::Order { seen, .. } => {
                    let f = wi / seen.total as f32;
                    for j in 0..seen.n as usize {
                        if let Some(w) = weight_of(&mut sc.weights, alphabet, seen.syms[j]) {
                            *w += f * seen.counts[j] as f32;
                        }
                    }
                }
                Input::Match(sym) => {
                    if let Some(w) = weight_of(&mut sc.weights, alphabet, sym) {
                        *w += wi;
                    }
                }
                Input::Llm => {}
            }
        }
        ctx
    }

    /// The APM stage in global context `ctx`: recalibrates the top candidate's weight in
    /// `sc.weights`.
    fn calibrate(&self, sc: &mut Scratch, alphabet: Alphabet, ctx: usize) {
        // Candidates as weight indices (the escape's is never one).
        let limit = alphabet.escape().unwrap_or(sc.weights.len());
        let mut top = sc.argmax;
        for inp in &sc.inputs {
            let cands: &[u32] = match inp {
                Input::Order { seen, .. } => &seen.syms[..seen.n as usize],
                Input::Match(sym) => std::slice::from_ref(sym),
                Input::Llm => &[],
            };
            for &c in cands {
                let Some(ci) = alphabet.index_of(c).filter(|&i| i < limit) else {
                    continue;
                };
                if sc.weights[ci] > sc.weights[top as usize] {
                    top = ci as u32;
                }
            }
        }
        let p = sc.weights[top as usize].clamp(1e-6, 1.0 - 1e-6);
        let (apm, at) = self.apm.refine(ctx, p);
        let q = ((p + 3.0 * apm) * 0.25).clamp(1e-6, 1.0 - 1e-6);
        // Scale the top symbol so that, after the CDF builder normalizes, it has
        // probability q and the others keep their proportions.
        sc.weights[top as usize] = q * (1.0 - p) / (1.0 - q);
        sc.sse = Some((top, at));
    }

    /// Guesses up to `max` next symbols of `stream` (each below `vocab`) into `out`, from
    /// the match model's continuation and then the highest n-gram order that has seen the
    /// context. The decoder feeds guesses to the model speculatively; a guess only decides
    /// which rows are computed, never a probability, so any guess decodes the same.
    ///
    /// `kinds` receives each guess's [`DraftKind`], for the caller's estimate of how often
    /// such guesses come true.
    pub fn draft(
        &self,
        stream: usize,
        max: usize,
        vocab: usize,
        out: &mut Vec<u32>,
        kinds: &mut Vec<DraftKind>,
    ) {
        out.clear();
        kinds.clear();
        let at = self.hist.pos(stream);
        // Symbol at absolute index i, with the guesses standing in from `at` on (a match
        // may overlap itself: "abab…" continues with what it has just guessed).
        let sym_at = |i: usize, out: &[u32]| {
            if i < at {
                self.hist.at(i)
            } else {
                out.get(i - at).copied().unwrap_or(UNKNOWN)
            }
        };
        let order = self.models.ngram.as_ref().map_or(0, |g| g.max_order());
        let mut ctx: Vec<u32> = Vec::with_capacity(order + max);
        for k in (1..=order).rev() {
            if let Some(c) = self.hist.context_before(at, k) {
                ctx.extend_from_slice(c);
                break;
            }
        }
        let mut mptr = self.models.matcher.as_ref().and_then(|m| m.pointer(stream));
        while out.len() < max {
            let mut guess = None;
            if let Some(p) = mptr {
                let g = sym_at(p, out);
                if g == UNKNOWN {
                    mptr = None;
                } else {
                    guess = Some((g, DraftKind::Match));
                    mptr = Some(p + 1);
                }
            }
            if guess.is_none() {
                if let Some(g) = &self.models.ngram {
                    for k in (1..=order.min(ctx.len())).rev() {
                        if let Some(seen) = g.lookup(&ctx[ctx.len() - k..]) {
                            let kind = if seen.n == 1 && seen.total >= 2 {
                                DraftKind::Sure
                            } else {
                                DraftKind::Likely
                            };
                            guess = seen.most_counted().map(|g| (g, kind));
                            break;
                        }
                    }
                }
            }
            match guess {
                Some((g, kind)) if (g as usize) < vocab => {
                    out.push(g);
                    kinds.push(kind);
                    ctx.push(g);
                }
                _ => break,
            }
        }
    }
    /// Learns from stream `stream`'s actual symbol `sym` (after its `predict` with the same
    /// `alphabet`). Call in stream order within a step.
    pub fn update(&mut self, stream: usize, sym: u32, alphabet: Alphabet, sc: &Scratch) {
        let index = alphabet.index_of(sym);
        if let Some(at) = &sc.novelty {
            self.novelty.update(stream, at, index.is_none(), &sc.probe);
        }
        // The mixer, the APM and the bias learn what they predicted: a symbol in the set.
        if let Some(y) = index {
            self.learn_mixture(sym, y, sc);
            if let Some((b, lambda)) = sc.blend {
                self.learn_blend(b, lambda, sc.weights[y], sc.cache.prob(sym));
            }
        }
        let pos = self.hist.pos(stream);
        self.hist.push(stream, sym);
        let at = At {
            hist: &self.hist,
            stream,
            pos,
        };
        let llm = Softmax {
            e: &sc.e,
            inv_z: sc.inv_z,
            alphabet,
            index,
        };
        for m in self.models.iter_mut() {
            m.learn(&at, sym, &llm);
        }
        if let (Some(c), true) = (&mut self.cache, sc.keyed) {
            c.insert(&sc.key, sym);
        }
    }

    /// The cache stage's step: p = (1 − λ)·p_e + λ·p_c is what the symbol got (`p`, its
    /// final weight, the stage's output sums to about 1), `p_c` the cache's share; a
    /// gradient step on −ln p moves λ's logit by λ(1 − λ)(p_c − p_e)/p.
    fn learn_blend(&mut self, b: usize, lambda: f32, p: f32, p_c: f32) {
        if !(p > 0.0 && lambda < 1.0) {
            return;
        }
        let p_e = (p - lambda * p_c) / (1.0 - lambda);
        let g = lambda * (1.0 - lambda) * (p_c - p_e) / p;
        let rate = self.s.mixer_rate as f32 / (1u32 << 16) as f32;
        self.cache_u[b] = (self.cache_u[b] + rate * g).clamp(-12.0, 12.0);
    }

    /// The mixer's and the APM's step for symbol `sym`, at weight index `y`.
    fn learn_mixture(&mut self, sym: u32, y: usize, sc: &Scratch) {
        // Mixer: wᵢ·qᵢ(y) per input.
        if sc.inputs.len() > 1 {
            let mut wq = [0f32; 16];
            let n = sc.inputs.len().min(wq.len());
            let mut p = 0f32;
            for (i, (inp, wi)) in sc.inputs.iter().zip(&mut wq[..n]).enumerate() {
                let q = match *inp {
                    Input::Llm => {
                        if y < sc.e.len() {
                            sc.e[y] * sc.inv_z
                        } else {
                            0.0
                        }
                    }
                    Input::Order { seen, .. } => seen.count(sym) as f32 / seen.total as f32,
                    Input::Match(m) => (m == sym) as u32 as f32,
                };
                *wi = sc.w[i] * q;
                p += *wi;
            }
            self.mixer
                .update(sc.ctx, &sc.slots[..n], &sc.w[..n], &wq[..n], p);
        }
        if let Some((top, at)) = sc.sse {
            self.apm.update(at, top as usize == y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coder::Cdf;

    /// The coder's table for one prediction, as the pipeline builds it (tests measure the
    /// distribution through it).
    fn predict_cdf(e: &Ensemble, stream: usize, logits: &[f32], sc: &mut Scratch, cdf: &mut Cdf) {
        e.predict(stream, logits, None, Alphabet::Full, sc);
        cdf.build_from_weights(sc.weights());
    }

    #[test]
    fn masked_and_escape_symbols_get_the_floor() {
        let mut e = Ensemble::new(&PredictorSettings::llm_only(), 4, 6, &[0], 0);
        e.begin_group(&[3]);
        let mut cdf = Cdf::default();
        let mut sc = Scratch::default();
        predict_cdf(&e, 0, &[10.0, 1.0, 2.0, 3.0], &mut sc, &mut cdf);
        assert_eq!(cdf.freq(0), 1);
        assert_eq!(cdf.freq(4), 1);
        assert_eq!(cdf.freq(5), 1);
        assert!(cdf.freq(3) > cdf.freq(2) && cdf.freq(2) > cdf.freq(1));
    }

    /// A repeated phrase gets cheap once the n-gram and match models have seen it, and the
    /// same sequence of calls gives the same distributions (what the decoder relies on).
    #[test]
    fn ensemble_learns_repeats_and_is_deterministic() {
        let vocab = 64;
        let logits = vec![0.0f32; vocab]; // an uninformed model
        let phrase: Vec<u32> = (0..20).map(|i| (i * 7 % 60) as u32).collect();
        let text: Vec<u32> = phrase.iter().cycle().take(200).copied().collect();
        let run = || {
            let mut e = Ensemble::new(&PredictorSettings::default(), vocab, vocab + 2, &[], 0);
            e.begin_group(&[text.len()]);
            let (mut sc, mut cdf) = (Scratch::default(), Cdf::default());
            let mut costs = Vec::new();
            for &s in &text {
                predict_cdf(&e, 0, &logits, &mut sc, &mut cdf);
                costs.push(cdf.cost_bits(s as usize));
                e.update(0, s, Alphabet::Full, &sc);
            }
            costs
        };
        let a = run();
        assert_eq!(a, run());
        let first: f64 = a[..20].iter().sum();
        let last: f64 = a[180..].iter().sum();
        assert!(first > 100.0 && last < 10.0, "first {first} last {last}");
    }

    #[test]
    fn draft_guesses_the_repeat_and_stops_at_the_vocabulary() {
        let vocab = 64;
        let logits = vec![0.0f32; vocab];
        let mut e = Ensemble::new(&PredictorSettings::default(), vocab, vocab + 2, &[], 0);
        // "1 2 3 4 5 6 7" twice, then "1 2 3": the match model continues with 4 5 6 7.
        let text = [1u32, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5, 6, 7, 1, 2, 3];
        e.begin_group(&[text.len() + 8]);
        let (mut sc, mut cdf) = (Scratch::default(), Cdf::default());
        let (mut out, mut kinds) = (Vec::new(), Vec::new());
        e.draft(0, 4, vocab, &mut out, &mut kinds);
        assert!(out.is_empty(), "nothing seen, nothing guessed");
        for &s in &text {
            predict_cdf(&e, 0, &logits, &mut sc, &mut cdf);
            e.update(0, s, Alphabet::Full, &sc);
        }
        e.draft(0, 4, vocab, &mut out, &mut kinds);
        assert_eq!(out, [4, 5, 6, 7]);
        assert_eq!(kinds[0], DraftKind::Match);
        e.draft(0, 2, vocab, &mut out, &mut kinds);
        assert_eq!(out, [4, 5], "at most max");
        // A vocabulary of 6 ids: the guess 6 is not a model input, so the chain stops.
        e.draft(0, 4, 6, &mut out, &mut kinds);
        assert_eq!(out, [4, 5]);
    }
}

#[cfg(test)]
mod draft_probe {
    use super::*;

    /// How often the guesses of [`Ensemble::draft`] come true on real text (model-free:
    /// the LLM input is flat, which changes the mixer but not the n-gram/match tables).
    /// `cargo test --release --lib draft_acceptance -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn draft_acceptance() {
        let path = crate::testing::real_model_path().expect("model");
        let model = crate::model::Model::load(&path).expect("load");
        let tk = &model.tokenizer;
        let s = PredictorSettings::default();
        for file in [
            "corpora/files/canterbury/alice29.txt",
            "corpora/files/canterbury/fields.c",
            "corpora/files/canterbury/grammar.lsp",
            "corpora/files/ood/deprivation-2025-technical-report.txt",
        ] {
            let Ok(data) = std::fs::read(file) else {
                continue;
            };
            let data = &data[..data.len().min(60_000)];
            let syms = tk.encode(data);
            let mut ens = Ensemble::new(
                &s,
                tk.vocab_size(),
                tk.num_symbols(),
                &model.control_tokens,
                0,
            );
            ens.begin_group(&[syms.len()]);
            let logits = vec![0f32; tk.vocab_size()];
            let mut sc = Scratch::default();
            let mut out = Vec::new();
            let mut kinds = Vec::new();
            let mut by_kind = [[0usize; 2]; DRAFT_KINDS];
            let k = 4;
            let mut hist_acc = [0usize; 5];
            let mut first = 0;
            for t in 0..syms.len() {
                ens.draft(0, k, tk.vocab_size(), &mut out, &mut kinds);
                for (j, (&g, &kd)) in out.iter().zip(&kinds).enumerate() {
                    // Conditional precision: guess j counts once the earlier ones held.
                    if out[..j] != syms[t..(t + j).min(syms.len())] {
                        break;
                    }
                    by_kind[kd as usize][0] += 1;
                    by_kind[kd as usize][1] += (syms.get(t + j) == Some(&g)) as usize;
                }
                let acc = out
                    .iter()
                    .zip(&syms[t..])
                    .take_while(|(a, b)| a == b)
                    .count();
                hist_acc[acc] += 1;
                first += (!out.is_empty() && out[0] == syms[t]) as usize;
                ens.predict(0, &logits, None, Alphabet::Full, &mut sc);
                ens.update(0, syms[t], Alphabet::Full, &sc);
            }
            let n = syms.len() as f64;
            let mean: f64 = hist_acc
                .iter()
                .enumerate()
                .map(|(i, &c)| (i * c) as f64)
                .sum::<f64>()
                / n;
            println!(
                "{file}: {} symbols, first guess right {:.1}%, accepted chain of {k}: {:?}, mean {:.2}",
                syms.len(),
                100.0 * first as f64 / n,
                hist_acc,
                mean
            );
            println!("  by kind (tried, right): {by_kind:?}");
        }
    }
}
