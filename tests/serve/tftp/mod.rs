//! The TFTP server in-process on 127.0.0.1 port 0 over a temporary site; real clients
//! (tftp-hpa, atftp, busybox tftp, curl) and a raw UDP socket drive it. Every client runs
//! under `timeout 60`; every raw wait is bounded.

mod clients;
mod limits;
mod logs;
mod options;
mod refusals;
mod robustness;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ovl::serve::tftp::packet::{ErrorCode, Mode, Packet, Request};
use ovl::serve::tftp::{TftpConfig, TftpServer, TftpStats};
use tokio_util::sync::CancellationToken;

use crate::harness::proc::{bounded, output, sha256};
use crate::harness::site::TestSite;

/// `ovl.toml` of every lab: the test files besides the boot files.
const PUBLIC_TOML: &str = "[serve]\npublic = [\"f\", \"tiny\", \"motd\", \"shared.bin\", \
     \"bench.bin\", \"boot/\", \"sizes/\"]\n";

/// A site in a temp dir and a TFTP server serving it on its own runtime.
struct Lab {
    site: TestSite,
    root: PathBuf,
    addr: SocketAddr,
    stats: Arc<TftpStats>,
    cancel: CancellationToken,
    rt: Option<tokio::runtime::Runtime>,
    server: Option<tokio::task::JoinHandle<()>>,
    logs: Arc<Mutex<Vec<u8>>>,
}

impl Lab {
    fn new() -> Lab {
        Lab::with(|_| {})
    }

    fn with(adjust: impl FnOnce(&mut TftpConfig)) -> Lab {
        // The boot files of the default flavor and DHCP map are public by themselves; the
        // tests' other files are listed.
        Lab::with_toml(PUBLIC_TOML, adjust)
    }

    /// A lab whose site has `toml` as its `ovl.toml`, with `adjust` applied to the server's
    /// settings.
    fn with_toml(toml: &str, adjust: impl FnOnce(&mut TftpConfig)) -> Lab {
        let site = TestSite::empty();
        let root = site.root().to_path_buf();
        site.write("ovl.toml", toml);
        let mut cfg = TftpConfig::new(&root, "127.0.0.1:0".parse().unwrap());
        adjust(&mut cfg);
        // The server's log, as JSON lines, captured from every runtime thread.
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogSink(Arc::clone(&sink)))
            .finish();
        let dispatch = tracing::Dispatch::new(subscriber);
        let workers = 2;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .on_thread_start(move || {
                std::mem::forget(tracing::dispatcher::set_default(&dispatch));
            })
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(TftpServer::bind(cfg)).unwrap();
        let addr = server.local_addr().unwrap();
        let stats = server.stats();
        let cancel = CancellationToken::new();
        let handle = rt.spawn(server.run(cancel.clone()));
        Lab {
            site,
            root,
            addr,
            stats,
            cancel,
            rt: Some(rt),
            server: Some(handle),
            logs,
        }
    }

    /// Writes a site file (parents created) and returns its bytes' sha256.
    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
        sha256(bytes)
    }

    /// A fresh path for a client's output.
    fn out(&self, name: &str) -> PathBuf {
        self.site.scratch(&format!("out-{name}"))
    }

    fn stat(&self, f: impl Fn(&TftpStats) -> &std::sync::atomic::AtomicU64) -> u64 {
        TftpStats::get(f(&self.stats))
    }

    /// The server's log events so far (`fields` of each JSON line, plus its `level`).
    fn events(&self) -> Vec<serde_json::Value> {
        let bytes = self.logs.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                let mut f = v["fields"].clone();
                f["level"] = v["level"].clone();
                f
            })
            .collect()
    }

    /// Stops the server and returns how long `run` took to return.
    fn shutdown(&mut self) -> Duration {
        let started = Instant::now();
        self.cancel.cancel();
        if let (Some(rt), Some(h)) = (self.rt.as_ref(), self.server.take()) {
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(30), h)
                    .await
                    .expect("run() returns after cancel")
                    .unwrap();
            });
        }
        started.elapsed()
    }
}

/// Appends log output to a shared buffer.
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Anything a client can be pointed at: a lab's server or another server's port.
trait Server {
    fn port(&self) -> String;
}

impl Server for Lab {
    fn port(&self) -> String {
        self.addr.port().to_string()
    }
}

impl Server for u16 {
    fn port(&self) -> String {
        self.to_string()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(10));
        }
    }
}

/// tftp-hpa: RFC 1350 only, 512-byte lockstep.
fn tftp_hpa_get(lab: &impl Server, file: &str, out: &Path) -> Output {
    output(
        bounded(60, "tftp")
            .args(["-m", "binary", "127.0.0.1", &lab.port(), "-c", "get", file])
            .arg(out),
    )
}

/// atftp with `--option "NAME VALUE"` pairs.
fn atftp_get(lab: &impl Server, file: &str, out: &Path, options: &[&str]) -> Output {
    let mut c = bounded(60, "atftp");
    c.args(["--get", "-r", file, "-l"]).arg(out);
    for o in options {
        c.args(["--option", o]);
    }
    output(c.args(["127.0.0.1", &lab.port()]))
}

/// busybox tftp, as Alpine's initramfs has it.
fn busybox_get(lab: &impl Server, file: &str, out: &Path, blksize: Option<u16>) -> Output {
    let mut c = bounded(60, "busybox");
    c.args(["tftp", "-g", "-r", file, "-l"]).arg(out);
    if let Some(b) = blksize {
        c.args(["-b", &b.to_string()]);
    }
    output(c.args(["127.0.0.1", &lab.port()]))
}

/// curl's TFTP client.
fn curl_get(lab: &impl Server, file: &str, out: &Path, blksize: Option<u16>) -> Output {
    let mut c = bounded(60, "curl");
    c.args([
        "-s",
        "-S",
        &format!("tftp://127.0.0.1:{}/{file}", lab.port()),
    ]);
    if let Some(b) = blksize {
        c.args(["--tftp-blksize", &b.to_string()]);
    }
    output(c.arg("-o").arg(out))
}

/// A raw client socket with a bounded receive wait.
fn raw() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn rrq(file: &str, options: &[(&str, &str)]) -> Vec<u8> {
    Packet::Rrq(Request {
        filename: file.to_owned(),
        mode: Mode::Octet,
        options: options
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    })
    .to_bytes()
}

/// Receives one packet (within the socket's read timeout): the packet and its sender.
fn recv(s: &UdpSocket) -> Option<(Packet, SocketAddr)> {
    let mut buf = vec![0u8; 70000];
    let (n, from) = s.recv_from(&mut buf).ok()?;
    Some((Packet::decode(&buf[..n]).ok()?, from))
}

/// Sends a raw RRQ and returns the first answer.
fn raw_request(lab: &Lab, file: &str, options: &[(&str, &str)]) -> (Packet, SocketAddr) {
    let s = raw();
    s.send_to(&rrq(file, options), lab.addr).unwrap();
    recv(&s).expect("an answer")
}

fn assert_error(p: &Packet, want: ErrorCode) {
    match p {
        Packet::Error { code, .. } => assert_eq!(*code, want, "{p:?}"),
        other => panic!("expected ERROR {want:?}, got {other:?}"),
    }
}

/// Downloads `file` with a raw lockstep client; returns the bytes.
fn raw_download(lab: &Lab, s: &UdpSocket, file: &str) -> Vec<u8> {
    s.send_to(&rrq(file, &[]), lab.addr).unwrap();
    let mut got = Vec::new();
    let mut expect: u16 = 1;
    for _ in 0..100_000 {
        let (p, from) = recv(s).expect("DATA");
        let Packet::Data { block, data } = p else {
            panic!("expected DATA, got {p:?}")
        };
        if block == expect {
            got.extend_from_slice(&data);
            expect = expect.wrapping_add(1);
        }
        s.send_to(&Packet::Ack(block).to_bytes(), from).unwrap();
        if data.len() < 512 {
            return got;
        }
    }
    panic!("download did not end");
}
