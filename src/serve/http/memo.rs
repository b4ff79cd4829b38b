//! Plain GETs of small files answered from memory: tower-http's answer to a `GET` with no
//! `Range` and no conditional header is kept (its headers and the file's bytes) per file
//! version, and the next plain `GET` of the same version gets the same answer without
//! reading the file or running `ServeDir` again. A request is still decided as before (the
//! access rule and the short way to a file are unchanged), and its file opened and
//! `fstat`ed, or, when the short way found this version in place less than 100 ms ago, its
//! path checked by one `statx` (`direct`). Other requests (HEAD, `Range`, `If-*`) go to
//! tower-http, given the kept bytes instead of a read. Only files opened by the name
//! requested are kept (through a symlink, tower-http's `Content-Type` follows another name).
//!
//! A file version is its device, inode, size, mtime and ctime: a file replaced by a rename
//! (how archives are published) has another inode, and one written in place another mtime
//! and ctime. A file changed less than [`RACY`] ago is not kept (its next change could
//! leave a coarse timestamp as it is, as git's "racily clean" entries), so a version kept
//! is one whose timestamps will show any change.
//!
//! Bounded: at most [`MAX_ENTRIES`] files of at most [`super::opened::SMALL_FILE`] bytes,
//! [`MAX_BYTES`] in all, the least recently used forgotten first.

use std::num::NonZeroUsize;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, Method, Response, StatusCode, header};

/// Files kept at most.
pub(super) const MAX_ENTRIES: usize = 1024;
/// Bytes of files kept at most.
pub(super) const MAX_BYTES: usize = 16 << 20;
/// A file whose mtime or ctime is this recent is not kept.
pub(super) const RACY: Duration = Duration::from_secs(2);

/// One version of a file, as `fstat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Version {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Version {
    /// The version `meta` describes.
    pub(super) fn of(meta: &std::fs::Metadata) -> Version {
        Version {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The version of a regular file `statx` describes; `None` for anything else.
    pub(super) fn of_statx(st: &libc::statx) -> Option<Version> {
        (u32::from(st.stx_mode) & libc::S_IFMT == libc::S_IFREG).then(|| Version {
            dev: libc::makedev(st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
            size: st.stx_size,
            mtime: (st.stx_mtime.tv_sec, i64::from(st.stx_mtime.tv_nsec)),
            ctime: (st.stx_ctime.tv_sec, i64::from(st.stx_ctime.tv_nsec)),
        })
    }

    /// Changed less than [`RACY`] before `now` (or in the future)?
    fn is_racy(&self, now: SystemTime) -> bool {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        [self.mtime, self.ctime].iter().any(|&(secs, nanos)| {
            match (u64::try_from(secs), u32::try_from(nanos)) {
                (Ok(s), Ok(n)) => Duration::new(s, n.min(999_999_999)) + RACY > now,
                // Before 1970: a clock or a file not to be trusted.
                _ => true,
            }
        })
    }
}

/// tower-http's answer to a plain GET of one file version.
#[derive(Debug)]
pub(super) struct Entry {
    version: Version,
    /// The file's metadata when it was kept (the same version: same size and times).
    pub(super) meta: std::fs::Metadata,
    headers: HeaderMap,
    /// The file's bytes.
    pub(super) body: Bytes,
    /// Microseconds after [`Memo`]'s epoch when this version was last found at its path by
    /// the short way (no symlink on the way), or 0.
    verified: AtomicU64,
}

impl Entry {
    /// Is this the version `v`?
    pub(super) fn is(&self, v: &Version) -> bool {
        self.version == *v
    }

    /// The kept answer, as tower-http gave it.
    pub(super) fn response(&self) -> Response<Body> {
        let mut r = Response::new(Body::from(self.body.clone()));
        *r.headers_mut() = self.headers.clone();
        r
    }
}

/// The kept answers, by the file's resolved path.
#[derive(Debug)]
pub(super) struct Memo {
    inner: Mutex<Inner>,
    epoch: Instant,
}

#[derive(Debug)]
struct Inner {
    entries: lru::LruCache<PathBuf, Arc<Entry>>,
    bytes: usize,
}

impl Default for Memo {
    fn default() -> Memo {
        Memo {
            inner: Mutex::new(Inner {
                entries: lru::LruCache::new(NonZeroUsize::MIN.saturating_add(MAX_ENTRIES - 1)),
                bytes: 0,
            }),
            epoch: Instant::now(),
        }
    }
}

impl Memo {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update leaves the cache consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The kept answer for `path` in the version `meta` describes, if any.
    pub(super) fn get(&self, path: &Path, meta: &std::fs::Metadata) -> Option<Arc<Entry>> {
        let mut g = self.lock();
        let e = g.entries.get(path)?;
        (e.version == Version::of(meta)).then(|| Arc::clone(e))
    }

    /// Notes that `entry` was just found at its path the short way.
    pub(super) fn verified(&self, entry: &Entry) {
        entry
            .verified
            .store(self.now_us().max(1), Ordering::Relaxed);
    }

    /// The kept answer for `path` if it was found there the short way less than `within`
    /// ago (its version is still to be compared with the file's).
    pub(super) fn recent(&self, path: &Path, within: Duration) -> Option<Arc<Entry>> {
        let e = Arc::clone(self.lock().entries.get(path)?);
        let at = e.verified.load(Ordering::Relaxed);
        let within = u64::try_from(within.as_micros()).unwrap_or(u64::MAX);
        (at != 0 && self.now_us().saturating_sub(at) < within).then_some(e)
    }

    /// Keeps tower-http's 200 answer `response` to a plain GET of `path` (`meta`, `body`),
    /// unless the file changed too recently (before `now`) to be told apart from its next
    /// change.
    pub(super) fn keep<B>(
        &self,
        path: &Path,
        meta: &std::fs::Metadata,
        body: Bytes,
        response: &Response<B>,
        now: SystemTime,
    ) {
        let version = Version::of(meta);
        if response.status() != StatusCode::OK
            || body.len() as u64 != version.size
            || body.len() > MAX_BYTES / 4
            || version.is_racy(now)
        {
            return;
        }
        let entry = Arc::new(Entry {
            version,
            meta: meta.clone(),
            headers: response.headers().clone(),
            body,
            verified: AtomicU64::new(0),
        });
        let mut g = self.lock();
        let size = entry.body.len();
        if let Some((_, old)) = g.entries.push(path.to_owned(), entry) {
            g.bytes -= old.body.len();
        }
        g.bytes += size;
        while g.bytes > MAX_BYTES {
            match g.entries.pop_lru() {
                Some((_, old)) => g.bytes -= old.body.len(),
                None => break,
            }
        }
    }

    /// Files and bytes kept.
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
        let g = self.lock();
        (g.entries.len(), g.bytes)
    }
}

/// The request headers that make tower-http answer otherwise than with the whole file.
const NOT_PLAIN: [header::HeaderName; 6] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

/// A GET with none of the [`NOT_PLAIN`] headers (`Range`, `If-Range`, `If-Match`,
/// `If-None-Match`, `If-Modified-Since`, `If-Unmodified-Since`).
pub(super) fn is_plain_get(req: &Request) -> bool {
    req.method() == Method::GET && !NOT_PLAIN.iter().any(|h| req.headers().contains_key(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Response<Body> {
        let mut r = Response::new(Body::empty());
        r.headers_mut()
            .insert(header::ETAG, "\"x\"".parse().unwrap());
        r
    }

    /// A file just written, its path and metadata.
    fn file(dir: &Path, name: &str, bytes: &[u8]) -> (PathBuf, std::fs::Metadata) {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        (p, meta)
    }

    /// A clock a minute ahead: every file written by the test is old then.
    fn later() -> SystemTime {
        SystemTime::now() + Duration::from_secs(60)
    }

    #[test]
    fn a_file_changed_within_the_racy_window_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let memo = Memo::default();
        let (p, meta) = file(dir.path(), "f", b"abcd");
        memo.keep(
            &p,
            &meta,
            Bytes::from_static(b"abcd"),
            &ok(),
            SystemTime::now(),
        );
        assert_eq!(memo.size(), (0, 0));
        assert!(memo.get(&p, &meta).is_none());
        let at = SystemTime::now() + RACY - Duration::from_millis(500);
        memo.keep(&p, &meta, Bytes::from_static(b"abcd"), &ok(), at);
        assert_eq!(memo.size(), (0, 0));
        // Just past the window (to the nanosecond, not to the second): kept.
        let at = SystemTime::now() + RACY + Duration::from_millis(50);
        memo.keep(&p, &meta, Bytes::from_static(b"abcd"), &ok(), at);
        assert_eq!(memo.size(), (1, 4));
    }

    #[test]
    fn a_kept_answer_is_given_for_its_version_only() {
        let dir = tempfile::tempdir().unwrap();
        let memo = Memo::default();
        let (p, meta) = file(dir.path(), "f", b"abcd");
        memo.keep(&p, &meta, Bytes::from_static(b"abcd"), &ok(), later());
        let hit = memo.get(&p, &meta).expect("same version: kept");
        assert_eq!(hit.body, Bytes::from_static(b"abcd"));
        let r = hit.response();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::ETAG], "\"x\"");
        // Replaced by a rename (another inode, same size): not the kept one.
        let (q, _) = file(dir.path(), "g", b"wxyz");
        std::fs::rename(&q, &p).unwrap();
        let renamed = std::fs::metadata(&p).unwrap();
        assert!(memo.get(&p, &renamed).is_none());
        // Written in place (same inode, new mtime and ctime): not the kept one either.
        let (p2, meta2) = file(dir.path(), "h", b"abcd");
        memo.keep(&p2, &meta2, Bytes::from_static(b"abcd"), &ok(), later());
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&p2, b"dcba").unwrap();
        let rewritten = std::fs::metadata(&p2).unwrap();
        assert_eq!(rewritten.ino(), meta2.ino());
        assert!(memo.get(&p2, &rewritten).is_none());
        // Another path: nothing.
        assert!(memo.get(&dir.path().join("none"), &meta).is_none());
    }

    #[test]
    fn only_whole_200_answers_are_kept_and_memory_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let memo = Memo::default();
        let (p, meta) = file(dir.path(), "f", &[7u8; 1000]);
        let body = Bytes::from(vec![7u8; 1000]);
        // A body that is not the whole file, or a status other than 200: never kept.
        memo.keep(&p, &meta, Bytes::from_static(b"x"), &ok(), later());
        let mut partial = ok();
        *partial.status_mut() = StatusCode::PARTIAL_CONTENT;
        memo.keep(&p, &meta, body.clone(), &partial, later());
        assert_eq!(memo.size(), (0, 0));
        for i in 0..(MAX_ENTRIES + 10) {
            memo.keep(&p.join(i.to_string()), &meta, body.clone(), &ok(), later());
        }
        assert_eq!(memo.size(), (MAX_ENTRIES, MAX_ENTRIES * 1000));
        // The least recently used went first.
        assert!(memo.get(&p.join("0"), &meta).is_none());
        assert!(memo.get(&p.join(MAX_ENTRIES.to_string()), &meta).is_some());
        // Bytes: at most MAX_BYTES, whatever the count.
        let (big, big_meta) = file(dir.path(), "big", &vec![1u8; 64 << 10]);
        let big_body = Bytes::from(vec![1u8; 64 << 10]);
        for i in 0..400 {
            memo.keep(
                &big.join(i.to_string()),
                &big_meta,
                big_body.clone(),
                &ok(),
                later(),
            );
        }
        let (n, bytes) = memo.size();
        assert!(bytes <= MAX_BYTES && n <= MAX_ENTRIES, "{n} {bytes}");
        assert_eq!(bytes, MAX_BYTES);
    }

    #[test]
    fn only_a_get_without_range_or_conditions_is_plain() {
        let req = |m: Method, h: Option<(header::HeaderName, &str)>| {
            let mut b = axum::http::Request::builder().method(m).uri("/f");
            if let Some((k, v)) = h {
                b = b.header(k, v);
            }
            b.body(Body::empty()).unwrap()
        };
        assert!(is_plain_get(&req(Method::GET, None)));
        assert!(is_plain_get(&req(
            Method::GET,
            Some((header::ACCEPT, "*/*"))
        )));
        assert!(!is_plain_get(&req(Method::HEAD, None)));
        for h in NOT_PLAIN {
            assert!(
                !is_plain_get(&req(Method::GET, Some((h.clone(), "x")))),
                "{h}"
            );
        }
    }
}
