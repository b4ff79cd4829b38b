//! Publication of many files at once, for a bounded number of syncs: every file of the batch
//! is written to its hidden temporary beside its target first; then all temporaries are made
//! durable together; then they are renamed into place step by step (every unit's files of one
//! step before any of the next, the renames of a step made durable before the next renames);
//! then the folders renamed into are synced once each.
//!
//! The guarantees are those of [`super::write_atomic`], per file: a target holds its old
//! bytes or its new ones, never a part, also after a crash (a file's bytes are durable
//! before the rename that publishes it), and a unit whose file failed publishes nothing of
//! its later steps. What changes is the number of syncs: below [`SYNCFS_FROM`] files (one
//! device) one `fsync(2)` per file and per folder, as before; from there on one `syncfs(2)`
//! per file system for the data, one per rename barrier, and one per file system (or one
//! `fsync` per folder, when few) at the end — whatever the number of devices. Each
//! temporary's write-back is started as soon as it is written, so the barrier finds little
//! left to write.
//!
//! `syncfs(2)` syncs the whole file system, other programs' writes included: it is not used
//! when more than [`FOREIGN_PER_FILE`] per file of other writes wait (each file is then
//! synced on its own, the syncs issued together from [`SYNC_THREADS`] threads). It is used
//! only where it reports write errors (Linux 5.8 on), through a handle opened before the
//! batch's first write on that file system; when it fails, every file there is synced on its
//! own, so that the failing one is named. On NFS, `close(2)` already sends and commits a file's
//! data (close-to-open), renames are synchronous on the server, and `syncfs` commits what is
//! left: the same guarantees hold.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use tempfile::TempPath;

use crate::error::{Error, IoContext, Result};

/// From this many files (or folders) on one file system, a barrier there is one `syncfs(2)`
/// instead of one `fsync(2)` each.
pub(crate) const SYNCFS_FROM: usize = 8;
/// `syncfs(2)` is not used when more than this many bytes per file (or folder) of other
/// writes wait system-wide: writing them too would cost more than one `fsync(2)` per file.
/// (Measured here: 3,000 fresh files, 1 GB of other writes waiting: `syncfs` 0.35 s, the
/// files' `fsync`s from 32 threads 0.27 s; nothing else waiting: 0.03 s and 0.25 s.)
const FOREIGN_PER_FILE: u64 = 256 << 10;
/// The threads issuing per-file syncs together.
const SYNC_THREADS: usize = 32;

/// When a staged entry is committed: every unit's entries of one step before any of the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Step {
    /// Kept manifests and their texts; their renames are durable before any later rename.
    Keep,
    /// Clean-up once the manifests are in place (older kept manifests removed).
    Prune,
    /// The archives.
    Publish,
}

/// Work run in its step, after the renames of the earlier steps.
pub(crate) type Action = Box<dyn FnOnce() -> Result<()> + Send>;

/// One staged entry.
enum Item {
    /// A written temporary (on file system `dev`), to be renamed over `target`.
    Rename {
        tmp: TempPath,
        target: PathBuf,
        dev: u64,
    },
    /// Work to run.
    Run(Action),
}

/// The entries of one unit (one device: its kept manifest, then its archive), staged
/// together; dropped unadded, its temporaries are removed.
pub(crate) struct Unit<'a> {
    batch: &'a Batch,
    entries: Vec<(Step, Item)>,
}

impl Unit<'_> {
    /// Write `bytes` to a hidden temporary (`PREFIX…` + [`TMP_SUFFIX`](crate::site::layout::TMP_SUFFIX)) in `target`'s folder
    /// (created if missing), with `mode` if any, to be renamed over `target` in `step`.
    pub(crate) fn write(
        &mut self,
        step: Step,
        target: &Path,
        bytes: &[u8],
        prefix: &str,
        mode: Option<u32>,
    ) -> Result<()> {
        let dir = parent(target);
        std::fs::create_dir_all(dir).at(dir)?;
        let dev = self.batch.file_system(dir)?;
        let tmp = super::temporary(dir, prefix, bytes, mode)?;
        start_writeback(tmp.as_file());
        let (file, tmp) = tmp.into_parts();
        close(file).at(&tmp)?;
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        self.batch.written.fetch_add(len, Ordering::Relaxed);
        let item = Item::Rename {
            tmp,
            target: target.to_path_buf(),
            dev,
        };
        self.entries.push((step, item));
        Ok(())
    }

    /// Run `action` in `step` (only when every earlier entry of the unit succeeded).
    pub(crate) fn then(&mut self, step: Step, action: Action) {
        self.entries.push((step, Item::Run(action)));
    }
}

/// Files staged to be published together: [`Batch::unit`] per device, filled (from any
/// thread) and [`Batch::add`]ed, then [`Batch::commit`].
#[derive(Default)]
pub(crate) struct Batch {
    /// Per file system (device number): a folder on it, opened before the batch's first
    /// write there, whose `syncfs(2)` reports write errors since (`None`: not openable).
    file_systems: Mutex<BTreeMap<u64, Option<File>>>,
    /// The added units, by number.
    units: Mutex<Vec<Vec<(Step, Item)>>>,
    /// The bytes written to temporaries.
    written: AtomicU64,
}

/// What committing a batch did.
pub(crate) struct Committed {
    /// Each unit's result, by the number [`Batch::add`] gave.
    pub(crate) results: Vec<Result<()>>,
    /// The `fsync(2)` and `syncfs(2)` calls made.
    pub(crate) syncs: usize,
}

impl Batch {
    /// A new, empty unit of this batch.
    pub(crate) fn unit(&self) -> Unit<'_> {
        Unit {
            batch: self,
            entries: Vec::new(),
        }
    }

    /// Add a fully staged unit; returns its number in [`Committed::results`].
    pub(crate) fn add(&self, unit: Unit<'_>) -> usize {
        let mut units = self.units.lock().unwrap_or_else(|p| p.into_inner());
        units.push(unit.entries);
        units.len() - 1
    }

    /// Commit a batch of one unit: that unit's result (`Ok` when none was added).
    pub(crate) fn commit_one(self) -> Result<()> {
        self.commit().results.pop().unwrap_or(Ok(()))
    }

    /// The device number of `dir`'s file system, a handle on it kept from the first time.
    fn file_system(&self, dir: &Path) -> Result<u64> {
        let dev = std::fs::metadata(dir).at(dir)?.dev();
        let mut fs = self.file_systems.lock().unwrap_or_else(|p| p.into_inner());
        fs.entry(dev).or_insert_with(|| File::open(dir).ok());
        Ok(dev)
    }

    /// Make every temporary durable, rename step by step (renames made durable before the
    /// next step's), sync the folders renamed into. A unit that fails at any point publishes
    /// nothing more; its remaining temporaries are removed.
    pub(crate) fn commit(self) -> Committed {
        let file_systems = self
            .file_systems
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        let mut units = self.units.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut sync = Syncer {
            file_systems,
            syncs: 0,
            ours: self.written.into_inner(),
        };
        let mut results: Vec<Result<()>> = vec![Ok(()); units.len()];
        let temps: Vec<(usize, &Path, &Path, u64)> = units
            .iter()
            .enumerate()
            .flat_map(|(u, es)| {
                es.iter().filter_map(move |(_, item)| match item {
                    Item::Rename { tmp, target, dev } => Some((u, &**tmp, target.as_path(), *dev)),
                    Item::Run(_) => None,
                })
            })
            .collect();
        for (u, e) in sync.files(&temps) {
            results[u] = Err(e);
        }
        sync.ours = 0;
        let mut steps: Vec<Step> = units.iter().flatten().map(|(s, _)| *s).collect();
        steps.sort();
        steps.dedup();
        let mut unsynced: BTreeMap<PathBuf, u64> = BTreeMap::new();
        for step in steps {
            for (u, entries) in units.iter_mut().enumerate() {
                let (now, later): (Vec<_>, Vec<_>) = std::mem::take(entries)
                    .into_iter()
                    .partition(|(s, _)| *s == step);
                *entries = later;
                for (_, item) in now {
                    if results[u].is_ok() {
                        results[u] = run(item, &mut unsynced);
                    }
                }
            }
            let renames_left = units.iter().zip(&results).any(|(es, r)| {
                r.is_ok() && es.iter().any(|(_, i)| matches!(i, Item::Rename { .. }))
            });
            if renames_left && !unsynced.is_empty() {
                sync.folders(std::mem::take(&mut unsynced));
            }
        }
        sync.folders(unsynced);
        Committed {
            results,
            syncs: sync.syncs,
        }
    }
}

/// Rename or run one entry; a renamed file's folder is added to `unsynced`.
fn run(item: Item, unsynced: &mut BTreeMap<PathBuf, u64>) -> Result<()> {
    match item {
        Item::Rename { tmp, target, dev } => {
            tmp.persist(&target)
                .map_err(|e| Error::io(&target, e.error))?;
            unsynced.insert(parent(&target).to_path_buf(), dev);
            Ok(())
        }
        Item::Run(action) => action(),
    }
}

/// The syncs of one commit, counted.
struct Syncer {
    /// The batch's handles, by file system.
    file_systems: BTreeMap<u64, Option<File>>,
    /// The syncs made.
    syncs: usize,
    /// Of the bytes waiting to be written, system-wide, the batch's own (until its data barrier).
    ours: u64,
}

impl Syncer {
    /// Make the temporaries (unit, temporary, target, file system) durable: the errors, each
    /// naming its target.
    fn files(&mut self, temps: &[(usize, &Path, &Path, u64)]) -> Vec<(usize, Error)> {
        let mut errors = Vec::new();
        for (dev, files) in by_dev(temps.iter().map(|t| (t.3, t))) {
            if self.syncfs(dev, files.len()) {
                continue;
            }
            self.syncs += files.len();
            let synced = fsync_each(&files, |(_, tmp, _, _)| tmp);
            for ((u, _, target, _), r) in files.iter().zip(synced) {
                if let Err(e) = r {
                    errors.push((*u, Error::io(target, e)));
                }
            }
        }
        errors
    }

    /// Make the renames in `folders` (folder → file system) durable. Best effort, as the
    /// folder sync of a single publication: the files they name are complete either way.
    fn folders(&mut self, folders: BTreeMap<PathBuf, u64>) {
        for (dev, dirs) in by_dev(folders.iter().map(|(d, dev)| (*dev, d))) {
            if self.syncfs(dev, dirs.len()) {
                continue;
            }
            self.syncs += dirs.len();
            let _ = fsync_each(&dirs, |d| d.as_path());
        }
    }

    /// `syncfs(2)` on file system `dev` for `count` files or folders, when it pays and can
    /// be trusted: true when it was made and succeeded. It pays from [`SYNCFS_FROM`] on,
    /// unless more than [`FOREIGN_PER_FILE`] per file of other writes wait (it would write
    /// them too); it is trusted where it reports write errors, through a handle opened before
    /// the batch's first write.
    fn syncfs(&mut self, dev: u64, count: usize) -> bool {
        let Some(Some(handle)) = self.file_systems.get(&dev) else {
            return false;
        };
        if count < SYNCFS_FROM || !syncfs_reports_errors() {
            return false;
        }
        let foreign = pending_writes().unwrap_or(0).saturating_sub(self.ours);
        if foreign > FOREIGN_PER_FILE.saturating_mul(count as u64) {
            return false;
        }
        self.syncs += 1;
        // SAFETY: syncfs(2) only reads the descriptor, which `handle` keeps open.
        unsafe { libc::syncfs(handle.as_raw_fd()) == 0 }
    }
}

/// `fsync(2)` every path `path_of` gives of `items`, issued together from up to
/// [`SYNC_THREADS`] threads (the file system groups concurrent syncs into few commits): each
/// result, in order.
fn fsync_each<T: Sync>(
    items: &[T],
    path_of: impl Fn(&T) -> &Path + Sync,
) -> Vec<std::io::Result<()>> {
    let next = AtomicUsize::new(0);
    let results: Vec<OnceLock<std::io::Result<()>>> =
        items.iter().map(|_| OnceLock::new()).collect();
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                break;
            };
            let _ = results[i].set(File::open(path_of(item)).and_then(|f| f.sync_all()));
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..items.len().min(SYNC_THREADS) {
            // A thread that cannot be made leaves its share to the others.
            let _ = std::thread::Builder::new().spawn_scoped(scope, work);
        }
        work();
    });
    results
        .into_iter()
        .map(|r| r.into_inner().unwrap_or(Ok(())))
        .collect()
}

/// The bytes waiting to be written to disk, system-wide: `Dirty` and `Writeback` of
/// `/proc/meminfo`.
fn pending_writes() -> Option<u64> {
    #[cfg(test)]
    if let Some(p) = PENDING.with(std::cell::Cell::get) {
        return Some(p);
    }
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        line[key.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some((kib("Dirty:")? + kib("Writeback:")?) * 1024)
}

#[cfg(test)]
thread_local! {
    /// Tests: what [`pending_writes`] says on this thread (`None`: the truth).
    pub(crate) static PENDING: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Start writing `file`'s bytes to disk now, without waiting (`sync_file_range(2)` with
/// `SYNC_FILE_RANGE_WRITE`): the disk works while the next devices are built, and the batch's
/// barrier finds little left to write. Not a sync, nor a promise: the barrier syncs and
/// reports errors.
fn start_writeback(file: &File) {
    // SAFETY: sync_file_range(2) only reads the descriptor, which `file` keeps open.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Close `file`, reporting what closing found: on NFS, `close(2)` sends and commits the
/// file's data and returns the server's errors (`EINTR` aside: the descriptor is closed
/// then, and the barrier reports what was lost).
fn close(file: File) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    // SAFETY: `into_raw_fd` hands over the descriptor, closed here once.
    if unsafe { libc::close(file.into_raw_fd()) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.kind() {
        std::io::ErrorKind::Interrupted => Ok(()),
        _ => Err(e),
    }
}

/// `items` grouped by file system, in order.
fn by_dev<T>(items: impl Iterator<Item = (u64, T)>) -> BTreeMap<u64, Vec<T>> {
    let mut out: BTreeMap<u64, Vec<T>> = BTreeMap::new();
    for (dev, t) in items {
        out.entry(dev).or_default().push(t);
    }
    out
}

/// Does `syncfs(2)` report write-back errors here? Linux does from 5.8 on; before, it always
/// returned 0.
pub(crate) fn syncfs_reports_errors() -> bool {
    static REPORTS: OnceLock<bool> = OnceLock::new();
    *REPORTS.get_or_init(|| {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        kernel_at_least(&release, (5, 8))
    })
}

/// Is the kernel `release` (`6.1.0-18-amd64`) at least `major.minor`?
fn kernel_at_least(release: &str, want: (u32, u32)) -> bool {
    let mut parts = release.trim().split(['.', '-']);
    let mut num = || parts.next().and_then(|p| p.parse::<u32>().ok());
    match (num(), num()) {
        (Some(major), Some(minor)) => (major, minor) >= want,
        _ => false,
    }
}

/// The folder of `path` (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests;
