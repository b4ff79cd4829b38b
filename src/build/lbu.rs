//! Reading an lbu-made archive (gzip-compressed tar) as a layer, safely: in memory, never
//! extracted; absolute names, `..`, device nodes, fifos and symlinks that climb above `/` are
//! refused (SPEC §7). Devices write their own captures, so the reader also bounds what a
//! hostile archive can cost: the gzip stream is decoded as it is read, every member's size is
//! checked against [`ArchiveLimits`] before a byte of it is read, and the tar headers, long
//! names and skipped data between two members have a budget of their own.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use flate2::read::MultiGzDecoder;

use crate::build::layer::{LayerEntry, LayerSource, LayerTree, Node, StoredMeta};
use crate::error::{Error, Result};

/// Bytes of tar metadata (headers, GNU long names, pax records, padding, the data of members
/// that are not files) allowed between two members.
const METADATA_STEP: u64 = 1 << 20;
/// Bytes of tar metadata allowed in one archive.
const METADATA_TOTAL: u64 = 64 << 20;

/// What one archive layer may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Most bytes its files may hold, uncompressed (`[build] max_capture_bytes`).
    pub max_bytes: u64,
    /// Most entries.
    pub max_entries: usize,
}

impl ArchiveLimits {
    /// Limits for a layer: `max_bytes` of files, 200,000 entries.
    pub fn new(max_bytes: u64) -> ArchiveLimits {
        ArchiveLimits {
            max_bytes,
            max_entries: 200_000,
        }
    }
}

/// The limits of reading back an archive ovl published itself (for `ovl diff`).
pub(crate) const PUBLISHED_LIMITS: ArchiveLimits = ArchiveLimits {
    max_bytes: 1 << 30,
    max_entries: 200_000,
};

/// Read an lbu archive (gzip-compressed tar) from `reader`; `path` names it in errors.
/// Public for the fuzz target (`fuzz/fuzz_targets/lbu_reader.rs`).
pub fn read_archive(
    source: &LayerSource,
    path: &Path,
    reader: impl Read,
    limits: ArchiveLimits,
) -> Result<LayerTree> {
    let budget = Rc::new(Cell::new(METADATA_STEP));
    let stream = Budget {
        inner: MultiGzDecoder::new(reader),
        left: budget.clone(),
    };
    let mut ar = tar::Archive::new(stream);
    let bad = |e| unreadable(path, e);
    let mut members = ar.entries().map_err(bad)?;
    let mut r = Reader {
        path,
        limits,
        entries: Vec::new(),
        files: HashMap::new(),
        total: 0,
    };
    let mut metadata: u64 = 0;
    loop {
        let step = METADATA_STEP.min(METADATA_TOTAL.saturating_sub(metadata));
        budget.set(step);
        let Some(item) = members.next() else { break };
        metadata += step - budget.get();
        let mut item = item.map_err(bad)?;
        if metadata >= METADATA_TOTAL {
            return Err(Error::at_path(
                path,
                format!("more than {METADATA_TOTAL} bytes of tar headers and names"),
            ));
        }
        r.member(&mut item, &budget)?;
    }
    // The last occurrence of a name wins, as when tar extracts; keep parents first.
    let mut dedup: BTreeMap<String, LayerEntry> = BTreeMap::new();
    for e in r.entries {
        dedup.insert(e.path.clone(), e);
    }
    Ok(LayerTree {
        source: source.clone(),
        entries: dedup.into_values().collect(),
    })
}

/// The decompressed tar stream with a byte budget set by [`read_archive`] before each step:
/// once spent, reading fails, so a header claiming a 1 GiB long name costs nothing.
struct Budget<R> {
    inner: R,
    left: Rc<Cell<u64>>,
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.left.get();
        if buf.is_empty() {
            return Ok(0);
        }
        if left == 0 {
            return Err(std::io::Error::other(format!(
                "more than {METADATA_STEP} bytes of tar headers, long names or skipped data between two members"
            )));
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..n])?;
        self.left.set(left - got as u64);
        Ok(got)
    }
}

/// The members read so far.
struct Reader<'a> {
    path: &'a Path,
    limits: ArchiveLimits,
    entries: Vec<LayerEntry>,
    /// Regular files so far by name, for hard links.
    files: HashMap<String, Arc<[u8]>>,
    /// Bytes of files so far.
    total: u64,
}

impl Reader<'_> {
    /// Read one member into `entries`.
    fn member<R: Read>(&mut self, item: &mut tar::Entry<'_, R>, budget: &Cell<u64>) -> Result<()> {
        let path = self.path;
        if self.entries.len() >= self.limits.max_entries {
            return Err(Error::at_path(
                path,
                format!("more than {} entries", self.limits.max_entries),
            ));
        }
        let raw = item.path_bytes().into_owned();
        let Some(name) = member_name(path, &raw)? else {
            return Ok(());
        };
        let stored = stored_meta(path, &name, item.header())?;
        let node = self.node(&name, item, budget)?;
        if let Node::File(b) = &node {
            self.files.insert(name.clone(), b.clone());
        }
        self.entries.push(LayerEntry {
            path: name,
            node,
            mode: stored.mode,
            stored: Some(stored),
            source: path.to_path_buf(),
        });
        Ok(())
    }

    /// The content of the member `name`: folders, files (within the limits), symlinks that
    /// stay inside the root and hard links to earlier files; anything else is refused.
    fn node<R: Read>(
        &mut self,
        name: &str,
        item: &mut tar::Entry<'_, R>,
        budget: &Cell<u64>,
    ) -> Result<Node> {
        let path = self.path;
        let refuse = |what: String| Err(Error::at_path(path, format!("member {name}{what}")));
        match item.header().entry_type() {
            tar::EntryType::Directory => Ok(Node::Dir),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = item.size();
                let max = self.limits.max_bytes;
                if size > max {
                    return refuse(format!(
                        " is {size} bytes, more than [build] max_capture_bytes ({max})"
                    ));
                }
                self.total += size;
                if self.total > max {
                    return refuse(format!(
                        " brings the layer's files to {} bytes, more than [build] max_capture_bytes ({max})",
                        self.total
                    ));
                }
                budget.set(size);
                let mut buf = Vec::new();
                buf.try_reserve_exact(usize::try_from(size).unwrap_or(usize::MAX))
                    .map_err(|_| Error::at_path(path, format!("member {name}: out of memory")))?;
                item.read_to_end(&mut buf)
                    .map_err(|e| unreadable(path, e))?;
                Ok(Node::File(buf.into()))
            }
            tar::EntryType::Symlink => {
                let target = link_target(path, name, item)?;
                if link_escapes(name, &target) {
                    return refuse(format!(": symlink to {target:?} escapes the root"));
                }
                Ok(Node::Symlink(target))
            }
            tar::EntryType::Link => {
                let target = link_target(path, name, item)?;
                let Some(t) = member_name(path, target.as_bytes())? else {
                    return refuse(": hard link to the root".into());
                };
                match self.files.get(&t) {
                    Some(b) => Ok(Node::File(b.clone())),
                    None => refuse(format!(
                        ": hard link to {t}, which is not an earlier regular file"
                    )),
                }
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                refuse(" is a device node; refusing it".into())
            }
            tar::EntryType::Fifo => refuse(" is a fifo; refusing it".into()),
            other => refuse(format!(" has an unsupported type {other:?}")),
        }
    }
}

/// Normalise an archive member name: strip `./`, refuse absolute names and `..`.
fn member_name(archive: &Path, raw: &[u8]) -> Result<Option<String>> {
    let Ok(name) = std::str::from_utf8(raw) else {
        return Err(Error::at_path(
            archive,
            format!(
                "member name {:?} is not valid UTF-8",
                String::from_utf8_lossy(raw)
            ),
        ));
    };
    if name.starts_with('/') {
        return Err(Error::at_path(
            archive,
            format!("member {name:?} has an absolute name"),
        ));
    }
    let mut parts = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(Error::at_path(
                    archive,
                    format!("member {name:?} contains `..`"),
                ));
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        Ok(None)
    } else {
        Ok(Some(parts.join("/")))
    }
}

/// Does a relative symlink target, resolved from the link's folder, climb above the root?
pub(crate) fn link_escapes(link_path: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return false;
    }
    let mut depth: i64 = link_path.split('/').count() as i64 - 1;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

/// The archive at `path` cannot be read as a gzip-compressed tar.
fn unreadable(path: &Path, e: std::io::Error) -> Error {
    Error::at_path(
        path,
        format!("not a readable gzip-compressed tar archive: {e}"),
    )
}

/// Owner and mode of the member `name`, as stored.
fn stored_meta(path: &Path, name: &str, h: &tar::Header) -> Result<StoredMeta> {
    let bad = |e| unreadable(path, e);
    Ok(StoredMeta {
        mode: h.mode().map_err(bad)? & 0o7777,
        uid: u32::try_from(h.uid().map_err(bad)?)
            .map_err(|_| Error::at_path(path, format!("member {name}: uid out of range")))?,
        gid: u32::try_from(h.gid().map_err(bad)?)
            .map_err(|_| Error::at_path(path, format!("member {name}: gid out of range")))?,
        user: h.username().ok().flatten().unwrap_or("").to_string(),
        group: h.groupname().ok().flatten().unwrap_or("").to_string(),
    })
}

fn link_target<R: Read>(path: &Path, name: &str, item: &tar::Entry<'_, R>) -> Result<String> {
    let t = item
        .link_name_bytes()
        .ok_or_else(|| Error::at_path(path, format!("member {name}: link without a target")))?;
    String::from_utf8(t.into_owned()).map_err(|_| {
        Error::at_path(
            path,
            format!("member {name}: link target is not valid UTF-8"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert!(!link_escapes(
            "etc/runlevels/default/sshd",
            "/etc/init.d/sshd"
        ));
        assert!(!link_escapes("etc/a", "../usr/bin/x"));
        assert!(link_escapes("etc/a", "../../x"));
        assert!(link_escapes("a", "../x"));
        assert!(!link_escapes("etc/ssl/cert.pem", "certs/ca.pem"));
    }

    /// A gzip'd tar of `members` (name, type, size claimed, data).
    fn archive(members: &[(&str, tar::EntryType, u64, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, ty, size, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*ty);
            h.set_size(*size);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            b.append_data(&mut h, name, *data).unwrap();
        }
        crate::build::archive::gzip(&b.into_inner().unwrap(), 1)
    }

    fn read(bytes: &[u8], max: u64) -> Result<LayerTree> {
        let p = Path::new("c.apkovl.tar.gz");
        read_archive(
            &LayerSource::Archive(p.into()),
            p,
            bytes,
            ArchiveLimits::new(max),
        )
    }

    #[test]
    fn member_and_total_sizes_are_capped_before_reading() {
        let f = tar::EntryType::Regular;
        let ok = archive(&[("etc/a", f, 6, b"hello\n"), ("etc/b", f, 4, b"abc\n")]);
        assert_eq!(read(&ok, 10).unwrap().entries.len(), 2);
        let e = read(&ok, 9).unwrap_err().to_string();
        assert!(
            e.contains("member etc/b brings the layer's files to 10 bytes, more than [build] max_capture_bytes (9)"),
            "{e}"
        );
        let e = read(&ok, 5).unwrap_err().to_string();
        assert!(e.contains("member etc/a is 6 bytes"), "{e}");
    }

    #[test]
    fn long_names_have_a_budget() {
        let long = "d/".repeat(600_000) + "f";
        let f = tar::EntryType::Regular;
        let bytes = archive(&[(long.as_str(), f, 1, b"x")]);
        let e = read(&bytes, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("bytes of tar headers, long names"), "{e}");
        let fine = "d/".repeat(1000) + "f";
        assert!(read(&archive(&[(fine.as_str(), f, 1, b"x")]), 10).is_ok());
    }
}
