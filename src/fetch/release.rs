//! Alpine's release index, `MIRROR/VERSION/releases/ARCH/latest-releases.yaml`: a YAML list
//! of one entry per image (`flavor: alpine-minirootfs`, `alpine-netboot`, `alpine-standard`,
//! …), each with its `file`, `version`, `size`, `sha256`. `ovl fetch` takes the netboot
//! tarball's entry.

use serde::Deserialize;

use crate::error::{Error, Result};

/// The `flavor` of the netboot tarball's entry (kernel, initramfs and modloop of every kernel
/// flavor the release builds for the architecture).
pub(crate) const NETBOOT: &str = "alpine-netboot";

/// The netboot tarball of a release, as the index describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Netboot {
    /// File name beside the index, e.g. `alpine-netboot-3.20.3-x86_64.tar.gz`.
    pub file: String,
    /// Lowercase hex SHA-256 of the tarball.
    pub sha256: String,
    /// Release version, e.g. `3.20.3`.
    pub version: String,
    /// Size in bytes, when the index gives it.
    pub size: Option<u64>,
}

/// One entry of the index; every other key is ignored.
#[derive(Debug, Deserialize)]
struct Entry {
    flavor: Option<String>,
    file: Option<String>,
    sha256: Option<String>,
    version: Option<Scalar>,
    size: Option<u64>,
}

/// A version as YAML may type it: `3.20.3` is a string, but `3.21` would be a float.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scalar {
    /// A string.
    Text(String),
    /// A number YAML read as a float.
    Float(f64),
    /// A number YAML read as an integer.
    Int(u64),
}

impl Scalar {
    fn text(self) -> String {
        match self {
            Scalar::Text(s) => s,
            Scalar::Float(f) => f.to_string(),
            Scalar::Int(i) => i.to_string(),
        }
    }
}

/// The netboot entry of the index `yaml`, downloaded from `url` (named in every error).
pub(crate) fn netboot(yaml: &[u8], url: &str) -> Result<Netboot> {
    let bad = |what: String| Error::Env(format!("{url}: {what}"));
    let entries: Vec<Entry> = serde_norway::from_slice(yaml)
        .map_err(|e| bad(format!("not a release index (latest-releases.yaml): {e}")))?;
    let entry = entries
        .into_iter()
        .find(|e| e.flavor.as_deref() == Some(NETBOOT))
        .ok_or_else(|| bad(format!("no entry with `flavor: {NETBOOT}`")))?;
    let file = entry
        .file
        .ok_or_else(|| bad(format!("the {NETBOOT} entry has no `file`")))?;
    if file.is_empty()
        || file.starts_with('.')
        || !file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
    {
        return Err(bad(format!(
            "the {NETBOOT} entry's file {file:?} is not a plain file name"
        )));
    }
    let sha256 = entry
        .sha256
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| bad(format!("the {NETBOOT} entry has no valid `sha256`")))?;
    let version = entry
        .version
        .map(Scalar::text)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| bad(format!("the {NETBOOT} entry has no `version`")))?;
    Ok(Netboot {
        file,
        sha256,
        version,
        size: entry.size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of a real index (v3.20, x86_64), shortened.
    const INDEX: &str = r#"---
-
  title: "Mini root filesystem"
  desc: "Minimal root filesystem.
    For use in containers
    and minimal chroots."
  profile: minirootfs
  image: alpine-minirootfs
  flavor: alpine-minirootfs
  file: alpine-minirootfs-3.20.3-x86_64.tar.gz
  iso: alpine-minirootfs-3.20.3-x86_64.tar.gz
  date: 2024-09-06
  time: 07:04:24
  size: 3622001
  sha256: 0ce7d1e9b2ea3d1a5e3b1ad1a4b6e5f8e3e7f1c1b9d2e4f6a8c0e2b4d6f8a0c2
  sha512: 00
  version: 3.20.3
  branch: v3.20
  arch: x86_64
-
  title: "Netboot"
  desc: "Kernel, initramfs and modloop for
    netboot.
    "
  profile: netboot
  image: alpine-netboot
  flavor: alpine-netboot
  file: alpine-netboot-3.20.3-x86_64.tar.gz
  iso: alpine-netboot-3.20.3-x86_64.tar.gz
  date: 2024-09-06
  time: 07:04:24
  size: 291389893
  sha256: 9A7769EA8FA1737B1B49D82F1BDD53D0A17338D6D3B7CFC6F2C3EC5158596D8B
  version: 3.20.3
  branch: v3.20
  arch: x86_64
"#;

    #[test]
    fn takes_the_netboot_entry() {
        let n = netboot(INDEX.as_bytes(), "http://m/x.yaml").unwrap();
        assert_eq!(n.file, "alpine-netboot-3.20.3-x86_64.tar.gz");
        assert_eq!(n.version, "3.20.3");
        assert_eq!(n.size, Some(291_389_893));
        assert_eq!(
            n.sha256,
            "9a7769ea8fa1737b1b49d82f1bdd53d0a17338d6d3b7cfc6f2c3ec5158596d8b"
        );
        let float = INDEX.replace("version: 3.20.3", "version: 3.21");
        assert_eq!(netboot(float.as_bytes(), "u").unwrap().version, "3.21");
    }

    #[test]
    fn errors_name_the_url() {
        let e = netboot(b"<html>404</html>", "http://m/i.yaml").unwrap_err();
        assert!(e.to_string().starts_with("http://m/i.yaml: "), "{e}");
        let no_netboot = INDEX.replace("flavor: alpine-netboot", "flavor: alpine-virt");
        let e = netboot(no_netboot.as_bytes(), "http://m/i.yaml").unwrap_err();
        assert!(
            e.to_string()
                .contains("no entry with `flavor: alpine-netboot`")
        );
        let traversal = INDEX.replace(
            "file: alpine-netboot-3.20.3-x86_64.tar.gz",
            "file: ../../etc/passwd",
        );
        assert!(netboot(traversal.as_bytes(), "u").is_err());
        let short = INDEX.replace("sha256: 9A77", "sha256: 77");
        assert!(netboot(short.as_bytes(), "u").is_err());
    }
}
