//! The test kernel: Debian's newest `linux-image-6.1.0-*-amd64` (`apt-get download`,
//! `dpkg -x`), cached in `target/e2e-cache/` by package name, and the modules the test
//! initramfs carries (with the files of the kernel package that `depmod` reads).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::harness::proc::{bounded, must, run};

/// `target/e2e-cache/`, created if missing.
pub fn cache_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e-cache");
    fs::create_dir_all(&dir).expect("create target/e2e-cache");
    dir
}

/// ABI number of `linux-image-6.1.0-ABI-amd64`.
fn abi(pkg: &str) -> Option<u32> {
    pkg.strip_prefix("linux-image-6.1.0-")?
        .strip_suffix("-amd64")?
        .parse()
        .ok()
}

/// The newest `linux-image-6.1.0-*-amd64` apt knows, else the newest already cached.
fn kernel_package() -> String {
    let search = || {
        let out = run(
            60,
            &[
                "apt-cache",
                "search",
                "--names-only",
                "^linux-image-6\\.1\\.0-[0-9]+-amd64$",
            ],
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|p| abi(p).is_some())
            .max_by_key(|p| abi(p))
            .map(str::to_string)
    };
    let cached = fs::read_dir(cache_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join(".complete").exists())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|p| abi(p).is_some())
        .max_by_key(|p| abi(p));
    // Nothing cached and apt knows no kernel yet (a fresh machine): read the lists once.
    let from_apt = search().or_else(|| {
        if cached.is_some() {
            return None;
        }
        run(300, &["apt-get", "update", "-qq"]);
        search()
    });
    from_apt
        .or(cached)
        .expect("no linux-image-6.1.0-*-amd64 in apt's lists (run apt-get update) and none cached")
}

/// The unpacked kernel package (`boot/vmlinuz-*`, `lib/modules/*`), downloaded if missing.
fn kernel_tree() -> PathBuf {
    let pkg = kernel_package();
    let dir = cache_dir().join(&pkg);
    if dir.join(".complete").exists() {
        return dir;
    }
    let started = Instant::now();
    let work = cache_dir().join(format!(".download-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).expect("download folder");
    let out = bounded(900, "apt-get")
        .args(["download", &pkg])
        .current_dir(&work)
        .output()
        .expect("apt-get download");
    assert!(
        out.status.success(),
        "apt-get download {pkg}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = fs::read_dir(&work)
        .expect("read download folder")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("the downloaded .deb");
    let tree = work.join("tree");
    must(&["dpkg", "-x", deb.to_str().unwrap(), tree.to_str().unwrap()]);
    fs::write(tree.join(".complete"), &pkg).expect("mark complete");
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&tree, &dir).expect("move the kernel into the cache");
    let _ = fs::remove_dir_all(&work);
    eprintln!(
        "fetched {pkg} in {:.1}s into {}",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    dir
}

/// The modules the initramfs carries, as Alpine's would: the NIC drivers (e1000 for BIOS,
/// virtio for UEFI) and the site's `[boot] modules` (`loop`, `squashfs`, `sd-mod`,
/// `usb-storage`, which the init loads from `modules=`); their dependencies come along.
pub const MODULES: &[&str] = &[
    "e1000",
    "virtio_pci",
    "virtio_net",
    "loop",
    "squashfs",
    "sd_mod",
    "usb_storage",
];

/// The kernel and its modules, fetched on the first call.
pub struct Kernel {
    /// `boot/vmlinuz-*` of the package.
    pub vmlinuz: PathBuf,
    /// The kernel release (`uname -r`), the folder name under `lib/modules/`.
    pub release: String,
    /// `lib/modules/RELEASE/` of the package.
    pub modules_dir: PathBuf,
}

impl Kernel {
    /// The newest Debian 6.1 kernel, downloaded and unpacked if not cached yet.
    pub fn get() -> Kernel {
        let tree = kernel_tree();
        let vmlinuz = fs::read_dir(tree.join("boot"))
            .expect("boot/ of the kernel package")
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
            .expect("boot/vmlinuz-*");
        let release = fs::read_dir(tree.join("lib/modules"))
            .expect("lib/modules/ of the kernel package")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .next()
            .expect("lib/modules/RELEASE");
        let modules_dir = tree.join("lib/modules").join(&release);
        Kernel {
            vmlinuz,
            release,
            modules_dir,
        }
    }

    /// [`MODULES`] and their dependencies (each module's `depends=`), dependencies first, as
    /// (path relative to `lib/modules/RELEASE/`, ending in `.ko`; plain ELF bytes).
    pub fn modules(&self) -> Vec<(String, Vec<u8>)> {
        let mut index = BTreeMap::new();
        for e in walkdir::WalkDir::new(&self.modules_dir)
            .into_iter()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(stem) = [".ko", ".ko.xz", ".ko.zst"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
            {
                index.insert(stem.replace('-', "_"), e.path().to_path_buf());
            }
        }
        let mut out = Vec::new();
        for m in MODULES {
            self.visit(m, &index, &mut out, 0);
        }
        out.into_iter()
            .map(|(_, rel, bytes)| (rel, bytes))
            .collect()
    }

    /// Adds module `name` after its dependencies to `out` as (name, relative path, bytes).
    fn visit(
        &self,
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        out: &mut Vec<(String, String, Vec<u8>)>,
        depth: usize,
    ) {
        assert!(depth < 20, "module dependency loop at {name}");
        if out.iter().any(|(n, _, _)| n == name) {
            return;
        }
        let path = index
            .get(name)
            .unwrap_or_else(|| panic!("module {name} is not in the kernel package"));
        let bytes = module_bytes(path);
        for dep in depends(&bytes) {
            self.visit(&dep, index, out, depth + 1);
        }
        let rel = path
            .strip_prefix(&self.modules_dir)
            .expect("a module under lib/modules/RELEASE")
            .to_string_lossy()
            .into_owned();
        let rel = [".xz", ".zst"]
            .iter()
            .find_map(|s| rel.strip_suffix(s))
            .map_or(rel.clone(), str::to_string);
        if !out.iter().any(|(n, _, _)| n == name) {
            out.push((name.to_string(), rel, bytes));
        }
    }
}

/// A module's contents, decompressed (busybox's modutils read plain ELF here).
fn module_bytes(path: &Path) -> Vec<u8> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else {
        None
    };
    match tool {
        None => fs::read(path).expect("read module"),
        Some(t) => {
            let out = run(60, &[t, "-dc", &name]);
            assert!(out.status.success(), "{t} -dc {name}");
            out.stdout
        }
    }
}

/// `depends=` of a module's `.modinfo`.
fn depends(ko: &[u8]) -> Vec<String> {
    ko.split(|b| *b == 0)
        .find_map(|s| s.strip_prefix(b"depends="))
        .map(|d| {
            String::from_utf8_lossy(d)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.replace('-', "_"))
                .collect()
        })
        .unwrap_or_default()
}
