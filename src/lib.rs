//! lmzip: lossless compression of text with a small language model as the predictor.
//!
//! The pipeline: bytes → [`tokenize`] (lossless symbols) → [`engine`] (next-token logits) →
//! [`predict`] (blend with n-gram/match models) → [`coder`] (24-bit CDF, range coder) →
//! [`format`] (framed, versioned, checksummed container). [`pipeline`] drives it both ways.

pub mod error;
pub use error::{Error, ErrorKind, Result};

pub mod bench;
pub mod coder;
pub mod engine;
pub mod format;
pub mod model;
pub mod pipeline;
pub mod predict;
#[doc(hidden)]
pub mod testing;
pub mod tokenize;
