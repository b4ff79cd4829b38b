//! A site in a temporary folder per test, the built `ovl` binary run on it, and the
//! assertions on one run (exit code, stdout, stderr, JSON).
//!
//! The site lives in `TEMP/site`; the rest of `TEMP` is scratch space outside the site
//! (downloads, secrets a server must not reach, logs).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::proc::must;

/// The `ovl` binary under test.
pub const OVL: &str = env!("CARGO_BIN_EXE_ovl");

/// The MAC of the one device of [`TestSite::new`].
pub const MAC: &str = "52:54:00:12:34:56";

/// A command running the `ovl` binary under test.
pub fn ovl() -> Command {
    Command::new(OVL)
}

/// A site in a temporary folder, removed on drop.
pub struct TestSite {
    /// The temporary folder: the site is its `site` subfolder.
    pub dir: tempfile::TempDir,
    root: PathBuf,
}

/// The result of one `ovl` run.
#[derive(Debug)]
pub struct Run {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Run {
    /// Asserts exit code 0.
    pub fn ok(self) -> Run {
        self.code(0)
    }

    /// Asserts exit code `code`.
    pub fn code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "wrong exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts that stderr contains `s`.
    pub fn stderr_has(self, s: &str) -> Run {
        assert!(
            self.stderr.contains(s),
            "stderr lacks {s:?}:\n{}",
            self.stderr
        );
        self
    }

    /// Asserts that stdout contains `s`.
    pub fn stdout_has(self, s: &str) -> Run {
        assert!(
            self.stdout.contains(s),
            "stdout lacks {s:?}:\n{}",
            self.stdout
        );
        self
    }

    /// Stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

impl TestSite {
    /// An empty site folder.
    pub fn empty() -> TestSite {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("site");
        std::fs::create_dir_all(&root).expect("site folder");
        TestSite { dir, root }
    }

    /// A small valid site: one profile `S` with one overlay, one device ([`MAC`]).
    pub fn new() -> TestSite {
        let s = TestSite::empty();
        s.write("ovl.toml", "[boot]\nserver = \"10.9.0.1\"\n");
        s.write("profiles/S.toml", "overlays = [\"base\"]\npackages = [\"openssh\"]\nhostname = \"s-{{ mac_suffix }}\"\n[services]\ndefault = [\"sshd\"]\n");
        s.write("overlays/base/etc/motd", "hello\n");
        s.write(
            "devices.toml",
            &format!("[[device]]\nmac = \"{MAC}\"\nprofile = \"S\"\n"),
        );
        s
    }

    /// The repository's example site, made with `ovl init`.
    pub fn example() -> TestSite {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("site");
        let out = ovl().arg("init").arg(&root).output().expect("ovl init");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestSite { dir, root }
    }

    /// The example site with every archive and the boot scripts built (`ovl build --all`).
    pub fn example_built() -> TestSite {
        let s = TestSite::example();
        s.ovl(&["build", "--all"]).ok();
        s
    }

    /// Adds what an archive writer can get wrong to overlay `base`: a 180-character path
    /// (returned, relative to the overlay), an executable, absolute and relative symlinks,
    /// SSH host keys, `shadow`, and `passwd`/`group` naming user `kiosk` (1234:1235); and
    /// `captures/ref/ref.apkovl.tar.gz`, an lbu archive with stored owners (chrony 100:101),
    /// a symlink and a hard link.
    pub fn add_links_owners_and_long_names(&self) -> String {
        let long = format!("opt/{}/{}/file.txt", "d".repeat(90), "e".repeat(80));
        self.write(&format!("overlays/base/{long}"), "deep\n");
        self.write("overlays/base/usr/local/bin/tool", "#!/bin/sh\necho hi\n")
            .chmod("overlays/base/usr/local/bin/tool", 0o755);
        self.symlink(
            "overlays/base/etc/localtime",
            "/usr/share/zoneinfo/Europe/Paris",
        );
        self.symlink(
            "overlays/base/etc/ssl/cert.pem",
            "certs/ca-certificates.crt",
        );
        self.write("overlays/base/etc/ssh/ssh_host_ed25519_key", "PRIVATE\n");
        self.write("overlays/base/etc/ssh/ssh_host_ed25519_key.pub", "PUBLIC\n");
        self.write("overlays/base/etc/shadow", "root:*:::::::\n");
        self.write(
            "overlays/base/etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nkiosk:x:1234:1235::/home/kiosk:/bin/sh\n",
        );
        self.write("overlays/base/etc/group", "root:x:0:root\nkiosk:x:1235:\n");
        python_tar(
            &self.path("captures/ref/ref.apkovl.tar.gz"),
            r#"[("etc/", "d", "", 0o755, 0, 0, ""),
            ("etc/chrony/", "d", "", 0o750, 100, 101, ""),
            ("etc/chrony/chrony.keys", "f", "1 SHA1 HEX:00\n", 0o640, 100, 101, ""),
            ("etc/apk/world", "f", "htop\nopenssh\n", 0o644, 0, 0, ""),
            ("etc/runlevels/default/chronyd", "l", "", 0o777, 0, 0, "/etc/init.d/chronyd"),
            ("./etc/hard", "h", "", 0o644, 0, 0, "etc/apk/world")]"#,
        );
        long
    }

    /// The site folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A path inside the site.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// A path in the temporary folder, outside the site.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a site file (parents created).
    pub fn write(&self, rel: &str, content: &str) -> &Self {
        self.write_bytes(rel, content.as_bytes())
    }

    /// Writes a site file's bytes (parents created).
    pub fn write_bytes(&self, rel: &str, content: &[u8]) -> &Self {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        self
    }

    /// A site file's text.
    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// Sets a site file's permission bits.
    pub fn chmod(&self, rel: &str, mode: u32) -> &Self {
        std::fs::set_permissions(self.path(rel), std::fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    /// Makes a symlink in the site (parents created).
    pub fn symlink(&self, rel: &str, target: &str) -> &Self {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
        self
    }

    /// `ovl --site SITE` without the environment variables that change what it does.
    pub fn command(&self) -> Command {
        let mut c = ovl();
        c.arg("--site")
            .arg(self.root())
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("OVL_SITE");
        c
    }

    /// Runs `ovl --site SITE ARGS`.
    pub fn ovl(&self, args: &[&str]) -> Run {
        self.ovl_env(args, &[])
    }

    /// Runs `ovl --site SITE ARGS` with extra environment variables.
    pub fn ovl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = self.command();
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `ovl --site SITE ARGS` as nobody (uid/gid 65534, no groups) through `setpriv`:
    /// root reads and writes anything, so permission errors need another user. Needs root.
    pub fn ovl_as_nobody(&self, args: &[&str]) -> Run {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(OVL)
            .arg("--site")
            .arg(self.root())
            .args(args)
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("OVL_SITE")
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The published archive of `mac`.
    pub fn archive(&self, mac: &str) -> PathBuf {
        self.path(&format!("configs/{mac}.tar.gz"))
    }

    /// Bytes and mtime of every published archive.
    pub fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>, std::time::SystemTime)> {
        let mut v: Vec<_> = std::fs::read_dir(self.path("configs"))
            .map(|rd| {
                rd.map(|e| {
                    let p = e.unwrap().path();
                    let m = std::fs::metadata(&p).unwrap().modified().unwrap();
                    (p.clone(), std::fs::read(&p).unwrap(), m)
                })
                .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// One member of the archive of `mac`, as busybox `tar -zxOf` prints it.
    pub fn archive_member(&self, mac: &str, member: &str) -> String {
        let o = Command::new("busybox")
            .args(["tar", "-zxOf"])
            .arg(self.archive(mac))
            .arg(member)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

/// Builds an lbu-style archive with Python's tarfile (an independent writer); `members` is
/// a Python list literal of (name, type, data, mode, uid, gid, linkname) tuples.
pub fn python_tar(out: &Path, members: &str) {
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let script = format!(
        r#"
import io, tarfile
members = {members}
with tarfile.open({out:?}, "w:gz", format=tarfile.GNU_FORMAT) as t:
    for name, typ, data, mode, uid, gid, link in members:
        i = tarfile.TarInfo(name)
        i.type = {{"f": tarfile.REGTYPE, "d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE, "c": tarfile.CHRTYPE, "b": tarfile.BLKTYPE, "p": tarfile.FIFOTYPE}}[typ]
        i.mode, i.uid, i.gid, i.linkname = mode, uid, gid, link
        i.uname = {{0: "root", 100: "chrony"}}.get(uid, "")
        i.gname = {{0: "root", 101: "chrony", 42: "shadow"}}.get(gid, "")
        d = data.encode()
        i.size = len(d) if typ == "f" else 0
        t.addfile(i, io.BytesIO(d) if typ == "f" else None)
"#,
        out = out.display().to_string()
    );
    must(&["python3", "-c", &script]);
}
