//! Fine-tune GPT-2 to classify SMS messages as spam or ham (*Build a LLM From Scratch*, ch. 6),
//! with the book's settings, then classify two new messages.
//!
//!     cargo run --release --example finetune_spam [-- --model gpt2-medium] [--features cuda]
//!
//! Downloads the UCI SMS Spam Collection into data/spam and the model into the Hugging Face
//! cache, trains the last block + final norm + a new 2-class head for 5 epochs (burn-train's
//! dashboard in a terminal), reports train/validation/test accuracy, writes runs/spam-<time>/
//! (metrics.jsonl, plots/, model/ in the HF layout).

llmfs::gpt::use_mimalloc!();

use std::path::PathBuf;

use llmfs::gpt::{DeviceSpec, Trainable};
use llmfs::pipelines::data::spam::{DEFAULT_SEED, DEFAULT_URL, SPLIT_FILES, prepare_spam};
use llmfs::pipelines::eval::classifier::classify_texts;
use llmfs::pipelines::finetune::{ClassifierData, ClassifierFinetune, finetune_classifier};
use llmfs::pipelines::train::{OptimConfig, TrainConfig};

#[derive(clap::Parser)]
struct Args {
    /// The model to fine-tune (any --model)
    #[arg(long, default_value = "gpt2")]
    model: String,
}

fn main() -> anyhow::Result<()> {
    let Args { model } = clap::Parser::parse();
    let device = DeviceSpec::Auto.resolve()?;

    let data = PathBuf::from("data/spam");
    if !SPLIT_FILES.iter().all(|f| data.join(f).is_file()) {
        let report = prepare_spam(DEFAULT_URL, &data, DEFAULT_SEED)?;
        eprintln!("prepared {} / {} / {} messages in {}", report.train, report.validation, report.test, data.display());
    }

    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let job = ClassifierFinetune {
        model,
        data: ClassifierData::SpamSplits(data),
        run_dir: PathBuf::from(format!("runs/spam-{stamp}")),
        trainable: Trainable::LastBlock,
        lora: None,
        max_length: None,
        dropout: 0.0,
        prefix_cache: true,
        train: TrainConfig {
            epochs: 5,
            batch_size: 8,
            seed: 123,
            // torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1), as in the book.
            optim: OptimConfig { lr: 5e-5, weight_decay: 0.1, decay_all: true, ..OptimConfig::default() },
            eval_every: Some(50),
            eval_batches: 5,
            ..TrainConfig::default()
        },
        resume: false,
        dashboard: std::io::IsTerminal::is_terminal(&std::io::stdout()),
        device: device.clone(),
    };
    let report = finetune_classifier(&job)?;
    println!(
        "training accuracy {:.2}%, validation accuracy {:.2}%, test accuracy {:.2}% ({:.1} s)",
        100.0 * report.train_accuracy,
        100.0 * report.validation_accuracy,
        100.0 * report.test_accuracy,
        report.seconds
    );

    let (classifier, tokenizer) = llmfs::pipelines::runs::load_classifier(&report.model_dir, &device)?;
    let texts = [
        "You are a winner you have been specially selected to receive $1000 cash or a $2000 award.".to_string(),
        "Hey, just wanted to check if we're still on for dinner tonight? Let me know!".to_string(),
    ];
    for prediction in classify_texts(&classifier, &tokenizer, &texts, 8)? {
        println!("{} ({:.1}%): {}", prediction.label, 100.0 * prediction.probability, prediction.text);
    }
    println!("run directory: {}", job.run_dir.display());
    Ok(())
}
