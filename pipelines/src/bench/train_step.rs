//! Full training-step speed: forward, masked cross-entropy, backward and AdamW on every parameter
//! (random fp32 weights of any family's preset; GPT-2 with dropout 0.1 unless told, the Llama
//! family with its config's attention dropout, 0) on batches of `batch` rows of `seq_len` tokens —
//! by default B4×T256, the `train` case of `../shared/bench/torch_baseline` (what `llmfs pretrain`
//! and `llmfs finetune instruct` run each step). With dropout 0 attention runs Burn's fused kernel;
//! with attention dropout it materialises the T×T weights. `--trains last-block|lora:R` compares
//! partial and LoRA fine-tuning with full training; `--trains lora:R --quantize nf4` is QLoRA
//! (the projections' frozen weights as NF4, quantized one at a time as they are drawn). Run each
//! in its own process: `peak_rss_mib` is the process's (building the model included),
//! `steps_peak_rss_mib` that of the steps alone (freed memory given back and the peak reset once
//! the model is built).

use std::time::Instant;

use anyhow::Result;
use gpt::burn::optim::GradientsParams;
use gpt::burn::prelude::*;
use gpt::backend::DeviceSpec;
use gpt::models::{CausalLm, LanguageModel};
use gpt::io::WeightDtype;
use gpt::quant::{Nf4Options, QuantizeAtLoad, Quantized};
use serde_json::{Value, json};

use super::{median, peak_rss_mib, reset_peak_rss};
use crate::finetune::lora::base_dtype;
use crate::runs::QuantizeArgs;
use crate::train::{OptimConfig, Precision};
use crate::train::steps::{LanguageModelTraining, LmBatch};

/// The workload (`llmfs bench train-step` and `cargo bench --bench train_step` take these flags).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Timed steps (after 2 warm-up steps)
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Dropout probability of every dropout layer [default: GPT-2 0.1, as it trains; Llama family: its config's, 0]
    #[arg(long)]
    pub dropout: Option<f64>,
    /// What trains: all, last-block (+ final norm), lora:R (adapters on every projection)
    #[arg(long, default_value = "all")]
    pub trains: Trains,
    /// The matrix products' arithmetic: f32, bf16-mixed (bf16 inputs, f32 accumulation: the
    /// CPU's AVX512-BF16 kernels), or f16-mixed (f16 inputs, emulated; the loss scaled as
    /// torch.amp.GradScaler does)
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// `--quantize nf4 [--quantize-double]` with `--trains lora:R`: QLoRA
    #[command(flatten)]
    pub quantize: QuantizeArgs,
}

/// What a benchmarked step trains: `all`, `last-block` (+ final norm), or `lora:R` (adapters of
/// rank R, alpha R, on every projection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trains {
    All,
    LastBlock,
    Lora(usize),
}

impl std::str::FromStr for Trains {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "all" => Ok(Self::All),
            "last-block" => Ok(Self::LastBlock),
            _ => match s.strip_prefix("lora:").map(str::parse::<usize>) {
                Some(Ok(rank)) if rank > 0 => Ok(Self::Lora(rank)),
                _ => anyhow::bail!("unknown --trains {s:?}: expected all, last-block or lora:R (R >= 1)"),
            },
        }
    }
}

impl std::fmt::Display for Trains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => write!(f, "all"),
            Self::LastBlock => write!(f, "last-block"),
            Self::Lora(rank) => write!(f, "lora:{rank}"),
        }
    }
}

impl Trains {
    /// The adapters of `lora:R` (alpha = R, every projection), `None` for the others.
    fn lora(self) -> Result<Option<gpt::LoraConfig>> {
        match self {
            Self::Lora(rank) => Ok(Some(gpt::LoraConfig::new(rank, rank as f64, gpt::LoraTargets::default())?)),
            Self::All | Self::LastBlock => Ok(None),
        }
    }

    /// What to quantize while the model is drawn: with `nf4` (QLoRA) the adapters' projections,
    /// which only LoRA can train on.
    fn quantize_at_load(self, nf4: Option<Nf4Options>) -> Result<Option<QuantizeAtLoad>> {
        match (nf4, self.lora()?) {
            (None, _) => Ok(None),
            (Some(nf4), Some(lora)) => Ok(Some(lora.quantize_at_load(nf4))),
            (Some(_), None) => anyhow::bail!("--quantize needs --trains lora:R (QLoRA): quantized weights stay frozen, only LoRA adapters train on them"),
        }
    }

    /// `model` set up to train as `self` says (QLoRA's adapters where its projections were
    /// quantized at load).
    fn apply(self, model: Quantized<LanguageModel>, nf4: Option<Nf4Options>) -> Result<LanguageModel> {
        Ok(match (self, self.lora()?) {
            (_, Some(lora)) => match nf4 {
                Some(nf4) => lora.apply_quantized_to(model, 0, nf4)?,
                None => lora.apply_to(model.attach()?, 0)?,
            },
            (Self::All, None) => model.attach()?,
            // The last block and the final norm train; embeddings (and a Llama's untied head) do not.
            (_, None) => {
                let model = model.attach()?;
                let last = model.num_blocks() - 1;
                model.set_trainable(last, false, true)
            }
        })
    }
}

/// `preset`: the model shape (`gpt2` = 124M, `smollm2-135m` ...).
pub fn run(spec: DeviceSpec, preset: &str, options: &Options) -> Result<Value> {
    let Options { batch, seq_len, steps, dropout, trains, precision, quantize } = options.clone();
    let nf4 = quantize.nf4()?;
    let device = spec.resolve()?.autodiff();
    let products = precision.apply(&device)?;
    device.seed(0);
    let at_load = trains.quantize_at_load(nf4)?;
    let dtype = if matches!(trains, Trains::Lora(_)) { base_dtype(precision) } else { WeightDtype::F32 };
    let base = gpt::hf::load_language_model_quantized(&format!("random:{preset}"), &device, 0, dtype, at_load.as_ref())?;
    let dropout = dropout.unwrap_or(if base.model().as_gpt2().is_some() { 0.1 } else { 0.0 });
    let base = base.map(|model| model.with_dropout(dropout));
    // A shape with a shorter context (tiny) trains on windows as long as it has.
    let (seq_len, vocab) = (seq_len.min(base.model().context_length()), base.model().vocab_size());
    let lm = trains.apply(base, nf4)?;
    // What the steps hold (the model as it trains), without what building it freed.
    let load_peak = reset_peak_rss();
    // The same tokens and dropout masks whatever trains: the first loss is then the same for
    // every --trains (fresh adapters change nothing).
    device.seed(1);
    let (trainable, params) = gpt::io::parameter_counts(&lm);
    let mut model = LanguageModelTraining { model: lm, grad_clip: None };
    // torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1), as the baseline.
    let mut optimizer = OptimConfig { decay_all: true, ..OptimConfig::default() }.optimizer();
    let tokens = Tensor::<2, Int>::random([batch, seq_len + 1], gpt::burn::tensor::Distribution::Uniform(0.0, (vocab - 1) as f64), &device);
    let lm_batch = LmBatch { inputs: tokens.clone().slice([0..batch, 0..seq_len]), targets: tokens.slice([0..batch, 1..seq_len + 1]) };
    let forward = time_forward(&model.model, &lm_batch.inputs);

    // f16-mixed's loop as torch's with a GradScaler: scale, backward, unscale, step unless an
    // inf turned up, update.
    let mut scaler = precision.loss_scaler();
    let mut skipped = 0;
    let (mut times, mut losses) = (Vec::new(), Vec::new());
    for i in 0..steps + 2 {
        let start = Instant::now();
        let out = model.forward_batch(lm_batch.clone());
        let scaled = match &scaler {
            Some(scaler) => out.loss.clone().mul_scalar(scaler.scale()),
            None => out.loss.clone(),
        };
        let grads = GradientsParams::from_grads(scaled.backward(), &model);
        let grads = match &mut scaler {
            Some(scaler) => {
                let (grads, finite) = scaler.unscale(&model, grads);
                scaler.update(!finite);
                finite.then_some(grads)
            }
            None => Some(grads),
        };
        match grads {
            Some(grads) => model = optimizer.step(5e-5, model, grads),
            None => skipped += 1,
        }
        // Reading the loss waits for the step to finish (GPU backends run asynchronously).
        losses.push(out.loss.into_scalar::<f32>() as f64);
        if i >= 2 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    let step = median(times.clone());
    let forward_s = median(forward.clone());
    Ok(json!({
        "bench": super::bench_name("train", preset), "preset": preset, "backend": spec.to_string(), "threads": rayon::current_num_threads(),
        "batch": batch, "seq_len": seq_len, "n_params": params, "trainable_params": trainable, "trains": trains.to_string(), "dropout": dropout,
        "precision": precision.to_string(), "matmul": products.path(), "quantize": quantize.describe(),
        "loss_scale": scaler.as_ref().map(|s| s.scale()), "skipped_steps": skipped,
        "step": { "median_s": step, "all_s": times },
        "tokens_per_s": (batch * seq_len) as f64 / step,
        "forward": { "median_s": forward_s, "all_s": forward, "tokens_per_s": (batch * seq_len) as f64 / forward_s },
        "losses": losses, "peak_rss_mib": load_peak.map_or(peak_rss_mib(), |load| peak_rss_mib().map(|steps| steps.max(load))),
        "steps_peak_rss_mib": load_peak.and(peak_rss_mib()),
    }))
}

/// Seconds of an inference forward pass to the logits (no autodiff graph, dropout off) over
/// `inputs`, 3 timed after 1 untimed; the inference copy shares the weights.
fn time_forward(model: &LanguageModel, inputs: &Tensor<2, Int>) -> Vec<f64> {
    let model = model.valid();
    let inputs = Tensor::<2, Int>::from_data(inputs.clone().into_data(), &model.device());
    let mut times = Vec::new();
    for i in 0..4 {
        let start = Instant::now();
        // Reading a sum waits for all the logits (GPU backends run asynchronously).
        let _ = model.logits(inputs.clone()).sum().into_scalar::<f32>();
        if i >= 1 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times
}
