//! The site's layout: every file and folder name ovl reads or writes in a site (SPEC §2). What
//! the servers may serve of it is decided in one place, `serve::public` (an explicit public
//! set); the names below marked private can never enter that set.
//!
//! ```text
//! SITE/
//!   ovl.toml          settings               (private)
//!   devices.toml      the inventory          (private)
//!   profiles/*.toml   profiles               (private)
//!   overlays/         layer folders          (private: they hold secrets)
//!   captures/MAC/     lbu captures           (private)
//!   configs/MAC.tar.gz  published archives   (public)
//!   boot.ipxe, gpxe-script  boot scripts     (public)
//!   sshkeys.pub       default `ssh_key=`     (public)
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
/// `[serve] public` may not list them, and `serve::public` leaves them out of every set.
pub const PRIVATE_TOP: [&str; 5] = [
    SITE_FILE,
    DEVICES_FILE,
    PROFILES_DIR,
    OVERLAYS_DIR,
    CAPTURES_DIR,
];
