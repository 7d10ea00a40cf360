//! What someone watching a run sees: burn-train's terminal dashboard, fed by the training loop
//! with the numbers it has already read, or one plain line per `metrics.jsonl` event.

use gpt::burn::data::dataloader::Progress;
use gpt::burn::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use gpt::burn::train::Interrupter;
use gpt::burn::train::logger::TrainingProgressLogger;
use gpt::burn::train::metric::{Adaptor, Metric, MetricDefinition, MetricEntry, MetricId, MetricMetadata, Numeric};
use gpt::burn::train::renderer::tui::TuiMetricsRendererWrapper;
use gpt::burn::train::renderer::{MetricState, MetricsRenderer, MetricsRendererTraining};

use crate::runs::MetricEvent;
use crate::train::metrics::StepStats;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Valid,
}

/// The metrics a task's dashboard shows, per split; the first registration of a name places its
/// tab.
#[derive(Default)]
pub struct DashboardMetrics {
    train: Vec<Box<dyn Shown>>,
    valid: Vec<Box<dyn Shown>>,
    definitions: Vec<MetricDefinition>,
}

impl DashboardMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn train<Me: Metric + Numeric + 'static>(mut self, metric: Me) -> Self
    where
        StepStats: Adaptor<Me::Input>,
    {
        self.define(&metric);
        self.train.push(Box::new(metric));
        self
    }

    pub fn valid<Me: Metric + Numeric + 'static>(mut self, metric: Me) -> Self
    where
        StepStats: Adaptor<Me::Input>,
    {
        self.define(&metric);
        self.valid.push(Box::new(metric));
        self
    }

    /// The metric on both splits.
    pub fn both<Me: Metric + Numeric + 'static>(self, metric: Me) -> Self
    where
        StepStats: Adaptor<Me::Input>,
    {
        self.train(metric.clone()).valid(metric)
    }

    fn define<Me: Metric>(&mut self, metric: &Me) {
        if !self.definitions.iter().any(|d| d.name == metric.name()) {
            self.definitions.push(MetricDefinition::new(MetricId::new(metric.name()), metric));
        }
    }

    fn split(&mut self, split: Split) -> &mut Vec<Box<dyn Shown>> {
        match split {
            Split::Train => &mut self.train,
            Split::Valid => &mut self.valid,
        }
    }
}

/// A dashboard metric, whatever its input: what the renderer needs after a batch and at the end
/// of a split.
trait Shown: Send {
    fn update(&mut self, stats: &StepStats, metadata: &MetricMetadata) -> Option<MetricState>;
    /// The split's value; the metric starts over.
    fn end_split(&mut self) -> Option<MetricState>;
}

impl<Me: Metric + Numeric + 'static> Shown for Me
where
    StepStats: Adaptor<Me::Input>,
{
    fn update(&mut self, stats: &StepStats, metadata: &MetricMetadata) -> Option<MetricState> {
        let entry = Metric::update(self, &stats.adapt(), metadata).ok()?;
        Some(MetricState::Numeric(MetricEntry::new(MetricId::new(self.name()), entry), self.value()))
    }

    fn end_split(&mut self) -> Option<MetricState> {
        let entry = self.compute().ok()?;
        let state = MetricState::Numeric(MetricEntry::new(MetricId::new(self.name()), entry), Some(self.final_value()));
        self.clear();
        Some(state)
    }
}

/// burn-train's TUI in a terminal; nothing otherwise (the loop prints [`plain_line`]s).
pub struct Dashboard {
    tui: Option<TuiMetricsRendererWrapper>,
    metrics: DashboardMetrics,
}

impl Dashboard {
    /// The TUI when `show`; its stop key stops `interrupter`.
    pub fn open(show: bool, metrics: DashboardMetrics, interrupter: &Interrupter, epochs: usize) -> Self {
        let tui = show.then(|| {
            let mut tui = TuiMetricsRendererWrapper::new(interrupter.clone(), None);
            for definition in &metrics.definitions {
                tui.register_metric(definition.clone());
            }
            tui.start(epochs, 1, None, None);
            tui
        });
        Self { tui, metrics }
    }

    pub fn start_split(&mut self, split: Split, batches: usize) {
        if let Some(tui) = &mut self.tui {
            tui.start_split(if split == Split::Train { "train" } else { "valid" }, batches);
        }
    }

    /// Batch `done` of `total` of the split; `lr` is the training split's current rate.
    pub fn batch(&mut self, split: Split, stats: &StepStats, done: usize, total: usize, lr: Option<ModuleLearningRate>) {
        let Some(tui) = &mut self.tui else { return };
        let metadata = MetricMetadata { progress: Progress::new(done, total, Some("batches".into())), iteration: Some(done), lr };
        for state in self.metrics.split(split).iter_mut().filter_map(|metric| metric.update(stats, &metadata)) {
            show(tui, split, state);
        }
        tui.update_split(done);
        tui.log_event_training("Iteration".into());
    }

    pub fn end_split(&mut self, split: Split) {
        let Some(tui) = &mut self.tui else { return };
        for state in self.metrics.split(split).iter_mut().filter_map(|metric| metric.end_split()) {
            show(tui, split, state);
        }
        tui.end_split();
    }

    pub fn end_epoch(&mut self, epoch: usize) {
        if let Some(tui) = &mut self.tui {
            tui.update_epoch(epoch);
        }
    }
}

fn show(tui: &mut TuiMetricsRendererWrapper, split: Split, state: MetricState) {
    match split {
        Split::Train => tui.update_train(state),
        Split::Valid => tui.update_valid(state),
    }
}

/// One human line for an event, for logs and pipes.
pub fn plain_line(event: &MetricEvent) -> String {
    let mut line = format!("epoch {} step {} {}", event.epoch, event.step, event.split);
    if let Some(loss) = event.loss {
        line.push_str(&format!(" loss {loss:.4}"));
    }
    if let Some(accuracy) = event.accuracy {
        line.push_str(&format!(" accuracy {:.1}%", 100.0 * accuracy));
    }
    if let Some(perplexity) = event.perplexity {
        line.push_str(&format!(" perplexity {perplexity:.2}"));
    }
    if let Some(lr) = event.lr {
        line.push_str(&format!(" lr {lr:.2e}"));
    }
    if let Some(speed) = event.tokens_per_s {
        line.push_str(&format!(" {speed:.0} tok/s"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::metrics::{Averaged, LearningRate, Perplexity, TokensPerSecond};

    /// The TUI's tabs follow the first registration of each name, as burn-train's builder did.
    #[test]
    fn each_metric_is_defined_once_in_registration_order() {
        let metrics = DashboardMetrics::new().both(Averaged::loss()).both(Perplexity::new()).train(TokensPerSecond::new()).train(LearningRate::new());
        let names: Vec<String> = metrics.definitions.iter().map(|d| d.name.to_string()).collect();
        assert_eq!(names, ["Loss", "Perplexity", "Tokens per second", "Learning Rate"]);
        assert_eq!((metrics.train.len(), metrics.valid.len()), (4, 2));
    }

    /// Without a terminal nothing is drawn and no metric is updated.
    #[test]
    fn a_closed_dashboard_does_nothing() {
        let mut dashboard = Dashboard::open(false, DashboardMetrics::new().both(Averaged::loss()), &Interrupter::new(), 1);
        dashboard.start_split(Split::Train, 1);
        dashboard.batch(Split::Train, &StepStats { loss: 1.0, ..StepStats::default() }, 1, 1, None);
        dashboard.end_split(Split::Train);
        assert!(dashboard.tui.is_none());
    }
}
