//! One profile file as written (`profiles/NAME.toml`), section by section, before its
//! `extends` chain is folded in by [`profile`](crate::site::profile).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// A file mode written as an octal string (`"0644"`) or a TOML integer (`0o644`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            I(i64),
        }
        let v = match Raw::deserialize(d)? {
            Raw::S(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).map_err(|_| {
                serde::de::Error::custom(format!(
                    "mode {s:?} is not an octal number such as \"0644\""
                ))
            })?,
            Raw::I(i) => u32::try_from(i)
                .map_err(|_| serde::de::Error::custom(format!("mode {i} out of range")))?,
        };
        if v > 0o7777 {
            return Err(serde::de::Error::custom(format!(
                "mode {v:o} out of range (at most 7777)"
            )));
        }
        Ok(Mode(v))
    }
}

/// `[services]`: runlevel lists; `"!svc"` drops an inherited or default service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServicesDecl {
    /// `sysinit` runlevel.
    pub sysinit: Vec<String>,
    /// `boot` runlevel.
    pub boot: Vec<String>,
    /// `default` runlevel.
    pub default: Vec<String>,
    /// `shutdown` runlevel.
    pub shutdown: Vec<String>,
}

impl ServicesDecl {
    /// The list of `level` (`shutdown` for any name but the first three).
    pub(crate) fn level(&self, level: &str) -> &[String] {
        match level {
            "sysinit" => &self.sysinit,
            "boot" => &self.boot,
            "default" => &self.default,
            _ => &self.shutdown,
        }
    }
}

/// `[network]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkDecl {
    /// Contents of `etc/network/interfaces` (template).
    pub interfaces: Option<String>,
    /// Contents of `etc/resolv.conf` (template).
    pub resolv_conf: Option<String>,
}

/// `[files."PATH"]`: an inline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDecl {
    /// The file's text; rendered as a template unless `template = false`.
    pub content: String,
    /// Render `content` with the device's variables (default true).
    #[serde(default = "yes")]
    pub template: bool,
    /// Permission bits (default 0644).
    pub mode: Option<Mode>,
    /// Owner uid.
    pub uid: Option<u32>,
    /// Group gid.
    pub gid: Option<u32>,
    /// Owner name (resolved with the archive's etc/passwd or Alpine's).
    pub user: Option<String>,
    /// Group name (resolved with the archive's etc/group or Alpine's).
    pub group: Option<String>,
}

fn yes() -> bool {
    true
}

/// `[permissions."PATH"]`: owner and mode of a path some layer provides.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermDecl {
    /// Permission bits.
    pub mode: Option<Mode>,
    /// Owner uid.
    pub uid: Option<u32>,
    /// Group gid.
    pub gid: Option<u32>,
    /// Owner name.
    pub user: Option<String>,
    /// Group name.
    pub group: Option<String>,
}

impl From<&FileDecl> for PermDecl {
    fn from(f: &FileDecl) -> Self {
        PermDecl {
            mode: f.mode,
            uid: f.uid,
            gid: f.gid,
            user: f.user.clone(),
            group: f.group.clone(),
        }
    }
}

/// One profile file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileFile {
    /// Free text shown by `ovl list`/`show`.
    pub description: Option<String>,
    /// Parent profile.
    pub extends: Option<String>,
    /// Layers in order, later wins: folders under `overlays/` or site paths to lbu archives.
    pub overlays: Vec<String>,
    /// Packages for `etc/apk/world`; `"!name"` drops an inherited one.
    pub packages: Vec<String>,
    /// Hostname template, e.g. `"xl-{{ mac_suffix }}"`.
    pub hostname: Option<String>,
    /// Lines of `etc/apk/repositories` (templates); unset: not written (`alpine_repo=` applies).
    pub repositories: Option<Vec<String>>,
    /// Keys for `root/.ssh/authorized_keys`.
    pub authorized_keys: Vec<String>,
    /// Extra kernel arguments for this profile's devices.
    pub kernel_args: Vec<String>,
    /// Extra kernel modules (`modules=`) for this profile's devices.
    pub modules: Vec<String>,
    /// Runlevels.
    pub services: ServicesDecl,
    /// Network files.
    pub network: NetworkDecl,
    /// Inline files by path.
    pub files: BTreeMap<String, FileDecl>,
    /// Owner/mode overrides by path.
    pub permissions: BTreeMap<String, PermDecl>,
    /// Free template values.
    pub vars: toml::Table,
}
