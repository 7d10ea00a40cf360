//! Training pieces shared by every task: losses, the optimizer set-up, the two step kinds and
//! the one training loop (with burn-train's parts).

pub mod adamw;
pub mod checkpoint;
pub mod dashboard;
pub mod decisions;
pub mod grad_scaler;
pub mod learner;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod precision;
pub mod steps;
pub mod trainer;

pub use dashboard::DashboardMetrics;
pub use loss::{IGNORE_INDEX, cross_entropy_masked, cross_entropy_per_token};
pub use optim::{LrSchedule, OptimConfig};
pub use precision::Precision;
pub use steps::{ClassificationBatch, ClassifierInput, ClassifierTraining, LanguageModelTraining, LmBatch, StepReport};
pub use trainer::{BatchSource, Interrupted, NoHooks, TrainConfig, TrainHooks, TrainJob, TrainOutcome, epoch_order, train};
