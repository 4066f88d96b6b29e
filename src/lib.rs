//! lmzip: lossless compression of text with a small language model as the predictor.
//!
//! The input is tokenized losslessly, a transformer (run by lmzip's own exact engine) gives
//! the probability of every next token, n-gram and match models sharpen it, and a range
//! coder codes the actual token; the result is a framed, checksummed archive that records
//! everything decoding depends on. The archive needs the same model file to decompress.
//!
//! The API is small: load a [`Model`], then [`compress`] and [`decompress`] (or
//! [`compress_to_vec`] and [`decompress_to_vec`], or the [`Encoder`] and [`Decoder`]
//! adapters over any writer or reader) with [`CompressOptions`]; [`describe`] reads what an
//! archive says about itself without a model. Failures are an [`Error`] whose
//! [`ErrorKind`] a program can match on.
//!
//! ```
//! # #[cfg(feature = "testing")] {
//! // With the real model: `lmzip::Model::load(Path::new("models/gemma-3-270m-q4_k_m.gguf"))?`
//! // with `CompressOptions::for_model(&model)` (that model's defaults).
//! // The synthetic model of the `testing` feature keeps this example fast.
//! let model = lmzip::testing::synthetic_model()?;
//! let text = b"the cat sat on the mat; the cat sat on the hat.";
//! let archive = lmzip::compress_to_vec(&model, text, &lmzip::CompressOptions::default())?;
//! assert_eq!(lmzip::decompress_to_vec(&model, &archive)?, text);
//! let info = lmzip::describe(&mut &archive[..])?;
//! assert_eq!(info[0].content_bytes, text.len() as u64);
//! # }
//! # Ok::<(), lmzip::Error>(())
//! ```
//!
//! Inside, the pipeline runs bytes → `regions` (binary regions to the `classic` coder, raw
//! LZMA2, with no model run) → `transform` (CRLF line ends as LF, when the input
//! qualifies) → `tokenize` (lossless symbols) → `engine` (next-token
//! logits) → `predict` (blend with n-gram/match models) → `coder` (24-bit CDF, range coder)
//! → `format` (framed, versioned, checksummed container); `pipeline` drives it both ways.
//! Those modules are public for the command, tests, benchmarks and fuzzers only: they are
//! hidden from the documentation and not part of the stable API.

mod error;
#[doc(hidden)]
pub mod math;
pub mod model;
#[cfg(test)]
mod test_rng;

#[doc(hidden)]
pub mod bench;
#[doc(hidden)]
pub mod classic;
#[doc(hidden)]
pub mod coder;
#[doc(hidden)]
pub mod engine;
#[doc(hidden)]
pub mod format;
#[doc(hidden)]
pub mod pipeline;
#[doc(hidden)]
pub mod predict;
#[doc(hidden)]
pub mod regions;
pub mod report;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;
#[doc(hidden)]
pub mod tokenize;
pub mod transform;

pub use engine::{backend_name, DEFAULT_BACKEND};
pub use error::{Error, ErrorKind, Result};
pub use format::{Checksum, ChecksumKind, WINDOW_REPREFILL, WINDOW_SHIFT};
pub use model::Model;
pub use pipeline::{
    compress, compress_each, compress_resumable, compress_to_vec, decompress, decompress_each,
    decompress_to_vec, decompress_with, describe, member_cuts, member_spans, peek_backend,
    peek_header, ArchiveInfo, Checkpoint, CompressOptions, DecodeOptions, Decoder, Encoder,
    Progress, Share, Stats, Trace, DEFAULT_MEMORY_LIMIT,
};
pub use predict::{
    PredictorSettings, DEFAULT_ACTIVE_ASCII_LOG2, DEFAULT_CACHE_LOG2, DEFAULT_PROBE_RATE,
};
pub use transform::Transform;
