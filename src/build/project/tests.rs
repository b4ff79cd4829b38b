//! A fleet's build publishes through one batch: few syncs, per-device errors, nothing left.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::*;
use crate::site::layout::TMP_SUFFIX;

/// A site of `n` devices of one profile, in `dir`.
fn fleet(dir: &Path, n: usize) -> Project {
    let w = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    w("ovl.toml", "[boot]\nserver = \"10.9.0.1\"\n");
    w(
        "profiles/S.toml",
        "overlays = [\"base\"]\npackages = [\"openssh\"]\nhostname = \"s-{{ mac_suffix }}\"\n",
    );
    w("overlays/base/etc/motd", "hello\n");
    let inv: String = (0..n)
        .map(|i| {
            format!(
                "[[device]]\nmac = \"02:00:00:00:{:02x}:{:02x}\"\nprofile = \"S\"\n",
                i >> 8,
                i & 255
            )
        })
        .collect();
    w("devices.toml", &inv);
    Project::load(Site::open(dir).unwrap()).unwrap()
}

/// Build every device: outcomes and syncs.
fn build_all(p: &Project) -> (Vec<Outcome>, usize) {
    let specs = p
        .select(&Selection {
            all: true,
            ..Default::default()
        })
        .unwrap();
    p.build_batch(&specs, &|| {}, &AtomicBool::new(false))
}

/// The hidden temporaries anywhere in the site.
fn temporaries(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(TMP_SUFFIX))
        .collect()
}

/// The mtime of every archive.
fn mtimes(p: &Project) -> Vec<std::time::SystemTime> {
    let mut v: Vec<_> = std::fs::read_dir(p.site.configs_dir())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().modified().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn a_fleet_build_syncs_per_folder_not_per_device() {
    // Nothing else waits to be written (as far as the batch knows): syncfs pays.
    crate::build::publish::PENDING.with(|p| p.set(Some(0)));
    let dir = tempfile::tempdir().unwrap();
    let p = fleet(dir.path(), 200);
    let (out, syncs) = build_all(&p);
    assert_eq!(out.len(), 200);
    assert!(out.iter().all(|o| o.state() == PublishState::Created));
    // 200 archives and 200 kept manifests (two files each): one syncfs for the data, one for
    // the manifests' renames, one fsync of `configs/`. Without syncfs: one fsync each.
    let bound = if publish::syncfs_reports_errors() {
        3
    } else {
        1 + 600 + 200
    };
    assert_eq!(syncs, bound);
    assert_eq!(temporaries(dir.path()), Vec::<String>::new());
    let before = mtimes(&p);
    // Nothing changed: nothing written, nothing synced, every mtime kept.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (out, syncs) = build_all(&p);
    assert!(out.iter().all(|o| o.state() == PublishState::Unchanged));
    assert_eq!(syncs, 0);
    assert_eq!(mtimes(&p), before);
    // A fleet-wide change: every archive and manifest republished, the same few syncs.
    std::fs::write(dir.path().join("overlays/base/etc/motd"), "changed\n").unwrap();
    let (out, syncs) = build_all(&p);
    assert!(out.iter().all(|o| o.state() == PublishState::Updated));
    assert_eq!(syncs, bound);
    assert_eq!(temporaries(dir.path()), Vec::<String>::new());
}

#[test]
fn a_device_whose_manifest_folder_fails_is_named_and_the_others_publish() {
    let dir = tempfile::tempdir().unwrap();
    let p = fleet(dir.path(), 20);
    let bad: Mac = "02:00:00:00:00:07".parse().unwrap();
    let folder = p.site.manifests_dir().join(bad.to_string());
    std::fs::create_dir_all(folder.parent().unwrap()).unwrap();
    std::fs::write(&folder, b"not a folder").unwrap();
    let (out, _) = build_all(&p);
    for o in &out {
        if o.mac == bad {
            let e = o.error().expect("the device fails").to_string();
            assert!(e.contains(&folder.display().to_string()), "{e}");
            assert!(!o.path.exists(), "no archive without its kept manifest");
        } else {
            assert_eq!(o.state(), PublishState::Created, "{:?}", o.error());
            assert!(o.path.is_file());
        }
    }
    assert_eq!(temporaries(dir.path()), Vec::<String>::new());
}
