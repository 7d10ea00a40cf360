//! LoRA: fresh adapters change nothing, merged = unmerged, only the adapters train, and the
//! PEFT-layout files round-trip (through `--model DIR` too), with clear errors for bad ones.

use crate::common::*;
use gpt::burn::prelude::*;
use gpt::lora::{AdapterConfig, AdapterTask, save_adapter_dir};
use gpt::{hf::ModelSpec, io::{fill_params_matching, parameter_counts}, models::gpt2::RandomInit};
use gpt::{Classifier, EOT_TOKEN, Gpt, LoraConfig, LoraTargets};

fn lora(rank: usize, targets: &str) -> LoraConfig {
    LoraConfig::new(rank, 2.0 * rank as f64, targets.parse().unwrap()).unwrap()
}

fn logits(model: &Gpt) -> Vec<f32> {
    to_vec(model.forward(input_ids()))
}

/// Random `B` factors (and `A`), as if trained: fresh adapters are an exact no-op.
fn trained(model: Gpt, seed: u64) -> Gpt {
    let config = model.config().clone();
    fill_params_matching(model, &mut RandomInit::new(&config, seed), |name| name.contains(".lora.")).unwrap()
}

#[test]
fn fresh_adapters_leave_the_logits_unchanged() {
    let base = tiny_model();
    let adapted = lora(4, "attn,mlp").apply(tiny_model(), 0).unwrap();
    assert_eq!(logits(&adapted), logits(&base), "B = 0 at init: W + A·0 = W exactly");
}

/// The adapters a seed draws, whatever the device's generator did before or does meanwhile
/// (other threads of a process share it); `A` ~ N(0, 1/rank), `B` = 0.
#[test]
fn fresh_adapters_depend_on_the_seed_alone() {
    let factors = |seed: u64, device_seed: u64| -> Vec<(String, Vec<f32>)> {
        device().seed(device_seed);
        let adapted = lora(4, "attn").apply(tiny_model(), seed).unwrap();
        gpt::io::named_params(&adapted)
            .into_iter()
            .filter(|(name, _)| name.contains(".lora."))
            .map(|(name, data)| (name, data.try_to_vec::<f32>().unwrap()))
            .collect()
    };
    let first = factors(7, 1);
    assert_eq!(first.len(), 2 * 2 * 2, "A and B of c_attn and attn.c_proj in two blocks");
    assert_eq!(first, factors(7, 2), "the device's generator must not matter");
    assert_ne!(first, factors(8, 1), "another seed, other adapters");
    let a: Vec<f32> = first.iter().filter(|(n, _)| n.ends_with(".lora.a")).flat_map(|(_, v)| v.clone()).collect();
    assert!(first.iter().filter(|(n, _)| n.ends_with(".lora.b")).all(|(_, v)| v.iter().all(|&x| x == 0.0)));
    let std = (a.iter().map(|x| x * x).sum::<f32>() / a.len() as f32).sqrt();
    assert!((std - 0.25).abs() < 0.02, "A's standard deviation {std}, expected 1/rank = 0.25 ({} draws)", a.len());
}

/// The fixture model on the autodiff device (where parameters can train at all).
fn trainable_tiny_model() -> Gpt {
    gpt::hf::load_model_dir(&fixture_dir(), &device().autodiff()).unwrap()
}

#[test]
fn only_the_adapters_train() {
    let base = trainable_tiny_model();
    let (_, base_total) = parameter_counts(&base);
    let adapted = lora(4, "attn,mlp").apply(trainable_tiny_model(), 0).unwrap();
    let (trainable, total) = parameter_counts(&adapted);
    // Per block (C = 64, r = 4): c_attn 4·(64+192) + attn.c_proj 4·(64+64) + c_fc 4·(64+256)
    // + mlp.c_proj 4·(256+64) = 4,096; two blocks.
    assert_eq!(trainable, 8_192);
    assert_eq!(total, base_total + 8_192);
    // The groups name both families' projections; on a GPT-2 model only GPT-2's are adapted.
    let model = gpt::models::LanguageModel::Gpt2(trainable_tiny_model());
    assert_eq!(parameter_counts(&lora(4, "attn,mlp").apply_to(model, 0).unwrap()).0, 8_192);
    let err = lora(4, "q_proj,v_proj").apply_to(trainable_tiny_model().into(), 0).unwrap_err().to_string();
    assert!(err.contains("q_proj") && err.contains("not projections of a GPT-2 model"), "{err}");
    let (attn_only, _) = parameter_counts(&lora(4, "attn").apply(trainable_tiny_model(), 0).unwrap());
    assert_eq!(attn_only, 2 * (1_024 + 512));
}

#[test]
fn merged_and_unmerged_models_give_the_same_logits() {
    let adapted = trained(lora(4, "all").apply(tiny_model(), 0).unwrap(), 7);
    let unmerged = logits(&adapted);
    let merged = logits(&adapted.clone().materialize());
    let diff = max_abs_diff(&unmerged, &merged);
    assert!(diff < 1e-5 * tolerance_scale(), "merged vs unmerged logits differ by {diff}");
    let change = max_abs_diff(&unmerged, &logits(&tiny_model()));
    assert!(change > 1e-2, "the adapters should change the model (changed by {change})");
}

#[test]
fn adapters_round_trip_in_the_peft_layout() {
    let adapted = trained(lora(4, "attn,mlp").apply(tiny_model(), 0).unwrap(), 11);
    let run = tempfile::tempdir().unwrap();
    let dir = run.path().join("adapter");
    let config = AdapterConfig::new(&lora(4, "attn,mlp"), AdapterTask::CausalLm, fixture_dir().to_str().unwrap());
    save_adapter_dir(&dir, &adapted, &config, Vec::new()).unwrap();

    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(json["peft_type"], "LORA");
    assert_eq!(json["task_type"], "CAUSAL_LM");
    assert_eq!(json["r"], 4);
    assert_eq!(json["lora_alpha"], 8.0);
    assert_eq!(json["fan_in_fan_out"], true);
    assert_eq!(json["target_modules"], serde_json::json!(["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]));
    assert!(std::path::Path::new(json["base_model_name_or_path"].as_str().unwrap()).is_absolute());
    let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 2 * 4 * 2, "A and B of 4 projections in 2 blocks, nothing else");
    let a = st.tensor("base_model.model.transformer.h.1.attn.c_attn.lora_A.weight").unwrap();
    let b = st.tensor("base_model.model.transformer.h.1.attn.c_attn.lora_B.weight").unwrap();
    assert_eq!((a.shape(), b.shape()), (&[4, 64][..], &[192, 4][..]), "PyTorch nn.Linear layout: [r, in], [out, r]");

    // The adapter directory loads, merged, with the adapted logits (a run directory holding it as
    // `adapter/` is the pipelines' `runs::ModelRef`, tested there).
    let expected = logits(&adapted);
    let parsed = ModelSpec::parse(dir.to_str().unwrap()).unwrap();
    assert_eq!(parsed, ModelSpec::Adapter(dir.clone()));
    let loaded = gpt::hf::load_model(dir.to_str().unwrap(), &device(), 0).unwrap();
    let diff = max_abs_diff(&logits(&loaded), &expected);
    assert!(diff < 1e-5 * tolerance_scale(), "{}: logits differ by {diff}", dir.display());
}

#[test]
fn bad_adapters_name_the_file_and_tensor() {
    let adapted = trained(lora(4, "attn").apply(tiny_model(), 0).unwrap(), 3);
    let dir = tempfile::tempdir().unwrap();
    let config = AdapterConfig::new(&lora(4, "attn"), AdapterTask::CausalLm, fixture_dir().to_str().unwrap());
    save_adapter_dir(dir.path(), &adapted, &config, Vec::new()).unwrap();
    let config_path = dir.path().join("adapter_config.json");
    let original: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    let load_with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut json = original.clone();
        edit(&mut json);
        std::fs::write(&config_path, serde_json::to_string(&json).unwrap()).unwrap();
        gpt::hf::load_model(dir.path().to_str().unwrap(), &device(), 0).unwrap_err().to_string()
    };

    let err = load_with(&|j| j["r"] = 8.into());
    assert!(err.contains("lora_A") && err.contains("[8, 64]") && err.contains("[4, 64]"), "{err}");
    let err = load_with(&|j| j["target_modules"] = serde_json::json!(["attn", "mlp"]));
    assert!(err.contains("missing tensor") && err.contains("mlp.c_fc.lora_A"), "{err}");
    let err = load_with(&|j| j["target_modules"] = serde_json::json!(["c_attn"]));
    assert!(err.contains("unexpected tensor") && err.contains("attn.c_proj.lora_A"), "{err}");
    let err = load_with(&|j| j["target_modules"] = serde_json::json!(["q_proj"]));
    assert!(err.contains("adapter_config.json") && err.contains("q_proj"), "{err}");
    let err = load_with(&|j| j["base_model_name_or_path"] = "/nonexistent/base".into());
    assert!(err.contains("adapter_config.json") && err.contains("/nonexistent/base"), "{err}");
    let err = load_with(&|j| j["task_type"] = "SEQ_CLS".into());
    assert!(err.contains("llmfs classify"), "{err}");
    let err = load_with(&|j| j["use_dora"] = true.into());
    assert!(err.contains("adapter_config.json") && err.contains("DoRA"), "{err}");
    let err = load_with(&|j| j["use_rslora"] = true.into());
    assert!(err.contains("use_rslora"), "{err}");
    // PEFT writes `task_type: null` when none was given: a language model's adapter (here one
    // with a wrong rank, so that loading gets as far as the tensors).
    let err = load_with(&|j| {
        j["task_type"] = serde_json::Value::Null;
        j["r"] = 8.into();
    });
    assert!(err.contains("lora_A") && err.contains("[8, 64]"), "{err}");
    let err = load_with(&|j| j["r"] = 0.into());
    assert!(err.contains("adapter_config.json") && err.contains("rank"), "{err}");
    std::fs::write(&config_path, "{\"peft_type\": \"LORA\"").unwrap();
    let err = gpt::hf::load_model(dir.path().to_str().unwrap(), &device(), 0).unwrap_err().to_string();
    assert!(err.contains("adapter_config.json") && err.contains("JSON"), "{err}");

    assert!("attn,bogus".parse::<LoraTargets>().unwrap_err().to_string().contains("bogus"));
    assert!(LoraConfig::new(4, f64::NAN, LoraTargets::default()).is_err());
}

#[test]
fn a_classifier_adapter_keeps_its_head() {
    let labels = vec!["ham".to_string(), "spam".to_string()];
    let trainable = lora(2, "attn").apply_to_classifier(Classifier::new(trainable_tiny_model().into(), labels.clone(), EOT_TOKEN, 5).unwrap(), 0).unwrap();
    assert_eq!(trainable.parameter_counts().0, 2 * 2 * ((64 + 192) + (64 + 64)) + 64 * 2 + 2, "adapters + head");
    let mut classifier = lora(2, "attn").apply_to_classifier(Classifier::new(tiny_model().into(), labels.clone(), EOT_TOKEN, 5).unwrap(), 0).unwrap();
    classifier.model = trained(classifier.model.as_gpt2().unwrap().clone(), 9).into();
    classifier.set_max_length(16);
    let dir = tempfile::tempdir().unwrap();
    let config = AdapterConfig::new(&lora(2, "attn"), AdapterTask::SequenceClassification, fixture_dir().to_str().unwrap());
    gpt::hf::save_classifier_adapter_dir(&classifier, dir.path(), &config).unwrap();
    assert!(gpt::hf::is_classifier_dir(dir.path()).unwrap());

    let loaded = gpt::hf::load_classifier_dir(dir.path(), &device()).unwrap();
    assert_eq!(loaded.labels(), labels);
    assert_eq!(loaded.max_length(), Some(16));
    let expected: Vec<f32> = classifier.forward(input_ids()).into_data().try_to_vec().unwrap();
    let got: Vec<f32> = loaded.forward(input_ids()).into_data().try_to_vec().unwrap();
    let diff = max_abs_diff(&got, &expected);
    assert!(diff < 1e-5 * tolerance_scale(), "classifier logits differ by {diff}");
    let err = gpt::hf::load_model(dir.path().to_str().unwrap(), &device(), 0).unwrap_err().to_string();
    assert!(err.contains("llmfs classify"), "{err}");
}

/// On a model kept in bf16 the adapters are f32 (they train), the base stays bf16.
#[test]
fn adapters_on_a_bf16_base_are_f32() {
    let device = Device::flex().autodiff();
    let model = gpt::hf::load_language_model_as("random:tiny", &device, 7, gpt::io::WeightDtype::Bf16).unwrap();
    let lora = LoraConfig::new(4, 8.0, LoraTargets::default()).unwrap();
    let model = lora.for_model(&model).unwrap().apply_to(model, 1).unwrap();
    struct Dtypes(Vec<(usize, gpt::burn::tensor::DType, bool)>);
    impl gpt::burn::module::ModuleVisitor for Dtypes {
        fn visit_float<const D: usize>(&mut self, param: &gpt::burn::module::Param<Tensor<D>>) {
            self.0.push((D, param.base().dtype(), param.is_require_grad()));
            if let Some(adapter) = param.reparameterization::<gpt::burn::module::LoraAdapter>() {
                for factor in [&adapter.a, &adapter.b] {
                    self.0.push((2, factor.val().dtype(), factor.is_require_grad()));
                }
            }
        }
    }
    let mut dtypes = Dtypes(Vec::new());
    model.visit(&mut dtypes);
    // What trains is f32: the factors; the frozen matrices are bf16.
    assert!(dtypes.0.iter().any(|&(_, dtype, trains)| trains && dtype == gpt::burn::tensor::DType::F32), "{:?}", dtypes.0);
    assert!(dtypes.0.iter().any(|&(rank, dtype, trains)| !trains && rank == 2 && dtype == gpt::burn::tensor::DType::BF16), "{:?}", dtypes.0);
    assert!(dtypes.0.iter().all(|&(_, dtype, trains)| !trains || dtype == gpt::burn::tensor::DType::F32), "{:?}", dtypes.0);
}
