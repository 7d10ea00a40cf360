//! QLoRA fine-tuning (`--lora-rank R --quantize nf4 [--quantize-double]`) of the tiny Llama
//! fixture end to end: it lowers the loss as f32 LoRA does (and both follow f32 under bf16-mixed,
//! with the frozen base in bf16), a stopped run resumes bit for bit
//! (the checkpoints hold the adapters; the quantized base is rebuilt from the model), the saved
//! adapters load and `--merge` writes the dequantized base plus the adapters (the logits of the
//! unmerged QLoRA model), a classifier trains, and the flags' misuses are clear errors.

use std::path::{Path, PathBuf};

use gpt::burn::prelude::*;
use gpt::models::CausalLm;
use gpt::quant::Nf4Options;
use serde_json::Value;

use crate::common::*;

fn llama_tiny() -> PathBuf {
    fixtures().join("llama-tiny")
}

/// `finetune instruct` with LoRA of rank 4 on every projection of the tiny Llama: the 60 fixture
/// records (51 train), batches of 5, 3 epochs = 30 steps, two threads.
fn finetune(home: &Path, run_dir: &Path, flags: &[&str]) -> std::process::Output {
    run(llmfs(home)
        .args(["finetune", "instruct", "--batch-size", "5", "--epochs", "3", "--lr", "1e-2", "--eval-every", "100", "--eval-batches", "1"])
        .args(["--sample-tokens", "2", "--lora-rank", "4", "--lora-targets", "all", "--json", "--plain", "--device", "cpu", "--threads", "2"])
        .args(flags)
        .arg("--model")
        .arg(llama_tiny())
        .arg("--data")
        .arg(fixtures().join("data/instruction_data_60.json"))
        .arg("--run-dir")
        .arg(run_dir))
}

fn train_losses(run_dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["split"] == "train")
        .map(|e| (e["step"].as_u64().unwrap(), e["loss"].as_f64().unwrap()))
        .collect()
}

fn run_json(run_dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(run_dir.join("run.json")).unwrap()).unwrap()
}

#[test]
fn qlora_lowers_the_loss_as_f32_lora_does() {
    let home = tempfile::tempdir().unwrap();
    let (lora, qlora) = (home.path().join("lora"), home.path().join("qlora"));
    let out = finetune(home.path(), &lora, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = finetune(home.path(), &qlora, &["--quantize", "nf4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    // The same adapters train (2 layers × 2,432, see llama_training.rs); the NF4 weights count.
    assert!(err.contains("LoRA r=4 alpha=4 on q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj (QLoRA: NF4 base): 4864 of 8237984 parameters train"), "{err}");
    assert_eq!(last_json(&out)["trainable_parameters"], 4_864);
    assert_eq!(run_json(&qlora)["config"]["lora"]["quantize"], "nf4");
    assert_eq!(run_json(&lora)["config"]["lora"]["quantize"], Value::Null);

    let (f32_losses, nf4_losses) = (train_losses(&lora), train_losses(&qlora));
    assert_eq!((f32_losses.len(), nf4_losses.len()), (30, 30));
    let (first, last) = (|l: &[(u64, f64)]| l[0].1, |l: &[(u64, f64)]| l[29].1);
    for (name, losses) in [("LoRA", &f32_losses), ("QLoRA", &nf4_losses)] {
        let (first, last) = (first(losses), last(losses));
        eprintln!("{name}: training loss {first:.4} → {last:.4}");
        // Measured on 2026-12-07: LoRA 12.4336 → 9.4950, QLoRA 12.4916 → 9.4926.
        assert!(first > 12.0 && last < first - 2.5, "{name}: the loss fell by less than 2.5: {losses:?}");
    }
    // The quantized base starts elsewhere (the fixture's random weights are far from normal, so NF4
    // moves them a lot), and ends where LoRA does: measured 0.0024 apart after 30 steps; allowed 0.1
    // (about 1 % of the loss, a fortieth of what both runs learn).
    assert_ne!(first(&f32_losses), first(&nf4_losses), "the base is quantized");
    let gap = (last(&f32_losses) - last(&nf4_losses)).abs();
    eprintln!("final losses {gap:.4} apart");
    assert!(gap < 0.1, "QLoRA's final loss {} vs LoRA's {}", last(&nf4_losses), last(&f32_losses));

    // Under bf16-mixed the NF4 products run on the bf16 GEMM (the dequantized panels rounded to
    // bf16, as bitsandbytes' bf16 compute dtype does; f32 on a CPU without AVX512-BF16): every
    // step's loss within 2 % of the f32 QLoRA run's, as the bf16 issue asks of training.
    let bf16 = home.path().join("qlora-bf16");
    let out = finetune(home.path(), &bf16, &["--quantize", "nf4", "--precision", "bf16-mixed"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bf16_losses = train_losses(&bf16);
    assert_eq!(bf16_losses.len(), 30);
    for ((step, x), (_, y)) in nf4_losses.iter().zip(&bf16_losses) {
        assert!((x - y).abs() <= 0.02 * x.abs(), "step {step}: bf16-mixed QLoRA loss {y} vs f32 QLoRA {x}");
    }
    // Plain LoRA under bf16-mixed keeps its frozen base in bf16 (the products round it to bf16
    // anyway): the same 2 % of f32 LoRA at every step.
    let lora_bf16 = home.path().join("lora-bf16");
    let out = finetune(home.path(), &lora_bf16, &["--precision", "bf16-mixed"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("LoRA r=4 alpha=4 on q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj, the frozen base in bf16: 4864 of"), "{}", stderr(&out));
    let lora_bf16_losses = train_losses(&lora_bf16);
    assert_eq!(lora_bf16_losses.len(), 30);
    for ((step, x), (_, y)) in f32_losses.iter().zip(&lora_bf16_losses) {
        assert!((x - y).abs() <= 0.02 * x.abs(), "step {step}: bf16-mixed LoRA loss {y} vs f32 LoRA {x}");
    }
}

/// `llama-tiny` as transformers saved it with bitsandbytes 4-bit weights (`variant`: `single` or
/// `double`), in `dir`: the fixture's other tensors and tokenizer, the quantized ones of
/// `tests/fixtures/bnb4` (see gpt's `bnb_checkpoint` tests, which check the reading bit for bit).
fn bnb_checkpoint(variant: &str, dir: &Path) -> PathBuf {
    let reference = fixtures().join("bnb4").join(variant);
    let (base, quantized) = (std::fs::read(llama_tiny().join("model.safetensors")).unwrap(), std::fs::read(reference.join("quantized.safetensors")).unwrap());
    let (base, quantized) = (safetensors::SafeTensors::deserialize(&base).unwrap(), safetensors::SafeTensors::deserialize(&quantized).unwrap());
    let replaced: Vec<String> = quantized.names().into_iter().map(str::to_string).collect();
    let mut tensors: Vec<_> = base.tensors().into_iter().filter(|(name, _)| !replaced.contains(name)).collect();
    tensors.extend(quantized.tensors());
    let out = dir.join(format!("llama-tiny-bnb-4bit-{variant}"));
    std::fs::create_dir_all(&out).unwrap();
    safetensors::serialize_to_file(tensors, None, &out.join("model.safetensors")).unwrap();
    std::fs::copy(reference.join("config.json"), out.join("config.json")).unwrap();
    for file in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        std::fs::copy(llama_tiny().join(file), out.join(file)).unwrap();
    }
    out
}

/// LoRA on a bitsandbytes 4-bit checkpoint is QLoRA on its stored NF4 weights. They are the
/// bytes `--quantize nf4` makes of the unquantized model (bitsandbytes' quantization, bit for
/// bit), so the run is that run: the same losses, the same adapters. Full fine-tuning is refused.
#[test]
fn lora_on_a_bitsandbytes_checkpoint_is_qlora_on_its_stored_weights() {
    let home = tempfile::tempdir().unwrap();
    let checkpoint = bnb_checkpoint("single", home.path());
    let (on_checkpoint, quantized_here) = (home.path().join("on-checkpoint"), home.path().join("quantized-here"));
    let out = run(llmfs(home.path())
        .args(["finetune", "instruct", "--batch-size", "5", "--epochs", "3", "--lr", "1e-2", "--eval-every", "100", "--eval-batches", "1"])
        .args(["--sample-tokens", "2", "--lora-rank", "4", "--lora-targets", "all", "--json", "--plain", "--device", "cpu", "--threads", "2"])
        .arg("--model")
        .arg(&checkpoint)
        .arg("--data")
        .arg(fixtures().join("data/instruction_data_60.json"))
        .arg("--run-dir")
        .arg(&on_checkpoint));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(last_json(&out)["trainable_parameters"], 4_864);
    let out = finetune(home.path(), &quantized_here, &["--quantize", "nf4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let losses = train_losses(&on_checkpoint);
    assert_eq!(losses.len(), 30);
    assert!(losses[29].1 < losses[0].1 - 2.5, "the loss fell by less than 2.5: {losses:?}");
    assert_eq!(losses, train_losses(&quantized_here));
    let adapters = |run_dir: &Path| std::fs::read(run_dir.join("adapter/adapter_model.safetensors")).unwrap();
    assert!(adapters(&on_checkpoint) == adapters(&quantized_here), "the adapters differ");

    let out = run(llmfs(home.path()).args(["finetune", "instruct", "--epochs", "1", "--plain", "--device", "cpu", "--model"]).arg(&checkpoint).arg("--data").arg(fixtures().join("data/instruction_data_60.json")).arg("--run-dir").arg(home.path().join("full")));
    assert!(!out.status.success() && stderr(&out).contains("stored 4-bit"), "{}", stderr(&out));
}

/// A QLoRA run stopped at step 15 and resumed ends with the adapters and loss curve of the run
/// that was not stopped, bit for bit: the checkpoint holds the adapters and AdamW's state, and
/// the resumed run quantizes the same base to the same NF4 bytes before loading it.
#[test]
fn a_stopped_qlora_run_resumes_bit_identically() {
    let home = tempfile::tempdir().unwrap();
    let (whole, stopped) = (home.path().join("whole"), home.path().join("stopped"));
    let flags = ["--quantize", "nf4", "--quantize-double"];
    let out = finetune(home.path(), &whole, &flags);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = finetune(home.path(), &stopped, &[&flags[..], &["--max-steps", "15"]].concat());
    assert!(!out.status.success() && stderr(&out).contains("--resume"), "{}", stderr(&out));
    assert_eq!(train_losses(&stopped).len(), 15);
    let out = finetune(home.path(), &stopped, &[&flags[..], &["--resume"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(run_json(&stopped)["config"]["lora"]["quantize"], "nf4-double");

    let adapters = |run_dir: &Path| std::fs::read(run_dir.join("adapter/adapter_model.safetensors")).unwrap();
    assert!(adapters(&stopped) == adapters(&whole), "the resumed run's adapters differ from the uninterrupted run's");
    let (resumed, uninterrupted) = (train_losses(&stopped), train_losses(&whole));
    assert_eq!(resumed.len(), 30);
    assert_eq!(resumed, uninterrupted);
}

/// Logits `[1, T, V]` of `model` for `ids`, as `llmfs logits` computes them.
fn library_logits(model: &dyn CausalLm, ids: &[i64], device: &Device) -> Vec<f32> {
    let input = Tensor::<2, Int>::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), device);
    model.logits(input).into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

/// The saved adapters (PEFT's layout, against the original base) load, and `--merge` writes a
/// plain model whose logits are the unmerged QLoRA model's: the base quantized as in training,
/// the saved adapters on it.
#[test]
fn qlora_adapters_load_and_merge_into_the_dequantized_base() {
    let home = tempfile::tempdir().unwrap();
    let run_dir = home.path().join("qlora");
    let out = finetune(home.path(), &run_dir, &["--quantize", "nf4", "--quantize-double", "--merge"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let adapter = run_dir.join("adapter");
    let config: Value = serde_json::from_slice(&std::fs::read(adapter.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["base_model_name_or_path"], std::fs::canonicalize(llama_tiny()).unwrap().display().to_string());
    assert_eq!(config["r"], 4);

    let ids = "128000,11769,5149,11031,499";
    let id_values: Vec<i64> = ids.split(',').map(|s| s.parse().unwrap()).collect();
    let merged = logits(home.path(), &run_dir.join("model"), ids, &home.path().join("merged.safetensors"));
    let on_f32_base = logits(home.path(), &adapter, ids, &home.path().join("adapter.safetensors"));
    let base = logits(home.path(), &llama_tiny(), ids, &home.path().join("base.safetensors"));
    assert!(on_f32_base.iter().all(|v| v.is_finite()));
    assert!(max_abs_diff(&on_f32_base, &base) > 1e-3, "the adapters change the f32 base's logits");

    // The unmerged QLoRA model through the library: the base quantized as the run did, the
    // saved factors filled in.
    let device = Device::flex();
    let model = gpt::hf::load_language_model_dir(&llama_tiny(), &device).unwrap();
    let mut source = gpt::lora::AdapterSource::open(&adapter).unwrap();
    let qlora = source.config.lora().unwrap().apply_quantized_to(gpt::quant::Quantized::plain(model), 0, Nf4Options { double_quant: true }).unwrap();
    let qlora = gpt::io::fill_params_matching(qlora, &mut source, |name| name.contains(".weight.lora.")).unwrap();
    source.finish().unwrap();
    let unmerged = library_logits(&qlora, &id_values, &device);
    let scale = unmerged.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
    let diff = max_abs_diff(&merged, &unmerged);
    eprintln!("merged vs unmerged QLoRA logits: {diff:e} (|logits| ≤ {scale:.3})");
    assert!(diff <= 1e-5 * scale, "merged vs unmerged QLoRA: {diff}");
    assert!(max_abs_diff(&merged, &on_f32_base) > 1e-3, "the merged base is the dequantized one, not the f32 one");

    // The merged model is a plain checkpoint: the base's tensors and shapes (in f32; the fixture
    // is bf16), nothing quantized, no adapter.
    let tensors = |dir: &Path| {
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut names: Vec<(String, Vec<usize>, String)> = st.tensors().into_iter().map(|(n, t)| (n, t.shape().to_vec(), format!("{:?}", t.dtype()))).collect();
        names.sort();
        names
    };
    let (merged_tensors, base_tensors) = (tensors(&run_dir.join("model")), tensors(&llama_tiny()));
    assert!(merged_tensors.iter().all(|(_, _, dtype)| dtype == "F32"), "{merged_tensors:?}");
    let shapes = |t: &[(String, Vec<usize>, String)]| t.iter().map(|(n, s, _)| (n.clone(), s.clone())).collect::<Vec<_>>();
    assert_eq!(shapes(&merged_tensors), shapes(&base_tensors));
}

/// The spam task's preparation of the fixture collection: 112 train / 16 validation / 32 test.
fn spam_splits(dir: &Path) -> PathBuf {
    let splits = dir.join("spam");
    pipelines::data::spam::prepare_spam(fixtures().join("data/sms_spam_collection.zip").to_str().unwrap(), &splits, 123).unwrap();
    splits
}

#[test]
fn qlora_fine_tunes_a_classifier() {
    let home = tempfile::tempdir().unwrap();
    let data = spam_splits(home.path());
    let run_dir = home.path().join("cls");
    let out = run(llmfs(home.path())
        .args(["finetune", "spam", "--epochs", "8", "--max-length", "24", "--lr", "1e-2", "--json", "--plain", "--device", "cpu"])
        .args(["--lora-rank", "4", "--quantize", "nf4", "--merge", "--model"])
        .arg(llama_tiny())
        .arg("--data")
        .arg(&data)
        .arg("--run-dir")
        .arg(&run_dir));
    assert!(out.status.success(), "{}", stderr(&out));
    let report = last_json(&out);
    // Rank 4 on every projection of both layers (2 × 2,432) and the head (2 × 32).
    assert_eq!(report["trainable_parameters"], 2 * 2_432 + 64);
    let accuracy: Value = serde_json::from_slice(&std::fs::read(run_dir.join("eval/accuracy.json")).unwrap()).unwrap();
    let score = |split: &str| accuracy[format!("{split}_accuracy")].as_f64().unwrap();
    // Measured on 2026-12-07: train 1.0, validation 0.5625, test 0.71875 (f32 LoRA: 1.0, 0.5625,
    // 0.75): the random tiny model learns its 112 texts and does better than chance on the 32 held out.
    eprintln!("QLoRA classifier: train {}, validation {}, test {}", score("train"), score("validation"), score("test"));
    assert!(score("train") >= 0.95, "{accuracy}");
    assert!(score("test") > 0.6 && score("test") <= 1.0, "{accuracy}");
    assert!(accuracy["train_loss"].as_f64().unwrap() < 0.1, "{accuracy}");
    assert_eq!(run_json(&run_dir)["config"]["lora"]["quantize"], "nf4");

    // The merged classifier scores the test split as the trained QLoRA model did.
    let out = run(llmfs(home.path()).args(["eval", "spam", "--json", "--device", "cpu", "--model"]).arg(run_dir.join("model")).arg("--data").arg(&data));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(last_json(&out)["accuracy"].as_f64(), Some(score("test")));
    // The adapters classify on the f32 base.
    let out = run(llmfs(home.path()).args(["classify", "--json", "--device", "cpu", "--text", "WINNER! Claim your prize", "--model"]).arg(run_dir.join("adapter")));
    assert!(out.status.success() && stdout(&out).contains("\"label\""), "{}", stderr(&out));
}

#[test]
fn quantize_without_lora_is_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let data = spam_splits(home.path());
    let cases: [(&[&str], &str); 4] = [
        (&["--quantize", "nf4"], "--quantize needs --lora-rank (QLoRA)"),
        (&["--quantize-double"], "--quantize-double needs --quantize nf4"),
        (&["--lora-rank", "4", "--quantize-double"], "--quantize-double needs --quantize nf4"),
        (&["--lora-rank", "4", "--quantize", "nf8"], "possible values: nf4"),
    ];
    for (flags, message) in cases {
        for task in ["instruct", "spam"] {
            let run_dir = home.path().join("never");
            let mut cmd = llmfs(home.path());
            cmd.args(["finetune", task, "--device", "cpu", "--model"]).arg(llama_tiny()).args(flags).arg("--run-dir").arg(&run_dir);
            if task == "spam" {
                cmd.arg("--data").arg(&data);
            }
            let out = run(&mut cmd);
            assert!(!out.status.success() && stderr(&out).contains(message), "{task} {flags:?}: {}", stderr(&out));
            assert!(!run_dir.exists(), "{task} {flags:?}: nothing is written");
        }
    }
    let out = run(llmfs(home.path()).args(["bench", "train-step", "--preset", "tiny", "--steps", "1", "--quantize", "nf4"]));
    assert!(!out.status.success() && stderr(&out).contains("--quantize needs --trains lora:R"), "{}", stderr(&out));
}

/// `bench train-step --trains lora:R --quantize nf4`: QLoRA's steps, said so in the JSON, with
/// the steps' own peak memory beside the process's.
#[test]
fn bench_train_step_times_qlora() {
    let home = tempfile::tempdir().unwrap();
    let out = run(llmfs(home.path()).args(["bench", "train-step", "--preset", "tiny", "--steps", "1", "--batch", "1", "--seq-len", "16"]).args([
        "--trains",
        "lora:2",
        "--quantize",
        "nf4",
        "--quantize-double",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let json = last_json(&out);
    assert_eq!((json["quantize"].as_str(), json["trains"].as_str()), (Some("nf4-double"), Some("lora:2")));
    let losses: Vec<f64> = serde_json::from_value(json["losses"].clone()).unwrap();
    assert!(losses.len() == 3 && losses.iter().all(|l| l.is_finite()), "{json}");
    let (process, steps) = (json["peak_rss_mib"].as_f64().unwrap(), json["steps_peak_rss_mib"].as_f64().unwrap());
    assert!(steps > 0.0 && steps <= process, "{json}");
}

/// Data-parallel QLoRA: two ranks with micro-batches of 4 train as one process accumulating two
/// batches of 4 (each rank quantizes the same base; only the adapters' gradients are averaged).
/// Measured on 2026-12-07: the same losses and adapters, bit for bit.
#[cfg(feature = "mpi")]
#[test]
fn two_ranks_train_qlora_as_one_process_accumulating_their_batches() {
    if std::process::Command::new("mpirun").arg("--version").output().is_err() {
        eprintln!("note: no mpirun (bash scripts/setup-mpi.sh installs Open MPI); the data-parallel QLoRA test skips");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let (single, ddp) = (home.path().join("single"), home.path().join("ddp"));
    let finetune = |ranks: usize, run_dir: &Path, extra: &[&str]| {
        let mut cmd = match ranks {
            1 => llmfs(home.path()),
            _ => {
                let mut cmd = std::process::Command::new("mpirun");
                cmd.args(["-np", &ranks.to_string(), "--oversubscribe"]).arg(env!("CARGO_BIN_EXE_llmfs"));
                cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1").env("HF_HOME", home.path());
                cmd
            }
        };
        cmd.args(["finetune", "instruct", "--epochs", "1", "--batch-size", "4", "--lr", "1e-2", "--dropout", "0", "--eval-every", "100"])
            .args(["--sample-tokens", "2", "--plain", "--json", "--device", "cpu", "--threads", "1", "--lora-rank", "4", "--lora-targets", "all"])
            .args(["--quantize", "nf4", "--model"])
            .arg(llama_tiny())
            .arg("--data")
            .arg(fixtures().join("data/instruction_data_60.json"))
            .arg("--run-dir")
            .arg(run_dir)
            .args(extra);
        run(&mut cmd)
    };
    let out = finetune(1, &single, &["--grad-accumulation", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = finetune(2, &ddp, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (a, b) = (train_losses(&single), train_losses(&ddp));
    assert_eq!((a.len(), b.len()), (12, 6), "51 records: 12 micro-batches of 4, 6 steps of 8 either way");
    for (pair, (_, y)) in a.chunks(2).zip(&b) {
        let x = (pair[0].1 + pair[1].1) / 2.0;
        assert!((x - y).abs() <= 1e-5 * x.abs(), "step loss {y} on 2 ranks vs {x} accumulated in one process");
    }
    let adapters = |run_dir: &Path| std::fs::read(run_dir.join("adapter/adapter_model.safetensors")).unwrap();
    let (x, y) = (adapters(&single), adapters(&ddp));
    let (x, y) = (safetensors::SafeTensors::deserialize(&x).unwrap(), safetensors::SafeTensors::deserialize(&y).unwrap());
    let floats = |t: safetensors::tensor::TensorView| t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<f32>>();
    let worst = x.tensors().into_iter().map(|(name, t)| max_abs_diff(&floats(t), &floats(y.tensor(&name).unwrap()))).fold(0.0, f32::max);
    eprintln!("largest adapter difference after 6 QLoRA steps: {worst:e}");
    assert!(worst <= 1e-4, "adapters differ by up to {worst}");
}
