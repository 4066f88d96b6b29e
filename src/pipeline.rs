//! Compression and decompression: blocks of symbols coded in lock-step groups.
//!
//! The input is tokenized once, cut into blocks of at most `block_tokens` symbols, and the
//! blocks are taken `streams` at a time as a group. Inside a group every block is an
//! independent stream with its own cache and range coder; streams advance one position per
//! step, and within a step they are handled in stream order — the order both directions
//! use, so stateful predictors stay in sync. The encoder knows every symbol in advance and
//! scores many positions per forward call; the decoder scores one per stream per step, plus,
//! when a step has few streams, rows for guessed next symbols that save later calls when
//! the guesses come true (see `Ahead`). The engine's results do not depend on that split
//! (see `engine`).

use crate::coder::{BlockDecoder, BlockEncoder, Cdf};
use crate::engine::{backend_name, KvCache, Row};
use crate::format::{self, ArchiveTally, BlockEntry, Frame, Header, Trailer};
use crate::model::identity::{describe_identity, hex};
use crate::model::Model;
use crate::predict::{DraftKind, Ensemble, PredictorSettings, Scratch, DRAFT_KINDS};
use crate::{Error, ErrorKind, Result};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

/// Encoder settings (everything the decoder needs is derived from them into the header).
#[derive(Debug, Clone)]
pub struct CompressOptions {
    /// Target symbols per block; the input is cut into equal blocks of at most this many.
    pub block_tokens: u32,
    /// Maximum blocks coded side by side.
    pub streams: u16,
    /// Context window in positions (start token included).
    pub window: u32,
    /// Positions kept when the window slides.
    pub keep: u32,
    /// How the window slides: [`format::WINDOW_REPREFILL`] or [`format::WINDOW_SHIFT`].
    pub window_policy: u8,
    /// Maximum rows (positions × streams) per forward call while encoding.
    pub rows_per_call: usize,
    pub predictor: PredictorSettings,
}

impl Default for CompressOptions {
    fn default() -> Self {
        CompressOptions {
            block_tokens: 4096,
            streams: 16,
            window: 1024,
            keep: 896,
            window_policy: format::WINDOW_SHIFT,
            rows_per_call: 256,
            predictor: PredictorSettings::default(),
        }
    }
}

/// What a run did, for `-v` and `bench`.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub original_bytes: u64,
    pub archive_bytes: u64,
    pub symbols: u64,
    pub blocks: u64,
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
}

/// Progress callback: called with the number of original bytes done so far.
pub type Progress<'a> = &'a mut dyn FnMut(u64);

fn header_for(model: &Model, opts: &CompressOptions, streams: u16) -> Header {
    Header {
        model_sha256: model.sha256,
        tokenizer_hash: model.tokenizer.identity(),
        backend: model.llama.backend,
        num_symbols: model.tokenizer.num_symbols() as u32,
        block_tokens: opts.block_tokens,
        streams,
        window_policy: opts.window_policy,
        start_token: model.start_token,
        window: opts.window,
        keep: opts.keep,
        predictor: opts.predictor.to_bytes(),
    }
}

/// Block lengths: `n` symbols cut into the fewest blocks of at most `max` symbols, as
/// equal as possible (so the streams of a group finish together).
pub fn layout(n: usize, max: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let blocks = n.div_ceil(max.max(1));
    let (q, r) = (n / blocks, n % blocks);
    (0..blocks).map(|i| q + (i < r) as usize).collect()
}

/// Symbols fed to the model are vocabulary ids; an escape is fed as the start token, a
/// fixed choice both directions make (the model has no embedding for escapes).
fn model_input(sym: u32, vocab: usize, start: u32) -> u32 {
    if (sym as usize) < vocab {
        sym
    } else {
        start
    }
}

/// The window rule, shared by both directions. To predict a block's symbol `t`, the
/// stream's cache must hold the start token and symbols `..t` — at most `window` entries.
/// When one more would not fit:
/// * policy [`format::WINDOW_REPREFILL`]: the cache is emptied and rebuilt from the start
///   token and the last `keep − 1` symbols, at positions `0..keep`;
/// * policy [`format::WINDOW_SHIFT`]: the cache keeps the start token and its newest
///   `keep − 1` entries as they are (`KvCache::slide`); symbol `t − 1` goes in at position
///   `t`, as it would without a window.
///
/// Pushes the rows that prepare the prediction of symbol `t` (`prev` = the block's symbols
/// before `t`) and returns whether the cache must be emptied (policy 0) or slid (policy 1)
/// first.
#[allow(clippy::too_many_arguments)] // all plain values of one rule; a struct adds nothing
fn rows_for(
    stream: usize,
    prev: &[u32],
    cache_len: usize,
    window: usize,
    keep: usize,
    policy: u8,
    vocab: usize,
    start: u32,
    rows: &mut Vec<Row>,
) -> bool {
    let t = prev.len();
    if t == 0 {
        rows.push(Row {
            stream,
            token: start,
            pos: 0,
        });
        return false;
    }
    let full = cache_len >= window;
    if policy == format::WINDOW_SHIFT {
        rows.push(Row {
            stream,
            token: model_input(prev[t - 1], vocab, start),
            pos: t,
        });
        return full;
    }
    if !full {
        rows.push(Row {
            stream,
            token: model_input(prev[t - 1], vocab, start),
            pos: cache_len,
        });
        return false;
    }
    rows.push(Row {
        stream,
        token: start,
        pos: 0,
    });
    for (j, &sym) in prev[t - (keep - 1)..].iter().enumerate() {
        rows.push(Row {
            stream,
            token: model_input(sym, vocab, start),
            pos: j + 1,
        });
    }
    true
}

/// Cache length after [`rows_for`] asked for a reset/slide and its rows ran.
fn len_after_slide(policy: u8, keep: usize) -> usize {
    if policy == format::WINDOW_SHIFT {
        keep + 1
    } else {
        keep
    }
}

/// The engine state of one archive: caches, logits and per-row scratch.
struct Engine<'m> {
    model: &'m Model,
    caches: Vec<KvCache>,
    logits: Vec<f32>,
}

impl<'m> Engine<'m> {
    /// No caches yet: each group sizes them for what it actually holds (see `prepare`), so a
    /// header that declares many streams or a long window costs nothing until frames
    /// carrying that many blocks arrive.
    fn new(model: &'m Model) -> Self {
        Engine {
            model,
            caches: Vec::new(),
            logits: Vec::new(),
        }
    }

    /// Caches for `n` streams of at least `cap` positions, emptied.
    fn prepare(&mut self, n: usize, cap: usize) {
        if self.caches.len() < n || self.caches.first().is_some_and(|c| c.capacity() < cap) {
            let cap = cap.max(self.caches.first().map_or(0, |c| c.capacity()));
            self.caches = (0..n.max(self.caches.len()))
                .map(|_| self.model.llama.new_cache(cap))
                .collect();
        }
        self.reset();
    }

    fn reset(&mut self) {
        for c in &mut self.caches {
            c.clear();
        }
    }

    /// Makes room in stream `s`'s full cache by the window policy (see [`rows_for`]).
    fn make_room(&mut self, s: usize, policy: u8, keep: usize) -> Result<()> {
        if policy == format::WINDOW_SHIFT {
            self.model.llama.slide(&mut self.caches[s], keep)
        } else {
            self.caches[s].clear();
            Ok(())
        }
    }

    /// Runs `rows`; logits for the rows in `want` land in `self.logits`, in that order.
    fn run(&mut self, rows: &[Row], want: &[usize], stats: &mut Stats) -> Result<()> {
        let vocab = self.model.llama.cfg.vocab;
        self.logits.resize(want.len() * vocab, 0.0);
        let t = std::time::Instant::now();
        self.model
            .llama
            .forward_select(&mut self.caches, rows, want, &mut self.logits)?;
        stats.model_seconds += t.elapsed().as_secs_f64();
        Ok(())
    }

    fn logits(&self, i: usize) -> &[f32] {
        let v = self.model.llama.cfg.vocab;
        &self.logits[i * v..(i + 1) * v]
    }
}

/// One predictor configuration with its per-row scratch and CDFs.
struct Lane {
    ens: Ensemble,
    scratch: Vec<Scratch>,
    cdfs: Vec<Cdf>,
    bits: f64,
}

impl Lane {
    fn new(model: &Model, settings: &PredictorSettings, streams: usize) -> Self {
        let tk = &model.tokenizer;
        Lane {
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

    /// Distributions for one step: `items` = (stream, index into the engine's logits).
    fn predict(&mut self, engine: &Engine, items: &[(usize, usize)]) {
        let rows: Vec<(usize, &[f32])> = items
            .iter()
            .map(|&(s, li)| (s, engine.logits(li)))
            .collect();
        self.predict_from(&rows);
    }

    /// Distributions for one step from each stream's logits.
    fn predict_from(&mut self, items: &[(usize, &[f32])]) {
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

    /// Learns the step's symbols (of `streams`, in order).
    fn update(&mut self, streams: impl Iterator<Item = usize>, syms: &[u32]) {
        for (i, (s, &y)) in streams.zip(syms).enumerate() {
            self.bits += self.cdfs[i].cost_bits(y as usize);
            self.ens.update(s, y, &self.scratch[i]);
        }
    }
}

/// Compresses `data` into one archive written to `out`.
pub fn compress<W: Write>(
    model: &Model,
    data: &[u8],
    opts: &CompressOptions,
    out: &mut W,
    progress: Progress,
) -> Result<Stats> {
    compress_measure(model, data, opts, &[], out, progress)
}

/// Checks the options before any work, with the header's own limits.
fn check_options(opts: &CompressOptions) -> Result<()> {
    let bad = |m: &str| Err(Error::new(ErrorKind::InvalidOption(m.to_string())));
    if opts.window < 2 || opts.window > format::MAX_WINDOW {
        return bad(&format!("window must be 2..={}", format::MAX_WINDOW));
    }
    if opts.keep < 1 || opts.keep >= opts.window {
        return bad("keep must be at least 1 and below the window");
    }
    if opts.block_tokens == 0 || opts.block_tokens > format::MAX_BLOCK_TOKENS {
        return bad(&format!(
            "block tokens must be 1..={}",
            format::MAX_BLOCK_TOKENS
        ));
    }
    if opts.streams == 0 || opts.streams > format::MAX_STREAMS {
        return bad(&format!("streams must be 1..={}", format::MAX_STREAMS));
    }
    Ok(())
}

/// Compresses like [`compress`] and also measures, on the same model outputs, the code
/// length each predictor variant in `variants` would give (`Stats::variant_bits`): one
/// forward pass serves an ablation table.
pub fn compress_measure<W: Write>(
    model: &Model,
    data: &[u8],
    opts: &CompressOptions,
    variants: &[PredictorSettings],
    out: &mut W,
    progress: Progress,
) -> Result<Stats> {
    check_options(opts)?;
    let tk = &model.tokenizer;
    let vocab = tk.vocab_size();
    let symbols = tk.encode(data);
    // The tokenizer verifies itself; check once more here because a mistake would only show
    // when someone decompresses, possibly years later.
    let mut pos = 0usize;
    for &s in &symbols {
        let b = tk.symbol_bytes(s);
        if data.get(pos..pos + b.len()) != Some(b) {
            return Err(Error::internal("tokenization does not reproduce the input"));
        }
        pos += b.len();
    }
    if pos != data.len() {
        return Err(Error::internal("tokenization does not cover the input"));
    }

    let lens = layout(symbols.len(), opts.block_tokens as usize);
    let mut blocks: Vec<&[u32]> = Vec::with_capacity(lens.len());
    let mut at = 0;
    for &l in &lens {
        blocks.push(&symbols[at..at + l]);
        at += l;
    }
    let streams = (opts.streams as usize).min(blocks.len()).max(1);
    let header = header_for(model, opts, streams as u16);
    let mut written = CountingWriter {
        inner: out,
        count: 0,
    };
    header.write_to(&mut written)?;

    let mut stats = Stats {
        original_bytes: data.len() as u64,
        ..Stats::default()
    };
    stats.escapes = symbols.iter().filter(|&&s| s as usize >= vocab).count() as u64;
    let (window, keep) = (opts.window as usize, opts.keep as usize);
    let mut engine = Engine::new(model);
    let mut lanes: Vec<Lane> = std::iter::once(&opts.predictor)
        .chain(variants)
        .map(|s| Lane::new(model, s, streams))
        .collect();
    let mut offset = 0usize;
    let mut done_bytes = 0u64;
    for group in blocks.chunks(streams) {
        let glens: Vec<usize> = group.iter().map(|b| b.len()).collect();
        engine.prepare(group.len(), cache_capacity(&glens, window));
        for lane in &mut lanes {
            lane.ens.begin_group(&glens);
        }
        let mut encoders: Vec<BlockEncoder> = group.iter().map(|_| BlockEncoder::new()).collect();
        let max_len = glens.iter().copied().max().unwrap_or(0);
        let mut cache_len: Vec<usize> = vec![0; group.len()];
        let mut p0 = 0;
        let mut group_bytes = 0u64;
        while p0 < max_len {
            // Rows for steps p0.. until the call is full or a stream's window would slide
            // in the middle of it (a call can only empty a cache at its start).
            let mut rows = Vec::new();
            let mut want = Vec::new();
            // Per step: (stream, index into want/logits).
            let mut steps: Vec<Vec<(usize, usize)>> = Vec::new();
            let mut p = p0;
            while p < max_len {
                let mut trial = Vec::new();
                let mut items = Vec::new();
                let mut lens_after = cache_len.clone();
                let mut resets = Vec::new();
                for (s, b) in group.iter().enumerate() {
                    if p >= b.len() {
                        continue;
                    }
                    let reset = rows_for(
                        s,
                        &b[..p],
                        cache_len[s],
                        window,
                        keep,
                        opts.window_policy,
                        vocab,
                        model.start_token,
                        &mut trial,
                    );
                    if reset {
                        resets.push(s);
                        lens_after[s] = len_after_slide(opts.window_policy, keep);
                    } else {
                        lens_after[s] = cache_len[s] + 1;
                    }
                    items.push((s, rows.len() + trial.len() - 1));
                }
                let too_many = !rows.is_empty() && rows.len() + trial.len() > opts.rows_per_call;
                if (!resets.is_empty() && p > p0) || too_many {
                    break;
                }
                for &s in &resets {
                    engine.make_room(s, opts.window_policy, keep)?;
                }
                let mut stepped = Vec::with_capacity(items.len());
                for (s, row_index) in items {
                    stepped.push((s, want.len()));
                    want.push(row_index);
                }
                rows.extend(trial);
                steps.push(stepped);
                cache_len = lens_after;
                p += 1;
            }
            engine.run(&rows, &want, &mut stats)?;
            let t = std::time::Instant::now();
            for (k, items) in steps.iter().enumerate() {
                let step = p0 + k;
                let syms: Vec<u32> = items.iter().map(|&(s, _)| group[s][step]).collect();
                for lane in lanes.iter_mut() {
                    lane.predict(&engine, items);
                }
                for (i, (&(s, _), &y)) in items.iter().zip(&syms).enumerate() {
                    encoders[s].encode(y, &lanes[0].cdfs[i])?;
                }
                for lane in lanes.iter_mut() {
                    lane.update(items.iter().map(|i| i.0), &syms);
                }
            }
            stats.predict_seconds += t.elapsed().as_secs_f64();
            for b in group {
                for &y in b.get(p0..p.min(b.len())).unwrap_or(&[]) {
                    group_bytes += tk.symbol_bytes(y).len() as u64;
                }
            }
            progress(done_bytes + group_bytes);
            p0 = p;
        }
        let mut entries = Vec::with_capacity(group.len());
        let mut payloads = Vec::with_capacity(group.len());
        for (b, enc) in group.iter().zip(encoders) {
            let len: usize = b.iter().map(|&s| tk.symbol_bytes(s).len()).sum();
            let original = &data[offset..offset + len];
            offset += len;
            let payload = enc.finish();
            entries.push(BlockEntry {
                original_len: len as u32,
                symbol_count: b.len() as u32,
                coded_len: payload.len() as u32,
                crc32: crc32fast::hash(original),
            });
            payloads.push(payload);
            done_bytes += len as u64;
        }
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
        format::write_group(&mut written, &header, &entries, &refs)?;
        stats.blocks += entries.len() as u64;
        progress(done_bytes);
    }
    let trailer = Trailer {
        total_len: data.len() as u64,
        block_count: stats.blocks,
        sha256: Sha256::digest(data).into(),
    };
    format::write_end(&mut written, &trailer)?;
    stats.symbols = symbols.len() as u64;
    stats.archive_bytes = written.count;
    stats.ideal_bits = lanes[0].bits;
    stats.variant_bits = lanes[1..].iter().map(|l| l.bits).collect();
    Ok(stats)
}

/// Checks that the loaded model can decode an archive with this header.
pub fn check_header(model: &Model, h: &Header) -> Result<PredictorSettings> {
    if h.model_sha256 != model.sha256 {
        return Err(Error::new(ErrorKind::ModelMismatch {
            what: "model",
            expected: describe_identity(None, &h.model_sha256)
                + &format!(" [sha256 {}]", hex(&h.model_sha256)),
            actual: model.describe(),
        }));
    }
    let tid = model.tokenizer.identity();
    if h.tokenizer_hash != tid {
        return Err(Error::new(ErrorKind::ModelMismatch {
            what: "tokenizer",
            expected: format!("tokenizer {}", hex(&h.tokenizer_hash)),
            actual: format!(
                "tokenizer {} (this lmzip build tokenizes differently)",
                hex(&tid)
            ),
        }));
    }
    if h.backend != model.llama.backend {
        if backend_name(h.backend) == "unknown" {
            return Err(Error::new(ErrorKind::UnsupportedBackend { id: h.backend }));
        }
        return Err(Error::internal(format!(
            "archive needs numeric backend {} ({}) but the model was loaded for {}",
            h.backend,
            backend_name(h.backend),
            model.llama.backend
        )));
    }
    if h.num_symbols as usize != model.tokenizer.num_symbols() {
        return Err(Error::new(ErrorKind::InvalidField {
            field: "num_symbols",
            value: h.num_symbols as u64,
        }));
    }
    if h.start_token as usize >= model.tokenizer.vocab_size() {
        return Err(Error::new(ErrorKind::InvalidField {
            field: "start_token",
            value: h.start_token as u64,
        }));
    }
    PredictorSettings::from_bytes(&h.predictor)
}

/// The numeric backend the first archive in `data` needs (to load the model for it).
pub fn peek_backend(data: &[u8]) -> Option<u16> {
    Header::read_from(&mut &data[..])
        .ok()
        .flatten()
        .map(|h| h.backend)
}

/// Decompresses every archive in `input` (concatenations included) to `out`.
///
/// Output is written one verified block at a time: a block whose checksum fails is never
/// written. The caller writes to a temporary file and keeps it only if this returns Ok.
pub fn decompress<R: Read, W: Write>(
    model: &Model,
    input: &mut R,
    out: &mut W,
    progress: Progress,
) -> Result<Stats> {
    decompress_limited(model, input, out, progress, DEFAULT_MEMORY_LIMIT)
}

/// Bytes a decoder may allocate for an archive's settings beyond the model itself, unless
/// the caller chooses otherwise (`lmzip --memlimit`). Documented in docs/FORMAT.md.
pub const DEFAULT_MEMORY_LIMIT: u64 = 16 << 30;

/// Buffers sized from declared lengths are reserved up to this many bytes per block; they
/// grow with what actually decodes (a forged group of 1024 blocks then reserves ≤ 80 MiB).
const RESERVE_CAP: usize = 1 << 16;

/// Positions a group's caches need: the window, or less when every block is shorter.
fn cache_capacity(glens: &[usize], window: usize) -> usize {
    let longest = glens.iter().copied().max().unwrap_or(0);
    window.min(longest + 1).max(1)
}

/// The most memory decoding an archive with this header can take beyond the model: caches
/// for every stream at the full window, the predictor's tables, and per-stream scratch.
pub fn decode_memory(model: &Model, header: &Header, settings: &PredictorSettings) -> u64 {
    let streams = header.streams as u64;
    let window = (header.window as usize).min(header.block_tokens as usize + 1);
    let n = model.tokenizer.num_symbols() as u64;
    let per_stream = model.llama.cache_bytes(window) as u64
        + (model.llama.cfg.vocab as u64) * 4 // logits
        + 3 * 4 * n; // scratch numerators, weights, CDF
    let guessed = (SPECULATE_STREAMS.min(streams as usize) * MAX_GUESSES) as u64
        * model.llama.cfg.vocab as u64
        * 4; // logits of guessed rows
    streams * per_stream + guessed + settings.memory_bytes(n as usize) as u64
}

/// `decompress` with an explicit memory limit in bytes (see `decode_memory`).
pub fn decompress_limited<R: Read, W: Write>(
    model: &Model,
    input: &mut R,
    out: &mut W,
    progress: Progress,
    limit: u64,
) -> Result<Stats> {
    decompress_with(model, input, out, progress, limit, speculation_on())
}

/// `decompress_limited`, choosing whether the decoder feeds guessed symbols as extra rows
/// (see [`Ahead`]); the output is the same either way, only the speed differs.
pub fn decompress_with<R: Read, W: Write>(
    model: &Model,
    input: &mut R,
    out: &mut W,
    progress: Progress,
    limit: u64,
    speculate: bool,
) -> Result<Stats> {
    let mut input = CountingReader {
        inner: input,
        count: 0,
    };
    let mut stats = Stats::default();
    let mut archives = 0u64;
    while let Some(header) = Header::read_from(&mut input)? {
        archives += 1;
        let how = Decode { limit, speculate };
        decompress_one(model, &header, &mut input, out, &mut stats, progress, how)?;
    }
    if archives == 0 {
        return Err(Error::truncated("header"));
    }
    stats.archive_bytes = input.count;
    Ok(stats)
}

/// How to decode: memory limit in bytes, and whether to speculate.
#[derive(Clone, Copy)]
struct Decode {
    limit: u64,
    speculate: bool,
}

/// Most guessed rows a decoder adds after a stream's row.
const MAX_GUESSES: usize = 4;
/// Speculation runs while a step has at most this many streams: a call with few rows is
/// bound by streaming the weights, so extra rows cost little; with many it is bound by
/// arithmetic, and wrong guesses would cost their full share.
const SPECULATE_STREAMS: usize = 2;
/// A guess is added while the estimated chance that every guess so far comes true stays at
/// least this (an extra row costs about a sixth to a third of a one-row call).
const MIN_CHAIN: f64 = 0.4;

/// Whether the decoder speculates (`LMZIP_NO_SPECULATION=1` turns it off, to compare).
fn speculation_on() -> bool {
    std::env::var_os("LMZIP_NO_SPECULATION").is_none_or(|v| v == "0")
}

/// Speculative decoding of one stream. Because the engine's result for a row does not depend
/// on the other rows of its call, the decoder can feed guesses of the next symbols (from
/// the match and n-gram models) as extra rows: when a guess comes true, the logits its row
/// gave are exactly those a token-by-token decoder would compute, and the next step needs
/// no forward call; when it does not, the cache is cut back. Guesses decide only which rows
/// run, never a probability, so the archive format is unaffected.
#[derive(Default)]
struct Ahead {
    /// `guesses[j]` was fed as the input of guessed row `j`, whose logits (`vocab` values
    /// at `logits[j·vocab..]`) predict the symbol after it.
    guesses: Vec<u32>,
    kinds: Vec<DraftKind>,
    logits: Vec<f32>,
    /// Cache length with the stream's real rows, before the guessed ones.
    base_len: usize,
    /// The guessed row whose logits predict the stream's next symbol, once confirmed.
    next: Option<usize>,
}

/// Where a stream's logits for this step's symbol come from.
#[derive(Clone, Copy)]
enum Src {
    /// This step's call, at this index of its wanted rows.
    Call(usize),
    /// Guessed row `j` of an earlier call, whose guess came true.
    Guessed(usize),
}

/// How often guesses of each kind came true in this run, with a prior (decoder-side only).
struct GuessRates {
    tried: [f64; DRAFT_KINDS],
    right: [f64; DRAFT_KINDS],
}

impl GuessRates {
    fn new() -> Self {
        // Priors from alice29, fields.c, grammar.lsp and the OOD report: matches and
        // single-continuation contexts come true about 70-80% of the time, others 20-40%.
        GuessRates {
            tried: [4.0; DRAFT_KINDS],
            right: [3.0, 3.0, 1.0],
        }
    }

    fn rate(&self, k: DraftKind) -> f64 {
        self.right[k as usize] / self.tried[k as usize]
    }

    fn record(&mut self, k: DraftKind, right: bool) {
        self.tried[k as usize] += 1.0;
        self.right[k as usize] += right as u32 as f64;
    }

    /// How many of the guesses to run: while the chance all of them hold stays high.
    fn keep(&self, kinds: &[DraftKind]) -> usize {
        let mut p = 1.0;
        for (j, &k) in kinds.iter().enumerate() {
            p *= self.rate(k);
            if p < MIN_CHAIN {
                return j;
            }
        }
        kinds.len()
    }
}

fn decompress_one<R: Read, W: Write>(
    model: &Model,
    header: &Header,
    input: &mut R,
    out: &mut W,
    stats: &mut Stats,
    progress: Progress,
    how: Decode,
) -> Result<()> {
    let limit = how.limit;
    let settings = check_header(model, header)?;
    let tk = &model.tokenizer;
    let vocab = tk.vocab_size();
    let streams = header.streams as usize;
    let (window, keep) = (header.window as usize, header.keep as usize);
    let need = decode_memory(model, header, &settings);
    if need > limit {
        return Err(Error::new(ErrorKind::LimitExceeded {
            field: "decoder memory (bytes)",
            value: need,
            limit,
        }));
    }
    let mut engine = Engine::new(model);
    let mut lane = Lane::new(model, &settings, streams);
    let mut tally = ArchiveTally::new();
    let mut rates = GuessRates::new();
    let mut sha = Sha256::new();
    loop {
        let (entries, payloads) = match format::read_frame(input, header)? {
            Frame::End(trailer) => {
                tally.check(&trailer)?;
                let got: [u8; 32] = sha.finalize().into();
                if got != trailer.sha256 {
                    return Err(Error::new(ErrorKind::ChecksumMismatch {
                        what: "content (sha256)",
                    }));
                }
                return Ok(());
            }
            Frame::Group { entries, payloads } => (entries, payloads),
        };
        tally.add_group(&entries);
        let n = entries.len();
        let glens: Vec<usize> = entries.iter().map(|e| e.symbol_count as usize).collect();
        engine.prepare(n, cache_capacity(&glens, window));
        lane.ens.begin_group(&glens);
        let mut decoders = payloads
            .iter()
            .map(|p| BlockDecoder::new(p))
            .collect::<Result<Vec<_>>>()?;
        // Declared lengths are not trusted for reservations: they are checked against what
        // decodes, and the buffers grow with it.
        let mut outputs: Vec<Vec<u8>> = entries
            .iter()
            .map(|e| Vec::with_capacity((e.original_len as usize).min(RESERVE_CAP)))
            .collect();
        let mut syms: Vec<Vec<u32>> = glens
            .iter()
            .map(|&l| Vec::with_capacity(l.min(RESERVE_CAP / 16)))
            .collect();
        let mut group_bytes = 0u64;
        let max_len = glens.iter().copied().max().unwrap_or(0);
        let mut rows = Vec::new();
        let mut want = Vec::new();
        let mut items = Vec::new();
        let mut step_syms = Vec::new();
        let mut ahead: Vec<Ahead> = (0..n).map(|_| Ahead::default()).collect();
        // Where each stream's guessed rows start in `want` this step.
        let mut guess_at: Vec<Option<usize>> = vec![None; n];
        let speculate = how.speculate;
        for p in 0..max_len {
            rows.clear();
            want.clear();
            items.clear();
            let active = glens.iter().filter(|&&l| p < l).count();
            let spec_step = speculate && active <= SPECULATE_STREAMS;
            for s in 0..n {
                guess_at[s] = None;
                if p >= glens[s] {
                    continue;
                }
                if let Some(j) = ahead[s].next.take() {
                    // A confirmed guess already gave this symbol's logits.
                    items.push((s, Src::Guessed(j)));
                    continue;
                }
                let before = rows.len();
                let cache_len = engine.caches[s].len();
                if rows_for(
                    s,
                    &syms[s],
                    cache_len,
                    window,
                    keep,
                    header.window_policy,
                    vocab,
                    model.start_token,
                    &mut rows,
                ) {
                    engine.make_room(s, header.window_policy, keep)?;
                }
                debug_assert!(rows.len() > before);
                items.push((s, Src::Call(want.len())));
                want.push(rows.len() - 1);
                let a = &mut ahead[s];
                a.guesses.clear();
                a.kinds.clear();
                a.base_len = engine.caches[s].len() + (rows.len() - before);
                if spec_step {
                    // Guessed row j predicts symbol p + j + 1 with the cache holding
                    // base_len + j entries: stay inside the block and below the window
                    // (where the one-by-one decoder would slide first).
                    let room = glens[s] - p - 1;
                    let cap = engine.caches[s].capacity();
                    let room = room.min(window.min(cap).saturating_sub(a.base_len));
                    lane.ens.draft(
                        s,
                        MAX_GUESSES.min(room),
                        vocab,
                        &mut a.guesses,
                        &mut a.kinds,
                    );
                    let k = rates.keep(&a.kinds);
                    a.guesses.truncate(k);
                    a.kinds.truncate(k);
                    let last = rows[rows.len() - 1].pos;
                    guess_at[s] = Some(want.len());
                    stats.guessed += a.guesses.len() as u64;
                    for (j, &g) in a.guesses.iter().enumerate() {
                        want.push(rows.len());
                        rows.push(Row {
                            stream: s,
                            token: g,
                            pos: last + 1 + j,
                        });
                    }
                }
            }
            if !rows.is_empty() {
                engine.run(&rows, &want, stats)?;
                stats.calls += 1;
            }
            let t = std::time::Instant::now();
            let v = model.llama.cfg.vocab;
            // Keep the guessed rows' logits: the next call overwrites the engine's.
            for (a, at) in ahead.iter_mut().zip(&guess_at) {
                if let Some(w0) = *at {
                    a.logits.clear();
                    for j in 0..a.guesses.len() {
                        a.logits.extend_from_slice(engine.logits(w0 + j));
                    }
                }
            }
            let sources: Vec<(usize, &[f32])> = items
                .iter()
                .map(|&(s, src)| match src {
                    Src::Guessed(j) => (s, &ahead[s].logits[j * v..(j + 1) * v]),
                    Src::Call(li) => (s, engine.logits(li)),
                })
                .collect();
            lane.predict_from(&sources);
            step_syms.clear();
            for (i, &(s, src)) in items.iter().enumerate() {
                let sym = decoders[s].decode(&lane.cdfs[i])?;
                // The guess after the logits just used came true or not.
                let a = &mut ahead[s];
                let c = match src {
                    Src::Call(_) => 0,
                    Src::Guessed(j) => j + 1,
                };
                if c < a.guesses.len() {
                    let right = a.guesses[c] == sym;
                    rates.record(a.kinds[c], right);
                    stats.guessed_right += right as u64;
                    if right {
                        a.next = Some(c);
                    } else {
                        engine.caches[s].truncate(a.base_len + c);
                        a.guesses.clear();
                    }
                }
                let bytes = tk.symbol_bytes(sym);
                if outputs[s].len() + bytes.len() > entries[s].original_len as usize {
                    return Err(Error::new(ErrorKind::ChecksumMismatch {
                        what: "block (decoded past its length)",
                    }));
                }
                outputs[s].extend_from_slice(bytes);
                group_bytes += bytes.len() as u64;
                syms[s].push(sym);
                step_syms.push(sym);
                stats.symbols += 1;
            }
            lane.update(items.iter().map(|i| i.0), &step_syms);
            stats.predict_seconds += t.elapsed().as_secs_f64();
            progress(stats.original_bytes + group_bytes);
        }
        for (e, o) in entries.iter().zip(&outputs) {
            if o.len() != e.original_len as usize {
                return Err(Error::new(ErrorKind::LengthMismatch {
                    what: "block",
                    expected: e.original_len as u64,
                    actual: o.len() as u64,
                }));
            }
            if crc32fast::hash(o) != e.crc32 {
                return Err(Error::new(ErrorKind::ChecksumMismatch {
                    what: "block (crc32)",
                }));
            }
            sha.update(o);
            out.write_all(o)?;
            stats.original_bytes += o.len() as u64;
            stats.blocks += 1;
        }
        progress(stats.original_bytes);
    }
}

struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct CountingReader<'a, R: Read> {
    inner: &'a mut R,
    count: u64,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// A human-readable account of every archive in `r`: header fields, block layout, sizes.
/// Reads the whole input and checks every structural checksum, but runs no model.
pub fn describe<R: Read>(r: &mut R) -> Result<String> {
    use std::fmt::Write as _;
    let mut r = CountingReader { inner: r, count: 0 };
    let mut s = String::new();
    let mut n = 0;
    while let Some(h) = Header::read_from(&mut r)? {
        n += 1;
        let start = r.count - h.encoded_len() as u64;
        let _ = writeln!(s, "  archive {n}: format version {}", format::VERSION);
        let _ = writeln!(
            s,
            "    model        {} [sha256 {}]",
            describe_identity(None, &h.model_sha256),
            hex(&h.model_sha256)
        );
        let _ = writeln!(
            s,
            "    tokenizer    {} ({} symbols)",
            hex(&h.tokenizer_hash),
            h.num_symbols
        );
        let _ = writeln!(
            s,
            "    backend      {} ({})",
            h.backend,
            crate::engine::backend_name(h.backend)
        );
        let _ = writeln!(
            s,
            "    coder        range coder, {}-bit words, {}-bit probabilities",
            crate::coder::WORD_BITS,
            crate::coder::PRECISION
        );
        let _ = writeln!(
            s,
            "    blocks       ≤ {} tokens each, {} side by side; window {} positions, slides keeping {} (policy {}: {})",
            h.block_tokens,
            h.streams,
            h.window,
            h.keep,
            h.window_policy,
            if h.window_policy == format::WINDOW_SHIFT {
                "shift"
            } else {
                "re-prefill"
            }
        );
        let pred = PredictorSettings::from_bytes(&h.predictor)
            .map(|p| format!("{p:?}"))
            .unwrap_or_else(|e| format!("unreadable: {e}"));
        let _ = writeln!(s, "    predictor    {pred}");
        let mut tally = ArchiveTally::new();
        let (mut groups, mut blocks, mut syms) = (0u64, 0u64, 0u64);
        loop {
            match format::read_frame(&mut r, &h)? {
                Frame::Group { entries, .. } => {
                    tally.add_group(&entries);
                    groups += 1;
                    blocks += entries.len() as u64;
                    syms += entries.iter().map(|e| e.symbol_count as u64).sum::<u64>();
                }
                Frame::End(t) => {
                    tally.check(&t)?;
                    let size = r.count - start;
                    let bpb = if t.total_len > 0 {
                        size as f64 * 8.0 / t.total_len as f64
                    } else {
                        0.0
                    };
                    let _ = writeln!(s, "    content      {} bytes, {} tokens, {blocks} blocks in {groups} groups, sha256 {}", t.total_len, syms, hex(&t.sha256));
                    let _ = writeln!(s, "    archive      {size} bytes, {bpb:.4} bits per byte");
                    break;
                }
            }
        }
    }
    if n == 0 {
        return Err(Error::truncated("header"));
    }
    Ok(s)
}
