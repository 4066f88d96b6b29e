//! Classical compressors measured beside lmzip by `lmzip bench --vs`: xz, zstd and brotli
//! through their maintained crates at stated levels, and external commands
//! (`--vs-cmd NAME COMPRESS DECOMPRESS`). Every round trip is checked byte for byte.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::io::{Read, Write};
use std::time::Instant;

/// One compressor's figures on one file.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PeerResult {
    /// The compressor and its level as a user would type it (`xz -9e`).
    pub name: String,
    pub compressed_bytes: u64,
    pub compress_seconds: f64,
    pub decompress_seconds: f64,
    pub round_trip_ok: bool,
}

/// A compressor to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// xz format, preset 9 extreme (`xz -9e`), CRC-64 as xz writes it.
    Xz,
    /// zstd level 19 (`zstd -19`), the highest level without `--ultra`.
    Zstd,
    /// brotli quality 11, window 2^24 (`brotli -q 11 -w 24`).
    Brotli,
    /// An external command pair run through `sh -c`, with `{in}` and `{out}` replaced by
    /// quoted paths.
    Command {
        name: String,
        compress: String,
        decompress: String,
    },
}

impl Peer {
    /// Parses a `--vs` list: `xz,zstd,brotli`.
    pub fn parse_list(list: &str) -> Result<Vec<Peer>> {
        list.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| match s.trim() {
                "xz" => Ok(Peer::Xz),
                "zstd" => Ok(Peer::Zstd),
                "brotli" => Ok(Peer::Brotli),
                other => bail!(
                    "unknown compressor '{other}' for --vs (known: xz, zstd, brotli; others \
                     through --vs-cmd NAME COMPRESS DECOMPRESS)"
                ),
            })
            .collect()
    }

    /// How the result names it.
    pub fn name(&self) -> String {
        match self {
            Peer::Xz => "xz -9e".into(),
            Peer::Zstd => "zstd -19".into(),
            Peer::Brotli => "brotli -q 11".into(),
            Peer::Command { name, .. } => name.clone(),
        }
    }

    /// Compresses and decompresses `data`, timing each way, and checks the round trip.
    pub fn measure(&self, data: &[u8]) -> Result<PeerResult> {
        let name = self.name();
        let (packed, ct, restored, dt) = match self {
            Peer::Command {
                compress,
                decompress,
                ..
            } => run_commands(&name, compress, decompress, data)?,
            _ => {
                let t = Instant::now();
                let packed = self.compress(data).with_context(|| name.clone())?;
                let ct = t.elapsed().as_secs_f64();
                let t = Instant::now();
                let restored = self.decompress(&packed).with_context(|| name.clone())?;
                (packed, ct, restored, t.elapsed().as_secs_f64())
            }
        };
        let ok = restored == data;
        if !ok {
            bail!("{name}: the round trip differs from the original");
        }
        Ok(PeerResult {
            name,
            compressed_bytes: packed.len() as u64,
            compress_seconds: ct,
            decompress_seconds: dt,
            round_trip_ok: ok,
        })
    }

    fn compress(&self, data: &[u8]) -> Result<Vec<u8>> {
        Ok(match self {
            Peer::Xz => {
                let preset = 9 | liblzma::stream::PRESET_EXTREME;
                let stream = liblzma::stream::Stream::new_easy_encoder(
                    preset,
                    liblzma::stream::Check::Crc64,
                )?;
                let mut w = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
                w.write_all(data)?;
                w.finish()?
            }
            Peer::Zstd => {
                // As the zstd command writes a frame: content size and checksum included.
                let mut w = zstd::stream::write::Encoder::new(Vec::new(), 19)?;
                w.include_checksum(true)?;
                w.include_contentsize(true)?;
                w.set_pledged_src_size(Some(data.len() as u64))?;
                w.write_all(data)?;
                w.finish()?
            }
            Peer::Brotli => {
                let mut out = Vec::new();
                let mut w = brotli::CompressorWriter::new(&mut out, 1 << 16, 11, 24);
                w.write_all(data)?;
                w.flush()?;
                drop(w);
                out
            }
            Peer::Command { .. } => unreachable!("commands run through run_commands"),
        })
    }

    fn decompress(&self, packed: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        match self {
            Peer::Xz => {
                liblzma::read::XzDecoder::new(packed).read_to_end(&mut out)?;
            }
            Peer::Zstd => {
                zstd::stream::read::Decoder::new(packed)?.read_to_end(&mut out)?;
            }
            Peer::Brotli => {
                brotli::Decompressor::new(packed, 1 << 16).read_to_end(&mut out)?;
            }
            Peer::Command { .. } => unreachable!("commands run through run_commands"),
        }
        Ok(out)
    }
}

/// `s` quoted for `sh`: in single quotes, each `'` written as `'\''`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `template` through `sh -c` with `{in}` and `{out}` replaced; returns its seconds.
fn run_one(
    name: &str,
    template: &str,
    input: &std::path::Path,
    output: &std::path::Path,
) -> Result<f64> {
    let cmd = template
        .replace("{in}", &sh_quote(&input.to_string_lossy()))
        .replace("{out}", &sh_quote(&output.to_string_lossy()));
    let t = Instant::now();
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .stdin(std::process::Stdio::null())
        .status()
        .with_context(|| format!("{name}: cannot run sh -c {cmd}"))?;
    let secs = t.elapsed().as_secs_f64();
    if !st.success() {
        bail!("{name}: `{cmd}` failed ({st})");
    }
    Ok(secs)
}

/// An external compressor: input, archive and restored file in a temporary folder.
fn run_commands(
    name: &str,
    compress: &str,
    decompress: &str,
    data: &[u8],
) -> Result<(Vec<u8>, f64, Vec<u8>, f64)> {
    let dir = tempfile::tempdir()?;
    let (input, packed, restored) = (
        dir.path().join("input"),
        dir.path().join("packed"),
        dir.path().join("restored"),
    );
    std::fs::write(&input, data)?;
    let ct = run_one(name, compress, &input, &packed)?;
    let dt = run_one(name, decompress, &packed, &restored)?;
    let packed = std::fs::read(&packed).with_context(|| format!("{name}: no archive written"))?;
    let restored =
        std::fs::read(&restored).with_context(|| format!("{name}: nothing decompressed"))?;
    Ok((packed, ct, restored, dt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peer_round_trips() {
        let mut data = b"peers: the same bytes back, ".repeat(200);
        data.extend((0..3000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8));
        for p in Peer::parse_list("xz,zstd,brotli").unwrap() {
            let r = p.measure(&data).unwrap();
            assert!(
                r.round_trip_ok && r.compressed_bytes < data.len() as u64,
                "{r:?}"
            );
        }
        let cat = Peer::Command {
            name: "cat".into(),
            compress: "cat {in} > {out}".into(),
            decompress: "cat {in} > {out}".into(),
        };
        assert_eq!(
            cat.measure(&data).unwrap().compressed_bytes,
            data.len() as u64
        );
        let lossy = Peer::Command {
            name: "lossy".into(),
            compress: "head -c 10 {in} > {out}".into(),
            decompress: "cat {in} > {out}".into(),
        };
        assert!(lossy.measure(&data).is_err());
        assert!(Peer::parse_list("xz,gzip").is_err());
    }

    #[test]
    fn quoting_survives_odd_names() {
        assert_eq!(sh_quote("a b'c"), r"'a b'\''c'");
    }
}
