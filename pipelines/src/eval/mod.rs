//! Evaluation of models on benchmarks and tasks.

pub mod hellaswag;
