//! Shared runs compressed once. A device's archive is one tar stream written as several gzip
//! members (RFC 1952 §2.2; busybox, GNU gzip and every tar reading through them take the
//! members as one stream). The entries every device of a profile has — what comes unchanged
//! from the profile's layers — form runs between the per-device entries (hostname, world,
//! runlevels, device layers, capture, build identity, rendered templates). Long runs are cut
//! into pieces at places chosen by path (see [`split`]), so an entry of the device's own in
//! the middle of a run costs only the piece around it. Each shared piece is compressed once
//! per build and its member reused for every device that has the very same piece (the same
//! tar bytes, so equal pieces of different profiles share too); the per-device entries are
//! compressed per device. The tar's end-of-archive marker comes once, at the very end.
//!
//! Which entries are shared, and where runs are cut, depends only on the device's own plan,
//! never on the other devices built beside it or on the cache: an archive is byte for byte
//! the same built alone or with the fleet.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use crate::build::archive;
use crate::build::manifest::{Entry, Kind, Manifest};
use crate::error::Result;

/// A shared run smaller than this (tar bytes) is compressed with the per-device entries
/// around it: an extra member would save less than it costs.
pub(crate) const MIN_SHARED_RUN: usize = 16 * 1024;

/// A shared run is cut into pieces of at least this many tar bytes (see [`split`]).
pub(crate) const CHUNK_MIN: usize = 32 * 1024;

/// One path in this many is a place where a shared run may be cut.
const CUT_EVERY: u64 = 32;

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
    /// Is the entry at `path` one the other devices of the profile have too: a folder (a
    /// device layer holding a folder of the profile's takes it over, header unchanged), or
    /// what a layer of the profile gives, but for rendered templates? A guess that only
    /// decides where members begin and end: an entry that differs after all makes its piece
    /// the device's own, never a wrong archive.
    pub(crate) fn contains(&self, path: &str, e: &Entry) -> bool {
        !self.rendered.contains(path)
            && (matches!(e.kind, Kind::Dir) || self.layers.contains(&e.origin))
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
/// its entries and member, kept once the run came a second time.
enum Slot {
    Seen,
    Ready(Arc<Kept>),
}

/// A kept run: its entries (what its tar is made of) and its gzip member.
struct Kept {
    entries: Vec<(String, Entry)>,
    member: Arc<[u8]>,
}

impl Kept {
    /// Are `entries` the kept ones, as far as the tar is concerned (path, type, content or
    /// target, mode, owner ids and names)? Contents shared with the build's layers compare by
    /// address; others byte for byte.
    fn same(&self, entries: &[(&String, &Entry)]) -> bool {
        self.entries.len() == entries.len()
            && self.entries.iter().zip(entries).all(|((p, a), (q, b))| {
                p == *q
                    && a.kind == b.kind
                    && (a.mode, a.uid, a.gid) == (b.mode, b.uid, b.gid)
                    && (&a.user, &a.group) == (&b.user, &b.group)
            })
    }
}

/// The compressed shared runs of one build (dropped with it, all at one entry time and one
/// level), at most [`CACHE_CAP`] bytes. A run is found by a hash of its entries' names, types,
/// sizes, modes and owners, and reused only when its entries are the kept ones, contents
/// included: a collision costs a compression, never a wrong archive. A reused run is neither
/// written as tar nor hashed again.
#[derive(Default)]
pub(crate) struct RunCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<u64, Slot>,
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

    /// The gzip member of the shared run `entries` (entry time `mtime`, level `level`, the
    /// same for the whole build): reused when this build already compressed the same entries
    /// twice, else written and compressed now (and kept the second time they come).
    fn member(&self, entries: &[(&String, &Entry)], mtime: u64, level: u32) -> Result<Arc<[u8]>> {
        let key = key_of(entries);
        let (found, keep) = {
            let mut c = self.lock();
            match c.slots.get(&key) {
                Some(Slot::Ready(k)) => (Some(k.clone()), false),
                Some(Slot::Seen) => (None, true),
                None => {
                    c.slots.insert(key, Slot::Seen);
                    (None, false)
                }
            }
        };
        if let Some(k) = &found
            && k.same(entries)
        {
            self.lock().stats.reused += 1;
            return Ok(k.member.clone());
        }
        let tar = archive::entries_tar(entries, mtime)?;
        let z: Arc<[u8]> = archive::gzip(&tar, level).into();
        let mut c = self.lock();
        c.stats.compressed += 1;
        let size = tar.len() + z.len();
        let seen = matches!(c.slots.get(&key), Some(Slot::Seen));
        if keep && seen && c.bytes + size <= CACHE_CAP {
            c.bytes += size;
            c.stats.kept_bytes = c.bytes;
            let kept = Kept {
                entries: entries
                    .iter()
                    .map(|(p, e)| ((*p).clone(), (*e).clone()))
                    .collect(),
                member: z.clone(),
            };
            c.slots.insert(key, Slot::Ready(Arc::new(kept)));
        }
        Ok(z)
    }
}

/// The cache key of a run: its entries' names, types, sizes or targets, modes and owners
/// (contents are compared when the key matches, see [`Kept::same`]).
fn key_of(entries: &[(&String, &Entry)]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (path, e) in entries {
        path.hash(&mut h);
        match &e.kind {
            Kind::Dir => 0u8.hash(&mut h),
            Kind::File(b) => (1u8, b.len()).hash(&mut h),
            Kind::Symlink(t) => (2u8, t).hash(&mut h),
        }
        (e.mode, e.uid, e.gid, &e.user, &e.group).hash(&mut h);
    }
    h.finish()
}

/// The tar size of an entry (header and padded data; long names add a little).
fn tar_size(e: &Entry) -> usize {
    match &e.kind {
        Kind::File(b) => 512 + b.len().div_ceil(512) * 512,
        _ => 512,
    }
}

/// May a shared run be cut before `path` (once [`CHUNK_MIN`] bytes are in the piece)?
/// One path in [`CUT_EVERY`], chosen by a hash of the path alone (FNV-1a: fixed, so the same
/// inputs cut at the same places on every machine and version).
fn cuts_before(path: &str) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h.is_multiple_of(CUT_EVERY)
}

/// Split `entries` (archive order) into runs: the shared ones, cut into pieces of at least
/// [`CHUNK_MIN`] bytes before paths that [`cuts_before`] picks, those pieces of at least
/// [`MIN_SHARED_RUN`] bytes kept shared; and the per-device stretches between them (each one
/// run). The cuts depend on the paths and sizes of the shared entries only, so a device whose
/// own entry splits a shared run falls back in step with the other devices at the next cut
/// both make: only the piece around its entry is its own.
pub(crate) fn split(entries: &[(&String, &Entry)], shareable: &Shareable) -> Vec<Run> {
    let mut raw: Vec<Run> = Vec::new();
    let mut piece = 0;
    for (i, (path, e)) in entries.iter().enumerate() {
        let shared = shareable.contains(path, e);
        let cut = shared && piece >= CHUNK_MIN && cuts_before(path);
        match raw.last_mut() {
            Some(r) if r.shared == shared && !cut => r.range.end = i + 1,
            _ => {
                raw.push(Run {
                    shared,
                    range: i..i + 1,
                });
                piece = 0;
            }
        }
        if shared {
            piece += tar_size(e);
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
        let run = &entries[r.range.clone()];
        if r.shared {
            out.extend_from_slice(&cache.member(run, mtime, level)?);
            if last {
                out.extend(archive::gzip(&END_OF_ARCHIVE, level));
            }
        } else {
            let mut tar = archive::entries_tar(run, mtime)?;
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

    /// Each gzip member of `gz`, with the size of what it holds.
    fn member_list(gz: &[u8]) -> Vec<(&[u8], u64)> {
        let mut rest = gz;
        let mut out = Vec::new();
        while !rest.is_empty() {
            let mut d = flate2::bufread::GzDecoder::new(rest);
            let n = std::io::copy(&mut d, &mut std::io::sink()).unwrap();
            let left = d.into_inner();
            out.push((&rest[..rest.len() - left.len()], n));
            rest = left;
        }
        out
    }

    fn members(gz: &[u8]) -> usize {
        member_list(gz).len()
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
    fn a_device_entry_in_a_shared_run_costs_only_the_pieces_around_it() {
        let f = "overlays/fleet";
        let names: Vec<String> = (0..400).map(|i| format!("etc/app/f{i:03}.conf")).collect();
        let fleet: Vec<(&str, usize, &str)> =
            names.iter().map(|n| (n.as_str(), 8_000, f)).collect();
        let mut own = fleet.clone();
        own.push(("etc/app/f040.conf", 100, "overlays/dev"));
        own.push(("etc/app/f200.own", 100, "overlays/dev"));
        let (a, b) = (manifest(&fleet), manifest(&own));
        let shareable = Shareable {
            layers: [f.to_string()].into(),
            rendered: BTreeSet::new(),
        };
        let cache = RunCache::default();
        let ga = compress(&a, &shareable, 0, 6, &cache).unwrap();
        let gb = compress(&b, &shareable, 0, 6, &cache).unwrap();
        let (ma, mb) = (member_list(&ga), member_list(&gb));
        assert!(ma.len() > 10, "{} members", ma.len());
        // Each of the device's two entries costs the piece it lands in, and at most the next
        // one (when the device's piece is still short of CHUNK_MIN at the next cut); every
        // other member is the fleet's.
        let missing = ma.iter().filter(|x| !mb.iter().any(|m| m.0 == x.0)).count();
        assert!(missing <= 4, "{missing} of {} members not shared", ma.len());
        let mut tar = Vec::new();
        flate2::read::MultiGzDecoder::new(&gb[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(tar, archive::tar_bytes(&b, 0).unwrap());
    }

    #[test]
    fn a_key_collision_costs_a_compression_never_a_wrong_member() {
        let f = "overlays/fleet";
        let m = manifest(&[("usr/big", 40_000, f)]);
        let entries: Vec<_> = m.entries.iter().collect();
        // Another run with the same names, sizes, modes and owners: the same key.
        let other = Manifest {
            entries: m
                .entries
                .iter()
                .map(|(p, e)| {
                    let mut e = e.clone();
                    if let Kind::File(b) = &e.kind {
                        e.kind = Kind::File(b.iter().map(|x| x ^ 1).collect::<Vec<u8>>().into());
                    }
                    (p.clone(), e)
                })
                .collect(),
        };
        let other_entries: Vec<_> = other.entries.iter().collect();
        assert_eq!(key_of(&entries), key_of(&other_entries));
        let cache = RunCache::default();
        for _ in 0..3 {
            cache.member(&other_entries, 0, 6).unwrap();
        }
        assert_eq!(cache.stats().reused, 1);
        let z = cache.member(&entries, 0, 6).unwrap();
        let want = archive::gzip(&archive::entries_tar(&entries, 0).unwrap(), 6);
        assert_eq!(&z[..], &want[..]);
        assert_eq!(cache.stats().reused, 1);
    }

    #[test]
    fn nothing_shared_is_one_member_as_before() {
        let m = manifest(&[("etc/a", 50_000, "profile p"), ("etc/b", 5, "overlays/x")]);
        let gz = compress(&m, &fleet(), 0, 6, &RunCache::default()).unwrap();
        assert_eq!(gz, archive::gzip(&archive::tar_bytes(&m, 0).unwrap(), 6));
    }
}
