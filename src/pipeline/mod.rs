//! Compression and decompression: blocks of symbols coded in lock-step groups.
//!
//! The input is tokenized once, cut into blocks of at most `block_tokens` symbols, and the
//! blocks are taken `streams` at a time as a group. Inside a group every block is an
//! independent stream with its own cache and range coder; streams advance one position per
//! step, and within a step they are handled in stream order — the order both directions
//! use, so stateful predictors stay in sync. The encoder (`encode`) knows every symbol in
//! advance and scores many positions per forward call; the decoder (`decode`) scores one
//! per stream per step, plus, when a step has few streams, rows for guessed next symbols
//! that save later calls when the guesses come true (`speculate`). Both follow the same
//! window rules (`window`) and keep their caches behind the engine's `Context`; the engine's
//! results do not depend on how rows are split into calls (see `engine`).

mod decode;
mod describe;
mod encode;
mod io;
mod members;
mod options;
mod predictor_run;
mod resume;
mod speculate;
mod window;

pub use decode::{decompress_each, peek_backend, peek_header};
pub use describe::{describe, ArchiveInfo};
pub(crate) use io::write_replacing;
pub use io::{Compare, Decoder, Encoder};
pub use members::{member_cuts, member_spans, Share};
pub use options::{
    CompressOptions, DecodeOptions, Outcome, Progress, Stats, Trace, DEFAULT_MEMORY_LIMIT,
};
pub(crate) use resume::fingerprint as run_fingerprint;
pub use resume::Checkpoint;

pub(crate) use encode::compress_measure;
pub use encode::{compress_each, compress_regions};

use crate::model::Model;
use crate::{Error, Result};
use std::io::{Read, Write};

/// Compresses `data` into one archive written to `out`; `progress` hears the original
/// bytes done so far.
pub fn compress<W: Write>(
    model: &Model,
    data: &[u8],
    opts: &CompressOptions,
    out: &mut W,
    progress: Progress,
) -> Result<Stats> {
    compress_measure(model, data, opts, &[], out, progress, None)
}

/// [`compress`], saving its progress to `checkpoint` after each group of blocks, and first
/// resuming from it when it holds a run of the same input, model and options: the archive
/// is byte for byte the one an uninterrupted run writes. The checkpoint is left in place;
/// remove it ([`Checkpoint::remove`]) once the archive is safely stored. A checkpoint that
/// is damaged or belongs to another run is an error ([`crate::ErrorKind::Checkpoint`]),
/// never overwritten. Archives of one block have nothing to save between groups.
pub fn compress_resumable<W: Write>(
    model: &Model,
    data: &[u8],
    opts: &CompressOptions,
    out: &mut W,
    progress: Progress,
    checkpoint: &Checkpoint,
) -> Result<Stats> {
    compress_measure(model, data, opts, &[], out, progress, Some(checkpoint))
}

/// Decompresses every archive in `input` (archives back to back included) to `out`, with
/// the default [`DecodeOptions`].
///
/// Output is written one verified block at a time: a block whose checksum fails is never
/// written. The content checksum is checked at the end of each archive, so a caller that
/// must not keep a corrupt result writes to a temporary file and keeps it only if this
/// returns Ok (as the `lmzip` command does).
pub fn decompress<R: Read, W: Write>(
    model: &Model,
    input: &mut R,
    out: &mut W,
    progress: Progress,
) -> Result<Stats> {
    let o = DecodeOptions::default();
    decompress_with(model, input, out, progress, o.memory_limit, o.speculate)
}

/// [`decompress`] with an explicit memory limit in bytes ([`DecodeOptions::memory_limit`])
/// and choice of speculation ([`DecodeOptions::speculate`]); the output is the same either
/// way, only the speed differs.
pub fn decompress_with<R: Read, W: Write>(
    model: &Model,
    input: &mut R,
    out: &mut W,
    progress: Progress,
    memory_limit: u64,
    speculate: bool,
) -> Result<Stats> {
    let opts = DecodeOptions {
        memory_limit,
        speculate,
    };
    let mut input = io::Counting::new(input);
    let mut stats = Stats::default();
    let mut archives = 0u64;
    while let Some(header) = crate::format::Header::read_from(&mut input)? {
        archives += 1;
        decode::decode_archive(
            model, &header, &mut input, out, &mut stats, progress, opts, None,
        )?;
    }
    if archives == 0 {
        return Err(Error::truncated("header"));
    }
    stats.archive_bytes = input.count();
    Ok(stats)
}

/// Decompresses the one archive `archive` holds to `out`, saving the decoder's progress to
/// `checkpoint` after each group of blocks and first taking up what it holds for this
/// archive (`lmzip bench --resume`). Bytes after the archive are an error.
pub(crate) fn decompress_resumable<W: Write>(
    model: &Model,
    archive: &[u8],
    out: &mut W,
    progress: Progress,
    checkpoint: &Checkpoint,
) -> Result<Stats> {
    let mut input = archive;
    let header =
        crate::format::Header::read_from(&mut input)?.ok_or_else(|| Error::truncated("header"))?;
    let resume = resume::DecodeResume {
        checkpoint,
        fingerprint: resume::decode_fingerprint(model, archive),
        base: (archive.len() - input.len()) as u64,
    };
    let mut stats = Stats::default();
    let opts = DecodeOptions::default();
    decode::decode_archive(
        model,
        &header,
        &mut input,
        out,
        &mut stats,
        progress,
        opts,
        Some(resume),
    )?;
    if !input.is_empty() {
        return Err(Error::internal("bytes after the archive being resumed"));
    }
    stats.archive_bytes = archive.len() as u64;
    Ok(stats)
}

/// Compresses `data` into a new archive with `opts`.
pub fn compress_to_vec(model: &Model, data: &[u8], opts: &CompressOptions) -> Result<Vec<u8>> {
    let mut archive = Vec::new();
    compress(model, data, opts, &mut archive, &mut |_| {})?;
    Ok(archive)
}

/// Decompresses every archive in `archive` into a new buffer.
pub fn decompress_to_vec(model: &Model, archive: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    decompress(model, &mut &archive[..], &mut out, &mut |_| {})?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{BACKEND_INT8_EXACT, BACKEND_INT8_F16KV};

    /// Version 4: text and binary regions round-trip in every layout (binary first,
    /// last, between, only; one block or frames; a transform on the text), archives of
    /// text alone stay version 3, and the finder's choice never loses to coding every
    /// byte classically.
    #[test]
    fn regions_round_trip() {
        use crate::regions::Regions;
        let model = crate::testing::synthetic_model().unwrap();
        let text = b"the cat sat on the mat;\r\nthe dog ran home.\r\n".repeat(30);
        let bin: Vec<u8> = (0..700u32).map(|i| (i * 7 % 13) as u8).collect();
        let mut data = bin.clone();
        data.extend_from_slice(&text);
        data.extend_from_slice(&bin);
        data.extend_from_slice(&text);
        let (b, t) = (bin.len() as u64, text.len() as u64);
        // Blocks of `block` tokens, three side by side, cut into exactly `regions`.
        let code = |data: &[u8], regions: &Regions, block: u32| {
            let opts = CompressOptions {
                block_tokens: block,
                streams: 3,
                ..CompressOptions::default()
            };
            let mut archive = Vec::new();
            compress_regions(&model, data, regions, &opts, &mut archive).unwrap();
            archive
        };
        let layouts = [
            vec![0, b, t, b, t],
            vec![b + t, b, t],
            vec![0, b + t + b + t],
            vec![b, t + b + t],
        ];
        for lens in layouts {
            let regions = Regions { lens: lens.clone() };
            for block in [4096u32, 40] {
                let archive = code(&data, &regions, block);
                assert_eq!(archive[4], 4, "{lens:?}");
                assert_eq!(
                    decompress_to_vec(&model, &archive).unwrap(),
                    data,
                    "{lens:?}"
                );
                let info = describe(&mut &archive[..]).unwrap();
                assert_eq!(info[0].classic_bytes, regions.binary_len());
                assert_eq!(info[0].binary_regions, lens.len() as u64 / 2);
                // Concatenated with a version-3 archive, both decode.
                let mut two = archive.clone();
                two.extend(compress_to_vec(&model, &text, &CompressOptions::default()).unwrap());
                let mut both = data.clone();
                both.extend_from_slice(&text);
                assert_eq!(decompress_to_vec(&model, &two).unwrap(), both);
            }
        }
        // One text region with CRLF line ends and one with LF: the per-region transform
        // marks the first; binary regions of 64 KiB and more are classical parts of their
        // own. In one block and in frames (blocks cut anywhere in a region).
        let lf = b"the cat sat on the mat;\nthe dog ran home.\n".repeat(30);
        let big: Vec<u8> = (0..70_000u32)
            .map(|i| [0, 1, (i % 251) as u8, 0][(i % 4) as usize])
            .collect();
        let mut mixed = text.clone();
        mixed.extend_from_slice(&big);
        mixed.extend_from_slice(&lf);
        mixed.extend_from_slice(&big);
        let regions = Regions {
            lens: vec![t, big.len() as u64, lf.len() as u64, big.len() as u64],
        };
        for block in [4096u32, 40] {
            let archive = code(&mixed, &regions, block);
            let info = describe(&mut &archive[..]).unwrap();
            assert_eq!(info[0].transform, crate::Transform::CrlfPerRegion);
            assert_eq!(
                (
                    info[0].crlf_regions,
                    info[0].text_regions,
                    info[0].classic_parts
                ),
                (1, 2, 2)
            );
            assert_eq!(decompress_to_vec(&model, &archive).unwrap(), mixed);
        }
        let off = CompressOptions {
            transform: false,
            ..CompressOptions::default()
        };
        let mut archive = Vec::new();
        compress_regions(&model, &mixed, &regions, &off, &mut archive).unwrap();
        assert_eq!(
            describe(&mut &archive[..]).unwrap()[0].transform,
            crate::Transform::None
        );
        assert_eq!(decompress_to_vec(&model, &archive).unwrap(), mixed);
        // The default finds the regions itself and is never above all-classical.
        let opts = CompressOptions::default();
        let found = compress_to_vec(&model, &data, &opts).unwrap();
        let mut classical = Vec::new();
        compress_regions(
            &model,
            &data,
            &Regions::all_binary(data.len()),
            &opts,
            &mut classical,
        )
        .unwrap();
        assert!(found.len() <= classical.len());
        assert_eq!(decompress_to_vec(&model, &found).unwrap(), data);
        // Text alone is one region (its archive is version 3 unless coding it classically
        // is smaller, as it can be with this synthetic model); regions off: version 3.
        assert!(!Regions::find(&text).has_binary());
        let off = CompressOptions {
            regions: false,
            ..CompressOptions::default()
        };
        assert_eq!(compress_to_vec(&model, &data, &off).unwrap()[4], 3);
        // Regions that do not describe the input are refused.
        let bad = Regions { lens: vec![1, 2] };
        assert!(compress_regions(&model, &data, &bad, &opts, &mut Vec::new()).is_err());
    }

    /// The active head round-trips: symbols new to the set (escapes), symbols outside the
    /// vocabulary (raw-byte escapes), several blocks and streams, speculation on and off,
    /// both window policies; and it never costs more than a small set's worth over the
    /// full head on this text.
    #[test]
    fn active_head_round_trips() {
        for backend in [BACKEND_INT8_EXACT, BACKEND_INT8_F16KV] {
            let model = crate::testing::synthetic_model_with(backend).unwrap();
            let mut data = b"the cat sat on the mat; the cat sat on the hat. ".repeat(12);
            data.extend_from_slice(&[0x04, 0xC0, 0xFF, b'\n', 0, 1, 2]);
            data.extend_from_slice("naïve café, 東京 🚀 the end".as_bytes());
            for (log2, block, streams, policy) in [
                (1u8, 4096u32, 1u16, crate::format::WINDOW_SHIFT),
                (3, 40, 3, crate::format::WINDOW_SHIFT),
                (5, 64, 16, crate::format::WINDOW_REPREFILL),
            ] {
                let mut opts = CompressOptions {
                    block_tokens: block,
                    streams,
                    window: 32,
                    keep: 20,
                    window_policy: policy,
                    ..CompressOptions::default()
                };
                opts.predictor.active_log2 = log2;
                // The continuous cache reads the hidden states the active head gives.
                opts.predictor.cache_log2 = 8;
                // The ASCII starting set and the escape probe (settings version 5).
                opts.predictor.active_ascii_log2 = if log2 == 3 { 4 } else { 0 };
                opts.predictor.probe_rate = if log2 >= 3 { 22 } else { 0 };
                let archive = compress_to_vec(&model, &data, &opts).unwrap();
                for speculate in [true, false] {
                    let mut out = Vec::new();
                    decompress_with(
                        &model,
                        &mut &archive[..],
                        &mut out,
                        &mut |_| {},
                        DEFAULT_MEMORY_LIMIT,
                        speculate,
                    )
                    .unwrap();
                    assert!(
                        out == data,
                        "log2 {log2} block {block} speculate {speculate}"
                    );
                }
            }
        }
    }

    /// Many inputs in one run: each archive is byte for byte the one coded alone (one
    /// block, several blocks of one group, several groups, empty, binary regions, CRLF
    /// text), with and without the active head and cache; decoded side by side, each gives
    /// its input back, speculation on and off; a damaged archive among them is an error
    /// for that one alone, and back-to-back archives decode as one input.
    #[test]
    fn many_inputs_side_by_side_equal_each_alone() {
        let model = crate::testing::synthetic_model().unwrap();
        let mut inputs: Vec<Vec<u8>> = vec![
            b"the cat sat on the mat. ".repeat(3),
            b"a dog ran home; the dog sat. ".repeat(20),
            Vec::new(),
            b"the hat\r\nthe mat\r\n".repeat(9),
            b"x".to_vec(),
            b"one more line of text, the cat again. ".repeat(40),
        ];
        let mut mixed = b"text before the table. ".repeat(10);
        mixed.extend((0..900u32).map(|i| (i * 7 % 13) as u8));
        mixed.extend_from_slice(&b"and text after it. ".repeat(10));
        inputs.insert(2, mixed);
        let refs: Vec<&[u8]> = inputs.iter().map(|v| v.as_slice()).collect();
        // The synthetic model loses to the classical coder on most of these, so regions
        // are off in one configuration: there every archive runs the model.
        for (active, cache, regions) in [(0u8, 0u8, false), (5, 8, true)] {
            let mut opts = CompressOptions {
                block_tokens: 40,
                streams: 4,
                window: 32,
                keep: 20,
                regions,
                ..CompressOptions::default()
            };
            opts.predictor.active_log2 = active;
            opts.predictor.cache_log2 = cache;
            opts.predictor.probe_rate = if active > 0 { 22 } else { 0 };
            let each = compress_each(&model, &refs, &opts, &mut |_| {}).unwrap();
            let mut archives = Vec::new();
            for (input, r) in refs.iter().zip(each) {
                let (archive, stats) = r.unwrap();
                assert_eq!(archive, compress_to_vec(&model, input, &opts).unwrap());
                assert_eq!(stats.archive_bytes, archive.len() as u64);
                archives.push(archive);
            }
            let mut two = archives[0].clone();
            two.extend_from_slice(&archives[1]);
            archives.push(two);
            let mut damaged = archives[1].clone();
            let mid = damaged.len() - 12;
            damaged[mid] ^= 0x20;
            archives.push(damaged);
            let arefs: Vec<&[u8]> = archives.iter().map(|v| v.as_slice()).collect();
            for speculate in [true, false] {
                let o = DecodeOptions {
                    speculate,
                    ..DecodeOptions::default()
                };
                let out = decompress_each(&model, &arefs, o, 16, &mut |_| {});
                let n = refs.len();
                for (i, r) in out.iter().enumerate().take(n) {
                    assert_eq!(&r.as_ref().unwrap().0, &inputs[i], "input {i}");
                }
                let both = [inputs[0].clone(), inputs[1].clone()].concat();
                assert_eq!(out[n].as_ref().unwrap().0, both);
                assert!(out[n + 1].is_err());
            }
        }
    }

    /// Blocks of 40 symbols three side by side, a 32-position window: many groups from a
    /// short input. `active` and `cache` set the active head and the continuous cache.
    fn small_blocks(active: u8, cache: u8) -> CompressOptions {
        let mut opts = CompressOptions {
            block_tokens: 40,
            streams: 3,
            window: 32,
            keep: 20,
            ..CompressOptions::default()
        };
        opts.predictor.active_log2 = active;
        opts.predictor.cache_log2 = cache;
        opts
    }

    /// A traced run writes the same archive, and its trace covers the coded text symbol by
    /// symbol with costs that add up to each run's ideal code length.
    #[test]
    fn traces_add_up_to_the_ideal_lengths() {
        let model = crate::testing::synthetic_model().unwrap();
        let data = b"the cat sat on the mat; the dog ran home. ".repeat(20);
        let variants = [crate::PredictorSettings::llm_only()];
        for mut opts in [small_blocks(0, 0), small_blocks(3, 8)] {
            // Through the model whatever the classical coder would do with this text.
            opts.regions = false;
            let (mut plain, mut traced) = (Vec::new(), Vec::new());
            let run = |o: &CompressOptions, out: &mut Vec<u8>| {
                compress_measure(&model, &data, o, &variants, out, &mut |_| {}, None).unwrap()
            };
            run(&opts, &mut plain);
            let stats = run(
                &CompressOptions {
                    trace: true,
                    ..opts.clone()
                },
                &mut traced,
            );
            assert_eq!(plain, traced);
            assert!(stats.blocks > 3, "several groups: {}", stats.blocks);
            let t = stats.trace.unwrap();
            assert_eq!(t.text, data);
            assert_eq!(
                t.lens.iter().map(|&l| l as usize).sum::<usize>(),
                data.len()
            );
            assert_eq!(t.labels, [opts.predictor.label(), variants[0].label()]);
            let wanted = [stats.ideal_bits, stats.variant_bits[0]];
            for (bits, want) in t.bits.iter().zip(wanted) {
                assert_eq!(bits.len(), t.lens.len());
                let sum: f64 = bits.iter().map(|&b| b as f64).sum();
                assert!((sum - want).abs() < 1e-3 * want, "{sum} vs {want}");
            }
        }
    }

    /// Stretched blocks: fewer, longer blocks that fill whole groups, recorded in the
    /// header's block size, and the same bytes back.
    #[test]
    fn stretched_blocks_fill_groups_and_round_trip() {
        let model = crate::testing::synthetic_model().unwrap();
        let data = b"the cat sat on the mat; the dog ran home. ".repeat(40);
        let plain = small_blocks(0, 0);
        for stretch in [1u32, 2, 4, 100] {
            // Through the model (the synthetic one can lose to the classical coder).
            let opts = CompressOptions {
                block_stretch: stretch,
                regions: false,
                ..plain.clone()
            };
            let archive = compress_to_vec(&model, &data, &opts).unwrap();
            assert_eq!(decompress_to_vec(&model, &archive).unwrap(), data);
            let info = &describe(&mut &archive[..]).unwrap()[0];
            let n = info.symbols as usize;
            let blocks = info.blocks as usize;
            if stretch == 1 {
                assert_eq!(blocks, n.div_ceil(40));
            } else {
                // The fewest groups of three blocks of at most `stretch` × 40 symbols.
                let cap = 40 * stretch.min(u32::MAX / 40) as usize;
                assert!(blocks < n.div_ceil(40), "{stretch}: {blocks} blocks");
                assert!(info.block_tokens as usize <= cap);
                assert_eq!(info.groups as usize, n.div_ceil(3 * cap), "{stretch}");
            }
        }
    }

    /// A compression stopped after any group and resumed (even several times) writes the
    /// archive an uninterrupted run writes, byte for byte, with the full head and with the
    /// active head and continuous cache; a checkpoint of another input, or a damaged one,
    /// is refused rather than overwritten.
    #[test]
    fn resumed_runs_write_the_same_archive() {
        use crate::ErrorKind;
        let model = crate::testing::synthetic_model_with(BACKEND_INT8_EXACT).unwrap();
        let mut data = b"the cat sat on the mat; the dog ran home. ".repeat(30);
        data.extend_from_slice(&[0u8; 600]);
        data.extend_from_slice("naïve café 🚀, the cat came back.\n".repeat(20).as_bytes());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.lmz.resume");
        for (active, cache) in [(0u8, 0u8), (3, 8)] {
            let opts = small_blocks(active, cache);
            let whole = compress_to_vec(&model, &data, &opts).unwrap();
            let run = |ck: Checkpoint| {
                let mut out = Vec::new();
                compress_resumable(&model, &data, &opts, &mut out, &mut |_| {}, &ck)
                    .map(|s| (s, out))
            };
            for stop in [1u64, 4] {
                let e = run(Checkpoint::new(&path).stop_after(stop)).unwrap_err();
                assert!(
                    matches!(e.kind(), ErrorKind::Paused { groups_done } if *groups_done == stop),
                    "active {active} stop {stop}: {e}"
                );
            }
            let (stats, out) = run(Checkpoint::new(&path)).unwrap();
            assert_eq!(stats.resumed_groups, 4);
            assert!(out == whole, "active {active}: resumed archive differs");
            assert_eq!(decompress_to_vec(&model, &out).unwrap(), data);
            // The checkpoint is the caller's to remove; a fresh one runs through.
            Checkpoint::new(&path).remove().unwrap();
            let (stats, out) = run(Checkpoint::new(&path)).unwrap();
            assert_eq!((stats.resumed_groups, out == whole), (0, true));
            Checkpoint::new(&path).remove().unwrap();
        }
        // Another input's checkpoint, and a damaged one, are errors that name the file.
        let opts = CompressOptions {
            block_tokens: 40,
            ..CompressOptions::default()
        };
        let mut sink = Vec::new();
        let ck = Checkpoint::new(&path).stop_after(1);
        assert!(compress_resumable(&model, &data, &opts, &mut sink, &mut |_| {}, &ck).is_err());
        let other = &data[1..];
        let e = compress_resumable(
            &model,
            other,
            &opts,
            &mut sink,
            &mut |_| {},
            &Checkpoint::new(&path),
        )
        .unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::Checkpoint(m) if m.contains("another run")));
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let e = compress_resumable(
            &model,
            &data,
            &opts,
            &mut sink,
            &mut |_| {},
            &Checkpoint::new(&path),
        )
        .unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Checkpoint(m) if m.contains("damaged")),
            "{e}"
        );
    }

    /// Decoding stopped after any group and resumed gives the original, with binary
    /// regions between the text, with the full head and with the active head and cache.
    #[test]
    fn resumed_decoding_gives_the_original() {
        use crate::regions::Regions;
        use crate::ErrorKind;
        let model = crate::testing::synthetic_model_with(BACKEND_INT8_EXACT).unwrap();
        let text = b"the cat sat on the mat; the dog ran home. ".repeat(20);
        let bin: Vec<u8> = (0..300u32).map(|i| (i * 7 % 13) as u8).collect();
        let mut data = text.clone();
        data.extend_from_slice(&bin);
        data.extend_from_slice(&text);
        let (t, b) = (text.len() as u64, bin.len() as u64);
        let regions = Regions {
            lens: vec![t, b, t],
        };
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("decode.ckpt");
        for (active, cache) in [(0u8, 0u8), (3, 8)] {
            let opts = small_blocks(active, cache);
            let mut archive = Vec::new();
            compress_regions(&model, &data, &regions, &opts, &mut archive).unwrap();
            let run = |c: Checkpoint| {
                let mut out = Vec::new();
                decompress_resumable(&model, &archive, &mut out, &mut |_| {}, &c).map(|s| (s, out))
            };
            for stop in [1u64, 3] {
                let e = run(Checkpoint::new(&ck).stop_after(stop)).unwrap_err();
                assert!(
                    matches!(e.kind(), ErrorKind::Paused { groups_done } if *groups_done == stop),
                    "{e}"
                );
            }
            let (stats, out) = run(Checkpoint::new(&ck)).unwrap();
            assert_eq!(stats.resumed_groups, 3);
            assert!(out == data, "active {active}: resumed decoding differs");
            Checkpoint::new(&ck).remove().unwrap();
        }
    }
}
