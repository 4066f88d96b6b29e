//! Decompression: an archive's group frames decoded in lock step, verified block by block.
//!
//! The decoder learns each symbol only by decoding it, so every step runs one forward call
//! with one row per stream (plus, when few streams are left, rows for guessed next symbols:
//! see `speculate`). Within a step, streams decode in stream order, the order the encoder
//! coded them in, so the predictors learn the same things in the same order.

use super::io::Counting;
use super::options::{DecodeOptions, Outcome, Progress, Stats};
use super::predictor_run::{alphabet, initial_active, Item, PredictorRun};
use super::resume::{DecodeResume, DecodeSnapshot, DecodeSnapshotRef, RunState};
use super::speculate::{GuessRates, Speculation, Src, MAX_GUESSES, SPECULATE_STREAMS};
use super::window::{cache_capacity, Window};
use crate::classic;
use crate::coder::BlockDecoder;
use crate::coder::Cdf;
use crate::engine::Context;
use crate::engine::{backend_name, Row};
use crate::format::{
    self, ArchiveTally, BlockEntry, ChecksumKind, ContentHasher, Frame, Header, RegionSection,
};
use crate::model::identity::{describe_recorded, hex};
use crate::model::Model;
use crate::predict::PredictorSettings;
use crate::transform::Transform;
use crate::{Error, ErrorKind, Result};
use rayon::prelude::*;
use std::io::{Read, Write};
use std::time::Instant;

/// Buffers sized from declared lengths are reserved up to this many bytes per block; they
/// grow with what actually decodes (a forged group of 1024 blocks then reserves ≤ 80 MiB).
const RESERVE_CAP: usize = 1 << 16;

/// Checks that the loaded model can decode an archive with this header; returns the
/// archive's predictor settings.
pub(crate) fn check_header(model: &Model, h: &Header) -> Result<PredictorSettings> {
    if !h.model.matches(&model.sha256) {
        return Err(Error::new(ErrorKind::ModelMismatch {
            what: "model",
            expected: describe_recorded(h.model.bytes()),
            actual: model.describe(),
        }));
    }
    let tid = model.tokenizer.identity();
    if !h.tokenizer.matches(&tid) {
        let recorded = h.tokenizer.bytes();
        return Err(Error::new(ErrorKind::ModelMismatch {
            what: "tokenizer",
            expected: if recorded.len() < 32 {
                format!(
                    "a tokenizer whose identity begins {} (the archive records its first {} bits)",
                    hex(recorded),
                    8 * recorded.len()
                )
            } else {
                format!("tokenizer {}", hex(recorded))
            },
            actual: format!(
                "tokenizer {} (this lmzip build tokenizes differently)",
                hex(&tid)
            ),
        }));
    }
    if h.backend != model.net.backend() {
        if backend_name(h.backend) == "unknown" {
            return Err(Error::new(ErrorKind::UnsupportedBackend { id: h.backend }));
        }
        return Err(Error::internal(format!(
            "archive needs numeric backend {} ({}) but the model was loaded for {}",
            h.backend,
            backend_name(h.backend),
            model.net.backend()
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

/// The numeric backend the first archive in `data` needs (to load the model for it), or
/// `None` when `data` does not start with a readable header.
pub fn peek_backend(data: &[u8]) -> Option<u16> {
    peek_header(data).map(|h| h.backend)
}

/// The first archive's header in `data`, if it reads (nothing is checked beyond it): what
/// a caller needs to pick the model and backend before decoding.
pub fn peek_header(data: &[u8]) -> Option<Header> {
    Header::read_from(&mut &data[..]).ok().flatten()
}

/// The most memory decoding an archive with this header can take beyond the model: caches
/// for every stream at the full window, the predictor's tables, and per-stream scratch.
pub(crate) fn decode_memory(model: &Model, header: &Header, settings: &PredictorSettings) -> u64 {
    let streams = header.streams as u64;
    let window = (header.window as usize).min(header.block_tokens as usize + 1);
    let n = model.tokenizer.num_symbols() as u64;
    let per_stream = model.net.cache_bytes(window) as u64
        + (model.net.vocab() as u64) * 4 // logits
        + 3 * 4 * n; // scratch numerators, weights, CDF
    let guessed = (SPECULATE_STREAMS.min(streams as usize) * MAX_GUESSES) as u64
        * model.net.vocab() as u64
        * 4; // logits of guessed rows
    streams * per_stream + guessed + settings.memory_bytes(n as usize, model.net.dim()) as u64
}

/// Decodes the archive whose `header` was just read from `input`, writing verified blocks
/// to `out`: a block whose length or checksum fails is never written.
///
/// With `resume`, the state after each group is saved to its checkpoint, and a run the
/// checkpoint holds for this archive is taken up after its last saved group.
#[allow(clippy::too_many_arguments)]
pub(crate) fn decode_archive<R: Read, W: Write>(
    model: &Model,
    header: &Header,
    input: &mut R,
    out: &mut W,
    stats: &mut Stats,
    progress: Progress,
    opts: DecodeOptions,
    resume: Option<DecodeResume>,
) -> Result<()> {
    let started = Instant::now();
    let settings = check_header(model, header)?;
    let need = decode_memory(model, header, &settings);
    within_memory(need, opts.memory_limit)?;
    let mut input = Counting::new(input);
    let mut regions = if header.version >= format::VERSION_REGIONS {
        read_regions(&mut input, header.transform, need, opts.memory_limit)?
    } else {
        Interleave::none()
    };
    // Built at the first group frame: an archive of binary regions alone never runs the
    // model, so it skips the active head's gather and the predictor's tables (tens of
    // milliseconds, most of such an archive's decoding time).
    let new_decoder = || ArchiveDecoder::new(model, header, &settings, opts.speculate);
    let mut dec: Option<ArchiveDecoder> = None;
    let mut tally = ArchiveTally::new();
    let mut content = ContentHasher::new(header.checksum);
    // Blocks without a CRC of their own (a one-block archive's) wait here until the content
    // checksum has held: unverified bytes are never written.
    let mut held = Vec::new();
    let mut frames = format::Frames::new(header);
    // With a checkpoint: what has been written (it is saved with the state), and groups.
    let mut copy = Vec::new();
    let (mut groups_done, mut earlier) = (0u64, 0.0);
    let mut out = Tee {
        inner: out,
        copy: resume.as_ref().map(|_| &mut copy),
    };
    let saved: Option<DecodeSnapshot> = match &resume {
        Some(r) => r.checkpoint.load(&r.fingerprint)?,
        None => None,
    };
    if let (Some(snap), Some(r)) = (saved, &resume) {
        // Skip the frames already decoded, then take up the state after them.
        let skip = snap
            .offset
            .checked_sub(r.base + input.count())
            .ok_or_else(|| Error::internal("checkpoint before the archive's frames"))?;
        let skipped = std::io::copy(&mut (&mut input).take(skip), &mut std::io::sink())?;
        if skipped != skip {
            return Err(Error::truncated("group frame"));
        }
        out.write_all(&snap.output)?;
        content.update(&snap.output);
        *stats = snap.stats;
        dec.get_or_insert_with(new_decoder)
            .restore(snap.run, snap.active, snap.rates)?;
        regions.resume_at(snap.regions)?;
        tally = snap.tally;
        (groups_done, earlier) = (snap.groups_done, snap.elapsed);
        stats.resumed_groups = groups_done;
        stats.resumed_seconds = earlier;
    }
    loop {
        match frames.next_frame(&mut input)? {
            Frame::End(trailer) => {
                let end = End {
                    header,
                    trailer: &trailer,
                    tally: &tally,
                };
                end.check(&mut regions, content, &mut held, stats)?;
                out.write_all(&held)?;
                return Ok(());
            }
            Frame::Group { entries, payloads } => {
                tally.add_group(&entries);
                // Progress counts bytes as coded, as the archives' content lengths do.
                let restored = stats.restored_bytes + stats.classic_bytes;
                let mut coded_progress = |done: u64| progress(done.saturating_sub(restored));
                let dec = dec.get_or_insert_with(new_decoder);
                let outputs = dec.decode_group(&entries, &payloads, stats, &mut coded_progress)?;
                let sink = Sink {
                    transform: header.transform,
                    regions: &mut regions,
                    content: &mut content,
                    held: &mut held,
                };
                write_blocks(&entries, &outputs, sink, &mut out, stats)?;
                progress(stats.original_bytes - stats.restored_bytes - stats.classic_bytes);
                groups_done += 1;
                if let Some(r) = &resume {
                    let snap = DecodeSnapshotRef {
                        groups_done,
                        elapsed: earlier + started.elapsed().as_secs_f64(),
                        offset: r.base + input.count(),
                        output: out.copy.as_deref().map_or(&[], |c| c.as_slice()),
                        stats,
                        run: dec.run.state(),
                        active: dec.state.active().map(|h| h.ids()),
                        rates: &dec.rates,
                        regions: regions.at(),
                        tally: &tally,
                    };
                    r.checkpoint.save(&r.fingerprint, &snap)?;
                    if r.checkpoint.stops_at(groups_done) {
                        return Err(Error::new(ErrorKind::Paused { groups_done }));
                    }
                }
            }
        }
    }
}

/// An archive's end frame, read after its last group.
struct End<'a> {
    header: &'a Header,
    trailer: &'a format::Trailer,
    tally: &'a ArchiveTally,
}

impl End<'_> {
    /// Checks the groups against the end frame's totals, appends the binary regions after
    /// the last text to `held`, and checks the content checksum over everything: only
    /// then may `held` (the bytes without a CRC of their own) be written.
    fn check(
        &self,
        regions: &mut Interleave,
        mut content: ContentHasher,
        held: &mut Vec<u8>,
        stats: &mut Stats,
    ) -> Result<()> {
        self.tally.check(self.trailer)?;
        // Binary regions after the last text (each checked by the classical stream's
        // CRC-32) are written after the content checksum holds.
        let mut tail = Vec::new();
        regions.finish(&mut tail)?;
        content.update(&tail);
        stats.original_bytes += tail.len() as u64;
        stats.classic_bytes += tail.len() as u64;
        held.extend_from_slice(&tail);
        if content.finish() != self.trailer.checksum {
            return Err(Error::new(ErrorKind::ChecksumMismatch {
                what: match self.header.checksum {
                    ChecksumKind::Xxh64 => "content (xxh64)",
                    ChecksumKind::Sha256 => "content (sha256)",
                },
            }));
        }
        Ok(())
    }
}

/// The output, and with a checkpoint a copy of it (saved with the decoder's state).
struct Tee<'a, W> {
    inner: &'a mut W,
    copy: Option<&'a mut Vec<u8>>,
}

impl<W: Write> Write for Tee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(c) = &mut self.copy {
            c.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Refuses, before allocating, an archive whose decoding would need more than `limit`.
fn within_memory(need: u64, limit: u64) -> Result<()> {
    if need > limit {
        return Err(Error::new(ErrorKind::LimitExceeded {
            field: "decoder memory (bytes)",
            value: need,
            limit,
        }));
    }
    Ok(())
}

/// Reads a version-4 archive's region section and classical stream, and decodes and
/// checks the stream: the binary regions are ready before the first text block.
/// `model_need` is the memory the model's side takes; the classical side adds its
/// dictionary and stream, and the sum must stay within `limit`.
fn read_regions<R: Read>(
    input: &mut R,
    transform: Transform,
    model_need: u64,
    limit: u64,
) -> Result<Interleave> {
    let section = RegionSection::read_from(input, transform)?;
    let binary_len = section.binary_len();
    // Parts decode one after another into the binary stream: one dictionary at a time.
    let need = model_need + (1u64 << section.dict_log2()) + binary_len + section.coded_len();
    within_memory(need, limit)?;
    let payload = section.read_payload(input)?;
    let mut binary = Vec::new();
    let mut at = 0usize;
    for p in &section.parts {
        let coded = &payload[at..at + p.coded_len as usize];
        let piece = classic::decode(p.dict_log2, coded, p.len as usize, "classical stream")?;
        if binary.is_empty() {
            binary = piece;
        } else {
            binary.extend_from_slice(&piece);
        }
        at += p.coded_len as usize;
    }
    if crc32fast::hash(&binary) != section.crc32 {
        return Err(Error::new(ErrorKind::ChecksumMismatch {
            what: "classical stream (crc32)",
        }));
    }
    Ok(Interleave::new(section.lens, section.crlf, binary))
}

/// An [`Interleave`]'s position: region, bytes left in it, binary bytes taken.
#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct InterleaveAt {
    region: usize,
    left: u64,
    taken: usize,
}

/// Puts decoded text back between the binary regions, in the order the region section
/// gives. Without regions (versions 2 and 3) text passes through.
struct Interleave {
    lens: Vec<u32>,
    /// Per text region, whether its CRLF line ends were coded as LF (the per-region
    /// transform; empty otherwise): those regions' LFs are written as CR LF here.
    crlf: Vec<bool>,
    binary: Vec<u8>,
    /// The current region and the bytes left in it.
    region: usize,
    left: u64,
    /// Bytes of `binary` written so far.
    taken: usize,
}

impl Interleave {
    fn new(lens: Vec<u32>, crlf: Vec<bool>, binary: Vec<u8>) -> Self {
        let left = lens.first().map_or(0, |&l| l as u64);
        Interleave {
            lens,
            crlf,
            binary,
            region: 0,
            left,
            taken: 0,
        }
    }

    fn none() -> Self {
        Self::new(Vec::new(), Vec::new(), Vec::new())
    }

    /// Where it stands, for a checkpoint.
    fn at(&self) -> InterleaveAt {
        InterleaveAt {
            region: self.region,
            left: self.left,
            taken: self.taken,
        }
    }

    /// Takes up a saved position (`at`) over the same regions.
    fn resume_at(&mut self, at: InterleaveAt) -> Result<()> {
        if at.region >= self.lens.len().max(1) || at.taken > self.binary.len() {
            return Err(Error::internal("checkpoint beyond the archive's regions"));
        }
        (self.region, self.left, self.taken) = (at.region, at.left, at.taken);
        Ok(())
    }

    /// Moves to the next text region with bytes left, writing the binary regions passed
    /// on the way; false when no region is left.
    fn next_text(&mut self, out: &mut Vec<u8>) -> bool {
        while self.left == 0 {
            if self.region + 1 >= self.lens.len() {
                return false;
            }
            self.region += 1;
            let len = self.lens[self.region] as usize;
            if self.region % 2 == 1 {
                // The section's lengths add up to the decoded stream's length (checked
                // when it was decoded), so this range exists.
                out.extend_from_slice(&self.binary[self.taken..self.taken + len]);
                self.taken += len;
            } else {
                self.left = len as u64;
            }
        }
        true
    }

    /// Writes `text` (the next decoded text bytes) to `out`, with the binary regions it
    /// comes between.
    fn text(&mut self, mut text: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.lens.is_empty() {
            out.extend_from_slice(text);
            return Ok(());
        }
        while !text.is_empty() {
            if !self.next_text(out) {
                return Err(Error::new(ErrorKind::LengthMismatch {
                    what: "text regions",
                    expected: 0,
                    actual: text.len() as u64,
                }));
            }
            if self.crlf.get(self.region / 2).copied().unwrap_or(false) {
                // Each coded LF stands for CR LF: the region's length counts both.
                let mut n = 0;
                while n < text.len() && self.left > 0 {
                    if text[n] == b'\n' {
                        if self.left < 2 {
                            return Err(Error::new(ErrorKind::LengthMismatch {
                                what: "text regions",
                                expected: self.left,
                                actual: 2,
                            }));
                        }
                        out.extend_from_slice(b"\r\n");
                        self.left -= 2;
                    } else {
                        out.push(text[n]);
                        self.left -= 1;
                    }
                    n += 1;
                }
                text = &text[n..];
                continue;
            }
            let n = (self.left as usize).min(text.len());
            out.extend_from_slice(&text[..n]);
            text = &text[n..];
            self.left -= n as u64;
        }
        Ok(())
    }

    /// Writes the binary regions after the last text; every text region must be complete.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.lens.is_empty() {
            return Ok(());
        }
        if self.next_text(out) {
            return Err(Error::new(ErrorKind::LengthMismatch {
                what: "text regions",
                expected: self.left,
                actual: 0,
            }));
        }
        Ok(())
    }
}

/// Where checked blocks go: the transform is undone, the binary regions are put back
/// around the text, the original feeds the content checksum, then it is written or held.
struct Sink<'a> {
    transform: Transform,
    regions: &'a mut Interleave,
    content: &'a mut ContentHasher,
    held: &'a mut Vec<u8>,
}

/// Checks each decoded block against its entry (length, and its CRC-32 where it has
/// one), undoes the transform, then writes it, or holds it until the content checksum
/// holds when it has no CRC of its own.
fn write_blocks<W: Write>(
    entries: &[BlockEntry],
    outputs: &[Vec<u8>],
    sink: Sink,
    out: &mut W,
    stats: &mut Stats,
) -> Result<()> {
    let mut text = Vec::new();
    let mut original = Vec::new();
    for (e, o) in entries.iter().zip(outputs) {
        if o.len() != e.original_len as usize {
            return Err(Error::new(ErrorKind::LengthMismatch {
                what: "block",
                expected: e.original_len as u64,
                actual: o.len() as u64,
            }));
        }
        if e.crc32.is_some_and(|c| crc32fast::hash(o) != c) {
            return Err(Error::new(ErrorKind::ChecksumMismatch {
                what: "block (crc32)",
            }));
        }
        text.clear();
        sink.transform.undo_into(o, &mut text);
        original.clear();
        sink.regions.text(&text, &mut original)?;
        sink.content.update(&original);
        if e.crc32.is_some() {
            out.write_all(&original)?;
        } else {
            sink.held.extend_from_slice(&original);
        }
        stats.original_bytes += original.len() as u64;
        stats.restored_bytes += (text.len() - o.len()) as u64;
        stats.classic_bytes += (original.len() - text.len()) as u64;
        stats.blocks += 1;
    }
    Ok(())
}

/// One group frame being decoded: each block's range decoder, symbols, bytes and
/// speculation.
struct Group {
    /// Symbols per block, as declared.
    lens: Vec<usize>,
    /// Original bytes per block, as declared.
    original_lens: Vec<usize>,
    decoders: Vec<BlockDecoder>,
    syms: Vec<Vec<u32>>,
    outputs: Vec<Vec<u8>>,
    spec: Vec<Speculation>,
    /// Original bytes decoded so far in this group.
    bytes: u64,
}

impl Group {
    fn new(entries: &[BlockEntry], payloads: &[Vec<u8>], vocab: usize) -> Result<Self> {
        let lens: Vec<usize> = entries.iter().map(|e| e.symbol_count as usize).collect();
        // Declared lengths are not trusted for reservations: they are checked against what
        // decodes, and the buffers grow with it.
        Ok(Group {
            decoders: payloads
                .iter()
                .map(|p| BlockDecoder::new(p))
                .collect::<Result<Vec<_>>>()?,
            outputs: entries
                .iter()
                .map(|e| Vec::with_capacity((e.original_len as usize).min(RESERVE_CAP)))
                .collect(),
            syms: lens
                .iter()
                .map(|&l| Vec::with_capacity(l.min(RESERVE_CAP / 16)))
                .collect(),
            spec: entries.iter().map(|_| Speculation::new(vocab)).collect(),
            original_lens: entries.iter().map(|e| e.original_len as usize).collect(),
            lens,
            bytes: 0,
        })
    }

    /// The longest block's symbols: the group's steps.
    fn max_len(&self) -> usize {
        self.lens.iter().copied().max().unwrap_or(0)
    }

    /// Streams with a symbol at step `p`.
    fn streams_at(&self, p: usize) -> usize {
        self.lens.iter().filter(|&&l| p < l).count()
    }

    /// Appends stream `s`'s decoded symbol and its bytes; a block that decodes past its
    /// declared length is corrupt.
    fn push(&mut self, s: usize, sym: u32, bytes: &[u8]) -> Result<()> {
        if self.outputs[s].len() + bytes.len() > self.original_lens[s] {
            return Err(Error::new(ErrorKind::ChecksumMismatch {
                what: "block (decoded past its length)",
            }));
        }
        self.outputs[s].extend_from_slice(bytes);
        self.bytes += bytes.len() as u64;
        self.syms[s].push(sym);
        Ok(())
    }
}

/// One step's forward call and where each stream's logits come from; buffers reused.
#[derive(Default)]
struct Step {
    rows: Vec<Row>,
    want: Vec<usize>,
    /// (stream, source of its logits), in stream order.
    items: Vec<(usize, Src)>,
    /// Where each stream's guessed rows start in `want` this step.
    guess_at: Vec<Option<usize>>,
    /// The symbols decoded, in the order of `items`.
    syms: Vec<u32>,
}

/// The decoder of one archive: model state, predictors and guess statistics.
struct ArchiveDecoder<'m> {
    model: &'m Model,
    window: Window,
    state: Context<'m>,
    run: PredictorRun,
    /// Logits over the active set for the step's items (active head), reused.
    head: Vec<f32>,
    rates: GuessRates,
    speculate: bool,
}

impl<'m> ArchiveDecoder<'m> {
    fn new(
        model: &'m Model,
        header: &Header,
        settings: &PredictorSettings,
        speculate: bool,
    ) -> Self {
        ArchiveDecoder {
            model,
            window: Window::new(model, header.window, header.keep, header.window_policy),
            state: if settings.active_log2 > 0 {
                Context::with_active(&model.net, initial_active(model, settings))
            } else {
                Context::new(&model.net)
            },
            run: PredictorRun::new(model, settings, header.streams as usize),
            head: Vec::new(),
            rates: GuessRates::new(),
            speculate,
        }
    }

    /// Takes up a saved state: the predictor run, the active head's set, the guess rates.
    fn restore(
        &mut self,
        run: RunState,
        active: Option<Vec<u32>>,
        rates: GuessRates,
    ) -> Result<()> {
        if active.is_some() != self.state.active().is_some() {
            return Err(Error::internal("checkpoint of another decoder layout"));
        }
        self.run.restore(run);
        if let Some(ids) = active {
            self.state = Context::with_active(&self.model.net, ids);
        }
        self.rates = rates;
        Ok(())
    }

    /// Decodes one group's blocks side by side; returns their bytes, not yet verified.
    fn decode_group(
        &mut self,
        entries: &[BlockEntry],
        payloads: &[Vec<u8>],
        stats: &mut Stats,
        progress: Progress,
    ) -> Result<Vec<Vec<u8>>> {
        let (mut g, mut step) = self.begin_group(entries, payloads)?;
        for p in 0..g.max_len() {
            let crowd = g.streams_at(p);
            self.plan(p, &mut g, &mut step, stats, crowd)?;
            if !step.rows.is_empty() {
                let t = Instant::now();
                self.state.run(&step.rows, &step.want)?;
                stats.model_seconds += t.elapsed().as_secs_f64();
                stats.calls += 1;
            }
            self.finish_step(&mut g, &mut step, stats)?;
            progress(stats.original_bytes + g.bytes);
        }
        Ok(g.outputs)
    }

    /// Readies the caches and the predictor run for a group frame's blocks.
    fn begin_group(
        &mut self,
        entries: &[BlockEntry],
        payloads: &[Vec<u8>],
    ) -> Result<(Group, Step)> {
        let g = Group::new(entries, payloads, self.model.net.vocab())?;
        let n = g.lens.len();
        self.state
            .prepare(n, cache_capacity(&g.lens, self.window.window));
        self.run.begin_group(&g.lens);
        let step = Step {
            guess_at: vec![None; n],
            ..Step::default()
        };
        Ok((g, step))
    }

    /// Decodes a step whose forward call (if it had rows) has run: the tables, each
    /// stream's symbol, what the predictors and the active set learn from them.
    fn finish_step(&mut self, g: &mut Group, step: &mut Step, stats: &mut Stats) -> Result<()> {
        let t = Instant::now();
        self.predict(g, step);
        self.decode_step(g, step, stats)?;
        let alpha = alphabet(&self.state, self.state.active().map_or(0, |h| h.len()));
        self.run
            .update(step.items.iter().map(|i| i.0), &step.syms, alpha, &[]);
        // Symbols new to the archive join the active set, in stream order.
        for &y in &step.syms {
            self.state.activate(y);
        }
        stats.predict_seconds += t.elapsed().as_secs_f64();
        Ok(())
    }

    /// The rows of step `p`: each active stream's row, unless a guess that came true
    /// already gave its logits, and, when the call has at most `SPECULATE_STREAMS`
    /// streams (`crowd`, this archive's and any decoded beside it), the rows of guesses.
    fn plan(
        &mut self,
        p: usize,
        g: &mut Group,
        step: &mut Step,
        stats: &mut Stats,
        crowd: usize,
    ) -> Result<()> {
        step.rows.clear();
        step.want.clear();
        step.items.clear();
        let speculate = self.speculate && crowd <= SPECULATE_STREAMS;
        for s in 0..g.lens.len() {
            step.guess_at[s] = None;
            if p >= g.lens[s] {
                continue;
            }
            if let Some(j) = g.spec[s].take_confirmed() {
                step.items.push((s, Src::Guessed(j)));
                continue;
            }
            let before = step.rows.len();
            let slide = self
                .window
                .rows_for(s, &g.syms[s], self.state.len(s), &mut step.rows);
            self.state.make_room(s, slide, self.window.keep)?;
            step.items.push((s, Src::Call(step.want.len())));
            step.want.push(step.rows.len() - 1);
            g.spec[s].start(self.state.len(s) + (step.rows.len() - before));
            if speculate {
                self.guess(p, s, g, step, stats);
            }
        }
        Ok(())
    }

    /// Rows for guesses of stream `s`'s symbols after `p`. Guessed row j predicts symbol
    /// p + j + 1 with the cache holding base_len + j entries: they stay inside the block
    /// and below the window (where the one-by-one decoder would slide first).
    fn guess(&mut self, p: usize, s: usize, g: &mut Group, step: &mut Step, stats: &mut Stats) {
        let a = &mut g.spec[s];
        let room = g.lens[s] - p - 1;
        let cap = self.window.window.min(self.state.capacity(s));
        let room = room.min(cap.saturating_sub(a.base_len()));
        let guesses = a.draft(&self.run, &self.rates, s, MAX_GUESSES.min(room));
        // The stream's own row was just pushed; its guesses follow at the next positions.
        let last = step.rows[step.rows.len() - 1].pos;
        step.guess_at[s] = Some(step.want.len());
        stats.guessed += guesses.len() as u64;
        for (j, &token) in guesses.iter().enumerate() {
            step.want.push(step.rows.len());
            step.rows.push(Row {
                stream: s,
                token,
                pos: last + 1 + j,
            });
        }
    }

    /// The coder's tables for the step, from this call's outputs or a confirmed guess's:
    /// logits as they are, or (active head) hidden states turned into logits over the set.
    fn predict(&mut self, g: &mut Group, step: &Step) {
        // Keep the guessed rows' outputs: the next call overwrites the state's.
        for (a, at) in g.spec.iter_mut().zip(&step.guess_at) {
            if let Some(first) = *at {
                a.keep_outputs(&self.state, first);
            }
        }
        let outputs: Vec<&[f32]> = step
            .items
            .iter()
            .map(|&(s, src)| source(&self.state, g, s, src))
            .collect();
        let m = self.state.active().map_or(0, |h| h.len());
        let alpha = alphabet(&self.state, m);
        if alpha.escape().is_some() {
            let hidden: Vec<f32> = outputs.concat();
            self.state.head(&hidden, &mut self.head);
            let items: Vec<Item> = step
                .items
                .iter()
                .zip(&outputs)
                .enumerate()
                .map(|(i, (&(s, _), &h))| (s, &self.head[i * m..(i + 1) * m], Some(h)))
                .collect();
            self.run.predict(&items, alpha);
        } else {
            let items: Vec<Item> = step
                .items
                .iter()
                .zip(outputs)
                .map(|(&(s, _), o)| (s, o, None))
                .collect();
            self.run.predict(&items, alpha);
        }
    }

    /// Decodes the step's symbols in stream order, settles the guesses they confirm or
    /// refute, and appends each symbol's bytes to its block. Symbols new to the active set
    /// (the escape decoded) take their logits from one pass of the full head for all of
    /// them; each stream's range decoder still reads its own codes in order.
    fn decode_step(&mut self, g: &mut Group, step: &mut Step, stats: &mut Stats) -> Result<()> {
        step.syms.clear();
        for (i, &(s, _)) in step.items.iter().enumerate() {
            step.syms.push(g.decoders[s].decode(self.run.cdf(i))?);
        }
        // The set as the step's tables used it (its escape's index, active head only).
        let m = self.state.active().map_or(0, |h| h.len());
        let alpha = alphabet(&self.state, m);
        let new: Vec<usize> = (0..step.items.len())
            .filter(|&i| Some(step.syms[i] as usize) == alpha.escape())
            .collect();
        if !new.is_empty() {
            let hidden: Vec<f32> = new
                .iter()
                .flat_map(|&i| {
                    let (s, src) = step.items[i];
                    source(&self.state, g, s, src).to_vec()
                })
                .collect();
            let mut full = Vec::new();
            self.state.head_full(&hidden, &mut full);
            let (v, mut cdf) = (self.model.net.vocab(), Cdf::default());
            for (r, &i) in new.iter().enumerate() {
                self.run
                    .new_symbol_cdf(&full[r * v..(r + 1) * v], alpha, &mut cdf);
                let s = step.items[i].0;
                step.syms[i] = g.decoders[s].decode(&cdf)?;
            }
        }
        for (i, code) in step.syms.iter_mut().enumerate() {
            if !new.contains(&i) {
                *code = alpha.symbol(*code as usize);
            }
        }
        for (i, &(s, src)) in step.items.iter().enumerate() {
            let sym = step.syms[i];
            if let Some(len) = g.spec[s].settle(src, sym, &mut self.rates, stats) {
                self.state.truncate(s, len);
            }
            g.push(s, sym, self.model.tokenizer.symbol_bytes(sym))?;
            stats.symbols += 1;
        }
        Ok(())
    }
}

/// The output (logits or hidden state) behind stream `s`'s symbol this step.
fn source<'a>(state: &'a Context, g: &'a Group, s: usize, src: Src) -> &'a [f32] {
    match src {
        Src::Guessed(j) => g.spec[s].output(j),
        Src::Call(li) => state.output(li),
    }
}

/// Decompresses each of `archives` into its own output, as [`super::decompress`] gives it
/// alone. Archives of one group of blocks are decoded side by side, up to `streams`
/// blocks and `opts.memory_limit` bytes in all, each forward call serving them all: many
/// small files decode at the many-stream rate. Any other archive (several groups, several
/// archives back to back, damaged) is decoded alone, and so is every archive of a batch
/// that fails, so that an error is reported for the archive it belongs to and a wrong
/// result is never returned. `progress` hears the original bytes done over all archives.
pub fn decompress_each(
    model: &Model,
    archives: &[&[u8]],
    opts: DecodeOptions,
    streams: usize,
    progress: Progress,
) -> Vec<Outcome> {
    let mut results: Vec<Option<Outcome>> = (0..archives.len()).map(|_| None).collect();
    let mut done = 0u64;
    let mut batch: Vec<Prepared> = Vec::new();
    for (i, &data) in archives.iter().enumerate() {
        let Some(p) = Prepared::new(model, i, data, opts) else {
            let r = decode_alone(model, data, opts, &mut |d| progress(done + d));
            done += r.as_ref().map_or(0, |(o, _)| o.len() as u64);
            results[i] = Some(r);
            continue;
        };
        let taken: usize = batch.iter().map(|b| b.entries.len()).sum();
        let need: u64 = batch.iter().map(|b| b.need).sum();
        if !batch.is_empty()
            && (taken + p.entries.len() > streams.max(1) || need + p.need > opts.memory_limit)
        {
            done = decode_batch(
                model,
                std::mem::take(&mut batch),
                archives,
                opts,
                progress,
                done,
                &mut results,
            );
        }
        batch.push(p);
    }
    decode_batch(model, batch, archives, opts, progress, done, &mut results);
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::internal("archive left undecoded"))))
        .collect()
}

/// One archive decoded on its own, into memory.
fn decode_alone(model: &Model, data: &[u8], opts: DecodeOptions, progress: Progress) -> Outcome {
    let mut out = Vec::new();
    let mut stats = super::decompress_with(
        model,
        &mut &data[..],
        &mut out,
        progress,
        opts.memory_limit,
        opts.speculate,
    )?;
    stats.archive_bytes = data.len() as u64;
    Ok((out, stats))
}

/// An archive of one group, read and checked up to decoding: what [`decompress_each`]
/// batches.
struct Prepared<'m> {
    index: usize,
    header: Header,
    dec: ArchiveDecoder<'m>,
    regions: Interleave,
    entries: Vec<BlockEntry>,
    payloads: Vec<Vec<u8>>,
    trailer: format::Trailer,
    /// Memory its decoding takes beyond the model.
    need: u64,
}

impl<'m> Prepared<'m> {
    /// `None` when `data` is not exactly one archive of one group that this model can
    /// decode within the limits: it is then decoded alone, which also says what is wrong.
    fn new(model: &'m Model, index: usize, data: &[u8], opts: DecodeOptions) -> Option<Self> {
        let mut input = data;
        let header = Header::read_from(&mut input).ok()??;
        let settings = check_header(model, &header).ok()?;
        let need = decode_memory(model, &header, &settings);
        within_memory(need, opts.memory_limit).ok()?;
        let regions = if header.version >= format::VERSION_REGIONS {
            read_regions(&mut input, header.transform, need, opts.memory_limit).ok()?
        } else {
            Interleave::none()
        };
        let mut frames = format::Frames::new(&header);
        let Frame::Group { entries, payloads } = frames.next_frame(&mut input).ok()? else {
            return None;
        };
        let Frame::End(trailer) = frames.next_frame(&mut input).ok()? else {
            return None;
        };
        if !input.is_empty() {
            return None;
        }
        let dec = ArchiveDecoder::new(model, &header, &settings, opts.speculate);
        Some(Prepared {
            index,
            header,
            dec,
            regions,
            entries,
            payloads,
            trailer,
            need,
        })
    }

    /// Checks the decoded blocks and the end frame; the archive's output.
    fn finish(mut self, outputs: &[Vec<u8>], stats: &mut Stats) -> Result<Vec<u8>> {
        let mut tally = ArchiveTally::new();
        tally.add_group(&self.entries);
        let mut content = ContentHasher::new(self.header.checksum);
        let (mut out, mut held) = (Vec::new(), Vec::new());
        let sink = Sink {
            transform: self.header.transform,
            regions: &mut self.regions,
            content: &mut content,
            held: &mut held,
        };
        write_blocks(&self.entries, outputs, sink, &mut out, stats)?;
        let end = End {
            header: &self.header,
            trailer: &self.trailer,
            tally: &tally,
        };
        end.check(&mut self.regions, content, &mut held, stats)?;
        out.extend_from_slice(&held);
        Ok(out)
    }
}

/// Decodes `batch` in lock step and puts each archive's result in `results`; returns
/// `done` plus the original bytes decoded. On any failure every archive of the batch is
/// decoded alone instead.
fn decode_batch(
    model: &Model,
    mut batch: Vec<Prepared>,
    archives: &[&[u8]],
    opts: DecodeOptions,
    progress: Progress,
    done: u64,
    results: &mut [Option<Outcome>],
) -> u64 {
    let indices: Vec<usize> = batch.iter().map(|p| p.index).collect();
    let mut stats: Vec<Stats> = batch.iter().map(|_| Stats::default()).collect();
    let decoded = lockstep_decode(&mut batch, &mut stats, &mut |d| progress(done + d));
    let mut done = done;
    let finished: Option<Vec<(usize, Vec<u8>, Stats)>> = decoded.ok().and_then(|outputs| {
        batch
            .into_iter()
            .zip(outputs)
            .zip(stats)
            .map(|((p, o), mut st)| {
                let i = p.index;
                let out = p.finish(&o, &mut st).ok()?;
                st.archive_bytes = archives[i].len() as u64;
                Some((i, out, st))
            })
            .collect()
    });
    match finished {
        Some(all) => {
            for (i, out, st) in all {
                done += out.len() as u64;
                results[i] = Some(Ok((out, st)));
            }
        }
        None => {
            // Which archive failed is found by decoding each alone.
            for i in indices {
                let r = decode_alone(model, archives[i], opts, &mut |d| progress(done + d));
                done += r.as_ref().map_or(0, |(o, _)| o.len() as u64);
                results[i] = Some(r);
            }
        }
    }
    progress(done);
    done
}

/// The one group of each prepared archive decoded in lock step, each forward call shared;
/// each archive's blocks, not yet verified.
fn lockstep_decode(
    batch: &mut [Prepared],
    stats: &mut [Stats],
    progress: Progress,
) -> Result<Vec<Vec<Vec<u8>>>> {
    let mut parts = Vec::with_capacity(batch.len());
    for p in batch.iter_mut() {
        parts.push(p.dec.begin_group(&p.entries, &p.payloads)?);
    }
    let steps = parts.iter().map(|(g, _)| g.max_len()).max().unwrap_or(0);
    for at in 0..steps {
        // Speculation follows the whole call's streams, as one archive's would.
        let crowd: usize = parts.iter().map(|(g, _)| g.streams_at(at)).sum();
        for ((p, (g, step)), st) in batch.iter_mut().zip(&mut parts).zip(stats.iter_mut()) {
            if at < g.max_len() {
                p.dec.plan(at, g, step, st, crowd)?;
            }
        }
        let t = Instant::now();
        let (mut ctxs, mut calls, mut who) = (Vec::new(), Vec::new(), Vec::new());
        for (k, (p, (g, step))) in batch.iter_mut().zip(&parts).enumerate() {
            if at < g.max_len() && !step.rows.is_empty() {
                ctxs.push(&mut p.dec.state);
                calls.push((step.rows.as_slice(), step.want.as_slice()));
                who.push(k);
            }
        }
        if !ctxs.is_empty() {
            Context::run_together(&mut ctxs, &calls)?;
            // The call's time is shared by rows.
            let secs = t.elapsed().as_secs_f64();
            let rows: usize = calls.iter().map(|c| c.0.len()).sum();
            for (&k, c) in who.iter().zip(&calls) {
                stats[k].model_seconds += secs * c.0.len() as f64 / rows.max(1) as f64;
                stats[k].calls += 1;
            }
        }
        // The archives are independent from here: their predictors run in parallel (each
        // also spreads its own rows), which the output cannot notice.
        batch
            .par_iter_mut()
            .zip(parts.par_iter_mut())
            .zip(stats.par_iter_mut())
            .filter(|((_, (g, _)), _)| at < g.max_len())
            .try_for_each(|((p, (g, step)), st)| p.dec.finish_step(g, step, st))?;
        progress(parts.iter().map(|(g, _)| g.bytes).sum());
    }
    Ok(parts.into_iter().map(|(g, _)| g.outputs).collect())
}
