//! `--model RUN`: a run directory loads its merged `model/`, else its LoRA `adapter/`, with the
//! same logits as the directory itself.

use gpt::burn::prelude::*;
use gpt::io::fill_params_matching;
use gpt::lora::{AdapterConfig, AdapterTask, LoraConfig, save_adapter_dir};
use gpt::models::gpt2::RandomInit;
use gpt::Gpt;
use pipelines::runs::{ModelRef, load_model};

use crate::gpt_common::{device, fixture_dir, input_ids, max_abs_diff, tiny_model, to_vec, tolerance_scale};

fn logits(model: &Gpt) -> Vec<f32> {
    to_vec(model.forward(input_ids()))
}

#[test]
fn a_run_directory_loads_its_adapters() {
    let lora = LoraConfig::new(4, 8.0, "attn,mlp".parse().unwrap()).unwrap();
    let adapted = lora.apply(tiny_model(), 0).unwrap();
    // Random `B` factors too, as if trained: fresh adapters would be a no-op.
    let config = adapted.config().clone();
    let adapted = fill_params_matching(adapted, &mut RandomInit::new(&config, 11), |name| name.contains(".lora.")).unwrap();
    let run = tempfile::tempdir().unwrap();
    let dir = run.path().join("adapter");
    let adapter_config = AdapterConfig::new(&lora, AdapterTask::CausalLm, fixture_dir().to_str().unwrap());
    save_adapter_dir(&dir, &adapted, &adapter_config, Vec::new()).unwrap();

    let expected = logits(&adapted);
    for spec in [dir.clone(), run.path().to_path_buf()] {
        let resolved = ModelRef::resolve(spec.to_str().unwrap());
        assert_eq!(resolved.model, dir.to_string_lossy(), "{}", spec.display());
        let loaded = load_model(spec.to_str().unwrap(), &device(), 0).unwrap();
        let diff = max_abs_diff(&logits(&loaded), &expected);
        assert!(diff < 1e-5 * tolerance_scale(), "{}: logits differ by {diff}", spec.display());
    }
}

#[test]
fn a_run_without_a_model_says_so() {
    let run = tempfile::tempdir().unwrap();
    std::fs::write(run.path().join("run.json"), r#"{"config": {"task": "instruction"}}"#).unwrap();
    let err = load_model(run.path().to_str().unwrap(), &Device::flex(), 0).unwrap_err().to_string();
    assert!(err.contains("a run directory without a model") && err.contains("model/config.json"), "{err}");
}
