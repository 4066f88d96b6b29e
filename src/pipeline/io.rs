//! `io::Write` and `io::Read` adapters ([`Encoder`], [`Decoder`]) and byte counters.
//!
//! The model codes a whole input at once (its blocks are laid out over all of it), so the
//! encoder buffers what is written and compresses on [`Encoder::finish`], and the decoder
//! decompresses its whole input on the first read. Archives stay verified: the decoder
//! yields nothing until every checksum of its input has held.

use super::options::{CompressOptions, DecodeOptions, Stats};
use crate::model::Model;
use crate::Result;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Counts the bytes written or read through it.
pub(crate) struct Counting<'a, T> {
    inner: &'a mut T,
    count: u64,
}

impl<'a, T> Counting<'a, T> {
    pub(crate) fn new(inner: &'a mut T) -> Self {
        Counting { inner, count: 0 }
    }

    /// Bytes through so far.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    fn add(&mut self, n: usize) -> usize {
        self.count += n as u64;
        n
    }
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        Ok(self.add(n))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        Ok(self.add(n))
    }
}

/// Compresses everything written to it into one archive, written to the inner writer by
/// [`Encoder::finish`] (dropping the encoder without it writes nothing).
///
/// ```
/// # #[cfg(feature = "testing")] {
/// use std::io::Write;
/// let model = lmzip::testing::synthetic_model()?;
/// let mut enc = lmzip::Encoder::new(&model, Vec::new());
/// enc.write_all(b"written in pieces, ")?;
/// enc.write_all(b"compressed as one")?;
/// let archive = enc.finish()?;
/// let text = std::io::read_to_string(lmzip::Decoder::new(&model, &archive[..]))?;
/// assert_eq!(text, "written in pieces, compressed as one");
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Encoder<'m, W: Write> {
    model: &'m Model,
    opts: CompressOptions,
    data: Vec<u8>,
    out: W,
}

impl<'m, W: Write> Encoder<'m, W> {
    /// An encoder with the default options.
    pub fn new(model: &'m Model, out: W) -> Self {
        Self::with_options(model, CompressOptions::default(), out)
    }

    /// An encoder with the given options.
    pub fn with_options(model: &'m Model, opts: CompressOptions, out: W) -> Self {
        Encoder {
            model,
            opts,
            data: Vec::new(),
            out,
        }
    }

    /// Compresses what was written, writes the archive and returns the inner writer.
    pub fn finish(self) -> Result<W> {
        self.finish_with_stats().map(|(w, _)| w)
    }

    /// Like [`Encoder::finish`], with what the run did.
    pub fn finish_with_stats(mut self) -> Result<(W, Stats)> {
        let stats = super::compress(
            self.model,
            &self.data,
            &self.opts,
            &mut self.out,
            &mut |_| {},
        )?;
        self.out.flush()?;
        Ok((self.out, stats))
    }
}

impl<W: Write> Write for Encoder<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }

    /// Nothing to flush before [`Encoder::finish`]: no byte of the archive exists yet.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Decompresses every archive its reader holds (archives back to back decode to their
/// contents back to back) and yields the verified result. The library's errors come out as
/// `io::Error`s that carry the [`Error`](crate::Error) (`io::Error::get_ref` and a downcast
/// recover it); its I/O errors as themselves.
pub struct Decoder<'m, R: Read> {
    model: &'m Model,
    opts: DecodeOptions,
    input: R,
    data: Option<io::Cursor<Vec<u8>>>,
}

impl<'m, R: Read> Decoder<'m, R> {
    /// A decoder with the default options.
    pub fn new(model: &'m Model, input: R) -> Self {
        Self::with_options(model, DecodeOptions::default(), input)
    }

    /// A decoder with the given options.
    pub fn with_options(model: &'m Model, opts: DecodeOptions, input: R) -> Self {
        Decoder {
            model,
            opts,
            input,
            data: None,
        }
    }

    /// The inner reader (after a read, consumed to its end).
    pub fn into_inner(self) -> R {
        self.input
    }
}

impl<R: Read> Read for Decoder<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.data.is_none() {
            let mut out = Vec::new();
            super::decompress_with(
                self.model,
                &mut self.input,
                &mut out,
                &mut |_| {},
                self.opts.memory_limit,
                self.opts.speculate,
            )
            .map_err(io::Error::from)?;
            self.data = Some(io::Cursor::new(out));
        }
        match &mut self.data {
            Some(c) => c.read(buf),
            None => Ok(0),
        }
    }
}

/// A writer that checks what is written against `expected`, keeping nothing: a decoder
/// writing into it verifies a round trip without a second copy of the output. A byte
/// that differs is an error ([`io::ErrorKind::InvalidData`]); [`Compare::is_complete`]
/// says afterwards whether all of `expected` came.
pub struct Compare<'a> {
    rest: &'a [u8],
}

impl<'a> Compare<'a> {
    pub fn new(expected: &'a [u8]) -> Self {
        Compare { rest: expected }
    }

    /// Whether everything expected has been written.
    pub fn is_complete(&self) -> bool {
        self.rest.is_empty()
    }
}

impl Write for Compare<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.rest.strip_prefix(buf) {
            Some(rest) => {
                self.rest = rest;
                Ok(buf.len())
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "decodes to different bytes",
            )),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes `bytes` to `path` through a synced temporary file renamed over it.
pub(crate) fn write_replacing(path: &Path, bytes: &[u8]) -> Result<()> {
    write_replacing_with(path, |w| w.write_all(bytes).map_err(Into::into))
}

/// Writes what `fill` writes to `path` through a buffered, synced temporary file renamed
/// over it: `path` holds the old bytes or the new ones, never a mix.
pub(crate) fn write_replacing_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> Result<()> {
        let mut w = io::BufWriter::new(std::fs::File::create(&tmp)?);
        fill(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
