//! `ovl init DIR`: a new site holding the same example profiles, overlays and inventory as
//! the project's own repository. The example's `authorized_keys` holds [`PLACEHOLDER_KEY`],
//! which is no key at all: `ovl check` and `ovl build` warn where it is until it is replaced.

use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::site::layout::{CAPTURES_DIR, CONFIGS_DIR};

include!(concat!(env!("OUT_DIR"), "/example.rs"));

/// The words in the example's `authorized_keys` entry that mark it as a placeholder.
pub const PLACEHOLDER_KEY: &str = "REPLACE-WITH-YOUR-OWN-PUBLIC-KEY";

/// Write the example site into `dir`, which must be missing or empty (a usage error
/// otherwise, exit 2, nothing written).
pub fn write_example(dir: &Path) -> Result<Vec<String>> {
    write_example_into(dir, false)
}

/// Write the example site into `dir`. Without `force`, as [`write_example`]; with `force`,
/// into a folder that is not empty: the example's files replace files of the same names and
/// every other file is left alone.
pub fn write_example_into(dir: &Path, force: bool) -> Result<Vec<String>> {
    if !force {
        refuse_non_empty(dir)?;
    }
    let mut written = Vec::new();
    for (rel, content, mode) in EXAMPLE {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).at(parent)?;
        }
        std::fs::write(&path, content).at(&path)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).at(&path)?;
        written.push(rel.to_string());
    }
    for d in [CONFIGS_DIR, CAPTURES_DIR] {
        std::fs::create_dir_all(dir.join(d)).at(dir.join(d))?;
    }
    Ok(written)
}

/// A usage error unless `dir` is missing or an empty folder.
fn refuse_non_empty(dir: &Path) -> Result<()> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    let what = if names.iter().any(|n| n == crate::site::SITE_FILE) {
        "already holds a site".to_string()
    } else {
        let mut shown: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
        if names.len() > 3 {
            shown.push("…");
        }
        format!("is not empty ({})", shown.join(", "))
    };
    Err(Error::Usage(format!(
        "{} {what}; nothing written (pass --force to write the example's files over it)",
        dir.display()
    )))
}
