//! No client can stall the boot chain (issue #9, "Stalls and memory"): the built `ovl serve`
//! against floods of idle and half-header connections, hundreds of slow readers, blank
//! devices by the hundred, and `/status` of a 25,000-device site, each time with a normal
//! client served fast beside it. Figures are printed as `FIGURE` lines (`--nocapture`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use super::binary::Server;
use crate::harness::proc::{Lines, bounded, noise, output};
use crate::harness::site::TestSite;

/// `ovl serve` on HTTP only, started with a soft open-file limit of 1024 (its hard limit is
/// the test's), after `serve_toml` is appended to the site's `[serve]` table.
fn start(s: &TestSite, serve_toml: &str) -> (Server, SocketAddr, u32) {
    let toml = std::fs::read_to_string(s.path("ovl.toml")).unwrap();
    s.write("ovl.toml", &format!("{toml}{serve_toml}"));
    let mut cmd = s.command();
    cmd.args(["serve", "--http", "127.0.0.1:0", "--tftp", "off"]);
    // SAFETY: getrlimit/setrlimit are async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(|| {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = lim.rlim_max.min(1024);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    let mut srv = Server(Lines::spawn(&mut cmd, true));
    let addr = srv.addr("http");
    let pid = srv.0.child.0.id();
    (srv, addr, pid)
}

/// A line of `/proc/PID/status` (`VmRSS`, `VmHWM`) in kB.
fn status_kb(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Open file descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// curl GET of `url`: its status code and how long it took.
fn timed_get(url: &str) -> (String, Duration) {
    let started = Instant::now();
    let o = output(
        bounded(30, "curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "20",
            ])
            .arg(url),
    );
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        started.elapsed(),
    )
}

/// How many of `conns` the server has not closed by `deadline` (it stops looking once they
/// all are).
fn still_open_at(conns: &mut [TcpStream], deadline: Instant) -> usize {
    for c in conns.iter_mut() {
        c.set_nonblocking(true).unwrap();
    }
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let open = conns
            .iter_mut()
            .map(closed_by_server)
            .filter(|closed| !closed)
            .count();
        if open == 0 || Instant::now() >= deadline {
            return open;
        }
    }
}

/// Whether the server has closed `c` (EOF or reset; bytes it sent first are read away).
fn closed_by_server(c: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn idle_and_half_header_connections_leave_a_normal_client_served() {
    let s = TestSite::example_built();
    s.write_bytes("vmlinuz-lts", &noise(1 << 20, 40));
    let (srv, addr, pid) = start(&s, "header_timeout = 8\n");
    // The soft open-file limit was raised to the hard one at start.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f[3], f[4], "soft = hard: {line}");
    assert_ne!(f[3], "1024", "{line}");

    // 1,100 connections that send nothing, 100 that send half a request and then a header
    // line every 500 ms (slowloris), all from this process.
    let t0 = Instant::now();
    let mut idle: Vec<TcpStream> = (0..1100)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let mut lorises: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"GET /boot.ipxe HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            c
        })
        .collect();
    let drip: Vec<TcpStream> = lorises.iter().map(|c| c.try_clone().unwrap()).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = std::sync::Arc::clone(&stop);
    let dripper = std::thread::spawn(move || {
        let mut drip = drip;
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            for c in &mut drip {
                let _ = c.write_all(b"X-Slow: 1\r\n");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let fds = open_fds(pid);
    eprintln!(
        "FIGURE server open files with 1,200 hostile connections (opened in {:?}): {fds}",
        t0.elapsed()
    );
    assert!(
        fds < 1024 + 64,
        "{fds} open files: the connection cap does not hold"
    );

    // A normal client: the script and a 1 MiB kernel, each within 2 s.
    for path in ["boot.ipxe", "vmlinuz-lts"] {
        let (code, took) = timed_get(&format!("http://{addr}/{path}"));
        eprintln!("FIGURE {path} beside 1,100 idle + 100 slowloris connections: {took:?}");
        assert_eq!(code, "200", "{path}");
        assert!(took < Duration::from_secs(2), "{path}: {took:?}");
    }

    // The header timeout (8 s here) closes every one of them, dripping or not.
    idle.append(&mut lorises);
    let open = still_open_at(&mut idle, t0 + Duration::from_secs(20));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    dripper.join().unwrap();
    assert_eq!(open, 0, "connections still open after the header timeout");
    assert!(
        !srv.seen().contains("Too many open files"),
        "{}",
        srv.seen()
    );
}

/// A TCP connection to `addr` (IPv4) from `source` (else any address), with a receive buffer
/// of `rcvbuf` bytes (else the kernel's default).
pub(crate) fn connect(
    addr: SocketAddr,
    source: Option<std::net::Ipv4Addr>,
    rcvbuf: Option<i32>,
) -> TcpStream {
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let SocketAddr::V4(to) = addr else {
        panic!("IPv4 only")
    };
    // SAFETY: plain socket calls on a descriptor owned by the TcpStream made at once.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let stream = TcpStream::from_raw_fd(fd);
        if let Some(size) = rcvbuf {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        if let Some(ip) = source {
            let sa = sockaddr(ip, 0);
            let r = libc::bind(fd, (&sa as *const libc::sockaddr_in).cast(), len);
            assert_eq!(r, 0, "bind {ip}: {}", std::io::Error::last_os_error());
        }
        let sa = sockaddr(*to.ip(), to.port());
        let r = libc::connect(fd, (&sa as *const libc::sockaddr_in).cast(), len);
        assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
        stream
    }
}

/// A client socket with a 4 KiB receive buffer, connected to `addr`.
fn small_window_client(addr: SocketAddr) -> TcpStream {
    connect(addr, None, Some(4096))
}

/// `GET path` from `source` on a new connection: the status code and the body's length.
pub(crate) fn get_from(addr: SocketAddr, source: std::net::Ipv4Addr, path: &str) -> (u16, usize) {
    let mut c = connect(addr, Some(source), None);
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    c.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    let head_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |p| p + 4);
    let status = String::from_utf8_lossy(&answer[..head_end.min(answer.len())])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, answer.len() - head_end)
}

#[test]
fn slow_readers_of_a_big_file_keep_the_server_small() {
    let s = TestSite::example_built();
    s.write_bytes("vmlinuz-lts", &noise(64 << 20, 41));
    let (_srv, addr, pid) = start(&s, "");
    let base = status_kb(pid, "VmRSS");
    // 800 clients download the 64 MiB kernel, each reading 1 KiB every 200 ms.
    let mut readers: Vec<TcpStream> = (0..800)
        .map(|_| {
            let mut c = small_window_client(addr);
            c.write_all(b"GET /vmlinuz-lts HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            c.set_nonblocking(true).unwrap();
            c
        })
        .collect();
    let started = Instant::now();
    let mut read = 0usize;
    let mut buf = [0u8; 1024];
    while started.elapsed() < Duration::from_secs(6) {
        for c in &mut readers {
            if let Ok(n) = c.read(&mut buf) {
                read += n;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (rss, hwm) = (status_kb(pid, "VmRSS"), status_kb(pid, "VmHWM"));
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    eprintln!(
        "FIGURE 800 slow readers of a 64 MiB file: server RSS {base} kB idle, {rss} kB now, \
         peak {hwm} kB ({} kB a reader); clients read {read} bytes; {}",
        hwm.saturating_sub(base) / 800,
        sockstat
            .lines()
            .find(|l| l.starts_with("TCP:"))
            .unwrap_or("")
    );
    assert!(read > 800 * 1024, "the readers were served: {read}");
    assert!(hwm < 256 * 1024, "peak RSS {hwm} kB for 800 slow readers");
    // A normal client is still served fast.
    let (code, took) = timed_get(&format!("http://{addr}/boot.ipxe"));
    assert_eq!(code, "200");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn a_reader_that_stops_reading_is_closed_after_the_idle_timeout() {
    let s = TestSite::example_built();
    s.write_bytes("vmlinuz-lts", &noise(64 << 20, 42));
    let (mut srv, addr, _pid) = start(&s, "idle_timeout = 2\n");
    let mut c = small_window_client(addr);
    c.write_all(b"GET /vmlinuz-lts HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // Read nothing for 4 s: the server sees no byte move for its idle timeout.
    std::thread::sleep(Duration::from_secs(4));
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 65536];
    let eof = loop {
        match c.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got += n,
            Err(_) => break false,
        }
    };
    assert!(eof, "the server closed the stalled connection");
    assert!(got < 64 << 20, "{got} bytes: the download did not finish");
    srv.wait_line(&["http_idle_timeout"]);
}

/// curl from `source` (a loopback address) for `url`: `(status code, body bytes)`.
fn curl_from(source: &str, url: &str, extra: &[&str]) -> (String, Vec<u8>, Duration) {
    let started = Instant::now();
    let body = tempfile::NamedTempFile::new().unwrap();
    let o = output(
        bounded(120, "curl")
            .args(["-s", "--interface", source, "-w", "%{http_code}", "-o"])
            .arg(body.path())
            .args(extra)
            .arg(url),
    );
    let code = String::from_utf8_lossy(&o.stdout).into_owned();
    (
        code,
        std::fs::read(body.path()).unwrap_or_default(),
        started.elapsed(),
    )
}

#[test]
fn two_hundred_blank_devices_leave_memory_bounded_and_a_real_one_served() {
    let s = TestSite::example_built();
    // 4 MiB that do not compress: every on-demand archive of profile S is that large.
    s.write_bytes("overlays/base/opt/blob.bin", &noise(4 << 20, 43));
    let (_srv, addr, pid) = start(&s, "default_profile = \"S\"\n");
    let base = status_kb(pid, "VmRSS");
    // 200 clients on 100 addresses, each asking for a MAC nobody has, all at once.
    let flood = std::thread::spawn(move || {
        let handles: Vec<_> = (0..200u32)
            .map(|i| {
                std::thread::spawn(move || {
                    let source = std::net::Ipv4Addr::new(127, 0, 0, 10 + (i / 2) as u8);
                    let path = format!(
                        "/configs/02:00:00:00:{:02x}:{:02x}.tar.gz",
                        i / 256,
                        i % 256
                    );
                    get_from(addr, source, &path).0.to_string()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<String>>()
    });
    std::thread::sleep(Duration::from_millis(500));
    // A real blank device (it honours Retry-After when told to come back).
    let url = format!("http://{addr}/configs/52:54:00:77:77:77.tar.gz");
    let (code, body, took) = curl_from("127.0.1.1", &url, &["--retry", "20"]);
    let codes = flood.join().unwrap();
    let served = codes.iter().filter(|c| *c == "200").count();
    let busy = codes.iter().filter(|c| *c == "503").count();
    let hwm = status_kb(pid, "VmHWM");
    eprintln!(
        "FIGURE 200 blank-device requests (4 MiB archives): {served} served, {busy} told to \
         retry; the real blank device waited {took:?}; server RSS {base} kB idle, peak {hwm} kB"
    );
    assert_eq!(code, "200");
    assert_eq!(&body[..2], &[0x1f, 0x8b], "a gzip archive");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_eq!(served + busy, 200, "{codes:?}");
    assert!(served > 0);
    assert!(hwm < 320 * 1024, "peak RSS {hwm} kB");
}

#[test]
fn status_of_25000_devices_leaves_static_files_fast() {
    let s = TestSite::example_built();
    let mut inv = String::new();
    for i in 0..25_000u32 {
        let profile = ["S", "XL", "special"][(i % 3) as usize];
        inv.push_str(&format!(
            "[[device]]\nmac = \"02:00:00:{:02x}:{:02x}:{:02x}\"\nprofile = \"{profile}\"\n\n",
            i >> 16,
            (i >> 8) & 255,
            i & 255
        ));
    }
    s.write("devices.toml", &inv);
    s.write_bytes("vmlinuz-lts", &noise(256 << 10, 44));
    let mut cmd = s.command();
    cmd.args(["serve", "--http", "127.0.0.1:0", "--tftp", "off"]);
    let mut srv = Server(Lines::spawn(&mut cmd, true));
    // Loading and planning 25,000 devices takes a while in a debug build.
    let end = Instant::now() + Duration::from_secs(600);
    let line = loop {
        let l = srv.0.next_before(end).expect("a listening line");
        if l.contains("listening") && l.contains("service=\"http\"") {
            break l;
        }
    };
    let a = line
        .split("addr=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next();
    let addr: SocketAddr = a.unwrap().parse().unwrap();
    // 40 concurrent /status requests, and meanwhile a kernel fetch.
    let statuses: Vec<_> = (0..40)
        .map(|_| std::thread::spawn(move || timed_get(&format!("http://{addr}/status"))))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let (code, took) = timed_get(&format!("http://{addr}/vmlinuz-lts"));
    let results: Vec<(String, Duration)> =
        statuses.into_iter().map(|h| h.join().unwrap()).collect();
    let slowest = results.iter().map(|r| r.1).max().unwrap();
    let (_, one) = timed_get(&format!("http://{addr}/status"));
    eprintln!(
        "FIGURE 25,000 devices: kernel fetch beside 40 /status requests {took:?}; slowest \
         /status {slowest:?}; one more /status {one:?}"
    );
    assert_eq!(code, "200");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(results.iter().all(|r| r.0 == "200"), "{results:?}");
    let o = output(
        bounded(60, "curl")
            .arg("-s")
            .arg(format!("http://{addr}/status")),
    );
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["devices"].as_array().unwrap().len(), 25_000);
}

/// At the connection cap with every connection answering a request, a new client waits in
/// the listen backlog for a free slot (as nginx leaves it) instead of being told 503: a
/// device's single script request survives a burst of kernel downloads.
#[test]
fn at_the_cap_with_every_connection_busy_a_new_client_waits_for_a_slot() {
    let s = TestSite::example_built();
    s.write_bytes("big.bin", &noise(16 << 20, 51));
    let (_srv, addr, _pid) = start(&s, "max_connections = 2\npublic = [\"big.bin\"]\n");
    // Two slow downloads hold both connections for a few seconds.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let url = format!("http://{addr}/big.bin");
            std::thread::spawn(move || {
                let o = output(
                    bounded(60, "curl")
                        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                        .args(["--limit-rate", "4M"])
                        .arg(url),
                );
                String::from_utf8_lossy(&o.stdout).into_owned()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (code, took) = timed_get(&format!("http://{addr}/boot.ipxe"));
    eprintln!("FIGURE a request at the cap, every connection busy: {code} after {took:?}");
    assert_eq!(code, "200", "after {took:?}");
    assert!(
        took > Duration::from_millis(300),
        "it waited for a slot: {took:?}"
    );
    for h in slow {
        assert_eq!(h.join().unwrap(), "200");
    }
}
