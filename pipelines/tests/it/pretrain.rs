//! Pretraining on token shards: the windows the loop batches are DataLoaderLite's batches, the
//! total batch maps to gradient accumulation, and a short run on learnable shards learns, scores
//! HellaSwag, samples, and resumes exactly.

use std::path::Path;

use crate::common::{fixtures, model_weights};
use gpt::burn::prelude::*;
use pipelines::data::hellaswag::read_examples;
use pipelines::data::shards::{ShardLoader, Split, find_shards, shard_file_name, write_tokens};
use pipelines::finetune::LanguageModelJob;
use pipelines::runs::read_metrics;
use pipelines::pretrain::{PretrainJob, ShardWindows, accumulation_for, pretrain};
use pipelines::train::{BatchSource, LrSchedule, OptimConfig, TrainConfig};

/// Shards of a text that repeats a 17-token cycle (a model can learn it in a few dozen steps),
/// each shard starting at a different place of the cycle.
fn write_shards(dir: &Path, lens: &[usize]) {
    let cycle: Vec<u16> = (0..17).map(|i| 200 + (i * 7 % 17) as u16).collect();
    for (index, &len) in lens.iter().enumerate() {
        let tokens: Vec<u16> = (0..len).map(|i| cycle[(i + index * 5) % cycle.len()]).collect();
        write_tokens(&dir.join(shard_file_name("edufineweb", index)), &tokens, pipelines::data::shards::TokenType::Uint16).unwrap();
    }
}

fn ints(tensor: Tensor<2, Int>) -> Vec<i64> {
    tensor.into_data().iter::<i64>().collect()
}

#[test]
fn shard_windows_are_the_batches_data_loader_lite_reads() {
    let tmp = tempfile::tempdir().unwrap();
    write_shards(tmp.path(), &[500, 1000, 777]);
    let (b, t) = (2, 16);
    let windows = ShardWindows::open(&find_shards(tmp.path(), Split::Train).unwrap(), b, t).unwrap();
    // (1000 - 1) / 32 = 31 and (777 - 1) / 32 = 24 batches of 2 windows.
    assert_eq!(windows.len(), (31 + 24) * 2);
    let mut loader = ShardLoader::new(tmp.path(), Split::Train, b, t, 0, 1).unwrap();
    let device = Device::flex();
    // One pass and then the loader's wrap-around to the first batch again.
    for batch in (0..55).chain(0..3) {
        let expected = loader.next_batch().unwrap();
        let indices: Vec<usize> = (batch * b..batch * b + b).collect();
        let got = windows.batch(&indices, &device);
        assert_eq!(ints(got.inputs), expected.inputs.iter().map(|&x| x as i64).collect::<Vec<_>>(), "inputs of batch {batch}");
        assert_eq!(ints(got.targets), expected.targets, "targets of batch {batch}");
    }
}

#[test]
fn a_shard_smaller_than_one_batch_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    write_shards(tmp.path(), &[100, 40]);
    let err = ShardWindows::open(&find_shards(tmp.path(), Split::Train).unwrap(), 2, 32).err().unwrap().to_string();
    assert!(err.contains("edufineweb_train_000001.npy") && err.contains("40 tokens"), "{err}");
}

#[test]
fn the_total_batch_is_reached_by_accumulation() {
    assert_eq!(accumulation_for(524_288, 64, 1024).unwrap(), 8);
    assert_eq!(accumulation_for(524_288, 16, 1024).unwrap(), 32);
    let err = accumulation_for(1000, 4, 16).unwrap_err().to_string();
    assert!(err.contains("multiple") && err.contains("64"), "{err}");
    assert!(accumulation_for(0, 4, 16).is_err());
}

fn job(data: &Path, run_dir: &Path) -> PretrainJob {
    let hellaswag = read_examples(&fixtures().join("data/hellaswag_val_40.jsonl")).unwrap();
    PretrainJob {
        lm: LanguageModelJob {
            task: "pretrain".into(),
            model: fixtures().join("gpt2-tiny").display().to_string(),
            run_dir: run_dir.to_path_buf(),
            dropout: Some(0.0),
            lora: None,
            train: TrainConfig {
                batch_size: 4,
                seed: 1337,
                optim: OptimConfig {
                    lr: 3e-3,
                    weight_decay: 0.1,
                    beta1: 0.9,
                    beta2: 0.95,
                    eps: 1e-8,
                    decay_all: false,
                    schedule: LrSchedule::WarmupCosine { warmup_steps: 3, min_lr_ratio: 0.1 },
                    grad_clip: Some(1.0),
                },
                grad_accumulation: 2,
                eval_every: Some(5),
                eval_batches: 2,
                checkpoint_every: Some(10),
                run_steps: Some(20),
                ..TrainConfig::default()
            },
            resume: false,
            dashboard: false,
            device: Device::flex(),
            details: serde_json::Value::Null,
        },
        data: data.to_path_buf(),
        seq_len: 32,
        sample_prompt: Some("Hello".into()),
        sample_tokens: 4,
        sample_every: Some(10),
        hellaswag_every: Some(10),
        hellaswag: hellaswag[..4].to_vec(),
        eval_tasks: Default::default(),
    }
}

#[test]
fn a_short_run_learns_scores_hellaswag_samples_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("shards");
    std::fs::create_dir_all(&data).unwrap();
    // Windows of 32 tokens, micro-batches of 4, 2 accumulated: 256 tokens a step. 20 steps need
    // 40 micro-batches; the two train shards hold 23 + 15 of them, so the run wraps around once.
    write_shards(&data, &[600, 2945, 1921]);
    let whole = tmp.path().join("whole");
    let report = pretrain(&job(&data, &whole)).unwrap();
    assert_eq!(report.steps, 20);

    let events = read_metrics(&whole.join("metrics.jsonl")).unwrap();
    let train: Vec<f64> = events.iter().filter(|e| e.split == "train").filter_map(|e| e.loss).collect();
    assert_eq!(train.len(), 40, "one event per micro-batch");
    // From a near-uniform guess over 50,257 tokens towards the cycle.
    assert!(train[0] > 9.0, "first loss {}", train[0]);
    // (It reaches ~4.2 in these 20 steps; learning nothing would stay near 10.8.)
    assert!(report.validation_loss < train[0] / 2.0, "validation loss {}", report.validation_loss);
    let hellaswag: Vec<u64> = events.iter().filter(|e| e.split == "hellaswag").map(|e| e.step).collect();
    assert_eq!(hellaswag, [10, 20]);
    let first = events.iter().find(|e| e.split == "hellaswag").unwrap();
    assert_eq!(first.extra["n"], 4);
    let samples: Vec<u64> = std::fs::read_to_string(whole.join("samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap())
        .collect();
    assert_eq!(samples, [10, 20], "one sample per sampling step, none twice at the end");
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(whole.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["config"]["details"]["tokens_per_step"], 256);

    let split = tmp.path().join("split");
    let mut first_part = job(&data, &split);
    first_part.lm.train.stop_after_steps = Some(7);
    let err = format!("{:#}", pretrain(&first_part).unwrap_err());
    assert!(err.contains("--resume"), "{err}");
    let mut rest = job(&data, &split);
    rest.lm.resume = true;
    pretrain(&rest).unwrap();
    assert_eq!(model_weights(&split), model_weights(&whole), "resumed weights differ");
    let curve = |dir: &Path| -> Vec<(u64, String, Option<f64>)> {
        read_metrics(&dir.join("metrics.jsonl")).unwrap().into_iter().map(|e| (e.step, e.split, e.loss)).collect()
    };
    assert_eq!(curve(&split), curve(&whole), "the loss curve continues exactly");
}

#[test]
fn a_sequence_longer_than_the_context_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    write_shards(tmp.path(), &[600, 2000]);
    let mut job = job(tmp.path(), &tmp.path().join("run"));
    job.seq_len = 129;
    let err = format!("{:#}", pretrain(&job).unwrap_err());
    assert!(err.contains("--seq-len 129") && err.contains("128"), "{err}");
}

/// A Llama-family model pretrains on shards of its own tokenizer's ids (`prepare fineweb
/// --tokenizer`, uint32 for Llama 3's 128,256 ids): its first loss is its own cross-entropy on the
/// first training batch, read from the shard independently, and it learns. Shards of another
/// tokenizer are refused before anything is written, either way round.
#[test]
fn a_llama_model_pretrains_on_shards_of_its_own_tokenizer_and_refuses_others() {
    use pipelines::data::fineweb::{self, PrepareOptions, Source};
    use pipelines::data::shards::TokenFile;
    let tmp = tempfile::tempdir().unwrap();
    let llama_dir = fixtures().join("llama-tiny");
    let tokenizer = gpt::Tokenizer::from_model_dir(&llama_dir).unwrap();
    let data = tmp.path().join("llama-shards");
    let options = PrepareOptions { shard_size: 4_000, max_docs: Some(40), workers: Some(2), tokenizer: (llama_dir.display().to_string(), tokenizer), ..Default::default() };
    fineweb::prepare_fineweb(&Source::Local(fixtures().join("data/fineweb_edu_sample.parquet")), &data, &options).unwrap();

    let mut llama = job(&data, &tmp.path().join("llama"));
    llama.lm.model = llama_dir.display().to_string();
    llama.lm.train.grad_accumulation = 1;
    llama.lm.train.run_steps = Some(12);
    llama.lm.train.optim.lr = 1e-2;
    llama.lm.train.checkpoint_every = None;
    llama.hellaswag_every = Some(12);
    llama.sample_every = None;
    let report = pretrain(&llama).unwrap();
    assert_eq!(report.steps, 12);
    let events = read_metrics(&llama.lm.run_dir.join("metrics.jsonl")).unwrap();
    let train: Vec<f64> = events.iter().filter(|e| e.split == "train").filter_map(|e| e.loss).collect();

    // The first batch: rows r of 33 tokens from token 32·r of the first training shard.
    let shard = TokenFile::open(&data.join(shard_file_name("edufineweb", 1))).unwrap();
    let (rows, t) = (4, 32);
    let window = |r: usize, shift: usize| shard.tokens(r * t + shift..r * t + shift + t).map(i64::from).collect::<Vec<_>>();
    let device = Device::flex();
    let inputs = Tensor::<2, Int>::from_data(TensorData::new((0..rows).flat_map(|r| window(r, 0)).collect(), [rows, t]), &device);
    let targets = Tensor::<2, Int>::from_data(TensorData::new((0..rows).flat_map(|r| window(r, 1)).collect(), [rows, t]), &device);
    let model = gpt::hf::load_llama_dir(&llama_dir, &device).unwrap();
    let loss = pipelines::train::cross_entropy_masked(model.forward(inputs), targets).into_scalar::<f32>() as f64;
    assert!((train[0] - loss).abs() <= 1e-4 * loss, "first training loss {} vs the model's own {loss}", train[0]);
    // (From 12.44 to a validation loss of 11.28 in these 12 steps; learning nothing stays near 12.4.)
    assert!(report.validation_loss < train[0] - 0.8, "validation loss {} after starting at {}", report.validation_loss, train[0]);
    let scored = events.iter().find(|e| e.split == "hellaswag").unwrap();
    assert_eq!(scored.extra["n"], 4, "HellaSwag scored with the model's tokenizer");

    // From scratch (random weights of the fixture's shape): the shards' tokenizer, whose files the
    // saved model gets.
    let mut scratch = job(&data, &tmp.path().join("scratch"));
    scratch.lm.model = "random:llama-tiny".into();
    scratch.lm.train.run_steps = Some(2);
    scratch.hellaswag_every = None;
    let report = pretrain(&scratch).unwrap();
    let saved = gpt::Tokenizer::from_model_dir(&report.model_dir).unwrap();
    assert_eq!(fineweb::tokenizer_fingerprint(&saved), fineweb::tokenizer_fingerprint(&gpt::Tokenizer::from_model_dir(&llama_dir).unwrap()));
    let first = read_metrics(&report.model_dir.parent().unwrap().join("metrics.jsonl")).unwrap().into_iter().find_map(|e| e.loss).unwrap();
    assert!((first - (128_256f64).ln()).abs() < 0.1, "a random model's first loss {first} is about ln(vocabulary)");

    // GPT-2's shards (no manifest: build-nanogpt's) for the Llama model, and the Llama shards for
    // GPT-2: refused, naming the command that makes the right ones.
    let gpt2_shards = tmp.path().join("gpt2-shards");
    std::fs::create_dir_all(&gpt2_shards).unwrap();
    write_shards(&gpt2_shards, &[600, 2945]);
    let mut wrong = job(&gpt2_shards, &tmp.path().join("wrong"));
    wrong.lm.model = llama_dir.display().to_string();
    let error = pretrain(&wrong).err().unwrap().to_string();
    assert!(error.contains("holds token ids of gpt2's tokenizer") && error.contains("llmfs prepare fineweb --tokenizer"), "{error}");
    let error = pretrain(&job(&data, &tmp.path().join("wrong2"))).err().unwrap().to_string();
    assert!(error.contains("llama-tiny's tokenizer") && error.contains("gpt2-tiny has another"), "{error}");
    assert!(!tmp.path().join("wrong").exists() && !tmp.path().join("wrong2").exists(), "nothing written for a refused run");
}
