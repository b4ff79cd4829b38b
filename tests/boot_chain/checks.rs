//! What a boot must show: the stand-in's record of Alpine's init against what ovl serves and
//! lists (`boot.ipxe`, `ovl show --json`).

use std::collections::BTreeSet;

use crate::harness::alpine::Ids;
use crate::harness::site::TestSite;
use crate::harness::tree::{Shown, assert_holds, ovl_show};
use crate::lab::Lab;
use crate::record::Record;

/// The runlevel links Alpine's init adds when it boots without an apkovl (`rc_add`), and
/// `hwclock` (the VM has an RTC), which it always adds.
const DEFAULT_SERVICES: &[&str] = &[
    "sysinit/devfs",
    "sysinit/dmesg",
    "sysinit/mdev",
    "sysinit/hwdrivers",
    "sysinit/modloop",
    "boot/modules",
    "boot/sysctl",
    "boot/hostname",
    "boot/bootmisc",
    "boot/syslog",
    "boot/hwclock",
    "shutdown/mount-ro",
    "shutdown/killprocs",
    "shutdown/savecache",
    "default/firstboot",
];

/// Entries Alpine's init itself puts into the new root beside an apkovl before the final
/// `apk add`: what `apk add --initdb` creates (`lib/apk/db/*`, `var/cache/*`, `tmp`,
/// `etc/apk/arch`), its copy of the initramfs's apk keys, and `rc_add hwclock boot`.
fn added_by_init(path: &str) -> bool {
    matches!(
        path,
        "lib" | "tmp" | "var" | "etc/apk/arch" | "etc/apk/keys" | "etc/runlevels/boot/hwclock"
    ) || ["lib/apk", "var/", "etc/apk/keys/"]
        .iter()
        .any(|p| path.starts_with(p))
}

/// The kernel arguments of the `kernel` line of the script at `url` (the one the VM's iPXE
/// fetched), with `${net0/mac}` expanded to `mac` as iPXE does.
pub fn script_args(lab: &Lab, url: &str, mac: &str) -> Vec<String> {
    let out = lab.ns.run(20, &["curl", "-sf", url]);
    assert!(out.status.success(), "curl {url}: {out:?}");
    let script = String::from_utf8_lossy(&out.stdout).replace("${net0/mac}", mac);
    let line = script
        .lines()
        .find_map(|l| l.strip_prefix("kernel "))
        .unwrap_or_else(|| panic!("no kernel line in {url}:\n{script}"));
    let line = line.split(" || ").next().unwrap_or_default();
    line.split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect()
}

/// The value of `name=` on the kernel line.
fn arg<'a>(args: &'a [String], name: &str) -> &'a str {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {args:?}"))
}

/// Asserts that the kernel line ovl served reached Alpine's init and was parsed by it:
/// `/proc/cmdline` is `served` (the script's line, as the firmware passes it); `alpine_repo=` became apk's `--repository`;
/// `ip=dhcp` configured the network (apk got `--update-cache`, not `--no-network`); the
/// `modules=` list is loaded; `modloop=` is there for the booted system's `modloop` service
/// (the init itself does not read it); `quiet` among `profile_args` became `--quiet`.
pub fn assert_kernel_line_parsed(rec: &Record, served: &[String], profile_args: &[String]) {
    let cmdline: Vec<String> = rec.cmdline.split_whitespace().map(str::to_string).collect();
    assert_eq!(cmdline, served, "/proc/cmdline is the served kernel line");
    assert_eq!(
        rec.repository(),
        Some(arg(served, "alpine_repo")),
        "{rec:?}"
    );
    assert!(
        rec.has_arg("--update-cache") && !rec.has_arg("--no-network"),
        "ip=dhcp configured the network: {:?}",
        rec.args
    );
    assert!(
        arg(served, "ip") == "dhcp" && !rec.addrs.is_empty(),
        "{rec:?}"
    );
    for m in arg(served, "modules").split(',') {
        let m = m.replace('-', "_");
        assert!(
            rec.modules.contains(&m),
            "modules= names {m}, not loaded: {:?}",
            rec.modules
        );
    }
    assert!(
        arg(served, "modloop").ends_with("/modloop-lts"),
        "{served:?}"
    );
    for a in profile_args {
        assert!(served.contains(a), "profile argument {a} on the line");
    }
    assert_eq!(
        rec.has_arg("--quiet"),
        profile_args.iter().any(|a| a == "quiet"),
        "the init's KOPT_quiet follows the profile's `quiet`: {:?}",
        rec.args
    );
}

/// Asserts that the apkovl of `mac` was applied by Alpine's init as `ovl show` lists it: the
/// overlay list handed to `apk add --overlay-from-stdin` is the archive's member list with
/// relative names only; the new root holds every listed entry (type, mode, owner, content or
/// target) and besides only what the init adds itself; `root/` is 0700. Returns the listing.
pub fn assert_applied(site: &TestSite, mac: &str, rec: &Record, alpine: &Ids) -> Shown {
    let shown = ovl_show(site, mac);
    let overlay = rec
        .overlay
        .as_ref()
        .expect("--overlay-from-stdin with a list");
    for name in overlay {
        assert!(
            !name.starts_with('/')
                && !name.starts_with("./")
                && !name.split('/').any(|c| c == ".."),
            "a relative name in the overlay list: {name:?}"
        );
    }
    let listed: BTreeSet<&str> = overlay.iter().map(|n| n.trim_end_matches('/')).collect();
    let expected: BTreeSet<&str> = shown.tree.keys().map(String::as_str).collect();
    assert_eq!(
        listed, expected,
        "the overlay list is the archive's members"
    );
    assert_holds(
        &shown.tree,
        &rec.tree,
        added_by_init,
        &format!("{mac}: /sysroot at the final apk add against ovl show"),
    );
    let root = rec.tree.get("root").expect("root/ in the new root");
    assert_eq!(root.mode, Some(0o700), "root/ is 0700: {root:?}");
    assert_alpine_owners(&shown, alpine);
    shown
}

/// Owner names that Alpine's `/etc/passwd` and `/etc/group` know resolve to the ids ovl
/// lists (busybox `tar` in the initramfs resolves names with those files).
pub fn assert_alpine_owners(shown: &Shown, alpine: &Ids) {
    for (path, (user, group)) in &shown.names {
        let e = &shown.tree[path];
        if let Some(uid) = alpine.users.get(user) {
            assert_eq!(*uid, e.uid, "{path}: Alpine's uid of {user}");
        }
        if let Some(gid) = alpine.groups.get(group) {
            assert_eq!(*gid, e.gid, "{path}: Alpine's gid of {group}");
        }
    }
}

/// Asserts that the init went on without an apkovl (the 404 path): no overlay list, no
/// `--overlay-from-stdin`, and a new root with only the init's stock setup (default
/// runlevel links, `modloop` in `sysinit`, and its apk keys).
pub fn assert_stock_boot(rec: &Record) {
    assert!(
        rec.overlay.is_none() && !rec.has_arg("--overlay-from-stdin"),
        "{rec:?}"
    );
    for s in DEFAULT_SERVICES {
        let path = format!("etc/runlevels/{s}");
        let link = rec
            .tree
            .get(&path)
            .unwrap_or_else(|| panic!("{path} in a stock boot: {:?}", rec.tree.keys()));
        let service = s.rsplit('/').next().unwrap_or_default();
        assert_eq!(link.content, format!("/etc/init.d/{service}"), "{path}");
    }
    for path in rec.tree.keys() {
        assert!(
            matches!(
                path.as_str(),
                "etc" | "etc/apk" | "etc/apk/keys" | "etc/runlevels"
            ) || path.starts_with("etc/apk/keys/")
                || path.starts_with("etc/runlevels/"),
            "{path} in a boot without apkovl"
        );
    }
    assert!(rec.has_arg("alpine-base"), "{:?}", rec.args);
}
