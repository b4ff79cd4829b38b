//! The lbu round trip over NFS (SPEC §5), in one place: `[boot] nfs` names the NFS export of
//! the site's `captures/` folder (never the whole site); each device mounts only its own
//! folder, `EXPORT/MAC`, at `/media/pxe/MAC` and `lbu commit` saves there; `ovl export nfs`
//! writes the `/etc/exports` lines that give each device read-write access to its own
//! folder, from its fixed address, squashed to one unprivileged owner.

use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::build::project::Project;
use crate::error::{Error, Result};
use crate::mac::Mac;
use crate::site::Site;

/// Where devices mount their capture folder: `/media/pxe/MAC`.
pub(crate) const MOUNT_BASE: &str = "media/pxe";

/// `[boot] nfs = "HOST:/PATH"`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsExport {
    /// The NFS server, as devices reach it.
    pub host: String,
    /// The exported path of `captures/` on the server, without a trailing `/`.
    pub path: String,
}

impl NfsExport {
    /// Parse `HOST:/PATH`; `None` when it is not of that form.
    pub fn parse(value: &str) -> Option<NfsExport> {
        let (host, path) = value.split_once(':')?;
        let path = path.trim_end_matches('/');
        let valid = !host.is_empty()
            && !host.contains(char::is_whitespace)
            && path.starts_with('/')
            && !path.contains(char::is_whitespace)
            && !path.split('/').any(|c| c == "..");
        valid.then(|| NfsExport {
            host: host.into(),
            path: path.into(),
        })
    }

    /// The server path of one device's capture folder.
    pub fn device_path(&self, mac: &Mac) -> String {
        format!("{}/{mac}", self.path)
    }

    /// The device's `etc/fstab` line mounting its own folder.
    pub(crate) fn fstab_line(&self, mac: &Mac) -> String {
        format!(
            "{}:{} {} nfs rw,nolock,_netdev 0 0",
            self.host,
            self.device_path(mac),
            mount_point(mac)
        )
    }
}

/// The absolute mount point of a device's capture folder on the device.
pub(crate) fn mount_point(mac: &Mac) -> String {
    format!("/{MOUNT_BASE}/{mac}")
}

/// The owner every device's writes are squashed to: `[boot] nfs_anonuid`/`nfs_anongid`, else
/// the owner of the site's `captures/` folder (so that ovl, running as that user, reads what
/// devices save).
pub(crate) fn squash_owner(site: &Site) -> Result<(u32, u32)> {
    let b = &site.config.boot;
    if let (Some(uid), Some(gid)) = (b.nfs_anonuid, b.nfs_anongid) {
        return Ok((uid, gid));
    }
    let dir = site.captures_dir();
    let meta = std::fs::metadata(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok((
        b.nfs_anonuid.unwrap_or(meta.uid()),
        b.nfs_anongid.unwrap_or(meta.gid()),
    ))
}

/// Make `captures/MAC/` for a device: mode 0700 (captures hold the device's secrets), owned by
/// the squash owner when ovl runs as root. An existing folder is left as it is.
pub(crate) fn ensure_capture_dir(site: &Site, mac: &Mac) -> Result<PathBuf> {
    let top = site.captures_dir();
    std::fs::create_dir_all(&top).map_err(|e| Error::io(&top, e))?;
    let dir = top.join(mac.to_string());
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(dir),
        Err(e) => return Err(Error::io(&dir, e)),
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(&dir, e))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let (uid, gid) = squash_owner(site)?;
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| Error::io(&dir, e))?;
    }
    Ok(dir)
}

/// One device's line in `/etc/exports`, or why it has none.
#[derive(Debug, Clone, Serialize)]
pub struct ExportLine {
    /// The device.
    pub mac: Mac,
    /// Its host name.
    pub hostname: String,
    /// Its fixed address, the only client allowed.
    pub ip: Option<Ipv4Addr>,
    /// The exported folder on the server.
    pub path: String,
    /// The `/etc/exports` line; `None` for a device without a fixed address.
    pub line: Option<String>,
}

/// The options of every export: read-write, synchronous, every client uid squashed.
fn options(uid: u32, gid: u32) -> String {
    format!("rw,sync,no_subtree_check,secure,root_squash,all_squash,anonuid={uid},anongid={gid}")
}

/// The exports of every inventory device, by MAC.
pub fn export_lines(p: &Project) -> Result<(NfsExport, Vec<ExportLine>, (u32, u32))> {
    let site = &p.site;
    let export = site
        .config
        .boot
        .nfs
        .as_deref()
        .and_then(NfsExport::parse)
        .ok_or_else(|| {
            Error::at_path(
                site.site_file(),
                "[boot] nfs is not set: there is no NFS round trip to export \
                 (set it to the export of captures/, e.g. \"192.168.0.2:/srv/pxe/captures\")",
            )
        })?;
    let (uid, gid) = squash_owner(site)?;
    let opts = options(uid, gid);
    let mut lines = Vec::new();
    for d in p.inventory.devices.values() {
        let settings = p.settings(&p.spec(d.mac, None)?)?;
        let path = export.device_path(&d.mac);
        let line = d.ip.map(|ip| format!("{} {ip}({opts})", escape(&path)));
        lines.push(ExportLine {
            mac: d.mac,
            hostname: settings.hostname.clone(),
            ip: d.ip,
            path,
            line,
        });
    }
    Ok((export, lines, (uid, gid)))
}

/// `/etc/exports` quotes a path holding spaces; ovl's paths never do (checked), so only
/// octal-escape what exports(5) would split on.
fn escape(path: &str) -> String {
    path.chars()
        .map(|c| match c {
            ' ' => "\\040".to_string(),
            '\t' => "\\011".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// The text of `ovl export nfs`: a header, one line per device with a fixed address, and a
/// comment for each device that cannot be restricted to its own address.
pub fn exports_text(
    site_root: &Path,
    export: &NfsExport,
    lines: &[ExportLine],
    owner: (u32, u32),
) -> String {
    let mut out = format!(
        "# /etc/exports for the lbu captures of {} (ovl export nfs).\n\
         # {} on the NFS server must be the site's captures/ folder. Each device may write\n\
         # only its own folder, from its fixed address; every write is squashed to uid {} gid {}.\n",
        site_root.display(),
        export.path,
        owner.0,
        owner.1
    );
    if owner.0 == 0 {
        out.push_str("# Warning: writes are squashed to root (uid 0); set [boot] nfs_anonuid.\n");
    }
    for l in lines {
        match &l.line {
            Some(line) => {
                out.push_str(line);
                out.push('\n');
            }
            None => out.push_str(&format!(
                "# {} ({}): no fixed ip in devices.toml, so no export (its folder cannot be \
                 restricted to it)\n",
                l.mac, l.hostname
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_and_path() {
        let e = NfsExport::parse("10.0.0.2:/srv/pxe/captures/").unwrap();
        assert_eq!(e.host, "10.0.0.2");
        assert_eq!(e.path, "/srv/pxe/captures");
        let mac: Mac = "52:54:00:12:34:56".parse().unwrap();
        assert_eq!(
            e.fstab_line(&mac),
            "10.0.0.2:/srv/pxe/captures/52:54:00:12:34:56 /media/pxe/52:54:00:12:34:56 nfs \
             rw,nolock,_netdev 0 0"
        );
        for bad in ["", "host", "host:relative", ":/x", "h:/a/../b", "h:/a b"] {
            assert_eq!(NfsExport::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn escapes_what_exports_would_split_on() {
        assert_eq!(escape("/a b\tc"), "/a\\040b\\011c");
    }
}
