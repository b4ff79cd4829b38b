//! The site: the one folder that TFTP, HTTP and NFS serve, found like cargo finds
//! `Cargo.toml` (SPEC §2). [`Site`] is its root and settings; the submodules hold the rest of
//! the input model: the folder [`layout`], the `ovl.toml` sections ([`config`]), profiles,
//! the inventory, and located TOML errors ([`toml_file`]).

pub mod capture_config;
pub mod config;
pub mod example;
pub mod inventory;
pub(crate) mod inventory_edit;
pub mod layout;
pub mod profile;
pub mod profile_file;
pub(crate) mod serve_config;
pub mod toml_file;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub use config::{
    AlpineConfig, BootConfig, BuildConfig, CaptureConfig, ConfigsAccess, ConflictPolicy, DhcpMode,
    DhcpSettings, FetchConfig, OnFailure, RelayPool, ServeConfig, SiteConfig,
};
pub use layout::{DEVICES_FILE, SITE_FILE};

/// A located site: its root folder and parsed settings.
#[derive(Debug, Clone)]
pub struct Site {
    /// The site folder (absolute).
    pub root: PathBuf,
    /// Parsed `ovl.toml`.
    pub config: SiteConfig,
}

impl Site {
    /// Find the site: `explicit` (from `--site` or `$OVL_SITE`), else the nearest parent of the
    /// current directory holding `ovl.toml`.
    pub fn discover(explicit: Option<&Path>) -> Result<Site> {
        let root = match explicit {
            Some(p) => {
                if !p.join(SITE_FILE).is_file() {
                    return Err(Error::Env(format!(
                        "{}: not a site (no {SITE_FILE}); run `ovl init {}` to create one",
                        p.display(),
                        p.display()
                    )));
                }
                p.to_path_buf()
            }
            None => {
                let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
                cwd.ancestors().find(|d| d.join(SITE_FILE).is_file()).map(Path::to_path_buf).ok_or_else(|| {
                    Error::Env(format!(
                        "no {SITE_FILE} in {} or any parent folder; pass --site DIR or set OVL_SITE",
                        cwd.display()
                    ))
                })?
            }
        };
        let root = std::path::absolute(&root).map_err(|e| Error::io(&root, e))?;
        Site::open(&root)
    }

    /// Open the site rooted at `root` and read its `ovl.toml`.
    pub fn open(root: &Path) -> Result<Site> {
        let path = root.join(SITE_FILE);
        let config: SiteConfig = toml_file::load(&path)?;
        config.validate(&path)?;
        Ok(Site {
            root: root.to_path_buf(),
            config,
        })
    }

    /// `ovl.toml`.
    pub(crate) fn site_file(&self) -> PathBuf {
        self.root.join(SITE_FILE)
    }
    /// `profiles/`.
    pub(crate) fn profiles_dir(&self) -> PathBuf {
        self.root.join(layout::PROFILES_DIR)
    }
    /// `devices.toml`.
    pub(crate) fn devices_file(&self) -> PathBuf {
        self.root.join(DEVICES_FILE)
    }
    /// `captures/`.
    pub(crate) fn captures_dir(&self) -> PathBuf {
        self.root.join(layout::CAPTURES_DIR)
    }
    /// `configs/`, where archives are published.
    pub(crate) fn configs_dir(&self) -> PathBuf {
        self.root.join(layout::CONFIGS_DIR)
    }
    /// `.ovl-state/manifests/`, the build manifests published for each device.
    pub(crate) fn manifests_dir(&self) -> PathBuf {
        self.root
            .join(layout::STATE_DIR)
            .join(layout::MANIFESTS_DIR)
    }
    /// `.ovl-tmp/`, where files are written before being renamed into place.
    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join(layout::TMP_DIR)
    }

    /// `path` relative to the site root, for listings and messages (`path` itself when it is
    /// outside the site).
    pub(crate) fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// The entry mtime of archives: `SOURCE_DATE_EPOCH`, else `[build] mtime`.
    pub(crate) fn mtime(&self) -> u64 {
        std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(self.config.build.mtime)
    }

    /// Base URL devices use for HTTP, e.g. `http://192.168.0.2` or `http://10.0.0.1:8080`.
    /// Without `[boot] server` and with a wildcard listen address, iPXE's `${next-server}`
    /// (the DHCP server's siaddr) stands in for the host.
    pub(crate) fn http_base(&self) -> String {
        let listen: Option<SocketAddr> = self.config.serve.http.parse().ok();
        let host = match (&self.config.boot.server, listen) {
            (Some(s), _) => s.clone(),
            (None, Some(a)) if !a.ip().is_unspecified() => a.ip().to_string(),
            _ => "${next-server}".to_string(),
        };
        match listen.map(|a| a.port()) {
            Some(80) | None => format!("http://{host}"),
            Some(p) => format!("http://{host}:{p}"),
        }
    }
}
