//! The merge rules, one case each, on small manifests.

use std::sync::Arc;

use super::*;
use crate::build::history::{self, Given, SCHEMA, Texts};
use crate::build::layer::{LayerEntry, LayerSource, StoredMeta};

/// A manifest of text files (0644, root).
fn fleet(files: &[(&str, &str)]) -> Manifest {
    let mut m = Manifest::default();
    for (p, c) in files {
        m.put(
            p,
            Kind::File(Arc::from(c.as_bytes())),
            0o644,
            None,
            "overlays/base",
        )
        .unwrap();
    }
    m
}

/// What a device was given: `files` as the fleet made them, their texts kept.
fn given(files: &[(&str, &str)], conflicts: &[&str]) -> Given {
    let m = fleet(files);
    let states = history::states(&m, None);
    let text = files
        .iter()
        .filter_map(|(p, c)| Some((states[*p].sha256.clone()?, c.to_string())))
        .collect();
    Given {
        schema: SCHEMA,
        id: "0".repeat(64),
        mac: "52:54:00:12:34:56".into(),
        profile: "S".into(),
        hostname: "h".into(),
        entries: states,
        fleet: Default::default(),
        conflicts: conflicts.iter().map(|c| c.to_string()).collect(),
        text: Texts::given(text),
    }
}

/// A capture holding `files` as (path, content, mode).
fn capture(files: &[(&str, &str, u32)]) -> LayerTree {
    let entries = files
        .iter()
        .map(|(p, c, mode)| LayerEntry {
            path: p.to_string(),
            node: Node::File(Arc::from(c.as_bytes())),
            mode: *mode,
            stored: Some(StoredMeta {
                mode: *mode,
                uid: 0,
                gid: 0,
                user: "root".into(),
                group: "root".into(),
            }),
            source: "captures/x.apkovl.tar.gz".into(),
        })
        .collect();
    LayerTree {
        source: LayerSource::Archive("captures/x.apkovl.tar.gz".into()),
        entries,
    }
}

/// Merge; the merged manifest's text files and the items by path.
fn run(
    g: &Given,
    dev: &LayerTree,
    f: &Manifest,
    policy: ConflictPolicy,
    discard: &[String],
) -> (BTreeMap<String, String>, BTreeMap<String, DriftItem>) {
    let fs = history::states(f, None);
    let (m, items) = merge(&Inputs {
        given: g,
        device: dev,
        label: "captures/x.apkovl.tar.gz",
        fleet: (f, &fs),
        policy,
        discard,
    });
    let files = m
        .entries
        .keys()
        .filter_map(|p| Some((p.clone(), String::from_utf8(m.file(p)?.to_vec()).ok()?)))
        .collect();
    let items = items.into_iter().map(|i| (i.path.clone(), i)).collect();
    (files, items)
}

const BASE: &[(&str, &str)] = &[("etc/motd", "A\n"), ("etc/issue", "I\n")];

#[test]
fn unchanged_by_the_device_follows_the_fleet() {
    let g = given(BASE, &[]);
    let dev = capture(&[("etc/motd", "A\n", 0o644), ("etc/issue", "I\n", 0o644)]);
    let f = fleet(&[("etc/motd", "B\n"), ("etc/issue", "I\n")]);
    let (files, items) = run(&g, &dev, &f, ConflictPolicy::Device, &[]);
    assert_eq!(files["etc/motd"], "B\n");
    assert!(items.is_empty(), "{items:?}");
}

#[test]
fn changed_only_by_the_device_stays_the_devices() {
    let g = given(BASE, &[]);
    let dev = capture(&[("etc/motd", "X\n", 0o644), ("etc/issue", "I\n", 0o600)]);
    let f = fleet(BASE);
    let (files, items) = run(&g, &dev, &f, ConflictPolicy::Fleet, &[]);
    assert_eq!(files["etc/motd"], "X\n");
    let motd = &items["etc/motd"];
    assert_eq!(
        (motd.change, motd.conflict, motd.winner),
        (DriftChange::Changed, false, Winner::Device)
    );
    assert_eq!(motd.what, [Change::Content]);
    assert_eq!(
        items["etc/issue"].what,
        [Change::Mode],
        "a mode change is a change"
    );
    assert!(motd.unified_diff().unwrap().contains("-A\n+X\n"));
}

#[test]
fn changed_by_both_is_a_conflict_resolved_by_the_policy() {
    let g = given(BASE, &[]);
    let dev = capture(&[("etc/motd", "X\n", 0o644), ("etc/issue", "I\n", 0o644)]);
    let f = fleet(&[("etc/motd", "B\n"), ("etc/issue", "I\n")]);
    let (files, items) = run(&g, &dev, &f, ConflictPolicy::Device, &[]);
    assert_eq!(files["etc/motd"], "X\n");
    assert!(items["etc/motd"].conflict && items["etc/motd"].fleet_changed);
    let (files, items) = run(&g, &dev, &f, ConflictPolicy::Fleet, &[]);
    assert_eq!(files["etc/motd"], "B\n");
    assert_eq!(items["etc/motd"].winner, Winner::Fleet);
    // The same change on both sides is no conflict.
    let dev = capture(&[("etc/motd", "B\n", 0o644), ("etc/issue", "I\n", 0o644)]);
    let (_, items) = run(&g, &dev, &f, ConflictPolicy::Device, &[]);
    assert!(items.is_empty(), "{items:?}");
}

#[test]
fn a_conflict_stays_one_while_the_device_keeps_its_version() {
    let g = given(BASE, &["etc/motd"]);
    let dev = capture(&[("etc/motd", "X\n", 0o644), ("etc/issue", "I\n", 0o644)]);
    let (_, items) = run(&g, &dev, &fleet(BASE), ConflictPolicy::Device, &[]);
    assert!(items["etc/motd"].conflict);
}

#[test]
fn deleted_by_the_device_stays_deleted_unless_the_fleet_changed_it() {
    let g = given(
        &[
            ("etc/motd", "A\n"),
            ("etc/issue", "I\n"),
            ("root/.profile", "P\n"),
        ],
        &[],
    );
    // Only etc/issue is in the capture: motd was deleted; root/.profile is outside lbu's reach.
    let dev = capture(&[("etc/issue", "I\n", 0o644)]);
    let f = fleet(&[
        ("etc/motd", "A\n"),
        ("etc/issue", "I\n"),
        ("root/.profile", "P2\n"),
    ]);
    let (files, items) = run(&g, &dev, &f, ConflictPolicy::Device, &[]);
    assert!(!files.contains_key("etc/motd"));
    assert_eq!(items["etc/motd"].change, DriftChange::Deleted);
    assert_eq!(
        files["root/.profile"], "P2\n",
        "not saved by lbu: no deletion"
    );
    assert!(!items.contains_key("root/.profile"));
    let f = fleet(&[("etc/motd", "B\n"), ("etc/issue", "I\n")]);
    let (files, items) = run(&g, &dev, &f, ConflictPolicy::Device, &[]);
    assert_eq!(
        files["etc/motd"], "B\n",
        "the fleet changed it: its version returns"
    );
    assert!(items["etc/motd"].fleet_changed && !items["etc/motd"].conflict);
}

#[test]
fn lbu_list_decides_what_an_absence_means() {
    let g = given(
        &[("etc/motd", "A\n"), ("root/.ssh/authorized_keys", "k\n")],
        &[],
    );
    let dev = capture(&[(LBU_LIST, "+root/.ssh\n-etc/motd\n", 0o644)]);
    let f = fleet(&[("etc/motd", "A\n"), ("root/.ssh/authorized_keys", "k\n")]);
    let (files, items) = run(&g, &dev, &f, ConflictPolicy::Device, &[]);
    assert_eq!(files["etc/motd"], "A\n", "excluded: not a deletion");
    assert!(
        !files.contains_key("root/.ssh/authorized_keys"),
        "included: deleted"
    );
    assert_eq!(
        items["root/.ssh/authorized_keys"].change,
        DriftChange::Deleted
    );
}

#[test]
fn discard_makes_the_fleet_win() {
    let g = given(BASE, &[]);
    let dev = capture(&[
        ("etc/motd", "X\n", 0o644),
        ("etc/issue", "I\n", 0o644),
        ("etc/new/a", "n\n", 0o644),
    ]);
    let discard = vec!["etc/motd".to_string(), "etc/new".to_string()];
    let (files, items) = run(&g, &dev, &fleet(BASE), ConflictPolicy::Device, &discard);
    assert_eq!(files["etc/motd"], "A\n");
    assert!(!files.contains_key("etc/new/a"));
    assert!(items["etc/motd"].discarded && items["etc/new/a"].discarded);
}

#[test]
fn added_by_the_device_is_kept_and_world_merges_by_package() {
    let g = given(&[("etc/apk/world", "alpine-base\nnano\n")], &[]);
    let dev = capture(&[
        ("etc/apk/world", "alpine-base\nhtop\n", 0o644),
        ("etc/ssh/ssh_host_ed25519_key", "KEY\n", 0o600),
    ]);
    let f = fleet(&[("etc/apk/world", "alpine-base\nchromium\nnano\n")]);
    let (files, items) = run(&g, &dev, &f, ConflictPolicy::Fleet, &[]);
    assert_eq!(files["etc/apk/world"], "alpine-base\nchromium\nhtop\n");
    assert_eq!(items["etc/apk/world"].winner, Winner::Merged);
    assert!(!items["etc/apk/world"].conflict);
    assert_eq!(files["etc/ssh/ssh_host_ed25519_key"], "KEY\n");
    assert_eq!(
        items["etc/ssh/ssh_host_ed25519_key"].change,
        DriftChange::Added
    );
}

#[test]
fn fleet_owned_paths_follow_the_fleet() {
    let g = given(&[("etc/hostname", "a\n"), (IDENTITY_FILE, "id=old")], &[]);
    let dev = capture(&[
        ("etc/hostname", "mine\n", 0o644),
        (IDENTITY_FILE, "id=old", 0o644),
    ]);
    let f = fleet(&[("etc/hostname", "a\n"), (IDENTITY_FILE, "")]);
    let (files, items) = run(&g, &dev, &f, ConflictPolicy::Device, &[]);
    assert_eq!(files["etc/hostname"], "a\n");
    assert!(items.is_empty(), "{items:?}");
}

#[test]
fn without_a_base_the_capture_is_compared_with_the_fleet() {
    let dev = capture(&[("etc/motd", "X\n", 0o644), ("etc/issue", "I\n", 0o644)]);
    let f = fleet(BASE);
    let fs = history::states(&f, None);
    let items = compare(&dev, "c", (&f, &fs), &[]);
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0].path.as_str(), items[0].change),
        ("etc/motd", DriftChange::Changed)
    );
}
