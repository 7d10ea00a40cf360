//! The classifier head against the fixture's `cls_logits`, its HF-layout save/load, and the
//! freezing policies.

use crate::common::*;
use gpt::burn::prelude::*;
use gpt::models::LanguageModel;
use gpt::{Classifier, EOT_TOKEN, Gpt, Trainable};

fn labels() -> Vec<String> {
    vec!["ham".into(), "spam".into()]
}

/// The GPT-2 trunk of a classifier.
fn gpt(classifier: &Classifier) -> &Gpt {
    classifier.model.as_gpt2().expect("a GPT-2 classifier")
}

fn fixture_classifier(device: &Device) -> Classifier {
    let gpt = gpt::hf::load_model_dir(&fixture_dir(), device).unwrap();
    let (shape, weight) = expected_f32("cls_head_weight");
    let (_, bias) = expected_f32("cls_head_bias");
    let weight = Tensor::<2>::from_data(TensorData::new(weight, shape), device);
    let bias = Tensor::<1>::from_data(TensorData::new(bias, [2]), device);
    Classifier::with_head(gpt.into(), labels(), EOT_TOKEN, weight, Some(bias)).unwrap()
}

fn logits(classifier: &Classifier) -> Vec<f32> {
    classifier.forward(input_ids()).into_data().try_into_vec_as::<f32>().unwrap()
}

#[test]
fn last_token_logits_match_transformers() {
    let classifier = fixture_classifier(&device());
    let (shape, expected) = expected_f32("cls_logits");
    assert_eq!(shape, [2, 2]);
    let diff = max_abs_diff(&logits(&classifier), &expected);
    let tol = tolerance("cls_logits", "abs");
    println!("cls_logits max abs diff {diff:.2e} (tolerance {tol:.0e})");
    assert!(diff <= tol, "cls_logits differ by {diff}");
}

#[test]
fn saves_and_loads_in_the_hf_classification_layout() {
    let classifier = fixture_classifier(&device());
    let dir = tempfile::tempdir().unwrap();
    gpt::hf::save_classifier_dir(&classifier, dir.path()).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "GPT2ForSequenceClassification");
    assert_eq!(config["labels"], serde_json::json!(["ham", "spam"]));
    assert_eq!(config["id2label"]["1"], "spam");
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("score.weight").unwrap().shape(), [2, 64], "PyTorch nn.Linear layout");
    assert_eq!(st.tensor("score.bias").unwrap().shape(), [2]);
    assert!(st.tensor("transformer.h.1.mlp.c_fc.weight").is_ok());

    let loaded = gpt::hf::load_classifier_dir(dir.path(), &device()).unwrap();
    assert_eq!(loaded.labels(), labels());
    assert_eq!(logits(&loaded), logits(&classifier));

    let err = gpt::hf::load_model_dir(dir.path(), &device()).unwrap_err().to_string();
    assert!(err.contains("classifier") && err.contains("llmfs classify"), "{err}");
    let err = gpt::hf::load_classifier_dir(&fixture_dir(), &device()).unwrap_err().to_string();
    assert!(err.contains("not a classifier"), "{err}");
}

#[test]
fn freezing_policies_train_what_they_say() {
    let device = device().autodiff();
    let block = 128 + (64 * 192 + 192) + (64 * 64 + 64) + 128 + (64 * 256 + 256) + (256 * 64 + 64);
    let (head, ln_f, total) = (2 * 64 + 2, 128, 3_324_736 + 2 * 64 + 2);
    let cases = [
        (Trainable::Head, head),
        (Trainable::LastBlock, block + ln_f + head),
        (Trainable::LastN(2), 2 * block + ln_f + head),
        (Trainable::All, total),
    ];
    for (policy, expected) in cases {
        let classifier = Classifier::new(gpt::hf::load_model_dir(&fixture_dir(), &device).unwrap().into(), labels(), EOT_TOKEN, 1)
            .unwrap()
            .set_trainable(policy);
        assert_eq!(classifier.parameter_counts(), (expected, total), "{policy}");
        // Frozen parameters get no gradient.
        let ids = Tensor::<2, Int>::from_data(input_ids().into_data(), &device);
        let grads = classifier.forward(ids).sum().backward();
        let wte_grad = gpt(&classifier).wte.weight.val().grad(&grads);
        assert_eq!(wte_grad.is_some(), policy == Trainable::All, "{policy}: wte");
        let first_block = gpt(&classifier).h[0].mlp.c_fc.weight.val().grad(&grads);
        assert_eq!(first_block.is_some(), matches!(policy, Trainable::All | Trainable::LastN(2)), "{policy}: h.0");
        assert!(classifier.score.weight.val().grad(&grads).is_some());
    }
    for (text, policy) in [("last-block", Trainable::LastBlock), ("head", Trainable::Head), ("last-n:3", Trainable::LastN(3)), ("all", Trainable::All)] {
        assert_eq!(text.parse::<Trainable>().unwrap(), policy);
        assert_eq!(policy.to_string(), text);
    }
    assert!("last-n:0".parse::<Trainable>().is_err());
    assert!("some".parse::<Trainable>().is_err());
}

/// The last block computed at the last position only gives that position's full output, with
/// gradients for the same parameters (the classifier's training path).
#[test]
fn the_last_position_shortcut_equals_the_full_blocks() {
    let device = device().autodiff();
    let classifier = fixture_classifier(&device).set_trainable(Trainable::LastBlock);
    // Dropout off: both paths must see the same (deterministic) blocks.
    let gpt = &gpt(&classifier).clone().with_dropout(0.0);
    let ids = Tensor::<2, Int>::from_data(input_ids().into_data(), &device);
    let x = gpt.embed_tokens(ids);
    let [b, t, c] = x.dims();
    let full = gpt.run_blocks(x.clone(), 0..2).narrow(1, t - 1, 1);
    let last = gpt.run_blocks_to_last(x, 0);
    assert_eq!(last.dims(), [b, 1, c]);
    let values = |x: Tensor<3>| x.clone().into_data().try_into_vec_as::<f32>().unwrap();
    let diff = max_abs_diff(&values(full.clone()), &values(last.clone()));
    assert!(diff < 1e-5 * tolerance_scale(), "{diff}");
    let grad = |y: Tensor<3>| {
        let grads = y.sum().backward();
        let g = gpt.h[1].attn.c_attn.weight.val().grad(&grads).unwrap();
        g.into_data().try_into_vec_as::<f32>().unwrap()
    };
    let diff = max_abs_diff(&grad(full), &grad(last));
    assert!(diff < 1e-4 * tolerance_scale(), "c_attn gradients differ by {diff}");
}

/// The reference of `scripts/reference/classifier_reference.py`: transformers' sequence
/// classifier on the Llama-family fixtures, texts padded on the right.
fn classifier_reference() -> serde_json::Value {
    let path = fixture_dir().join("../classifier_reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn llama_family_classifier(name: &str, reference: &serde_json::Value, device: &Device) -> (Classifier, Tensor<2, Int>, Vec<f32>) {
    let model = gpt::hf::load_language_model_dir(&fixture_dir().join("..").join(name), device).unwrap();
    let floats = |v: &serde_json::Value| v.as_array().unwrap().iter().flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32)).collect::<Vec<f32>>();
    let (weight, expected) = (floats(&reference["score_weight"]), floats(&reference["logits"]));
    let ids: Vec<Vec<i64>> = serde_json::from_value(reference["input_ids"].clone()).unwrap();
    let (b, t) = (ids.len(), ids[0].len());
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids.concat(), [b, t]), device);
    let hidden = model.hidden_size();
    let weight = Tensor::<2>::from_data(TensorData::new(weight, [3, hidden]), device);
    let pad = reference["pad_token_id"].as_u64().unwrap() as u32;
    let labels = vec!["a".to_string(), "b".into(), "c".into()];
    (Classifier::with_head(model, labels, pad, weight, None).unwrap(), ids, expected)
}

#[test]
fn llama_family_classifiers_read_the_last_token_as_transformers() {
    let reference = classifier_reference();
    let tol = reference["tolerance_abs"].as_f64().unwrap();
    for name in ["llama-tiny", "qwen3-tiny"] {
        let case = &reference["models"][name];
        let (classifier, ids, expected) = llama_family_classifier(name, case, &device());
        let ours: Vec<f32> = classifier.forward(ids.clone()).into_data().try_into_vec_as().unwrap();
        let diff = max_abs_diff(&ours, &expected);
        assert!(diff <= tol, "{name}: logits differ from transformers' by {diff}");
        let positions: Vec<i64> = classifier.pool_positions(&ids).unwrap().into_data().try_into_vec_as().unwrap();
        let rows: Vec<Vec<u64>> = serde_json::from_value(case["input_ids"].clone()).unwrap();
        let pad = case["pad_token_id"].as_u64().unwrap();
        let lengths: Vec<i64> = rows.iter().map(|row| row.iter().rposition(|&id| id != pad).unwrap() as i64).collect();
        assert_eq!(positions, lengths, "{name}: each row is read at its last non-pad token");

        // Saved as transformers' `*ForSequenceClassification`: no LM head, `score.weight` without bias.
        let dir = tempfile::tempdir().unwrap();
        gpt::hf::save_classifier_dir(&classifier, dir.path()).unwrap();
        let config: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(config["architectures"][0], case["architecture"], "{name}");
        assert_eq!(config["pad_token_id"], case["pad_token_id"], "{name}");
        assert_eq!(config["id2label"]["2"], "c");
        let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("score.weight").unwrap().shape(), [3, 32]);
        assert!(st.tensor("score.bias").is_err() && st.tensor("lm_head.weight").is_err(), "{name}");
        assert!(st.tensor("model.layers.1.self_attn.q_proj.weight").is_ok());
        let loaded = gpt::hf::load_classifier_dir(dir.path(), &device()).unwrap();
        assert_eq!((loaded.labels(), loaded.pad_token()), (classifier.labels(), classifier.pad_token()));
        let again: Vec<f32> = loaded.forward(ids).into_data().try_into_vec_as().unwrap();
        assert_eq!(again, ours, "{name}: the saved classifier reads back the same");
        let err = gpt::hf::load_language_model_dir(dir.path(), &device()).unwrap_err().to_string();
        assert!(err.contains("classifier") && err.contains("llmfs classify"), "{name}: {err}");
    }
}

/// The frozen prefix (layers below `first`) run apart and the rest read at the pooled positions
/// give the whole forward's logits, with gradients for the head.
#[test]
fn a_llama_classifier_from_its_frozen_prefix_equals_the_whole_forward() {
    let reference = classifier_reference();
    let device = device().autodiff();
    let (classifier, ids, _) = llama_family_classifier("llama-tiny", &reference["models"]["llama-tiny"], &device);
    let classifier = classifier.set_trainable(Trainable::LastBlock);
    let whole: Vec<f32> = classifier.forward(ids.clone()).into_data().try_into_vec_as().unwrap();
    let prefix = classifier.model.run_blocks(classifier.model.embed_tokens(ids.clone()), 0..1);
    let split = classifier.forward_from(prefix, 1, classifier.pool_positions(&ids));
    let values: Vec<f32> = split.clone().into_data().try_into_vec_as().unwrap();
    assert!(max_abs_diff(&whole, &values) < 1e-5 * tolerance_scale());
    let grads = split.sum().backward();
    assert!(classifier.score.weight.val().grad(&grads).is_some());
    let LanguageModel::Llama(llama) = &classifier.model else { panic!("a Llama") };
    assert!(llama.model.layers[1].mlp.up_proj.weight.val().grad(&grads).is_some(), "the last layer trains");
    assert!(llama.model.layers[0].mlp.up_proj.weight.val().grad(&grads).is_none(), "the first is frozen");
    assert!(llama.model.embed_tokens.weight.val().grad(&grads).is_none());
}
