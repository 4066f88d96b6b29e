//! Command-line definition: what the user typed, parsed by clap, with no I/O.

use clap::{Args, Parser, Subcommand};
use lmzip::engine::device::DeviceRequest;
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  lmzip notes.txt                 compress to notes.txt.lmz (notes.txt is kept)
  lmzip -d notes.txt.lmz          decompress to notes.txt
  lmzip -c notes.txt > n.lmz      compress to standard output
  cat a.txt | lmzip > a.lmz       compress standard input
  lmzip -t *.lmz                  verify archives without writing anything
  lmzip bench alice29.txt --json  bits per byte and speed, verified round trip
  lmzip info notes.txt.lmz        what an archive's header says
  lmzip --model m.gguf a b c      several files, another model (needed again to decompress)
  lmzip --model gemma3-270m a     a known model by name (bash models/fetch.sh installs it)
  lmzip --model hf:ORG/NAME a     a model from the Hugging Face hub (see docs/MODELS.md)
  lmzip completions bash > /etc/bash_completion.d/lmzip
  lmzip man > lmzip.1             shell completions and a man page, from this definition

A progress bar appears on standard error when it is a terminal and a file takes more than
a moment. Outputs are written to a temporary file beside the destination and renamed into
place only when complete and verified; inputs are kept unless --rm is given.

Exit status: 0 success, 1 error (any file), 2 usage error, 130 interrupted (partial
outputs removed).";

/// Lossless text compression with a small language model as the predictor.
#[derive(Parser, Debug)]
// Subcommands are recognised only as the first word after the options, so `lmzip FILE`
// compresses a file; a file named like a subcommand can be given as `./NAME` or after `--`.
#[command(name = "lmzip", version, about, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// gzip-style use: `lmzip FILE` compresses, `lmzip -d FILE.lmz` decompresses.
    #[command(flatten)]
    pub codec: CodecArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Compress files (FILE → FILE.lmz), or standard input to standard output.
    Compress(CodecArgs),
    /// Decompress archives (FILE.lmz → FILE), or standard input to standard output.
    Decompress(CodecArgs),
    /// Check archives: decode fully and verify every checksum, writing nothing.
    Test(CodecArgs),
    /// Measure bits per byte and speed on files (in memory; round trip verified).
    Bench(BenchArgs),
    /// Print what an archive's header and block table say (no model needed).
    Info(InfoArgs),
    /// Print a shell completion script to standard output.
    #[command(hide = true)]
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to standard output.
    #[command(hide = true)]
    Man,
}

/// Options shared by every command that runs the model.
#[derive(Args, Debug, Clone, Default)]
pub struct ModelArgs {
    /// Model: a GGUF file, a Hugging Face model folder (config.json, tokenizer.json,
    /// *.safetensors), or hf:ORG/NAME[@REVISION][:FILE] from the Hugging Face hub cache
    /// (fetched only when named so), or a known model's name (gemma3-270m, smollm2-135m:
    /// its file in the models folder), or `auto` (compressing: each installed known model
    /// codes the first 64 KiB, and the one with the smaller archive codes the file).
    /// Default: $LMZIP_MODEL, else from the models folder the default model (compressing)
    /// or the model the archive names (decompressing).
    #[arg(long, value_name = "MODEL", global = true)]
    pub model: Option<PathBuf>,
    /// Where the model runs: auto, cpu, cuda or cuda:N. Archives need exact arithmetic and
    /// lmzip's exact kernels are CPU-only, so auto picks the CPU and cuda is refused.
    #[arg(long, value_name = "DEVICE", default_value_t = DeviceRequest::Auto, global = true)]
    pub device: DeviceRequest,
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long, short = 'T', value_name = "N", global = true)]
    pub threads: Option<usize>,
}

/// Options that shape the archive (recorded in its header).
#[derive(Args, Debug, Clone)]
pub struct EncodeArgs {
    /// Compression level, 1 (fastest to decompress) to 9 (smallest), default 6; `-1` … `-9`
    /// say the same. A level picks the window and the block size (see the README's table);
    /// the expert options below override its choices.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=9), overrides_with = "level")]
    pub level: Option<u8>,
    /// Level 1.
    #[arg(long, conflicts_with_all = ["level", "best"])]
    pub fast: bool,
    /// Level 9.
    #[arg(long, conflicts_with = "level")]
    pub best: bool,
    /// Target tokens per block (default: the level's): the input is cut into equal blocks
    /// of at most N tokens. Fewer, longer blocks compress better; more blocks decode faster
    /// (one stream each). A level's blocks grow up to 4× on inputs that need more than
    /// --streams of them, to fill whole groups with fewer blocks; N given here is a
    /// maximum.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(16..=1_048_576), help_heading = "Expert options")]
    pub block_tokens: Option<u32>,
    /// Maximum blocks coded side by side (one batch row each).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024), help_heading = "Expert options")]
    pub streams: u16,
    /// Context window of the model, in tokens (default: the level's). Memory: about 47 KB
    /// per token per stream.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(16..=32768), help_heading = "Expert options")]
    pub window: Option<u32>,
    /// Tokens kept when the window slides (default: 7/8 of the window with `--slide shift`,
    /// half with `--slide reprefill`).
    #[arg(long, value_name = "N", help_heading = "Expert options")]
    pub slide_keep: Option<u32>,
    /// How a full window slides: `reprefill` re-runs the kept tokens from position 0;
    /// `shift` keeps their cached state and positions (no model work).
    #[arg(long, value_enum, value_name = "HOW", default_value_t = SlideKind::Shift, help_heading = "Expert options")]
    pub slide: SlideKind,
    /// Numeric backend for new archives: 3 = int8-exact with a 16-bit KV cache (default),
    /// 2 = int8-exact with an f32 KV cache (0–0.3% smaller, decodes ~10% slower), 1 =
    /// f32-fixed-order (2–3× slower).
    /// Decompression always uses the archive's own.
    #[arg(long, value_name = "ID", default_value_t = lmzip::DEFAULT_BACKEND, value_parser = clap::value_parser!(u16).range(1..=3), help_heading = "Expert options")]
    pub backend: u16,
    /// Predictor: the language model alone (no n-gram, match, bias or SSE).
    #[arg(long, help_heading = "Expert options")]
    pub llm_only: bool,
    /// Predictor: no token n-gram model.
    #[arg(long, help_heading = "Expert options")]
    pub no_ngram: bool,
    /// Predictor: no match model.
    #[arg(long, help_heading = "Expert options")]
    pub no_match: bool,
    /// Predictor: no adaptive logit bias.
    #[arg(long, help_heading = "Expert options")]
    pub no_bias: bool,
    /// Predictor: no APM/SSE calibration stage.
    #[arg(long, help_heading = "Expert options")]
    pub no_sse: bool,
    /// Predictor: how the mixer's weights are chosen. `shared`: per-context offsets on one
    /// jointly trained set (default); `context`: independent weights per context;
    /// `global`: one set for every context.
    #[arg(long, value_enum, value_name = "KIND", default_value_t = MixerKind::Shared, help_heading = "Expert options")]
    pub mixer: MixerKind,
    /// Predictor: the active head. Each step's distribution covers the symbols seen so far
    /// plus the first 2^K vocabulary ids, and an escape for the rest: the output layer then
    /// costs what the text uses. 0 turns it off (every symbol every step). Default: 14 for
    /// models with a vocabulary over 131,072 ids (Gemma 3), else 0.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u8).range(0..=24), help_heading = "Expert options")]
    pub active_log2: Option<u8>,
    /// Predictor: the continuous cache, which predicts what followed the earlier positions
    /// whose hidden state is most like this one's, over the last 2^K positions of the
    /// input. 0 turns it off. Default: 14 where the active head is on (it gives the hidden
    /// states), else off.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u8).range(0..=20), help_heading = "Expert options")]
    pub cache_log2: Option<u8>,
    /// Predictor: the active head's starting set also holds the first 2^K ids whose bytes
    /// are all ASCII, and every single ASCII character. 0 turns it off. Default: 15 where
    /// the active head is on, else off.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u8).range(0..=24), help_heading = "Expert options")]
    pub ascii_log2: Option<u8>,
    /// Predictor: the escape model's linear probe on the hidden state (learning rate
    /// RATE/64), which learns where symbols new to the active set come. 0 turns it off.
    /// Default: 22 where the active head is on, else off.
    #[arg(long, value_name = "RATE", help_heading = "Expert options")]
    pub escape_probe: Option<u8>,
    /// The checksum over the whole original: `xxh64` (its low 32 bits, 4 bytes, as zstd)
    /// or `sha256` (32 bytes).
    #[arg(long, value_enum, value_name = "KIND", default_value_t = ChecksumArg::Xxh64)]
    pub checksum: ChecksumArg,
    /// Code the input as it is: no reversible transform (by default CRLF line ends are
    /// coded as LF when every line ends so, and restored on decompression).
    #[arg(long)]
    pub no_transform: bool,
    /// Send every byte through the language model. By default binary regions (NULs,
    /// control bytes, invalid UTF-8, long runs of one byte) go to a classical coder (LZMA2)
    /// with no model run, and an archive is never larger than coding it all that way.
    #[arg(long)]
    pub no_regions: bool,
}

/// `--checksum` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChecksumArg {
    Xxh64,
    Sha256,
}

/// `--slide` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SlideKind {
    Reprefill,
    Shift,
}

/// `--mixer` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MixerKind {
    Shared,
    Context,
    Global,
}

impl Default for EncodeArgs {
    fn default() -> Self {
        EncodeArgs {
            level: None,
            fast: false,
            best: false,
            block_tokens: None,
            streams: 16,
            window: None,
            slide_keep: None,
            slide: SlideKind::Shift,
            backend: lmzip::DEFAULT_BACKEND,
            llm_only: false,
            no_ngram: false,
            no_match: false,
            no_bias: false,
            no_sse: false,
            mixer: MixerKind::Shared,
            active_log2: None,
            cache_log2: None,
            ascii_log2: None,
            escape_probe: None,
            checksum: ChecksumArg::Xxh64,
            no_transform: false,
            no_regions: false,
        }
    }
}

/// How far a level's blocks may grow to fill whole groups with fewer blocks (see
/// `CompressOptions::block_stretch`; measured on enwik6 in the README).
pub const LEVEL_BLOCK_STRETCH: u32 = 4;

/// What a compression level chooses: the window and the block size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub window: u32,
    pub block_tokens: u32,
}

/// Levels 1 … 9 (index 0 is level 1), chosen from measurements (README, "Levels"): shorter
/// blocks decode faster (more of them run side by side as streams) and a longer window
/// codes smaller; compression speed barely moves. Level 6 is the default: window 1024,
/// blocks of 4,096 tokens. (SmolLM2-135M was measured as a fast level and was no faster
/// than Gemma 3 at a short window, only larger: it stays a `--model` choice.)
pub const LEVELS: [Level; 9] = [
    Level {
        window: 256,
        block_tokens: 512,
    },
    Level {
        window: 256,
        block_tokens: 1024,
    },
    Level {
        window: 256,
        block_tokens: 2048,
    },
    Level {
        window: 512,
        block_tokens: 2048,
    },
    Level {
        window: 512,
        block_tokens: 4096,
    },
    Level {
        window: 1024,
        block_tokens: 4096,
    },
    Level {
        window: 1024,
        block_tokens: 8192,
    },
    Level {
        window: 2048,
        block_tokens: 8192,
    },
    Level {
        window: 2048,
        block_tokens: 16384,
    },
];

/// The level used when none is given.
pub const DEFAULT_LEVEL: u8 = 6;

/// gzip's `-1` … `-9`: each standalone `-N` (before a `--`) becomes `--level=N`, so that
/// clap, which has no digit flags with shared meaning, sees one option.
pub fn expand_level_flags(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    let mut options = true;
    for a in args {
        if a == "--" {
            options = false;
        }
        let level = a
            .to_str()
            .filter(|s| options && s.len() == 2 && s.starts_with('-'))
            .and_then(|s| s[1..].parse::<u8>().ok())
            .filter(|n| (1..=9).contains(n));
        match level {
            Some(n) => out.push(format!("--level={n}").into()),
            None => out.push(a),
        }
    }
    out
}

impl EncodeArgs {
    /// The chosen level (1 … 9).
    pub fn level_number(&self) -> u8 {
        if self.fast {
            1
        } else if self.best {
            9
        } else {
            self.level.unwrap_or(DEFAULT_LEVEL)
        }
    }

    /// The chosen level's settings.
    pub fn level(&self) -> Level {
        LEVELS[usize::from(self.level_number().clamp(1, 9)) - 1]
    }

    /// The library options these flags ask for with `model` (whose own defaults fill in
    /// what the flags leave open).
    pub fn options(&self, model: &lmzip::Model) -> lmzip::CompressOptions {
        let level = self.level();
        let window = self.window.unwrap_or(level.window);
        let mut p = if self.llm_only {
            lmzip::PredictorSettings::llm_only()
        } else {
            lmzip::PredictorSettings::default()
        };
        p.ngram &= !self.no_ngram;
        p.matcher &= !self.no_match;
        p.bias &= !self.no_bias;
        p.sse &= !self.no_sse;
        p.mixer_ctx = self.mixer != MixerKind::Global;
        p.mixer_shared = self.mixer == MixerKind::Shared;
        p.active_log2 = self
            .active_log2
            .unwrap_or_else(|| model.default_active_log2());
        p.cache_log2 = match self.cache_log2 {
            Some(k) => k,
            None if p.active_log2 > 0 && !self.llm_only => lmzip::DEFAULT_CACHE_LOG2,
            None => 0,
        };
        // The starting set and the probe belong to the active head's escape, which the
        // language model's own distribution needs: on with it, --llm-only included.
        let active = p.active_log2 > 0;
        p.active_ascii_log2 = self.ascii_log2.unwrap_or(if active {
            lmzip::DEFAULT_ACTIVE_ASCII_LOG2
        } else {
            0
        });
        p.probe_rate =
            self.escape_probe
                .unwrap_or(if active { lmzip::DEFAULT_PROBE_RATE } else { 0 });
        lmzip::CompressOptions {
            block_tokens: self.block_tokens.unwrap_or(level.block_tokens),
            // A level's block size grows (up to 4×) where that saves blocks without
            // fewer of them side by side; --block-tokens N means at most N.
            block_stretch: if self.block_tokens.is_some() {
                1
            } else {
                LEVEL_BLOCK_STRETCH
            },
            streams: self.streams,
            window,
            keep: self.slide_keep.unwrap_or(match self.slide {
                SlideKind::Shift => window - window / 8,
                SlideKind::Reprefill => window / 2,
            }),
            window_policy: match self.slide {
                SlideKind::Reprefill => lmzip::WINDOW_REPREFILL,
                SlideKind::Shift => lmzip::WINDOW_SHIFT,
            },
            predictor: p,
            checksum: match self.checksum {
                ChecksumArg::Xxh64 => lmzip::ChecksumKind::Xxh64,
                ChecksumArg::Sha256 => lmzip::ChecksumKind::Sha256,
            },
            transform: !self.no_transform,
            regions: !self.no_regions,
            ..lmzip::CompressOptions::for_model(model)
        }
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct CodecArgs {
    /// Files to process; `-` or none means standard input.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Decompress.
    #[arg(short = 'd', long = "decompress")]
    pub decompress: bool,
    /// Test archives (decompress and verify, write nothing).
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// Write to standard output, keep inputs.
    #[arg(short = 'c', long = "stdout")]
    pub stdout: bool,
    /// Output file (only with a single input).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Overwrite existing outputs; allow compressed data to a terminal.
    #[arg(short = 'f', long = "force")]
    pub force: bool,
    /// Keep input files (the default; accepted for gzip/zstd habits).
    #[arg(short = 'k', long = "keep", overrides_with = "rm")]
    pub keep: bool,
    /// Folders among the FILEs stand for every file under them (archives left out when
    /// compressing, only archives when decompressing); links are not followed.
    #[arg(short = 'r', long = "recursive")]
    pub recursive: bool,
    /// Remove each input file after its output is complete and verified.
    #[arg(long = "rm")]
    pub rm: bool,
    /// Compressing: decode each new archive and compare it with the input before it is
    /// kept (as long again as decompressing). Without it the encoder still checks its own
    /// tokenization, and every archive carries a checksum of the original.
    #[arg(long)]
    pub verify: bool,
    /// Compressing a long file: save progress after each group of blocks to OUT.resume
    /// beside the output, and continue from it where an earlier run of the same input,
    /// model and options was interrupted. The archive is the same as an uninterrupted
    /// run's; the checkpoint is removed once it is complete.
    #[arg(long, conflicts_with = "member_size")]
    pub resume: bool,
    /// Compressing: cut the input into independent members of about SIZE bytes (suffixes
    /// K, M, G: ×1024; each member ends at the first line end past SIZE), each its own
    /// archive, back to back in one output that decompresses as a whole. The cuts depend on
    /// the input and SIZE alone, so shares made on several machines (--share) join with
    /// `cat` into exactly this output.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, help_heading = "Members and shares")]
    pub member_size: Option<u64>,
    /// Only share I of K (1 ≤ I ≤ K) of the members, in order: compressing, the members
    /// --member-size cuts; decompressing or testing, the archives back to back in the input
    /// (a --member-size archive's members, or any concatenation). The K outputs joined with
    /// `cat` in order are the whole result. Needs -c or -o.
    #[arg(long, value_name = "I/K", value_parser = parse_share, help_heading = "Members and shares")]
    pub share: Option<lmzip::Share>,
    /// Print nothing but errors.
    #[arg(short = 'q', long = "quiet", conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print ratio and speed per file.
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub encode: EncodeArgs,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Files or folders to measure (a folder: its files, sorted by name, with a total row
    /// named after the folder).
    #[arg(value_name = "FILE|DIR", required = true)]
    pub files: Vec<PathBuf>,
    /// Only the first N bytes of each file.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// One JSON object per file on standard output, then one for the total.
    #[arg(long, conflicts_with_all = ["csv", "markdown"])]
    pub json: bool,
    /// CSV on standard output: one row per file and compressor, totals last.
    #[arg(long, conflicts_with = "markdown")]
    pub csv: bool,
    /// Markdown tables (sizes, then speeds) and the command that made them.
    #[arg(long)]
    pub markdown: bool,
    /// Also measure classical compressors on the same files: xz (-9e), zstd (-19),
    /// brotli (-q 11), comma-separated.
    #[arg(long, value_name = "LIST")]
    pub vs: Option<String>,
    /// Also measure an external compressor: NAME, then a compress and a decompress
    /// command run by `sh -c`, with {in} and {out} replaced by file paths (repeatable).
    /// Example: --vs-cmd 'gzip -9' 'gzip -9 -c {in} > {out}' 'gzip -d -c {in} > {out}'
    #[arg(long, num_args = 3, value_names = ["NAME", "COMPRESS", "DECOMPRESS"], action = clap::ArgAction::Append)]
    pub vs_cmd: Vec<String>,
    /// Also measure each predictor component on and off (one model pass serves all).
    #[arg(long)]
    pub ablation: bool,
    /// Keep progress in DIR (made if missing): each finished file's figures, and the file
    /// in progress's compression checkpoint. After an interruption, the same command
    /// continues where it stopped and prints what an uninterrupted run prints.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Also write a self-contained HTML page of where the bits go: each file's text
    /// coloured by bits per symbol and a plot of bits per byte along it, for the coded
    /// predictors and the language model alone (each variant with --ablation). An existing
    /// FILE.html is replaced.
    #[arg(long, value_name = "FILE.html", conflicts_with = "resume")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub encode: EncodeArgs,
}

#[derive(Args, Debug, Clone)]
pub struct InfoArgs {
    /// Archives to describe.
    #[arg(value_name = "FILE.lmz", required = true)]
    pub files: Vec<PathBuf>,
}

/// `--member-size`: bytes, with an optional K, M or G suffix (powers of 1024); at least 1.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(format!("unknown size suffix {unit:?} (use K, M or G)")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("not a size: {s:?} (e.g. 4096, 64K, 16M)"))?;
    match n.checked_mul(1 << shift) {
        Some(0) => Err("the member size must be at least 1 byte".into()),
        Some(v) => Ok(v),
        None => Err(format!("size too large: {s}")),
    }
}

/// `--share I/K`: share I (1-based) of K.
fn parse_share(s: &str) -> Result<lmzip::Share, String> {
    let bad = || format!("expected I/K with 1 <= I <= K, e.g. 2/4; got {s:?}");
    let (i, k) = s.split_once('/').ok_or_else(bad)?;
    let (i, k) = (
        i.trim().parse().map_err(|_| bad())?,
        k.trim().parse().map_err(|_| bad())?,
    );
    lmzip::Share::new(i, k).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_and_shares_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("16m"), Ok(16 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        for bad in ["", "0", "K", "1.5M", "12Q", "-3", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_share("2/4"), Ok(lmzip::Share::new(2, 4).unwrap()));
        for bad in ["0/4", "5/4", "1", "a/b", "1/0", "/"] {
            assert!(parse_share(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn levels_parse_gzip_style() {
        let parse = |v: &[&str]| {
            let args = expand_level_flags(v.iter().map(std::ffi::OsString::from));
            Cli::try_parse_from(args)
        };
        assert_eq!(
            parse(&["lmzip", "a"]).unwrap().codec.encode.level_number(),
            6
        );
        assert_eq!(
            parse(&["lmzip", "-9", "a"])
                .unwrap()
                .codec
                .encode
                .level_number(),
            9
        );
        assert_eq!(
            parse(&["lmzip", "--fast", "a"])
                .unwrap()
                .codec
                .encode
                .level_number(),
            1
        );
        assert_eq!(
            parse(&["lmzip", "--best", "a"])
                .unwrap()
                .codec
                .encode
                .level_number(),
            9
        );
        let c = parse(&["lmzip", "compress", "-2", "--window", "300", "a"]).unwrap();
        let Some(Command::Compress(e)) = c.command else {
            panic!("not compress")
        };
        assert_eq!(e.encode.level(), LEVELS[1]);
        assert_eq!(e.encode.window, Some(300));
        assert!(parse(&["lmzip", "--fast", "--best", "a"]).is_err());
        assert!(
            parse(&["lmzip", "-1", "-9", "a"]).is_ok_and(|c| c.codec.encode.level_number() == 9)
        );
        // `-0`, `-10` and anything after `--` are not levels.
        assert!(parse(&["lmzip", "-0", "a"]).is_err());
        let c = parse(&["lmzip", "--", "-4"]).unwrap();
        assert_eq!(c.codec.files, vec![PathBuf::from("-4")]);
        assert_eq!(c.codec.encode.level_number(), 6);
        assert_eq!(LEVELS[usize::from(DEFAULT_LEVEL) - 1].window, 1024);
    }

    #[test]
    fn gzip_style_and_subcommands_parse() {
        let c = Cli::try_parse_from(["lmzip", "-d", "a.lmz"]).unwrap();
        assert!(c.command.is_none() && c.codec.decompress);
        let c = Cli::try_parse_from(["lmzip", "compress", "-k", "-f", "a", "b"]).unwrap();
        assert!(
            matches!(c.command, Some(Command::Compress(ref a)) if a.files.len() == 2 && a.force)
        );
        let c = Cli::try_parse_from(["lmzip", "bench", "x", "--json", "--streams", "8"]).unwrap();
        assert!(
            matches!(c.command, Some(Command::Bench(ref b)) if b.json && b.encode.streams == 8)
        );
        assert!(Cli::try_parse_from(["lmzip", "--streams", "0", "a"]).is_err());
        assert!(Cli::try_parse_from(["lmzip", "-q", "-v", "a"]).is_err());
        let c = Cli::try_parse_from(["lmzip", "completions", "zsh"]).unwrap();
        assert!(matches!(c.command, Some(Command::Completions { .. })));
        assert!(Cli::try_parse_from(["lmzip", "completions", "tcsh"]).is_err());
        let c = Cli::try_parse_from(["lmzip", "--device", "cuda:1", "a"]).unwrap();
        assert_eq!(c.codec.model.device, DeviceRequest::Cuda(1));
        assert!(Cli::try_parse_from(["lmzip", "--device", "gpu", "a"]).is_err());
        let c = Cli::try_parse_from(["lmzip", "man"]).unwrap();
        assert!(matches!(c.command, Some(Command::Man)));
    }
}
