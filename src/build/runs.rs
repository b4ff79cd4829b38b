//! Shared runs compressed once. A device's archive is one tar stream written as several gzip
//! members (RFC 1952 §2.2; busybox, GNU gzip and every tar reading through them take the
//! members as one stream). The entries every device of a profile has — what comes unchanged
//! from the profile's layers — form runs between the per-device entries (hostname, world,
//! runlevels, device layers, capture, build identity, rendered templates); each run large
//! enough is compressed once per build and its member reused for every device that has the
//! very same run (the same tar bytes, so equal runs of different profiles share too). The per-device entries are compressed per device.
//!
//! Which entries are shared depends only on the device's own plan, never on the other devices
//! built beside it: an archive is byte for byte the same built alone or with the fleet.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use crate::build::archive;
use crate::build::manifest::{Entry, Kind, Manifest};
use crate::error::Result;

/// A shared run smaller than this (tar bytes) is compressed with the per-device entries
/// around it: an extra member would save less than it costs.
pub(crate) const MIN_SHARED_RUN: usize = 16 * 1024;

/// The compressed runs one build keeps, in all (bytes); runs beyond it are compressed for
/// each device that has them.
pub(crate) const CACHE_CAP: usize = 256 << 20;

/// The tar end-of-archive marker: two zero blocks, written once, at the very end.
const END_OF_ARCHIVE: [u8; 1024] = [0; 1024];

/// What tells a device's shared entries from its own: the labels of its profile's layers, and
/// the paths rendered from templates (different on every device).
#[derive(Debug, Clone, Default)]
pub(crate) struct Shareable {
    /// The labels (`overlays/base`, `captures/ref/ref.apkovl.tar.gz`) of the profile chain's
    /// layers.
    pub(crate) layers: BTreeSet<String>,
    /// Paths whose content a template rendered for this device.
    pub(crate) rendered: BTreeSet<String>,
}

impl Shareable {
    /// Does the entry at `path` come unchanged from a layer of the profile?
    pub(crate) fn contains(&self, path: &str, e: &Entry) -> bool {
        self.layers.contains(&e.origin) && !self.rendered.contains(path)
    }
}

/// One stretch of a device's entries, compressed as one gzip member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    /// Shared with other devices (looked up in the build's [`RunCache`]).
    pub(crate) shared: bool,
    /// The entries, as indexes into the manifest's entries in archive order.
    pub(crate) range: std::ops::Range<usize>,
}

/// A cache slot: a run seen once (not kept: a run seen once is mostly never seen again), or
/// its tar and member, kept once the run came a second time.
enum Slot {
    Seen,
    Ready { tar: Arc<[u8]>, member: Arc<[u8]> },
}

/// The compressed shared runs of one build (dropped with it), at most [`CACHE_CAP`] bytes,
/// found by the length and CRC-32 of their tar and reused only when the tar is byte for byte
/// the same: a collision costs a compression, never a wrong archive.
#[derive(Default)]
pub(crate) struct RunCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<(usize, u32), Slot>,
    bytes: usize,
    stats: RunStats,
}

/// What a [`RunCache`] did: members reused, and shared runs compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RunStats {
    /// Shared runs whose member was reused.
    pub(crate) reused: usize,
    /// Shared runs compressed (first and second sight of each run, and runs over the cap).
    pub(crate) compressed: usize,
    /// Bytes of runs kept (tar and member).
    pub(crate) kept_bytes: usize,
}

impl std::fmt::Debug for RunCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunCache")
            .field("stats", &self.stats())
            .finish()
    }
}

impl RunCache {
    /// What the cache did so far.
    pub(crate) fn stats(&self) -> RunStats {
        self.lock().stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The gzip member of the shared run `tar` (compressed at the build's one level): reused
    /// when this build already compressed the same bytes twice, else compressed now (and kept
    /// the second time they come).
    fn member(&self, tar: &[u8], level: u32) -> Arc<[u8]> {
        let mut crc = flate2::Crc::new();
        crc.update(tar);
        let key = (tar.len(), crc.sum());
        let keep = {
            let mut c = self.lock();
            match c.slots.get(&key) {
                Some(Slot::Ready { tar: t, member }) if **t == *tar => {
                    let z = member.clone();
                    c.stats.reused += 1;
                    return z;
                }
                Some(Slot::Ready { .. }) => false,
                Some(Slot::Seen) => true,
                None => {
                    c.slots.insert(key, Slot::Seen);
                    false
                }
            }
        };
        let z: Arc<[u8]> = archive::gzip(tar, level).into();
        let mut c = self.lock();
        c.stats.compressed += 1;
        let size = tar.len() + z.len();
        if keep && c.bytes + size <= CACHE_CAP && matches!(c.slots.get(&key), Some(Slot::Seen)) {
            c.bytes += size;
            c.stats.kept_bytes = c.bytes;
            let tar = Arc::from(tar);
            c.slots.insert(
                key,
                Slot::Ready {
                    tar,
                    member: z.clone(),
                },
            );
        }
        z
    }
}

/// The tar size of an entry (header and padded data; long names add a little).
fn tar_size(e: &Entry) -> usize {
    match &e.kind {
        Kind::File(b) => 512 + b.len().div_ceil(512) * 512,
        _ => 512,
    }
}

/// Split `entries` (archive order) into runs: the shared ones of at least
/// [`MIN_SHARED_RUN`] bytes, and the per-device stretches between them (each one run).
pub(crate) fn split(entries: &[(&String, &Entry)], shareable: &Shareable) -> Vec<Run> {
    let mut raw: Vec<Run> = Vec::new();
    for (i, (path, e)) in entries.iter().enumerate() {
        let shared = shareable.contains(path, e);
        match raw.last_mut() {
            Some(r) if r.shared == shared => r.range.end = i + 1,
            _ => raw.push(Run {
                shared,
                range: i..i + 1,
            }),
        }
    }
    let mut out: Vec<Run> = Vec::new();
    for mut r in raw {
        if r.shared {
            let size: usize = entries[r.range.clone()]
                .iter()
                .map(|(_, e)| tar_size(e))
                .sum();
            r.shared = size >= MIN_SHARED_RUN;
        }
        match out.last_mut() {
            Some(last) if !last.shared && !r.shared => last.range.end = r.range.end,
            _ => out.push(r),
        }
    }
    out
}

/// The archive of `m`: its tar (entries with time `mtime`, the end-of-archive marker once at
/// the end) as gzip members at `level`, one per run; shared runs through `cache`.
/// Decompressed as one stream it is exactly [`archive::tar_bytes`].
pub(crate) fn compress(
    m: &Manifest,
    shareable: &Shareable,
    mtime: u64,
    level: u32,
    cache: &RunCache,
) -> Result<Vec<u8>> {
    let entries: Vec<(&String, &Entry)> = m.entries.iter().collect();
    let runs = split(&entries, shareable);
    let mut out = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let last = i + 1 == runs.len();
        let mut tar = archive::entries_tar(&entries[r.range.clone()], mtime)?;
        if r.shared {
            out.extend_from_slice(&cache.member(&tar, level));
            if last {
                out.extend(archive::gzip(&END_OF_ARCHIVE, level));
            }
        } else {
            if last {
                tar.extend_from_slice(&END_OF_ARCHIVE);
            }
            out.extend(archive::gzip(&tar, level));
        }
    }
    if runs.is_empty() {
        out = archive::gzip(&END_OF_ARCHIVE, level);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn manifest(files: &[(&str, usize, &str)]) -> Manifest {
        let mut m = Manifest::default();
        for (path, size, origin) in files {
            let data: Vec<u8> = (0..*size).map(|i| (i * 7 % 251) as u8).collect();
            m.put(path, Kind::File(Arc::from(data)), 0o644, None, origin)
                .unwrap();
        }
        m
    }

    fn fleet() -> Shareable {
        Shareable {
            layers: ["overlays/fleet".to_string()].into(),
            rendered: ["etc/app/motd".to_string()].into(),
        }
    }

    fn members(gz: &[u8]) -> usize {
        let mut rest = gz;
        let mut n = 0;
        while !rest.is_empty() {
            let mut d = flate2::bufread::GzDecoder::new(rest);
            std::io::copy(&mut d, &mut std::io::sink()).unwrap();
            rest = d.into_inner();
            n += 1;
        }
        n
    }

    #[test]
    fn members_decompress_to_the_one_tar_and_shared_runs_are_reused() {
        let f = "overlays/fleet";
        let m = manifest(&[
            ("etc/app/a.conf", 20_000, f),
            ("etc/app/b.conf", 20_000, f),
            ("etc/app/motd", 100, f),
            ("etc/app/z.conf", 30_000, f),
            ("etc/hostname", 10, "profile p"),
            ("etc/zz/tiny", 10, f),
            ("root/x", 10, "profile p"),
            ("usr/big", 40_000, f),
        ]);
        let entries: Vec<_> = m.entries.iter().collect();
        let runs = split(&entries, &fleet());
        let shared: Vec<bool> = runs.iter().map(|r| r.shared).collect();
        // etc, etc/app, a, b | motd | z | hostname, etc/zz, tiny (too small to share), root,
        // root/x | usr, big (and the end marker in a member of its own)
        assert_eq!(shared, [true, false, true, false, true], "{runs:?}");
        let cache = RunCache::default();
        let gz = compress(&m, &fleet(), 7, 6, &cache).unwrap();
        let mut tar = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(tar, archive::tar_bytes(&m, 7).unwrap());
        assert_eq!(members(&gz), 6);
        // Deterministic, and the same bytes whether the cache holds the runs or not.
        for _ in 0..3 {
            assert_eq!(compress(&m, &fleet(), 7, 6, &cache).unwrap(), gz);
        }
        let s = cache.stats();
        assert_eq!((s.compressed, s.reused), (6, 6), "{s:?}");
        let alone = compress(&m, &fleet(), 7, 6, &RunCache::default()).unwrap();
        assert_eq!(alone, gz);
    }

    #[test]
    fn a_shared_run_at_the_end_gets_the_end_marker_in_its_own_member() {
        let m = manifest(&[("usr/big", 40_000, "overlays/fleet")]);
        let gz = compress(&m, &fleet(), 0, 6, &RunCache::default()).unwrap();
        assert_eq!(members(&gz), 2);
        let mut tar = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(tar, archive::tar_bytes(&m, 0).unwrap());
        let empty = compress(&Manifest::default(), &fleet(), 0, 6, &RunCache::default());
        assert_eq!(empty.unwrap(), archive::gzip(&END_OF_ARCHIVE, 6));
    }

    #[test]
    fn a_crc_collision_costs_a_compression_never_a_wrong_member() {
        let cache = RunCache::default();
        let tar = vec![7u8; 40_000];
        let mut crc = flate2::Crc::new();
        crc.update(&tar);
        let other: Arc<[u8]> = Arc::from(vec![8u8; 40_000]);
        let wrong: Arc<[u8]> = archive::gzip(&other, 6).into();
        cache.lock().slots.insert(
            (tar.len(), crc.sum()),
            Slot::Ready {
                tar: other,
                member: wrong.clone(),
            },
        );
        let z = cache.member(&tar, 6);
        assert_ne!(z, wrong);
        assert_eq!(&z[..], &archive::gzip(&tar, 6)[..]);
        assert_eq!(cache.stats().reused, 0);
    }

    #[test]
    fn nothing_shared_is_one_member_as_before() {
        let m = manifest(&[("etc/a", 50_000, "profile p"), ("etc/b", 5, "overlays/x")]);
        let gz = compress(&m, &fleet(), 0, 6, &RunCache::default()).unwrap();
        assert_eq!(gz, archive::gzip(&archive::tar_bytes(&m, 0).unwrap(), 6));
    }
}
