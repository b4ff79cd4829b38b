//! Where kept manifests live: `.ovl-state/manifests/MAC/ID.json.gz` (states, the fleet's
//! differences, conflicts: read for every merge) and `ID.text.gz` beside it (the text
//! contents: read only when a merge needs a base's text), each gzip-compressed JSON, mode 0600,
//! written atomically; the newest `[capture] history` per device are kept.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{Given, SCHEMA, Texts};
use crate::build::publish::{self, Step, Unit};
use crate::error::{Error, IoContext, Result};
use crate::mac::Mac;
use crate::site::Site;

/// A kept file larger than this (uncompressed) is not read.
const READ_CAP: u64 = 64 << 20;
/// A temporary older than this in a device's folder is what a killed build left.
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(60);
/// The file name ending of a kept manifest.
const RECORD_SUFFIX: &str = ".json.gz";
/// The file name ending of a kept manifest's text contents.
const TEXT_SUFFIX: &str = ".text.gz";

/// The text contents of one kept manifest, as written.
#[derive(Serialize, Deserialize)]
struct TextFile {
    schema: u32,
    text: BTreeMap<String, String>,
}

/// The folder of a device's kept manifests.
fn device_dir(site: &Site, mac: &Mac) -> PathBuf {
    site.manifests_dir().join(mac.to_string())
}

/// The file of one kept manifest.
pub(crate) fn record_path(site: &Site, mac: &Mac, id: &str) -> PathBuf {
    device_dir(site, mac).join(format!("{id}{RECORD_SUFFIX}"))
}

/// The file of one kept manifest's text contents.
fn text_path(record: &Path) -> PathBuf {
    let name = record
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(RECORD_SUFFIX))
        .unwrap_or("");
    record.with_file_name(format!("{name}{TEXT_SUFFIX}"))
}

/// The uncompressed bytes of the gzip file `path`; `None` when there is none.
fn read_gz(path: &Path) -> Result<Option<Vec<u8>>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(f)
        .take(READ_CAP + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::at_path(path, format!("unreadable kept manifest: {e}")))?;
    if out.len() as u64 > READ_CAP {
        return Err(Error::at_path(path, "kept manifest too large"));
    }
    Ok(Some(out))
}

/// `json` gzip-compressed (fast: written for every new build).
fn gz(path: &Path, json: &[u8]) -> Result<Vec<u8>> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(json).at(path)?;
    gz.finish().at(path)
}

/// The manifest `mac` was given in build `id` (its texts read when first asked for);
/// `Ok(None)` when none is kept.
pub(crate) fn load(site: &Site, mac: &Mac, id: &str) -> Result<Option<Given>> {
    let path = record_path(site, mac, id);
    let Some(json) = read_gz(&path)? else {
        return Ok(None);
    };
    let mut given: Given = serde_json::from_slice(&json)
        .map_err(|e| Error::at_path(&path, format!("unreadable kept manifest: {e}")))?;
    if given.schema != SCHEMA || given.id != id {
        return Err(Error::at_path(
            &path,
            format!(
                "kept manifest of another format or build (schema {})",
                given.schema
            ),
        ));
    }
    given.text = Texts {
        file: Some(text_path(&path)),
        map: Default::default(),
    };
    Ok(Some(given))
}

/// The text contents kept at `path`.
pub(super) fn read_texts(path: &Path) -> Result<BTreeMap<String, String>> {
    let json = read_gz(path)?.unwrap_or_default();
    let t: TextFile = serde_json::from_slice(&json)
        .map_err(|e| Error::at_path(path, format!("unreadable kept texts: {e}")))?;
    Ok(t.text)
}

/// Keep `given` as part of `unit`: its texts and manifest written to temporaries, renamed in
/// the unit's [`Step::Keep`] (texts first), then all but the newest `keep` manifests of the
/// device removed in its [`Step::Prune`], never the one named `protect` (the base of its
/// current capture). A manifest already kept with the same bytes is only marked as the
/// newest, now.
pub(crate) fn stage(
    site: &Site,
    given: &Given,
    keep: usize,
    protect: Option<&str>,
    unit: &mut Unit<'_>,
) -> Result<()> {
    let mac: Mac = given
        .mac
        .parse()
        .map_err(|e| Error::Env(format!("kept manifest: {e}")))?;
    let path = record_path(site, &mac, &given.id);
    let bad = |e: serde_json::Error| Error::Env(format!("kept manifest: {e}"));
    let bytes = gz(&path, &serde_json::to_vec(given).map_err(bad)?)?;
    let dir = device_dir(site, &mac);
    std::fs::create_dir_all(&dir).at(&dir)?;
    if std::fs::read(&path).is_ok_and(|old| old == bytes) {
        let f = std::fs::File::options().write(true).open(&path).at(&path)?;
        f.set_modified(SystemTime::now()).at(&path)?;
    } else {
        let texts = TextFile {
            schema: SCHEMA,
            text: given.text.get().clone(),
        };
        let text_path = text_path(&path);
        let text_bytes = gz(&text_path, &serde_json::to_vec(&texts).map_err(bad)?)?;
        // The temporaries are hidden beside their targets and never named like kept files.
        unit.write(Step::Keep, &text_path, &text_bytes, ".texts.", Some(0o600))?;
        unit.write(Step::Keep, &path, &bytes, ".manifest.", Some(0o600))?;
    }
    let protect = protect.unwrap_or(&given.id).to_string();
    unit.then(Step::Prune, Box::new(move || prune(&dir, keep, &protect)));
    Ok(())
}

/// Remove all but the newest `keep` manifests in `dir` (by mtime, then name), never
/// `protect`'s, with their texts; texts whose manifest is gone; and the temporaries a killed
/// build left there, once stale.
fn prune(dir: &Path, keep: usize, protect: &str) -> Result<()> {
    publish::clean_stale_temps(dir, STALE_TEMP, false);
    let mut kept: Vec<(SystemTime, String)> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    for e in std::fs::read_dir(dir).at(dir)?.filter_map(|e| e.ok()) {
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Some(id) = name.strip_suffix(TEXT_SUFFIX) {
            texts.push(id.to_string());
        } else if let Some(id) = name.strip_suffix(RECORD_SUFFIX)
            && let Ok(t) = e.metadata().and_then(|m| m.modified())
        {
            kept.push((t, id.to_string()));
        }
    }
    kept.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let mut gone: Vec<String> = texts
        .into_iter()
        .filter(|t| !kept.iter().any(|(_, id)| id == t))
        .map(|t| format!("{t}{TEXT_SUFFIX}"))
        .collect();
    for (_, id) in kept.into_iter().skip(keep).filter(|(_, id)| id != protect) {
        gone.push(format!("{id}{RECORD_SUFFIX}"));
        gone.push(format!("{id}{TEXT_SUFFIX}"));
    }
    for name in gone {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_are_kept_with_their_texts_and_the_protected_one_too() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            for suffix in [RECORD_SUFFIX, TEXT_SUFFIX] {
                let p = d.join(format!("{id}{suffix}"));
                std::fs::write(&p, b"x").unwrap();
                let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(100 + i as u64);
                let f = std::fs::File::options().write(true).open(&p).unwrap();
                f.set_modified(t).unwrap();
            }
        }
        std::fs::write(d.join(format!("orphan{TEXT_SUFFIX}")), b"x").unwrap();
        prune(d, 2, "a").unwrap();
        let mut left: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "a.json.gz",
                "a.text.gz",
                "c.json.gz",
                "c.text.gz",
                "d.json.gz",
                "d.text.gz"
            ]
        );
    }
}
