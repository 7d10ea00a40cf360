//! Mixed-precision training on the backend under test, in a process of its own: the products'
//! precision is process-wide, and the tests of the `it` binary run beside each other in threads.

#[path = "../../../gpt/tests/it/common/mod.rs"]
mod gpt_common;

mod training;
