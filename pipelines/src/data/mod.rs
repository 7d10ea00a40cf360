//! Data sets: download, parse, split, tokenise.

pub mod spam;
pub mod instruction;
