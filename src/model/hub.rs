//! `hf:ORG/NAME[@REVISION][:FILE]` model names, fetched through the Hugging Face hub cache.
//!
//! Nothing is fetched unless the user names a model this way. The cache is the one the
//! Python `huggingface_hub` uses (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`); a model already complete there is used without any network
//! access, `HF_HUB_OFFLINE=1` forbids the network altogether, and `HF_ENDPOINT` names
//! another hub (a mirror, or a test server). The archive records the model's content
//! identity, not its name, so a model fetched this way and a local copy of the same files
//! decode each other's archives.

use super::checkpoint::{shards_of_index, INDEX_FILE, SINGLE_FILE};
use crate::{Error, ErrorKind, Result};
use std::fmt;
use std::path::{Path, PathBuf};

/// A parsed `hf:` model name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSpec {
    /// `ORG/NAME` (or a legacy single `NAME`).
    pub repo: String,
    /// Branch, tag or commit; `main` when absent.
    pub revision: Option<String>,
    /// One file of the repository (a GGUF file); absent: the repository is a model folder.
    pub file: Option<String>,
}

impl fmt::Display for HubSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hf:{}", self.repo)?;
        if let Some(r) = &self.revision {
            write!(f, "@{r}")?;
        }
        if let Some(x) = &self.file {
            write!(f, ":{x}")?;
        }
        Ok(())
    }
}

fn spec_err(s: &str, why: &str) -> Error {
    Error::new(ErrorKind::Model(format!(
        "'{s}' is not a valid hub model name ({why}); expected hf:ORG/NAME[@REVISION][:FILE] \
         (a local file whose name starts with hf: can be given as ./hf:…)"
    )))
}

/// `Some` when `path` is an `hf:` name (parsed, or why not); `None` for a local path.
pub fn parse_spec(path: &Path) -> Option<Result<HubSpec>> {
    let s = path.to_str()?;
    let rest = s.strip_prefix("hf:")?;
    Some(parse_rest(s, rest))
}

fn parse_rest(s: &str, rest: &str) -> Result<HubSpec> {
    let (repo_rev, file) = match rest.split_once(':') {
        Some((a, f)) => (a, Some(f)),
        None => (rest, None),
    };
    let (repo, revision) = match repo_rev.split_once('@') {
        Some((r, v)) => (r, Some(v)),
        None => (repo_rev, None),
    };
    let name_ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() > 2 || !parts.iter().all(|p| name_ok(p)) {
        return Err(spec_err(s, "the repository must be ORG/NAME"));
    }
    if let Some(r) = revision {
        let ok = !r.is_empty()
            && !r.split('/').any(|p| p.is_empty() || p == "." || p == "..")
            && r.chars().all(|c| c.is_ascii_graphic() && c != '\\');
        if !ok {
            return Err(spec_err(s, "bad revision"));
        }
    }
    if let Some(f) = file {
        let ok = !f.is_empty()
            && !f.split('/').any(|p| p.is_empty() || p == "." || p == "..")
            && !f.contains('\\');
        if !ok {
            return Err(spec_err(s, "bad file name"));
        }
    }
    Ok(HubSpec {
        repo: repo.to_string(),
        revision: revision.map(str::to_string),
        file: file.map(str::to_string),
    })
}

/// Whether an environment variable holds a true value (`1`, `true`, `yes`, `on`), as
/// `huggingface_hub` reads `HF_HUB_OFFLINE`.
fn env_true(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// The hub cache folder, as `huggingface_hub` chooses it.
pub fn cache_dir() -> Result<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = var("HF_HUB_CACHE") {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = var("HF_HOME") {
        return Ok(PathBuf::from(p).join("hub"));
    }
    if let Some(h) = var("HOME") {
        return Ok(PathBuf::from(h).join(".cache/huggingface/hub"));
    }
    Err(Error::new(ErrorKind::Model(
        "no Hugging Face cache folder: set HF_HUB_CACHE or HF_HOME".into(),
    )))
}

/// The local path of the model `spec` names: a GGUF file (with `:FILE`) or a snapshot
/// folder holding config.json, tokenizer.json and the safetensors weights.
pub fn fetch(spec: &HubSpec) -> Result<PathBuf> {
    let cache = cache_dir()?;
    if let Some(p) = from_cache(&cache, spec) {
        return Ok(p);
    }
    if env_true("HF_HUB_OFFLINE") {
        return Err(Error::new(ErrorKind::Model(format!(
            "{spec} is not (completely) in the Hugging Face cache at {}, and HF_HUB_OFFLINE \
             is set; fetch it once with network access",
            cache.display()
        ))));
    }
    download(&cache, spec)
}

/// The files a complete folder model needs in one snapshot, given what is there.
fn folder_files(has: &dyn Fn(&str) -> Option<PathBuf>) -> Option<Vec<PathBuf>> {
    let mut v = vec![has("config.json")?, has("tokenizer.json")?];
    match has(INDEX_FILE) {
        Some(index) => {
            let shards = shards_of_index(&std::fs::read(&index).ok()?).ok()?;
            v.push(index);
            for s in shards {
                v.push(has(&s)?);
            }
        }
        None => v.push(has(SINGLE_FILE)?),
    }
    Some(v)
}

/// The snapshot folder of `revision` (a branch or tag resolves through `refs/`).
fn snapshot_dir(cache: &Path, spec: &HubSpec) -> Option<PathBuf> {
    let repo_dir = cache.join(format!("models--{}", spec.repo.replace('/', "--")));
    let rev = spec.revision.as_deref().unwrap_or("main");
    let commit = std::fs::read_to_string(repo_dir.join("refs").join(rev))
        .ok()
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|| rev.to_string());
    let dir = repo_dir.join("snapshots").join(commit);
    dir.is_dir().then_some(dir)
}

/// The model from the cache alone, if every file it needs is there.
fn from_cache(cache: &Path, spec: &HubSpec) -> Option<PathBuf> {
    let dir = snapshot_dir(cache, spec)?;
    let has = |n: &str| {
        let p = dir.join(n);
        p.is_file().then_some(p)
    };
    match &spec.file {
        Some(f) => has(f),
        None => folder_files(&has).map(|_| dir.clone()),
    }
}

#[cfg(not(feature = "hub"))]
fn download(_cache: &Path, spec: &HubSpec) -> Result<PathBuf> {
    Err(Error::unsupported(
        "model source",
        format!("{spec} (not in the cache)"),
        "GGUF files and model folders; this build has no hub client (cargo feature `hub`)",
    ))
}

#[cfg(feature = "hub")]
fn download(cache: &Path, spec: &HubSpec) -> Result<PathBuf> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Cache, Repo, RepoType};
    use std::io::IsTerminal;

    let endpoint = std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "https://huggingface.co".to_string());
    let net = |what: &str, e: hf_hub::api::sync::ApiError| {
        Error::new(ErrorKind::Model(format!(
            "{spec}: {what} from {endpoint} failed: {e} (HF_ENDPOINT picks another hub; \
             HF_HUB_OFFLINE=1 uses only the cache)"
        )))
    };
    let mut builder = ApiBuilder::from_cache(Cache::new(cache.to_path_buf()))
        .with_endpoint(endpoint.clone())
        .with_progress(std::io::stderr().is_terminal());
    if let Ok(t) = std::env::var("HF_TOKEN") {
        builder = builder.with_token(Some(t));
    }
    let api = builder.build().map_err(|e| net("connecting", e))?;
    let rev = spec.revision.clone().unwrap_or_else(|| "main".to_string());
    if let Some(f) = &spec.file {
        let repo = api.repo(Repo::with_revision(spec.repo.clone(), RepoType::Model, rev));
        return repo.get(f).map_err(|e| net(&format!("fetching {f}"), e));
    }
    // Pin every file to the commit the revision points to now, so that the folder is one
    // snapshot even if the branch moves while files are fetched.
    let named = api.repo(Repo::with_revision(
        spec.repo.clone(),
        RepoType::Model,
        rev.clone(),
    ));
    let info = named.info().map_err(|e| net("listing the repository", e))?;
    let files: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let pinned = api.repo(Repo::with_revision(
        spec.repo.clone(),
        RepoType::Model,
        info.sha.clone(),
    ));
    let get = |n: &str| pinned.get(n).map_err(|e| net(&format!("fetching {n}"), e));
    for n in ["config.json", "tokenizer.json"] {
        if !files.contains(&n) {
            return Err(Error::new(ErrorKind::Model(format!(
                "{spec} has no {n}; for a GGUF file in that repository use {spec}:FILE.gguf"
            ))));
        }
    }
    let config = get("config.json")?;
    get("tokenizer.json")?;
    if files.contains(&INDEX_FILE) {
        let index = get(INDEX_FILE)?;
        for s in shards_of_index(&std::fs::read(index)?)? {
            get(&s)?;
        }
    } else if files.contains(&SINGLE_FILE) {
        get(SINGLE_FILE)?;
    } else {
        return Err(Error::new(ErrorKind::Model(format!(
            "{spec} has neither {SINGLE_FILE} nor {INDEX_FILE}; for a GGUF file in that \
             repository use {spec}:FILE.gguf"
        ))));
    }
    // Let later runs (and HF_HUB_OFFLINE) find the snapshot by the name the user gave.
    hf_hub::Cache::new(cache.to_path_buf())
        .repo(Repo::with_revision(spec.repo.clone(), RepoType::Model, rev))
        .create_ref(&info.sha)?;
    config
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::internal("hub file without a folder"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_names_parse() {
        let p = |s: &str| parse_spec(Path::new(s));
        assert!(p("models/x.gguf").is_none());
        assert!(p("./hf:x").is_none());
        let s = p("hf:HuggingFaceTB/SmolLM2-135M").unwrap().unwrap();
        assert_eq!(s.repo, "HuggingFaceTB/SmolLM2-135M");
        assert_eq!((s.revision, s.file), (None, None));
        let s = p("hf:org/name@v1.0:sub/model-Q8_0.gguf").unwrap().unwrap();
        assert_eq!(s.revision.as_deref(), Some("v1.0"));
        assert_eq!(s.file.as_deref(), Some("sub/model-Q8_0.gguf"));
        assert_eq!(s.to_string(), "hf:org/name@v1.0:sub/model-Q8_0.gguf");
        for bad in [
            "hf:",
            "hf:a/b/c",
            "hf:a/../b",
            "hf:org/name@",
            "hf:org/name:../x.gguf",
            "hf:org/name:/etc/passwd",
            "hf:org name",
        ] {
            assert!(p(bad).unwrap().is_err(), "{bad}");
        }
    }
}
