//! What the training loop does after a batch and after an epoch: evaluate, checkpoint, stop. A
//! pure function of the configuration and where the run is, so that every combination of
//! `--eval-every`, `--checkpoint-every`, `--max-steps`, a run's length in steps and an interrupt is
//! tested here, without training anything.

use super::trainer::TrainConfig;

/// Why a run stops before its last epoch ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `--max-steps` reached: an interruption that `--resume` continues.
    MaxSteps,
    /// The dashboard's stop key (or another interrupt): `--resume` continues too.
    Interrupted,
    /// The run's length in optimizer steps (pretraining) reached: the run is complete.
    RunComplete,
}

impl Stop {
    /// Whether the run is left unfinished (to be continued with `--resume`).
    pub fn leaves_run_unfinished(self) -> bool {
        self != Stop::RunComplete
    }
}

/// What to do after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AfterBatch {
    /// Evaluate on `eval_batches` batches of each split.
    pub evaluate: bool,
    /// Checkpoint here (the position after this batch), so that `--resume` goes on from it.
    pub checkpoint: bool,
    pub stop: Option<Stop>,
}

/// After a batch: `stepped` when it ended with an optimizer step (now `step`), `last_of_epoch`
/// when it was the epoch's last, `interrupted` when a stop was asked for. Stops and checkpoints
/// happen only after an optimizer step; the end of an epoch checkpoints by itself
/// ([`after_epoch`]).
pub fn after_batch(config: &TrainConfig, step: usize, stepped: bool, last_of_epoch: bool, interrupted: bool) -> AfterBatch {
    if !stepped {
        return AfterBatch::default();
    }
    let evaluate = config.eval_every.is_some_and(|every| step.is_multiple_of(every));
    if last_of_epoch {
        return AfterBatch { evaluate, ..AfterBatch::default() };
    }
    let stop = if config.run_steps == Some(step) {
        Some(Stop::RunComplete)
    } else if config.stop_after_steps == Some(step) {
        Some(Stop::MaxSteps)
    } else if interrupted {
        Some(Stop::Interrupted)
    } else {
        None
    };
    let periodic = config.checkpoint_every.is_some_and(|every| step.is_multiple_of(every));
    AfterBatch { evaluate, checkpoint: periodic || stop.is_some(), stop }
}

/// After epoch `next_epoch - 1` (validated and checkpointed) at `step`: whether to stop before
/// `next_epoch`. `None` goes on; after the last epoch the loop ends by itself, complete, so a
/// `--max-steps` or an interrupt arriving then stops nothing.
pub fn after_epoch(config: &TrainConfig, step: usize, next_epoch: usize, interrupted: bool) -> Option<Stop> {
    let epochs_left = next_epoch <= config.epochs;
    if config.run_steps.is_some_and(|steps| step >= steps) {
        Some(Stop::RunComplete)
    } else if config.stop_after_steps.is_some_and(|stop| step >= stop) && epochs_left {
        Some(Stop::MaxSteps)
    } else if interrupted && epochs_left {
        Some(Stop::Interrupted)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TrainConfig {
        TrainConfig { epochs: 3, eval_every: Some(5), checkpoint_every: Some(10), ..TrainConfig::default() }
    }

    #[test]
    fn nothing_happens_between_optimizer_steps() {
        let mut config = config();
        config.stop_after_steps = Some(10);
        // A batch whose gradients are only accumulated: even an interrupt waits for the step.
        assert_eq!(after_batch(&config, 10, false, false, true), AfterBatch::default());
    }

    #[test]
    fn evaluations_and_checkpoints_follow_their_periods() {
        let config = config();
        assert_eq!(after_batch(&config, 4, true, false, false), AfterBatch::default());
        assert_eq!(after_batch(&config, 5, true, false, false), AfterBatch { evaluate: true, ..AfterBatch::default() });
        assert_eq!(after_batch(&config, 10, true, false, false), AfterBatch { evaluate: true, checkpoint: true, stop: None });
        // The last batch of an epoch evaluates on schedule but leaves the checkpoint to the epoch's end.
        assert_eq!(after_batch(&config, 10, true, true, false), AfterBatch { evaluate: true, ..AfterBatch::default() });
    }

    #[test]
    fn stops_mid_epoch_checkpoint_where_they_stop() {
        let mut config = config();
        config.stop_after_steps = Some(7);
        let at_7 = after_batch(&config, 7, true, false, false);
        assert_eq!(at_7, AfterBatch { evaluate: false, checkpoint: true, stop: Some(Stop::MaxSteps) });
        let interrupted = after_batch(&config, 3, true, false, true);
        assert_eq!(interrupted, AfterBatch { evaluate: false, checkpoint: true, stop: Some(Stop::Interrupted) });
        config.run_steps = Some(7);
        assert_eq!(after_batch(&config, 7, true, false, true).stop, Some(Stop::RunComplete), "the run's end wins");
        assert!(!Stop::RunComplete.leaves_run_unfinished());
        assert!(Stop::MaxSteps.leaves_run_unfinished() && Stop::Interrupted.leaves_run_unfinished());
    }

    #[test]
    fn epoch_ends_stop_for_the_runs_length_max_steps_or_an_interrupt() {
        let mut config = config();
        assert_eq!(after_epoch(&config, 20, 2, false), None);
        assert_eq!(after_epoch(&config, 20, 2, true), Some(Stop::Interrupted));
        config.stop_after_steps = Some(20);
        assert_eq!(after_epoch(&config, 20, 2, false), Some(Stop::MaxSteps));
        // After the last epoch --max-steps and interrupts stop nothing: the run is over anyway.
        assert_eq!(after_epoch(&config, 20, 4, false), None);
        assert_eq!(after_epoch(&config, 20, 4, true), None);
        config.run_steps = Some(15);
        assert_eq!(after_epoch(&config, 20, 2, false), Some(Stop::RunComplete));
    }
}
