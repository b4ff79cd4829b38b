//! A local Alpine mirror for `ovl fetch`: a small HTTP/1.1 file server on 127.0.0.1 (GET,
//! single `Range: bytes=N-` requests answered 206/416, 404 for anything missing, one
//! connection per request), a log of the requests it got, and connections cut on demand
//! after some bytes of a body. [`Mirror::alpine_release`] lays out a release as Alpine's
//! mirrors do: `VERSION/releases/ARCH/latest-releases.yaml` and the netboot tarball, made by
//! GNU tar the way Alpine's `mkimage.sh` makes it (`tar -chzf … boot/`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::proc::{must, noise, sha256};

/// One request the mirror got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The path, e.g. `/v3.20/releases/x86_64/latest-releases.yaml`.
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
}

/// Responses to cut short: the next `times` responses for `path` stop after `after` bytes of
/// body, and the connection is closed at once, or after `stall` of silence.
#[derive(Debug, Clone)]
struct Cut {
    path: String,
    after: usize,
    times: usize,
    stall: Option<Duration>,
}

/// State shared with the server thread.
#[derive(Default)]
struct Shared {
    log: Mutex<Vec<Request>>,
    cuts: Mutex<Vec<Cut>>,
    stop: AtomicBool,
}

/// The mirror: a temporary folder served on 127.0.0.1 until dropped.
pub struct Mirror {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What [`Mirror::alpine_release`] published.
pub struct AlpineRelease {
    /// The index's URL path, e.g. `/v3.20/releases/x86_64/latest-releases.yaml`.
    pub index: String,
    /// The tarball's URL path.
    pub tarball: String,
    /// The tarball's size in bytes.
    pub tarball_size: usize,
    /// The boot files in the tarball, by name (`vmlinuz-lts`, …).
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Mirror {
    /// An empty mirror, serving.
    pub fn start() -> Mirror {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared::default());
        let (root, sh) = (dir.path().to_path_buf(), shared.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (root, sh) = (root.clone(), sh.clone());
                std::thread::spawn(move || answer(conn, &root, &sh));
            }
        });
        Mirror {
            dir,
            addr,
            shared,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The served folder.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a served file (parents created).
    pub fn write(&self, rel: &str, bytes: &[u8]) {
        let p = self.root().join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.log.lock().unwrap().clone()
    }

    /// The requests so far for `path`.
    pub fn requests_for(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Cut the next `times` responses for `path` after `after` bytes of body.
    pub fn cut(&self, path: &str, after: usize, times: usize) {
        self.shared.cuts.lock().unwrap().push(Cut {
            path: path.to_string(),
            after,
            times,
            stall: None,
        });
    }

    /// Stall the next response for `path` after `after` bytes of body: the connection stays
    /// open and silent for `secs` seconds, then closes.
    pub fn stall(&self, path: &str, after: usize, secs: u64) {
        self.shared.cuts.lock().unwrap().push(Cut {
            path: path.to_string(),
            after,
            times: 1,
            stall: Some(Duration::from_secs(secs)),
        });
    }

    /// Publishes Alpine release `version` (e.g. `3.20.3`) of branch `branch` (`v3.20`) for
    /// `arch`: a netboot tarball holding `boot/vmlinuz-F`, `initramfs-F`, `modloop-F`,
    /// `config-F`, `System.map-F` for every flavor F (pseudo-random bytes, a few hundred KB
    /// each), and a `latest-releases.yaml` shaped like Alpine's naming it with its size and
    /// sha256, between a minirootfs and a standard-ISO entry.
    pub fn alpine_release(
        &self,
        branch: &str,
        version: &str,
        arch: &str,
        flavors: &[&str],
    ) -> AlpineRelease {
        let salt: u64 = version.bytes().map(u64::from).sum::<u64>() * 1000;
        let mut files = BTreeMap::new();
        for (i, flavor) in flavors.iter().enumerate() {
            for (j, (kind, len)) in [
                ("vmlinuz", 300_000),
                ("initramfs", 500_000),
                ("modloop", 900_000),
                ("config", 2_000),
                ("System.map", 4_000),
            ]
            .into_iter()
            .enumerate()
            {
                let bytes = noise(len + i * 1000, salt + (i * 10 + j) as u64 + 7);
                files.insert(format!("{kind}-{flavor}"), bytes);
            }
        }
        self.alpine_netboot(branch, version, arch, files)
    }

    /// Publishes Alpine release `version` of `branch` for `arch` like
    /// [`Mirror::alpine_release`], with the given boot files (`vmlinuz-lts` → bytes, …) in
    /// the netboot tarball's `boot/`: real, bootable ones for an end-to-end test.
    pub fn alpine_netboot(
        &self,
        branch: &str,
        version: &str,
        arch: &str,
        files: BTreeMap<String, Vec<u8>>,
    ) -> AlpineRelease {
        let stage = tempfile::tempdir().unwrap();
        for (name, bytes) in &files {
            let p = stage.path().join("boot").join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, bytes).unwrap();
        }
        let dir = format!("{branch}/releases/{arch}");
        let file = format!("alpine-netboot-{version}-{arch}.tar.gz");
        let out = self.root().join(&dir).join(&file);
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let (stage_s, out_s) = (path_str(stage.path()), path_str(&out));
        must(&["tar", "-C", &stage_s, "-chzf", &out_s, "boot/"]);
        let tarball = std::fs::read(&out).unwrap();
        let yaml = latest_releases(
            branch,
            version,
            arch,
            &file,
            tarball.len(),
            &sha256(&tarball),
        );
        self.write(&format!("{dir}/latest-releases.yaml"), yaml.as_bytes());
        AlpineRelease {
            index: format!("/{dir}/latest-releases.yaml"),
            tarball: format!("/{dir}/{file}"),
            tarball_size: tarball.len(),
            files,
        }
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A `latest-releases.yaml` as Alpine's mirrors publish it (fields in their order; `date`
/// and `time` look like YAML timestamps and sexagesimal numbers to a careless parser).
pub fn latest_releases(
    branch: &str,
    version: &str,
    arch: &str,
    file: &str,
    size: usize,
    sha256: &str,
) -> String {
    let entry = |title: &str, flavor: &str, file: &str, size: usize, sha: &str| {
        format!(
            "-\n  title: \"{title}\"\n  desc: \"Kernel, initramfs and modloop for\n    \
             netboot.\n    \"\n  profile: {p}\n  image: {flavor}\n  flavor: {flavor}\n  \
             file: {file}\n  iso: {file}\n  date: 2024-09-06\n  time: 07:04:24\n  \
             size: {size}\n  sha256: {sha}\n  sha512: {sha}{sha}\n  version: {version}\n  \
             branch: {branch}\n  arch: {arch}\n",
            p = flavor.trim_start_matches("alpine-"),
        )
    };
    let zero = "0".repeat(64);
    format!(
        "---\n{}{}{}",
        entry(
            "Mini root filesystem",
            "alpine-minirootfs",
            &format!("alpine-minirootfs-{version}-{arch}.tar.gz"),
            3_622_001,
            &zero
        ),
        entry("Netboot", "alpine-netboot", file, size, sha256),
        entry(
            "Standard",
            "alpine-standard",
            &format!("alpine-standard-{version}-{arch}.iso"),
            220_000_000,
            &zero
        ),
    )
}

/// `path` as a string for a command line.
fn path_str(p: &Path) -> String {
    p.to_str().expect("UTF-8 path").to_string()
}

/// Serve one request on `conn`, then close it.
fn answer(mut conn: TcpStream, root: &Path, sh: &Shared) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    let Some(head) = read_head(&mut conn) else {
        return;
    };
    let mut lines = head.lines();
    let mut parts = lines.next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let range = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("range"))
        .map(|(_, v)| v.trim().to_string());
    if sh.stop.load(Ordering::SeqCst) || method != "GET" {
        return;
    }
    sh.log.lock().unwrap().push(Request {
        path: path.to_string(),
        range: range.clone(),
    });
    let file: PathBuf = root.join(path.trim_start_matches('/'));
    let body = match (path.contains(".."), std::fs::read(&file)) {
        (false, Ok(b)) => b,
        _ => {
            let _ = conn.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n",
            );
            return;
        }
    };
    let len = body.len();
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|s| s.parse::<usize>().ok());
    let (status, from, extra) = match start {
        Some(s) if s >= len => {
            let h = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = conn.write_all(h.as_bytes());
            return;
        }
        Some(s) => (
            "206 Partial Content",
            s,
            format!("Content-Range: bytes {s}-{}/{len}\r\n", len - 1),
        ),
        None => ("200 OK", 0, String::new()),
    };
    let h = format!(
        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        len - from
    );
    let mut send = &body[from..];
    let cut = take_cut(sh, path);
    if let Some(c) = &cut {
        send = &send[..c.after.min(send.len())];
    }
    let _ = conn
        .write_all(h.as_bytes())
        .and_then(|_| conn.write_all(send));
    let _ = conn.flush();
    if let Some(pause) = cut.and_then(|c| c.stall) {
        std::thread::sleep(pause);
    }
    let _ = conn.shutdown(Shutdown::Both);
}

/// How this response of `path` is to be cut, if it is.
fn take_cut(sh: &Shared, path: &str) -> Option<Cut> {
    let mut cuts = sh.cuts.lock().unwrap();
    let c = cuts.iter_mut().find(|c| c.path == path && c.times > 0)?;
    c.times -= 1;
    Some(c.clone())
}

/// The request line and headers, up to the blank line (at most 16 KiB).
fn read_head(conn: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() > 16 * 1024 || conn.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    String::from_utf8(buf).ok()
}
