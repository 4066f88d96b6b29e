//! Mixing: a learned, context-selected linear mixture, and an APM/SSE stage.
//!
//! The mixture of the predictors' distributions is learned online; the APM recalibrates
//! the probability of the most likely symbol.
//!
//! The mixture is p(s) = Σᵢ wᵢ qᵢ(s) with w = softmax(u) over the inputs present at this
//! step. Each input's weight u is looked up by (global context, input slot): the global
//! context is a small state (match-length bucket × how confident the language model is),
//! the slot names the input and its own confidence (e.g. an n-gram order and how often its
//! context was seen). Gradient steps on the code length, −log p(y), update the looked-up
//! weights. All arithmetic is f32 in a fixed order with our own exp/ln.
use serde::{Deserialize, Serialize};

use crate::math::{exp_f32, squash, stretch};

/// Language-model confidence buckets (from its top probability).
pub const LLM_BUCKETS: usize = 6;

/// Bucket of the language model's top probability.
pub fn llm_bucket(p_max: f32) -> usize {
    match p_max {
        p if p < 0.2 => 0,
        p if p < 0.4 => 1,
        p if p < 0.6 => 2,
        p if p < 0.8 => 3,
        p if p < 0.95 => 4,
        _ => 5,
    }
}

/// Weights for `contexts` global contexts × `slots` input slots.
///
/// With `shared`, a context's log-weight is a shared per-slot value plus the context's own
/// offset, and a step moves both: every context learns from every step at once (what one
/// global weight set does well on small inputs) while the offsets still specialise.
#[derive(Serialize, Deserialize)]
pub struct Mixer {
    slots: usize,
    u: Vec<f32>,
    /// Shared per-slot log-weights (empty when not shared).
    g: Vec<f32>,
    rate: f32,
}

/// Log-weights stay in this range so one weight can never swamp the others for good.
const U_LIMIT: f32 = 16.0;

impl Mixer {
    /// `init[slot]` is the starting log-weight of each slot (same in every context).
    pub fn new(contexts: usize, init: &[f32], rate: f32, shared: bool) -> Self {
        let slots = init.len();
        let mut u = Vec::with_capacity(contexts * slots);
        for _ in 0..contexts {
            if shared {
                u.extend(std::iter::repeat_n(0.0, slots));
            } else {
                u.extend_from_slice(init);
            }
        }
        let g = if shared { init.to_vec() } else { Vec::new() };
        Mixer { slots, u, g, rate }
    }

    /// Log-weight of `slot` in the context row `row`.
    fn value(&self, row: &[f32], slot: usize) -> f32 {
        match self.g.get(slot) {
            Some(&g) => g + row[slot],
            None => row[slot],
        }
    }

    /// Normalized weights of the inputs `slots` in context `ctx`, into `w`.
    pub fn weights(&self, ctx: usize, slots: &[usize], w: &mut Vec<f32>) {
        w.clear();
        let row = &self.u[ctx * self.slots..(ctx + 1) * self.slots];
        let mut max = f32::NEG_INFINITY;
        for &s in slots {
            max = max.max(self.value(row, s));
        }
        let mut sum = 0f32;
        for &s in slots {
            let e = exp_f32(self.value(row, s) - max);
            w.push(e);
            sum += e;
        }
        let inv = 1.0 / sum;
        for x in w.iter_mut() {
            *x *= inv;
        }
    }

    /// One gradient step on −ln p(y): `wq[i]` = wᵢ·qᵢ(y), `p` = Σ wᵢ·qᵢ(y).
    /// ∂(−ln p)/∂uᵢ = wᵢ − wᵢqᵢ(y)/p, so each term lies in [−1, 1].
    pub fn update(&mut self, ctx: usize, slots: &[usize], w: &[f32], wq: &[f32], p: f32) {
        if p <= 0.0 || p.is_nan() {
            return;
        }
        let row = &mut self.u[ctx * self.slots..(ctx + 1) * self.slots];
        for ((&s, &wi), &wqi) in slots.iter().zip(w).zip(wq) {
            let g = wqi / p - wi;
            row[s] = (row[s] + self.rate * g).clamp(-U_LIMIT, U_LIMIT);
            if let Some(shared) = self.g.get_mut(s) {
                *shared = (*shared + self.rate * g).clamp(-U_LIMIT, U_LIMIT);
            }
        }
    }
}

/// Interpolation points of the APM over the stretched domain [−8, 8].
const APM_POINTS: usize = 33;

/// Adaptive probability map for one binary event ("the next symbol is the top candidate"):
/// maps (context, stretched probability) to a learned probability.
#[derive(Serialize, Deserialize)]
pub struct Apm {
    t: Vec<f32>,
    rate: f32,
}

/// Where a probability fell in the APM table, for the update.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApmAt {
    index: usize,
    frac: f32,
}

impl Apm {
    pub fn new(contexts: usize, rate: f32) -> Self {
        let mut t = Vec::with_capacity(contexts * APM_POINTS);
        for _ in 0..contexts {
            for j in 0..APM_POINTS {
                t.push(squash(j as f32 * 0.5 - 8.0));
            }
        }
        Apm { t, rate }
    }

    /// The refined probability and where it was read.
    pub fn refine(&self, ctx: usize, p: f32) -> (f32, ApmAt) {
        let s = stretch(p).clamp(-7.999, 7.999);
        let pos = (s + 8.0) * 2.0;
        let j = pos as usize; // pos ≥ 0, so truncation is floor
        let frac = pos - j as f32;
        let index = ctx * APM_POINTS + j;
        let out = self.t[index] * (1.0 - frac) + self.t[index + 1] * frac;
        (out, ApmAt { index, frac })
    }

    /// Moves the two points read toward the outcome.
    pub fn update(&mut self, at: ApmAt, hit: bool) {
        let y = if hit { 1.0 } else { 0.0 };
        let (a, b) = (at.index, at.index + 1);
        self.t[a] += self.rate * (1.0 - at.frac) * (y - self.t[a]);
        self.t[b] += self.rate * at.frac * (y - self.t[b]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixer_learns_to_trust_the_right_input() {
        let mut m = Mixer::new(1, &[0.0, 0.0], 0.05, false);
        let mut w = Vec::new();
        for _ in 0..200 {
            m.weights(0, &[0, 1], &mut w);
            // Input 0 gives the outcome 0.9, input 1 gives it 0.1.
            let wq = [w[0] * 0.9, w[1] * 0.1];
            m.update(0, &[0, 1], &w.clone(), &wq, wq[0] + wq[1]);
        }
        m.weights(0, &[0, 1], &mut w);
        assert!(w[0] > 0.9, "{w:?}");
    }

    #[test]
    fn shared_weights_carry_what_one_context_learned_to_the_others() {
        let mut m = Mixer::new(2, &[0.0, 0.0], 0.05, true);
        let mut w = Vec::new();
        for _ in 0..200 {
            m.weights(0, &[0, 1], &mut w);
            let wq = [w[0] * 0.9, w[1] * 0.1];
            m.update(0, &[0, 1], &w.clone(), &wq, wq[0] + wq[1]);
        }
        // Context 1 was never trained, yet starts from the shared weights.
        m.weights(1, &[0, 1], &mut w);
        assert!(w[0] > 0.8, "{w:?}");
    }

    #[test]
    fn apm_learns_a_miscalibration() {
        let mut a = Apm::new(1, 0.02);
        // Events claimed at 0.5 happen 90% of the time.
        for i in 0..2000 {
            let (_, at) = a.refine(0, 0.5);
            a.update(at, i % 10 != 0);
        }
        let (p, _) = a.refine(0, 0.5);
        assert!((p - 0.9).abs() < 0.05, "{p}");
    }
}
