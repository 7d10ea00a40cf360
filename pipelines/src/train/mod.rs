//! Training pieces shared by every task.

pub mod loss;

pub use loss::{IGNORE_INDEX, cross_entropy_masked, cross_entropy_per_token};
