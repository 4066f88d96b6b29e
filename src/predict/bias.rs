//! Adaptive bias: a per-symbol correction of the logits, learned from the archive itself.
//!
//! The model's vocabulary statistics are those of its training data; a document repeats its
//! own names, words and markup. One additive term per vocabulary symbol, trained by the
//! gradient of the code length, shifts probability toward what this document uses. All
//! arithmetic is plain f32 in a fixed order, so encoder and decoder stay identical.
use serde::{Deserialize, Serialize};

use super::{Alphabet, At, Inputs, Predictor, Softmax};

/// One bias term per vocabulary symbol, added to the logits before the softmax.
#[derive(Serialize, Deserialize)]
pub struct LogitBias {
    b: Vec<f32>,
    rate: f32,
}

impl LogitBias {
    /// Zero biases; `rate` is the learning rate in logit units per symbol.
    pub fn new(vocab: usize, rate: f32) -> Self {
        LogitBias {
            b: vec![0.0; vocab],
            rate,
        }
    }

    /// The current biases, one per vocabulary symbol.
    pub fn values(&self) -> &[f32] {
        &self.b
    }

    /// One gradient step on −ln softmax(l + b)(y) with respect to b, which is p − onehot(y).
    /// `e` holds the softmax numerators of the biased logits and `inv_z` the reciprocal of
    /// their sum, exactly as the prediction used them.
    pub fn update(&mut self, e: &[f32], inv_z: f32, y: usize) {
        let r = self.rate * inv_z;
        for (b, &e) in self.b.iter_mut().zip(e) {
            *b -= r * e;
        }
        if let Some(b) = self.b.get_mut(y) {
            *b += self.rate;
        }
    }
}

impl Predictor for LogitBias {
    /// Shifts the logits by the biases: the softmax sees l + b.
    fn contribute(&self, _at: &At<'_>, inputs: &mut Inputs<'_>) {
        match inputs.alphabet {
            Alphabet::Full => {
                for (x, &b) in inputs.logits.iter_mut().zip(&self.b) {
                    *x += b;
                }
            }
            Alphabet::Active { ids, .. } => {
                for (x, &id) in inputs.logits.iter_mut().zip(ids) {
                    *x += self.b[id as usize];
                }
            }
        }
    }

    fn learn(&mut self, _at: &At<'_>, sym: u32, llm: &Softmax<'_>) {
        match llm.alphabet {
            // Escapes are not vocabulary symbols: the model never predicts them.
            Alphabet::Full => {
                if (sym as usize) < self.b.len() {
                    self.update(llm.e, llm.inv_z, sym as usize);
                }
            }
            // Over the active set, for a symbol in it: the same step on its members.
            Alphabet::Active { ids, .. } => {
                if llm.index.is_some() {
                    let r = self.rate * llm.inv_z;
                    for (&id, &e) in ids.iter().zip(llm.e) {
                        self.b[id as usize] -= r * e;
                    }
                    self.b[sym as usize] += self.rate;
                }
            }
        }
    }
}
