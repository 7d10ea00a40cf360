//! Experiment tracking from the command line: `--track tensorboard[=DIR]` on `pretrain` and every
//! `finetune` mirrors the run while it trains, and `llmfs track RUN_DIR --to tensorboard[=DIR]`
//! mirrors a finished (or copied) run from its files (`pipelines::track`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use pipelines::runs::RUN_JSON;
use pipelines::track::{self, Target};

/// The `--track` flag of the training commands.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TrackArgs {
    /// Mirror the run to a tracker while it trains (repeatable): tensorboard (into RUN_DIR/tensorboard)
    /// or tensorboard=DIR; for W&B, `wandb sync --sync-tensorboard` that directory
    #[arg(long = "track", value_name = "TRACKER")]
    pub track: Vec<String>,
}

impl TrackArgs {
    /// Runs `job`, which trains into `run_dir`, with the run mirrored to the trackers. A tracker
    /// that fails is reported, never the job's failure: the run directory holds everything, and
    /// `llmfs track` mirrors it later.
    pub fn around<T>(&self, run_dir: &Path, resume: bool, job: impl FnOnce() -> Result<T>) -> Result<T> {
        let targets = self.track.iter().map(|t| Target::parse(t, run_dir)).collect::<Result<Vec<_>>>()?;
        // A new run into a directory that holds one fails before training: its tracker files
        // must not be touched.
        if targets.is_empty() || (!resume && run_dir.join(RUN_JSON).exists()) {
            return job();
        }
        let follower = track::follow(run_dir, &targets)?;
        let result = job();
        match follower.finish() {
            Ok(mirror) => eprintln!("tracking: {} metric events written to {}", mirror.events, files(&mirror.files())),
            Err(error) => eprintln!("warning: tracking failed: {error:#}; `llmfs track {}` mirrors the run later", run_dir.display()),
        }
        result
    }
}

fn files(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run directory (run.json, metrics.jsonl, samples.jsonl)
    pub run_dir: PathBuf,
    /// Where to (repeatable): tensorboard (into RUN_DIR/tensorboard) or tensorboard=DIR
    #[arg(long = "to", value_name = "TRACKER", required = true)]
    pub to: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.run_dir.join(RUN_JSON).is_file(), "{}: not a run directory (no {RUN_JSON})", args.run_dir.display());
    let targets = args.to.iter().map(|t| Target::parse(t, &args.run_dir)).collect::<Result<Vec<_>>>()?;
    let mut mirror = track::Mirror::new(&args.run_dir, &targets)?;
    mirror.poll()?;
    eprintln!("{} metric events written to {}", mirror.events, files(&mirror.files()));
    Ok(())
}
