use super::*;
use std::fs;
use std::os::unix::fs::symlink;

const MAC: &str = "52:54:00:12:34:56";

/// A site with public files, private files, backups, a hidden file and a secret outside.
struct Lab {
    outer: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    set: PublicSet,
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

fn lab() -> Lab {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("site");
    for (rel, bytes) in [
        ("configs/52:54:00:12:34:56.tar.gz", &b"gz"[..]),
        ("configs/notes.txt", b"x"),
        ("undionly.kpxe", b"ipxe"),
        ("vmlinuz-lts", b"kernel"),
        ("boot.ipxe", b"#!ipxe"),
        ("sshkeys.pub", b"ssh-ed25519 AAAA"),
        ("ovl.toml", b""),
        ("devices.toml", b""),
        ("devices.toml~", b"backup"),
        ("#devices.toml#", b"autosave"),
        ("ovl.toml.bak", b"backup"),
        ("profiles.orig/S.toml", b"backup"),
        ("overlays.tar.gz", b"tarball"),
        ("profiles/S.toml", b""),
        ("overlays/base/etc/shadow", b"secret"),
        ("captures/52:54:00:12:34:56/h.apkovl.tar.gz", b"x"),
        (".hidden", b"x"),
        ("ipxe/snponly.efi", b"efi"),
        ("ipxe/.env", b"x"),
        ("ipxe/menu.ipxe~", b"x"),
        ("data/readme", b"not listed"),
        ("extra.iso", b"iso"),
    ] {
        write(&root, rel, bytes);
    }
    let outside = outer.path().join("outside.txt");
    fs::write(&outside, b"outside").unwrap();
    let files = [
        "boot.ipxe",
        "gpxe-script",
        "undionly.kpxe",
        "vmlinuz-lts",
        "sshkeys.pub",
        "extra.iso",
    ];
    let set = PublicSet::new(files.map(String::from), ["ipxe".to_string()]);
    Lab {
        outer,
        root,
        outside,
        set,
    }
}

impl Lab {
    fn get(&self, request: &str) -> Result<Resolved, Denied> {
        resolve(&self.root, &self.set, request)
    }

    fn real(&self, rel: &str) -> PathBuf {
        self.root.join(rel).canonicalize().unwrap()
    }
}

#[test]
fn public_files_with_or_without_leading_slash() {
    let l = lab();
    let want = Resolved {
        path: l.real("configs/52:54:00:12:34:56.tar.gz"),
        archive: Some(MAC.parse().unwrap()),
    };
    assert_eq!(l.get("/configs/52:54:00:12:34:56.tar.gz"), Ok(want.clone()));
    assert_eq!(l.get("configs//52:54:00:12:34:56.tar.gz"), Ok(want));
    for r in [
        "undionly.kpxe",
        "/vmlinuz-lts",
        "//boot.ipxe",
        "sshkeys.pub",
        "extra.iso",
        "ipxe/snponly.efi",
    ] {
        let got = l.get(r).unwrap_or_else(|e| panic!("{r}: {e}"));
        assert_eq!(got.archive, None, "{r}");
    }
}

#[test]
fn anything_not_listed_is_not_public_even_when_it_exists() {
    let l = lab();
    for r in [
        "ovl.toml",
        "/devices.toml",
        "profiles/S.toml",
        "overlays/base/etc/shadow",
        "captures/52:54:00:12:34:56/h.apkovl.tar.gz",
        "overlays.tar.gz",
        "data/readme",
        "configs/notes.txt",
        "configs/52-54-00-12-34-56.tar.gz",
        "configs/52:54:00:12:34:56.TAR.GZ",
        "configs/52:54:00:12:34:56.tar.gz/x",
        "configs",
        "ipxe",
        "OVL.TOML",
        "Undionly.kpxe",
        "",
        "/",
        "gpxe-script-not",
        "no-such-file",
    ] {
        assert_eq!(l.get(r), Err(Denied::NotPublic), "{r:?}");
    }
    // A listed name that is missing is simply not found.
    assert_eq!(l.get("gpxe-script"), Err(Denied::NotFound));
    assert_eq!(
        l.get("configs/00:00:00:00:00:01.tar.gz"),
        Err(Denied::NotFound)
    );
    assert_eq!(l.get("ipxe/missing.efi"), Err(Denied::NotFound));
}

#[test]
fn editor_backups_are_refused_everywhere() {
    let l = lab();
    for r in [
        "devices.toml~",
        "#devices.toml#",
        "ovl.toml.bak",
        "profiles.orig/S.toml",
        "ipxe/menu.ipxe~",
        "ipxe/x.swp",
        "ipxe/x.OLD",
        "undionly.kpxe.tmp",
    ] {
        assert_eq!(l.get(r), Err(Denied::Backup), "{r}");
    }
    assert!(!is_backup_name("undionly.kpxe"));
    assert!(!is_backup_name("#"));
    assert!(is_backup_name("a~"));
}

#[test]
fn every_refusal_but_unreadable_reads_as_not_found() {
    for d in [
        Denied::InvalidCharacter('\\'),
        Denied::Traversal,
        Denied::Hidden,
        Denied::Backup,
        Denied::NotPublic,
        Denied::LeavesPublic,
        Denied::NotFound,
        Denied::NotRegularFile,
    ] {
        assert!(d.is_not_found(), "{d:?}");
    }
    assert!(!Denied::Unreadable(io::ErrorKind::PermissionDenied).is_not_found());
}

#[test]
fn backslash_nul_traversal_and_hidden_names() {
    let l = lab();
    assert_eq!(l.get("configs\\x"), Err(Denied::InvalidCharacter('\\')));
    assert_eq!(
        l.get("undionly.kpxe\0"),
        Err(Denied::InvalidCharacter('\0'))
    );
    for r in [
        "../outside.txt",
        "/../outside.txt",
        "configs/../undionly.kpxe",
        "./undionly.kpxe",
        "ipxe/../undionly.kpxe",
        "..",
    ] {
        assert_eq!(l.get(r), Err(Denied::Traversal), "{r}");
    }
    for r in [".hidden", "ipxe/.env", ".git/config", "...x"] {
        assert_eq!(l.get(r), Err(Denied::Hidden), "{r}");
    }
}

#[test]
fn the_set_never_holds_private_names() {
    let set = PublicSet::new(
        [
            "ovl.toml",
            "DEVICES.toml",
            "profiles/S.toml",
            "configs/x",
            "../x",
            ".ssh/id",
            "a~",
            "",
            "ok.bin",
        ]
        .map(String::from),
        ["overlays", "captures/", "configs", ".git", "ipxe//efi/"].map(String::from),
    );
    assert_eq!(set.files, BTreeSet::from(["ok.bin".to_string()]));
    assert_eq!(set.folders, BTreeSet::from(["ipxe/efi".to_string()]));
    assert_eq!(
        set.named(&["ipxe", "efi", "a"]),
        Some(Named::InFolder("ipxe/efi"))
    );
    assert_eq!(set.named(&["ipxe", "efi"]), None);
    assert_eq!(set.named(&["ipxe", "efix", "a"]), None);
}

#[test]
fn the_site_names_its_boot_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let site = |toml: &str| {
        fs::write(root.join("ovl.toml"), toml).unwrap();
        PublicSet::of_site(&Site::open(root).unwrap())
    };
    let defaults = site("");
    let names = |s: &PublicSet| s.files.iter().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&defaults),
        [
            "boot.ipxe",
            "gpxe-script",
            "initramfs-lts",
            "ipxe.efi",
            "modloop-lts",
            "sshkeys.pub",
            "undionly.kpxe",
            "vmlinuz-lts"
        ]
    );
    let custom = site(
        "[alpine]\nflavor = \"virt\"\n[boot]\nssh_key = \"keys/admin.pub\"\n\
         [serve]\npublic = [\"alpine/\", \"extra.iso\"]\n\
         [serve.dhcp]\nmode = \"proxy\"\nboot_files = { \"7\" = \"snponly.efi\" }\n",
    );
    assert_eq!(
        names(&custom),
        [
            "boot.ipxe",
            "extra.iso",
            "gpxe-script",
            "initramfs-virt",
            "keys/admin.pub",
            "modloop-virt",
            "snponly.efi",
            "vmlinuz-virt"
        ]
    );
    assert_eq!(custom.folders, BTreeSet::from(["alpine".to_string()]));
    // A boot file or key naming a private file does not make it public.
    let sneaky = site(
        "[boot]\nssh_key = \"devices.toml\"\n[serve.dhcp]\nmode = \"proxy\"\nboot_files = { \"0\" = \"ovl.toml\" }\n",
    );
    assert!(!sneaky.files.contains("devices.toml"));
    assert!(!sneaky.files.contains("ovl.toml"));
}

#[test]
fn fifos_and_folders_are_not_regular_files() {
    let l = lab();
    let fifo = l.root.join("ipxe/fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: c is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert_eq!(l.get("ipxe/fifo"), Err(Denied::NotRegularFile));
    fs::create_dir_all(l.root.join("ipxe/sub")).unwrap();
    assert_eq!(l.get("ipxe/sub"), Err(Denied::NotRegularFile));
}

#[test]
fn symlinks_leaving_the_site_or_the_public_set_are_refused() {
    let l = lab();
    symlink(&l.outside, l.root.join("ipxe/out-abs")).unwrap();
    symlink("../../outside.txt", l.root.join("ipxe/out-rel")).unwrap();
    symlink("/etc", l.root.join("ipxe/etc")).unwrap();
    symlink("overlays/base/etc/shadow", l.root.join("extra.iso.link")).unwrap();
    fs::remove_file(l.root.join("extra.iso")).unwrap();
    symlink("overlays/base/etc/shadow", l.root.join("extra.iso")).unwrap();
    symlink("../devices.toml~", l.root.join("ipxe/backup")).unwrap();
    symlink("../data/readme", l.root.join("ipxe/readme")).unwrap();
    symlink("../overlays", l.root.join("ipxe/ov")).unwrap();
    for r in [
        "ipxe/out-abs",
        "ipxe/out-rel",
        "ipxe/etc/passwd",
        "extra.iso",
        "ipxe/backup",
        "ipxe/readme",
        "ipxe/ov/base/etc/shadow",
    ] {
        assert_eq!(l.get(r), Err(Denied::LeavesPublic), "{r}");
    }
    // A public name linking to the outside is refused too.
    fs::remove_file(l.root.join("vmlinuz-lts")).unwrap();
    symlink(&l.outside, l.root.join("vmlinuz-lts")).unwrap();
    assert_eq!(l.get("vmlinuz-lts"), Err(Denied::LeavesPublic));
}

#[test]
fn symlinks_staying_public_are_followed_and_archives_are_named_by_their_real_name() {
    let l = lab();
    symlink("../undionly.kpxe", l.root.join("ipxe/undi")).unwrap();
    assert_eq!(l.get("ipxe/undi").unwrap().path, l.real("undionly.kpxe"));
    symlink(
        "../configs/52:54:00:12:34:56.tar.gz",
        l.root.join("ipxe/a.tar.gz"),
    )
    .unwrap();
    let got = l.get("ipxe/a.tar.gz").unwrap();
    assert_eq!(
        got.archive,
        Some(MAC.parse().unwrap()),
        "the owner rule applies"
    );
    symlink(
        "52:54:00:12:34:56.tar.gz",
        l.root.join("configs/52:54:00:00:00:01.tar.gz"),
    )
    .unwrap();
    let got = l.get("configs/52:54:00:00:00:01.tar.gz").unwrap();
    assert_eq!(got.archive, Some(MAC.parse().unwrap()));
}

#[test]
fn a_public_folder_may_live_on_another_file_system() {
    let l = lab();
    // configs/ and ipxe/ moved out of the site and linked back.
    let elsewhere = l.outer.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::rename(l.root.join("configs"), elsewhere.join("configs")).unwrap();
    symlink(elsewhere.join("configs"), l.root.join("configs")).unwrap();
    fs::rename(l.root.join("ipxe"), elsewhere.join("ipxe")).unwrap();
    symlink(elsewhere.join("ipxe"), l.root.join("ipxe")).unwrap();
    let got = l.get("configs/52:54:00:12:34:56.tar.gz").unwrap();
    assert_eq!(got.archive, Some(MAC.parse().unwrap()));
    assert!(l.get("ipxe/snponly.efi").is_ok());
    assert_eq!(l.get("configs/notes.txt"), Err(Denied::NotPublic));
    assert_eq!(l.get("ipxe/.env"), Err(Denied::Hidden));
    // Still nothing outside the folder's real place.
    symlink(&l.outside, elsewhere.join("ipxe/out")).unwrap();
    assert_eq!(l.get("ipxe/out"), Err(Denied::LeavesPublic));
    symlink(
        "notes.txt",
        elsewhere.join("configs/52:54:00:00:00:02.tar.gz"),
    )
    .unwrap();
    assert_eq!(
        l.get("configs/52:54:00:00:00:02.tar.gz"),
        Err(Denied::LeavesPublic)
    );
}

#[test]
fn a_public_folder_that_is_the_site_or_holds_private_files_serves_nothing_private() {
    let l = lab();
    fs::remove_dir_all(l.root.join("ipxe")).unwrap();
    symlink(".", l.root.join("ipxe")).unwrap();
    assert_eq!(l.get("ipxe/devices.toml"), Err(Denied::LeavesPublic));
    assert_eq!(
        l.get("ipxe/undionly.kpxe").unwrap().path,
        l.real("undionly.kpxe")
    );
    fs::remove_file(l.root.join("ipxe")).unwrap();
    symlink("overlays/base", l.root.join("ipxe")).unwrap();
    assert_eq!(l.get("ipxe/etc/shadow"), Err(Denied::LeavesPublic));
    fs::remove_file(l.root.join("ipxe")).unwrap();
    symlink("..", l.root.join("ipxe")).unwrap();
    assert_eq!(l.get("ipxe/outside.txt"), Err(Denied::LeavesPublic));
}

#[test]
fn a_symlinked_site_root_works() {
    let l = lab();
    let link = l.outer.path().join("site-link");
    symlink(&l.root, &link).unwrap();
    assert!(resolve(&link, &l.set, "undionly.kpxe").is_ok());
    assert_eq!(resolve(&link, &l.set, "ovl.toml"), Err(Denied::NotPublic));
}

#[test]
fn dangling_and_looping_symlinks_are_not_found() {
    let l = lab();
    symlink("nowhere", l.root.join("ipxe/dangling")).unwrap();
    symlink("loop", l.root.join("ipxe/loop")).unwrap();
    assert_eq!(l.get("ipxe/dangling"), Err(Denied::NotFound));
    assert_eq!(l.get("ipxe/loop"), Err(Denied::NotFound));
    assert_eq!(l.get("undionly.kpxe/below"), Err(Denied::NotPublic));
}
