//! What the loop measures: one batch's numbers ([`StepStats`], read once from its step output),
//! their means over batches ([`Tally`], for `metrics.jsonl`), and the dashboard's metrics as
//! burn-train `Metric`s fed with those numbers. burn-train's own `LossMetric`/`AccuracyMetric`
//! read tensors the loop has already read; its learning rate rounds 5e-5 to "0.00"; its
//! `PerplexityMetric` recomputes the loss from the full logits, which for a 50k vocabulary costs
//! as much as the loss itself.

use std::sync::Arc;
use std::time::Instant;

use gpt::burn::tensor::TensorReadError;
use gpt::burn::train::metric::state::{FormatOptions, NumericMetricState};
use gpt::burn::train::metric::{
    Adaptor, Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry, SerializedEntry,
};

use crate::runs::MetricEvent;
use crate::train::steps::StepReport;

/// One batch's numbers.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepStats {
    /// Mean loss of the batch.
    pub loss: f64,
    /// Tokens the step learned from (targets that count).
    pub tokens: usize,
    /// (correct, counted) predictions, where accuracy means something.
    pub correct: Option<(usize, usize)>,
    /// A per-token language-modelling loss (then perplexity = exp(loss) means something).
    pub language_modelling: bool,
}

impl StepStats {
    /// Reads the numbers of a step's output (each read waits for the device, so only once).
    pub fn of(report: &impl StepReport) -> Self {
        Self { loss: report.loss(), tokens: report.tokens(), correct: report.correct(), language_modelling: report.is_language_modelling() }
    }
}

/// The dashboard's metrics take the batch's numbers as they are.
impl Adaptor<StepStats> for StepStats {
    fn adapt(&self) -> StepStats {
        *self
    }
}

/// Mean loss and accuracy over batches.
#[derive(Debug, Default)]
pub struct Tally {
    loss_sum: f64,
    batches: usize,
    correct: usize,
    counted: usize,
    language_modelling: bool,
}

impl Tally {
    pub fn add(&mut self, stats: &StepStats) {
        self.loss_sum += stats.loss;
        self.batches += 1;
        self.language_modelling |= stats.language_modelling;
        if let Some((correct, counted)) = stats.correct {
            self.correct += correct;
            self.counted += counted;
        }
    }

    /// The tallies of every rank summed into each (data-parallel evaluation shards the batches).
    pub fn all_reduce(&mut self, world: &dyn crate::distributed::Collective) -> anyhow::Result<()> {
        if world.world_size() == 1 {
            return Ok(());
        }
        let mut sums = [self.loss_sum, self.batches as f64, self.correct as f64, self.counted as f64, f64::from(u8::from(self.language_modelling))];
        world.all_reduce_sum(&mut sums)?;
        (self.loss_sum, self.batches, self.correct, self.counted) = (sums[0], sums[1] as usize, sums[2] as usize, sums[3] as usize);
        self.language_modelling = sums[4] > 0.0;
        Ok(())
    }

    /// Sets the event's mean loss, and its accuracy and perplexity where they apply.
    pub fn fill(&self, event: &mut MetricEvent) {
        let loss = self.loss_sum / self.batches.max(1) as f64;
        event.loss = Some(loss);
        if self.counted > 0 {
            event.accuracy = Some(self.correct as f64 / self.counted as f64);
        }
        if self.language_modelling {
            event.perplexity = Some(loss.exp());
        }
    }
}

/// A running mean of one number of each batch, as burn-train's `LossMetric` (the mean loss) and
/// `AccuracyMetric` (accuracy in percent, weighted by the examples counted) show them.
#[derive(Clone)]
pub struct Averaged {
    name: MetricName,
    unit: Option<&'static str>,
    higher_is_better: bool,
    /// The batch's value and its weight, where the batch has one.
    read: fn(&StepStats) -> Option<(f64, usize)>,
    state: NumericMetricState,
}

impl Averaged {
    pub fn loss() -> Self {
        Self::new("Loss", None, false, |stats| Some((stats.loss, 1)))
    }

    pub fn accuracy() -> Self {
        let read = |stats: &StepStats| stats.correct.filter(|&(_, counted)| counted > 0).map(|(correct, counted)| (100.0 * correct as f64 / counted as f64, counted));
        Self::new("Accuracy", Some("%"), true, read)
    }

    fn new(name: &str, unit: Option<&'static str>, higher_is_better: bool, read: fn(&StepStats) -> Option<(f64, usize)>) -> Self {
        Self { name: Arc::new(name.into()), unit, higher_is_better, read, state: NumericMetricState::new() }
    }

    fn format(&self) -> FormatOptions {
        let format = FormatOptions::new(self.name()).precision(2);
        match self.unit {
            Some(unit) => format.unit(unit),
            None => format,
        }
    }
}

impl Metric for Averaged {
    type Input = StepStats;

    fn update(&mut self, stats: &StepStats, _: &MetricMetadata) -> Result<SerializedEntry, TensorReadError> {
        if let Some((value, weight)) = (self.read)(stats) {
            self.state.update(value, weight);
        }
        Ok(self.state.compute_update(self.format()))
    }

    fn compute(&mut self) -> Result<SerializedEntry, TensorReadError> {
        Ok(self.state.compute_final(self.format()))
    }

    fn clear(&mut self) {
        self.state.reset();
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes { unit: self.unit.map(str::to_string), higher_is_better: self.higher_is_better }.into()
    }
}

impl Numeric for Averaged {
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
    fn accuracy_counts_examples_and_the_tally_means_batches() {
        let batches = [StepStats { loss: 1.0, correct: Some((8, 8)), ..StepStats::default() }, StepStats { loss: 3.0, correct: Some((1, 2)), ..StepStats::default() }];
        let mut accuracy = Averaged::accuracy();
        let mut tally = Tally::default();
        for stats in &batches {
            accuracy.update(stats, &metadata()).unwrap();
            tally.add(stats);
        }
        // 9 of 10 examples, as burn-train's accuracy weighs batches; not the mean of 100 % and 50 %.
        assert_eq!(accuracy.compute().unwrap().formatted, "epoch 90.00 % - batch 50.00 %");
        let mut event = MetricEvent::new(2, 1, "val");
        tally.fill(&mut event);
        assert_eq!((event.loss, event.accuracy, event.perplexity), (Some(2.0), Some(0.9), None));
    }

    #[test]
    fn perplexity_is_exp_of_the_mean_loss() {
        let mut metric = Perplexity::new();
        let entry = metric.update(&StepStats { loss: 2f64.ln(), tokens: 10, ..StepStats::default() }, &metadata()).unwrap();
        assert_eq!(entry.formatted, "epoch 2.00 - batch 2.00");
        metric.update(&StepStats { loss: 8f64.ln(), tokens: 10, ..StepStats::default() }, &metadata()).unwrap();
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
        metric.update(&StepStats { loss: 1.0, tokens: 1000, ..StepStats::default() }, &metadata()).unwrap();
        let NumericEntry::Aggregated { count, .. } = metric.state.running_value() else { panic!() };
        assert_eq!(count, 0, "no rate before a second step");
        std::thread::sleep(std::time::Duration::from_millis(20));
        metric.update(&StepStats { loss: 1.0, tokens: 1000, ..StepStats::default() }, &metadata()).unwrap();
        let NumericEntry::Aggregated { aggregated_value, count } = metric.state.running_value() else { panic!() };
        // 1000 tokens in ≥ 20 ms: at most 50,000 tokens/s, and a sane lower bound for a busy machine.
        assert_eq!(count, 1);
        assert!(aggregated_value <= 50_000.0 && aggregated_value > 100.0, "{aggregated_value}");
    }

    /// Wherever burn-train logs metrics to files it makes a file per metric name
    /// (`epoch-1/<name>.log`): a `/` in a name is a directory that does not exist.
    #[test]
    fn metric_names_are_file_names() {
        let names = [LearningRate::new().name(), TokensPerSecond::new().name(), Perplexity::new().name()];
        for name in names {
            assert!(!name.contains(['/', '\\']) && !name.is_empty(), "{name}");
        }
    }
}
