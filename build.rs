//! Embeds the repository's example site (ovl.toml, devices.toml, profiles/, overlays/) into
//! the binary, for `ovl init`.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn walk(root: &Path, rel: &Path, out: &mut Vec<(String, PathBuf, u32)>) {
    let dir = root.join(rel);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut items: Vec<_> = rd.filter_map(Result::ok).collect();
    items.sort_by_key(|e| e.file_name());
    for e in items {
        let r = rel.join(e.file_name());
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if meta.is_dir() {
            walk(root, &r, out);
        } else if meta.is_file() {
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            out.push((r.to_string_lossy().into_owned(), e.path(), mode));
        }
    }
}

fn main() {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for f in ["ovl.toml", "devices.toml"] {
        if root.join(f).is_file() {
            files.push((f.to_string(), root.join(f), 0o644));
        }
        println!("cargo:rerun-if-changed={f}");
    }
    for d in ["profiles", "overlays"] {
        walk(&root, Path::new(d), &mut files);
        println!("cargo:rerun-if-changed={d}");
    }
    let mut src = String::from(
        "/// The example site: (path, content, mode).\npub static EXAMPLE: &[(&str, &[u8], u32)] = &[\n",
    );
    for (rel, abs, mode) in files {
        let _ = writeln!(
            src,
            "    ({rel:?}, include_bytes!({:?}), 0o{mode:o}),",
            abs.display().to_string()
        );
    }
    src.push_str("];\n");
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("example.rs");
    std::fs::write(out, src).expect("write example.rs");
}
