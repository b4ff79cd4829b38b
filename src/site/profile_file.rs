//! One profile file as written (`profiles/NAME.toml`), section by section, before its
//! `extends` chain is folded in by [`profile`](crate::site::profile).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// A file mode, written as a string of octal digits (`"0644"`). A TOML integer is refused:
/// `mode = 600` is the decimal number 600 (octal 1130), never what was meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl Mode {
    /// Parse `"0644"` (an optional `0o` prefix allowed), at most `7777`.
    fn parse(s: &str) -> std::result::Result<Mode, String> {
        let digits = s.trim().trim_start_matches("0o");
        let v = u32::from_str_radix(digits, 8)
            .ok()
            .filter(|_| !digits.is_empty() && !digits.starts_with('+'))
            .ok_or_else(|| format!("mode {s:?} is not an octal number such as \"0644\""))?;
        if v > 0o7777 {
            return Err(format!("mode {s:?} out of range (at most \"7777\")"));
        }
        Ok(Mode(v))
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Mode;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mode as a string of octal digits, e.g. \"0644\"")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Mode, E> {
                Mode::parse(s).map_err(E::custom)
            }

            fn visit_i64<E: serde::de::Error>(self, i: i64) -> std::result::Result<Mode, E> {
                // toml_file adds the exact hint from the literal as written (`600`, `0o644`).
                Err(E::custom(format!(
                    "mode {i} is a TOML integer; modes are strings of octal digits, e.g. \"0644\""
                )))
            }

            fn visit_u64<E: serde::de::Error>(self, u: u64) -> std::result::Result<Mode, E> {
                self.visit_i64(i64::try_from(u).unwrap_or(i64::MAX))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[services]`: runlevel lists; `"!svc"` drops an inherited or default service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServicesDecl {
    /// `sysinit` runlevel.
    pub sysinit: Vec<Spanned<String>>,
    /// `boot` runlevel.
    pub boot: Vec<Spanned<String>>,
    /// `default` runlevel.
    pub default: Vec<Spanned<String>>,
    /// `shutdown` runlevel.
    pub shutdown: Vec<Spanned<String>>,
}

impl ServicesDecl {
    /// The list of `level` (`shutdown` for any name but the first three).
    pub(crate) fn level(&self, level: &str) -> &[Spanned<String>] {
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
    /// Packages for `etc/apk/world`; `"!name"` drops an inherited one (with where it is
    /// written, for errors about it).
    pub packages: Vec<Spanned<String>>,
    /// Hostname template, e.g. `"xl-{{ mac_suffix }}"`.
    pub hostname: Option<String>,
    /// Lines of `etc/apk/repositories` (templates); unset: not written (`alpine_repo=` applies).
    pub repositories: Option<Vec<String>>,
    /// Keys for `root/.ssh/authorized_keys` (with where each is written).
    pub authorized_keys: Vec<Spanned<String>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(toml_text: &str) -> std::result::Result<Mode, String> {
        #[derive(Deserialize)]
        struct T {
            mode: Mode,
        }
        toml::from_str::<T>(toml_text)
            .map(|t| t.mode)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn modes_are_octal_strings() {
        assert_eq!(mode("mode = \"0600\""), Ok(Mode(0o600)));
        assert_eq!(mode("mode = \"4755\""), Ok(Mode(0o4755)));
        assert_eq!(mode("mode = \"0o640\""), Ok(Mode(0o640)));
        for bad in ["\"0800\"", "\"\"", "\"+644\"", "\"17777\""] {
            assert!(mode(&format!("mode = {bad}")).is_err(), "{bad}");
        }
        let e = mode("mode = 600").unwrap_err();
        assert!(e.contains("mode 600 is a TOML integer"), "{e}");
        let e = mode("mode = 0o644").unwrap_err();
        assert!(e.contains("mode 420 is a TOML integer"), "{e}");
    }
}
