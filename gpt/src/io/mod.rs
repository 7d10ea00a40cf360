//! The bottom layer: files and tensors on disk, knowing nothing of any model.
//!
//! - [`files`]: crash-safe writes (temporary file + rename) and free disk space.
//! - [`host_memory`]: host buffers for weights (huge pages where the OS allows).
//! - [`params`]: a module's parameters by their Hugging Face names, filled from a [`TensorSource`]
//!   or read out; parameter counts; seeded host-side draws.
//! - [`safetensors`]: `model.safetensors` (single or sharded) in and out, memory-mapped.
//! - [`hub`]: the Hugging Face hub and its local cache.
//! - [`weight_dtype`]: f32 or bf16 weight matrices (`--dtype`).

pub mod files;
pub mod host_memory;
pub mod hub;
pub mod params;
pub mod safetensors;
pub mod weight_dtype;

pub use self::files::{available_space, replace_atomically, temp_path_for, write_atomic, write_atomic_with};
pub use self::hub::{HubOptions, fetch_model};
pub use self::params::{
    MatricesAs, OutInLinears, TensorSource, cast_matrices, fill_params, fill_params_matching, hf_name, named_params, parameter_counts, seeded_normal,
    stable_hash,
};
pub use self::safetensors::{SafetensorsSource, write_safetensors};
pub use self::weight_dtype::WeightDtype;
