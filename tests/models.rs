//! Models beyond the default: GGUF weight types, shapes and RoPE settings; Hugging Face
//! model folders proved equivalent to the GGUF they mirror; typed refusals of the rest.
//! Every model here is a tiny synthetic one written by the test, so each case takes
//! milliseconds.

use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::DType;
use lmzip::engine::{Net, BACKEND_F32_FIXED, BACKEND_INT8_EXACT};
use lmzip::model::identity::hex;
use lmzip::model::Model;
use lmzip::pipeline::{self, CompressOptions};
use lmzip::testing::{synthetic_gguf, write_synthetic_checkpoint, SyntheticRope, SyntheticSpec};
use lmzip::ErrorKind;
use std::path::Path;

const TEXT: &[u8] = b"The quick brown fox jumps over the lazy dog. 12345\n\
And then it slept in the sun, \xff\x04 while the others went on and on.\n";

fn opts() -> CompressOptions {
    CompressOptions {
        block_tokens: 24,
        streams: 3,
        window: 32,
        keep: 12,
        ..CompressOptions::default()
    }
}

fn compress(m: &Model, data: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    pipeline::compress(m, data, &opts(), &mut a, &mut |_| {}).expect("compresses");
    a
}

fn round_trip(m: &Model, data: &[u8]) -> Vec<u8> {
    let a = compress(m, data);
    let mut back = Vec::new();
    pipeline::decompress(m, &mut &a[..], &mut back, &mut |_| {}).expect("decompresses");
    assert_eq!(back, data, "round trip");
    a
}

fn write_gguf(dir: &Path, name: &str, spec: &SyntheticSpec) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, synthetic_gguf(spec).unwrap()).unwrap();
    p
}

/// Every logit of one stream fed `tokens` at positions 0.., as bits.
fn logits(l: &Net, tokens: &[u32]) -> Vec<u32> {
    let out = lmzip::testing::stream_logits(l, tokens).unwrap();
    out.iter().map(|x| x.to_bits()).collect()
}

fn sample_tokens(m: &Model) -> Vec<u32> {
    let mut t = vec![m.start_token];
    t.extend(
        m.tokenizer
            .encode(b"the cat and the dog sat in the sun, 12 times over")
            .iter()
            .filter(|&&s| (s as usize) < m.tokenizer.vocab_size()),
    );
    t
}

#[test]
fn weight_types_shapes_and_rope_settings_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let types = [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q8_0,
        GgmlDType::Q5_0,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
        GgmlDType::F16,
        GgmlDType::BF16,
        GgmlDType::F32,
    ];
    for wtype in types {
        let spec = SyntheticSpec::with_type(wtype);
        let path = write_gguf(dir.path(), &format!("{wtype:?}.gguf"), &spec);
        let t0 = std::time::Instant::now();
        let m = Model::load_with(&path, BACKEND_F32_FIXED).unwrap();
        let a = round_trip(&m, TEXT);
        eprintln!(
            "{wtype:?}: backend 1 round trip, {} → {} bytes, {:?}",
            TEXT.len(),
            a.len(),
            t0.elapsed()
        );
        match Model::load_with(&path, BACKEND_INT8_EXACT) {
            Ok(m2) => {
                assert!(
                    matches!(
                        wtype,
                        GgmlDType::Q4_0
                            | GgmlDType::Q4_1
                            | GgmlDType::Q8_0
                            | GgmlDType::Q5_0
                            | GgmlDType::Q4K
                            | GgmlDType::Q6K
                            | GgmlDType::F16
                            | GgmlDType::BF16
                            | GgmlDType::F32
                    ),
                    "{wtype:?} accepted by backend 2"
                );
                let a2 = round_trip(&m2, TEXT);
                eprintln!("{wtype:?}: backend 2 round trip, {} bytes", a2.len());
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    matches!(e.kind(), ErrorKind::UnsupportedModel { .. }),
                    "{wtype:?}: {e:?}"
                );
                assert!(
                    msg.contains(&format!("{wtype:?}")) && msg.contains("Q4_0, Q4_1"),
                    "names the type and what is supported: {msg}"
                );
                eprintln!("{wtype:?}: backend 2 refused: {msg}");
            }
        }
    }
    // Shapes and RoPE settings: multi-head (kv = heads), 8:1 grouping, more layers,
    // another base, untied output, linear and llama3 scaling.
    let variants = [
        SyntheticSpec {
            heads: 4,
            kv_heads: 4,
            ..Default::default()
        },
        SyntheticSpec {
            dim: 128,
            heads: 8,
            kv_heads: 1,
            layers: 3,
            ffn: 96,
            ..Default::default()
        },
        SyntheticSpec {
            rope_theta: 500_000.0,
            tied: false,
            ..Default::default()
        },
        SyntheticSpec {
            rope: SyntheticRope::Linear(4.0),
            ..Default::default()
        },
        SyntheticSpec {
            rope: SyntheticRope::Llama3,
            rope_theta: 500_000.0,
            ..Default::default()
        },
    ];
    let base = Model::load(&write_gguf(dir.path(), "base.gguf", &Default::default())).unwrap();
    let base_logits = logits(&base.net, &sample_tokens(&base));
    for (i, spec) in variants.iter().enumerate() {
        let path = write_gguf(dir.path(), &format!("v{i}.gguf"), spec);
        for backend in [BACKEND_F32_FIXED, BACKEND_INT8_EXACT] {
            let m = Model::load_with(&path, backend).unwrap();
            round_trip(&m, TEXT);
        }
        // The setting changes the function (a loader that ignored it would not).
        if spec.dim == 64 {
            let m = Model::load(&path).unwrap();
            assert_ne!(logits(&m.net, &sample_tokens(&m)), base_logits, "{spec:?}");
        }
    }
}

/// A GGUF file like the synthetic one with some metadata replaced.
fn gguf_with(spec: &SyntheticSpec, set: &[(&str, gguf_file::Value)]) -> Vec<u8> {
    let bytes = synthetic_gguf(spec).unwrap();
    let mut r = std::io::Cursor::new(&bytes);
    let c = gguf_file::Content::read(&mut r).unwrap();
    let mut md: Vec<(String, gguf_file::Value)> = c
        .metadata
        .iter()
        .filter(|(k, _)| !set.iter().any(|(s, _)| s == k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    md.extend(set.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let mut names: Vec<&String> = c.tensor_infos.keys().collect();
    names.sort();
    let tensors: Vec<(String, candle_core::quantized::QTensor)> = names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                c.tensor(&mut r, n, &candle_core::Device::Cpu).unwrap(),
            )
        })
        .collect();
    let mdr: Vec<(&str, &gguf_file::Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tr: Vec<(&str, &candle_core::quantized::QTensor)> =
        tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &mdr, &tr).unwrap();
    out.into_inner()
}

#[test]
fn unsupported_gguf_models_are_typed_errors() {
    use gguf_file::Value;
    let dir = tempfile::tempdir().unwrap();
    let spec = SyntheticSpec::default();
    // (what the error names, metadata to set, part of what it says it found)
    type Case = (&'static str, Vec<(&'static str, Value)>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "architecture",
            vec![("general.architecture", Value::String("qwen2".into()))],
            "'qwen2'",
        ),
        (
            "RoPE scaling",
            vec![("llama.rope.scaling.type", Value::String("yarn".into()))],
            "'yarn'",
        ),
        (
            "head or rotary dimension",
            vec![("llama.rope.dimension_count", Value::U32(8))],
            "dimension_count = 8",
        ),
        (
            "tokenizer model",
            vec![("tokenizer.ggml.model", Value::String("t5".into()))],
            "'t5'",
        ),
        (
            "pre-tokenizer",
            vec![("tokenizer.ggml.pre", Value::String("qwen2".into()))],
            "'qwen2'",
        ),
    ];
    for (what_want, set, found_part) in cases {
        let p = dir.path().join("m.gguf");
        std::fs::write(&p, gguf_with(&spec, &set)).unwrap();
        let e = Model::load(&p).err().expect("refused");
        match e.kind() {
            ErrorKind::UnsupportedModel {
                what,
                found,
                supported,
            } => {
                assert_eq!(*what, what_want, "{e}");
                assert!(found.contains(found_part), "{e}");
                assert!(!supported.is_empty());
            }
            _ => panic!("{what_want}: not typed: {e:?}"),
        }
        assert!(e.to_string().contains("supported:"), "{e}");
    }
}

/// Headers equal but for the model identity (and so the header CRC), payloads equal.
fn same_but_identity(a: &[u8], b: &[u8]) {
    let (mut ra, mut rb) = (a, b);
    let mut ha = lmzip::format::Header::read_from(&mut ra).unwrap().unwrap();
    let hb = lmzip::format::Header::read_from(&mut rb).unwrap().unwrap();
    assert_ne!(ha.model, hb.model);
    ha.model = hb.model;
    let (mut wa, mut wb) = (Vec::new(), Vec::new());
    ha.write_to(&mut wa).unwrap();
    hb.write_to(&mut wb).unwrap();
    assert_eq!(wa, wb, "headers differ beyond the model identity");
    assert_eq!(ra, rb, "coded frames differ");
}

#[test]
fn checkpoint_folders_compute_what_their_gguf_computes() {
    let dir = tempfile::tempdir().unwrap();
    // (spec, checkpoint dtype, shards, backends where GGUF and folder must agree)
    let f16 = SyntheticSpec::with_type(GgmlDType::F16);
    let cases: Vec<(SyntheticSpec, DType, usize, Vec<u16>)> = vec![
        // Q4_1 values are exact in f32: backend 1 sees the same weights. (Backend 2 keeps
        // a GGUF's Q4_1 blocks but re-quantizes dense weights, so it agrees only for
        // dense GGUF types.)
        (SyntheticSpec::default(), DType::F32, 1, vec![1]),
        (
            SyntheticSpec {
                tied: false,
                rope: SyntheticRope::Llama3,
                ..f16.clone()
            },
            DType::F16,
            3,
            vec![1, 2],
        ),
        (
            SyntheticSpec {
                rope: SyntheticRope::Linear(2.0),
                kv_heads: 1,
                ..SyntheticSpec::with_type(GgmlDType::F32)
            },
            DType::F32,
            2,
            vec![1, 2],
        ),
        (
            SyntheticSpec::with_type(GgmlDType::BF16),
            DType::BF16,
            1,
            vec![1, 2],
        ),
    ];
    for (i, (spec, dtype, shards, backends)) in cases.into_iter().enumerate() {
        let gguf = write_gguf(dir.path(), &format!("c{i}.gguf"), &spec);
        let folder = dir.path().join(format!("c{i}"));
        write_synthetic_checkpoint(&spec, &folder, dtype, shards).unwrap();
        for backend in backends {
            let g = Model::load_with(&gguf, backend).unwrap();
            let f = Model::load_with(&folder, backend).unwrap();
            match (&g.net, &f.net) {
                (Net::Llama(a), Net::Llama(b)) => assert_eq!(a.cfg, b.cfg),
                _ => panic!("both should load as llama"),
            }
            assert_eq!(g.tokenizer.identity(), f.tokenizer.identity(), "tokenizer");
            assert_eq!(g.control_tokens, f.control_tokens);
            assert_eq!(g.start_token, f.start_token);
            let toks = sample_tokens(&g);
            let (lg, lf) = (logits(&g.net, &toks), logits(&f.net, &toks));
            assert!(lg == lf, "case {i} backend {backend}: logits differ");
            let (ag, af) = (round_trip(&g, TEXT), round_trip(&f, TEXT));
            same_but_identity(&ag, &af);
            // Each needs its own model: the identities differ, and say so.
            let mut out = Vec::new();
            let e = pipeline::decompress(&f, &mut &ag[..], &mut out, &mut |_| {}).unwrap_err();
            assert!(matches!(e.kind(), ErrorKind::ModelMismatch { .. }), "{e}");
            eprintln!(
                "case {i} ({:?}, {dtype:?}, {shards} shard(s), backend {backend}): {} logits \
                 bit-identical, archives ({} bytes) identical but for the model identity",
                spec.wtype,
                lg.len(),
                ag.len()
            );
        }
    }
}

#[test]
fn folder_identity_is_the_sha256sum_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("m");
    write_synthetic_checkpoint(&SyntheticSpec::default(), &folder, DType::F32, 2).unwrap();
    // Files that are not read do not count.
    std::fs::write(folder.join("README.md"), b"not part of the model").unwrap();
    std::fs::write(folder.join("generation_config.json"), b"{}").unwrap();
    let m = Model::load(&folder).unwrap();
    let names = lmzip::model::checkpoint::model_files(&folder).unwrap();
    assert_eq!(
        names,
        [
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json"
        ]
    );
    let (id, manifest) = lmzip::model::identity::manifest_identity(&folder, &names).unwrap();
    assert_eq!(id, m.sha256);
    // The same as `sha256sum FILES | sha256sum`, where the tool exists.
    if let Ok(o) = std::process::Command::new("sha256sum")
        .args(&names)
        .current_dir(&folder)
        .output()
    {
        if o.status.success() {
            assert_eq!(String::from_utf8(o.stdout).unwrap(), manifest);
        }
    }
    assert_eq!(hex(&id), hex(&sha2_of(manifest.as_bytes())));
    // Any byte of any model file changes the identity.
    let before = m.sha256;
    let cfg = folder.join("config.json");
    let mut c = std::fs::read(&cfg).unwrap();
    c.push(b'\n');
    std::fs::write(&cfg, c).unwrap();
    assert_ne!(Model::load(&folder).unwrap().sha256, before);
}

fn sha2_of(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

#[test]
fn unsupported_folders_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    write_synthetic_checkpoint(&SyntheticSpec::default(), &base, DType::F32, 1).unwrap();
    let edit_json = |file: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let d = dir.path().join("edit");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        for e in std::fs::read_dir(&base).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
        }
        let p = d.join(file);
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
        d
    };
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "config.json",
            Box::new(|v| v["model_type"] = "mistral".into()),
            "architecture",
        ),
        (
            "config.json",
            Box::new(|v| {
                v["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0})
            }),
            "RoPE scaling",
        ),
        (
            "config.json",
            Box::new(|v| v["attention_bias"] = true.into()),
            "projection biases",
        ),
        (
            "config.json",
            Box::new(|v| v["head_dim"] = 32.into()),
            "head or rotary dimension",
        ),
        (
            "tokenizer.json",
            Box::new(|v| v["normalizer"] = serde_json::json!({"type": "NFC"})),
            "normalizer",
        ),
        (
            "tokenizer.json",
            Box::new(|v| v["model"]["type"] = "Unigram".into()),
            "tokenizer model",
        ),
        (
            "tokenizer.json",
            Box::new(|v| v["pre_tokenizer"] = serde_json::json!({"type": "Whitespace"})),
            "pre-tokenizer",
        ),
        (
            "tokenizer.json",
            Box::new(|v| v["model"]["byte_fallback"] = true.into()),
            "BPE option",
        ),
    ];
    for (file, edit, what_want) in cases {
        let d = edit_json(file, &*edit);
        let e = Model::load(&d).err().expect("refused");
        match e.kind() {
            ErrorKind::UnsupportedModel { what, .. } => assert_eq!(*what, what_want, "{e}"),
            _ => panic!("{what_want}: not typed: {e:?}"),
        }
    }
    // A missing file is named.
    std::fs::remove_file(base.join("tokenizer.json")).unwrap();
    let e = Model::load(&base).err().unwrap();
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
}

#[test]
fn rope_permutation_is_a_permutation_and_its_inverse() {
    use lmzip::model::checkpoint::{permute_for_interleaved_rope, unpermute_from_interleaved_rope};
    let (heads, hd, cols) = (2usize, 8usize, 3usize);
    let v: Vec<f32> = (0..heads * hd * cols).map(|x| x as f32).collect();
    let t = candle_core::Tensor::from_vec(v.clone(), (heads * hd, cols), &candle_core::Device::Cpu)
        .unwrap();
    let p = permute_for_interleaved_rope(&t, heads).unwrap();
    let rows: Vec<u32> = p
        .to_vec2::<f32>()
        .unwrap()
        .iter()
        .map(|r| r[0] as u32 / cols as u32)
        .collect();
    // Row 2i + j of a head comes from checkpoint row j·hd/2 + i (llama.cpp's permute).
    assert_eq!(rows, [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]);
    let back = unpermute_from_interleaved_rope(&p, heads).unwrap();
    assert_eq!(back.flatten_all().unwrap().to_vec1::<f32>().unwrap(), v);
    assert!(permute_for_interleaved_rope(&t, 3).is_err());
}
