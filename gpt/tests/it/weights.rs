//! Loading and saving HF-format model directories: the round trip is exact, and every kind of
//! bad checkpoint gives an error that names the file and the tensor, never a panic.

use std::path::Path;

use crate::common::*;
use gpt::{hf::{load_model_dir, save_model_dir}, io::named_params};
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorView};

/// The fixture's tensors as (name, dtype, shape, bytes).
type RawTensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

fn fixture_tensors() -> RawTensors {
    let bytes = std::fs::read(fixture_dir().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: RawTensors =
        st.tensors().into_iter().map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn write_tensors(path: &Path, tensors: &RawTensors) {
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::tensor::serialize_to_file(views, None, path).unwrap();
}

/// A model directory with the fixture's config and the given tensors.
fn model_dir(tensors: &RawTensors) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture_dir().join("config.json"), dir.path().join("config.json")).unwrap();
    write_tensors(&dir.path().join("model.safetensors"), tensors);
    dir
}

fn load_err(dir: &Path) -> String {
    match load_model_dir(dir, &device()) {
        Ok(_) => panic!("{} should not load", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn logits_of(dir: &Path) -> Vec<f32> {
    to_vec(load_model_dir(dir, &device()).unwrap().forward(input_ids()))
}

#[test]
fn save_then_load_is_exact() {
    let model = tiny_model();
    let dir = tempfile::tempdir().unwrap();
    save_model_dir(&model, dir.path()).unwrap();
    let reloaded = load_model_dir(dir.path(), &device()).unwrap();
    let (a, b) = (named_params(&model), named_params(&reloaded));
    assert_eq!(a.len(), 28, "wte, wpe, ln_f (2) and 12 tensors per block; the tied head is not a separate tensor");
    for ((name_a, data_a), (name_b, data_b)) in a.iter().zip(&b) {
        assert_eq!(name_a, name_b);
        assert_eq!(data_a.as_bytes(), data_b.as_bytes(), "{name_a} changed in the round trip");
    }
    // Same bytes as the original checkpoint, tensor by tensor, under transformers' names.
    let saved = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let saved = SafeTensors::deserialize(&saved).unwrap();
    for (name, dtype, shape, bytes) in fixture_tensors() {
        let view = saved.tensor(&name).unwrap_or_else(|_| panic!("{name} missing from the saved file"));
        assert_eq!((view.dtype(), view.shape(), view.data()), (dtype, shape.as_slice(), bytes.as_slice()), "{name}");
    }
    let (_, meta) = SafeTensors::read_metadata(&std::fs::read(dir.path().join("model.safetensors")).unwrap()).unwrap();
    assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config["n_embd"], 64);
    assert_eq!(config["model_type"], "gpt2");
    assert_eq!(to_vec(reloaded.forward(input_ids())), to_vec(model.forward(input_ids())));
}

#[test]
fn accepts_openai_names_without_prefix_and_skips_mask_buffers() {
    let mut tensors: RawTensors = fixture_tensors()
        .into_iter()
        .map(|(n, d, s, b)| (n.trim_start_matches("transformer.").to_string(), d, s, b))
        .collect();
    // OpenAI's checkpoint stores the causal masks as `h.{i}.attn.bias` (and `masked_bias`).
    for i in 0..2 {
        let mask: Vec<u8> = (0..128 * 128).flat_map(|j| if j % 129 == 0 { 1f32 } else { 0f32 }.to_le_bytes()).collect();
        tensors.push((format!("h.{i}.attn.bias"), Dtype::F32, vec![1, 1, 128, 128], mask));
        tensors.push((format!("h.{i}.attn.masked_bias"), Dtype::F32, vec![], (-1e4f32).to_le_bytes().to_vec()));
    }
    let dir = model_dir(&tensors);
    assert_eq!(logits_of(dir.path()), to_vec(tiny_model().forward(input_ids())));
}

#[test]
fn loads_sharded_checkpoints() {
    let tensors = fixture_tensors();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture_dir().join("config.json"), dir.path().join("config.json")).unwrap();
    let (first, second): (RawTensors, RawTensors) = tensors.into_iter().partition(|t| t.0.contains(".h.0.") || t.0.contains("wte"));
    write_tensors(&dir.path().join("model-00001-of-00002.safetensors"), &first);
    write_tensors(&dir.path().join("model-00002-of-00002.safetensors"), &second);
    let mut weight_map = serde_json::Map::new();
    for (name, ..) in &first {
        weight_map.insert(name.clone(), "model-00001-of-00002.safetensors".into());
    }
    for (name, ..) in &second {
        weight_map.insert(name.clone(), "model-00002-of-00002.safetensors".into());
    }
    let index = serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": weight_map });
    std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert_eq!(logits_of(dir.path()), to_vec(tiny_model().forward(input_ids())));

    // An index that points a tensor at the wrong shard is caught.
    weight_map.insert("transformer.ln_f.bias".into(), "model-00001-of-00002.safetensors".into());
    let index = serde_json::json!({ "weight_map": weight_map });
    std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("transformer.ln_f.bias") && err.contains("model-00001-of-00002"), "{err}");
}

#[test]
fn widens_half_precision_checkpoints() {
    let tensors: RawTensors = fixture_tensors()
        .into_iter()
        .map(|(n, _, s, b)| {
            let halves = b.chunks_exact(4).flat_map(|c| half::f16::from_f32(f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes()).collect();
            (n, Dtype::F16, s, halves)
        })
        .collect();
    let dir = model_dir(&tensors);
    let diff = max_abs_diff(&logits_of(dir.path()), &to_vec(tiny_model().forward(input_ids())));
    assert!(diff < 0.05, "f16 weights moved the logits by {diff}");
}

#[test]
fn a_wrong_shape_names_the_tensor_and_both_shapes() {
    let mut tensors = fixture_tensors();
    let entry = tensors.iter_mut().find(|t| t.0 == "transformer.h.1.mlp.c_fc.weight").unwrap();
    entry.2 = vec![64, 128];
    entry.3.truncate(64 * 128 * 4);
    let err = load_err(model_dir(&tensors).path());
    assert!(err.contains("h.1.mlp.c_fc.weight") && err.contains("[64, 128]") && err.contains("[64, 256]"), "{err}");
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn a_missing_tensor_is_named() {
    let tensors: RawTensors = fixture_tensors().into_iter().filter(|t| t.0 != "transformer.ln_f.bias").collect();
    let err = load_err(model_dir(&tensors).path());
    assert!(err.contains("missing tensor `ln_f.bias`") && err.contains("[64]"), "{err}");
}

#[test]
fn an_unexpected_tensor_is_named() {
    let mut tensors = fixture_tensors();
    tensors.push(("transformer.h.2.ln_1.weight".into(), Dtype::F32, vec![64], vec![0; 256]));
    let err = load_err(model_dir(&tensors).path());
    assert!(err.contains("unexpected tensor") && err.contains("h.2.ln_1.weight"), "{err}");
}

#[test]
fn a_config_that_does_not_match_the_weights_is_caught() {
    let tensors = fixture_tensors();
    let cases = [
        ("n_embd", serde_json::json!(128), "wte.weight"),
        ("n_layer", serde_json::json!(3), "missing tensor `h.2."),
        ("n_layer", serde_json::json!(1), "unexpected tensor(s) not used by the model config.json describes: h.1."),
        ("n_positions", serde_json::json!(1024), "wpe.weight"),
    ];
    for (key, value, needle) in cases {
        let dir = model_dir(&tensors);
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
        config[key] = value.clone();
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        let err = load_err(dir.path());
        assert!(err.contains(needle), "{key} = {value}: {err}");
    }
    // n_embd 128 also says which config.
    let dir = model_dir(&tensors);
    std::fs::write(
        dir.path().join("config.json"),
        std::fs::read_to_string(fixture_dir().join("config.json")).unwrap().replace("\"n_embd\": 64", "\"n_embd\": 128"),
    )
    .unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("config.json") && err.contains("[50257, 64]") && err.contains("[50257, 128]"), "{err}");
}

#[test]
fn truncated_and_foreign_files_are_rejected() {
    let dir = model_dir(&fixture_tensors());
    let weights = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("model.safetensors") && err.contains("not a valid safetensors file"), "{err}");

    std::fs::write(&weights, b"PK\x03\x04 this is a zip, not safetensors").unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("not a valid safetensors file"), "{err}");

    std::fs::write(&weights, b"").unwrap();
    assert!(load_err(dir.path()).contains("not a valid safetensors file"));

    std::fs::remove_file(&weights).unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("no model.safetensors"), "{err}");
}

#[test]
fn bad_configs_are_rejected_with_the_file_name() {
    let dir = model_dir(&fixture_tensors());
    let config = dir.path().join("config.json");
    std::fs::write(&config, "{ not json").unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("config.json") && err.contains("invalid JSON"), "{err}");
    std::fs::write(&config, r#"{"n_layer": 2}"#).unwrap();
    assert!(load_err(dir.path()).contains("missing field"));
    std::fs::remove_file(&config).unwrap();
    assert!(load_err(dir.path()).contains("config.json"));
}

#[test]
fn a_tied_lm_head_copy_is_accepted_and_an_untied_one_refused() {
    let mut tensors = fixture_tensors();
    let wte = tensors.iter().find(|t| t.0 == "transformer.wte.weight").unwrap().clone();
    tensors.push(("lm_head.weight".into(), wte.1, wte.2.clone(), wte.3.clone()));
    assert_eq!(logits_of(model_dir(&tensors).path()), to_vec(tiny_model().forward(input_ids())));
    let head = tensors.last_mut().unwrap();
    head.3[0] ^= 0x40;
    let err = load_err(model_dir(&tensors).path());
    assert!(err.contains("lm_head.weight") && err.contains("untied"), "{err}");
}

#[test]
fn seeded_init_is_reproducible_and_gpt2_shaped() {
    let config = gpt::GptConfig::preset("tiny").unwrap();
    let a = gpt::Gpt::init(&config, 7, &device()).unwrap();
    let b = gpt::Gpt::init(&config, 7, &device()).unwrap();
    let c = gpt::Gpt::init(&config, 8, &device()).unwrap();
    let (pa, pb, pc) = (named_params(&a), named_params(&b), named_params(&c));
    assert_eq!(pa.iter().map(|p| p.1.num_elements()).sum::<usize>(), config.num_params());
    assert_eq!(pa, pb);
    assert_ne!(pa, pc);
    let std_of = |name: &str| {
        let v: Vec<f32> = pa.iter().find(|p| p.0 == name).unwrap().1.try_to_vec().unwrap();
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32).sqrt()
    };
    assert!((std_of("wte.weight") - 0.02).abs() < 0.001);
    assert!((std_of("h.0.mlp.c_fc.weight") - 0.02).abs() < 0.002);
    // Residual projections: 0.02 / sqrt(2 * n_layer) = 0.01.
    assert!((std_of("h.1.mlp.c_proj.weight") - 0.01).abs() < 0.001);
    assert!((std_of("h.1.attn.c_proj.weight") - 0.01).abs() < 0.0015);
    let ln: Vec<f32> = pa.iter().find(|p| p.0 == "h.0.ln_1.weight").unwrap().1.try_to_vec().unwrap();
    assert!(ln.iter().all(|&x| x == 1.0));
}
