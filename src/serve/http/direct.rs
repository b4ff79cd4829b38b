//! The short way to a file request's answer: the same decision as [`access::check`] and
//! [`OpenedFile::open`], in a handful of system calls instead of a path walk per component.
//!
//! The slow way canonicalises the site root and the requested path (`realpath`: one
//! `readlink` per component, about ten a request) and then stats and opens the real file.
//! Here the site's root directory is held open and checked against its path at most every
//! [`ROOT_CHECK`] (same device and inode, else it is opened again: a root swapped for another
//! directory is followed within that time), and the request is opened below it with `openat2` and
//! `RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`: when that succeeds, no component is a symlink, so
//! the real path *is* the requested one, the path rules already checked on the request hold
//! for the real file, and rule 5 (the real place must be public) holds by itself.
//!
//! Anything else — a symlink on the way (`ELOOP`), a missing file, a kernel without `openat2`,
//! anything not a regular file — goes the slow way, which gives the exact refusal. The file is
//! opened with `O_NONBLOCK`, so a FIFO named in a public folder cannot hold a worker.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::memo::{Memo, Version};
use super::opened::OpenedFile;
use crate::serve::access::{self, Policy, Refusal};
use crate::serve::neighbours::Neighbours;
use crate::serve::public::{self, Denied, Named, Resolved};

/// How long the open root directory is used before its path is looked at again.
const ROOT_CHECK: Duration = Duration::from_millis(100);

/// The site's root directory, held open.
#[derive(Debug)]
struct Root {
    dir: OwnedFd,
    /// Its canonical path when it was opened.
    canonical: PathBuf,
    dev: u64,
    ino: u64,
}

/// The site root of a server, opened once and checked per request.
#[derive(Debug)]
pub(super) struct SiteDir {
    path: PathBuf,
    /// On a local file system (see [`kept_unchanged`]).
    local: bool,
    open: RwLock<Option<Arc<Root>>>,
    /// Microseconds after `epoch` when the root was last checked against its path.
    checked: AtomicU64,
    epoch: Instant,
}

impl SiteDir {
    /// The site at `path` (opened on first use), on a local file system or not.
    pub(super) fn new(path: &Path, local: bool) -> SiteDir {
        SiteDir {
            path: path.to_owned(),
            local,
            open: RwLock::new(None),
            checked: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// The root directory as its path names it now, or `None` when it cannot be opened.
    fn current(&self) -> Option<Arc<Root>> {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let held = self.open.read().unwrap_or_else(|p| p.into_inner()).clone();
        let fresh = now.saturating_sub(self.checked.load(Ordering::Relaxed))
            < ROOT_CHECK.as_micros() as u64;
        if held.is_some() && fresh {
            return held;
        }
        let meta = std::fs::metadata(&self.path).ok()?;
        if let Some(r) = held
            && r.dev == meta.dev()
            && r.ino == meta.ino()
        {
            self.checked.store(now, Ordering::Relaxed);
            return Some(r);
        }
        let canonical = self.path.canonicalize().ok()?;
        let dir = std::fs::File::open(&canonical).ok()?;
        let m = dir.metadata().ok()?;
        if !m.is_dir() {
            return None;
        }
        let root = Arc::new(Root {
            dir: OwnedFd::from(dir),
            canonical,
            dev: m.dev(),
            ino: m.ino(),
        });
        *self.open.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&root));
        self.checked.store(now, Ordering::Relaxed);
        Some(root)
    }
}

/// Decides and opens `request` the short way: `None` when it must go the slow way
/// ([`access::check`] then [`OpenedFile::open`]), which then decides exactly as before.
pub(super) fn open(
    site: &SiteDir,
    policy: &Policy,
    neighbours: &Neighbours,
    client: std::net::IpAddr,
    request: &str,
    memo: &Memo,
) -> Option<Result<(Resolved, OpenedFile), Refusal>> {
    // The checks `access::check` makes before the file system is asked, in its order (a
    // request whose components are refused names no archive there either).
    let components = match public::components(request) {
        Ok(c) => c,
        Err(d) => return Some(Err(d.into())),
    };
    if let Some(mac) = access::archive_in(&components)
        && !access::may_fetch_archive(policy, neighbours, client, &mac)
    {
        return Some(Err(Refusal::NotOwner(mac)));
    }
    let Some(named) = policy.public.named(&components) else {
        return Some(Err(Denied::NotPublic.into()));
    };
    let root = site.current()?;
    let rel = components.join("/");
    // No symlink on the way (below): the real file is the one named, in the place named
    // (rule 5), so an archive is the one requested, whose owner was checked above.
    let archive = match named {
        Named::Archive(mac) => Some(mac),
        Named::File | Named::InFolder(_) => None,
    };
    let mut path = root.canonical.clone();
    path.extend(&components);
    if let Some(kept) = kept_unchanged(site, &root, &rel, &path, memo) {
        return Some(Ok((
            Resolved { path, archive },
            OpenedFile::from_kept(kept),
        )));
    }
    let file = open_beneath(&root.dir, &rel).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let kept = memo.get(&path, &meta);
    if let Some(k) = &kept {
        memo.verified(k);
    }
    let opened = match OpenedFile::from_open(file, meta, kept) {
        Ok(o) => o,
        Err(e) => return Some(Err(super::open_refusal(&e))),
    };
    Some(Ok((Resolved { path, archive }, opened)))
}

/// The answer kept for `path` (`rel` below `root`) when the short way found that version
/// there less than [`ROOT_CHECK`] ago and one `statx` of the path (not following a final
/// symlink) shows it unchanged: a regular file of the same device, inode, size, mtime and
/// ctime. This is the file the short way would open (a directory on the way swapped for a
/// symlink is seen within [`ROOT_CHECK`], as a swapped site root is), without opening it.
/// Local file systems only: on NFS a `stat` may answer from the client's attribute cache,
/// where an `open` asks the server.
fn kept_unchanged(
    site: &SiteDir,
    root: &Root,
    rel: &str,
    path: &Path,
    memo: &Memo,
) -> Option<Arc<super::memo::Entry>> {
    if !site.local {
        return None;
    }
    let kept = memo.recent(path, ROOT_CHECK)?;
    let name = CString::new(rel).ok()?;
    // SAFETY: `statx` is plain data; all-zero is a valid value to be overwritten.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, NUL-terminated name and a buffer of the right type.
    let r = unsafe {
        libc::statx(
            root.dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT,
            libc::STATX_BASIC_STATS,
            &mut st,
        )
    };
    let version = (r == 0).then(|| Version::of_statx(&st)).flatten()?;
    kept.is(&version).then_some(kept)
}

/// `openat2(dir, rel, O_RDONLY | O_NONBLOCK, RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH)`.
fn open_beneath(dir: &OwnedFd, rel: &str) -> io::Result<std::fs::File> {
    let name = CString::new(Path::new(rel).as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: `open_how` is plain data; all-zero is its "no options" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK) as u64;
    how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_BENEATH;
    // SAFETY: the pointers are valid for the call; the size is that of the struct passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            name.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the kernel just returned this descriptor, owned by nobody else.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::IpAddr;

    use super::*;
    use crate::serve::neighbours::StaticNeighbours;
    use crate::site::Site;

    const A: &str = "52:54:00:00:00:0a";
    const B: &str = "52:54:00:00:00:0b";

    /// A site with archives A and B, a public folder `data/` holding a file, a symlink to
    /// B's archive and a FIFO, and a symlinked public folder `link/` → `data/`.
    fn site(access: &str) -> (tempfile::TempDir, Policy) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let toml =
            format!("[serve]\nconfigs_access = \"{access}\"\npublic = [\"data/\", \"link/\"]\n");
        std::fs::write(root.join("ovl.toml"), toml).unwrap();
        std::fs::create_dir_all(root.join("configs")).unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::write(root.join(format!("configs/{A}.tar.gz")), b"a").unwrap();
        std::fs::write(root.join(format!("configs/{B}.tar.gz")), b"b").unwrap();
        std::fs::write(root.join("data/f"), b"file").unwrap();
        std::os::unix::fs::symlink(format!("../configs/{B}.tar.gz"), root.join("data/b")).unwrap();
        std::os::unix::fs::symlink("data", root.join("link")).unwrap();
        let fifo = CString::new(root.join("data/fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let policy = Policy::of_site(&Site::open(root).unwrap());
        (dir, policy)
    }

    fn neighbours(ip: IpAddr, mac: &str) -> Neighbours {
        let table: HashMap<IpAddr, crate::mac::Mac> = [(ip, mac.parse().unwrap())].into();
        Neighbours::new(vec![Arc::new(StaticNeighbours(table))])
    }

    /// The short way's answer: `Some(Ok(path, archive, bytes))`, `Some(Err)`, or `None`.
    type Answer = Option<Result<(PathBuf, Option<crate::mac::Mac>), Refusal>>;

    fn short(dir: &SiteDir, p: &Policy, n: &Neighbours, c: IpAddr, req: &str) -> Answer {
        open(dir, p, n, c, req, &Memo::default()).map(|r| r.map(|(res, _)| (res.path, res.archive)))
    }

    #[test]
    fn the_short_way_decides_as_the_access_rule_or_leaves_it_to_it() {
        let (tmp, policy) = site("owner");
        let root = tmp.path().canonicalize().unwrap();
        let dir = SiteDir::new(tmp.path(), true);
        let (a, other): (IpAddr, IpAddr) =
            ("10.0.0.10".parse().unwrap(), "10.0.0.11".parse().unwrap());
        let n = neighbours(a, A);
        let ask = |c, req: &str| short(&dir, &policy, &n, c, req);
        let slow = |c, req: &str| {
            access::check(tmp.path(), &policy, &n, c, req).map(|r| (r.path, r.archive))
        };
        let own = format!("configs/{A}.tar.gz");
        // Plain names: the same answer as the slow way.
        for (c, req) in [(a, own.as_str()), (a, "/data//f"), (other, own.as_str())] {
            assert_eq!(ask(c, req), Some(slow(c, req)), "{req}");
        }
        assert_eq!(
            ask(a, &own),
            Some(Ok((root.join(&own), Some(A.parse().unwrap()))))
        );
        // Refused before the file system: not public, traversal, someone else's archive.
        for req in [
            "ovl.toml",
            "data/../ovl.toml",
            "configs/52:54:00:00:00:0b.tar.gz",
        ] {
            assert_eq!(ask(a, req), Some(slow(a, req)), "{req}");
            assert!(ask(a, req).unwrap().is_err());
        }
        // A symlink on the way (file or folder), a missing file, a FIFO: the slow way decides
        // (and a FIFO does not block).
        for req in ["data/b", "link/f", "data/missing", "data/fifo"] {
            assert_eq!(ask(a, req), None, "{req}");
        }
    }

    #[test]
    fn a_kept_file_is_answered_unopened_only_while_it_is_the_same_file_in_the_same_place() {
        use axum::body::Bytes;
        use std::time::SystemTime;
        let (tmp, policy) = site("any");
        let root = tmp.path().canonicalize().unwrap();
        let path = root.join("data/f");
        let dir = SiteDir::new(tmp.path(), true);
        let n = Neighbours::new(vec![]);
        let c: IpAddr = "127.0.0.1".parse().unwrap();
        let memo = Memo::default();
        let later = SystemTime::now() + Duration::from_secs(60);
        let keep = |bytes: &'static [u8]| {
            let meta = std::fs::metadata(&path).unwrap();
            let r = axum::http::Response::new(());
            memo.keep(&path, &meta, Bytes::from_static(bytes), &r, later);
        };
        let opened = || match open(&dir, &policy, &n, c, "data/f", &memo) {
            Some(Ok((_, o))) => o,
            other => panic!("{other:?}"),
        };
        let unopened = || {
            let root = dir.current().unwrap();
            kept_unchanged(&dir, &root, "data/f", &path, &memo).is_some()
        };
        keep(b"file");
        // Kept, but not yet found in place the short way: opened.
        assert!(!unopened());
        assert!(opened().kept.is_some());
        // Now found in place: answered without opening.
        assert!(unopened());
        assert!(opened().kept.is_some());
        // Written in place, same size: another version, opened and read. (Kept files are
        // at least RACY old, so their next write has another mtime; the fake clock above
        // skips that wait, so leave the kernel's coarse file clock time to tick.)
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, b"FILE").unwrap();
        assert!(!unopened());
        let o = opened();
        assert!(o.kept.is_none());
        assert_eq!(o.bytes().unwrap(), Bytes::from_static(b"FILE"));
        // Replaced by a rename: another inode.
        keep(b"FILE");
        assert!(opened().kept.is_some() && unopened());
        std::fs::write(tmp.path().join("data/g"), b"gggg").unwrap();
        std::fs::rename(tmp.path().join("data/g"), &path).unwrap();
        assert!(!unopened());
        assert!(opened().kept.is_none());
        // Its folder moved somewhere private and a symlink put in its place: the short way
        // refuses the path (ELOOP: the slow way decides), and the kept answer stops being
        // given within ROOT_CHECK, as a swapped site root is followed.
        keep(b"gggg");
        assert!(opened().kept.is_some() && unopened());
        std::fs::create_dir_all(tmp.path().join("captures")).unwrap();
        std::fs::rename(tmp.path().join("data"), tmp.path().join("captures/data")).unwrap();
        std::os::unix::fs::symlink("captures/data", tmp.path().join("data")).unwrap();
        std::thread::sleep(ROOT_CHECK + Duration::from_millis(20));
        assert!(!unopened());
        assert!(open(&dir, &policy, &n, c, "data/f", &memo).is_none());
        // On a network file system, never unopened.
        let remote = SiteDir::new(tmp.path(), false);
        let root = remote.current().unwrap();
        assert!(kept_unchanged(&remote, &root, "data/f", &path, &memo).is_none());
    }

    #[test]
    fn a_swapped_site_root_is_followed() {
        let (one, policy) = site("any");
        let (two, _) = site("any");
        std::fs::write(two.path().join("data/f"), b"second").unwrap();
        let parent = tempfile::tempdir().unwrap();
        let link = parent.path().join("site");
        std::os::unix::fs::symlink(one.path(), &link).unwrap();
        let dir = SiteDir::new(&link, true);
        let n = Neighbours::new(vec![]);
        let c: IpAddr = "127.0.0.1".parse().unwrap();
        let read = |dir: &SiteDir| match open(dir, &policy, &n, c, "data/f", &Memo::default()) {
            Some(Ok((r, _))) => r.path,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            read(&dir),
            one.path().canonicalize().unwrap().join("data/f")
        );
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(two.path(), &link).unwrap();
        std::thread::sleep(ROOT_CHECK + Duration::from_millis(20));
        assert_eq!(
            read(&dir),
            two.path().canonicalize().unwrap().join("data/f")
        );
    }
}
