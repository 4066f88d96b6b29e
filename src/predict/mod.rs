//! Predictors: the language model, a token n-gram model, a match model and an adaptive
//! bias, mixed by a learned, context-selected mixer and calibrated by an APM stage.
//!
//! Data flow for one position of one stream:
//!   logits + bias → softmax (own exp, fixed lane order)          — `Ensemble::predict`
//!   n-gram orders 1..N, match model → sparse distributions
//!   mixer: weights chosen by (match length × LLM confidence, input slot) → linear mixture
//!   APM on "the next symbol is the top candidate" → final weights → 24-bit CDF
//! After the symbol is known, `Ensemble::update` trains the mixer, the APM and the bias and
//! feeds the symbol to the n-gram and match models. Streams predict in parallel from the same
//! state and then update one after another in stream order, in both directions, so the
//! decoder's state always equals the encoder's. Models are shared by all streams: a block
//! learns from every block coded before it and from its neighbours' earlier positions.

pub mod bias;
pub mod history;
pub mod matcher;
pub mod mixer;
pub mod ngram;

use crate::coder::Cdf;
use crate::engine::math::{exp_f32, first_eq, hsum, max_f32, LANES};
use crate::{Error, ErrorKind, Result};
use bias::LogitBias;
use history::{History, UNKNOWN};
use matcher::Matcher;
use mixer::{Apm, ApmAt, Mixer};
use ngram::{NGram, Seen};

/// Settings that change the distribution, recorded in the archive header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictorSettings {
    /// The model's control tokens are held at the coder's floor count.
    pub mask_control: bool,
    /// Token n-gram model on, with orders 1..=`ngram_order` and 2^`ngram_bits` buckets each.
    pub ngram: bool,
    pub ngram_order: u8,
    pub ngram_bits: u8,
    /// Match model on, with `match_min`-symbol contexts and 2^`match_bits` table entries.
    pub matcher: bool,
    pub match_min: u8,
    pub match_bits: u8,
    /// Adaptive logit bias on, learning rate `bias_rate` / 2^20.
    pub bias: bool,
    pub bias_rate: u16,
    /// Mixer weights selected by context (else one global set); learning rate / 2^16.
    pub mixer_ctx: bool,
    /// With `mixer_ctx`: context weights are offsets on one shared, jointly trained set.
    pub mixer_shared: bool,
    pub mixer_rate: u16,
    /// APM/SSE stage on, rate / 2^16.
    pub sse: bool,
    pub sse_rate: u16,
}

/// Settings layout version this build writes and reads.
pub const SETTINGS_VERSION: u8 = 2;
/// Serialized length.
const SETTINGS_LEN: usize = 12;
/// Most symbols the shared history keeps before it restarts (bounds its memory: 4 bytes
/// per symbol, 256 MiB).
pub const HISTORY_CAP: usize = 1 << 26;

impl Default for PredictorSettings {
    fn default() -> Self {
        PredictorSettings {
            mask_control: true,
            ngram: true,
            ngram_order: 4,
            ngram_bits: 18,
            matcher: true,
            match_min: 3,
            match_bits: 20,
            bias: true,
            bias_rate: 2048,
            mixer_ctx: true,
            mixer_shared: true,
            mixer_rate: 1311,
            sse: true,
            sse_rate: 1311,
        }
    }
}

impl PredictorSettings {
    /// The language model alone (version 1's predictor).
    pub fn llm_only() -> Self {
        PredictorSettings {
            ngram: false,
            matcher: false,
            bias: false,
            sse: false,
            ..Self::default()
        }
    }

    /// Short name of what is switched on, for tables.
    pub fn label(&self) -> String {
        let mut parts = vec!["llm"];
        if self.bias {
            parts.push("bias");
        }
        if self.ngram {
            parts.push("ngram");
        }
        if self.matcher {
            parts.push("match");
        }
        if (self.ngram || self.matcher) && !self.mixer_ctx {
            parts.push("global-mixer");
        }
        if (self.ngram || self.matcher) && self.mixer_ctx && !self.mixer_shared {
            parts.push("context-mixer");
        }
        if self.sse {
            parts.push("sse");
        }
        parts.join("+")
    }

    fn flags(&self) -> u8 {
        (self.mask_control as u8)
            | (self.ngram as u8) << 1
            | (self.matcher as u8) << 2
            | (self.bias as u8) << 3
            | (self.mixer_ctx as u8) << 4
            | (self.sse as u8) << 5
            | (self.mixer_shared as u8) << 6
    }

    /// Serialized form (docs/FORMAT.md): version, flags, four table sizes, three rates.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![
            SETTINGS_VERSION,
            self.flags(),
            self.ngram_order,
            self.ngram_bits,
            self.match_min,
            self.match_bits,
        ];
        b.extend_from_slice(&self.bias_rate.to_le_bytes());
        b.extend_from_slice(&self.mixer_rate.to_le_bytes());
        b.extend_from_slice(&self.sse_rate.to_le_bytes());
        b
    }

    /// Parses and validates the serialized form; every value outside its range is refused
    /// before anything is allocated from it.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        let bad = |field: &'static str, value: u64| {
            Err(Error::new(ErrorKind::InvalidField { field, value }))
        };
        match b.first() {
            None => return bad("predictor settings length", 0),
            Some(&v) if v != SETTINGS_VERSION => {
                return Err(Error::new(ErrorKind::UnsupportedPredictor { version: v }))
            }
            _ => {}
        }
        if b.len() != SETTINGS_LEN {
            return bad("predictor settings length", b.len() as u64);
        }
        let flags = b[1];
        if flags & !0x7f != 0 {
            return Err(Error::new(ErrorKind::ReservedBitsSet {
                field: "predictor flags",
                value: flags as u64,
            }));
        }
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let s = PredictorSettings {
            mask_control: flags & 1 != 0,
            ngram: flags & 2 != 0,
            ngram_order: b[2],
            ngram_bits: b[3],
            matcher: flags & 4 != 0,
            match_min: b[4],
            match_bits: b[5],
            bias: flags & 8 != 0,
            bias_rate: u16_at(6),
            mixer_ctx: flags & 16 != 0,
            mixer_shared: flags & 64 != 0,
            mixer_rate: u16_at(8),
            sse: flags & 32 != 0,
            sse_rate: u16_at(10),
        };
        if !(1..=8).contains(&s.ngram_order) {
            return bad("n-gram order", s.ngram_order as u64);
        }
        if !(8..=22).contains(&s.ngram_bits) {
            return bad("n-gram table bits", s.ngram_bits as u64);
        }
        if !(2..=16).contains(&s.match_min) {
            return bad("match minimum length", s.match_min as u64);
        }
        if !(8..=24).contains(&s.match_bits) {
            return bad("match table bits", s.match_bits as u64);
        }
        Ok(s)
    }

    /// Memory the predictor state takes at most, in bytes (documented limit).
    pub fn memory_bytes(&self, num_symbols: usize) -> usize {
        let mut m = num_symbols * 4 * 2; // bias + allowed mask, roughly
        if self.ngram {
            m += self.ngram_order as usize
                * (1usize << self.ngram_bits)
                * std::mem::size_of::<[u32; 1 + 2 * ngram::SLOTS]>();
        }
        if self.matcher {
            m += 4 << self.match_bits;
            m += HISTORY_CAP * 4;
        }
        m
    }
}

/// One input to the mixer at one position.
#[derive(Clone, Copy, Debug)]
enum Input {
    Llm,
    Order(Seen),
    Match(u32),
}

/// Per-row working state: what `predict` saw, kept for `update`.
#[derive(Clone, Default)]
pub struct Scratch {
    /// Softmax numerators of the (biased) logits; 0 for masked symbols.
    e: Vec<f32>,
    /// Final weights handed to the CDF builder.
    weights: Vec<f32>,
    inv_z: f32,
    argmax: u32,
    ctx: usize,
    slots: Vec<usize>,
    inputs: Vec<Input>,
    w: Vec<f32>,
    /// Top candidate and where the APM read it.
    sse: Option<(u32, ApmAt)>,
}

/// All predictor state for one archive.
pub struct Ensemble {
    s: PredictorSettings,
    vocab: usize,
    num_symbols: usize,
    /// 0 for allowed vocabulary symbols, −∞ for masked ones (added to the logits).
    mask: Vec<f32>,
    bias: LogitBias,
    hist: History,
    ngram: Option<NGram>,
    matcher: Option<Matcher>,
    mixer: Mixer,
    apm: Apm,
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

/// Number of global mixer contexts.
const CONTEXTS: usize = matcher::LENGTH_BUCKETS * mixer::LLM_BUCKETS;

impl Ensemble {
    /// `num_symbols` = vocabulary + escapes; `masked` lists vocabulary ids held at the floor.
    pub fn new(s: &PredictorSettings, vocab: usize, num_symbols: usize, masked: &[u32]) -> Self {
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
            bias: LogitBias::new(vocab, s.bias_rate as f32 / (1u32 << 20) as f32),
            hist: History::new(HISTORY_CAP),
            ngram: s
                .ngram
                .then(|| NGram::new(s.ngram_order as usize, s.ngram_bits as u32)),
            matcher: s
                .matcher
                .then(|| Matcher::new(s.match_min as usize, s.match_bits as u32)),
            mixer: Mixer::new(
                CONTEXTS,
                &init,
                s.mixer_rate as f32 / (1u32 << 16) as f32,
                s.mixer_ctx && s.mixer_shared,
            ),
            apm: Apm::new(CONTEXTS, s.sse_rate as f32 / (1u32 << 16) as f32),
            order_slot0,
            match_slot0,
            s: s.clone(),
        }
    }

    /// Starts a group whose blocks have `lens` symbols.
    pub fn begin_group(&mut self, lens: &[usize]) {
        let restart = self.hist.begin_group(lens);
        if let Some(m) = &mut self.matcher {
            m.begin_group(lens.len(), restart);
        }
    }

    /// Distribution of stream `stream`'s next symbol given the model's logits for it.
    /// Reads shared state only, so the rows of one step can run in parallel.
    pub fn predict(&self, stream: usize, logits: &[f32], sc: &mut Scratch, cdf: &mut Cdf) {
        let v = self.vocab;
        sc.e.resize(v, 0.0);
        sc.weights.resize(self.num_symbols, 0.0);
        // Softmax of logits + bias over the allowed symbols. Written as flat passes over
        // 8-lane chunks so they vectorize; every sum is in the fixed lane order of `hsum`.
        let logits = &logits[..v];
        for (((x, &l), &b), &m) in
            sc.e.iter_mut()
                .zip(logits)
                .zip(self.bias.values())
                .zip(&self.mask)
        {
            *x = (l + b) + m;
        }
        let max = max_f32(&sc.e);
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
        let p_max = sc.inv_z; // e = 1 exactly at the argmax

        // Gather the other inputs.
        sc.inputs.clear();
        sc.slots.clear();
        sc.inputs.push(Input::Llm);
        sc.slots.push(0);
        let at = self.hist.pos(stream);
        if let Some(g) = &self.ngram {
            for k in 1..=g.max_order() {
                if let Some(seen) = self.hist.context_before(at, k).and_then(|c| g.lookup(c)) {
                    sc.inputs.push(Input::Order(seen));
                    sc.slots
                        .push(self.order_slot0 + (k - 1) * ngram::CONFIDENCES + seen.confidence());
                }
            }
        }
        let mut match_len = 0;
        if let Some((sym, len)) = self
            .matcher
            .as_ref()
            .and_then(|m| m.predict(&self.hist, stream))
        {
            match_len = len;
            sc.inputs.push(Input::Match(sym));
            sc.slots.push(self.match_slot0 + (sym == argmax) as usize);
        }
        let ctx = matcher::length_bucket(match_len) * mixer::LLM_BUCKETS + mixer::llm_bucket(p_max);
        sc.ctx = if self.s.mixer_ctx { ctx } else { 0 };

        // Mix.
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
                Input::Order(seen) => {
                    let f = wi / seen.total as f32;
                    for j in 0..seen.n as usize {
                        let sym = seen.syms[j] as usize;
                        if let Some(w) = sc.weights.get_mut(sym) {
                            *w += f * seen.counts[j] as f32;
                        }
                    }
                }
                Input::Match(sym) => {
                    if let Some(w) = sc.weights.get_mut(sym as usize) {
                        *w += wi;
                    }
                }
                Input::Llm => {}
            }
        }

        // Calibrate the top candidate.
        sc.sse = None;
        if self.s.sse {
            let mut top = argmax;
            for inp in &sc.inputs {
                let cands: &[u32] = match inp {
                    Input::Order(seen) => &seen.syms[..seen.n as usize],
                    Input::Match(sym) => std::slice::from_ref(sym),
                    Input::Llm => &[],
                };
                for &c in cands {
                    let ci = c as usize;
                    if ci < sc.weights.len() && sc.weights[ci] > sc.weights[top as usize] {
                        top = c;
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
        cdf.build_from_weights(&sc.weights);
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
        let order = self.ngram.as_ref().map_or(0, |g| g.max_order());
        let mut ctx: Vec<u32> = Vec::with_capacity(order + max);
        for k in (1..=order).rev() {
            if let Some(c) = self.hist.context_before(at, k) {
                ctx.extend_from_slice(c);
                break;
            }
        }
        let mut mptr = self.matcher.as_ref().and_then(|m| m.pointer(stream));
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
                if let Some(g) = &self.ngram {
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

    /// Learns from stream `stream`'s actual symbol `sym` (after its `predict`). Call in
    /// stream order within a step.
    pub fn update(&mut self, stream: usize, sym: u32, sc: &Scratch) {
        let y = sym as usize;
        // Mixer: wᵢ·qᵢ(y) per input.
        if sc.inputs.len() > 1 {
            let mut wq = [0f32; 16];
            let n = sc.inputs.len().min(wq.len());
            let mut p = 0f32;
            for (i, (inp, wi)) in sc.inputs.iter().zip(&mut wq[..n]).enumerate() {
                let q = match *inp {
                    Input::Llm => {
                        if y < self.vocab {
                            sc.e[y] * sc.inv_z
                        } else {
                            0.0
                        }
                    }
                    Input::Order(seen) => seen.count(sym) as f32 / seen.total as f32,
                    Input::Match(m) => (m == sym) as u32 as f32,
                };
                *wi = sc.w[i] * q;
                p += *wi;
            }
            self.mixer
                .update(sc.ctx, &sc.slots[..n], &sc.w[..n], &wq[..n], p);
        }
        if let Some((top, at)) = sc.sse {
            self.apm.update(at, top == sym);
        }
        if self.s.bias && y < self.vocab {
            self.bias.update(&sc.e, sc.inv_z, y);
        }
        let at = self.hist.pos(stream);
        if let Some(g) = &mut self.ngram {
            for k in 1..=g.max_order() {
                if let Some(c) = self.hist.context_before(at, k) {
                    g.update(c, sym);
                }
            }
        }
        self.hist.push(stream, sym);
        if let Some(m) = &mut self.matcher {
            m.update(&self.hist, stream, at, sym);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_reject_unknown() {
        for s in [PredictorSettings::default(), PredictorSettings::llm_only()] {
            assert_eq!(PredictorSettings::from_bytes(&s.to_bytes()).unwrap(), s);
        }
        let good = PredictorSettings::default().to_bytes();
        let mut b = good.clone();
        b[1] |= 0x80;
        assert!(PredictorSettings::from_bytes(&b).is_err());
        let mut b = good.clone();
        b[3] = 40;
        assert!(PredictorSettings::from_bytes(&b).is_err());
        assert!(PredictorSettings::from_bytes(&[1, 1]).is_err());
        assert!(PredictorSettings::from_bytes(&good[..5]).is_err());
        assert!(PredictorSettings::from_bytes(&[]).is_err());
    }

    #[test]
    fn masked_and_escape_symbols_get_the_floor() {
        let mut e = Ensemble::new(&PredictorSettings::llm_only(), 4, 6, &[0]);
        e.begin_group(&[3]);
        let mut cdf = Cdf::default();
        let mut sc = Scratch::default();
        e.predict(0, &[10.0, 1.0, 2.0, 3.0], &mut sc, &mut cdf);
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
            let mut e = Ensemble::new(&PredictorSettings::default(), vocab, vocab + 2, &[]);
            e.begin_group(&[text.len()]);
            let (mut sc, mut cdf) = (Scratch::default(), Cdf::default());
            let mut costs = Vec::new();
            for &s in &text {
                e.predict(0, &logits, &mut sc, &mut cdf);
                costs.push(cdf.cost_bits(s as usize));
                e.update(0, s, &sc);
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
        let mut e = Ensemble::new(&PredictorSettings::default(), vocab, vocab + 2, &[]);
        // "1 2 3 4 5 6 7" twice, then "1 2 3": the match model continues with 4 5 6 7.
        let text = [1u32, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5, 6, 7, 1, 2, 3];
        e.begin_group(&[text.len() + 8]);
        let (mut sc, mut cdf) = (Scratch::default(), Cdf::default());
        let (mut out, mut kinds) = (Vec::new(), Vec::new());
        e.draft(0, 4, vocab, &mut out, &mut kinds);
        assert!(out.is_empty(), "nothing seen, nothing guessed");
        for &s in &text {
            e.predict(0, &logits, &mut sc, &mut cdf);
            e.update(0, s, &sc);
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
            let mut ens =
                Ensemble::new(&s, tk.vocab_size(), tk.num_symbols(), &model.control_tokens);
            ens.begin_group(&[syms.len()]);
            let logits = vec![0f32; tk.vocab_size()];
            let (mut sc, mut cdf) = (Scratch::default(), Cdf::default());
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
                ens.predict(0, &logits, &mut sc, &mut cdf);
                ens.update(0, syms[t], &sc);
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
