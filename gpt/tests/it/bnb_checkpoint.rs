//! Loading checkpoints that transformers saved with bitsandbytes 4-bit weights (the `…-bnb-4bit`
//! repos): `llama-tiny` quantized by bitsandbytes 0.50.2 with and without double quantization
//! (`scripts/reference/bnb_checkpoint_reference.py`). The packed weights are kept as stored: the
//! dequantized weight equals bitsandbytes' `dequantize_4bit` bit for bit and the logits equal those
//! of transformers' model holding those dequantized weights.

use std::path::{Path, PathBuf};

use gpt::burn::module::Module;
use gpt::burn::prelude::*;
use gpt::hf::{load_language_model_dir, load_language_model_dir_quantized, save_language_model_dir};
use gpt::io::{WeightDtype, named_params, parameter_counts};
use gpt::models::{CausalLm, LanguageModel};
use gpt::quant::{Nf4Options, QloraAdapter, is_quantized, nf4_matrix};
use safetensors::SafeTensors;

use crate::common::{expected_f32_in, expected_i64_in, family_fixture_dir, max_abs_diff, tolerance_scale};

/// The whole checkpoint in `dir`: `variant`'s config and quantized tensors, and the fixture's
/// other tensors (the same bytes bitsandbytes' save wrote; the script asserts it).
fn checkpoint(variant: &str, dir: &Path) -> PathBuf {
    let reference = family_fixture_dir("bnb4").join(variant);
    let base_bytes = std::fs::read(family_fixture_dir("llama-tiny").join("model.safetensors")).unwrap();
    let quantized_bytes = std::fs::read(reference.join("quantized.safetensors")).unwrap();
    let (base, quantized) = (SafeTensors::deserialize(&base_bytes).unwrap(), SafeTensors::deserialize(&quantized_bytes).unwrap());
    let quantized_names: Vec<String> = quantized.names().into_iter().map(str::to_string).collect();
    let mut views: Vec<(String, safetensors::tensor::TensorView)> =
        base.tensors().into_iter().filter(|(name, _)| !quantized_names.contains(name)).collect();
    views.extend(quantized.tensors());
    let out = dir.join(variant);
    std::fs::create_dir_all(&out).unwrap();
    safetensors::serialize_to_file(views, None, &out.join("model.safetensors")).unwrap();
    std::fs::copy(reference.join("config.json"), out.join("config.json")).unwrap();
    out
}

fn logits(model: &dyn CausalLm, ids: &[i64], shape: &[usize]) -> Vec<f32> {
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids.to_vec(), shape.to_vec()), &crate::common::device());
    model.logits(ids).into_data().try_into_vec_as::<f32>().unwrap()
}

/// The first `keep` of every row of `vocab` logits, and each row's argmax.
fn head_and_argmax(values: &[f32], vocab: usize, keep: usize) -> (Vec<f32>, Vec<i64>) {
    let head = values.chunks(vocab).flat_map(|row| row[..keep].to_vec()).collect();
    let argmax = values.chunks(vocab).map(|row| row.iter().enumerate().fold((0, f32::MIN), |m, (i, &v)| if v > m.1 { (i, v) } else { m }).0 as i64).collect();
    (head, argmax)
}

#[test]
fn a_bitsandbytes_4bit_checkpoint_loads_as_stored() {
    let tmp = tempfile::tempdir().unwrap();
    for variant in ["single", "double"] {
        let reference = family_fixture_dir("bnb4").join(variant);
        let dir = checkpoint(variant, tmp.path());
        let model = load_language_model_dir(&dir, &crate::common::device()).unwrap();
        assert!(is_quantized(&model), "{variant}: the NF4 weights stay NF4");
        // Plain LoRA cannot go on the stored NF4 weights (refused, not trained wrongly); QLoRA's
        // adapters do, on the model as loaded (before its NF4 weights are attached).
        let lora = gpt::LoraConfig::new(2, 2.0, "all".parse().unwrap()).unwrap();
        let error = lora.apply_to(model.clone(), 0).map(|_| ()).unwrap_err().to_string();
        assert!(error.contains("QLoRA"), "{error}");
        qlora_on_the_stored_weights(&dir, &model, &lora);

        // Layer 0's q_proj as the model holds it, against bitsandbytes' dequantize_4bit.
        let (_, want) = expected_f32_in(&reference, "q_proj_dequantized");
        let dense = named_params(&model.clone().materialize());
        let (_, q) = dense.iter().find(|(name, _)| name == "model.layers.0.self_attn.q_proj.weight").unwrap();
        let q = q.clone().try_into_vec::<f32>().unwrap(); // Burn's [in, out]
        let transposed: Vec<f32> = (0..32).flat_map(|o| (0..32).map(move |i| (o, i))).map(|(o, i)| q[i * 32 + o]).collect();
        assert_eq!(transposed.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{variant}");

        let (shape, ids) = expected_i64_in(&reference, "ids");
        let (head_shape, want) = expected_f32_in(&reference, "logits");
        let (_, want_argmax) = expected_i64_in(&reference, "argmax");
        let got = logits(&model, &ids, &shape);
        let (head, argmax) = head_and_argmax(&got, model.vocab_size(), head_shape[2]);
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs() as f64));
        let diff = max_abs_diff(&head, &want);
        eprintln!("{variant}: logits vs transformers on the dequantized weights: {diff:e} (|logits| ≤ {scale:.2})");
        assert!(diff <= 1e-4 * scale * tolerance_scale(), "{variant}: logits differ by {diff}");
        assert_eq!(argmax, want_argmax, "{variant}");

        // Saved materialized: a plain f32 checkpoint (no quantization_config) with the same logits.
        let saved = tmp.path().join(format!("{variant}-saved"));
        save_language_model_dir(&model.clone().materialize(), &saved).unwrap();
        let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(saved.join("config.json")).unwrap()).unwrap();
        assert!(config.get("quantization_config").is_none(), "{config}");
        let reloaded = load_language_model_dir(&saved, &crate::common::device()).unwrap();
        assert!(!is_quantized(&reloaded));
        assert!(max_abs_diff(&logits(&reloaded, &ids, &shape), &got) <= 1e-5 * scale * tolerance_scale(), "{variant}: reloaded");
    }
}

/// QLoRA on a bitsandbytes checkpoint: the adapters sit on the checkpoint's own NF4 bytes (not
/// a re-quantization of them), at B = 0 the logits are the checkpoint's exactly, and only the
/// factors train.
fn qlora_on_the_stored_weights(dir: &Path, model: &LanguageModel, lora: &gpt::LoraConfig) {
    let ad = crate::common::device().autodiff();
    let loaded = load_language_model_dir_quantized(dir, &ad, WeightDtype::F32, None).unwrap();
    assert!(loaded.is_quantized());
    let qlora = lora.apply_quantized_to(loaded, 0, Nf4Options::default()).unwrap();
    let q_proj = |m: &LanguageModel| match m {
        LanguageModel::Llama(llama) => llama.model.layers[0].self_attn.q_proj.weight.clone(),
        LanguageModel::Gpt2(_) => unreachable!("a Llama checkpoint"),
    };
    let (stored, adapted) = (q_proj(model), q_proj(&qlora));
    assert!(adapted.reparameterization::<QloraAdapter>().is_some());
    let (stored, adapted) = (nf4_matrix(&stored).unwrap(), nf4_matrix(&adapted).unwrap());
    assert_eq!((stored.packed(), stored.absmax()), (adapted.packed(), adapted.absmax()), "the checkpoint's bytes");
    let (trainable, _) = parameter_counts(&qlora);
    let factors: usize = named_params(&qlora).iter().filter(|(n, _)| n.contains(".lora.")).map(|(_, d)| d.num_elements()).sum();
    assert_eq!(trainable, factors, "only the factors train");
    let ids = [3i64, 17, 42, 5, 9, 11];
    assert_eq!(logits(&qlora.valid(), &ids, &[1, 6]), logits(model, &ids, &[1, 6]), "B = 0: the checkpoint's logits");
    let int8 = gpt::lora::every_projection(gpt::quant::Quantization::Int8);
    let error = load_language_model_dir_quantized(dir, &ad, WeightDtype::F32, Some(&int8)).map(|_| ()).unwrap_err().to_string();
    assert!(error.contains("stored 4-bit") && error.contains("int8"), "{error}");
}

/// A checkpoint that says another scheme, or whose state disagrees with the model, is refused
/// with the tensor or the setting named.
#[test]
fn bad_bitsandbytes_checkpoints_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = checkpoint("double", tmp.path());
    let config_path = dir.join("config.json");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    let load_with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut changed = config.clone();
        edit(&mut changed);
        std::fs::write(&config_path, changed.to_string()).unwrap();
        load_language_model_dir(&dir, &crate::common::device()).map(|_| ()).unwrap_err().to_string()
    };
    let error = load_with(&|c| c["quantization_config"]["bnb_4bit_quant_type"] = "fp4".into());
    assert!(error.contains("fp4") && error.contains("config.json"), "{error}");
    let error = load_with(&|c| {
        c["quantization_config"]["load_in_8bit"] = true.into();
        c["quantization_config"]["load_in_4bit"] = false.into();
    });
    assert!(error.contains("8-bit"), "{error}");
    let error = load_with(&|c| c["quantization_config"]["quant_method"] = "gptq".into());
    assert!(error.contains("gptq"), "{error}");
    // Without its quantization_config the packed uint8 weights cannot be read as a model's.
    let error = load_with(&|c| {
        c.as_object_mut().unwrap().remove("quantization_config");
    });
    assert!(error.contains("model.layers.0"), "{error}");
}
