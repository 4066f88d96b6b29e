//! One small reader of GGUF metadata: typed getters whose errors name the key and the type.
//!
//! candle parses the file (`gguf_file::Content`); this gives its metadata map the few
//! getters model loading needs, so that a missing key and a key of the wrong type are told
//! apart, and every message says which key it was.

use crate::{Error, ErrorKind, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use std::collections::HashMap;

/// The metadata of a GGUF file.
pub struct Metadata<'a> {
    map: &'a HashMap<String, Value>,
}

fn model_err(m: String) -> Error {
    Error::new(ErrorKind::Model(m))
}

impl<'a> Metadata<'a> {
    /// The metadata of a parsed file.
    pub fn new(content: &'a Content) -> Self {
        Metadata {
            map: &content.metadata,
        }
    }

    /// The value under `key`, if there is one.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    /// The value under `key`, or an error naming the missing key.
    fn need(&self, key: &str) -> Result<&'a Value> {
        self.get(key)
            .ok_or_else(|| model_err(format!("GGUF metadata lacks {key}")))
    }

    /// Applies a typed reading of candle's to a value, with the key in its error.
    fn typed<T>(key: &str, r: candle_core::Result<T>) -> Result<T> {
        r.map_err(|e| model_err(format!("GGUF metadata {key}: {e}")))
    }

    /// A required u32.
    pub fn u32(&self, key: &str) -> Result<u32> {
        Self::typed(key, self.need(key)?.to_u32())
    }

    /// An optional u32: `None` when absent, an error when of another type.
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        self.get(key)
            .map(|v| Self::typed(key, v.to_u32()))
            .transpose()
    }

    /// An optional f32: `None` when absent, an error when of another type.
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        self.get(key)
            .map(|v| Self::typed(key, v.to_f32()))
            .transpose()
    }

    /// An optional string: `None` when absent, an error when of another type.
    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        self.get(key)
            .map(|v| Self::typed(key, v.to_string()).map(String::as_str))
            .transpose()
    }

    /// A required list of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<String>> {
        Self::typed(key, self.need(key)?.to_vec())?
            .iter()
            .map(|v| Self::typed(key, v.to_string()).cloned())
            .collect()
    }

    /// An optional list of i32: `None` when absent, an error when it is not a list of i32.
    pub fn opt_i32s(&self, key: &str) -> Result<Option<Vec<i32>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        Self::typed(key, v.to_vec())?
            .iter()
            .map(|x| Self::typed(key, x.to_i32()))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file;

    fn content(pairs: Vec<(&str, Value)>) -> Content {
        Content {
            magic: gguf_file::VersionedMagic::GgufV3,
            metadata: pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            tensor_infos: HashMap::new(),
            tensor_data_offset: 0,
        }
    }

    #[test]
    fn getters_tell_missing_from_mistyped() {
        let c = content(vec![
            ("n", Value::U32(7)),
            ("f", Value::F32(0.5)),
            ("s", Value::String("gpt2".into())),
            (
                "l",
                Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
            ),
            ("t", Value::Array(vec![Value::I32(1), Value::I32(3)])),
        ]);
        let md = Metadata::new(&c);
        assert_eq!(md.u32("n").unwrap(), 7);
        assert_eq!(md.opt_u32("absent").unwrap(), None);
        assert_eq!(md.opt_f32("f").unwrap(), Some(0.5));
        assert_eq!(md.opt_str("s").unwrap(), Some("gpt2"));
        assert_eq!(md.strings("l").unwrap(), ["a", "b"]);
        assert_eq!(md.opt_i32s("t").unwrap(), Some(vec![1, 3]));
        let missing = md.u32("absent").unwrap_err().to_string();
        assert!(missing.contains("lacks absent"), "{missing}");
        let mistyped = md.opt_u32("s").unwrap_err().to_string();
        assert!(mistyped.contains("GGUF metadata s"), "{mistyped}");
        assert!(md.strings("t").is_err());
        assert!(md.opt_i32s("l").is_err());
    }
}
