//! Options a caller chooses and what a run reports.
//!
//! [`CompressOptions`] shape the archive; [`DecodeOptions`] only what a decoder accepts and
//! how fast it goes; [`Stats`] say what a run did.
use serde::{Deserialize, Serialize};

use super::speculate::speculation_on;
use crate::format::{self, ChecksumKind};
use crate::predict::PredictorSettings;
use crate::{Error, ErrorKind, Result};

/// Encoder settings (everything the decoder needs is derived from them into the header).
#[derive(Debug, Clone)]
pub struct CompressOptions {
    /// Target symbols per block; the input is cut into equal blocks of at most this many.
    pub block_tokens: u32,
    /// Blocks may grow to `block_stretch` × `block_tokens` symbols where that cuts an
    /// input of more than `streams` blocks into fewer, filling whole groups: every block
    /// starts with an empty context and costs its first few hundred symbols' worth of
    /// extra bits, while decoding runs `streams` blocks side by side either way. 1 (the
    /// library's default): blocks of at most `block_tokens`. The CLI's levels use 4.
    pub block_stretch: u32,
    /// Maximum blocks coded side by side.
    pub streams: u16,
    /// Context window in positions (start token included).
    pub window: u32,
    /// Positions kept when the window slides.
    pub keep: u32,
    /// How the window slides: [`WINDOW_REPREFILL`](crate::WINDOW_REPREFILL) or
    /// [`WINDOW_SHIFT`](crate::WINDOW_SHIFT).
    pub window_policy: u8,
    /// Maximum rows (positions × streams) per forward call while encoding. It changes the
    /// speed, never the archive.
    pub rows_per_call: usize,
    /// Which predictors run, and their sizes and rates.
    pub predictor: PredictorSettings,
    /// The checksum over the whole original: XXH64's low 32 bits (4 bytes, the default) or
    /// SHA-256 (32 bytes).
    pub checksum: ChecksumKind,
    /// Let the encoder apply a reversible text transform when the input qualifies (CRLF
    /// line ends coded as LF: see [`Transform::choose`](crate::Transform::choose)). It is
    /// recorded in the header; the decoder undoes it.
    pub transform: bool,
    /// Send the input's binary regions (control bytes, NULs, invalid UTF-8, long runs of
    /// one byte) to the classical coder with no model run, and keep the archive no larger
    /// than coding it all classically (see [`crate::regions`]). Off: every byte goes
    /// through the model.
    pub regions: bool,
    /// Record each symbol's cost under every predictor run ([`Stats::trace`]), for a
    /// report of where the bits go. The archive is the same either way; the trace costs
    /// 4 bytes per symbol per run.
    pub trace: bool,
}

impl Default for CompressOptions {
    fn default() -> Self {
        CompressOptions {
            block_tokens: 4096,
            block_stretch: 1,
            streams: 16,
            window: 1024,
            keep: 896,
            window_policy: format::WINDOW_SHIFT,
            rows_per_call: 256,
            predictor: PredictorSettings::default(),
            checksum: ChecksumKind::Xxh64,
            transform: true,
            regions: true,
            trace: false,
        }
    }
}

impl CompressOptions {
    /// The defaults for one model: [`Default`] plus the model's own choices (the active
    /// head for large vocabularies, [`Model::default_active_log2`](crate::Model::default_active_log2),
    /// and with it the continuous cache, which reads the hidden states the active head gives).
    pub fn for_model(model: &crate::Model) -> Self {
        let mut o = CompressOptions::default();
        o.predictor.active_log2 = model.default_active_log2();
        if o.predictor.active_log2 > 0 {
            o.predictor.cache_log2 = crate::predict::DEFAULT_CACHE_LOG2;
            o.predictor.active_ascii_log2 = crate::predict::DEFAULT_ACTIVE_ASCII_LOG2;
            o.predictor.probe_rate = crate::predict::DEFAULT_PROBE_RATE;
        }
        o
    }

    /// Checks the options before any work, with the header's own limits.
    pub(crate) fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::new(ErrorKind::InvalidOption(m.to_string())));
        if self.window < 2 || self.window > format::MAX_WINDOW {
            return bad(&format!("window must be 2..={}", format::MAX_WINDOW));
        }
        if self.keep < 1 || self.keep >= self.window {
            return bad("keep must be at least 1 and below the window");
        }
        if self.block_tokens == 0 || self.block_tokens > format::MAX_BLOCK_TOKENS {
            return bad(&format!(
                "block tokens must be 1..={}",
                format::MAX_BLOCK_TOKENS
            ));
        }
        if self.block_stretch == 0 {
            return bad("block stretch must be at least 1");
        }
        if self.streams == 0 || self.streams > format::MAX_STREAMS {
            return bad(&format!("streams must be 1..={}", format::MAX_STREAMS));
        }
        let p = &self.predictor;
        if p.active_log2 == 0 && (p.active_ascii_log2 > 0 || p.probe_rate > 0) {
            return bad("the ASCII starting set and the escape probe need the active head");
        }
        if p.active_ascii_log2 > crate::predict::MAX_ACTIVE_LOG2 {
            return bad("the ASCII starting set must be 0 (off) or 1..=24");
        }
        if p.cache_log2 > 0 {
            let range = crate::predict::CACHE_LOG2;
            if !range.contains(&p.cache_log2) {
                return bad(&format!(
                    "the cache size must be 0 (off) or {}..={}",
                    range.start(),
                    range.end()
                ));
            }
            if p.active_log2 == 0 {
                return bad("the continuous cache needs the active head (its hidden states)");
            }
            if p.cache_theta == 0 {
                return bad("the cache sharpness must be 1..=255");
            }
        }
        Ok(())
    }
}

/// Bytes a decoder may allocate for an archive's settings beyond the model itself, unless
/// the caller chooses otherwise. Documented in docs/FORMAT.md.
pub const DEFAULT_MEMORY_LIMIT: u64 = 16 << 30;

/// Decoder settings. None of them changes the output, only what the decoder accepts and
/// how fast it goes.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// Archives whose settings would need more memory than this, in bytes, beyond the
    /// model are refused before anything is allocated for them.
    pub memory_limit: u64,
    /// Feed guessed next symbols as extra rows when few streams are left (see the
    /// `speculate` module); the output is the same either way.
    pub speculate: bool,
}

impl Default for DecodeOptions {
    /// [`DEFAULT_MEMORY_LIMIT`], and speculation unless the environment variable
    /// `LMZIP_NO_SPECULATION` is set to anything but `0`.
    fn default() -> Self {
        DecodeOptions {
            memory_limit: DEFAULT_MEMORY_LIMIT,
            speculate: speculation_on(),
        }
    }
}

/// What a run did, for `-v` and `bench`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub original_bytes: u64,
    /// Decoding: bytes the transform put back (CRs before LFs), included in
    /// `original_bytes`; the rest is the content as coded.
    pub restored_bytes: u64,
    /// Original bytes in binary regions, coded by the classical coder (the rest went
    /// through the model).
    pub classic_bytes: u64,
    pub archive_bytes: u64,
    pub symbols: u64,
    pub blocks: u64,
    /// Symbols that stand for a byte the vocabulary lacks.
    pub escapes: u64,
    /// Seconds spent in the model's forward pass.
    pub model_seconds: f64,
    /// Seconds spent in the predictors (mixing, CDFs, updates) and the coder.
    pub predict_seconds: f64,
    /// Forward calls the decoder made, rows it guessed, and guesses that came true.
    pub calls: u64,
    pub guessed: u64,
    pub guessed_right: u64,
    /// Sum over symbols of their cost in bits under the coded distribution.
    pub ideal_bits: f64,
    /// Same, for each extra predictor variant measured alongside (`compress_measure`).
    pub variant_bits: Vec<f64>,
    /// A resumed run ([`crate::compress_resumable`], `lmzip bench --resume`): the groups
    /// of blocks that earlier, interrupted runs had finished, and the wall-clock seconds
    /// they spent on them (0 when nothing was resumed). The other counters include their
    /// work.
    pub resumed_groups: u64,
    pub resumed_seconds: f64,
    /// Each symbol's cost, when [`CompressOptions::trace`] asked for it. Not kept in
    /// checkpoints: a traced run is never resumed.
    #[serde(skip)]
    pub trace: Option<Trace>,
}

/// Where the bits went: the text as the model coded it (binary regions and the
/// transform's CRs left out), cut into symbols, and each symbol's cost under each
/// predictor run, the coded one first, then the measured variants in their order.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// The coded text, symbol after symbol.
    pub text: Vec<u8>,
    /// Bytes each symbol spells, in text order (they add up to `text.len()`).
    pub lens: Vec<u32>,
    /// Per run: bits of each symbol, in text order (the escape's extra bits included).
    pub bits: Vec<Vec<f32>>,
    /// Per run: its predictors ([`PredictorSettings::label`](crate::PredictorSettings::label)).
    pub labels: Vec<String>,
}

impl Stats {
    /// Adds another run's counts to these (the members of one input, compressed one after
    /// another). Variant measurements add up where both runs have them.
    pub fn absorb(&mut self, o: &Stats) {
        self.original_bytes += o.original_bytes;
        self.restored_bytes += o.restored_bytes;
        self.classic_bytes += o.classic_bytes;
        self.archive_bytes += o.archive_bytes;
        self.symbols += o.symbols;
        self.blocks += o.blocks;
        self.escapes += o.escapes;
        self.model_seconds += o.model_seconds;
        self.predict_seconds += o.predict_seconds;
        self.calls += o.calls;
        self.guessed += o.guessed;
        self.guessed_right += o.guessed_right;
        self.ideal_bits += o.ideal_bits;
        if self.variant_bits.is_empty() {
            self.variant_bits = o.variant_bits.clone();
        } else {
            self.variant_bits.truncate(o.variant_bits.len());
            for (a, b) in self.variant_bits.iter_mut().zip(&o.variant_bits) {
                *a += b;
            }
        }
        self.resumed_groups += o.resumed_groups;
        self.resumed_seconds += o.resumed_seconds;
    }
}

/// Progress callback: called with the number of original bytes done so far.
pub type Progress<'a> = &'a mut dyn FnMut(u64);

/// One input's result in a many-file run ([`crate::compress_each`],
/// [`crate::decompress_each`]): its output and figures, or why it failed.
pub type Outcome = crate::Result<(Vec<u8>, Stats)>;
