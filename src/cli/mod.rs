//! The command line: turns parsed arguments into library calls and file operations.
//!
//! File handling follows gzip and zstd: outputs go to a temporary file in the destination
//! folder and are renamed into place only when complete and verified, so an error or an
//! interruption never leaves a partial file; nothing is overwritten without `-f`; inputs are
//! kept unless `--rm` is given.

mod args;
mod batch;
mod peers;
mod progress;
mod render;

use anyhow::{anyhow, bail, Context, Result};
use args::{BenchArgs, Cli, CodecArgs, Command, InfoArgs, ModelArgs};
use clap::{CommandFactory, FromArgMatches};
use lmzip::{model, Model, Stats};
use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Archive file name suffix.
const SUFFIX: &str = "lmz";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Compress,
    Decompress,
    Test,
}

/// Temporary outputs in progress, removed if the run is interrupted.
static IN_PROGRESS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// The checkpoint of the `--resume` run in progress, kept if the run is interrupted.
static CHECKPOINT: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// On Ctrl-C, SIGTERM or SIGHUP: remove partial outputs, then exit 130 as shells expect.
/// (A temporary file is otherwise removed when dropped, which a signal would skip.) A
/// `--resume` checkpoint stays: it holds the progress up to its last group.
fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        if let Ok(list) = IN_PROGRESS.lock() {
            for p in list.iter() {
                let _ = std::fs::remove_file(p);
            }
        }
        // Start on a clean line if a progress bar was being drawn.
        if io::stderr().is_terminal() {
            eprint!("\r\x1b[K");
        }
        eprintln!("lmzip: interrupted; partial output removed");
        if let Some(c) = CHECKPOINT.lock().ok().and_then(|c| c.clone()) {
            // A save cut short leaves its temporary file; the checkpoint itself is whole.
            let mut tmp = c.clone().into_os_string();
            tmp.push(".tmp");
            let _ = std::fs::remove_file(tmp);
            if c.exists() {
                eprintln!(
                    "lmzip: progress kept in {}: run the same command again to continue",
                    c.display()
                );
            }
        }
        std::process::exit(130);
    });
}

/// Entry point for `main`.
pub fn run() -> Result<ExitCode> {
    let matches = Cli::command().get_matches_from(args::expand_level_flags(std::env::args_os()));
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    if let Some((name, _)) = matches.subcommand() {
        // Global options (--model, --threads) may come before the subcommand's name; any
        // other option there would be silently ignored, so it is a usage error instead.
        let misplaced: Vec<String> = Cli::command()
            .get_arguments()
            .filter(|a| !a.is_global_set())
            .filter(|a| {
                matches.value_source(a.get_id().as_str())
                    == Some(clap::parser::ValueSource::CommandLine)
            })
            .map(|a| match (a.get_long(), a.get_short()) {
                (Some(l), _) => format!("--{l}"),
                (None, Some(c)) => format!("-{c}"),
                (None, None) => a.get_id().to_string(),
            })
            .collect();
        if !misplaced.is_empty() {
            return Err(usage(
                clap::error::ErrorKind::ArgumentConflict,
                &format!(
                    "{} must come after the subcommand name ({name} …)",
                    misplaced.join(", ")
                ),
            ));
        }
    }
    install_interrupt_handler();
    match cli.command {
        Some(Command::Compress(a)) => codec(Mode::Compress, a),
        Some(Command::Decompress(a)) => codec(Mode::Decompress, a),
        Some(Command::Test(a)) => codec(Mode::Test, a),
        Some(Command::Bench(a)) => bench(a),
        Some(Command::Info(a)) => info(a),
        Some(Command::Completions { shell }) => {
            clap_complete::generate(shell, &mut Cli::command(), "lmzip", &mut io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Man) => {
            clap_mangen::Man::new(Cli::command()).render(&mut io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let a = cli.codec;
            let mode = if a.test {
                Mode::Test
            } else if a.decompress {
                Mode::Decompress
            } else {
                Mode::Compress
            };
            codec(mode, a)
        }
    }
}

/// A usage error: reported by clap with the usage line, exit status 2 (see `main`).
fn usage(kind: clap::error::ErrorKind, msg: &str) -> anyhow::Error {
    Cli::command().error(kind, msg).into()
}

/// Checks the device request and sets up the worker threads, before any file is touched.
fn setup_threads(m: &ModelArgs) -> Result<()> {
    m.device.validate()?;
    if let Some(n) = m.threads {
        if n == 0 {
            return Err(usage(
                clap::error::ErrorKind::ValueValidation,
                "--threads must be at least 1",
            ));
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("setting up worker threads")?;
    }
    Ok(())
}

/// Loads the model on first use only: `lmzip -f x` with a bad argument fails fast, and a
/// run whose every file is skipped never pays for loading.
struct LazyModel {
    /// The loaded model and the file it came from.
    model: Option<(Model, PathBuf)>,
}

impl LazyModel {
    /// The model at `path`, loaded for `backend` (reloaded if the last file needed another
    /// model or backend).
    fn get(&mut self, path: &Path, backend: u16) -> Result<&Model> {
        let stale = self
            .model
            .as_ref()
            .is_none_or(|(m, p)| m.backend() != backend || p != path);
        if stale {
            self.model = None;
            self.model = Some((Model::load_with(path, backend)?, path.to_path_buf()));
        }
        self.model
            .as_ref()
            .map(|(m, _)| m)
            .ok_or_else(|| anyhow!("model not loaded"))
    }
}

fn codec(mode: Mode, mut a: CodecArgs) -> Result<ExitCode> {
    if a.test {
        a.stdout = false;
    }
    setup_threads(&a.model)?;
    let mut inputs = a.files.clone();
    if inputs.is_empty() {
        inputs.push(PathBuf::from("-"));
    }
    if a.output.is_some() && inputs.len() > 1 {
        return Err(usage(
            clap::error::ErrorKind::ArgumentConflict,
            "-o/--output takes a single input file",
        ));
    }
    if inputs.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        return Err(usage(
            clap::error::ErrorKind::ArgumentConflict,
            "standard input (-) can be named only once",
        ));
    }
    if auto_model(&a.model) {
        if mode != Mode::Compress {
            // An archive names its model: decoding finds it without being told.
            a.model.model = None;
        } else if a.resume || a.member_size.is_some() {
            return Err(usage(
                clap::error::ErrorKind::ArgumentConflict,
                "--model auto codes whole inputs: it does not combine with --resume or \
                 --member-size (name the model)",
            ));
        }
    }
    if a.resume && mode != Mode::Compress {
        return Err(usage(
            clap::error::ErrorKind::ArgumentConflict,
            "--resume applies to compression",
        ));
    }
    if a.member_size.is_some() && mode != Mode::Compress {
        return Err(usage(
            clap::error::ErrorKind::ArgumentConflict,
            "--member-size applies to compression (decompression finds the members itself)",
        ));
    }
    if a.share.is_some() {
        if mode == Mode::Compress && a.member_size.is_none() {
            return Err(usage(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--share needs --member-size when compressing (it picks members of that size)",
            ));
        }
        if mode != Mode::Test && !a.stdout && a.output.is_none() {
            return Err(usage(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--share writes part of a result: name where with -o OUT or -c",
            ));
        }
    }
    let to_files = match &a.output {
        Some(o) => o.as_os_str() != "-",
        None => !a.stdout && inputs.iter().all(|p| p.as_os_str() != "-"),
    };
    if a.resume && !to_files {
        return Err(usage(
            clap::error::ErrorKind::ArgumentConflict,
            "--resume keeps its checkpoint beside an output file: name one with -o",
        ));
    }
    let mut lazy = LazyModel { model: None };
    if a.recursive {
        inputs = batch::expand(mode, &inputs)?;
    }
    if batch::applies(&a, &inputs) {
        let failed = batch::run(mode, &a, &inputs, &mut lazy)?;
        return Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let mut failed = 0usize;
    for input in &inputs {
        if let Err(e) = process_one(mode, &a, input, &mut lazy) {
            // A closed stdout ends the whole run quietly (see `main`).
            if is_broken_pipe(&e) {
                return Err(e);
            }
            eprintln!("lmzip: {}: {e:#}", input.display());
            failed += 1;
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A closed pipe (`lmzip -dc x.lmz | head`) anywhere in the error's chain: the reader's
/// choice, not an error.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<lmzip::Error>()
                .is_some_and(|l| l.is_io_kind(io::ErrorKind::BrokenPipe))
    })
}

/// Where the result of one input goes.
enum Dest {
    Stdout,
    File(PathBuf),
    Nowhere,
}

fn destination(mode: Mode, a: &CodecArgs, input: &Path, is_stdin: bool) -> Result<Dest> {
    if mode == Mode::Test {
        return Ok(Dest::Nowhere);
    }
    if let Some(o) = &a.output {
        if o.as_os_str() == "-" {
            return Ok(Dest::Stdout);
        }
        return Ok(Dest::File(o.clone()));
    }
    if a.stdout || is_stdin {
        return Ok(Dest::Stdout);
    }
    match mode {
        Mode::Compress => {
            if input.extension().is_some_and(|e| e == SUFFIX) && !a.force {
                bail!("already has the .{SUFFIX} suffix (use -f to compress it again)");
            }
            let mut name = input.as_os_str().to_owned();
            name.push(format!(".{SUFFIX}"));
            Ok(Dest::File(PathBuf::from(name)))
        }
        Mode::Decompress => {
            if input.extension().is_some_and(|e| e == SUFFIX) {
                Ok(Dest::File(input.with_extension("")))
            } else {
                bail!("unknown suffix (expected .{SUFFIX}); use -o OUT or -c")
            }
        }
        Mode::Test => Ok(Dest::Nowhere),
    }
}

fn read_input(input: &Path, is_stdin: bool) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    if is_stdin {
        io::stdin()
            .lock()
            .read_to_end(&mut data)
            .context("reading standard input")?;
    } else {
        File::open(input)
            .and_then(|mut f| f.read_to_end(&mut data))
            .with_context(|| "cannot read input".to_string())?;
    }
    Ok(data)
}

/// The model file and numeric backend an archive needs: the backend its header records,
/// and the model it names when that is a known model in a models folder and none was
/// named (see `model::resolve_for_archive`).
fn archive_model(a: &CodecArgs, data: &[u8]) -> Result<(PathBuf, u16)> {
    let backend = match lmzip::peek_backend(data) {
        // Say so before trying to load a model for a backend that does not exist.
        Some(id) if lmzip::backend_name(id) == "unknown" => {
            return Err(lmzip::Error::new(lmzip::ErrorKind::UnsupportedBackend { id }).into())
        }
        Some(id) => id,
        None => lmzip::DEFAULT_BACKEND,
    };
    let recorded = lmzip::peek_header(data).map(|h| h.model.bytes().to_vec());
    let path = model::resolve_for_archive(a.model.model.as_deref(), &recorded.unwrap_or_default())?;
    Ok((path, backend))
}

/// Whether `--model auto` was given: the encoder picks among the installed known models.
pub(super) fn auto_model(m: &args::ModelArgs) -> bool {
    m.model.as_deref() == Some(Path::new("auto"))
}

/// How much of an input `--model auto` codes with each candidate model.
const AUTO_SAMPLE: usize = 64 << 10;

/// The model `--model auto` codes `data` with: of the known models in the models folders,
/// the one whose archive of the first [`AUTO_SAMPLE`] bytes (the whole input when it is no
/// longer) is the smallest, with the current options; on a tie the earlier in
/// [`KNOWN_MODELS`](lmzip::model::known::KNOWN_MODELS) order, the default model first.
/// Measured: neither model wins on every kind of text (SmolLM2 codes fields.c 4.5% and
/// xargs.1 6.6% smaller than Gemma 3, Gemma 3 codes cp.html 9.4% and progp 6.1% smaller).
fn choose_model(a: &CodecArgs, data: &[u8], lazy: &mut LazyModel, name: &str) -> Result<PathBuf> {
    let installed = model::installed_known();
    let Some((_, first)) = installed.first() else {
        // No known model is installed: the default's error says how to get one.
        return Ok(model::resolve(None)?);
    };
    if installed.len() == 1 {
        return Ok(first.clone());
    }
    let sample = &data[..data.len().min(AUTO_SAMPLE)];
    let mut best: Option<(usize, &Path)> = None;
    let mut sizes = Vec::new();
    for (k, path) in &installed {
        let model = lazy.get(path, a.encode.backend)?;
        let mut archive = Vec::new();
        lmzip::compress(
            model,
            sample,
            &a.encode.options(model),
            &mut archive,
            &mut |_| {},
        )?;
        sizes.push(format!("{} {} B", k.name, archive.len()));
        if best.is_none_or(|(n, _)| archive.len() < n) {
            best = Some((archive.len(), path));
        }
    }
    if a.verbose {
        eprintln!(
            "{name}: --model auto, first {} bytes: {}",
            sample.len(),
            sizes.join(", ")
        );
    }
    Ok(best.map_or_else(|| first.clone(), |(_, p)| p.to_path_buf()))
}

fn process_one(mode: Mode, a: &CodecArgs, input: &Path, lazy: &mut LazyModel) -> Result<()> {
    let is_stdin = input.as_os_str() == "-";
    if !is_stdin {
        let meta = std::fs::metadata(input).context("cannot open")?;
        if !meta.is_file() {
            bail!("not a regular file; skipped");
        }
    }
    let dest = destination(mode, a, input, is_stdin)?;
    if let Dest::File(out) = &dest {
        if out.exists() && !a.force {
            bail!("{} already exists; use -f to overwrite", out.display());
        }
    }
    if matches!(dest, Dest::Stdout)
        && mode == Mode::Compress
        && io::stdout().is_terminal()
        && !a.force
    {
        bail!("refusing to write compressed data to a terminal (use -o, redirect, or -f)");
    }
    let data = read_input(input, is_stdin)?;
    let (path, backend) = match mode {
        Mode::Compress if auto_model(&a.model) => (
            choose_model(a, &data, lazy, &display_name(input, is_stdin))?,
            a.encode.backend,
        ),
        Mode::Compress => (model::resolve(a.model.model.as_deref())?, a.encode.backend),
        _ => archive_model(a, &data)?,
    };
    let model = lazy.get(&path, backend)?;
    let start = Instant::now();
    // With --share, only part of the input is coded or decoded.
    let part = match mode {
        Mode::Compress => compress_part(a, &data),
        _ => decode_part(a, &data)?,
    };
    // An empty share (more shares than members) writes an empty output.
    let nothing = part.is_none();
    let data = &data[part.unwrap_or(0..0)];
    let total = match mode {
        Mode::Compress => Some(data.len() as u64),
        _ => archive_content_len(data),
    };
    let mut bar = progress::Progress::new(
        !a.quiet && io::stderr().is_terminal(),
        total,
        display_name(input, is_stdin),
    );
    let checkpoint = match (&dest, a.resume) {
        (Dest::File(out), true) => {
            let mut c = out.clone().into_os_string();
            c.push(".resume");
            let mut c = lmzip::Checkpoint::new(c);
            // Tests stand in for an interruption at a group boundary this way.
            if let Some(n) = std::env::var("LMZIP_TEST_STOP_AFTER_GROUPS")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                c = c.stop_after(n);
            }
            Some(c)
        }
        _ => None,
    };
    if let (Some(c), Ok(mut slot)) = (&checkpoint, CHECKPOINT.lock()) {
        *slot = Some(c.path().to_path_buf());
    }
    let ck = checkpoint.as_ref();
    let result = match &dest {
        Dest::File(out) => write_atomically(out, a.force, input, is_stdin, |w| {
            run_mode(mode, model, a, (data, nothing), w, &bar, ck)
        }),
        Dest::Stdout => {
            let stdout = io::stdout();
            let mut lock = stdout.lock();
            run_mode(mode, model, a, (data, nothing), &mut lock, &bar, ck)
                .and_then(|s| lock.flush().map(|_| s).map_err(Into::into))
        }
        Dest::Nowhere => run_mode(mode, model, a, (data, nothing), &mut io::sink(), &bar, ck),
    };
    if let Ok(mut slot) = CHECKPOINT.lock() {
        *slot = None;
    }
    // The bar goes before any message about this file, success or not.
    bar.finish();
    let stats = match (result, &checkpoint) {
        (Ok(s), Some(c)) => {
            // The archive is in place: its checkpoint has served.
            c.remove()?;
            s
        }
        (Err(e), Some(c)) if c.path().exists() => {
            return Err(e.context(format!(
                "progress kept in {}: run the same command again to continue",
                c.path().display()
            )))
        }
        (r, _) => r?,
    };
    // A resumed run's speed covers the earlier runs' time too: their work is in the figures.
    let secs = start.elapsed().as_secs_f64() + stats.resumed_seconds;
    if a.rm && !is_stdin && !matches!(dest, Dest::Stdout | Dest::Nowhere) {
        std::fs::remove_file(input).context("output written, but removing the input failed")?;
    }
    print_stats(mode, a, &display_name(input, is_stdin), &stats, secs);
    if (a.verbose || (mode == Mode::Test && !a.quiet)) && stats.resumed_groups > 0 {
        eprintln!(
            "{}: resumed after {} {} of blocks ({:.1} s of the time above in earlier \
                 runs)",
            display_name(input, is_stdin),
            stats.resumed_groups,
            if stats.resumed_groups == 1 {
                "group"
            } else {
                "groups"
            },
            stats.resumed_seconds
        );
    }
    Ok(())
}

/// The line `-v` (and `-t`) prints for a file done: sizes, ratio, speed over `secs`.
fn print_stats(mode: Mode, a: &CodecArgs, name: &str, stats: &Stats, secs: f64) {
    if !(a.verbose || (mode == Mode::Test && !a.quiet)) {
        return;
    }
    let (orig, arch) = (stats.original_bytes, stats.archive_bytes);
    let (bpb, ratio) = if orig > 0 && arch > 0 {
        (arch as f64 * 8.0 / orig as f64, orig as f64 / arch as f64)
    } else {
        (0.0, 0.0)
    };
    eprintln!(
        "{}: {} {} → {} bytes, ratio {:.2}, {:.4} bits/byte, {} tokens, {:.2} KB/s, \
         {:.1} tokens/s{}",
        name,
        match mode {
            Mode::Compress => "compressed",
            Mode::Decompress => "decompressed",
            Mode::Test => "OK:",
        },
        if mode == Mode::Compress { orig } else { arch },
        if mode == Mode::Compress { arch } else { orig },
        ratio,
        bpb,
        stats.symbols,
        orig as f64 / 1000.0 / secs.max(1e-9),
        stats.symbols as f64 / secs.max(1e-9),
        if stats.escapes > 0 {
            format!(", {} escaped bytes", stats.escapes)
        } else {
            String::new()
        }
    );
}

fn run_mode<W: Write>(
    mode: Mode,
    model: &Model,
    a: &CodecArgs,
    (data, nothing): (&[u8], bool),
    w: &mut W,
    bar: &progress::Progress,
    checkpoint: Option<&lmzip::Checkpoint>,
) -> Result<Stats> {
    if nothing {
        return Ok(Stats::default());
    }
    let mut report = |done: u64| bar.set(done);
    let opts = a.encode.options(model);
    let mut compress = |mut w: &mut dyn Write| match checkpoint {
        Some(c) => lmzip::compress_resumable(model, data, &opts, &mut w, &mut report, c),
        None => lmzip::compress(model, data, &opts, &mut w, &mut report),
    };
    Ok(match mode {
        Mode::Compress if a.member_size.is_some() => compress_members(model, a, data, w, bar)?,
        Mode::Compress if a.verify => {
            let mut archive = Vec::new();
            let s = compress(&mut archive)?;
            verify(model, &archive, data)?;
            w.write_all(&archive)?;
            s
        }
        Mode::Compress => compress(w)?,
        Mode::Decompress | Mode::Test => {
            let mut s = lmzip::decompress(model, &mut &data[..], w, &mut report)?;
            s.archive_bytes = data.len() as u64;
            s
        }
    })
}

/// The members `--member-size` cuts `data` into, and the range of them `--share` picks.
fn members(a: &CodecArgs, data: &[u8]) -> (Vec<Range<usize>>, Range<usize>) {
    let size = a.member_size.unwrap_or(u64::MAX);
    let cuts = lmzip::member_cuts(data, usize::try_from(size).unwrap_or(usize::MAX));
    let chosen = a.share.map_or(0..cuts.len(), |s| s.of(cuts.len()));
    (cuts, chosen)
}

/// The bytes from the first to the last of `spans[chosen]`; `None` when it is empty.
fn joined(spans: &[Range<usize>], chosen: Range<usize>) -> Option<Range<usize>> {
    let first = spans.get(chosen.start)?;
    let last = spans.get(chosen.end.checked_sub(1)?)?;
    (!chosen.is_empty()).then_some(first.start..last.end)
}

/// The bytes of the input a compression codes: all of it, or the members of its share
/// (`None`: the share has none).
fn compress_part(a: &CodecArgs, data: &[u8]) -> Option<Range<usize>> {
    if a.share.is_none() {
        return Some(0..data.len());
    }
    let (cuts, chosen) = members(a, data);
    joined(&cuts, chosen)
}

/// The bytes of an archive a decompression decodes: all of it, or the archives of its
/// share among the archives back to back in it (found by their frame tables, not decoded;
/// `None`: the share has none).
fn decode_part(a: &CodecArgs, data: &[u8]) -> Result<Option<Range<usize>>> {
    let Some(share) = a.share else {
        return Ok(Some(0..data.len()));
    };
    let spans = lmzip::member_spans(data)?;
    Ok(joined(&spans, share.of(spans.len())))
}

/// `--member-size`: each member of `data` (already the share's, when there is one)
/// compressed on its own, archives back to back in `w`.
fn compress_members<W: Write>(
    model: &Model,
    a: &CodecArgs,
    data: &[u8],
    w: &mut W,
    bar: &progress::Progress,
) -> Result<Stats> {
    let opts = a.encode.options(model);
    // `data` is already the share: cut it again with the same rule. Every cut of the
    // whole input lies at a member boundary of the share (the rule looks forward only,
    // from a member's start), so these are the same members.
    let (cuts, _) = members(
        &CodecArgs {
            share: None,
            ..a.clone()
        },
        data,
    );
    let mut stats = Stats::default();
    let mut done = 0u64;
    for r in cuts {
        let piece = &data[r];
        let mut report = |d: u64| bar.set(done + d);
        let s = if a.verify {
            let mut archive = Vec::new();
            let s = lmzip::compress(model, piece, &opts, &mut archive, &mut report)?;
            verify(model, &archive, piece)?;
            w.write_all(&archive)?;
            s
        } else {
            lmzip::compress(model, piece, &opts, w, &mut report)?
        };
        done += piece.len() as u64;
        stats.absorb(&s);
    }
    Ok(stats)
}

/// `--verify`: decodes `archive` and compares it with `data` as it goes (the first
/// differing byte stops it); nothing is written unless it matches.
fn verify(model: &Model, archive: &[u8], data: &[u8]) -> Result<()> {
    let mut cmp = lmzip::pipeline::Compare::new(data);
    let decoded = lmzip::decompress(model, &mut &archive[..], &mut cmp, &mut |_| {});
    if let Err(e) = decoded {
        bail!("verification failed, nothing written: the new archive {e} (a bug in lmzip: please report it)");
    }
    if !cmp.is_complete() {
        bail!("verification failed, nothing written: the new archive decodes to fewer bytes than the input (a bug in lmzip: please report it)");
    }
    Ok(())
}

/// How a file is named in messages.
fn display_name(input: &Path, is_stdin: bool) -> String {
    if is_stdin {
        "(stdin)".to_string()
    } else {
        input.display().to_string()
    }
}

/// The total original length the archives in `data` declare (their end frames), for the
/// progress bar; `None` if the structure does not parse (decoding will then say why).
/// Reads only headers and frame tables: no model, no payload decoding.
fn archive_content_len(data: &[u8]) -> Option<u64> {
    let archives = lmzip::describe(&mut &data[..]).ok()?;
    archives
        .iter()
        .try_fold(0u64, |total, a| total.checked_add(a.content_bytes))
}

/// Writes through `f` into a temporary file beside `out`, then renames it into place.
/// On any error the temporary file is removed and `out` is untouched.
fn write_atomically<T>(
    out: &Path,
    force: bool,
    input: &Path,
    is_stdin: bool,
    f: impl FnOnce(&mut io::BufWriter<&File>) -> Result<T>,
) -> Result<T> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".lmzip-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    let tmp_path = tmp.path().to_path_buf();
    if let Ok(mut l) = IN_PROGRESS.lock() {
        l.push(tmp_path.clone());
    }
    let result = write_registered(out, force, input, is_stdin, tmp, f);
    if let Ok(mut l) = IN_PROGRESS.lock() {
        l.retain(|p| p != &tmp_path);
    }
    result
}

fn write_registered<T>(
    out: &Path,
    force: bool,
    input: &Path,
    is_stdin: bool,
    tmp: tempfile::NamedTempFile,
    f: impl FnOnce(&mut io::BufWriter<&File>) -> Result<T>,
) -> Result<T> {
    let result = {
        let mut w = io::BufWriter::new(tmp.as_file());
        let r = f(&mut w)?;
        w.flush()
            .with_context(|| format!("writing {}", out.display()))?;
        r
    };
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("writing {}", out.display()))?;
    if !is_stdin {
        if let Ok(meta) = std::fs::metadata(input) {
            // Like gzip: the output keeps the input's permissions and modification time.
            let _ = tmp.as_file().set_permissions(meta.permissions());
            if let Ok(mtime) = meta.modified() {
                let _ = tmp.as_file().set_modified(mtime);
            }
        }
    }
    if force {
        tmp.persist(out)
            .map_err(|e| anyhow!(e.error))
            .with_context(|| format!("cannot write {}", out.display()))?;
    } else {
        tmp.persist_noclobber(out)
            .map_err(|e| anyhow!(e.error))
            .with_context(|| format!("cannot create {} (use -f to overwrite)", out.display()))?;
    }
    Ok(result)
}

/// The files a bench argument stands for: a file itself, or a folder's files (not its
/// subfolders, nor hidden files), sorted by name.
fn bench_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files = Vec::new();
            for e in std::fs::read_dir(p).with_context(|| format!("cannot read {}", p.display()))? {
                let path = e?.path();
                let hidden = path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                if path.is_file() && !hidden {
                    files.push(path);
                }
            }
            files.sort();
            if files.is_empty() {
                bail!("{}: no files to measure", p.display());
            }
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// The name of the total row: the corpus folder's, when one folder was given.
fn corpus_name(paths: &[PathBuf]) -> String {
    match paths {
        [p] if p.is_dir() => {
            let name = p
                .canonicalize()
                .ok()
                .and_then(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| p.display().to_string());
            let mut c = name.chars();
            match c.next() {
                Some(f) => format!("total ({}{})", f.to_uppercase(), c.as_str()),
                None => "total".into(),
            }
        }
        _ => "total".into(),
    }
}

fn bench(a: BenchArgs) -> Result<ExitCode> {
    if auto_model(&a.model) {
        return Err(usage(
            clap::error::ErrorKind::InvalidValue,
            "--model auto applies to compression; bench one model at a time",
        ));
    }
    setup_threads(&a.model)?;
    let inputs = bench_inputs(&a.files)?;
    let mut peers = match &a.vs {
        Some(list) => peers::Peer::parse_list(list)?,
        None => Vec::new(),
    };
    for c in a.vs_cmd.chunks(3) {
        if let [name, compress, decompress] = c {
            peers.push(peers::Peer::Command {
                name: name.clone(),
                compress: compress.clone(),
                decompress: decompress.clone(),
            });
        }
    }
    let model = Model::load_with(&model::resolve(a.model.model.as_deref())?, a.encode.backend)?;
    let mut opts = a.encode.options(&model);
    opts.trace = a.report.is_some();
    let mut kept = match &a.resume {
        Some(dir) => Some(BenchKept::open(dir)?),
        None => None,
    };
    let mut rows = Vec::new();
    let mut sections = Vec::new();
    for (i, f) in inputs.iter().enumerate() {
        let mut data = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        if let Some(l) = a.limit {
            data.truncate(l);
        }
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // What the row's figures depend on; a kept row of anything else is not reused.
        let key = format!(
            "{name}\t{}\t{:016x}\t{opts:?}\t{}\t{peers:?}\t{}",
            data.len(),
            xxhash_rust::xxh64::xxh64(&data, 0),
            a.ablation,
            a.encode.backend
        );
        if let Some(row) = kept.as_mut().and_then(|k| k.rows.remove(&key)) {
            eprintln!(
                "lmzip bench: {name} ({} of {}): measured by an earlier run, kept",
                i + 1,
                inputs.len()
            );
            if a.json {
                println!("{}", serde_json::to_string(&row)?);
            }
            rows.push(row);
            continue;
        }
        // The file's own folder, so an interrupted file's state waits for it whatever
        // else is measured meanwhile.
        let current = a.resume.as_ref().map(|d| {
            d.join(format!(
                "file-{:016x}",
                xxhash_rust::xxh64::xxh64(key.as_bytes(), 0)
            ))
        });
        let mut lmzip =
            lmzip::bench::bench_bytes(&model, &name, &data, &opts, a.ablation, current.as_deref())?;
        if let Some(trace) = lmzip.trace.take() {
            sections.push(lmzip::report::Section {
                name: name.clone(),
                original_bytes: lmzip.bytes,
                archive_bytes: lmzip.compressed_bytes,
                classic_bytes: (lmzip.classic_share * lmzip.bytes as f64).round() as u64,
                trace,
            });
        }
        let peers = peers
            .iter()
            .map(|p| p.measure(&data))
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("measuring {}", f.display()))?;
        // Progress only: the results go to standard output once, at the end.
        eprintln!(
            "lmzip bench: {name} ({} of {}): {} -> {} bytes, {:.4} bits/byte; {:.0}/{:.0} \
             tokens/s, {:.2}/{:.2} KB/s compressing/decompressing; peak {:.0} MiB",
            i + 1,
            inputs.len(),
            lmzip.bytes,
            lmzip.compressed_bytes,
            lmzip.bits_per_byte,
            lmzip.compress_tokens_per_s,
            lmzip.decompress_tokens_per_s,
            lmzip.compress_kb_per_s,
            lmzip.decompress_kb_per_s,
            lmzip.peak_rss_mib
        );
        let row = render::BenchRow { lmzip, peers };
        if let (Some(k), Some(dir)) = (&mut kept, &current) {
            k.add(&key, &row)?;
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
        }
        if a.json {
            println!("{}", serde_json::to_string(&row)?);
        }
        rows.push(row);
    }
    let total = render::BenchTotal::of(&corpus_name(&a.files), &rows);
    if let Some(path) = &a.report {
        write_report(path, &model, &opts, &sections)?;
        eprintln!("lmzip bench: report written to {}", path.display());
    }
    if a.json {
        println!("{}", serde_json::to_string(&total)?);
    } else if a.csv {
        print!("{}", render::bench_csv(&rows, &total));
    } else if a.markdown {
        let command: Vec<String> = std::env::args().collect();
        print!(
            "{}",
            render::bench_markdown(&rows, &total, &command.join(" "))
        );
    } else {
        print!(
            "{}",
            render::bench_summary(&rows, &total, &opts, a.encode.backend)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the `--report` page, replacing the file, through a temporary file renamed into
/// place (removed if the run is interrupted).
fn write_report(
    path: &Path,
    model: &Model,
    opts: &lmzip::CompressOptions,
    sections: &[lmzip::report::Section],
) -> Result<()> {
    let name = model.name.clone().unwrap_or_else(|| {
        let file = model.path.file_name().unwrap_or(model.path.as_os_str());
        file.to_string_lossy().into_owned()
    });
    let title = format!(
        "{name} · window {} · {}",
        opts.window,
        opts.predictor.label()
    );
    let page = lmzip::report::html(&title, sections);
    write_atomically(path, true, path, true, |w| {
        w.write_all(page.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    })
}

/// `lmzip bench --resume DIR`: the rows finished so far, one JSON line each in
/// `DIR/rows.jsonl` (`{"key": …, "row": …}`), appended and synced as each file is done.
/// A file in progress keeps its own state in `DIR/file-…` ([`lmzip::bench::bench_bytes`]).
struct BenchKept {
    file: File,
    rows: std::collections::HashMap<String, render::BenchRow>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct KeptRow<K, T> {
    key: K,
    row: T,
}

impl BenchKept {
    fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("rows.jsonl");
        let mut rows = std::collections::HashMap::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines() {
                // A line cut short by a crash is the one row measured again.
                if let Ok(k) = serde_json::from_str::<KeptRow<String, render::BenchRow>>(line) {
                    rows.insert(k.key, k.row);
                }
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(BenchKept { file, rows })
    }

    fn add(&mut self, key: &str, row: &render::BenchRow) -> Result<()> {
        let line = serde_json::to_string(&KeptRow { key, row })?;
        // Starts on a fresh line even after a torn one.
        writeln!(self.file, "\n{line}")?;
        self.file.sync_data()?;
        Ok(())
    }
}

fn info(a: InfoArgs) -> Result<ExitCode> {
    let mut failed = false;
    for f in &a.files {
        match lmzip::describe(&mut io::BufReader::new(
            File::open(f).with_context(|| format!("cannot open {}", f.display()))?,
        )) {
            Ok(archives) => print!("{}:\n{}", f.display(), render::archives(&archives)),
            Err(e) => {
                eprintln!("lmzip: {}: {e}", f.display());
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
