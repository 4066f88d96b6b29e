//! The architectures the engine runs, behind one face: load by the GGUF's architecture,
//! make caches, slide them, run forward calls.

use super::forward::Row;
use super::gemma3::Gemma3;
use super::kv_cache::{KvCache, MAX_CALL_ROWS};
use super::llama::Llama;
use super::weights::{model_err, Input, Mat};
use crate::{Error, Result};
use candle_core::quantized::gguf_file;

/// A loaded transformer.
pub enum Net {
    Llama(Llama),
    Gemma3(Gemma3),
}

/// Architectures this engine runs, for messages.
pub const SUPPORTED_ARCHITECTURES: &str = "llama (SmolLM2, Llama 2/3 style), gemma3";

impl Net {
    /// Loads a GGUF file by its `general.architecture`.
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        content: &gguf_file::Content,
        reader: &mut R,
        backend: u16,
    ) -> Result<Self> {
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        match arch.as_str() {
            "llama" => Ok(Net::Llama(Llama::from_gguf_with(content, reader, backend)?)),
            "gemma3" => Ok(Net::Gemma3(Gemma3::from_gguf_with(
                content, reader, backend,
            )?)),
            _ => Err(Error::unsupported(
                "architecture",
                format!("'{arch}'"),
                SUPPORTED_ARCHITECTURES,
            )),
        }
    }

    /// The architecture's GGUF name.
    pub fn arch(&self) -> &'static str {
        match self {
            Net::Llama(_) => "llama",
            Net::Gemma3(_) => "gemma3",
        }
    }

    /// Vocabulary size (rows of the output head).
    pub fn vocab(&self) -> usize {
        match self {
            Net::Llama(m) => m.cfg.vocab,
            Net::Gemma3(m) => m.cfg.vocab,
        }
    }

    /// Width of the hidden state (the output head's input).
    pub fn dim(&self) -> usize {
        match self {
            Net::Llama(m) => m.cfg.dim,
            Net::Gemma3(m) => m.cfg.dim,
        }
    }

    /// The output head's matrix.
    pub(crate) fn head(&self) -> &Mat {
        match self {
            Net::Llama(m) => m.head(),
            Net::Gemma3(m) => m.head(),
        }
    }

    /// Logits of every vocabulary id for `m` hidden states (`m × dim`): `m × vocab`.
    pub fn head_full(&self, hidden: &[f32], m: usize, logits: &mut [f32]) {
        let (d, v) = (self.dim(), self.vocab());
        let inp = Input::new(self.backend(), hidden, m, d);
        self.head().apply(&inp, m, v, d, logits);
    }

    /// Runs the rows through the model and writes the final normed hidden state of the
    /// rows listed in `want` (`want.len() × dim`), the output head's input; see
    /// [`Net::forward_select`] for how long calls are split.
    pub fn forward_hidden(
        &self,
        caches: &mut [KvCache],
        rows: &[Row],
        want: &[usize],
        hidden: &mut [f32],
    ) -> Result<()> {
        let d = self.dim();
        if hidden.len() != want.len() * d {
            return Err(Error::internal("forward: hidden buffer has the wrong size"));
        }
        self.split_calls(
            caches,
            rows,
            want,
            d,
            hidden,
            &mut |net, c, r, w, out| match net {
                Net::Llama(m) => m.forward_hidden(c, r, w, out),
                Net::Gemma3(m) => m.forward_hidden(c, r, w, out),
            },
        )
    }

    /// Numeric backend id the weights were loaded for.
    pub fn backend(&self) -> u16 {
        match self {
            Net::Llama(m) => m.backend,
            Net::Gemma3(m) => m.backend,
        }
    }

    /// Context length the model was trained for.
    pub fn context_length(&self) -> usize {
        match self {
            Net::Llama(m) => m.cfg.context_length,
            Net::Gemma3(m) => m.cfg.context_length,
        }
    }

    /// A cache for one stream holding up to `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        match self {
            Net::Llama(m) => m.new_cache(capacity),
            Net::Gemma3(m) => m.new_cache(capacity),
        }
    }

    /// Slides a full cache by window policy 1 (see [`KvCache::slide`]).
    pub fn slide(&self, cache: &mut KvCache, keep: usize) -> Result<()> {
        match self {
            Net::Llama(m) => m.slide(cache, keep),
            Net::Gemma3(m) => m.slide(cache, keep),
        }
    }

    /// Bytes one cache of `capacity` positions takes (for memory planning).
    pub fn cache_bytes(&self, capacity: usize) -> usize {
        match self {
            Net::Llama(m) => m.cache_bytes(capacity),
            Net::Gemma3(m) => m.cache_bytes(capacity),
        }
    }

    /// Runs the rows through the model and writes `rows.len() × vocab` logits.
    pub fn forward(&self, caches: &mut [KvCache], rows: &[Row], logits: &mut [f32]) -> Result<()> {
        let all: Vec<usize> = (0..rows.len()).collect();
        self.forward_select(caches, rows, &all, logits)
    }

    /// Runs the rows through the model and writes logits only for the rows listed in
    /// `want` (increasing indices into `rows`), `want.len() × vocab` values. A call with
    /// more rows of one stream than a sliding-window cache takes at once runs as several
    /// calls, each with the next rows of every stream: the same bits, since a row's result
    /// depends only on its stream's earlier rows.
    pub fn forward_select(
        &self,
        caches: &mut [KvCache],
        rows: &[Row],
        want: &[usize],
        logits: &mut [f32],
    ) -> Result<()> {
        let v = self.vocab();
        if logits.len() != want.len() * v {
            return Err(Error::internal("forward: logits buffer has the wrong size"));
        }
        self.split_calls(
            caches,
            rows,
            want,
            v,
            logits,
            &mut |net, c, r, w, out| match net {
                Net::Llama(m) => m.forward_select(c, r, w, out),
                Net::Gemma3(m) => m.forward_select(c, r, w, out),
            },
        )
    }

    /// Runs `call` over the rows, split into several calls when one stream has more rows
    /// than a sliding-window cache takes at once; `out` holds `width` values per wanted row.
    #[allow(clippy::type_complexity)]
    fn split_calls(
        &self,
        caches: &mut [KvCache],
        rows: &[Row],
        want: &[usize],
        width: usize,
        out: &mut [f32],
        call: &mut dyn FnMut(&Net, &mut [KvCache], &[Row], &[usize], &mut [f32]) -> Result<()>,
    ) -> Result<()> {
        let mut nth = vec![0usize; caches.len()];
        let mut part = Vec::with_capacity(rows.len());
        for r in rows {
            let c = nth
                .get_mut(r.stream)
                .ok_or_else(|| model_err("forward: bad stream"))?;
            part.push(*c / MAX_CALL_ROWS);
            *c += 1;
        }
        let parts = part.iter().copied().max().map_or(0, |p| p + 1);
        if parts <= 1 || !caches.iter().any(|c| c.has_local()) {
            return call(self, caches, rows, want, out);
        }
        let v = width;
        for p in 0..parts {
            let idx: Vec<usize> = (0..rows.len()).filter(|&i| part[i] == p).collect();
            let sub: Vec<Row> = idx.iter().map(|&i| rows[i]).collect();
            // (position in `want`, position in this part) of the wanted rows in this part.
            let picks: Vec<(usize, usize)> = want
                .iter()
                .enumerate()
                .filter_map(|(w, &i)| idx.binary_search(&i).ok().map(|j| (w, j)))
                .collect();
            let sub_want: Vec<usize> = picks.iter().map(|&(_, j)| j).collect();
            let mut sub_out = vec![0f32; sub_want.len() * v];
            call(self, caches, &sub, &sub_want, &mut sub_out)?;
            for (k, &(w, _)) in picks.iter().enumerate() {
                out[w * v..(w + 1) * v].copy_from_slice(&sub_out[k * v..(k + 1) * v]);
            }
        }
        Ok(())
    }
}
