//! The build pipeline: layers → device plan (manifest) → archive → publish.

pub mod archive;
pub mod bootscript;
pub(crate) mod compare;
pub mod layer;
pub mod manifest;
pub mod owners;
pub mod plan;
pub mod project;
pub mod publish;
pub mod template;
