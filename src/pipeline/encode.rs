//! Compression: tokenize, cut blocks, batch known symbols into calls, code, frame.
//!
//! The encoder knows every symbol in advance, so one call scores many positions of every
//! stream: steps are added to a call until it is full or a stream's window would slide in
//! the middle of it. The engine's results do not depend on that split.

use super::options::{CompressOptions, Outcome, Progress, Stats};
use super::predictor_run::{alphabet, code_of, initial_active, Item, PredictorRun};
use super::resume::{self, Checkpoint, RunState, Snapshot, SnapshotRef};
use super::window::{block_len, cache_capacity, layout, Slide, Window};
use crate::classic;
use crate::coder::BlockEncoder;
use crate::coder::Cdf;
use crate::engine::Context;
use crate::engine::Row;
use crate::format::{self, BlockEntry, Checksum, HashPrefix, Header, RegionSection};
use crate::model::Model;
use crate::predict::PredictorSettings;
use crate::regions::Regions;
use crate::transform::Transform;
use crate::{Error, ErrorKind, Result};
use rayon::prelude::*;
use std::borrow::Cow;
use std::io::Write;
use std::time::Instant;

/// Compresses `data` into one archive written to `out`, and measures, on the same model
/// outputs, the code length each predictor variant in `variants` would give
/// (`Stats::variant_bits`): one forward pass serves an ablation table.
///
/// With `opts.regions`, the input's binary regions go to the classical coder (`regions`,
/// `classic`), and the archive is never larger than coding every byte classically: that
/// archive is made too and the smaller kept. A short input the region finder split is also
/// tried whole through the model, which may spell its few odd bytes for less.
pub(crate) fn compress_measure<W: Write>(
    model: &Model,
    data: &[u8],
    opts: &CompressOptions,
    variants: &[PredictorSettings],
    out: &mut W,
    progress: Progress,
    checkpoint: Option<&Checkpoint>,
) -> Result<Stats> {
    opts.check()?;
    let (regions_apply, regions) = regions_for(data, opts);
    let mut archive = Vec::new();
    // Only the first candidate is checkpointed: the others are quick (classical coding,
    // or a short input through the model).
    let resume = checkpoint.map(|c| (c, resume::fingerprint(model, opts, variants, data)));
    let mut stats = encode_archive(
        model,
        data,
        &regions,
        opts,
        variants,
        &mut archive,
        progress,
        resume.as_ref().map(|(c, f)| (*c, f)),
    )?;
    if regions_apply {
        other_candidates(
            model,
            data,
            &regions,
            opts,
            variants,
            &mut archive,
            &mut stats,
        )?;
    }
    out.write_all(&archive)?;
    progress(data.len() as u64);
    stats.archive_bytes = archive.len() as u64;
    Ok(stats)
}

/// Whether the region finder applies to `data`, and the regions the first candidate uses.
fn regions_for(data: &[u8], opts: &CompressOptions) -> (bool, Regions) {
    // Region lengths are 32-bit in the format: a larger input is coded as text.
    let apply = opts.regions && !data.is_empty() && data.len() <= u32::MAX as usize;
    let regions = if apply {
        Regions::find(data)
    } else {
        Regions::all_text(data.len())
    };
    (apply, regions)
}

/// Replaces `archive` (made with the finder's `regions`) by a smaller one where another
/// layout gives it: every byte classical, or a short split input wholly through the model.
fn other_candidates(
    model: &Model,
    data: &[u8],
    regions: &Regions,
    opts: &CompressOptions,
    variants: &[PredictorSettings],
    archive: &mut Vec<u8>,
    stats: &mut Stats,
) -> Result<()> {
    let mut candidates = vec![Regions::all_binary(data.len())];
    if regions.has_binary() && data.len() <= TRY_WHOLE_TEXT {
        candidates.push(Regions::all_text(data.len()));
    }
    for c in candidates.into_iter().filter(|c| c != regions) {
        let mut other = Vec::new();
        let s = encode_archive(
            model,
            data,
            &c,
            opts,
            variants,
            &mut other,
            &mut |_| {},
            None,
        )?;
        if other.len() < archive.len() {
            // The time spent on the first candidate (resumed runs' included) counts.
            let first = std::mem::replace(stats, s);
            *archive = other;
            stats.model_seconds += first.model_seconds;
            stats.predict_seconds += first.predict_seconds;
            stats.resumed_groups = first.resumed_groups;
            stats.resumed_seconds = first.resumed_seconds;
        }
    }
    Ok(())
}

/// Compresses `data` cut into exactly `regions` (which must describe it), with no other
/// candidate: for tests and fuzzers that need a given layout.
#[doc(hidden)]
pub fn compress_regions<W: Write>(
    model: &Model,
    data: &[u8],
    regions: &Regions,
    opts: &CompressOptions,
    out: &mut W,
) -> Result<Stats> {
    opts.check()?;
    if regions.lens.iter().sum::<u64>() != data.len() as u64 {
        return Err(Error::new(ErrorKind::InvalidOption(
            "the regions do not add up to the input".into(),
        )));
    }
    let mut archive = Vec::new();
    let stats = encode_archive(
        model,
        data,
        regions,
        opts,
        &[],
        &mut archive,
        &mut |_| {},
        None,
    )?;
    out.write_all(&archive)?;
    Ok(stats)
}

/// Inputs up to this many bytes that the region finder split are also tried whole
/// through the model (a few seconds at most).
const TRY_WHOLE_TEXT: usize = 4096;

/// One archive of `data` cut into `regions` ([`Job::new`]), its groups coded one after
/// the other.
///
/// With `resume`, the state after each group but the last is saved to the checkpoint, and
/// a run it holds (the fingerprint names it) is continued after its last saved group.
#[allow(clippy::too_many_arguments)]
fn encode_archive(
    model: &Model,
    data: &[u8],
    regions: &Regions,
    opts: &CompressOptions,
    variants: &[PredictorSettings],
    out: &mut Vec<u8>,
    progress: Progress,
    resume: Option<(&Checkpoint, &[u8; 32])>,
) -> Result<Stats> {
    let job = Job::new(model, data, regions, opts, variants)?;
    code_job(model, job, opts, variants, out, progress, resume)
}

/// [`encode_archive`] for a prepared [`Job`].
fn code_job(
    model: &Model,
    mut job: Job,
    opts: &CompressOptions,
    variants: &[PredictorSettings],
    out: &mut Vec<u8>,
    progress: Progress,
    resume: Option<(&Checkpoint, &[u8; 32])>,
) -> Result<Stats> {
    let started = Instant::now();
    if opts.trace {
        if resume.is_some() {
            // The trace of the groups an earlier run coded is not kept.
            return Err(Error::new(ErrorKind::InvalidOption(
                "a traced run cannot be resumed".into(),
            )));
        }
        job.enc.runs.iter_mut().for_each(PredictorRun::start_trace);
    }
    let Job {
        symbols,
        lens,
        enc,
        stats,
        frame,
        coded,
        ..
    } = &mut job;
    let blocks = cut(symbols, lens);
    if blocks.len() == 1 {
        let payloads = enc.encode_group(&blocks, stats, &mut |bytes| progress(bytes))?;
        frame.emit(model, coded, 0, &blocks, &payloads, out, stats)?;
    } else {
        let streams = enc.streams;
        let groups: Vec<&[&[u32]]> = blocks.chunks(streams).collect();
        let (mut first, mut earlier) = (0, 0.0);
        // Progress counts bytes as coded; the original may be longer by the transform's CRs.
        let mut done_bytes = 0u64;
        let saved: Option<Snapshot> = resume.map(|(c, f)| c.load(f)).transpose()?.flatten();
        match saved {
            Some(snap) => {
                let done = usize::try_from(snap.groups_done)
                    .ok()
                    .filter(|&g| g < groups.len())
                    .ok_or_else(|| Error::internal("checkpoint beyond the archive's groups"))?;
                out.clear();
                out.extend_from_slice(&snap.archive);
                *stats = snap.stats;
                done_bytes = snap.done_bytes;
                enc.restore(snap.runs, snap.active)?;
                (first, earlier) = (done, snap.elapsed);
                stats.resumed_groups = done as u64;
                stats.resumed_seconds = earlier;
                progress(done_bytes);
            }
            None => frame.write_head(out)?,
        }
        for (g, group) in groups.iter().enumerate().skip(first) {
            let payloads =
                enc.encode_group(group, stats, &mut |bytes| progress(done_bytes + bytes))?;
            done_bytes += frame.emit(model, coded, done_bytes, group, &payloads, out, stats)?;
            progress(done_bytes);
            if let Some((c, fingerprint)) = resume.filter(|_| g + 1 < groups.len()) {
                let snap = SnapshotRef {
                    groups_done: g as u64 + 1,
                    done_bytes,
                    elapsed: earlier + started.elapsed().as_secs_f64(),
                    archive: out,
                    stats,
                    runs: enc.runs.iter().map(|r| r.state()).collect(),
                    active: enc.state.active().map(|h| h.ids()),
                };
                c.save(fingerprint, &snap)?;
                if c.stops_at(snap.groups_done) {
                    return Err(Error::new(ErrorKind::Paused {
                        groups_done: g as u64 + 1,
                    }));
                }
            }
        }
    }
    job.finish(out, opts, variants)
}

/// Compresses each of `inputs` into its own archive, byte for byte the one
/// [`super::compress`] writes for it alone, so each decodes alone. Inputs whose archive is
/// one group of blocks are coded side by side, up to `opts.streams` blocks in all, each
/// forward call serving them all (the engine's results do not depend on how rows are
/// split into calls). On a CPU this gains little (a file's known positions already fill
/// the encoder's calls); decoding is where side by side pays ([`super::decompress_each`]).
/// `progress` hears the input bytes done over all inputs;
/// one input's error does not stop the others.
pub fn compress_each(
    model: &Model,
    inputs: &[&[u8]],
    opts: &CompressOptions,
    progress: Progress,
) -> Result<Vec<Outcome>> {
    opts.check()?;
    let mut results: Vec<Option<Outcome>> = (0..inputs.len()).map(|_| None).collect();
    let mut done = 0u64;
    let mut batch: Vec<Pending> = Vec::new();
    for (i, &data) in inputs.iter().enumerate() {
        let (apply, regions) = regions_for(data, opts);
        let job = match Job::new(model, data, &regions, opts, &[]) {
            Ok(job) => job,
            Err(e) => {
                results[i] = Some(Err(e));
                done += data.len() as u64;
                continue;
            }
        };
        if opts.trace || !job.one_group() {
            let mut out = Vec::new();
            let r = code_job(
                model,
                job,
                opts,
                &[],
                &mut out,
                &mut |d| progress(done + d),
                None,
            )
            .and_then(|stats| settle(model, data, apply, &regions, opts, out, stats));
            results[i] = Some(r);
            done += data.len() as u64;
            progress(done);
            continue;
        }
        let taken: usize = batch.iter().map(|p| p.job.lens.len()).sum();
        if taken + job.lens.len() > opts.streams as usize {
            done = run_batch(
                model,
                std::mem::take(&mut batch),
                opts,
                progress,
                done,
                &mut results,
            );
        }
        batch.push(Pending {
            index: i,
            job,
            apply,
            regions,
        });
    }
    run_batch(model, batch, opts, progress, done, &mut results);
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::internal("input left uncoded"))))
        .collect())
}

/// An input of [`compress_each`] waiting for its batch.
struct Pending<'m, 'd> {
    index: usize,
    job: Job<'m, 'd>,
    /// Whether the region finder applied, and the regions the job was made with.
    apply: bool,
    regions: Regions,
}

/// Codes `batch` side by side and puts each input's result in `results`; returns `done`
/// plus the batch's input bytes. Should the shared run fail, each input is coded alone,
/// so a failure is reported for the input it belongs to.
fn run_batch(
    model: &Model,
    mut batch: Vec<Pending>,
    opts: &CompressOptions,
    progress: Progress,
    done: u64,
    results: &mut [Option<Outcome>],
) -> u64 {
    if batch.is_empty() {
        return done;
    }
    // Each archive plans its share of a call's rows; how they are split changes nothing.
    let share = (opts.rows_per_call / batch.len()).max(1);
    for p in &mut batch {
        p.job.enc.rows_per_call = share;
    }
    let mut jobs: Vec<&mut Job> = batch.iter_mut().map(|p| &mut p.job).collect();
    let coded = lockstep(&mut jobs, &mut |d| progress(done + d));
    let mut done = done;
    for (k, p) in batch.into_iter().enumerate() {
        let data = p.job.data;
        let r = match &coded {
            Ok(payloads) => {
                let mut out = Vec::new();
                let mut job = p.job;
                let blocks = cut(&job.symbols, &job.lens);
                // A one-block archive's header follows its block; the others' precede.
                let head = match job.frame.single {
                    true => Ok(()),
                    false => job.frame.write_head(&mut out),
                };
                head.and_then(|_| {
                    job.frame.emit(
                        model,
                        &job.coded,
                        0,
                        &blocks,
                        &payloads[k],
                        &mut out,
                        &mut job.stats,
                    )
                })
                .and_then(|_| job.finish(&mut out, opts, &[]))
                .and_then(|stats| settle(model, data, p.apply, &p.regions, opts, out, stats))
            }
            Err(_) => {
                let mut out = Vec::new();
                let mut job = p.job;
                job.enc.rows_per_call = opts.rows_per_call;
                code_job(model, job, opts, &[], &mut out, &mut |_| {}, None)
                    .and_then(|stats| settle(model, data, p.apply, &p.regions, opts, out, stats))
            }
        };
        results[p.index] = Some(r);
        done += data.len() as u64;
    }
    progress(done);
    done
}

/// The one group of each job coded in lock step, every forward call shared; each job's
/// payloads.
fn lockstep(jobs: &mut [&mut Job], progress: Progress) -> Result<Vec<Vec<Vec<u8>>>> {
    let mut parts: Vec<(Vec<&[u32]>, &mut ArchiveEncoder, &mut Stats)> = jobs
        .iter_mut()
        .map(|j| (cut(&j.symbols, &j.lens), &mut j.enc, &mut j.stats))
        .collect();
    let mut groups: Vec<GroupState> = parts
        .iter_mut()
        .map(|(blocks, enc, _)| enc.begin_group(blocks))
        .collect();
    loop {
        let mut calls = Vec::with_capacity(parts.len());
        for ((blocks, enc, _), g) in parts.iter_mut().zip(&mut groups) {
            calls.push(enc.next_call(blocks, g)?);
        }
        if calls.iter().all(Option::is_none) {
            break;
        }
        let t = Instant::now();
        let mut ctxs = Vec::new();
        let mut shared = Vec::new();
        for ((_, enc, _), call) in parts.iter_mut().zip(&calls) {
            if let Some(c) = call {
                ctxs.push(&mut enc.state);
                shared.push((c.rows.as_slice(), c.want.as_slice()));
            }
        }
        Context::run_together(&mut ctxs, &shared)?;
        // The call's time is shared by rows.
        let secs = t.elapsed().as_secs_f64();
        let rows: usize = shared.iter().map(|c| c.0.len()).sum();
        // The archives are independent from here: their heads and predictors run in
        // parallel (each also spreads its own rows), which the archives cannot notice.
        parts
            .par_iter_mut()
            .zip(groups.par_iter_mut())
            .zip(calls.par_iter())
            .try_for_each(|(((blocks, enc, stats), g), call)| match call {
                Some(c) => {
                    stats.model_seconds += secs * c.rows.len() as f64 / rows.max(1) as f64;
                    enc.after_call(blocks, g, c, stats)
                }
                None => Ok(()),
            })?;
        progress(groups.iter().map(|g| g.bytes).sum());
    }
    Ok(groups.into_iter().map(GroupState::finish).collect())
}

/// An input's finished archive and figures: the other region layouts tried where the
/// finder applied ([`other_candidates`]).
fn settle(
    model: &Model,
    data: &[u8],
    apply: bool,
    regions: &Regions,
    opts: &CompressOptions,
    mut out: Vec<u8>,
    mut stats: Stats,
) -> Outcome {
    if apply {
        other_candidates(model, data, regions, opts, &[], &mut out, &mut stats)?;
    }
    stats.archive_bytes = out.len() as u64;
    Ok((out, stats))
}

/// `symbols` cut into consecutive blocks of `lens` symbols.
fn cut<'s>(symbols: &'s [u32], lens: &[usize]) -> Vec<&'s [u32]> {
    let mut blocks = Vec::with_capacity(lens.len());
    let mut at = 0;
    for &l in lens {
        blocks.push(&symbols[at..at + l]);
        at += l;
    }
    blocks
}

/// One archive being made: what is settled before coding (the transformed text, its
/// symbols and blocks, the header and the classical section), its encoder, and figures.
struct Job<'m, 'd> {
    data: &'d [u8],
    /// The text the blocks spell: the text regions, transformed.
    coded: Cow<'d, [u8]>,
    symbols: Vec<u32>,
    /// Symbols per block.
    lens: Vec<usize>,
    frame: Framing,
    stats: Stats,
    enc: ArchiveEncoder<'m>,
}

impl<'m, 'd> Job<'m, 'd> {
    /// Prepares the archive of `data` cut into `regions`: text regions through the model,
    /// binary ones through the classical coder (coded here).
    ///
    /// The text is first transformed when that pays and `opts.transform` allows it (CRLF
    /// line ends as LF); blocks hold the transformed bytes and the content checksum covers
    /// the original.
    fn new(
        model: &'m Model,
        data: &'d [u8],
        regions: &Regions,
        opts: &CompressOptions,
        variants: &[PredictorSettings],
    ) -> Result<Self> {
        let (text, binary) = regions.split(data);
        let (transform, coded, crlf) = transformed(data, regions, text, opts.transform);
        let section = if regions.has_binary() {
            Some(classical(data, regions, &binary, crlf)?)
        } else {
            None
        };
        let symbols = tokenize_checked(model, &coded)?;
        let block = block_len(
            symbols.len(),
            opts.block_tokens as usize,
            opts.block_stretch as usize,
            opts.streams as usize,
        );
        let lens = layout(symbols.len(), block);
        let streams = (opts.streams as usize).min(lens.len()).max(1);
        let mut header = header_for(model, opts, streams as u16, transform);
        // `block` is at most the format's limit, and at least `opts.block_tokens`.
        header.block_tokens = block as u32;
        if section.is_some() {
            header.version = format::VERSION_REGIONS;
        }
        let vocab = model.tokenizer.vocab_size();
        let stats = Stats {
            original_bytes: data.len() as u64,
            classic_bytes: binary.len() as u64,
            escapes: symbols.iter().filter(|&&s| s as usize >= vocab).count() as u64,
            ..Stats::default()
        };
        let enc = ArchiveEncoder::new(model, opts, variants, streams, !symbols.is_empty());
        Ok(Job {
            data,
            frame: Framing {
                header,
                section,
                single: lens.len() == 1,
            },
            coded,
            symbols,
            lens,
            stats,
            enc,
        })
    }

    /// Whether the archive is one group of blocks with some text: it can be coded beside
    /// other archives ([`compress_each`]).
    fn one_group(&self) -> bool {
        !self.lens.is_empty() && self.lens.len() <= self.enc.streams
    }

    /// Ends the archive (every group written) with its content checksum; its figures.
    fn finish(
        self,
        out: &mut Vec<u8>,
        opts: &CompressOptions,
        variants: &[PredictorSettings],
    ) -> Result<Stats> {
        let Job {
            data,
            coded,
            symbols,
            frame,
            mut stats,
            mut enc,
            ..
        } = self;
        format::write_end(out, &frame.header, &Checksum::of(opts.checksum, data))?;
        stats.symbols = symbols.len() as u64;
        stats.archive_bytes = out.len() as u64;
        stats.ideal_bits = enc.runs[0].bits();
        stats.variant_bits = enc.runs[1..].iter().map(|r| r.bits()).collect();
        if opts.trace {
            let tk = &enc.model.tokenizer;
            stats.trace = Some(super::Trace {
                lens: symbols
                    .iter()
                    .map(|&s| tk.symbol_bytes(s).len() as u32)
                    .collect(),
                text: coded.into_owned(),
                bits: enc.runs.iter_mut().map(PredictorRun::take_trace).collect(),
                labels: std::iter::once(&opts.predictor)
                    .chain(variants)
                    .map(|v| v.label())
                    .collect(),
            });
        }
        Ok(stats)
    }
}

/// The transform of the text stream `text` (the text regions of `data`, joined), the
/// bytes the blocks code, and the per-region CRLF flags where that transform is chosen:
/// CRLF → LF over the whole text where it qualifies, else, with binary regions, in each
/// text region that qualifies on its own (a tar of CRLF and LF files), else none.
fn transformed<'d>(
    data: &'d [u8],
    regions: &Regions,
    text: Cow<'d, [u8]>,
    allowed: bool,
) -> (Transform, Cow<'d, [u8]>, Vec<bool>) {
    if !allowed {
        return (Transform::None, text, Vec::new());
    }
    if Transform::choose(&text) == Transform::CrlfToLf {
        let coded = Transform::CrlfToLf.apply(&text).into_owned();
        return (Transform::CrlfToLf, Cow::Owned(coded), Vec::new());
    }
    if !regions.has_binary() {
        return (Transform::None, text, Vec::new());
    }
    let t = Transform::CrlfPerRegion;
    let flags: Vec<bool> = regions
        .text_regions(data)
        .map(|r| t.applies_to(r))
        .collect();
    if !flags.iter().any(|&f| f) {
        return (Transform::None, text, Vec::new());
    }
    let mut coded = Vec::with_capacity(text.len());
    for (r, &f) in regions.text_regions(data).zip(&flags) {
        if f {
            coded.extend_from_slice(&t.apply(r));
        } else {
            coded.extend_from_slice(r);
        }
    }
    (t, Cow::Owned(coded), flags)
}

/// The region section and classical payload for `binary`, the binary stream of `data`
/// cut into `regions`: one raw LZMA2 stream, or parts cut where the data changes kind
/// ([`Regions::binary_cuts`]: a tar's members of 64 KiB and more), each with its own
/// match-finder setting.
fn classical(
    data: &[u8],
    regions: &Regions,
    binary: &[u8],
    crlf: Vec<bool>,
) -> Result<(RegionSection, Vec<u8>)> {
    let lens = regions
        .lens
        .iter()
        .map(|&l| u32::try_from(l).map_err(|_| Error::internal("region over 4 GiB")))
        .collect::<Result<Vec<u32>>>()?;
    let coded_part = |piece: &[u8]| -> Result<(format::ClassicPart, Vec<u8>)> {
        let c = classic::encode(piece)?;
        let part = format::ClassicPart {
            len: piece.len() as u32,
            dict_log2: c.dict_log2,
            coded_len: c.bytes.len() as u32,
        };
        Ok((part, c.bytes))
    };
    let cuts = regions.binary_cuts(data);
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    if cuts.is_empty() || cuts.len() >= format::MAX_CLASSIC_PARTS as usize {
        pieces.push(coded_part(binary)?);
    } else {
        // The parts are not also compared with one stream: that would code every byte
        // twice more and halve the classical side's speed, for stretches of at least
        // 64 KiB that lose at most a cold start each.
        let mut from = 0;
        for &to in cuts.iter().chain(std::iter::once(&binary.len())) {
            pieces.push(coded_part(&binary[from..to])?);
            from = to;
        }
    }
    let mut payload = Vec::new();
    let mut parts = Vec::with_capacity(pieces.len());
    for (p, b) in pieces {
        parts.push(p);
        payload.extend_from_slice(&b);
    }
    let section = RegionSection {
        lens,
        crlf,
        parts,
        crc32: crc32fast::hash(binary),
    };
    Ok((section, payload))
}

/// What an archive's frames need besides the coded blocks.
struct Framing {
    header: Header,
    /// The region section and the classical payload, when there are binary regions.
    section: Option<(RegionSection, Vec<u8>)>,
    /// An archive of one block is written without frames: its header records the block,
    /// so it is written once the block is coded.
    single: bool,
}

impl Framing {
    /// The header, then the region section and the classical payload when there are any.
    fn write_head(&self, w: &mut Vec<u8>) -> Result<()> {
        self.header.write_to(w)?;
        if let Some((s, payload)) = &self.section {
            s.write_to(w)?;
            w.write_all(payload)?;
        }
        Ok(())
    }

    /// Writes a coded group whose blocks start at `offset` of `coded`; returns their
    /// length in coded bytes. A one-block archive's block goes in its header (written
    /// here) with the content checksum covering it.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        model: &Model,
        coded: &[u8],
        offset: u64,
        group: &[&[u32]],
        payloads: &[Vec<u8>],
        out: &mut Vec<u8>,
        stats: &mut Stats,
    ) -> Result<u64> {
        let mut entries = block_entries(model, coded, offset, group, payloads)?;
        if self.single {
            entries[0].crc32 = None;
            self.header.single = Some(entries[0]);
            self.write_head(out)?;
            format::write_single_payload(out, &self.header, &payloads[0])?;
        } else {
            let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
            format::write_group(out, &self.header, &entries, &refs)?;
        }
        stats.blocks += entries.len() as u64;
        Ok(entries.iter().map(|e| e.original_len as u64).sum())
    }
}

/// The input's symbols, checked to spell the input exactly. The tokenizer verifies itself;
/// this checks once more because a mistake would only show when someone decompresses,
/// possibly years later.
fn tokenize_checked(model: &Model, data: &[u8]) -> Result<Vec<u32>> {
    let tk = &model.tokenizer;
    let symbols = tk.encode(data);
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
    Ok(symbols)
}

/// The header of an archive made with `model` and `opts`, `streams` blocks side by side,
/// with `transform` applied to the input (a one-block archive's block is added once coded).
fn header_for(model: &Model, opts: &CompressOptions, streams: u16, transform: Transform) -> Header {
    Header {
        version: format::VERSION,
        model: HashPrefix::of(&model.sha256, format::MODEL_ID_LEN),
        tokenizer: HashPrefix::of(&model.tokenizer.identity(), format::TOKENIZER_ID_LEN),
        backend: model.net.backend(),
        num_symbols: model.tokenizer.num_symbols() as u32,
        block_tokens: opts.block_tokens,
        streams,
        window_policy: opts.window_policy,
        start_token: model.start_token,
        window: opts.window,
        keep: opts.keep,
        predictor: opts.predictor.to_bytes(),
        transform,
        checksum: opts.checksum,
        single: None,
    }
}

/// The group frame's entries for coded blocks: each block's bytes (as coded, after the
/// transform) start at `offset` of `coded`, right after the previous block's.
fn block_entries(
    model: &Model,
    coded: &[u8],
    offset: u64,
    group: &[&[u32]],
    payloads: &[Vec<u8>],
) -> Result<Vec<BlockEntry>> {
    let mut at = offset as usize;
    let mut entries = Vec::with_capacity(group.len());
    for (b, payload) in group.iter().zip(payloads) {
        let len: usize = b
            .iter()
            .map(|&s| model.tokenizer.symbol_bytes(s).len())
            .sum();
        // The symbols were checked to spell `coded`, so this range always exists.
        let block = coded
            .get(at..at + len)
            .ok_or_else(|| Error::internal("block beyond the input"))?;
        at += len;
        entries.push(BlockEntry {
            original_len: len as u32,
            symbol_count: b.len() as u32,
            coded_len: payload.len() as u32,
            crc32: Some(crc32fast::hash(block)),
        });
    }
    Ok(entries)
}

/// The rows of one forward call and the steps they serve.
struct Call {
    rows: Vec<Row>,
    want: Vec<usize>,
    /// Per step: (stream, index into `want` and the call's logits).
    steps: Vec<Vec<(usize, usize)>>,
    /// The step after the call's last.
    end: usize,
}

/// The encoder of one archive: model state and the predictor runs, the coded one first.
struct ArchiveEncoder<'m> {
    model: &'m Model,
    rows_per_call: usize,
    /// Blocks side by side in a group.
    streams: usize,
    window: Window,
    state: Context<'m>,
    runs: Vec<PredictorRun>,
}

/// Where a group being coded stands: each block's range coder and cache length as
/// planned, the next step, and the original bytes coded.
struct GroupState {
    encoders: Vec<BlockEncoder>,
    cache_len: Vec<usize>,
    p0: usize,
    max_len: usize,
    bytes: u64,
}

impl GroupState {
    /// Each block's payload.
    fn finish(self) -> Vec<Vec<u8>> {
        self.encoders
            .into_iter()
            .map(BlockEncoder::finish)
            .collect()
    }
}

impl<'m> ArchiveEncoder<'m> {
    /// An encoder for `streams` blocks side by side. Without `text` (an archive of binary
    /// regions alone) it never runs, so it builds neither the active head (a gather of
    /// 37,000 output rows for Gemma) nor the predictors' tables: that setup would be most
    /// of the time such an archive takes. Its runs then predict with the language model
    /// alone and stay empty.
    fn new(
        model: &'m Model,
        opts: &CompressOptions,
        variants: &[PredictorSettings],
        streams: usize,
        text: bool,
    ) -> Self {
        let idle = PredictorSettings::llm_only();
        let settings = |s| if text { s } else { &idle };
        ArchiveEncoder {
            model,
            rows_per_call: opts.rows_per_call,
            streams,
            window: Window::new(model, opts.window, opts.keep, opts.window_policy),
            state: if text && opts.predictor.active_log2 > 0 {
                Context::with_active(&model.net, initial_active(model, &opts.predictor))
            } else {
                Context::new(&model.net)
            },
            runs: std::iter::once(&opts.predictor)
                .chain(variants)
                .map(|s| PredictorRun::new(model, settings(s), streams))
                .collect(),
        }
    }

    /// Takes up a saved run: each predictor run's state and the active head's set (the
    /// model's caches start each group empty, so nothing else carries over).
    fn restore(&mut self, runs: Vec<RunState>, active: Option<Vec<u32>>) -> Result<()> {
        if runs.len() != self.runs.len() || active.is_some() != self.state.active().is_some() {
            return Err(Error::internal("checkpoint of another encoder layout"));
        }
        for (run, saved) in self.runs.iter_mut().zip(runs) {
            run.restore(saved);
        }
        if let Some(ids) = active {
            self.state = Context::with_active(&self.model.net, ids);
        }
        Ok(())
    }

    /// Codes one group of blocks side by side; returns each block's payload. `progress`
    /// hears the group's original bytes done after each call.
    fn encode_group(
        &mut self,
        group: &[&[u32]],
        stats: &mut Stats,
        progress: Progress,
    ) -> Result<Vec<Vec<u8>>> {
        let mut g = self.begin_group(group);
        while let Some(call) = self.next_call(group, &mut g)? {
            let t = Instant::now();
            self.state.run(&call.rows, &call.want)?;
            stats.model_seconds += t.elapsed().as_secs_f64();
            self.after_call(group, &mut g, &call, stats)?;
            progress(g.bytes);
        }
        Ok(g.finish())
    }

    /// Readies the caches and predictor runs for a group.
    fn begin_group(&mut self, group: &[&[u32]]) -> GroupState {
        let lens: Vec<usize> = group.iter().map(|b| b.len()).collect();
        self.state
            .prepare(group.len(), cache_capacity(&lens, self.window.window));
        for run in &mut self.runs {
            run.begin_group(&lens);
        }
        GroupState {
            encoders: group.iter().map(|_| BlockEncoder::new()).collect(),
            cache_len: vec![0; group.len()],
            p0: 0,
            max_len: lens.iter().copied().max().unwrap_or(0),
            bytes: 0,
        }
    }

    /// The group's next forward call, its slides applied to the caches; `None` once
    /// every step is coded.
    fn next_call(&mut self, group: &[&[u32]], g: &mut GroupState) -> Result<Option<Call>> {
        if g.p0 >= g.max_len {
            return Ok(None);
        }
        self.plan_call(group, g.p0, g.max_len, &mut g.cache_len)
            .map(Some)
    }

    /// Codes the steps of `call`, whose forward pass has run: the active head's logits,
    /// the full head's for symbols new to the set, then the coder.
    fn after_call(
        &mut self,
        group: &[&[u32]],
        g: &mut GroupState,
        call: &Call,
        stats: &mut Stats,
    ) -> Result<()> {
        let p0 = g.p0;
        let t = Instant::now();
        let sizes = self.grow_active(group, p0, &call.steps);
        let hidden = self.state_outputs(call.want.len());
        let mut head = Vec::new();
        self.state.head(&hidden, &mut head);
        let news = self.new_symbols(group, p0, call, &sizes, &hidden);
        stats.model_seconds += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let heads = CallHeads {
            sizes,
            head,
            news,
            hidden,
        };
        self.code_steps(group, p0, &call.steps, &heads, &mut g.encoders)?;
        stats.predict_seconds += t.elapsed().as_secs_f64();
        for b in group {
            for &y in b.get(p0..call.end.min(b.len())).unwrap_or(&[]) {
                g.bytes += self.model.tokenizer.symbol_bytes(y).len() as u64;
            }
        }
        g.p0 = call.end;
        Ok(())
    }

    /// Rows for steps `p0..` until the call is full or a stream's window would slide in the
    /// middle of it: a call can only slide a cache at its start, so slides are applied
    /// here, before the call. `cache_len` is each stream's cache length as planned.
    fn plan_call(
        &mut self,
        group: &[&[u32]],
        p0: usize,
        max_len: usize,
        cache_len: &mut Vec<usize>,
    ) -> Result<Call> {
        let (mut rows, mut want, mut steps) = (Vec::new(), Vec::new(), Vec::new());
        let mut p = p0;
        while p < max_len {
            let mut trial = Vec::new();
            let mut items = Vec::new();
            let mut lens_after = cache_len.clone();
            let mut slides = Vec::new();
            for (s, b) in group.iter().enumerate() {
                if p >= b.len() {
                    continue;
                }
                let slide = self.window.rows_for(s, &b[..p], cache_len[s], &mut trial);
                if slide != Slide::None {
                    slides.push((s, slide));
                }
                lens_after[s] = self.window.len_after(slide, cache_len[s]);
                items.push((s, rows.len() + trial.len() - 1));
            }
            let too_many = !rows.is_empty() && rows.len() + trial.len() > self.rows_per_call;
            if (!slides.is_empty() && p > p0) || too_many {
                break;
            }
            for &(s, slide) in &slides {
                self.state.make_room(s, slide, self.window.keep)?;
            }
            let mut stepped = Vec::with_capacity(items.len());
            for (s, row_index) in items {
                stepped.push((s, want.len()));
                want.push(row_index);
            }
            rows.extend(trial);
            steps.push(stepped);
            *cache_len = lens_after;
            p += 1;
        }
        Ok(Call {
            rows,
            want,
            steps,
            end: p,
        })
    }

    /// With the active head: adds the call's symbols to the active set in coding order
    /// (steps, then streams) and returns the set's size as each step sees it, before its
    /// own symbols join. The head then has rows for the whole call at once, and each step
    /// reads the first rows, exactly those the decoder will have.
    fn grow_active(
        &mut self,
        group: &[&[u32]],
        p0: usize,
        steps: &[Vec<(usize, usize)>],
    ) -> Vec<usize> {
        let mut sizes = Vec::with_capacity(steps.len());
        for (k, items) in steps.iter().enumerate() {
            sizes.push(self.state.active().map_or(0, |h| h.len()));
            for &(s, _) in items {
                self.state.activate(group[s][p0 + k]);
            }
        }
        sizes
    }

    /// The full head's logits for the call's rows whose symbol is new to the active set
    /// at its step, in one pass over the head: `(row of each wanted row, logits)`.
    fn new_symbols(
        &self,
        group: &[&[u32]],
        p0: usize,
        call: &Call,
        sizes: &[usize],
        hidden: &[f32],
    ) -> (Vec<Option<usize>>, Vec<f32>) {
        let mut rows = vec![None; call.want.len()];
        if self.state.active().is_none() {
            return (rows, Vec::new());
        }
        let d = self.state.width();
        let mut picked = Vec::new();
        for (k, items) in call.steps.iter().enumerate() {
            let alpha = alphabet(&self.state, sizes[k]);
            for &(s, li) in items {
                if alpha.index_of(group[s][p0 + k]).is_none() {
                    rows[li] = Some(picked.len() / d);
                    picked.extend_from_slice(&hidden[li * d..(li + 1) * d]);
                }
            }
        }
        let mut full = Vec::new();
        if !picked.is_empty() {
            self.state.head_full(&picked, &mut full);
        }
        (rows, full)
    }

    /// The last call's `n` outputs back to back (hidden states in active mode; empty
    /// otherwise, where the outputs are the logits themselves).
    fn state_outputs(&self, n: usize) -> Vec<f32> {
        if self.state.active().is_none() {
            return Vec::new();
        }
        (0..n).flat_map(|i| self.state.output(i).to_vec()).collect()
    }

    /// Predicts and codes the call's steps (`p0..`), in step then stream order, and lets
    /// every predictor run learn each step's symbols.
    fn code_steps(
        &mut self,
        group: &[&[u32]],
        p0: usize,
        steps: &[Vec<(usize, usize)>],
        heads: &CallHeads,
        encoders: &mut [BlockEncoder],
    ) -> Result<()> {
        let CallHeads {
            sizes,
            head,
            news,
            hidden,
        } = heads;
        let width = self.state.active().map_or(0, |h| h.len());
        let d = self.state.width();
        let vocab = self.model.net.vocab();
        let mut cdf = Cdf::default();
        for (k, items) in steps.iter().enumerate() {
            let step = p0 + k;
            let m = sizes[k];
            let alpha = alphabet(&self.state, m);
            let syms: Vec<u32> = items.iter().map(|&(s, _)| group[s][step]).collect();
            let logits: Vec<Item> = items
                .iter()
                .map(|&(s, li)| match alpha.escape() {
                    Some(_) => (
                        s,
                        &head[li * width..li * width + m],
                        Some(&hidden[li * d..(li + 1) * d]),
                    ),
                    None => (s, self.state.output(li), None),
                })
                .collect();
            for run in &mut self.runs {
                run.predict(&logits, alpha);
            }
            let mut extra = vec![0f64; items.len()];
            for (i, (&(s, li), &y)) in items.iter().zip(&syms).enumerate() {
                let code = code_of(alpha, y);
                encoders[s].encode(code as u32, self.runs[0].cdf(i))?;
                if Some(code) == alpha.escape() {
                    // New to the set: the symbol itself, from the full head's logits.
                    let r =
                        news.0[li].ok_or_else(|| Error::internal("new symbol without logits"))?;
                    let full = &news.1[r * vocab..(r + 1) * vocab];
                    self.runs[0].new_symbol_cdf(full, alpha, &mut cdf);
                    encoders[s].encode(y, &cdf)?;
                    extra[i] = cdf.cost_bits(y as usize);
                }
            }
            for run in &mut self.runs {
                run.update(items.iter().map(|i| i.0), &syms, alpha, &extra);
            }
        }
        Ok(())
    }
}

/// What the head gave for one encoder call in active mode (all empty otherwise).
struct CallHeads {
    /// The active set's size at each step of the call.
    sizes: Vec<usize>,
    /// Logits over the whole set, one row per wanted row.
    head: Vec<f32>,
    /// Full-head logits of the rows whose symbol is new to the set: `(row of each
    /// wanted row, logits)`.
    news: (Vec<Option<usize>>, Vec<f32>),
    /// The hidden states, one row per wanted row.
    hidden: Vec<f32>,
}
