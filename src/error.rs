//! Typed library errors: every failure a caller may want to tell apart has its own kind.

use std::fmt;

/// What went wrong, in a form a program can match on.
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input does not start with the lmzip magic number.
    BadMagic { found: [u8; 4] },
    /// The archive was written by a format version this build cannot read (`supported`
    /// is the newest it reads; it reads every version from `format::OLDEST_VERSION` on).
    UnsupportedVersion { found: u16, supported: u16 },
    /// A reserved flag bit or reserved field is set.
    ReservedBitsSet { field: &'static str, value: u64 },
    /// The archive ends before a structure is complete.
    Truncated { what: &'static str },
    /// A header field holds a value this build does not know or that is out of range.
    InvalidField { field: &'static str, value: u64 },
    /// A declared size is beyond the documented limits (checked before allocating).
    LimitExceeded {
        field: &'static str,
        value: u64,
        limit: u64,
    },
    /// A checksum of a header, a block or the whole content does not match.
    ChecksumMismatch { what: &'static str },
    /// A decoded length differs from the one the archive declares.
    LengthMismatch {
        what: &'static str,
        expected: u64,
        actual: u64,
    },
    /// The archive needs another model (or tokenizer) than the one loaded.
    ModelMismatch {
        what: &'static str,
        expected: String,
        actual: String,
    },
    /// The archive needs a numeric backend this build does not provide.
    UnsupportedBackend { id: u16 },
    /// The archive's predictor settings use a layout this build does not know.
    UnsupportedPredictor { version: u8 },
    /// Compression options outside what the format allows.
    InvalidOption(String),
    /// The model file cannot be found, read or understood.
    Model(String),
    /// The model uses something this build does not run (an architecture, a weight type
    /// for the chosen backend, a RoPE variant, a tokenizer kind, a device): names what it
    /// found and what is supported.
    UnsupportedModel {
        what: &'static str,
        found: String,
        supported: &'static str,
    },
    /// The tokenizer cannot be built from the model's metadata.
    Tokenizer(String),
    /// An error from candle while loading weights.
    Candle(String),
    /// A resume checkpoint cannot be used (damaged, another run's, another build's): says
    /// which file and what to do.
    Checkpoint(String),
    /// A resumable run stopped after saving `groups_done` groups, as asked
    /// ([`Checkpoint::stop_after`](crate::Checkpoint::stop_after), for tests).
    Paused { groups_done: u64 },
    /// Any I/O error.
    Io(std::io::Error),
    /// An internal invariant failed (a bug): reported, never papered over.
    Internal(String),
}

/// The library's error type.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
}

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps a kind.
    pub fn new(kind: ErrorKind) -> Self {
        Error { kind }
    }

    /// The kind, for matching.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Shorthand for a truncated structure.
    pub fn truncated(what: &'static str) -> Self {
        Error::new(ErrorKind::Truncated { what })
    }

    /// Shorthand for an unsupported model feature.
    pub fn unsupported(
        what: &'static str,
        found: impl Into<String>,
        supported: &'static str,
    ) -> Self {
        Error::new(ErrorKind::UnsupportedModel {
            what,
            found: found.into(),
            supported,
        })
    }

    /// Shorthand for an internal error.
    pub fn internal(msg: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal(msg.into()))
    }

    /// True if this is an I/O error of the given kind (used to keep a broken pipe quiet).
    pub fn is_io_kind(&self, k: std::io::ErrorKind) -> bool {
        matches!(&self.kind, ErrorKind::Io(e) if e.kind() == k)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        match &self.kind {
            BadMagic { found } => write!(
                f,
                "not an lmzip archive (magic bytes {:02x} {:02x} {:02x} {:02x})",
                found[0], found[1], found[2], found[3]
            ),
            UnsupportedVersion { found, supported } => write!(
                f,
                "archive format version {found} is not supported by this build \
                 (it reads versions {} to {supported}); use the lmzip release that wrote it",
                crate::format::OLDEST_VERSION
            ),
            ReservedBitsSet { field, value } => {
                write!(
                    f,
                    "corrupt archive: reserved bits set in {field} ({value:#x})"
                )
            }
            Truncated { what } => write!(f, "archive is truncated (ends inside the {what})"),
            InvalidField { field, value } => {
                write!(
                    f,
                    "corrupt or unsupported archive: invalid {field} ({value})"
                )
            }
            LimitExceeded {
                field,
                value,
                limit,
            } => write!(
                f,
                "corrupt archive: {field} is {value}, beyond the limit of {limit}"
            ),
            ChecksumMismatch { what } => write!(
                f,
                "checksum mismatch in {what}: the archive is corrupt, or it was made by a \
                 different numeric backend or machine kind than this one"
            ),
            LengthMismatch {
                what,
                expected,
                actual,
            } => write!(
                f,
                "length mismatch in {what}: expected {expected}, got {actual}"
            ),
            ModelMismatch {
                what,
                expected,
                actual,
            } => write!(
                f,
                "this archive needs a different {what}: it was made with {expected}, \
                 but the loaded one is {actual}"
            ),
            InvalidOption(m) => write!(f, "invalid option: {m}"),
            UnsupportedPredictor { version } => write!(
                f,
                "archive uses predictor settings version {version}, which this build does not \
                 provide; use the lmzip release that wrote it"
            ),
            UnsupportedBackend { id } => write!(
                f,
                "archive uses numeric backend {id}, which this build does not provide"
            ),
            Model(m) => write!(f, "model: {m}"),
            UnsupportedModel {
                what,
                found,
                supported,
            } => write!(
                f,
                "model: {what} {found} is not supported (supported: {supported})"
            ),
            Tokenizer(m) => write!(f, "tokenizer: {m}"),
            Candle(m) => write!(f, "candle: {m}"),
            Checkpoint(m) => write!(f, "checkpoint {m}"),
            Paused { groups_done } => write!(
                f,
                "stopped after {groups_done} groups, as asked; the checkpoint resumes it"
            ),
            Io(e) => write!(f, "{e}"),
            Internal(m) => write!(f, "internal error (please report): {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        // A short read while parsing is a truncated archive; callers that parse map it with
        // context, everything else stays an I/O error.
        Error::new(ErrorKind::Io(e))
    }
}

impl From<Error> for std::io::Error {
    /// An I/O error comes out as itself (so its kind, a broken pipe say, survives); any
    /// other error as an `io::Error` that carries it.
    fn from(e: Error) -> Self {
        match e.kind {
            ErrorKind::Io(io) => io,
            _ => std::io::Error::other(e),
        }
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::new(ErrorKind::Candle(e.to_string()))
    }
}
