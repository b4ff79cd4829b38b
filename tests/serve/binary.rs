//! `ovl serve` as users run it: the built binary on a temp copy of the example site
//! (`ovl init`, `ovl build --all`), HTTP and TFTP on 127.0.0.1 port 0, real clients (curl,
//! tftp-hpa), signals and bind failures. Every wait is bounded.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::harness::proc::{KillOnDrop, Lines, bounded, output, sha256_file};
use crate::harness::site::{MAC, OVL, TestSite};

/// A running `ovl serve`, its stderr lines arriving on a channel.
pub(crate) struct Server(pub(crate) Lines);

impl Server {
    pub(crate) fn start(site: &TestSite, args: &[&str]) -> Server {
        let mut cmd = site.command();
        cmd.arg("serve").args(args);
        Server(Lines::spawn(&mut cmd, true))
    }

    /// Waits (at most 20 s) for a stderr line containing every one of `needles`.
    pub(crate) fn wait_line(&mut self, needles: &[&str]) -> String {
        self.0.wait_line(needles)
    }

    /// The address of the `listening` line of `service` (text log format).
    pub(crate) fn addr(&mut self, service: &str) -> SocketAddr {
        let l = self.wait_line(&["listening", &format!("service=\"{service}\"")]);
        let a = l.split("addr=").nth(1).unwrap().split_whitespace().next();
        a.unwrap().parse().unwrap()
    }

    pub(crate) fn signal(&self, sig: i32) {
        self.0.child.signal(sig);
    }

    /// Waits at most `secs` for the process to exit; its exit code.
    pub(crate) fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        self.0
            .child
            .wait_exit(Duration::from_secs(secs))
            .and_then(|st| st.code())
    }

    /// Every stderr line read so far.
    pub(crate) fn seen(&self) -> String {
        self.0.seen.join("\n")
    }
}

#[test]
fn serves_the_boot_chain_over_http_and_tftp_and_stops_on_sigterm() {
    let s = TestSite::example_built();
    let mut srv = Server::start(&s, &["--http", "127.0.0.1:0", "--tftp", "127.0.0.1:0"]);
    let http = srv.addr("http");
    let tftp = srv.addr("tftp");
    let out = |n: &str| s.scratch(n);

    let o = output(
        bounded(30, "curl")
            .args(["-sf", "-o"])
            .arg(out("boot.ipxe"))
            .arg(format!("http://{http}/boot.ipxe?mac={MAC}")),
    );
    assert!(o.status.success(), "{o:?}");
    let script = std::fs::read_to_string(out("boot.ipxe")).unwrap();
    assert!(script.starts_with("#!ipxe"), "{script}");
    assert!(
        script.contains(&format!("configs/{MAC}.tar.gz")),
        "{script}"
    );

    let published = s.archive(MAC);
    let want = sha256_file(&published);
    let path = format!("configs/{MAC}.tar.gz");
    let o = output(
        bounded(30, "curl")
            .args(["-sf", "-o"])
            .arg(out("http.tar.gz"))
            .arg(format!("http://{http}/{path}")),
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(sha256_file(&out("http.tar.gz")), want);

    let o = output(
        bounded(30, "curl")
            .args(["-sf", "--tftp-blksize", "1468", "-o"])
            .arg(out("curl-tftp.tar.gz"))
            .arg(format!("tftp://{tftp}/{path}")),
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(sha256_file(&out("curl-tftp.tar.gz")), want);

    let o = output(
        bounded(30, "tftp")
            .args(["-m", "binary", "127.0.0.1"])
            .arg(tftp.port().to_string())
            // tftp-hpa reads `a:b` as HOST:FILE, so a name with colons needs the host in front.
            .args(["-c", "get", &format!("127.0.0.1:{path}")])
            .arg(out("hpa.tar.gz")),
    );
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
    assert_eq!(srv.wait_exit(15), Some(0), "{}", srv.seen());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn sigint_stops_it_too_and_json_logs_parse() {
    let s = TestSite::example_built();
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
    assert!(srv.0.seen.iter().all(|l| !l.contains("\"tftp\"")));
    let o = output(
        bounded(30, "curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://{addr}/ovl.toml")),
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "404");
    let l = srv.wait_line(&["http_request", "ovl.toml"]);
    let v: serde_json::Value = serde_json::from_str(&l).unwrap();
    assert_eq!(v["status"], 404);
    assert_eq!(v["reason"], "not public");
    srv.signal(libc::SIGINT);
    assert_eq!(srv.wait_exit(15), Some(0));
}

#[test]
fn sigterm_gives_a_running_transfer_a_bounded_grace() {
    let s = TestSite::example_built();
    // A kernel of the site's flavor: a public boot file.
    std::fs::write(s.path("vmlinuz-lts"), vec![7u8; 20 << 20]).unwrap();
    let mut srv = Server::start(&s, &["--http", "127.0.0.1:0", "--tftp", "off"]);
    let http = srv.addr("http");
    // At 1 MiB/s this download would take 20 s; the server gives it about 5.
    let part = s.scratch("kernel.part");
    let slow = KillOnDrop::spawn(
        bounded(40, "curl")
            .args(["-s", "--limit-rate", "1M", "-o"])
            .arg(&part)
            .arg(format!("http://{http}/vmlinuz-lts")),
    );
    // The transfer is running once bytes arrive (on a loaded machine curl may start late).
    let until = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&part).map_or(0, |m| m.len()) == 0 {
        assert!(Instant::now() < until, "the download did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    srv.signal(libc::SIGTERM);
    assert_eq!(srv.wait_exit(20), Some(0), "{}", srv.seen());
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(
        took >= Duration::from_secs(3),
        "transfers get a grace period: {took:?}"
    );
    drop(slow);
}

#[test]
fn a_port_in_use_exits_3_naming_the_address() {
    let s = TestSite::example_built();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = tcp.local_addr().unwrap().to_string();
    let o = serve_once(&s, &["--http", &taken, "--tftp", "off"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains(&taken), "{o:?}");

    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken = udp.local_addr().unwrap().to_string();
    let o = serve_once(&s, &["--http", "127.0.0.1:0", "--tftp", &taken]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains(&taken), "{o:?}");
}

/// `ovl serve ARGS` on `s`, which must exit by itself within 30 s.
pub(crate) fn serve_once(s: &TestSite, args: &[&str]) -> Output {
    output(
        bounded(30, OVL)
            .arg("--site")
            .arg(s.root())
            .arg("serve")
            .args(args),
    )
}

#[test]
fn bad_dhcp_and_listen_settings_are_refused() {
    let s = TestSite::example_built();
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
    let s = TestSite::example_built();
    let mut srv = Server::start(&s, &["--http", "127.0.0.1:0", "--tftp", "off", "--watch"]);
    let http = srv.addr("http");
    srv.wait_line(&["watching"]);
    srv.wait_line(&["rebuilt 5 archives", "initial build"]);
    let url = format!("http://{http}/configs/{MAC}.tar.gz");
    let fetch = |name: &str| {
        let p = s.scratch(name);
        let o = output(bounded(30, "curl").args(["-sf", "-o"]).arg(&p).arg(&url));
        assert!(o.status.success(), "{o:?}");
        let o = output(
            Command::new("busybox")
                .args(["tar", "-zxOf"])
                .arg(&p)
                .arg("etc/kiosk/hall.conf"),
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(fetch("before.tar.gz").contains("BRIGHTNESS=80"));
    std::fs::write(
        s.path("overlays/special/hall/etc/kiosk/hall.conf"),
        "BRIGHTNESS=40\n",
    )
    .unwrap();
    srv.wait_line(&["rebuilt 1 archive", MAC, "updated"]);
    assert_eq!(fetch("after.tar.gz"), "BRIGHTNESS=40\n");
    srv.signal(libc::SIGTERM);
    assert_eq!(srv.wait_exit(15), Some(0), "{}", srv.seen());
}

#[test]
fn tftp_fetches_show_up_as_boot_events_in_status() {
    let s = TestSite::example_built();
    let mut srv = Server::start(&s, &["--http", "127.0.0.1:0", "--tftp", "127.0.0.1:0"]);
    let http = srv.addr("http");
    let tftp = srv.addr("tftp");
    let out = s.scratch("cfg.tar.gz");
    let o = output(
        bounded(30, "curl")
            .args(["-sf", "-o"])
            .arg(&out)
            .arg(format!("tftp://{tftp}/configs/{MAC}.tar.gz")),
    );
    assert!(o.status.success(), "{o:?}");
    srv.wait_line(&["tftp_transfer", "configs/"]);
    let o = output(
        bounded(30, "curl")
            .args(["-sf"])
            .arg(format!("http://{http}/status")),
    );
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let text = status.to_string();
    assert!(
        text.contains(&format!("tftp:configs/{MAC}.tar.gz")),
        "{text}"
    );
}

#[test]
fn a_corrupt_lease_file_is_reported_as_such() {
    let s = TestSite::new();
    s.write(
        "ovl.toml",
        "[boot]\nserver = \"127.0.0.1\"\n[serve.dhcp]\nrange = [\"127.0.0.10\", \"127.0.0.20\"]\n",
    );
    s.write(".ovl-state/dhcp-leases.json", "{\"leases\": [oops");
    let args = [
        "--http",
        "127.0.0.1:0",
        "--tftp",
        "off",
        "--interface",
        "lo",
    ];
    let o = serve_once(&s, &args);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(".ovl-state/dhcp-leases.json"), "{err}");
    assert!(err.contains("corrupt DHCP lease file"), "{err}");
    assert!(err.contains("line 1 column"), "serde's position: {err}");
    assert!(!err.contains("cannot listen"), "{err}");
}

/// GET `url` with curl; the body as text.
fn curl_text(url: &str) -> String {
    let o = output(bounded(30, "curl").args(["-sf", url]));
    assert!(o.status.success(), "{url}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Polls (at most 10 s) until `boot.ipxe` and `gpxe-script` on disk both equal `served`.
fn on_disk_becomes(s: &TestSite, served: &str) {
    let agree = || {
        ["boot.ipxe", "gpxe-script"]
            .iter()
            .all(|n| std::fs::read_to_string(s.path(n)).is_ok_and(|t| t == served))
    };
    let end = Instant::now() + Duration::from_secs(10);
    while !agree() {
        assert!(
            Instant::now() < end,
            "on disk:\n{}\nserved:\n{served}",
            s.read("boot.ipxe")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `--http` with another port than `ovl.toml`'s: the script over HTTP, over TFTP and on disk
/// is one and the same, naming the port really listened on; `ovl build` writing `ovl.toml`'s
/// port meanwhile is undone within a tick, and a settings change reaches all three.
#[test]
fn served_and_on_disk_boot_scripts_agree_whatever_http_overrides() {
    let s = TestSite::example_built();
    assert!(
        s.read("boot.ipxe")
            .contains("http://192.168.0.2/vmlinuz-lts")
    );
    let mut srv = Server::start(&s, &["--http", "127.0.0.1:0", "--tftp", "127.0.0.1:0"]);
    let http = srv.addr("http");
    let tftp = srv.addr("tftp");
    let kernel = format!("kernel http://192.168.0.2:{}/vmlinuz-lts ", http.port());
    let served = curl_text(&format!("http://{http}/boot.ipxe"));
    assert!(served.contains(&kernel), "{served}");
    on_disk_becomes(&s, &served);
    assert_eq!(curl_text(&format!("tftp://{tftp}/boot.ipxe")), served);
    assert_eq!(curl_text(&format!("http://{http}/gpxe-script")), served);

    s.ovl(&["build", "--all"]).ok();
    srv.wait_line(&["boot_script_rewritten", "WARN"]);
    on_disk_becomes(&s, &served);

    let toml = s
        .read("ovl.toml")
        .replace("flavor = \"lts\"", "flavor = \"virt\"");
    s.write("ovl.toml", &toml);
    srv.wait_line(&["project_reloaded"]);
    let virt = curl_text(&format!("http://{http}/boot.ipxe"));
    assert!(virt.contains("/vmlinuz-virt "), "{virt}");
    on_disk_becomes(&s, &virt);
    assert_eq!(curl_text(&format!("tftp://{tftp}/boot.ipxe")), virt);
    srv.signal(libc::SIGTERM);
    assert_eq!(srv.wait_exit(15), Some(0), "{}", srv.seen());
}

/// With `--watch`, watch mode leaves the boot scripts to the server: after a settings change
/// the file on disk is the served script at once, never `ovl.toml`'s port in between.
#[test]
fn serve_watch_writes_the_served_boot_script() {
    let s = TestSite::example_built();
    let mut srv = Server::start(&s, &["--http", "127.0.0.1:0", "--tftp", "off", "--watch"]);
    let http = srv.addr("http");
    srv.wait_line(&["rebuilt 5 archives", "initial build"]);
    on_disk_becomes(&s, &curl_text(&format!("http://{http}/boot.ipxe")));
    let toml = s
        .read("ovl.toml")
        .replace("flavor = \"lts\"", "flavor = \"virt\"");
    s.write("ovl.toml", &toml);
    srv.wait_line(&["rebuilt 5 archives", "ovl.toml"]);
    let virt = curl_text(&format!("http://{http}/boot.ipxe"));
    assert!(
        virt.contains(&format!("192.168.0.2:{}/vmlinuz-virt ", http.port())),
        "{virt}"
    );
    on_disk_becomes(&s, &virt);
    srv.signal(libc::SIGTERM);
    assert_eq!(srv.wait_exit(15), Some(0), "{}", srv.seen());
    assert!(
        !srv.seen().contains("boot_script_rewritten"),
        "{}",
        srv.seen()
    );
}

/// `[serve] tftp_max_transfers` reaches the TFTP server: with 1, a transfer held open (OACK
/// never acknowledged) leaves the next request "server busy", from another port of the same
/// address (under the per-client cap of 8).
#[test]
fn tftp_max_transfers_from_ovl_toml_caps_the_transfers() {
    let s = TestSite::example_built();
    let toml = s.read("ovl.toml");
    let toml = if toml.contains("[serve]\n") {
        toml.replacen("[serve]\n", "[serve]\ntftp_max_transfers = 1\n", 1)
    } else {
        format!("{toml}\n[serve]\ntftp_max_transfers = 1\n")
    };
    s.write("ovl.toml", &toml);
    let mut srv = Server::start(&s, &["--http", "off", "--tftp", "127.0.0.1:0"]);
    let tftp = srv.addr("tftp");
    let rrq = |opts: &[u8]| {
        let mut p = vec![0, 1];
        p.extend_from_slice(format!("configs/{MAC}.tar.gz\0octet\0").as_bytes());
        p.extend_from_slice(opts);
        p
    };
    let sock = || {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        u
    };
    let held = sock();
    held.send_to(&rrq(b"timeout\x005\0"), tftp).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = held.recv_from(&mut buf).expect("an OACK");
    assert_eq!(&buf[..2], &[0, 6], "OACK: {:?}", &buf[..n]);
    let other = sock();
    other.send_to(&rrq(b""), tftp).unwrap();
    let (n, _) = other.recv_from(&mut buf).expect("an answer");
    assert_eq!(&buf[..4], &[0, 5, 0, 0], "ERROR 0: {:?}", &buf[..n]);
    assert_eq!(&buf[4..n], b"server busy\0");
    // Zero is refused, naming the key.
    s.write(
        "ovl.toml",
        &toml.replace("tftp_max_transfers = 1", "tftp_max_transfers = 0"),
    );
    s.ovl(&["check"])
        .code(1)
        .stderr_has("[serve] tftp_max_transfers = 0");
}
