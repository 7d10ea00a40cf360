//! Dashboard metrics burn-train does not have in the form training needs: the learning rate in
//! scientific notation (burn-train's rounds 5e-5 to "0.00"), tokens per second, and perplexity as
//! exp(mean loss) (burn-train's `PerplexityMetric` recomputes the loss from the full logits,
//! which for a 50k vocabulary costs as much as the loss itself).
//!
//! Step outputs feed them through [`StepStats`] (`impl Adaptor<StepStats> for Output`).

use std::sync::Arc;
use std::time::Instant;

use gpt::burn::tensor::TensorReadError;
use gpt::burn::train::metric::state::{FormatOptions, NumericMetricState};
use gpt::burn::train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry, SerializedEntry,
};

/// What the metrics below read from a step's output.
pub struct StepStats {
    /// Mean loss of the batch.
    pub loss: f64,
    /// Tokens the step learned from (targets that count).
    pub tokens: usize,
}

/// The dashboard's "epoch X - batch Y" line, as burn-train's own numeric metrics show it.
fn entry(epoch: String, batch: String, serialized: NumericEntry) -> SerializedEntry {
    SerializedEntry::new(format!("epoch {epoch} - batch {batch}"), serialized.serialize())
}

/// The base learning rate of the latest step.
#[derive(Clone)]
pub struct LearningRate {
    name: MetricName,
    current: f64,
}

impl LearningRate {
    pub fn new() -> Self {
        Self { name: Arc::new("Learning Rate".into()), current: f64::NAN }
    }
}

impl Default for LearningRate {
    fn default() -> Self {
        Self::new()
    }
}

impl Metric for LearningRate {
    type Input = ();

    fn update(&mut self, _: &(), metadata: &MetricMetadata) -> Result<SerializedEntry, TensorReadError> {
        self.current = metadata.lr.as_ref().map(|lr| lr.base()).unwrap_or(f64::NAN);
        Ok(self.compute_entry())
    }

    fn compute(&mut self) -> Result<SerializedEntry, TensorReadError> {
        Ok(self.compute_entry())
    }

    fn clear(&mut self) {}

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes { unit: None, higher_is_better: false }.into()
    }
}

impl LearningRate {
    fn compute_entry(&self) -> SerializedEntry {
        let value = format!("{:.3e}", self.current);
        entry(value.clone(), value, NumericEntry::Value(self.current))
    }
}

impl Numeric for LearningRate {
    fn value(&self) -> Option<NumericEntry> {
        Some(NumericEntry::Value(self.current))
    }

    fn running_value(&self) -> Option<NumericEntry> {
        self.value()
    }

    fn final_value(&self) -> NumericEntry {
        NumericEntry::Value(self.current)
    }
}

/// Tokens per second, measured between consecutive steps.
#[derive(Clone)]
pub struct TokensPerSecond {
    name: MetricName,
    state: NumericMetricState,
    last: Option<Instant>,
}

impl TokensPerSecond {
    pub fn new() -> Self {
        Self { name: Arc::new("Tokens per second".into()), state: NumericMetricState::new(), last: None }
    }
}

impl Default for TokensPerSecond {
    fn default() -> Self {
        Self::new()
    }
}

impl Metric for TokensPerSecond {
    type Input = StepStats;

    fn update(&mut self, stats: &StepStats, _: &MetricMetadata) -> Result<SerializedEntry, TensorReadError> {
        let now = Instant::now();
        // The first step of a split has no start time: it counts once the next one arrives.
        if let Some(last) = self.last {
            self.state.update(stats.tokens as f64 / (now - last).as_secs_f64().max(1e-9), 1);
        }
        self.last = Some(now);
        Ok(self.state.compute_update(FormatOptions::new(self.name()).precision(0)))
    }

    fn compute(&mut self) -> Result<SerializedEntry, TensorReadError> {
        Ok(self.state.compute_final(FormatOptions::new(self.name()).precision(0)))
    }

    fn clear(&mut self) {
        self.state.reset();
        self.last = None;
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes { unit: None, higher_is_better: true }.into()
    }
}

impl Numeric for TokensPerSecond {
    fn value(&self) -> Option<NumericEntry> {
        Some(self.state.current_value())
    }

    fn running_value(&self) -> Option<NumericEntry> {
        Some(self.state.running_value())
    }

    fn final_value(&self) -> NumericEntry {
        self.state.final_value()
    }
}

/// exp(mean loss): of the batch, and of the mean over the epoch so far.
#[derive(Clone)]
pub struct Perplexity {
    name: MetricName,
    loss_sum: f64,
    batches: usize,
    current: f64,
}

impl Perplexity {
    pub fn new() -> Self {
        Self { name: Arc::new("Perplexity".into()), loss_sum: 0.0, batches: 0, current: f64::NAN }
    }

    fn running(&self) -> f64 {
        (self.loss_sum / self.batches as f64).exp()
    }
}

impl Default for Perplexity {
    fn default() -> Self {
        Self::new()
    }
}

impl Metric for Perplexity {
    type Input = StepStats;

    fn update(&mut self, stats: &StepStats, _: &MetricMetadata) -> Result<SerializedEntry, TensorReadError> {
        self.loss_sum += stats.loss;
        self.batches += 1;
        self.current = stats.loss.exp();
        let serialized = NumericEntry::Aggregated { aggregated_value: self.current, count: 1 };
        Ok(entry(format!("{:.2}", self.running()), format!("{:.2}", self.current), serialized))
    }

    fn compute(&mut self) -> Result<SerializedEntry, TensorReadError> {
        let value = format!("{:.2}", self.running());
        Ok(entry(value.clone(), value, NumericEntry::Final(self.running())))
    }

    fn clear(&mut self) {
        *self = Self::new();
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes { unit: None, higher_is_better: false }.into()
    }
}

impl Numeric for Perplexity {
    fn value(&self) -> Option<NumericEntry> {
        Some(NumericEntry::Aggregated { aggregated_value: self.current, count: 1 })
    }

    fn running_value(&self) -> Option<NumericEntry> {
        Some(NumericEntry::Aggregated { aggregated_value: self.running(), count: self.batches })
    }

    fn final_value(&self) -> NumericEntry {
        NumericEntry::Final(self.running())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpt::burn::data::dataloader::Progress;

    fn metadata() -> MetricMetadata {
        MetricMetadata { progress: Progress::new(1, 10, None), iteration: Some(1), lr: None }
    }

    #[test]
    fn perplexity_is_exp_of_the_mean_loss() {
        let mut metric = Perplexity::new();
        let entry = metric.update(&StepStats { loss: 2f64.ln(), tokens: 10 }, &metadata()).unwrap();
        assert_eq!(entry.formatted, "epoch 2.00 - batch 2.00");
        metric.update(&StepStats { loss: 8f64.ln(), tokens: 10 }, &metadata()).unwrap();
        // exp((ln 2 + ln 8) / 2) = 4, not the mean of the perplexities (5).
        match metric.final_value() {
            NumericEntry::Final(value) => assert!((value - 4.0).abs() < 1e-12, "{value}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(metric.compute().unwrap().formatted, "epoch 4.00 - batch 4.00");
        metric.clear();
        assert_eq!(metric.batches, 0);
    }

    #[test]
    fn tokens_per_second_counts_from_the_second_step() {
        let mut metric = TokensPerSecond::new();
        metric.update(&StepStats { loss: 1.0, tokens: 1000 }, &metadata()).unwrap();
        let NumericEntry::Aggregated { count, .. } = metric.state.running_value() else { panic!() };
        assert_eq!(count, 0, "no rate before a second step");
        std::thread::sleep(std::time::Duration::from_millis(20));
        metric.update(&StepStats { loss: 1.0, tokens: 1000 }, &metadata()).unwrap();
        let NumericEntry::Aggregated { aggregated_value, count } = metric.state.running_value() else { panic!() };
        // 1000 tokens in ≥ 20 ms: at most 50,000 tokens/s, and a sane lower bound for a busy machine.
        assert_eq!(count, 1);
        assert!(aggregated_value <= 50_000.0 && aggregated_value > 100.0, "{aggregated_value}");
    }

    /// burn-train's file logger makes a file per metric name (`epoch-1/<name>.log`): a `/` in a
    /// name is a directory that does not exist, and the run panics inside burn-train.
    #[test]
    fn metric_names_are_file_names() {
        let names = [LearningRate::new().name(), TokensPerSecond::new().name(), Perplexity::new().name()];
        for name in names {
            assert!(!name.contains(['/', '\\']) && !name.is_empty(), "{name}");
        }
    }
}
