//! A run directory (`runs/<name>/`): `run.json`, `metrics.jsonl`, `checkpoints/`, `model/`,
//! `plots/`, `samples.jsonl`, `eval/`. The monitor, the plots and `eval` read only this;
//! [`ModelRef`] is what `--model RUN` loads.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use gpt::io::write_atomic;
use serde_json::{Value, json};

pub mod metrics;
pub mod model_ref;
pub mod tail;
pub mod weights;

pub use metrics::{METRICS_FILE, MetricEvent, MetricsLog, read_metrics};
pub use model_ref::{ModelRef, load_classifier, load_model};
pub use tail::Tail;
pub use weights::{QuantizeArgs, QuantizeScheme, WeightArgs};

/// A run's configuration, versions and command line.
pub const RUN_JSON: &str = "run.json";
/// A run's final model, in the Hugging Face layout.
pub const MODEL_DIR: &str = "model";
/// A LoRA run's adapters (PEFT's layout), when saved without `--merge`.
pub const ADAPTER_DIR: &str = "adapter";

#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// Opens `root` for a new run (it must not hold a run yet) or, with `resume`, for continuing one.
    /// The run directory another rank (rank 0) opened: this one reads its checkpoints and writes
    /// nothing.
    pub fn joined(root: &Path) -> Self {
        Self { root: root.to_path_buf() }
    }

    pub fn open(root: &Path, resume: bool) -> Result<Self> {
        let run = Self { root: root.to_path_buf() };
        let exists = run.run_json().exists();
        if resume && !exists {
            bail!("--resume: {} holds no run (no run.json)", root.display());
        }
        if !resume && exists {
            bail!("{} already holds a run: pass --resume to continue it, or choose another --run-dir", root.display());
        }
        std::fs::create_dir_all(&run.root).with_context(|| format!("creating {}", root.display()))?;
        // Fail before training, not at the first checkpoint, when the directory is not writable.
        let probe = run.root.join(".write-test");
        std::fs::write(&probe, b"").with_context(|| format!("{} is not writable", root.display()))?;
        let _ = std::fs::remove_file(probe);
        Ok(run)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Checks, before training, that the disk holding the run can take what the run writes for a
    /// model of `params` f32 parameters. A checkpoint is the weights plus AdamW's two moments (at
    /// most 3 × 4 bytes a parameter); the run keeps two and writes a third before dropping the
    /// oldest, then the final model. Less room than one checkpoint and the final model is an
    /// error (the run could not finish); less than the peak is a warning (it may stop at a later
    /// checkpoint; `--resume` continues once there is room).
    pub fn check_space(&self, params: usize) -> Result<()> {
        let Some(free) = gpt::io::available_space(&self.root) else {
            return Ok(());
        };
        let checkpoint = 12 * params as u64;
        let model = 4 * params as u64;
        let (needed, peak) = (checkpoint + model, 3 * checkpoint + model);
        let mb = |bytes: u64| format!("{:.0} MB", bytes as f64 / 1e6);
        if free < needed {
            bail!(
                "{}: only {} free on this disk, and a run of this model ({params} parameters) needs at least {} \
                 (a checkpoint of {} and the final model of {}): free some space or choose another --run-dir",
                self.root.display(),
                mb(free),
                mb(needed),
                mb(checkpoint),
                mb(model)
            );
        }
        if free < peak {
            eprintln!(
                "warning: {}: {} free, and the run may use up to {} (two checkpoints kept while a third is written, \
                 then the final model): if the disk fills, the run stops with its last complete checkpoint and \
                 --resume continues it once there is room",
                self.root.display(),
                mb(free),
                mb(peak)
            );
        }
        Ok(())
    }

    pub fn run_json(&self) -> PathBuf {
        self.root.join(RUN_JSON)
    }

    pub fn metrics(&self) -> PathBuf {
        metrics::metrics_path(&self.root)
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// The final model, in the Hugging Face layout.
    pub fn model(&self) -> PathBuf {
        self.root.join(MODEL_DIR)
    }

    /// A LoRA run's adapters (PEFT's layout).
    pub fn adapter(&self) -> PathBuf {
        self.root.join(ADAPTER_DIR)
    }

    pub fn plots(&self) -> PathBuf {
        self.root.join("plots")
    }

    pub fn samples(&self) -> PathBuf {
        self.root.join("samples.jsonl")
    }

    pub fn eval(&self) -> PathBuf {
        self.root.join("eval")
    }

    /// Writes `run.json`: the resolved configuration plus versions and the time.
    pub fn write_run_json(&self, config: Value) -> Result<()> {
        let info = json!({
            "config": config,
            "llmfs_version": env!("CARGO_PKG_VERSION"),
            "burn_version": "0.22.1",
            "created_unix": now(),
            "command": std::env::args().collect::<Vec<_>>(),
        });
        write_atomic(&self.run_json(), serde_json::to_string_pretty(&info)?.as_bytes())?;
        Ok(())
    }

    /// What `run.json` holds.
    pub fn read_run_json(&self) -> Result<Value> {
        let path = self.run_json();
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Sets `key` of `run.json` to what the run found out once it started (which kernels run).
    pub fn record_in_run_json(&self, key: &str, value: Value) -> Result<()> {
        let path = self.run_json();
        let mut info = self.read_run_json()?;
        let Some(object) = info.as_object_mut() else { bail!("{}: not a JSON object", path.display()) };
        object.insert(key.to_string(), value);
        write_atomic(&path, serde_json::to_string_pretty(&info)?.as_bytes())?;
        Ok(())
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
