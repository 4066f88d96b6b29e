//! The chance that the next symbol is new to the archive: the escape of the active set.
//!
//! With the active head, each step's distribution covers only the symbols the archive has
//! shown so far (plus a fixed starting set) and one escape symbol; a symbol outside the set
//! is coded as the escape, then from the language model's distribution over the rest. The
//! escape's probability is a logistic mix, trained online, of what predicts a new symbol:
//! how often new symbols came recently, whether this stream's last symbol was new, how
//! sure and how spread the language model is within the set (top probability, entropy),
//! how large its logits are (the set's log-partition and top logit, against their running
//! means: a model reaching for a symbol outside the set leaves the set's logits low), and
//! an adaptive rate per context of the first three. With settings version 5, a linear
//! probe on the hidden state (scaled to unit RMS) adds its own term: the hidden state
//! says what kind of symbol comes next (a name, a rare word), which the in-set statistics
//! see only after the fact (measured on the first 40 KB of alice29.txt, the language
//! model alone: −0.9%). All arithmetic is f32 in a fixed order with our own exp/ln; both
//! directions update identically.
use serde::{Deserialize, Serialize};

use super::mixer::{llm_bucket, LLM_BUCKETS};
use crate::math::{ln_f32, squash, stretch};

/// Buckets of the recent rate of new symbols.
const RATE_BUCKETS: usize = 5;
/// Contexts of the adaptive table: recent rate × last symbol new × LLM confidence.
const CONTEXTS: usize = RATE_BUCKETS * 2 * LLM_BUCKETS;
/// The table's adaptive rate's floor, 1/LIMIT.
const LIMIT: f32 = 255.0;
/// Decay of the recent rate and of the running means per coded symbol.
const RECENT: f32 = 1.0 / 64.0;
const MEAN: f32 = 1.0 / 256.0;
/// Learning rate of the logistic mix.
const RATE: f32 = 0.05;
/// Bounds on the escape probability.
const P_MIN: f32 = 1.0 / 16384.0;
const P_MAX: f32 = 0.75;
/// Inputs of the mix: bias, recent rate, table, top probability, log-partition, top
/// logit, entropy, last symbol new.
const INPUTS: usize = 8;

/// What the language model said within the set, as the escape model reads it.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetView {
    /// Top probability within the set.
    pub p_max: f32,
    /// The set's log-partition of the (biased) logits: ln Σ exp(x).
    pub lse: f32,
    /// The top logit.
    pub max: f32,
    /// Entropy of the distribution within the set, in nats.
    pub entropy: f32,
    /// The hidden-state probe's logit (0 without a probe).
    pub probe: f32,
}

/// The escape model's state.
#[derive(Serialize, Deserialize)]
pub struct Novelty {
    p: Vec<f32>,
    n: Vec<f32>,
    w: [f32; INPUTS],
    /// Decayed share of new symbols among the last symbols coded (all streams).
    recent: f32,
    /// Running means of the log-partition and the top logit.
    mean_lse: f32,
    mean_max: f32,
    /// Per stream: whether its last symbol was new.
    last_new: Vec<bool>,
    /// Linear probe on the hidden state (empty: off), and its learning rate.
    probe_w: Vec<f32>,
    probe_rate: f32,
}

/// The probe's input: `h` scaled to unit RMS, into `out`.
pub fn probe_input(h: &[f32], out: &mut Vec<f32>) {
    let mut ss = 0f32;
    for &x in h {
        ss += x * x;
    }
    let r = if ss > 0.0 {
        1.0 / (ss / h.len() as f32).sqrt()
    } else {
        0.0
    };
    out.clear();
    out.extend(h.iter().map(|&x| x * r));
}

/// Where the escape probability was read, for the update.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoveltyAt {
    ctx: usize,
    x: [f32; INPUTS],
    p: f32,
    lse: f32,
    max: f32,
}

fn rate_bucket(r: f32) -> usize {
    match r {
        r if r < 1.0 / 256.0 => 0,
        r if r < 1.0 / 64.0 => 1,
        r if r < 1.0 / 16.0 => 2,
        r if r < 1.0 / 4.0 => 3,
        _ => 4,
    }
}

impl Novelty {
    /// Without the hidden-state probe.
    pub fn new() -> Self {
        Self::with_probe(0.0)
    }

    /// With the hidden-state probe at learning rate `probe_rate` (0: off).
    pub fn with_probe(probe_rate: f32) -> Self {
        let mut w = [0f32; INPUTS];
        // Start from the table's estimate alone (it learns fastest).
        w[2] = 1.0;
        Novelty {
            p: vec![0.05; CONTEXTS],
            n: vec![0.0; CONTEXTS],
            w,
            recent: 0.25,
            mean_lse: 0.0,
            mean_max: 0.0,
            last_new: Vec::new(),
            probe_w: Vec::new(),
            probe_rate,
        }
    }

    /// Whether the hidden-state probe is on.
    pub fn probing(&self) -> bool {
        self.probe_rate > 0.0
    }

    /// The probe's logit for input `x` ([`probe_input`]).
    pub fn probe(&self, x: &[f32]) -> f32 {
        let mut z = 0f32;
        for (w, x) in self.probe_w.iter().zip(x) {
            z += *w * *x;
        }
        z
    }

    /// The escape probability for `stream`'s next symbol, given what the language model
    /// said within the set.
    pub fn predict(&self, stream: usize, v: &SetView) -> (f32, NoveltyAt) {
        let last = self.last_new.get(stream).copied().unwrap_or(true);
        let ctx =
            (rate_bucket(self.recent) * 2 + last as usize) * LLM_BUCKETS + llm_bucket(v.p_max);
        let clampp = |p: f32| p.clamp(1e-4, 1.0 - 1e-4);
        let x = [
            1.0,
            stretch(clampp(self.recent)) * 0.25,
            stretch(clampp(self.p[ctx])),
            stretch(clampp(v.p_max)) * 0.25,
            (v.lse - self.mean_lse) * 0.125,
            (v.max - self.mean_max) * 0.125,
            v.entropy * (1.0 / 3.0),
            last as u32 as f32,
        ];
        let mut z = v.probe;
        for (w, x) in self.w.iter().zip(&x) {
            z += *w * *x;
        }
        let p = squash(z.clamp(-30.0, 30.0)).clamp(P_MIN, P_MAX);
        let at = NoveltyAt {
            ctx,
            x,
            p,
            lse: v.lse,
            max: v.max,
        };
        (p, at)
    }

    /// Learns whether `stream`'s symbol was new.
    pub fn update(&mut self, stream: usize, at: &NoveltyAt, new: bool, probe: &[f32]) {
        let y = if new { 1.0 } else { 0.0 };
        if !probe.is_empty() {
            self.probe_w.resize(probe.len(), 0.0);
            let e = (y - at.p) * self.probe_rate / probe.len() as f32;
            for (w, &x) in self.probe_w.iter_mut().zip(probe) {
                *w += e * x;
            }
        }
        let c = at.ctx;
        self.n[c] = (self.n[c] + 1.0).min(LIMIT);
        self.p[c] += (y - self.p[c]) / (self.n[c] + 0.5);
        let err = (y - at.p) * RATE;
        for (w, x) in self.w.iter_mut().zip(&at.x) {
            *w += err * *x;
        }
        self.recent += (y - self.recent) * RECENT;
        if self.mean_lse == 0.0 && self.mean_max == 0.0 {
            (self.mean_lse, self.mean_max) = (at.lse, at.max);
        } else {
            self.mean_lse += (at.lse - self.mean_lse) * MEAN;
            self.mean_max += (at.max - self.mean_max) * MEAN;
        }
        if self.last_new.len() <= stream {
            self.last_new.resize(stream + 1, true);
        }
        self.last_new[stream] = new;
    }
}

impl Default for Novelty {
    fn default() -> Self {
        Self::new()
    }
}

/// The entropy in nats of the distribution `e / Σe` (`inv_z` = 1/Σe), summed in order:
/// H = −Σ p·ln p over the nonzero terms.
pub fn entropy(e: &[f32], inv_z: f32) -> f32 {
    let mut h = 0f32;
    for &x in e {
        if x > 0.0 {
            let p = x * inv_z;
            h -= p * ln_f32(p);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(p_max: f32) -> SetView {
        SetView {
            p_max,
            lse: 20.0,
            max: 19.0,
            entropy: 2.0,
            probe: 0.0,
        }
    }

    #[test]
    fn learns_the_rate_of_new_symbols() {
        let mut m = Novelty::new();
        for i in 0..2000 {
            let (_, at) = m.predict(0, &view(0.5));
            m.update(0, &at, i % 50 == 0, &[]);
        }
        let (p, _) = m.predict(0, &view(0.5));
        assert!(p > 0.003 && p < 0.08, "{p}");
        // A run of new symbols raises it.
        for _ in 0..200 {
            let (_, at) = m.predict(0, &view(0.5));
            m.update(0, &at, true, &[]);
        }
        assert!(m.predict(0, &view(0.5)).0 > 0.3);
    }

    #[test]
    fn entropy_of_uniform_and_certain() {
        let h = entropy(&[1.0; 8], 1.0 / 8.0);
        assert!((h - 8f32.ln()).abs() < 1e-5, "{h}");
        assert_eq!(entropy(&[1.0, 0.0], 1.0), 0.0);
    }
}
