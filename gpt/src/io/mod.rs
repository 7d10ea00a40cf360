//! The bottom layer: files and tensors on disk, knowing nothing of any model.
//!
//! - [`files`]: crash-safe writes (temporary file + rename) and free disk space.
//! - [`host_memory`]: host buffers for weights (huge pages where the OS allows).
//! - [`params`]: a module's parameters by their Hugging Face names, filled from a [`TensorSource`]
//!   or read out; parameter counts; seeded host-side draws.
//! - [`safetensors`]: `model.safetensors` (single or sharded) in and out, memory-mapped.
//! - [`hub`]: the Hugging Face hub and its local cache.

pub mod files;
pub mod host_memory;
pub mod hub;
pub mod params;
pub mod safetensors;

pub use self::files::{available_space, replace_atomically, temp_path_for, write_atomic, write_atomic_with};
pub use self::hub::{HubOptions, fetch_model};
pub use self::params::{
    OutInLinears, TensorSource, fill_params, fill_params_matching, hf_name, named_params, parameter_counts, seeded_normal, stable_hash,
};
pub use self::safetensors::{SafetensorsSource, write_safetensors};
