pub mod error;
pub use error::{Error, ErrorKind, Result};
pub mod coder;
pub mod engine;
pub mod predict;
