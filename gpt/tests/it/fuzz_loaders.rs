//! Fuzzing what the model crate reads: config.json, safetensors files (as bytes and through their
//! JSON header) and the tokenizer. Every input gets a model or an error, never a panic or an abort
//! (a corrupt config must not ask for absurd memory); decode(encode(text)) == text for any UTF-8.
//! 10,000 cases per target.

use std::path::Path;
use std::sync::OnceLock;

use crate::common::fuzz::{gpt2_tokenizer, json_value, mutated, mutated_bytes, object_with};
use gpt::burn::prelude::*;
use gpt::{Gpt, GptConfig};
use proptest::prelude::*;
use serde_json::Value;

const CASES: u32 = 10_000;

/// A valid model small enough to load thousands of times: its config.json and model.safetensors.
fn valid_files() -> &'static (Value, Vec<u8>) {
    static FILES: OnceLock<(Value, Vec<u8>)> = OnceLock::new();
    FILES.get_or_init(|| {
        let mut config = GptConfig::new(1, 2, 4, 8);
        config.vocab_size = 16;
        let model = Gpt::init(&config, 0, &Device::flex()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        gpt::hf::save_model_dir(&model, dir.path()).unwrap();
        let config: Value = serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
        (config, std::fs::read(dir.path().join("model.safetensors")).unwrap())
    })
}

/// The safetensors header (the JSON after the 8-byte length) of `bytes`, and the data after it.
fn split_safetensors(bytes: &[u8]) -> (Value, &[u8]) {
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&bytes[8..8 + len]).unwrap(), &bytes[8 + len..])
}

fn join_safetensors(header: &Value, data: &[u8]) -> Vec<u8> {
    let header = header.to_string().into_bytes();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header);
    bytes.extend(data);
    bytes
}

/// Loads a model directory made of these two files: a model (whose shapes then match its config)
/// or an error that names a file, never a panic. Whether it loaded.
fn check_load(config: &[u8], weights: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), weights).unwrap();
    match gpt::hf::load_model_dir(dir.path(), &Device::flex()) {
        Ok(model) => {
            let c = model.config();
            let wte: Tensor<2> = model.wte.weight.val();
            assert_eq!(wte.dims(), [c.vocab_size, c.n_embd]);
            true
        }
        Err(error) => {
            assert_names_a_file(&error.to_string(), dir.path());
            false
        }
    }
}

fn assert_names_a_file(message: &str, dir: &Path) {
    let dir = dir.display().to_string();
    assert!(message.contains(&dir), "the error does not say which file: {message}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn any_config_json_loads_or_is_an_error(config in prop_oneof![
        json_value(),
        object_with(&["vocab_size", "n_positions", "n_ctx", "n_embd", "n_layer", "n_head", "n_inner",
                      "layer_norm_epsilon", "activation_function", "embd_pdrop", "attn_pdrop", "resid_pdrop"]),
        mutated(valid_files().0.clone()),
    ]) {
        check_load(config.to_string().as_bytes(), &valid_files().1);
    }

    #[test]
    fn config_json_bytes_load_or_are_an_error(config in mutated_bytes(valid_files().0.to_string().into_bytes(), usize::MAX)) {
        check_load(&config, &valid_files().1);
    }

    #[test]
    fn corrupt_safetensors_bytes_load_or_are_an_error(weights in mutated_bytes(valid_files().1.clone(), 512)) {
        check_load(valid_files().0.to_string().as_bytes(), &weights);
    }

    #[test]
    fn any_safetensors_header_loads_or_is_an_error(header in mutated(split_safetensors(&valid_files().1).0)) {
        let (_, data) = split_safetensors(&valid_files().1);
        check_load(valid_files().0.to_string().as_bytes(), &join_safetensors(&header, data));
    }

    #[test]
    fn any_text_survives_the_tokenizer_round_trip(text in "\\PC{0,48}|[ \\t\\n\\r<|>a-z0-9'.]{0,48}|(<\\|endoftext\\|>| |\\n|é|😀|'s){0,12}") {
        let tokenizer = gpt2_tokenizer();
        let ids = tokenizer.encode(&text);
        prop_assert!(ids.iter().all(|&id| (id as usize) < tokenizer.vocab_size()));
        prop_assert_eq!(tokenizer.decode(&ids).unwrap(), text.clone());
        prop_assert_eq!(tokenizer.decode(&tokenizer.encode_ordinary(&text)).unwrap(), text);
    }

    #[test]
    fn any_token_ids_decode_or_are_an_error(ids in proptest::collection::vec(0u32..60_000, 0..16)) {
        match gpt2_tokenizer().decode_bytes(&ids) {
            Ok(_) => prop_assert!(ids.iter().all(|&id| (id as usize) < gpt2_tokenizer().vocab_size())),
            Err(error) => prop_assert!(error.to_string().contains("token"), "{error}"),
        }
    }
}

#[test]
fn the_valid_files_load() {
    let (config, weights) = valid_files();
    assert!(check_load(config.to_string().as_bytes(), weights));
    // The header taken apart and put back together (unpadded, keys reordered) still loads.
    let (header, data) = split_safetensors(weights);
    assert!(check_load(config.to_string().as_bytes(), &join_safetensors(&header, data)));
}

#[test]
fn a_config_asking_for_absurd_sizes_is_refused_before_any_allocation() {
    let mut config = valid_files().0.clone();
    for (field, value) in [("n_layer", 1u64 << 40), ("n_embd", 1 << 33), ("vocab_size", 1 << 62), ("n_inner", u64::MAX)] {
        let mut bad = config.clone();
        bad[field] = value.into();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), bad.to_string()).unwrap();
        std::fs::write(dir.path().join("model.safetensors"), &valid_files().1).unwrap();
        let error = gpt::hf::load_model_dir(dir.path(), &Device::flex()).unwrap_err().to_string();
        assert!(error.contains("corrupt"), "{field}: {error}");
    }
    config["n_layer"] = 48.into();
    assert!(GptConfig::from_hf_json(&config.to_string()).unwrap().validate().is_ok(), "GPT-2 XL's depth stays valid");
}
