//! The batch: every file published, few syncs, per-unit failures, nothing left behind.

use super::*;
use crate::site::layout::TMP_SUFFIX;
use std::os::unix::fs::PermissionsExt;

/// Every name under `dir`, recursively, relative to it.
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            e.path().strip_prefix(dir).unwrap().display().to_string()
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_batch_publishes_every_file_with_few_syncs_and_leaves_no_temporaries() {
    PENDING.with(|p| p.set(Some(0)));
    let dir = tempfile::tempdir().unwrap();
    let batch = Batch::default();
    for i in 0..20 {
        let mut u = batch.unit();
        let kept = dir.path().join(format!("kept/{i}/m"));
        u.write(Step::Keep, &kept, b"manifest", ".m.", Some(0o600))
            .unwrap();
        let out = dir.path().join(format!("out/{i}.tar.gz"));
        u.write(
            Step::Publish,
            &out,
            format!("archive {i}").as_bytes(),
            ".a.",
            Some(0o644),
        )
        .unwrap();
        batch.add(u);
    }
    let c = batch.commit();
    assert!(c.results.iter().all(Result::is_ok));
    // Data: one syncfs; the 20 manifest folders: one syncfs; `out/`: one fsync.
    let expected = if syncfs_reports_errors() {
        3
    } else {
        40 + 20 + 1
    };
    assert_eq!(c.syncs, expected);
    let all = names(dir.path());
    assert!(all.iter().all(|n| !n.ends_with(TMP_SUFFIX)), "{all:?}");
    assert_eq!(all.len(), 2 + 20 * 2 + 20);
    let a = dir.path().join("out/7.tar.gz");
    assert_eq!(std::fs::read(&a).unwrap(), b"archive 7");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&a), 0o644);
    assert_eq!(mode(&dir.path().join("kept/7/m")), 0o600);
}

#[test]
fn with_much_else_to_write_every_file_and_folder_is_synced_on_its_own() {
    // 1 TB of other writes waiting: a syncfs would write them too.
    PENDING.with(|p| p.set(Some(1 << 40)));
    let dir = tempfile::tempdir().unwrap();
    let batch = Batch::default();
    for i in 0..20 {
        let mut u = batch.unit();
        let kept = dir.path().join(format!("kept/{i}/m"));
        u.write(Step::Keep, &kept, b"m", ".m.", None).unwrap();
        let out = dir.path().join(format!("out/{i}"));
        u.write(Step::Publish, &out, b"a", ".a.", None).unwrap();
        batch.add(u);
    }
    let c = batch.commit();
    assert!(c.results.iter().all(Result::is_ok));
    assert_eq!(c.syncs, 40 + 20 + 1);
    assert_eq!(names(dir.path()).len(), 2 + 20 * 2 + 20);
    assert_eq!(std::fs::read(dir.path().join("out/19")).unwrap(), b"a");
}

#[test]
fn a_unit_that_fails_publishes_nothing_more_and_the_others_all() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Unit 1's manifest cannot be renamed: a non-empty folder stands there.
    std::fs::create_dir_all(d.join("kept/1/m/x")).unwrap();
    let batch = Batch::default();
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    for i in 0..3 {
        let mut u = batch.unit();
        u.write(
            Step::Keep,
            &d.join(format!("kept/{i}/m")),
            b"m",
            ".m.",
            None,
        )
        .unwrap();
        let (seen, root) = (seen.clone(), d.to_path_buf());
        // Runs after every unit's manifests are in place, before any archive.
        u.then(
            Step::Prune,
            Box::new(move || {
                let kept = (0..3).filter(|j| root.join(format!("kept/{j}/m")).is_file());
                let out = (0..3).filter(|j| root.join(format!("out/{j}")).exists());
                seen.lock().unwrap().push((i, kept.count(), out.count()));
                Ok(())
            }),
        );
        u.write(
            Step::Publish,
            &d.join(format!("out/{i}")),
            b"a",
            ".a.",
            None,
        )
        .unwrap();
        batch.add(u);
    }
    let c = batch.commit();
    assert!(c.results[0].is_ok() && c.results[2].is_ok());
    let e = c.results[1].as_ref().unwrap_err().to_string();
    assert!(e.contains(&d.join("kept/1/m").display().to_string()), "{e}");
    assert_eq!(*seen.lock().unwrap(), [(0, 2, 0), (2, 2, 0)]);
    assert!(d.join("out/0").is_file() && d.join("out/2").is_file());
    assert!(!d.join("out/1").exists());
    let all = names(d);
    assert!(all.iter().all(|n| !n.ends_with(TMP_SUFFIX)), "{all:?}");
}

#[test]
fn a_unit_dropped_unadded_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let batch = Batch::default();
    let mut u = batch.unit();
    u.write(Step::Publish, &dir.path().join("a"), b"x", ".a.", None)
        .unwrap();
    assert_eq!(names(dir.path()).len(), 1);
    drop(u);
    assert_eq!(batch.commit().syncs, 0);
    assert!(names(dir.path()).is_empty());
}

#[test]
fn kernel_releases_compare_by_major_and_minor() {
    assert!(kernel_at_least("6.1.0-18-amd64\n", (5, 8)));
    assert!(kernel_at_least("5.8.0", (5, 8)));
    assert!(!kernel_at_least("5.4.0-150-generic", (5, 8)));
    assert!(!kernel_at_least("4.19.0", (5, 8)));
    assert!(!kernel_at_least("garbage", (5, 8)));
}
