//! Many files in one run (`lmzip a b c`, `-r DIR`): small inputs are coded side by side,
//! each forward pass of the model serving them all, while every output stays its own file
//! with gzip's rules (one archive per input, temporary file renamed into place, nothing
//! overwritten without `-f`, inputs kept unless `--rm`).

use super::{
    destination, display_name, is_broken_pipe, model, print_stats, process_one, progress,
    write_atomically, CodecArgs, Dest, LazyModel, Mode, SUFFIX,
};
use anyhow::{bail, Context, Result};
use lmzip::Stats;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// Inputs larger than this are coded on their own: at the default level such a file fills
/// a group of blocks by itself, so side by side it would gain nothing.
const BATCH_MAX_BYTES: u64 = 1 << 20;

/// Files read into memory for one library call, at most (their number, their bytes).
const CHUNK_FILES: usize = 64;
const CHUNK_BYTES: u64 = 16 << 20;

/// Blocks decoded side by side at most: the default level's streams per group.
const DECODE_STREAMS: usize = 16;

/// Whether a run of `inputs` may code them side by side: several files, each output a
/// file of its own (or none, testing).
pub(super) fn applies(a: &CodecArgs, inputs: &[PathBuf]) -> bool {
    inputs.len() > 1
        && a.output.is_none()
        && !a.stdout
        && a.share.is_none()
        && a.member_size.is_none()
        && !a.resume
        && !super::auto_model(&a.model)
        && inputs.iter().all(|p| p.as_os_str() != "-")
}

/// One file's output and figures, or why it failed.
type Done = Result<(Vec<u8>, Stats)>;

/// An input checked and read, waiting for its chunk.
struct Ready {
    input: PathBuf,
    dest: Dest,
    data: Vec<u8>,
}

/// Processes `inputs` (see [`applies`]); returns how many failed, each reported on
/// standard error as it happens. A closed standard error or similar fatal error ends the
/// run.
pub(super) fn run(
    mode: Mode,
    a: &CodecArgs,
    inputs: &[PathBuf],
    lazy: &mut LazyModel,
) -> Result<usize> {
    let mut failed = 0usize;
    let mut chunk: Vec<Ready> = Vec::new();
    for input in inputs {
        match ready(mode, a, input) {
            Err(e) => {
                eprintln!("lmzip: {}: {e:#}", input.display());
                failed += 1;
            }
            // Large: on its own, streamed as a single file is.
            Ok(None) => {
                if let Err(e) = process_one(mode, a, input, lazy) {
                    if is_broken_pipe(&e) {
                        return Err(e);
                    }
                    eprintln!("lmzip: {}: {e:#}", input.display());
                    failed += 1;
                }
            }
            Ok(Some(r)) => {
                chunk.push(r);
                let bytes: u64 = chunk.iter().map(|r| r.data.len() as u64).sum();
                if chunk.len() >= CHUNK_FILES || bytes >= CHUNK_BYTES {
                    failed += run_chunk(mode, a, std::mem::take(&mut chunk), lazy);
                }
            }
        }
    }
    failed += run_chunk(mode, a, chunk, lazy);
    Ok(failed)
}

/// The checks a single file gets before any work (a regular file; its output's name is
/// free unless `-f`), then its bytes; `None` when it is large enough to run alone.
fn ready(mode: Mode, a: &CodecArgs, input: &Path) -> Result<Option<Ready>> {
    let meta = std::fs::metadata(input).context("cannot open")?;
    if !meta.is_file() {
        bail!("not a regular file; skipped");
    }
    let dest = destination(mode, a, input, false)?;
    if let Dest::File(out) = &dest {
        if out.exists() && !a.force {
            bail!("{} already exists; use -f to overwrite", out.display());
        }
    }
    if meta.len() > BATCH_MAX_BYTES {
        return Ok(None);
    }
    let data = std::fs::read(input).context("cannot read input")?;
    Ok(Some(Ready {
        input: input.to_path_buf(),
        dest,
        data,
    }))
}

/// Codes one chunk side by side and writes each result; returns how many failed.
fn run_chunk(mode: Mode, a: &CodecArgs, chunk: Vec<Ready>, lazy: &mut LazyModel) -> usize {
    if chunk.is_empty() {
        return 0;
    }
    let results = match mode {
        Mode::Compress => compress_chunk(a, &chunk, lazy),
        Mode::Decompress | Mode::Test => decode_chunk(a, &chunk, lazy),
    };
    let mut failed = 0;
    for (r, result) in chunk.iter().zip(results) {
        if let Err(e) = result.and_then(|(bytes, stats)| keep(mode, a, r, &bytes, &stats)) {
            eprintln!("lmzip: {}: {e:#}", r.input.display());
            failed += 1;
        }
    }
    failed
}

/// A bar over the whole chunk.
fn bar(a: &CodecArgs, total: u64, files: usize) -> progress::Progress {
    progress::Progress::new(
        !a.quiet && std::io::stderr().is_terminal(),
        Some(total),
        format!("{files} files"),
    )
}

/// Each input's archive and figures, the inputs coded side by side.
fn compress_chunk(a: &CodecArgs, chunk: &[Ready], lazy: &mut LazyModel) -> Vec<Done> {
    let all_fail = |e: anyhow::Error| {
        chunk
            .iter()
            .map(|_| Err(anyhow::anyhow!("{e:#}")))
            .collect()
    };
    let model = match model::resolve(a.model.model.as_deref())
        .map_err(anyhow::Error::from)
        .and_then(|path| lazy.get(&path, a.encode.backend))
    {
        Ok(m) => m,
        Err(e) => return all_fail(e),
    };
    let opts = a.encode.options(model);
    let data: Vec<&[u8]> = chunk.iter().map(|r| r.data.as_slice()).collect();
    let mut bar = bar(a, data.iter().map(|d| d.len() as u64).sum(), data.len());
    let results = lmzip::compress_each(model, &data, &opts, &mut |d| bar.set(d));
    bar.finish();
    let results = match results {
        Ok(r) => r,
        Err(e) => return all_fail(e.into()),
    };
    let mut results: Vec<Done> = results
        .into_iter()
        .map(|r| r.map_err(anyhow::Error::from))
        .collect();
    if a.verify {
        // Decoded side by side too, each compared with its input.
        let archives: Vec<&[u8]> = results
            .iter()
            .map(|r| r.as_ref().map_or(&[][..], |(b, _)| b.as_slice()))
            .collect();
        let decoded = lmzip::decompress_each(
            model,
            &archives,
            lmzip::DecodeOptions::default(),
            DECODE_STREAMS,
            &mut |_| {},
        );
        for ((r, d), input) in results.iter_mut().zip(decoded).zip(&data) {
            if r.is_ok() && d.map(|(o, _)| o).ok().as_deref() != Some(*input) {
                *r = Err(anyhow::anyhow!(
                    "verification failed, nothing written: the new archive does not decode \
                     to the input (a bug in lmzip: please report it)"
                ));
            }
        }
    }
    results
}

/// Each archive's output and figures, decoded side by side with the others that need the
/// same model and backend.
fn decode_chunk(a: &CodecArgs, chunk: &[Ready], lazy: &mut LazyModel) -> Vec<Done> {
    let mut results: Vec<Option<Done>> = chunk.iter().map(|_| None).collect();
    // Each archive's model and backend; those that cannot be told fail here.
    let mut keys: Vec<(PathBuf, u16, usize)> = Vec::new();
    for (i, r) in chunk.iter().enumerate() {
        match super::archive_model(a, &r.data) {
            Ok((path, backend)) => keys.push((path, backend, i)),
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    keys.sort();
    let total: u64 = chunk
        .iter()
        .map(|r| super::archive_content_len(&r.data).unwrap_or(0))
        .sum();
    let mut bar = bar(a, total, chunk.len());
    let mut done = 0u64;
    for same in keys.chunk_by(|x, y| (&x.0, x.1) == (&y.0, y.1)) {
        let (path, backend) = (&same[0].0, same[0].1);
        let model = match lazy.get(path, backend) {
            Ok(m) => m,
            Err(e) => {
                for &(_, _, i) in same {
                    results[i] = Some(Err(anyhow::anyhow!("{e:#}")));
                }
                continue;
            }
        };
        let archives: Vec<&[u8]> = same
            .iter()
            .map(|&(_, _, i)| chunk[i].data.as_slice())
            .collect();
        let decoded = lmzip::decompress_each(
            model,
            &archives,
            lmzip::DecodeOptions::default(),
            DECODE_STREAMS,
            &mut |d| bar.set(done + d),
        );
        for (&(_, _, i), d) in same.iter().zip(decoded) {
            done += d.as_ref().map_or(0, |(o, _)| o.len() as u64);
            results[i] = Some(d.map_err(anyhow::Error::from));
        }
    }
    bar.finish();
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("not decoded"))))
        .collect()
}

/// Writes one input's result where it goes, removes the input with `--rm`, and reports.
fn keep(mode: Mode, a: &CodecArgs, r: &Ready, bytes: &[u8], stats: &Stats) -> Result<()> {
    if let Dest::File(out) = &r.dest {
        write_atomically(out, a.force, &r.input, false, |w| {
            w.write_all(bytes)?;
            Ok(())
        })?;
        if a.rm {
            std::fs::remove_file(&r.input)
                .context("output written, but removing the input failed")?;
        }
    }
    // Side by side, a file's time is its share of the shared calls and its own predictors.
    let secs = stats.model_seconds + stats.predict_seconds;
    print_stats(mode, a, &display_name(&r.input, false), stats, secs);
    Ok(())
}

/// `-r`: the files under `inputs`' folders (not following links), sorted by name, each
/// folder's files after the inputs named before it; in compression the archives already
/// there are left out, in decompression everything but archives.
pub(super) fn expand(mode: Mode, inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.as_os_str() != "-" && std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
            walk(mode, p, &mut out).with_context(|| format!("cannot read {}", p.display()))?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(mode: Mode, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let t = e.file_type()?;
        let path = e.path();
        if t.is_dir() {
            walk(mode, &path, out)?;
        } else if t.is_file() {
            let archive = path.extension().is_some_and(|x| x == SUFFIX);
            if archive == (mode != Mode::Compress) {
                out.push(path);
            }
        }
    }
    Ok(())
}
