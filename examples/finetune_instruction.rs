//! Instruction fine-tuning as in *Build a LLM From Scratch*, ch. 7, end to end: the book's 1,100
//! Alpaca-style records, GPT-2 medium fine-tuned for 2 epochs, its responses to the 110 test
//! instructions, and their scores from a local LLM judge (Ollama + llama3.1) when one is running.
//!
//!     cargo run --release --example finetune_instruction [-- --model gpt2 --epochs 1] [--features cuda]
//!     cargo run --release --example finetune_instruction -- --model tests/fixtures/gpt2-tiny \
//!         --data tests/fixtures/data/instruction_data_60.json       # offline, in seconds
//!
//! Writes runs/instruct-<time>/ (metrics.jsonl, samples.jsonl, data/, model/, test_responses.json,
//! eval/judge.json). The book reaches a validation loss of ~0.66 and a judge score of ~50/100.

llmfs::gpt::use_mimalloc!();

use std::path::PathBuf;

use llmfs::gpt::DeviceSpec;
use llmfs::gpt::generate::GenerateConfig;
use llmfs::gpt::hf::load_model_dir;
use llmfs::pipelines::data::instruction::{CollateConfig, DEFAULT_ALLOWED_MAX_LENGTH, DEFAULT_CACHE_DIR, DEFAULT_URL, read_splits};
use llmfs::pipelines::eval::judge::{JudgeConfig, JudgeError, JudgeKind, judge_responses, write_report};
use llmfs::pipelines::eval::responses::{DEFAULT_MAX_NEW_TOKENS, RESPONSES_FILE, generate_responses, write_responses};
use llmfs::pipelines::finetune::{InstructionFinetune, LanguageModelJob, finetune_instruction};
use llmfs::pipelines::train::{OptimConfig, TrainConfig};

#[derive(clap::Parser)]
struct Args {
    /// The model to fine-tune (any --model)
    #[arg(long, default_value = "gpt2-medium")]
    model: String,
    /// Alpaca-style JSON: a URL or a file
    #[arg(long, default_value = DEFAULT_URL)]
    data: String,
    #[arg(long, default_value_t = 2)]
    epochs: usize,
}

fn main() -> anyhow::Result<()> {
    let Args { model, data, epochs } = clap::Parser::parse();
    let device = DeviceSpec::Auto.resolve()?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let run_dir = PathBuf::from(format!("runs/instruct-{stamp}"));

    // 1. Fine-tune: the book's AdamW(lr=5e-5, weight_decay=0.1), batches of 8, evaluation every 5 steps.
    let job = InstructionFinetune {
        lm: LanguageModelJob {
            task: "instruction".into(),
            model,
            run_dir: run_dir.clone(),
            dropout: Some(0.0),
            lora: None,
            train: TrainConfig {
                epochs,
                batch_size: 8,
                optim: OptimConfig { lr: 5e-5, weight_decay: 0.1, decay_all: true, ..OptimConfig::default() },
                eval_every: Some(5),
                eval_batches: 5,
                full_validation: false,
                ..TrainConfig::default()
            },
            resume: false,
            dashboard: std::io::IsTerminal::is_terminal(&std::io::stdout()),
            device: device.clone(),
            details: serde_json::Value::Null,
        },
        data,
        cache_dir: PathBuf::from(DEFAULT_CACHE_DIR),
        shuffle: false,
        collate: CollateConfig { mask_prompt: false, allowed_max_length: Some(DEFAULT_ALLOWED_MAX_LENGTH) },
        train_on_assistant: None,
        chat_template: None,
        group_by_length: false,
        sample_tokens: DEFAULT_MAX_NEW_TOKENS,
        eval_tasks: Default::default(),
    };
    let report = finetune_instruction(&job)?;
    println!("validation loss {:.3} after {} steps ({:.0} s)", report.validation_loss, report.steps, report.seconds);

    // 2. Greedy responses to the test split the run kept, 8 prompts at a time with the KV cache.
    let model = load_model_dir(&report.model_dir, &device)?;
    let test = read_splits(&run_dir.join("data"))?.test;
    // 256 new tokens as the book; a small model (the fixture's 128 positions) gets half its context.
    let max_new_tokens = DEFAULT_MAX_NEW_TOKENS.min(model.config().n_positions / 2);
    let responses = generate_responses(&model, &test, &GenerateConfig::greedy(max_new_tokens), 8, |done, total| {
        eprint!("\rresponses {done}/{total}");
    })?;
    eprintln!();
    let responses_file = run_dir.join(RESPONSES_FILE);
    write_responses(&responses_file, &responses)?;
    if let Some(first) = responses.first() {
        println!("{}\n  expected: {}\n  model:    {}", first.instruction, first.output, first.model_response);
    }

    // 3. The judge: Ollama on localhost, if it runs.
    match judge_responses(&responses, &JudgeConfig::new(JudgeKind::Ollama), |_, _| {}) {
        Ok(mut judged) => {
            judged.responses = Some(responses_file);
            write_report(&run_dir.join("eval/judge.json"), &judged)?;
            let mean = judged.mean_score.map_or("-".into(), |m| format!("{m:.1}"));
            println!("judge score {mean}/100 ({} scored, {} unparseable)", judged.scored, judged.unparseable);
        }
        Err(error @ JudgeError::NotRunning { .. }) => println!("no judge: {error}"),
        Err(error) => return Err(error.into()),
    }
    println!("run directory: {}", run_dir.display());
    Ok(())
}
