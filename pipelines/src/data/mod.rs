//! Data sets: download, parse, split, tokenise.

pub mod spam;
pub mod shards;
pub mod fineweb;
