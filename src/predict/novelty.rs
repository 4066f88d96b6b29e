//! The chance that the next symbol is new to the archive: the escape of the active set.
//!
//! With the active head, each step's distribution covers only the symbols the archive has
//! shown so far (plus a fixed starting set) and one escape symbol; a symbol outside the set
//! is coded as the escape, then from the language model's distribution over the rest. The
//! escape's probability is learned here, per context: how often new symbols came recently,
//! whether this stream's last symbol was new, and how sure the language model is within the
//! set. All arithmetic is f32 in a fixed order; both directions update identically.

use super::mixer::{llm_bucket, LLM_BUCKETS};

/// Buckets of the recent rate of new symbols.
const RATE_BUCKETS: usize = 5;
/// Contexts: recent rate × last symbol new × the language model's confidence.
const CONTEXTS: usize = RATE_BUCKETS * 2 * LLM_BUCKETS;
/// The adaptive rate's floor, 1/LIMIT: a context keeps learning as the archive changes.
const LIMIT: f32 = 255.0;
/// Decay of the recent rate per coded symbol.
const RECENT: f32 = 1.0 / 64.0;
/// Bounds on the escape probability.
const P_MIN: f32 = 1.0 / 16384.0;
const P_MAX: f32 = 0.75;

/// The escape model's state.
pub struct Novelty {
    p: Vec<f32>,
    n: Vec<f32>,
    /// Decayed share of new symbols among the last symbols coded (all streams).
    recent: f32,
    /// Per stream: whether its last symbol was new.
    last_new: Vec<bool>,
}

/// Where the escape probability was read, for the update.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoveltyAt {
    ctx: usize,
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
    pub fn new() -> Self {
        Novelty {
            p: vec![0.05; CONTEXTS],
            n: vec![0.0; CONTEXTS],
            recent: 0.25,
            last_new: Vec::new(),
        }
    }

    /// The escape probability for `stream`'s next symbol, given the language model's top
    /// probability within the active set.
    pub fn predict(&self, stream: usize, p_max: f32) -> (f32, NoveltyAt) {
        let last = self.last_new.get(stream).copied().unwrap_or(true) as usize;
        let ctx = (rate_bucket(self.recent) * 2 + last) * LLM_BUCKETS + llm_bucket(p_max);
        (self.p[ctx].clamp(P_MIN, P_MAX), NoveltyAt { ctx })
    }

    /// Learns whether `stream`'s symbol was new.
    pub fn update(&mut self, stream: usize, at: NoveltyAt, new: bool) {
        let y = if new { 1.0 } else { 0.0 };
        let c = at.ctx;
        self.n[c] = (self.n[c] + 1.0).min(LIMIT);
        self.p[c] += (y - self.p[c]) / (self.n[c] + 0.5);
        self.recent += (y - self.recent) * RECENT;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_the_rate_of_new_symbols() {
        let mut m = Novelty::new();
        for i in 0..2000 {
            let (_, at) = m.predict(0, 0.5);
            m.update(0, at, i % 50 == 0);
        }
        let (p, _) = m.predict(0, 0.5);
        assert!(p > 0.005 && p < 0.06, "{p}");
        // A run of new symbols raises it.
        for _ in 0..200 {
            let (_, at) = m.predict(0, 0.5);
            m.update(0, at, true);
        }
        assert!(m.predict(0, 0.5).0 > 0.3);
    }
}
