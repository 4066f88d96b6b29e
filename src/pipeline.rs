//! Compression and decompression: blocks of symbols coded in lock-step groups.
//!
//! The input is tokenized once, cut into blocks of at most `block_tokens` symbols, and the
//! blocks are taken `streams` at a time as a group. Inside a group every block is an
//! independent stream with its own cache and range coder; streams advance one position per
//! step, and within a step they are handled in stream order — the order both directions
//! use, so stateful predictors stay in sync. The encoder knows every symbol in advance and
//! scores many positions per forward call; the decoder scores one per stream per step. The
//! engine's results do not depend on that split (see `engine`).

use crate::coder::{BlockDecoder, BlockEncoder, Cdf};
use crate::engine::{backend_name, KvCache, Row};
use crate::format::{self, ArchiveTally, BlockEntry, Frame, Header, Trailer};
use crate::model::{describe_identity, hex, Model};
use crate::predict::{Predictor, PredictorSettings};
use crate::{Error, ErrorKind, Result};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

/// Encoder settings (everything the decoder needs is derived from them into the header).
#[derive(Debug, Clone)]
pub struct CompressOptions {
    /// Maximum symbols per block: the context window.
    pub block_tokens: u32,
    /// Maximum blocks coded side by side.
    pub streams: u16,
    /// Maximum rows (positions × streams) per forward call while encoding.
    pub rows_per_call: usize,
    pub predictor: PredictorSettings,
}

impl Default for CompressOptions {
    fn default() -> Self {
        CompressOptions {
            block_tokens: 1024,
            streams: 64,
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
    /// Sum over symbols of their cost in bits under the coded distribution.
    pub ideal_bits: f64,
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
        window_policy: 0,
        start_token: model.start_token,
        predictor: opts.predictor.to_bytes(),
    }
}

/// Per-run state shared by both directions: caches, the predictor template and scratch.
struct Lanes {
    caches: Vec<KvCache>,
    predictor: Predictor,
    cdfs: Vec<Cdf>,
    logits: Vec<f32>,
}

impl Lanes {
    fn new(model: &Model, settings: &PredictorSettings, streams: usize, capacity: usize) -> Self {
        let tk = &model.tokenizer;
        Lanes {
            caches: (0..streams)
                .map(|_| model.llama.new_cache(capacity))
                .collect(),
            predictor: Predictor::new(
                settings,
                tk.vocab_size(),
                tk.num_symbols(),
                &model.control_tokens,
            ),
            cdfs: Vec::new(),
            logits: Vec::new(),
        }
    }

    fn reset(&mut self) {
        for c in &mut self.caches {
            c.len = 0;
        }
    }

    /// Runs the model on `rows` and builds one distribution per row into `self.cdfs`.
    /// Distributions depend only on their own row's logits, so they are built in parallel.
    fn step(&mut self, model: &Model, rows: &[Row], stats: &mut Stats) -> Result<()> {
        let vocab = model.llama.cfg.vocab;
        self.logits.resize(rows.len() * vocab, 0.0);
        let t = std::time::Instant::now();
        model
            .llama
            .forward(&mut self.caches, rows, &mut self.logits)?;
        stats.model_seconds += t.elapsed().as_secs_f64();
        self.cdfs.resize_with(rows.len(), Cdf::default);
        let template = &self.predictor;
        self.cdfs[..rows.len()]
            .par_iter_mut()
            .zip(self.logits.par_chunks(vocab))
            .for_each_init(|| template.clone(), |p, (cdf, l)| p.distribution(l, cdf));
        Ok(())
    }
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

/// Compresses `data` into one archive written to `out`.
pub fn compress<W: Write>(
    model: &Model,
    data: &[u8],
    opts: &CompressOptions,
    out: &mut W,
    progress: Progress,
) -> Result<Stats> {
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

    let bt = opts.block_tokens as usize;
    let blocks: Vec<&[u32]> = symbols.chunks(bt).collect();
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
    let mut lanes = Lanes::new(model, &opts.predictor, streams, bt);
    let mut offset = 0usize;
    let mut done_bytes = 0u64;
    for group in blocks.chunks(streams) {
        lanes.reset();
        let mut encoders: Vec<BlockEncoder> = group.iter().map(|_| BlockEncoder::new()).collect();
        let max_len = group.iter().map(|b| b.len()).max().unwrap_or(0);
        let per_call = (opts.rows_per_call / group.len()).max(1);
        let mut p0 = 0;
        while p0 < max_len {
            let p1 = (p0 + per_call).min(max_len);
            // Rows in step-major order: (p0, s0), (p0, s1), …, (p0+1, s0), …
            let mut rows = Vec::new();
            for p in p0..p1 {
                for (s, b) in group.iter().enumerate() {
                    if p < b.len() {
                        let token = if p == 0 {
                            model.start_token
                        } else {
                            model_input(b[p - 1], vocab, model.start_token)
                        };
                        rows.push(Row {
                            stream: s,
                            token,
                            pos: p,
                        });
                    }
                }
            }
            lanes.step(model, &rows, &mut stats)?;
            for (r, cdf) in rows.iter().zip(&lanes.cdfs) {
                let sym = group[r.stream][r.pos];
                stats.ideal_bits += cdf.cost_bits(sym as usize);
                encoders[r.stream].encode(sym, cdf)?;
            }
            p0 = p1;
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
    let mut input = CountingReader {
        inner: input,
        count: 0,
    };
    let mut stats = Stats::default();
    let mut archives = 0u64;
    while let Some(header) = Header::read_from(&mut input)? {
        archives += 1;
        decompress_one(model, &header, &mut input, out, &mut stats, progress)?;
    }
    if archives == 0 {
        return Err(Error::truncated("header"));
    }
    stats.archive_bytes = input.count;
    Ok(stats)
}

fn decompress_one<R: Read, W: Write>(
    model: &Model,
    header: &Header,
    input: &mut R,
    out: &mut W,
    stats: &mut Stats,
    progress: Progress,
) -> Result<()> {
    let settings = check_header(model, header)?;
    let tk = &model.tokenizer;
    let vocab = tk.vocab_size();
    let streams = header.streams as usize;
    let mut lanes = Lanes::new(model, &settings, streams, header.block_tokens as usize);
    let mut tally = ArchiveTally::new();
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
        lanes.reset();
        let n = entries.len();
        let mut decoders = payloads
            .iter()
            .map(|p| BlockDecoder::new(p))
            .collect::<Result<Vec<_>>>()?;
        let mut outputs: Vec<Vec<u8>> = entries
            .iter()
            .map(|e| Vec::with_capacity(e.original_len as usize))
            .collect();
        let mut last: Vec<u32> = vec![model.start_token; n];
        let max_len = entries
            .iter()
            .map(|e| e.symbol_count as usize)
            .max()
            .unwrap_or(0);
        for p in 0..max_len {
            let rows: Vec<Row> = (0..n)
                .filter(|&s| p < entries[s].symbol_count as usize)
                .map(|s| Row {
                    stream: s,
                    token: model_input(last[s], vocab, model.start_token),
                    pos: p,
                })
                .collect();
            lanes.step(model, &rows, stats)?;
            for (r, cdf) in rows.iter().zip(&lanes.cdfs) {
                let s = r.stream;
                let sym = decoders[s].decode(cdf)?;
                let bytes = tk.symbol_bytes(sym);
                if outputs[s].len() + bytes.len() > entries[s].original_len as usize {
                    return Err(Error::new(ErrorKind::ChecksumMismatch {
                        what: "block (decoded past its length)",
                    }));
                }
                outputs[s].extend_from_slice(bytes);
                last[s] = sym;
                stats.symbols += 1;
            }
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
            "    blocks       ≤ {} tokens each, {} side by side, window policy {}",
            h.block_tokens, h.streams, h.window_policy
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
