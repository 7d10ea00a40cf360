//! Checkpoints keyed by optimizer step: Burn's model / optimizer / scheduler records, each written
//! atomically, plus a small `state.json` saying where in the data the run was (and, for f16-mixed
//! runs, the loss scaler's state).

use std::path::{Path, PathBuf};

use anyhow::Context;
use gpt::burn::lr_scheduler::LrSchedulerRecord;
use gpt::burn::module::Module;
use gpt::burn::optim::OptimizerRecord;
use gpt::burn::store::ModuleRecord;
use gpt::burn::train::{Interrupter, TrainStep};
use gpt::burn::train::checkpoint::{AsyncCheckpointer, Checkpoint, Checkpointer, CheckpointerError, CheckpointingAction};
use gpt::io::write_atomic;
use serde::{Deserialize, Serialize};

use crate::train::grad_scaler::GradScalerState;
use crate::train::learner::{Learner, LearnerRecords};

/// A run's checkpoints: the learner's three records written on background threads (training goes
/// on meanwhile; a failed write stops the run through `interrupter`), the last two kept.
pub struct Checkpoints {
    dir: PathBuf,
    model: AsyncCheckpointer<ModuleRecord>,
    optimizer: AsyncCheckpointer<OptimizerRecord>,
    scheduler: AsyncCheckpointer<LrSchedulerRecord>,
    keep: KeepLast,
}

impl Checkpoints {
    pub fn new(dir: &Path, interrupter: &Interrupter) -> Self {
        Self {
            dir: dir.to_path_buf(),
            model: Self::writer(dir, "model", interrupter),
            optimizer: Self::writer(dir, "optim", interrupter),
            scheduler: Self::writer(dir, "scheduler", interrupter),
            keep: KeepLast::new(2),
        }
    }

    fn writer<R: Checkpoint + 'static>(dir: &Path, name: &'static str, interrupter: &Interrupter) -> AsyncCheckpointer<R> {
        AsyncCheckpointer::new(AtomicFileCheckpointer::new(dir, name)).with_interrupter(interrupter.clone())
    }

    /// Saves the learner at `state` and drops the checkpoints [`KeepLast`] lets go.
    pub fn save<M: Module + TrainStep>(&mut self, learner: &Learner<M>, state: TrainState) -> anyhow::Result<()> {
        let mut loss_scaler = None;
        for action in self.keep.actions(state.step) {
            match action {
                CheckpointingAction::Save => {
                    let records = learner.records();
                    loss_scaler = records.loss_scaler;
                    self.model.save(state.step, records.model)?;
                    self.optimizer.save(state.step, records.optimizer)?;
                    self.scheduler.save(state.step, records.scheduler)?;
                }
                CheckpointingAction::Delete(step) => {
                    self.model.delete(step)?;
                    self.optimizer.delete(step)?;
                    self.scheduler.delete(step)?;
                }
            }
        }
        Saved { at: state, loss_scaler }.append_to(&self.dir)
    }

    /// The learner as checkpoint `saved` left it.
    pub fn restore<M: Module + TrainStep>(&self, learner: Learner<M>, saved: Saved) -> anyhow::Result<Learner<M>> {
        let step = saved.at.step;
        let context = || format!("loading checkpoint {step} from {}", self.dir.display());
        let records = LearnerRecords {
            model: self.model.restore(step).with_context(context)?,
            optimizer: self.optimizer.restore(step).with_context(context)?,
            scheduler: self.scheduler.restore(step).with_context(context)?,
            loss_scaler: saved.loss_scaler,
        };
        Ok(learner.load(records))
    }
}

/// Where a checkpoint stands: the next batch to train is batch `batch` of epoch `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done (also the key of the checkpoint files).
    pub step: usize,
    /// 1-based epoch to continue in.
    pub epoch: usize,
    /// Index of the next batch of that epoch.
    pub batch: usize,
}

/// One checkpoint in `state.json`: where it stands, and the loss scaler's state (f16-mixed runs;
/// absent from the others and from checkpoints older than loss scaling).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    #[serde(flatten)]
    pub at: TrainState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scaler: Option<GradScalerState>,
}

const STATE_FILE: &str = "state.json";
/// How many checkpoint states `state.json` remembers (the records of older ones are deleted).
const STATES_KEPT: usize = 4;

impl Saved {
    /// The checkpoints recorded in `dir/state.json`, oldest first (`None`: no checkpoint yet).
    pub fn load_all(dir: &Path) -> anyhow::Result<Option<Vec<Self>>> {
        let path = dir.join(STATE_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let states = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Some(states))
    }

    /// Records this checkpoint in `dir/state.json` (after its record files were handed to the
    /// checkpointer: resuming checks that they are all there).
    pub fn append_to(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
        let mut states = Self::load_all(dir)?.unwrap_or_default();
        states.retain(|s| s.at.step != self.at.step);
        states.push(*self);
        let excess = states.len().saturating_sub(STATES_KEPT);
        states.drain(..excess);
        let text = serde_json::to_string_pretty(&states)?;
        Ok(write_atomic(&dir.join(STATE_FILE), text.as_bytes())?)
    }
}

/// Burn records as `{name}-{step}.bpk`, written to a temporary file and renamed.
pub struct AtomicFileCheckpointer {
    dir: PathBuf,
    name: &'static str,
}

impl AtomicFileCheckpointer {
    pub fn new(dir: &Path, name: &'static str) -> Self {
        Self { dir: dir.to_path_buf(), name }
    }

    fn path(&self, key: usize) -> PathBuf {
        self.dir.join(format!("{}-{key}.bpk", self.name))
    }
}

impl<R: Checkpoint> Checkpointer<R> for AtomicFileCheckpointer {
    fn save(&self, key: usize, record: R) -> Result<(), CheckpointerError> {
        let bytes = record.checkpoint_into_bytes().map_err(CheckpointerError::Record)?;
        std::fs::create_dir_all(&self.dir).map_err(CheckpointerError::IOError)?;
        write_atomic(&self.path(key), &bytes).map_err(|e| CheckpointerError::Unknown(e.to_string()))
    }

    fn delete(&self, key: usize) -> Result<(), CheckpointerError> {
        match std::fs::remove_file(self.path(key)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CheckpointerError::IOError(e)),
            _ => Ok(()),
        }
    }

    fn restore(&self, key: usize) -> Result<R, CheckpointerError> {
        let bytes = std::fs::read(self.path(key)).map_err(CheckpointerError::IOError)?;
        R::checkpoint_from_bytes(gpt::burn::tensor::Bytes::from_bytes_vec(bytes)).map_err(CheckpointerError::Record)
    }
}

/// Saves at every call and keeps the last `keep` checkpoints.
pub struct KeepLast {
    keep: usize,
    saved: Vec<usize>,
}

impl KeepLast {
    pub fn new(keep: usize) -> Self {
        Self { keep: keep.max(1), saved: Vec::new() }
    }

    /// Save `key`, and delete what falls out of the last `keep`.
    pub fn actions(&mut self, key: usize) -> Vec<CheckpointingAction> {
        let mut actions = vec![CheckpointingAction::Save];
        self.saved.push(key);
        while self.saved.len() > self.keep {
            actions.push(CheckpointingAction::Delete(self.saved.remove(0)));
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// state.json written before loss scaling (no `loss_scaler`) still loads; f32 and bf16 runs
    /// write none; an f16-mixed run's comes back exactly.
    #[test]
    fn state_json_with_and_without_the_loss_scaler() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), r#"[{"step": 5, "epoch": 1, "batch": 5}]"#).unwrap();
        let at = TrainState { step: 5, epoch: 1, batch: 5 };
        assert_eq!(Saved::load_all(dir.path()).unwrap(), Some(vec![Saved { at, loss_scaler: None }]));
        let scaled = Saved { at: TrainState { step: 10, epoch: 2, batch: 0 }, loss_scaler: Some(GradScalerState { scale: 0.125, growth_tracker: 3 }) };
        scaled.append_to(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        assert_eq!(text.matches("loss_scaler").count(), 1, "{text}");
        assert_eq!(Saved::load_all(dir.path()).unwrap(), Some(vec![Saved { at, loss_scaler: None }, scaled]));
    }

    #[test]
    fn keep_last_saves_every_time_and_deletes_the_oldest() {
        let mut keep = KeepLast::new(2);
        let deleted = |actions: Vec<CheckpointingAction>| -> Vec<usize> {
            assert!(matches!(actions[0], CheckpointingAction::Save));
            actions.iter().filter_map(|a| if let CheckpointingAction::Delete(step) = a { Some(*step) } else { None }).collect()
        };
        assert_eq!(deleted(keep.actions(5)), Vec::<usize>::new());
        assert_eq!(deleted(keep.actions(10)), Vec::<usize>::new());
        assert_eq!(deleted(keep.actions(15)), [5]);
        assert_eq!(deleted(keep.actions(20)), [10]);
    }
}
