//! The same inputs give byte-identical archives whatever the files' mtimes, owners and
//! group/other write bits (a copy made under umask 000 or 002), the walk order, the locale,
//! the time zone or the clock; an unchanged archive is not rewritten. (Other permission bits
//! are inputs: a 0600 source gives a 0600 member, see `modes.rs`.)

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::harness::proc::require_root;
use crate::harness::site::TestSite;

/// Copy `a` into a new site, file by file in reverse order, with group/other write bits added,
/// another owner and other mtimes.
fn scrambled_copy(a: &TestSite) -> TestSite {
    let b = TestSite::empty();
    let mut files: Vec<_> = walkdir::WalkDir::new(a.root())
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| !e.path().starts_with(a.path("configs")))
        .collect();
    files.reverse();
    for e in &files {
        let rel = e.path().strip_prefix(a.root()).unwrap();
        let dst = b.root().join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        let ft = e.file_type();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &dst).unwrap();
        } else if ft.is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
            // As if copied under umask 000: group and other may write.
            let mode = std::fs::metadata(e.path()).unwrap().permissions().mode();
            let scrambled = (mode & 0o777) | 0o022;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(scrambled)).unwrap();
        }
    }
    for d in walkdir::WalkDir::new(b.root()).min_depth(1) {
        let d = d.unwrap();
        if d.file_type().is_dir() {
            std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
    }
    let st = Command::new("chown")
        .args(["-hR", "4321:4321"])
        .arg(b.root())
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("sh")
        .arg("-c")
        .arg("find \"$1\" -exec touch -h -d @1234567890 {} +")
        .arg("sh")
        .arg(b.root())
        .status()
        .unwrap();
    assert!(st.success());
    b
}

#[test]
#[ignore = "needs root: the copy is chowned to another owner"]
fn same_inputs_same_bytes_across_copies_and_environments() {
    require_root("chown");
    let a = TestSite::example();
    a.symlink(
        "overlays/base/etc/localtime",
        "/usr/share/zoneinfo/Europe/Paris",
    );
    let b = scrambled_copy(&a);
    a.ovl_env(&["build", "--all"], &[("TZ", "UTC"), ("LANG", "C")])
        .ok();
    b.ovl_env(
        &["build", "--all", "-j", "1"],
        &[
            ("TZ", "Asia/Tokyo"),
            ("LANG", "fr_FR.UTF-8"),
            ("LC_ALL", "fr_FR.UTF-8"),
        ],
    )
    .ok();
    let sa = a.snapshot();
    let sb = b.snapshot();
    assert_eq!(sa.len(), 5);
    assert_eq!(sa.len(), sb.len());
    for ((pa, ba, _), (pb, bb, _)) in sa.iter().zip(&sb) {
        assert_eq!(pa.file_name(), pb.file_name());
        assert!(ba == bb, "{} differs between the two copies", pa.display());
    }
    // The boot script too.
    assert_eq!(
        std::fs::read(a.path("boot.ipxe")).unwrap(),
        std::fs::read(b.path("boot.ipxe")).unwrap()
    );
}

#[test]
fn unchanged_archives_are_not_rewritten_and_source_date_epoch_counts() {
    let a = TestSite::example();
    a.ovl(&["build", "--all"]).ok();
    let before = a.snapshot();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let run = a.ovl(&["build", "--all", "--json"]).ok().json();
    assert_eq!(run["counts"]["unchanged"], 5, "{run}");
    assert_eq!(before, a.snapshot(), "bytes and mtimes stay");
    // A different SOURCE_DATE_EPOCH changes the entry times, hence the bytes; the same one
    // again gives the same bytes.
    a.ovl_env(&["build", "--all"], &[("SOURCE_DATE_EPOCH", "1700000000")])
        .ok();
    let after = a.snapshot();
    assert!(before.iter().zip(&after).all(|(x, y)| x.1 != y.1));
    a.ovl_env(&["build", "--all"], &[("SOURCE_DATE_EPOCH", "1700000000")])
        .ok();
    assert_eq!(after, a.snapshot());
    // The entry time is the one documented (SOURCE_DATE_EPOCH here).
    let out = Command::new("busybox")
        .args(["tar", "-tzvf"])
        .arg(a.archive("52:54:00:12:34:56"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2023-11-14"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
