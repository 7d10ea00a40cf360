//! Data sets: download, parse, split, tokenise.

pub mod fineweb;
pub mod hellaswag;
pub mod instruction;
pub mod shards;
pub mod spam;
