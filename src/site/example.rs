//! `ovl init DIR`: a new site holding the same example profiles, overlays and inventory as
//! the project's own repository.

use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::site::layout::{CAPTURES_DIR, CONFIGS_DIR, SITE_FILE};

include!(concat!(env!("OUT_DIR"), "/example.rs"));

/// Write the example site into `dir`; refuses a folder that already holds a site.
pub fn write_example(dir: &Path) -> Result<Vec<String>> {
    if dir.join(SITE_FILE).exists() {
        return Err(Error::Usage(format!(
            "{} already holds a site (ovl.toml exists); nothing written",
            dir.display()
        )));
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
