//! `ovl serve` as users run it: the built binary on a temp copy of the example site
//! (`ovl init`, `ovl build --all`), HTTP and TFTP on 127.0.0.1 port 0, real clients (curl,
//! tftp-hpa), signals and bind failures. Every wait is bounded.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const MAC: &str = "52:54:00:12:34:56";

fn ovl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ovl"))
}

/// A built example site.
struct Site {
    dir: tempfile::TempDir,
    root: PathBuf,
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("site");
    let o = ovl().arg("init").arg(&root).output().unwrap();
    assert!(o.status.success(), "{o:?}");
    let o = ovl()
        .arg("--site")
        .arg(&root)
        .args(["build", "--all"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    Site { dir, root }
}

/// A running `ovl serve`, its stderr lines arriving on a channel.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Server {
    fn start(site: &Site, args: &[&str]) -> Server {
        let mut child = ovl()
            .arg("--site")
            .arg(&site.root)
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Server {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (at most 20 s) for a stderr line containing every one of `needles`.
    fn wait_line(&mut self, needles: &[&str]) -> String {
        let end = Instant::now() + Duration::from_secs(20);
        if let Some(l) = self
            .seen
            .iter()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return l.clone();
        }
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if needles.iter().all(|n| l.contains(n)) {
                        return l;
                    }
                }
                Err(_) => panic!("no line with {needles:?}; seen:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The address of the `listening` line of `service` (text log format).
    fn addr(&mut self, service: &str) -> SocketAddr {
        let l = self.wait_line(&["listening", &format!("service=\"{service}\"")]);
        let a = l.split("addr=").nth(1).unwrap().split_whitespace().next();
        a.unwrap().parse().unwrap()
    }

    fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    /// Waits at most `secs` for the process to exit; its exit code.
    fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sha256_file(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap_or_default()))
}

fn run(c: &mut Command) -> Output {
    c.output().unwrap()
}

#[test]
fn serves_the_boot_chain_over_http_and_tftp_and_stops_on_sigterm() {
    let s = site();
    let mut srv = Server::start(&s, &["--http", "127.0.0.1:0", "--tftp", "127.0.0.1:0"]);
    let http = srv.addr("http");
    let tftp = srv.addr("tftp");
    let out = |n: &str| s.dir.path().join(n);

    let o = run(Command::new("timeout")
        .args(["30", "curl", "-sf", "-o"])
        .arg(out("boot.ipxe"))
        .arg(format!("http://{http}/boot.ipxe?mac={MAC}")));
    assert!(o.status.success(), "{o:?}");
    let script = std::fs::read_to_string(out("boot.ipxe")).unwrap();
    assert!(script.starts_with("#!ipxe"), "{script}");
    assert!(
        script.contains(&format!("configs/{MAC}.tar.gz")),
        "{script}"
    );

    let published = s.root.join(format!("configs/{MAC}.tar.gz"));
    let want = sha256_file(&published);
    let path = format!("configs/{MAC}.tar.gz");
    let o = run(Command::new("timeout")
        .args(["30", "curl", "-sf", "-o"])
        .arg(out("http.tar.gz"))
        .arg(format!("http://{http}/{path}")));
    assert!(o.status.success(), "{o:?}");
    assert_eq!(sha256_file(&out("http.tar.gz")), want);

    let o = run(Command::new("timeout")
        .args(["30", "curl", "-sf", "--tftp-blksize", "1468", "-o"])
        .arg(out("curl-tftp.tar.gz"))
        .arg(format!("tftp://{tftp}/{path}")));
    assert!(o.status.success(), "{o:?}");
    assert_eq!(sha256_file(&out("curl-tftp.tar.gz")), want);

    let o = run(Command::new("timeout")
        .args(["30", "tftp", "-m", "binary", "127.0.0.1"])
        .arg(tftp.port().to_string())
        // tftp-hpa reads `a:b` as HOST:FILE, so a name with colons needs the host in front.
        .args(["-c", "get", &format!("127.0.0.1:{path}")])
        .arg(out("hpa.tar.gz")));
    assert!(o.status.success(), "{o:?}");
    assert_eq!(sha256_file(&out("hpa.tar.gz")), want);

    // One log line per request, with the fields the brief names.
    let l = srv.wait_line(&["http_request", "file=/configs/", "status=200"]);
    for f in ["client=127.0.0.1", "bytes=", "duration_ms=", "rate_kib_s="] {
        assert!(l.contains(f), "{f} in {l}");
    }
    srv.wait_line(&["tftp_transfer", "configs/"]);

    let started = Instant::now();
    srv.signal(libc::SIGTERM);
    assert_eq!(srv.wait_exit(15), Some(0), "{}", srv.seen.join("\n"));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn sigint_stops_it_too_and_json_logs_parse() {
    let s = site();
    let mut srv = Server::start(
        &s,
        &[
            "--http",
            "127.0.0.1:0",
            "--tftp",
            "off",
            "--log-format",
            "json",
        ],
    );
    let l = srv.wait_line(&["\"listening\"", "\"http\""]);
    let v: serde_json::Value = serde_json::from_str(&l).unwrap();
    let addr: SocketAddr = v["addr"].as_str().unwrap().parse().unwrap();
    assert!(srv.seen.iter().all(|l| !l.contains("\"tftp\"")));
    let o = run(Command::new("timeout")
        .args(["30", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{addr}/ovl.toml")));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "403");
    let l = srv.wait_line(&["http_request", "ovl.toml"]);
    let v: serde_json::Value = serde_json::from_str(&l).unwrap();
    assert_eq!(v["status"], 403);
    assert_eq!(v["level"], "WARN");
    srv.signal(libc::SIGINT);
    assert_eq!(srv.wait_exit(15), Some(0));
}

#[test]
fn sigterm_gives_a_running_transfer_a_bounded_grace() {
    let s = site();
    std::fs::write(s.root.join("big.bin"), vec![7u8; 20 << 20]).unwrap();
    let mut srv = Server::start(&s, &["--http", "127.0.0.1:0", "--tftp", "off"]);
    let http = srv.addr("http");
    // At 1 MiB/s this download would take 20 s; the server gives it about 5.
    let mut slow = Command::new("timeout")
        .args(["40", "curl", "-s", "--limit-rate", "1M", "-o", "/dev/null"])
        .arg(format!("http://{http}/big.bin"))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let started = Instant::now();
    srv.signal(libc::SIGTERM);
    assert_eq!(srv.wait_exit(20), Some(0), "{}", srv.seen.join("\n"));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(
        took >= Duration::from_secs(3),
        "transfers get a grace period: {took:?}"
    );
    let _ = slow.kill();
    let _ = slow.wait();
}

#[test]
fn a_port_in_use_exits_3_naming_the_address() {
    let s = site();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = tcp.local_addr().unwrap().to_string();
    let o = run(Command::new("timeout")
        .args(["30", env!("CARGO_BIN_EXE_ovl"), "--site"])
        .arg(&s.root)
        .args(["serve", "--http", &taken, "--tftp", "off"]));
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains(&taken), "{o:?}");

    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken = udp.local_addr().unwrap().to_string();
    let o = run(Command::new("timeout")
        .args(["30", env!("CARGO_BIN_EXE_ovl"), "--site"])
        .arg(&s.root)
        .args(["serve", "--http", "127.0.0.1:0", "--tftp", &taken]));
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains(&taken), "{o:?}");
}

/// `ovl serve ARGS` on `s`, which must exit by itself within 30 s.
fn serve_once(s: &Site, args: &[&str]) -> Output {
    run(Command::new("timeout")
        .args(["30", env!("CARGO_BIN_EXE_ovl"), "--site"])
        .arg(&s.root)
        .arg("serve")
        .args(args))
}

#[test]
fn bad_dhcp_and_listen_settings_are_refused() {
    let s = site();
    let full = ["--http", "127.0.0.1:0", "--tftp", "off", "--dhcp", "full"];
    // Full DHCP needs an interface (usage, 2) and a pool (invalid ovl.toml, 1).
    let o = serve_once(&s, &full);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--interface"),
        "{o:?}"
    );
    let o = serve_once(&s, &[&full[..], &["--interface", "lo"]].concat());
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("range"),
        "{o:?}"
    );
    let o = serve_once(&s, &["--http", "nowhere"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let o = serve_once(&s, &["--http", "off", "--tftp", "off"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}

#[test]
fn serve_watch_keeps_the_served_archive_current() {
    let s = site();
    let mut srv = Server::start(&s, &["--http", "127.0.0.1:0", "--tftp", "off", "--watch"]);
    let http = srv.addr("http");
    srv.wait_line(&["watching"]);
    srv.wait_line(&["rebuilt 5 archives", "initial build"]);
    let url = format!("http://{http}/configs/{MAC}.tar.gz");
    let fetch = |name: &str| {
        let p = s.dir.path().join(name);
        let o = run(Command::new("timeout")
            .args(["30", "curl", "-sf", "-o"])
            .arg(&p)
            .arg(&url));
        assert!(o.status.success(), "{o:?}");
        let o = run(Command::new("busybox")
            .args(["tar", "-zxOf"])
            .arg(&p)
            .arg("etc/kiosk/hall.conf"));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(fetch("before.tar.gz").contains("BRIGHTNESS=80"));
    std::fs::write(
        s.root.join("overlays/special/hall/etc/kiosk/hall.conf"),
        "BRIGHTNESS=40\n",
    )
    .unwrap();
    srv.wait_line(&["rebuilt 1 archive", MAC, "updated"]);
    assert_eq!(fetch("after.tar.gz"), "BRIGHTNESS=40\n");
    srv.signal(libc::SIGTERM);
    assert_eq!(srv.wait_exit(15), Some(0), "{}", srv.seen.join("\n"));
}

#[test]
fn tftp_fetches_show_up_as_boot_events_in_status() {
    let s = site();
    let mut srv = Server::start(&s, &["--http", "127.0.0.1:0", "--tftp", "127.0.0.1:0"]);
    let http = srv.addr("http");
    let tftp = srv.addr("tftp");
    let out = s.dir.path().join("cfg.tar.gz");
    let o = run(Command::new("timeout")
        .args(["30", "curl", "-sf", "-o"])
        .arg(&out)
        .arg(format!("tftp://{tftp}/configs/{MAC}.tar.gz")));
    assert!(o.status.success(), "{o:?}");
    srv.wait_line(&["tftp_transfer", "configs/"]);
    let o = run(Command::new("timeout")
        .args(["30", "curl", "-sf"])
        .arg(format!("http://{http}/status")));
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let text = status.to_string();
    assert!(
        text.contains(&format!("tftp:configs/{MAC}.tar.gz")),
        "{text}"
    );
}
