//! One predictor configuration run over an archive, with the coder's CDFs it builds.
//!
//! A run holds its ensemble, per-row scratch, the CDFs built from the ensemble's weights,
//! and the ideal code length so far.

use crate::coder::Cdf;
use crate::model::Model;
use crate::predict::{Ensemble, PredictorSettings, Scratch};
use rayon::prelude::*;

/// One predictor variant: the coded one, or one measured alongside (`compress_measure`).
pub(crate) struct PredictorRun {
    ens: Ensemble,
    scratch: Vec<Scratch>,
    cdfs: Vec<Cdf>,
    bits: f64,
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
            ),
            scratch: vec![Scratch::default(); streams],
            cdfs: vec![Cdf::default(); streams],
            bits: 0.0,
        }
    }

    /// Starts a group whose blocks have `lens` symbols.
    pub(crate) fn begin_group(&mut self, lens: &[usize]) {
        self.ens.begin_group(lens);
    }

    /// The coder's tables for one step, from each stream's logits: `items[i]` = (stream,
    /// logits) gives [`PredictorRun::cdf`]`(i)`. The rows run in parallel; each reads only
    /// shared state, so the result does not depend on the thread count.
    pub(crate) fn predict(&mut self, items: &[(usize, &[f32])]) {
        let ens = &self.ens;
        self.scratch[..items.len()]
            .par_iter_mut()
            .zip(self.cdfs[..items.len()].par_iter_mut())
            .zip(items.par_iter())
            .for_each(|((sc, cdf), &(s, logits))| {
                ens.predict(s, logits, sc);
                cdf.build_from_weights(sc.weights());
            });
    }

    /// The table of the last step's `i`-th item.
    pub(crate) fn cdf(&self, i: usize) -> &Cdf {
        &self.cdfs[i]
    }

    /// Learns the step's symbols (of `streams`, in order) and adds their cost.
    pub(crate) fn update(&mut self, streams: impl Iterator<Item = usize>, syms: &[u32]) {
        for (i, (s, &y)) in streams.zip(syms).enumerate() {
            self.bits += self.cdfs[i].cost_bits(y as usize);
            self.ens.update(s, y, &self.scratch[i]);
        }
    }

    /// Sum over the symbols learned of their cost in bits under the coded tables.
    pub(crate) fn bits(&self) -> f64 {
        self.bits
    }

    /// The ensemble, for guesses of the next symbols ([`Ensemble::draft`]).
    pub(crate) fn ensemble(&self) -> &Ensemble {
        &self.ens
    }
}
