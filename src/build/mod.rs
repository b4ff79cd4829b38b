//! The build pipeline: site → device settings → device plan (layers + declarations →
//! manifest) → archive bytes → atomic publish, driven for many devices by [`project::Project`].
//!
//! ```text
//! Project::select ─▶ DeviceSpec ─settings::resolve─▶ DeviceSettings ─plan::plan─▶ DevicePlan
//!   (+ layer::LayerTree read once per run)                          (Manifest)        │
//!                     publish::publish ◀─ runs::compress ◀─ archive::entries_tar ◀────┘
//! ```
//!
//! An archive is several gzip members: the runs of entries every device of a profile shares
//! are compressed once per build (module `runs`), the device's own entries per device.

pub mod archive;
pub mod bootscript;
pub mod capture;
pub(crate) mod compare;
pub mod history;
pub mod layer;
pub mod lbu;
pub mod manifest;
pub mod merge;
pub mod nfs;
pub(crate) mod owners;
pub mod plan;
pub mod project;
pub mod publish;
pub(crate) mod runs;
pub mod settings;
pub mod state;
pub(crate) mod template;
pub(crate) mod template_error;
