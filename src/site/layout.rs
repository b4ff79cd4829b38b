//! The site's layout: every file and folder name ovl reads or writes in a site (SPEC §2), and
//! the rule saying which site paths are private (never served over HTTP or TFTP).
//!
//! ```text
//! SITE/
//!   ovl.toml          settings               (private)
//!   devices.toml      the inventory          (private)
//!   profiles/*.toml   profiles               (private)
//!   overlays/         layer folders          (private: they hold secrets)
//!   captures/MAC/     lbu captures           (private)
//!   configs/MAC.tar.gz  published archives   (served)
//!   boot.ipxe, gpxe-script  boot scripts     (served)
//!   sshkeys.pub       default `ssh_key=`     (served)
//!   .ovl-state/       server state, e.g. DHCP leases, and manifests/MAC/ID.json.gz,
//!                     the build manifests published for each device (hidden)
//! ```
//!
//! Files are published by writing a hidden temporary beside the target
//! (`configs/.MAC.tar.gz.XXXXXX.ovl-tmp`, `.boot.ipxe.XXXXXX.ovl-tmp`) and renaming it, so a
//! `configs/` on another file system (a mount, or a symlink to one) works.

/// The settings file at the root of every site.
pub const SITE_FILE: &str = "ovl.toml";
/// The inventory file.
pub const DEVICES_FILE: &str = "devices.toml";
/// The folder of profiles, one `NAME.toml` each.
pub const PROFILES_DIR: &str = "profiles";
/// The extension of profile files.
pub const PROFILE_EXTENSION: &str = "toml";
/// The folder of layer folders.
pub const OVERLAYS_DIR: &str = "overlays";
/// The folder of lbu captures, one `MAC/` folder per device.
pub const CAPTURES_DIR: &str = "captures";
/// The file name ending of an lbu capture, e.g. `HOST.apkovl.tar.gz`.
pub const CAPTURE_SUFFIX: &str = ".apkovl.tar.gz";
/// The folder where archives are published, as `MAC.tar.gz`.
pub const CONFIGS_DIR: &str = "configs";
/// The boot scripts written at the root, in the order they are written.
pub const BOOT_SCRIPTS: [&str; 2] = ["gpxe-script", "boot.ipxe"];
/// The site file passed as `ssh_key=` when `[boot] ssh_key` is not set.
pub const DEFAULT_SSH_KEY: &str = "sshkeys.pub";
/// The private folder where earlier versions wrote temporary files; stale ones left there are
/// still removed, and names starting with it are never read as layers.
pub const TMP_DIR: &str = ".ovl-tmp";
/// The ending of the hidden temporary files written beside their target before the rename.
pub const TMP_SUFFIX: &str = ".ovl-tmp";
/// The private folder of state kept by the servers (e.g. DHCP leases).
pub const STATE_DIR: &str = ".ovl-state";

/// The folder inside [`STATE_DIR`] holding, per device, the manifests of the archives
/// published for it (`MAC/ID.json.gz`).
pub const MANIFESTS_DIR: &str = "manifests";
/// The file every archive carries naming its build (id, MAC, profile), under `etc/` so that
/// lbu saves it with the rest of a device's configuration.
pub const IDENTITY_FILE: &str = "etc/ovl/build";
/// The folder of [`IDENTITY_FILE`].
pub const IDENTITY_DIR: &str = "etc/ovl";

/// Top-level names ovl writes itself: changes to them are never inputs of a build.
pub const GENERATED: [&str; 5] = [
    CONFIGS_DIR,
    TMP_DIR,
    STATE_DIR,
    BOOT_SCRIPTS[0],
    BOOT_SCRIPTS[1],
];

/// First path components that are never served: the site's settings, inventory, profiles,
/// overlay trees (they hold secrets) and the devices' lbu captures. Compared
/// ASCII-case-insensitively, so case-insensitive file systems leak nothing.
pub const PRIVATE_TOP: [&str; 5] = [
    SITE_FILE,
    DEVICES_FILE,
    PROFILES_DIR,
    OVERLAYS_DIR,
    CAPTURES_DIR,
];

/// Why a site-relative path must not be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PrivatePath {
    /// A `.` or `..` component.
    #[error("path traversal")]
    Traversal,
    /// A component starting with `.` (hidden files and folders are private).
    #[error("hidden path")]
    Hidden,
    /// A first component in [`PRIVATE_TOP`].
    #[error("private path")]
    Private,
}

/// Check the non-empty components of a site-relative path: the first `.`/`..` or hidden
/// component decides, in order; then a first component in [`PRIVATE_TOP`] is private.
pub fn check_private(components: &[&str]) -> Result<(), PrivatePath> {
    for c in components {
        if *c == "." || *c == ".." {
            return Err(PrivatePath::Traversal);
        }
        if c.starts_with('.') {
            return Err(PrivatePath::Hidden);
        }
    }
    if let Some(first) = components.first()
        && PRIVATE_TOP.iter().any(|p| p.eq_ignore_ascii_case(first))
    {
        return Err(PrivatePath::Private);
    }
    Ok(())
}

/// Is this site-relative path (`/`-separated, empty components ignored) private?
pub fn is_private(rel: &str) -> bool {
    let components: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    check_private(&components).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_rule() {
        assert_eq!(check_private(&["configs", "x.tar.gz"]), Ok(()));
        assert_eq!(check_private(&["boot.ipxe"]), Ok(()));
        assert_eq!(
            check_private(&["Profiles", "a.toml"]),
            Err(PrivatePath::Private)
        );
        assert_eq!(check_private(&["OVL.TOML"]), Err(PrivatePath::Private));
        assert_eq!(check_private(&["data", "overlays"]), Ok(()));
        assert_eq!(
            check_private(&["profiles", ".."]),
            Err(PrivatePath::Traversal)
        );
        assert_eq!(check_private(&[".git", ".."]), Err(PrivatePath::Hidden));
        assert_eq!(check_private(&["..", ".git"]), Err(PrivatePath::Traversal));
        assert!(is_private("/captures//x"));
        assert!(is_private(".ovl-tmp/a"));
        assert!(!is_private("/configs/52:54:00:12:34:56.tar.gz"));
        assert!(!is_private(""));
    }
}
