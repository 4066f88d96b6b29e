//! Checkpoints of a long compression: the encoder's whole state saved at block-group
//! boundaries, so an interrupted run resumes where it stopped and writes the same archive.
//!
//! Everything the rest of the archive depends on is in a snapshot: the archive bytes so far
//! (header and finished groups), every predictor run's state (n-gram tables, mixer, APM,
//! bias, novelty, continuous cache, history), the active head's set in its order, and the
//! counters. The model's caches are not: each group starts them empty. A snapshot names
//! the run it belongs to by a fingerprint of the lmzip build, the model, the options and
//! the input, so it is never applied to anything else.
//!
//! Decoding keeps the same kind of checkpoint for `lmzip bench --resume` (its archive is
//! in memory): the decoder's predictor state, the archive bytes read and the output so far.
//!
//! File layout (all integers little-endian): the magic `LMZRESUM`, a `u32` snapshot
//! version, the run's 32-byte fingerprint, the snapshot (postcard: floats keep their
//! bits), then XXH64 of everything before it. Written to a temporary file, synced and renamed, so a crash while saving
//! leaves the previous checkpoint. It is never mistaken for an archive: the magic differs.

use super::options::{CompressOptions, Stats};
use crate::model::Model;
use crate::predict::{Ensemble, PredictorSettings};
use crate::{Error, ErrorKind, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// First bytes of a checkpoint file.
const MAGIC: &[u8; 8] = b"LMZRESUM";
/// Layout of the snapshot; a checkpoint of another layout is refused.
const SNAPSHOT_VERSION: u32 = 1;

/// Where a resumable compression keeps its progress ([`crate::compress_resumable`]).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    path: PathBuf,
    stop_after: Option<u64>,
}

impl Checkpoint {
    /// A checkpoint kept at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Checkpoint {
            path: path.into(),
            stop_after: None,
        }
    }

    /// Stops the run with [`ErrorKind::Paused`] once `groups` groups are saved, as an
    /// interruption would (for tests).
    #[doc(hidden)]
    pub fn stop_after(mut self, groups: u64) -> Self {
        self.stop_after = Some(groups);
        self
    }

    /// The checkpoint file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the checkpoint (once the archive it led to is safely stored); a missing
    /// file is not an error.
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// The snapshot saved for the run `fingerprint` names, if there is one. A damaged
    /// checkpoint, or one of another run, is an error: silently starting over could throw
    /// away days of work the user meant to keep.
    pub(crate) fn load<T: DeserializeOwned>(&self, fingerprint: &[u8; 32]) -> Result<Option<T>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let bad = |why: &str| {
            Error::new(ErrorKind::Checkpoint(format!(
                "{} {why}; delete it to start over",
                self.path.display()
            )))
        };
        let head = MAGIC.len() + 4 + 32;
        let body_end = bytes
            .len()
            .checked_sub(8)
            .filter(|&n| n >= head)
            .ok_or_else(|| bad("is too short to be a checkpoint"))?;
        if &bytes[..MAGIC.len()] != MAGIC {
            return Err(bad("is not an lmzip checkpoint"));
        }
        let mut sum = [0u8; 8];
        sum.copy_from_slice(&bytes[body_end..]);
        if xxhash_rust::xxh64::xxh64(&bytes[..body_end], 0) != u64::from_le_bytes(sum) {
            return Err(bad("is damaged (its checksum does not match)"));
        }
        let mut version = [0u8; 4];
        version.copy_from_slice(&bytes[MAGIC.len()..MAGIC.len() + 4]);
        if u32::from_le_bytes(version) != SNAPSHOT_VERSION {
            return Err(bad("was written by another lmzip version"));
        }
        if &bytes[MAGIC.len() + 4..head] != fingerprint {
            return Err(bad(
                "belongs to another run (a different input, model, options or lmzip build)",
            ));
        }
        postcard::from_bytes(&bytes[head..body_end])
            .map(Some)
            .map_err(|_| bad("was written by another lmzip build"))
    }

    /// Saves `snap` of the run `fingerprint` names in place of the previous checkpoint,
    /// atomically.
    pub(crate) fn save<T: Serialize>(&self, fingerprint: &[u8; 32], snap: &T) -> Result<()> {
        // Streamed to the file (the tables run to tens of megabytes), hashed on the way.
        super::io::write_replacing_with(&self.path, |w| {
            let mut w = Hashing {
                inner: w,
                hash: xxhash_rust::xxh64::Xxh64::new(0),
                failed: None,
            };
            w.write_all(MAGIC)?;
            w.write_all(&SNAPSHOT_VERSION.to_le_bytes())?;
            w.write_all(fingerprint)?;
            // postcard writes byte by byte: a buffer in front keeps that cheap. Its error
            // does not carry the I/O error (a full disk, say), so that is kept aside.
            let mut buf = std::io::BufWriter::with_capacity(1 << 16, w);
            if let Err(e) = postcard::to_io(snap, &mut buf) {
                return Err(match buf.get_mut().failed.take() {
                    Some(io) => io.into(),
                    None => Error::internal(format!("saving the checkpoint: {e}")),
                });
            }
            let w = buf.into_inner().map_err(|e| e.into_error())?;
            let sum = w.hash.digest();
            w.inner.write_all(&sum.to_le_bytes())?;
            Ok(())
        })
    }

    /// Whether the run should stop after `groups_done` groups ([`Checkpoint::stop_after`]).
    pub(crate) fn stops_at(&self, groups_done: u64) -> bool {
        self.stop_after == Some(groups_done)
    }
}

/// A writer that hashes what passes through it (XXH64, seed 0) and keeps the first error.
struct Hashing<'a> {
    inner: &'a mut dyn Write,
    hash: xxhash_rust::xxh64::Xxh64,
    failed: Option<std::io::Error>,
}

impl Write for Hashing<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.inner.write(buf) {
            Ok(n) => {
                self.hash.update(&buf[..n]);
                Ok(n)
            }
            Err(e) => {
                let kind = e.kind();
                self.failed.get_or_insert(e);
                Err(kind.into())
            }
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Names one compression run: the lmzip build, the model, the options that shape the
/// archive, the variants measured beside it, and the input.
pub(crate) fn fingerprint(
    model: &Model,
    opts: &CompressOptions,
    variants: &[PredictorSettings],
    data: &[u8],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"lmzip checkpoint\0");
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(model.sha256);
    // Rows per call change the speed, never the archive: a resumed run may use others.
    let shape = CompressOptions {
        rows_per_call: 0,
        ..opts.clone()
    };
    h.update(format!("{shape:?}\0{variants:?}\0").as_bytes());
    h.update((data.len() as u64).to_le_bytes());
    h.update(data);
    h.finalize().into()
}

/// Names one decoding run: the lmzip build, the model and the archive.
pub(crate) fn decode_fingerprint(model: &Model, archive: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"lmzip decode checkpoint\0");
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(model.sha256);
    h.update(archive);
    h.finalize().into()
}

/// One predictor run's state: its ensemble and the ideal code length so far.
#[derive(Serialize, Deserialize)]
pub(crate) struct RunState {
    pub ens: Ensemble,
    pub bits: f64,
}

/// The encoder's state after `groups_done` groups, as loaded.
#[derive(Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub groups_done: u64,
    /// Bytes of the input (as coded) the finished groups cover.
    pub done_bytes: u64,
    /// Wall-clock seconds the runs up to here spent.
    pub elapsed: f64,
    /// The archive so far: header, region section, finished groups.
    pub archive: Vec<u8>,
    pub stats: Stats,
    pub runs: Vec<RunState>,
    /// The active head's set, in the order it grew.
    pub active: Option<Vec<u32>>,
}

/// [`RunState`] borrowed, to save without copying the tables (serde writes a reference
/// as the value it points to, so the bytes are a [`RunState`]'s).
#[derive(Serialize)]
pub(crate) struct RunRef<'a> {
    pub ens: &'a Ensemble,
    pub bits: f64,
}

/// [`Snapshot`] borrowed, for saving.
#[derive(Serialize)]
pub(crate) struct SnapshotRef<'a> {
    pub groups_done: u64,
    pub done_bytes: u64,
    pub elapsed: f64,
    pub archive: &'a [u8],
    pub stats: &'a Stats,
    pub runs: Vec<RunRef<'a>>,
    pub active: Option<&'a [u32]>,
}

/// The decoder's state after `groups_done` group frames of one archive, as loaded.
#[derive(Deserialize)]
pub(crate) struct DecodeSnapshot {
    pub groups_done: u64,
    /// Wall-clock seconds the runs up to here spent.
    pub elapsed: f64,
    /// Archive bytes read, from its first byte (header included).
    pub offset: u64,
    /// The original bytes written so far.
    pub output: Vec<u8>,
    pub stats: Stats,
    pub run: RunState,
    pub active: Option<Vec<u32>>,
    pub rates: super::speculate::GuessRates,
    pub regions: super::decode::InterleaveAt,
    pub tally: crate::format::ArchiveTally,
}

/// [`DecodeSnapshot`] borrowed, for saving.
#[derive(Serialize)]
pub(crate) struct DecodeSnapshotRef<'a> {
    pub groups_done: u64,
    pub elapsed: f64,
    pub offset: u64,
    pub output: &'a [u8],
    pub stats: &'a Stats,
    pub run: RunRef<'a>,
    pub active: Option<&'a [u32]>,
    pub rates: &'a super::speculate::GuessRates,
    pub regions: super::decode::InterleaveAt,
    pub tally: &'a crate::format::ArchiveTally,
}

/// A decoding that saves its progress: where, for which run, and how many archive bytes
/// came before the reader it is given (the header).
pub(crate) struct DecodeResume<'a> {
    pub checkpoint: &'a Checkpoint,
    pub fingerprint: [u8; 32],
    pub base: u64,
}
