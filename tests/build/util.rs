//! A temp site per test and a runner for the built `ovl` binary.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A site in a temporary folder.
pub struct TestSite {
    pub dir: tempfile::TempDir,
}

/// The result of one `ovl` run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "wrong exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn stderr_has(self, s: &str) -> Run {
        assert!(
            self.stderr.contains(s),
            "stderr lacks {s:?}:\n{}",
            self.stderr
        );
        self
    }
    pub fn stdout_has(self, s: &str) -> Run {
        assert!(
            self.stdout.contains(s),
            "stdout lacks {s:?}:\n{}",
            self.stdout
        );
        self
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

pub const MAC: &str = "52:54:00:12:34:56";

impl TestSite {
    /// A small valid site: one profile `S` with one overlay, one device.
    pub fn new() -> TestSite {
        let s = TestSite {
            dir: tempfile::tempdir().unwrap(),
        };
        s.write("ovl.toml", "[boot]\nserver = \"10.9.0.1\"\n");
        s.write("profiles/S.toml", "overlays = [\"base\"]\npackages = [\"openssh\"]\nhostname = \"s-{{ mac_suffix }}\"\n[services]\ndefault = [\"sshd\"]\n");
        s.write("overlays/base/etc/motd", "hello\n");
        s.write(
            "devices.toml",
            &format!("[[device]]\nmac = \"{MAC}\"\nprofile = \"S\"\n"),
        );
        s
    }

    /// A copy of the repository's example site, made with `ovl init`.
    pub fn example() -> TestSite {
        let s = TestSite {
            dir: tempfile::tempdir().unwrap(),
        };
        let dir = s.root().join("site");
        let out = Command::new(env!("CARGO_BIN_EXE_ovl"))
            .arg("init")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Keep the site at the temp dir's root.
        let tmp = s.root().to_path_buf();
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            std::fs::rename(e.path(), tmp.join(e.file_name())).unwrap();
        }
        std::fs::remove_dir(&dir).unwrap();
        s
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    pub fn write(&self, rel: &str, content: &str) -> &Self {
        self.write_bytes(rel, content.as_bytes())
    }

    pub fn write_bytes(&self, rel: &str, content: &[u8]) -> &Self {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        self
    }

    pub fn chmod(&self, rel: &str, mode: u32) -> &Self {
        std::fs::set_permissions(self.path(rel), std::fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    pub fn symlink(&self, rel: &str, target: &str) -> &Self {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
        self
    }

    pub fn ovl(&self, args: &[&str]) -> Run {
        self.ovl_env(args, &[])
    }

    pub fn ovl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ovl"));
        c.arg("--site")
            .arg(self.root())
            .args(args)
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("OVL_SITE");
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
}

/// Build an lbu-style archive with Python's tarfile (an independent writer); `members` is a
/// Python list literal of (name, type, data, mode, uid, gid, linkname) tuples.
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
    let st = Command::new("python3")
        .arg("-c")
        .arg(script)
        .status()
        .unwrap();
    assert!(st.success());
}
