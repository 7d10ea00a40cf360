//! The operations the models call, on every backend: each takes the CPU kernel of
//! [`crate::backend::kernels`] where it applies and Burn's ops elsewhere, so model code has no
//! backend cases of its own.

pub mod attention;
pub mod dropout;
pub mod embedding;
pub mod gelu;
pub mod linear;
pub mod matmul;
pub mod swiglu;

pub use embedding::embedding;
pub use gelu::gelu;
pub use linear::{linear, tied_head};
pub use matmul::{matmul, matmul_weight};
pub use swiglu::swiglu;
