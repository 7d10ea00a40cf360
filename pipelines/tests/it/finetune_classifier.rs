//! The training core on the spam task with the tiny fixture model: metrics, checkpoints, the
//! final model and plots, the frozen-prefix cache, and exact resume.

use std::path::{Path, PathBuf};

use crate::common::{fixtures, model_weights, safetensors_weights};
use gpt::burn::prelude::*;
use gpt::Trainable;
use pipelines::eval::classifier::classify_texts;
use pipelines::finetune::{ClassifierData, ClassifierFinetune, LoraFinetune, finetune_classifier};
use pipelines::runs::read_metrics;
use pipelines::train::TrainConfig;

/// The 300-message fixture, prepared as the book does (160 balanced: 112 / 16 / 32).
fn spam_data(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let zip = fixtures().join("data/sms_spam_collection.zip");
    pipelines::data::spam::prepare_spam(zip.to_str().unwrap(), &data, 123).unwrap();
    data
}

fn job(data: &Path, run_dir: &Path) -> ClassifierFinetune {
    ClassifierFinetune {
        model: fixtures().join("gpt2-tiny").display().to_string(),
        data: ClassifierData::SpamSplits(data.to_path_buf()),
        run_dir: run_dir.to_path_buf(),
        trainable: Trainable::LastBlock,
        lora: None,
        max_length: Some(24),
        dropout: 0.0,
        prefix_cache: false,
        train: TrainConfig { epochs: 2, batch_size: 8, eval_every: Some(5), eval_batches: 2, checkpoint_every: Some(4), ..TrainConfig::default() },
        resume: false,
        dashboard: false,
        device: Device::flex(),
    }
}

#[test]
fn a_run_logs_checkpoints_saves_and_plots() {
    let tmp = tempfile::tempdir().unwrap();
    let data = spam_data(tmp.path());
    let run = tmp.path().join("run");
    let report = finetune_classifier(&job(&data, &run)).unwrap();
    // 112 training texts, batches of 8, last partial dropped: 14 steps an epoch.
    assert_eq!(report.steps, 28);
    assert_eq!(report.length, 24);
    for accuracy in [report.train_accuracy, report.validation_accuracy, report.test_accuracy] {
        assert!((0.0..=1.0).contains(&accuracy));
    }

    let events = read_metrics(&run.join("metrics.jsonl")).unwrap();
    let train: Vec<_> = events.iter().filter(|e| e.split == "train" && e.extra.get("final").is_none()).collect();
    assert_eq!(train.len(), 28, "one event per training batch");
    assert!(train.iter().all(|e| e.loss.is_some_and(f64::is_finite) && e.accuracy.is_some()));
    assert_eq!(train.last().unwrap().step, 28);
    let periodic: Vec<_> = events.iter().filter(|e| e.split == "val" && e.extra.get("full").is_none()).map(|e| e.step).collect();
    assert_eq!(periodic, [5, 10, 15, 20, 25]);
    let full_val = events.iter().filter(|e| e.split == "val" && e.extra.get("full").is_some()).count();
    assert_eq!(full_val, 3, "one per epoch and the final one");
    assert!(events.iter().any(|e| e.split == "test"));

    let classifier = gpt::hf::load_classifier_dir(&run.join("model"), &Device::flex()).unwrap();
    assert_eq!(classifier.labels(), ["ham", "spam"]);
    assert_eq!(classifier.max_length(), Some(24));
    // `llmfs eval spam`'s evaluation agrees with the run's own final test accuracy and loss.
    let test = pipelines::data::spam::read_split_csv(&data.join("test.csv")).unwrap();
    let evaluation = pipelines::eval::classifier::evaluate_messages(&classifier, &gpt::Tokenizer::gpt2(), &test, 5).unwrap();
    assert_eq!(evaluation.metrics.n, 32);
    assert_eq!(evaluation.metrics.confusion.iter().flatten().sum::<usize>(), 32);
    let accuracy = evaluation.metrics.accuracy;
    assert!((accuracy - report.test_accuracy).abs() < 1e-9, "{accuracy} vs {}", report.test_accuracy);
    assert!((evaluation.loss - report.test_loss).abs() < 1e-3, "{} vs {}", evaluation.loss, report.test_loss);
    let predictions = classify_texts(&classifier, &gpt::Tokenizer::gpt2(), &["WINNER! Claim your free prize now".to_string(), "See you at lunch".into()], 8).unwrap();
    assert_eq!(predictions.len(), 2);
    for p in &predictions {
        assert!(p.label == "ham" || p.label == "spam");
        assert!((p.probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-5);
    }
    // The whole scores of every split, with the same test accuracy and a macro-F1 from the same matrix.
    let metrics: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("eval/metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["test"]["n"], 32);
    assert_eq!(metrics["test"]["confusion"], serde_json::json!(evaluation.metrics.confusion));
    assert!((metrics["test"]["macro_f1"].as_f64().unwrap() - report.test_macro_f1).abs() < 1e-12);
    assert_eq!(metrics["test"]["classes"][1]["label"], "spam");
    for file in ["run.json", "plots/loss.png", "plots/accuracy.png", "plots/confusion.png", "eval/accuracy.json", "checkpoints/state.json"] {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    // A second run into the same directory is refused rather than mixed in.
    let err = finetune_classifier(&job(&data, &run)).unwrap_err().to_string();
    assert!(err.contains("--resume"), "{err}");
}

#[test]
fn the_frozen_prefix_cache_gives_the_same_losses() {
    let tmp = tempfile::tempdir().unwrap();
    let data = spam_data(tmp.path());
    let plain = job(&data, &tmp.path().join("plain"));
    let cached = ClassifierFinetune { prefix_cache: true, run_dir: tmp.path().join("cached"), ..plain.clone() };
    let a = finetune_classifier(&plain).unwrap();
    let b = finetune_classifier(&cached).unwrap();
    let losses = |dir: &Path| -> Vec<f64> { read_metrics(&dir.join("metrics.jsonl")).unwrap().iter().filter_map(|e| e.loss).collect() };
    let (la, lb) = (losses(&tmp.path().join("plain")), losses(&tmp.path().join("cached")));
    assert_eq!(la.len(), lb.len());
    for (i, (x, y)) in la.iter().zip(&lb).enumerate() {
        assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "event {i}: {x} vs {y}");
    }
    assert!((a.test_accuracy - b.test_accuracy).abs() < 1e-9);
}

#[test]
fn a_run_stopped_mid_epoch_resumes_to_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let data = spam_data(tmp.path());
    let whole = job(&data, &tmp.path().join("whole"));
    finetune_classifier(&whole).unwrap();

    let split = tmp.path().join("split");
    let mut first = job(&data, &split);
    first.train.stop_after_steps = Some(9);
    let err = finetune_classifier(&first).unwrap_err().to_string();
    assert!(err.contains("--resume"), "{err}");
    let resumed = ClassifierFinetune { resume: true, ..job(&data, &split) };
    finetune_classifier(&resumed).unwrap();

    assert_eq!(model_weights(&split), model_weights(&tmp.path().join("whole")), "resumed weights differ");
    let losses = |dir: &Path| -> Vec<(u64, String, Option<f64>)> {
        read_metrics(&dir.join("metrics.jsonl")).unwrap().into_iter().map(|e| (e.step, e.split, e.loss)).collect()
    };
    assert_eq!(losses(&split), losses(&tmp.path().join("whole")), "the loss curve continues exactly");
}

fn lora_job(data: &Path, run_dir: &Path) -> ClassifierFinetune {
    let mut job = job(data, run_dir);
    let config = gpt::LoraConfig::new(4, 8.0, "attn,mlp".parse().unwrap()).unwrap();
    job.lora = Some(LoraFinetune { config, merge: true, quantize: None });
    job.train.epochs = 1;
    job.train.optim.lr = 1e-3;
    job
}

/// With LoRA only the adapters and the head move: the merged model differs from the base in
/// the targeted weights alone, the adapter directory classifies like the merged model, and a
/// stopped run resumes to the same adapters.
#[test]
fn lora_trains_only_the_adapters_and_the_head() {
    let tmp = tempfile::tempdir().unwrap();
    let data = spam_data(tmp.path());
    let run = tmp.path().join("lora");
    let report = finetune_classifier(&lora_job(&data, &run)).unwrap();
    assert_eq!(report.steps, 14);
    // 2 blocks × r·(64+192 + 64+64 + 64+256 + 256+64) + the head 64·2 + 2.
    assert_eq!(report.trainable_parameters, 8_192 + 130);
    assert_eq!(report.model_dir, run.join("model"));

    let base: std::collections::HashMap<_, _> = safetensors_weights(&fixtures().join("gpt2-tiny/model.safetensors")).into_iter().collect();
    let mut targeted_changed = 0;
    for (name, merged) in model_weights(&run) {
        if name.starts_with("score.") {
            continue;
        }
        let is_target = ["attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"].iter().any(|t| name.ends_with(t));
        let original = &base[&name];
        if is_target {
            targeted_changed += usize::from(merged != *original);
        } else {
            assert!(merged == *original, "{name} is frozen but changed");
        }
    }
    assert_eq!(targeted_changed, 8, "every adapted weight moved");

    let texts = ["WINNER! Claim your free prize now".to_string(), "See you at lunch".into()];
    let merged = gpt::hf::load_classifier_dir(&run.join("model"), &Device::flex()).unwrap();
    let adapter = gpt::hf::load_classifier_dir(&run.join("adapter"), &Device::flex()).unwrap();
    let (p, q) = (classify_texts(&merged, &gpt::Tokenizer::gpt2(), &texts, 8).unwrap(), classify_texts(&adapter, &gpt::Tokenizer::gpt2(), &texts, 8).unwrap());
    for (a, b) in p.iter().zip(&q) {
        assert_eq!(a.label, b.label);
        assert!((a.probability - b.probability).abs() < 1e-5, "{} vs {}", a.probability, b.probability);
    }

    let split = tmp.path().join("split");
    let mut first = lora_job(&data, &split);
    first.train.stop_after_steps = Some(6);
    assert!(finetune_classifier(&first).is_err());
    finetune_classifier(&ClassifierFinetune { resume: true, ..lora_job(&data, &split) }).unwrap();
    assert_eq!(
        safetensors_weights(&split.join("adapter/adapter_model.safetensors")),
        safetensors_weights(&run.join("adapter/adapter_model.safetensors")),
        "resumed adapters differ"
    );
}

/// Accumulating 2 batches of 4 is one step on their 8 examples: the mean of the two batch means,
/// not their sum (which would double the step's gradient and change what --grad-clip sees).
#[test]
fn gradient_accumulation_averages_like_one_large_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = spam_data(tmp.path());
    let run = |name: &str, batch_size: usize, grad_accumulation: usize| {
        let mut job = job(&data, &tmp.path().join(name));
        job.train = TrainConfig { epochs: 1, batch_size, grad_accumulation, eval_every: None, checkpoint_every: None, ..job.train };
        // Clipping at 5 bites on the summed gradients (without the averaging this test fails) but
        // not on their mean; Adam itself hardly sees a constant factor.
        job.train.optim.grad_clip = Some(5.0);
        let report = finetune_classifier(&job).unwrap();
        (report.steps, model_weights(&job.run_dir))
    };
    // Batch i of size 8 holds the same examples as batches 2i and 2i+1 of size 4 (same order).
    let (large_steps, large) = run("large", 8, 1);
    let (accumulated_steps, accumulated) = run("accumulated", 4, 2);
    let (small_steps, small) = run("small", 4, 1);
    assert_eq!((large_steps, accumulated_steps, small_steps), (14, 14, 28));
    // Float rounding differs between one batch of 8 and two of 4 (~2e-5 after 14 AdamW steps);
    // summing instead of averaging moves the weights by ~1.2e-4.
    assert!(max_abs_diff(&large, &accumulated) < 5e-5, "{}", max_abs_diff(&large, &accumulated));
    // The comparison can fail: 28 small steps end elsewhere.
    assert!(max_abs_diff(&large, &small) > 1e-4, "{}", max_abs_diff(&large, &small));
}

fn max_abs_diff(a: &[(String, Vec<u8>)], b: &[(String, Vec<u8>)]) -> f32 {
    let floats = |bytes: &[u8]| bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<_>>();
    let mut max = 0f32;
    for ((name_a, x), (name_b, y)) in a.iter().zip(b) {
        assert_eq!(name_a, name_b);
        for (p, q) in floats(x).iter().zip(floats(y)) {
            max = max.max((p - q).abs());
        }
    }
    max
}
