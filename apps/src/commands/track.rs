//! Experiment tracking from the command line: `--track tensorboard[=DIR]` on `pretrain` and every
//! `finetune` mirrors the run while it trains, and `llmfs track RUN_DIR --to tensorboard[=DIR]`
//! mirrors a finished (or copied) run from its files (`pipelines::track`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use pipelines::runs::RUN_JSON;
use pipelines::train::Interrupted;
use pipelines::track::mlflow::Status;
use pipelines::track::mlflow_run::Naming;
use pipelines::track::{self, MirrorReport, Target};

/// The `--track` flags of the training commands.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TrackArgs {
    /// Mirror the run to a tracker while it trains (repeatable): tensorboard (into RUN_DIR/tensorboard),
    /// tensorboard=DIR, mlflow (the server of $MLFLOW_TRACKING_URI) or mlflow=URI; for W&B,
    /// `wandb sync --sync-tensorboard` a TensorBoard directory
    #[arg(long = "track", value_name = "TRACKER")]
    pub track: Vec<String>,
    #[command(flatten)]
    pub naming: NamingArgs,
}

/// The MLflow names of a run (`--track mlflow`, `llmfs track --to mlflow`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct NamingArgs {
    /// The MLflow experiment (created if needed) [default: llmfs]
    #[arg(long)]
    pub experiment: Option<String>,
    /// The MLflow run's name [default: the run directory's name]
    #[arg(long)]
    pub run_name: Option<String>,
    /// Upload the trained model (model/, adapter/) to MLflow too
    #[arg(long)]
    pub track_model: bool,
}

impl NamingArgs {
    fn naming(&self, run_dir: &Path) -> Naming {
        let dir_name = run_dir.canonicalize().unwrap_or_else(|_| run_dir.to_path_buf()).file_name().map(|n| n.to_string_lossy().into_owned());
        Naming {
            experiment: self.experiment.clone().unwrap_or_else(|| "llmfs".into()),
            run_name: self.run_name.clone().or(dir_name).unwrap_or_else(|| "run".into()),
            track_model: self.track_model,
        }
    }
}

impl TrackArgs {
    /// Runs `job`, which trains into `run_dir`, with the run mirrored to the trackers; their runs
    /// end FINISHED, KILLED (interrupted) or FAILED with the job. A tracker that fails is reported,
    /// never the job's failure: the run directory holds everything, and `llmfs track` mirrors it
    /// later.
    pub fn around<T>(&self, run_dir: &Path, resume: bool, job: impl FnOnce() -> Result<T>) -> Result<T> {
        let targets = self.track.iter().map(|t| Target::parse(t, run_dir)).collect::<Result<Vec<_>>>()?;
        // A new run into a directory that holds one fails before training: its tracker files
        // must not be touched.
        // Rank 0 of a data-parallel run owns the run directory, and mirrors it.
        if targets.is_empty() || pipelines::distributed::current().rank() != 0 || (!resume && run_dir.join(RUN_JSON).exists()) {
            return job();
        }
        let follower = track::follow(run_dir, &targets, &self.naming.naming(run_dir))?;
        let result = job();
        let status = match &result {
            Ok(_) => Status::Finished,
            Err(error) if error.downcast_ref::<Interrupted>().is_some() => Status::Killed,
            Err(_) => Status::Failed,
        };
        match follower.finish(status) {
            Ok(report) => say(&report),
            Err(error) => eprintln!("warning: tracking: {error:#}; `llmfs track {}` mirrors the run later", run_dir.display()),
        }
        result
    }
}

fn say(report: &MirrorReport) {
    let mut places: Vec<String> = report.files.iter().map(|p| p.display().to_string()).collect();
    places.extend(report.mlflow_runs.iter().map(|(uri, id)| format!("MLflow run {id} at {uri}")));
    eprintln!("tracking: {} metric events written to {}", report.events, places.join(", "));
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run directory (run.json, metrics.jsonl, samples.jsonl)
    pub run_dir: PathBuf,
    /// Where to (repeatable): tensorboard (into RUN_DIR/tensorboard), tensorboard=DIR, mlflow or mlflow=URI
    #[arg(long = "to", value_name = "TRACKER", required = true)]
    pub to: Vec<String>,
    #[command(flatten)]
    pub naming: NamingArgs,
}

/// Mirrors a run after the fact; an MLflow run continues the one `tracking.json` names (only what
/// it lacks is sent) and ends FINISHED when the run has its model, FAILED otherwise.
pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.run_dir.join(RUN_JSON).is_file(), "{}: not a run directory (no {RUN_JSON})", args.run_dir.display());
    let targets = args.to.iter().map(|t| Target::parse(t, &args.run_dir)).collect::<Result<Vec<_>>>()?;
    let mirror = track::Mirror::new(&args.run_dir, &targets, &args.naming.naming(&args.run_dir))?;
    let finished = ["model", "adapter"].iter().any(|d| args.run_dir.join(d).is_dir());
    let report = mirror.finish(if finished { Status::Finished } else { Status::Failed })?;
    say(&report);
    Ok(())
}
