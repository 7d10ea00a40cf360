//! `llmfs export --model M --out DIR`: a language model (a run, a checkpoint directory, any model
//! `--model` takes) as a Hugging Face directory that `AutoModelForCausalLM.from_pretrained(DIR)`
//! and `AutoTokenizer.from_pretrained(DIR)` load: config.json, model.safetensors,
//! generation_config.json and the tokenizer files (GPT-2's, made from the compiled-in BPE; a
//! Llama-family model's own, copied from where it was loaded). A Llama-family classifier run
//! exports as the family's `*ForSequenceClassification` (`AutoModelForSequenceClassification`
//! loads it, LoRA adapters folded in); a GPT-2 classifier cannot (its head differs).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use gpt::Classifier;
use gpt::hf::{copy_model_tokenizer, save_classifier_dir, save_language_model_dir};
use gpt::models::{CausalLm, LanguageModel};
use gpt::text::files::HfTokenizerFiles;
use pipelines::runs::ModelRef;

use crate::runtime::RuntimeArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run directory, an HF-format directory, a preset/hub id or random:<preset>
    #[arg(long)]
    pub model: String,
    /// The directory to write (it must not exist, or be empty, unless --force)
    #[arg(long)]
    pub out: PathBuf,
    /// Replace what is in --out
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn run(args: Args) -> Result<()> {
    check_out_dir(&args.out, args.force)?;
    let model = ModelRef::resolve(&args.model);
    let device = args.runtime.device()?;
    let spec = model.spec()?;
    // Everything goes to a sibling directory first and is renamed into place at the end: an
    // interrupted export leaves no directory that looks complete.
    let staging = sibling(&args.out, ".partial");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    let (what, parameters) = if model.is_classifier()? {
        let classifier = model.load_classifier(&device)?;
        refuse_gpt2_classifier(&classifier, &args.model)?;
        save_classifier_dir(&classifier, &staging).with_context(|| format!("writing the classifier to {}", staging.display()))?;
        let family = classifier.model.architecture().trim_end_matches("ForCausalLM").to_string();
        let architecture = format!("{family}ForSequenceClassification, {} classes", classifier.labels().len());
        write_tokenizer(&classifier.model, &spec, &staging)?;
        (architecture, gpt::io::parameter_counts(&classifier).1)
    } else {
        let model = model.load_language_model(&device, args.runtime.seed).with_context(|| format!("loading {}", args.model))?;
        save_language_model_dir(&model, &staging).with_context(|| format!("writing the model to {}", staging.display()))?;
        write_tokenizer(&model, &spec, &staging)?;
        (model.architecture().to_string(), gpt::io::parameter_counts(&model).1)
    };
    if args.out.exists() {
        std::fs::remove_dir_all(&args.out).with_context(|| format!("replacing {}", args.out.display()))?;
    }
    std::fs::rename(&staging, &args.out).with_context(|| format!("moving {} to {}", staging.display(), args.out.display()))?;
    let mut written: Vec<String> = std::fs::read_dir(&args.out)
        .with_context(|| format!("listing {}", args.out.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    written.sort();
    eprintln!("exported {} ({what}, {parameters} parameters) to {}: {}", args.model, args.out.display(), written.join(", "));
    println!("{}", args.out.display());
    Ok(())
}

/// GPT-2's tokenizer files made from the compiled-in BPE; a Llama-family model's copied from the
/// directory it was loaded from (a random preset has none: said, not an error).
fn write_tokenizer(model: &LanguageModel, spec: &str, dir: &Path) -> Result<()> {
    if let LanguageModel::Gpt2(_) = model {
        HfTokenizerFiles::gpt2().context("building the tokenizer files")?.write(dir, model.context_length())?;
        return Ok(());
    }
    match copy_model_tokenizer(spec, dir)? {
        Some(_) => Ok(()),
        None => {
            eprintln!("warning: {spec} has random weights and no tokenizer: the export has no tokenizer files");
            Ok(())
        }
    }
}

fn check_out_dir(out: &Path, force: bool) -> Result<()> {
    if force || !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        bail!("{} exists and is not a directory", out.display());
    }
    let mut entries = std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))?;
    if entries.next().is_some() {
        bail!("{} is not empty: choose another --out, or --force to replace it", out.display());
    }
    Ok(())
}

/// A classifier's head has a bias that `GPT2ForSequenceClassification` (a bias-free `score` layer
/// that reads the last non-padding token) cannot hold, so its export would not give the same
/// labels: say so instead of writing something subtly different.
fn refuse_gpt2_classifier(classifier: &Classifier, name: &str) -> Result<()> {
    if let LanguageModel::Gpt2(_) = classifier.model {
        bail!(
            "{name} holds a GPT-2 classifier: its head has a bias and reads the last (padded) position, which transformers' \
             GPT2ForSequenceClassification cannot reproduce; its model/ directory (HF layout + score.weight/score.bias) \
             is what llmfs classify and llmfs serve load (Llama-family classifiers export as *ForSequenceClassification)"
        );
    }
    Ok(())
}

/// `dir` with `suffix` added to its last component.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "export".into());
    name.push(suffix);
    dir.with_file_name(name)
}
