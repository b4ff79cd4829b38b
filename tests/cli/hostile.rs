//! Hostile and clumsy input on the build side (issue #9, items 5, 11, 14, 16, 18): symlinks
//! out of the site, non-regular files where archives go, a capture holding a 1 GiB member,
//! runaway templates, `configs/` on another file system or read-only, TOML that is not UTF-8.
//! Each is refused with a located error, in bounded time and memory.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::harness::proc::{must, require_root};
use crate::harness::site::{MAC, OVL, TestSite};

/// `ovl --site SITE ARGS` killed after `secs`: exit code (-1 when killed) and stderr.
fn bounded(site: &TestSite, secs: u64, args: &[&str]) -> (i32, String) {
    let out = Command::new("timeout")
        .args(["-s", "KILL", &secs.to_string(), OVL, "--site"])
        .arg(site.root())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_layer_or_capture_reached_through_a_symlink_out_of_the_site_is_refused() {
    let site = TestSite::new();
    site.ovl(&["build", "--all"]).ok();
    let before = site.snapshot();
    // An overlay folder that is a link to a folder outside the site.
    let outside = site.scratch("outside");
    std::fs::create_dir_all(outside.join("etc")).unwrap();
    std::fs::write(outside.join("etc/shadow"), "root:stolen:::::::\n").unwrap();
    site.symlink("overlays/ext", outside.to_str().unwrap());
    site.write("profiles/S.toml", "overlays = [\"base\", \"ext\"]\n");
    site.ovl(&["build", "--all"])
        .code(1)
        .stderr_has("overlays/ext: reached through a symlink leading out of the site");
    site.ovl(&["check"])
        .code(1)
        .stderr_has("overlays/ext: reached");
    // A device's capture folder planted as a link out of the site (devices write there).
    site.write("profiles/S.toml", "overlays = [\"base\"]\n");
    crate::harness::site::python_tar(
        &outside.join("cap/host.apkovl.tar.gz"),
        r#"[("etc/motd", "f", "from outside\n", 0o644, 0, 0, "")]"#,
    );
    std::fs::create_dir_all(site.path("captures")).unwrap();
    site.symlink(
        &format!("captures/{MAC}"),
        outside.join("cap").to_str().unwrap(),
    );
    site.ovl(&["build", "--all"]).code(1).stderr_has(&format!(
        "captures/{MAC}: reached through a symlink leading out of the site"
    ));
    assert_eq!(before, site.snapshot());
    // A link that stays inside the site is fine.
    std::fs::remove_file(site.path(&format!("captures/{MAC}"))).unwrap();
    std::fs::rename(outside.join("cap"), site.path("captures/ref")).unwrap();
    site.symlink(&format!("captures/{MAC}"), "ref");
    site.ovl(&["build", "--all"]).ok();
    assert_eq!(site.archive_member(MAC, "etc/motd"), "from outside\n");
}

#[test]
fn a_symlink_or_fifo_at_an_archive_path_neither_hangs_nor_is_read() {
    let site = TestSite::new();
    std::fs::create_dir_all(site.path("configs")).unwrap();
    // A link to /dev/zero where the archive goes: list says stale and returns at once.
    site.symlink(&format!("configs/{MAC}.tar.gz"), "/dev/zero");
    let (code, stderr) = bounded(&site, 20, &["list", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    // build replaces the link itself (never its target) by the archive.
    site.ovl(&["build", "--all"]).ok();
    let m = std::fs::symlink_metadata(site.archive(MAC)).unwrap();
    assert!(m.file_type().is_file());
    site.ovl(&["list", "--json"]).ok();
    // A fifo there: list and diff return, build replaces it.
    std::fs::remove_file(site.archive(MAC)).unwrap();
    let st = Command::new("mkfifo")
        .arg(site.archive(MAC))
        .status()
        .unwrap();
    assert!(st.success());
    let t = Instant::now();
    let (code, stderr) = bounded(&site, 20, &["list", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = bounded(&site, 20, &["diff", "--mac", MAC]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("is a fifo, not a regular file"), "{stderr}");
    let (code, stderr) = bounded(&site, 20, &["build", "--all"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(t.elapsed() < Duration::from_secs(15));
    assert!(
        std::fs::symlink_metadata(site.archive(MAC))
            .unwrap()
            .is_file()
    );
    // An lbu archive layer that is a fifo: refused by name, without waiting on it.
    let st = Command::new("mkfifo")
        .arg(site.path("ref.tar.gz"))
        .status()
        .unwrap();
    assert!(st.success());
    site.write("profiles/S.toml", "overlays = [\"base\", \"ref.tar.gz\"]\n");
    let (code, stderr) = bounded(&site, 20, &["build", "--all"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("ref.tar.gz: is a fifo, not a regular file; refusing it"),
        "{stderr}"
    );
}

/// Writes a gzip'd tar holding `etc/motd` and `root/big`, a `size`-byte member of zeros,
/// streamed by Python's tarfile (never held in memory).
fn zero_member_capture(path: &std::path::Path, size: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let script = format!(
        r#"
import io, tarfile
class Zeros:
    def __init__(self, n): self.n = n
    def read(self, k=-1):
        k = self.n if k is None or k < 0 else min(k, self.n)
        k = min(k, 1 << 20)
        self.n -= k
        return bytes(k)
with tarfile.open({path:?}, "w:gz", compresslevel=1, format=tarfile.GNU_FORMAT) as t:
    m = tarfile.TarInfo("etc/motd"); m.size = 3
    t.addfile(m, io.BytesIO(b"hi\n"))
    b = tarfile.TarInfo("root/big"); b.size = {size}
    t.addfile(b, Zeros({size}))
"#,
        path = path.display().to_string()
    );
    must(&["python3", "-c", &script]);
}

/// Runs `ovl --site SITE ARGS` to its end (killed after 120 s): exit code, stderr and peak
/// RSS in KiB. The peak is GNU time's `%M` of the ovl process, which time forks from itself:
/// a child forked straight from this (large, multi-threaded) test process would count the
/// test's own pages in its peak until it execs.
fn run_measured(site: &TestSite, args: &[&str]) -> (i32, String, i64) {
    let err = tempfile::NamedTempFile::new().unwrap();
    let rss = tempfile::NamedTempFile::new().unwrap();
    // Reaped below by wait4(2); std's wait would not be bounded by the watchdog.
    #[allow(clippy::zombie_processes)]
    let child = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(rss.path())
        .arg(OVL)
        .arg("--site")
        .arg(site.root())
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("OVL_SITE")
        .args(args)
        .stdout(Stdio::null())
        .stderr(err.reopen().unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::SeqCst) {
                if start.elapsed() > Duration::from_secs(120) {
                    // SAFETY: kill(2) on our own child, not yet reaped.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4(2) fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child and writes into the two locals.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    done.store(true, Ordering::SeqCst);
    watchdog.join().unwrap();
    assert_eq!(r, pid, "wait4 failed");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let stderr = std::fs::read_to_string(err.path()).unwrap();
    let text = std::fs::read_to_string(rss.path()).unwrap();
    let peak_kib = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("GNU time wrote no peak RSS: {text:?}"));
    (code, stderr, peak_kib)
}

#[test]
fn a_capture_with_a_1_gib_member_is_refused_in_bounded_memory() {
    let site = TestSite::new();
    site.ovl(&["build", "--all"]).ok();
    let before = site.snapshot();
    let capture = site.path(&format!("captures/{MAC}/host.apkovl.tar.gz"));
    zero_member_capture(&capture, 1 << 30);
    let compressed = std::fs::metadata(&capture).unwrap().len();
    assert!(compressed < 16 << 20, "{compressed} bytes");
    for cmd in [&["build", "--all"][..], &["check"][..]] {
        let (code, stderr, rss_kib) = run_measured(&site, cmd);
        assert_eq!(code, 1, "{cmd:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "captures/{MAC}/host.apkovl.tar.gz: member root/big is 1073741824 bytes, more than [build] max_capture_bytes (268435456)"
            )),
            "{stderr}"
        );
        eprintln!("{cmd:?}: capture {compressed} bytes, peak RSS {rss_kib} KiB");
        assert!(rss_kib < 200 * 1024, "{cmd:?}: peak RSS {rss_kib} KiB");
    }
    assert_eq!(before, site.snapshot());
    // The total of several members counts, and `[build] max_capture_bytes` sets the cap.
    zero_member_capture(&capture, 600_000);
    site.ovl(&["build", "--all"]).ok();
    site.write(
        "ovl.toml",
        "[boot]\nserver = \"10.9.0.1\"\n[build]\nmax_capture_bytes = 600000\n",
    );
    site.ovl(&["build", "--all"])
        .code(1)
        .stderr_has("member root/big brings the layer's files to 600003 bytes, more than [build] max_capture_bytes (600000)");
}

#[test]
fn runaway_templates_are_errors_naming_their_file() {
    let loops = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
    // A template written in a profile is located at its line there.
    let cases: [(&str, &str, &[&str]); 3] = [
        (
            "overlays/base/etc/app.conf.j2",
            loops,
            &["overlays/base/etc/app.conf.j2:1:"],
        ),
        (
            "profiles/S.toml",
            &format!("overlays = [\"base\"]\nhostname = \"h{loops}\"\n"),
            &["profiles/S.toml:2:", "template in hostname: too much work"],
        ),
        (
            "profiles/S.toml",
            &format!("overlays = [\"base\"]\n[files.\"etc/x\"]\ncontent = \"{loops}\"\n"),
            &[
                "profiles/S.toml:3:",
                "template in files.\"etc/x\".content: too much work",
            ],
        ),
    ];
    for (file, text, messages) in cases {
        let site = TestSite::new();
        site.write(file, text);
        for cmd in ["check", "build"] {
            let t = Instant::now();
            let args: &[&str] = if cmd == "build" {
                &["build", "--all"]
            } else {
                &["check"]
            };
            let (code, stderr) = bounded(&site, 60, args);
            assert_eq!(code, 1, "{cmd} {file}: {stderr}");
            for m in messages {
                assert!(stderr.contains(m), "{cmd} {file}: {stderr}");
            }
            assert!(stderr.contains("too much work"), "{stderr}");
            assert!(t.elapsed() < Duration::from_secs(30), "{cmd} {file}");
        }
    }
}

#[test]
fn configs_as_a_symlink_to_another_file_system_builds() {
    let site = TestSite::new();
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    site.symlink("configs", shm.path().to_str().unwrap());
    site.ovl(&["build", "--all"]).ok();
    assert!(shm.path().join(format!("{MAC}.tar.gz")).is_file());
    site.write("overlays/base/etc/motd", "changed\n");
    site.ovl(&["build", "--all", "--json"]).ok();
    assert_eq!(site.archive_member(MAC, "etc/motd"), "changed\n");
    let names: Vec<String> = std::fs::read_dir(shm.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [format!("{MAC}.tar.gz")]);
    assert!(!site.path(".ovl-tmp").exists());
}

#[test]
fn a_device_whose_kept_manifest_cannot_be_written_fails_alone_and_nothing_is_left_behind() {
    // Published as one batch: the blocked device is named, every other one is published,
    // and no hidden temporary stays anywhere.
    let site = TestSite::new();
    let macs: Vec<String> = (0..12).map(|i| format!("52:54:00:00:00:{i:02x}")).collect();
    let inv: String = macs
        .iter()
        .map(|m| format!("[[device]]\nmac = \"{m}\"\nprofile = \"S\"\n"))
        .collect();
    site.write("devices.toml", &inv);
    let blocked = ".ovl-state/manifests/52:54:00:00:00:05";
    site.write(blocked, "not a folder\n");
    let run = site.ovl(&["build", "--all"]).code(3);
    assert!(
        run.stderr
            .contains(&format!("{}: File exists", site.path(blocked).display())),
        "{}",
        run.stderr
    );
    for m in &macs {
        assert_eq!(site.archive(m).is_file(), !m.ends_with(":05"), "{m}");
    }
    let temps: Vec<_> = walkdir::WalkDir::new(site.root())
        .into_iter()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".ovl-tmp"))
        .collect();
    assert_eq!(temps, Vec::<String>::new());
    // Unblocked: that device is published too; the others are left alone (same mtime).
    let before = std::fs::metadata(site.archive(&macs[0]))
        .unwrap()
        .modified()
        .unwrap();
    std::fs::remove_file(site.path(blocked)).unwrap();
    site.ovl(&["build", "--all"])
        .ok()
        .stdout_has("1 created, 11 unchanged");
    assert!(site.archive(&macs[5]).is_file());
    let after = std::fs::metadata(site.archive(&macs[0]))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);
}

#[test]
#[ignore = "needs root: drops to nobody with setpriv and mounts a read-only tmpfs in a private mount namespace"]
fn a_read_only_configs_folder_is_reported_as_such() {
    require_root("setpriv --reuid and unshare --mount");
    let site = TestSite::new();
    site.ovl(&["build", "--all"]).ok();
    site.write("overlays/base/etc/motd", "changed\n");
    // Not writable for the user building: permission denied on configs/.
    let st = Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(site.dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    site.chmod("configs", 0o555);
    let run = site.ovl_as_nobody(&["build", "--all"]).code(3);
    let stderr = &run.stderr;
    let configs = site.path("configs");
    assert!(
        stderr.contains(&format!("{}: Permission denied", configs.display())),
        "{stderr}"
    );
    site.chmod("configs", 0o755);
    // A read-only mount there: said so, on that path.
    let script = format!(
        "mount -t tmpfs -o ro tmpfs '{}' && exec '{OVL}' --site '{}' build --all",
        configs.display(),
        site.root().display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("{}: Read-only file system", configs.display())),
        "{stderr}"
    );
}

#[test]
fn toml_that_is_not_utf8_is_invalid_input_with_its_place() {
    let site = TestSite::new();
    let mut inventory =
        format!("[[device]]\nmac = \"{MAC}\"\nprofile = \"S\"\nhostname = \"k").into_bytes();
    inventory.extend_from_slice(b"\xe9\"\n");
    site.write_bytes("devices.toml", &inventory);
    site.ovl(&["build", "--all"])
        .code(1)
        .stderr_has("devices.toml:4:14: not valid UTF-8");
    site.write("devices.toml", "");
    site.write_bytes("profiles/S.toml", b"description = \"caf\xe9\"\n");
    site.ovl(&["check"])
        .code(1)
        .stderr_has("profiles/S.toml:1:19: not valid UTF-8");
    site.write_bytes("ovl.toml", b"# \xff\n");
    site.ovl(&["list"])
        .code(1)
        .stderr_has("ovl.toml:1:3: not valid UTF-8");
}
