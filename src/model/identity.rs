//! What an archive records about its model: content hashes, and how they are shown.
//!
//! A GGUF file's identity is the SHA-256 of its bytes; a model folder's is the SHA-256 of
//! its manifest (see [`manifest_identity`]). Names are never recorded: the same bytes under
//! another name, or fetched from the hub, decode the same archives.

use crate::Result;
use sha2::{Digest, Sha256};
use std::path::Path;

/// File name of the default model (Gemma 3 270M: the smallest archives of the known
/// models on alice29.txt, the OOD report and enwik6 at the required speed; see README).
pub const DEFAULT_MODEL_FILE: &str = "gemma-3-270m-q4_k_m.gguf";
/// sha256 of the default model file.
pub const DEFAULT_MODEL_SHA256: &str =
    "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";

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

/// "NAME (sha256 PREFIX…)" or, for a known model's hash ([`super::known`]), its file and
/// short name: "gemma-3-270m-q4_k_m.gguf (sha256 PREFIX…, --model gemma3-270m)".
pub fn describe_identity(name: Option<&str>, sha: &[u8; 32]) -> String {
    let h = hex(sha);
    match super::known::by_sha256(sha) {
        Some(k) => format!("{} (sha256 {}…, --model {})", k.file, &h[..16], k.name),
        None => format!("{} (sha256 {}…)", name.unwrap_or("a model"), &h[..16]),
    }
}

/// The model an archive names by the leading bytes of its identity (all 32 in format
/// version 2, the first 6 in version 3): the default model by its name when its SHA-256
/// starts with them, else the bytes, saying how many bits the archive records.
pub fn describe_recorded(prefix: &[u8]) -> String {
    let h = hex(prefix);
    if prefix.len() == 32 {
        let mut full = [0u8; 32];
        full.copy_from_slice(prefix);
        return format!("{} [sha256 {h}]", describe_identity(None, &full));
    }
    let known = super::known::KNOWN_MODELS
        .iter()
        .find(|k| !h.is_empty() && k.sha256.starts_with(&h));
    if let Some(k) = known {
        format!(
            "{} (sha256 {h}…, --model {}; the archive records the first {} bits)",
            k.file,
            k.name,
            4 * h.len()
        )
    } else {
        format!(
            "a model whose SHA-256 begins {h} (the archive records only these {} bits; \
             `sha256sum` of the model file, or of a folder's manifest, must start so)",
            4 * h.len()
        )
    }
}

/// The model identity of a folder: SHA-256 of its manifest, the lines
/// `<sha256 hex of the file>  <name>\n` for every file in `names` (the files that define
/// the model, see `checkpoint::model_files`) in byte order of the names (what `sha256sum`
/// prints for those files, in that order). Returns the identity and the manifest text.
pub fn manifest_identity(dir: &Path, names: &[String]) -> Result<([u8; 32], String)> {
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort();
    let mut text = String::new();
    for n in sorted {
        let h = file_sha256(&dir.join(n))?;
        text.push_str(&format!("{}  {n}\n", hex(&h)));
    }
    Ok((Sha256::digest(text.as_bytes()).into(), text))
}
