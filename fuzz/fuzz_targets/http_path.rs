//! Fuzzes the HTTP path rule: percent-decoding, then the public set and its symlink rules
//! (`ovl::serve::public::resolve`), over a fixed site holding public files, private files,
//! editor backups, a public folder and symlinks in, out and to private places. It must never
//! panic, and whatever it serves must be one of the site's public files: never a secret.
#![no_main]

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ovl::serve::http::percent_decode;
use ovl::serve::public::{PublicSet, resolve};

/// The site, its public set, and the real paths that may be served.
struct Site {
    root: PathBuf,
    set: PublicSet,
    allowed: BTreeSet<PathBuf>,
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

fn site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(|| {
        let outer = std::env::temp_dir().join(format!("ovl-fuzz-http-path-{}", std::process::id()));
        let root = outer.join("site");
        let _ = std::fs::remove_dir_all(&outer);
        let public = [
            "boot.ipxe",
            "vmlinuz-lts",
            "undionly.kpxe",
            "configs/52:54:00:12:34:56.tar.gz",
            "ipxe/snponly.efi",
            "ipxe/sub/menu.ipxe",
        ];
        for p in public {
            write(&root, p, b"public");
        }
        for secret in [
            "ovl.toml",
            "devices.toml",
            "devices.toml~",
            "#devices.toml#",
            "ovl.toml.bak",
            "profiles/S.toml",
            "profiles.orig/S.toml",
            "overlays/base/etc/shadow",
            "overlays.tar.gz",
            "captures/52:54:00:12:34:56/h.apkovl.tar.gz",
            "configs/notes.txt",
            ".hidden",
            "ipxe/.env",
            "ipxe/menu.ipxe~",
            "data/readme",
        ] {
            write(&root, secret, b"SECRET");
        }
        write(&outer, "outside.txt", b"SECRET");
        symlink("../../outside.txt", root.join("ipxe/out")).unwrap();
        symlink("/etc", root.join("ipxe/etc")).unwrap();
        symlink("../overlays", root.join("ipxe/ov")).unwrap();
        symlink("../devices.toml~", root.join("ipxe/backup")).unwrap();
        symlink("../undionly.kpxe", root.join("ipxe/undi")).unwrap();
        symlink("ipxe/loop", root.join("ipxe/loop")).unwrap();
        symlink("overlays/base/etc/shadow", root.join("extra.iso")).unwrap();
        let set = PublicSet::new(
            [
                "boot.ipxe",
                "gpxe-script",
                "vmlinuz-lts",
                "undionly.kpxe",
                "extra.iso",
            ]
            .map(String::from),
            ["ipxe".to_string()],
        );
        let allowed = public
            .iter()
            .map(|p| root.join(p).canonicalize().unwrap())
            .collect();
        Site { root, set, allowed }
    })
}

fn check(s: &Site, request: &str) {
    if let Ok(r) = resolve(&s.root, &s.set, request) {
        assert!(s.allowed.contains(&r.path), "{request:?} served {:?}", r.path);
        let bytes = std::fs::read(&r.path).unwrap();
        assert_eq!(bytes, b"public", "{request:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let s = site();
    // TFTP hands the name over as it came; HTTP percent-decodes it first.
    check(s, raw);
    if let Some(decoded) = percent_decode(raw) {
        check(s, &decoded);
    }
});
