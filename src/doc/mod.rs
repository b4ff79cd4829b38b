//! Documentation made from the code: the key tables of `ovl.toml` and profiles ([`keys`]),
//! and the man pages of the file formats ([`man`]); the command pages come from the CLI's
//! definitions (`ovl man`).

pub mod keys;
pub mod man;
