//! The classifier head against the fixture's `cls_logits`, its HF-layout save/load, and the
//! freezing policies.

use crate::common::*;
use gpt::burn::prelude::*;
use gpt::{GptClassifier, Trainable};

fn labels() -> Vec<String> {
    vec!["ham".into(), "spam".into()]
}

fn fixture_classifier(device: &Device) -> GptClassifier {
    let gpt = gpt::hf::load_model_dir(&fixture_dir(), device).unwrap();
    let (shape, weight) = expected_f32("cls_head_weight");
    let (_, bias) = expected_f32("cls_head_bias");
    let weight = Tensor::<2>::from_data(TensorData::new(weight, shape), device);
    let bias = Tensor::<1>::from_data(TensorData::new(bias, [2]), device);
    GptClassifier::with_head(gpt, labels(), weight, bias).unwrap()
}

fn logits(classifier: &GptClassifier) -> Vec<f32> {
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
        let classifier = GptClassifier::new(gpt::hf::load_model_dir(&fixture_dir(), &device).unwrap(), labels(), 1)
            .unwrap()
            .set_trainable(policy);
        assert_eq!(classifier.parameter_counts(), (expected, total), "{policy}");
        // Frozen parameters get no gradient.
        let ids = Tensor::<2, Int>::from_data(input_ids().into_data(), &device);
        let grads = classifier.forward(ids).sum().backward();
        let wte_grad = classifier.gpt.wte.weight.val().grad(&grads);
        assert_eq!(wte_grad.is_some(), policy == Trainable::All, "{policy}: wte");
        let first_block = classifier.gpt.h[0].mlp.c_fc.weight.val().grad(&grads);
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
    let gpt = &classifier.gpt.clone().with_dropout(0.0);
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
