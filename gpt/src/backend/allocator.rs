//! Keeping freed memory for reuse. Every llmfs binary makes mimalloc its global allocator with
//! [`crate::use_mimalloc`], and [`keep_freed_memory`] tunes it for tensor work.
//!
//! A training step frees and reallocates the same few hundred large buffers every step; mimalloc
//! by default returns freed memory to the OS after 10 ms (`purge_delay`), so each step would fault
//! every page back in and have the kernel zero it again (README, "Speed"). Freed memory is kept
//! for ten minutes: longer than any step, and a server that goes idle still gives it back.

use std::sync::Once;

/// mimalloc's allocator type, for [`crate::use_mimalloc`].
pub use mimalloc::MiMalloc;

/// Makes mimalloc the program's global allocator: one line in every llmfs binary,
/// `gpt::use_mimalloc!();` (`llmfs::gpt::use_mimalloc!();` in the examples and benches). mimalloc
/// keeps freed pages for reuse, where the system allocator gives every large tensor fresh, zeroed
/// pages. A library cannot choose for its users, so this is a macro for the binaries.
#[macro_export]
macro_rules! use_mimalloc {
    () => {
        #[global_allocator]
        static GLOBAL: $crate::backend::allocator::MiMalloc = $crate::backend::allocator::MiMalloc;
    };
}

/// How long freed memory stays with the process before mimalloc returns it to the OS.
const PURGE_DELAY_MS: std::ffi::c_long = 10 * 60 * 1000;
/// `mi_option_purge_delay` in mimalloc.h (the same index in mimalloc v2 and v3; the Rust
/// bindings have no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Applies the setting once per process. Harmless when mimalloc is not the global allocator
/// (it then only configures an unused heap). Called by [`crate::DeviceSpec::resolve`], which
/// every command and example goes through before any tensor work.
pub fn keep_freed_memory() {
    static APPLIED: Once = Once::new();
    // SAFETY: mi_option_set only stores an integer in mimalloc's option table.
    APPLIED.call_once(|| unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) });
}

/// Returns the memory freed so far to the OS now, instead of after [`PURGE_DELAY_MS`]: for a
/// measurement of what a phase (training steps after a load that freed its f32 weights, as
/// QLoRA's quantization does) holds itself. Harmless when mimalloc is not the global allocator.
pub fn release_freed_memory() {
    // SAFETY: mi_collect only walks mimalloc's own heaps and segments.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
