//! Data sets: download, parse, split, tokenise.

pub mod hellaswag;
pub mod spam;
pub mod shards;
pub mod fineweb;
