//! Taking the boot files out of a netboot tarball (`boot/vmlinuz-FLAVOR`,
//! `boot/initramfs-FLAVOR`, `boot/modloop-FLAVOR`, beside other flavors, `config-*`,
//! `System.map-*` and, on ARM, `dtbs-*/`), each into a temporary file of the site, hashed on
//! the way; and placing a file at its final name atomically.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use crate::build::publish::Published;
use crate::error::{Error, IoContext, Result};
use crate::fetch::http::remote;

/// The largest boot file accepted from a tarball.
const MAX_MEMBER: u64 = 2 << 30;

/// A member taken out of the tarball, waiting in a temporary file for its final name.
pub(crate) struct Extracted {
    /// The name under `boot/` (and in the site).
    pub name: String,
    /// The bytes, in the site's temporary folder.
    pub tmp: NamedTempFile,
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// What a tarball held of the members asked for.
pub(crate) enum Members {
    /// Every one.
    All(Vec<Extracted>),
    /// Not every one; the kernel flavors it holds (`boot/vmlinuz-FLAVOR`).
    Missing {
        /// The flavors found, sorted.
        flavors: Vec<String>,
    },
}

/// Take `boot/NAME` for every name of `names` out of the gzipped tar `tarball` (downloaded
/// from `url`), into temporary files in `tmp_dir`. Anything unreadable is an error naming
/// `url`.
pub(crate) fn members(
    tarball: &Path,
    names: &[String],
    tmp_dir: &Path,
    url: &str,
) -> Result<Members> {
    let file = File::open(tarball).at(tarball)?;
    let gz = flate2::read::GzDecoder::new(BufReader::new(file));
    let mut archive = tar::Archive::new(gz);
    let bad = |e: std::io::Error| remote(url, format!("not a readable .tar.gz: {e}"));
    let mut found = Vec::new();
    let mut flavors = BTreeSet::new();
    std::fs::create_dir_all(tmp_dir).at(tmp_dir)?;
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        let Some(name) = path.trim_start_matches("./").strip_prefix("boot/") else {
            continue;
        };
        if let Some(f) = name.strip_prefix("vmlinuz-") {
            flavors.insert(f.to_string());
        }
        if !names.iter().any(|n| n == name) || found.iter().any(|e: &Extracted| e.name == name) {
            continue;
        }
        let name = name.to_string();
        if !entry.header().entry_type().is_file() {
            return Err(remote(url, format!("boot/{name} is not a regular file")));
        }
        if entry.size() > MAX_MEMBER {
            let msg = format!("boot/{name} is larger than {MAX_MEMBER} bytes");
            return Err(remote(url, msg));
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!("{name}."))
            .tempfile_in(tmp_dir)
            .at(tmp_dir)?;
        let (sha256, size) = copy_hashed(&mut entry, tmp.as_file_mut())
            .map_err(|e| remote(url, format!("boot/{name}: {e}")))?;
        found.push(Extracted {
            name,
            tmp,
            sha256,
            size,
        });
    }
    if found.len() < names.len() {
        return Ok(Members::Missing {
            flavors: flavors.into_iter().collect(),
        });
    }
    found.sort_by_key(|e| names.iter().position(|n| *n == e.name));
    Ok(Members::All(found))
}

/// Copy `from` into `to` and fsync it; the SHA-256 and length of what was copied.
pub(crate) fn copy_hashed(from: &mut impl Read, to: &mut File) -> std::io::Result<(String, u64)> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        size += n as u64;
    }
    to.sync_all()?;
    Ok((hex::encode(hash.finalize()), size))
}

/// The SHA-256 of the file at `path`.
pub(crate) fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hex::encode(hash.finalize()))
}

/// Put `tmp` (holding bytes whose SHA-256 is `sha256`) at `dest` by a rename, readable by
/// everyone (mode 0644), then fsync the folder. A `dest` already holding those bytes is left
/// alone (its mtime and ETag stay) and `tmp` is removed.
pub(crate) fn place(tmp: NamedTempFile, sha256: &str, dest: &Path) -> Result<Published> {
    let existed = match sha256_file(dest) {
        Ok(old) if old == sha256 => return Ok(Published::Unchanged),
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => {
            return Err(Error::io(dest, e));
        }
        // Unreadable (permissions, a dangling link): replaced by the new file.
        Err(_) => true,
    };
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .at(tmp.path())?;
    }
    tmp.persist(dest).map_err(|e| Error::io(dest, e.error))?;
    if let Some(dir) = dest.parent()
        && let Ok(d) = File::open(dir)
    {
        // Best effort: makes the rename itself durable.
        let _ = d.sync_all();
    }
    Ok(if existed {
        Published::Updated
    } else {
        Published::Created
    })
}
