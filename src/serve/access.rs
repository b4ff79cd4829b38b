//! Who may fetch what: the one access rule of the HTTP and TFTP servers.
//!
//! A [`Policy`] is what one loaded project says: its public set ([`PublicSet`]) and
//! `[serve] configs_access`. The servers read the policy in force from a [`PolicySource`]
//! (the live project, which changes on reload). `check` decides one request from the
//! client's address:
//!
//! 1. The path rule ([`public::resolve`]): anything not public is "not found".
//! 2. With `configs_access = "owner"`, a device's archive — named `configs/MAC.tar.gz` in
//!    the request, or reached through a symlink — goes only to the client that owns that MAC
//!    (`may_fetch_archive`: the kernel's neighbour entry or the DHCP server's lease, see
//!    [`Neighbours`]). The MAC named in the request is checked before the file system is
//!    asked, so a refusal says nothing about whether the archive exists.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use crate::mac::Mac;
use crate::serve::neighbours::Neighbours;
use crate::serve::public::{self, Denied, PublicSet, Resolved};
use crate::site::layout::CONFIGS_DIR;
use crate::site::{ConfigsAccess, Site};

/// What may be served and to whom, as one project says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The names served.
    pub public: PublicSet,
    /// Who may fetch device archives.
    pub configs_access: ConfigsAccess,
}

impl Policy {
    /// The policy of `site`'s `ovl.toml`.
    pub fn of_site(site: &Site) -> Policy {
        Policy {
            public: PublicSet::of_site(site),
            configs_access: site.config.serve.configs_access,
        }
    }
}

/// Where a server reads the policy in force.
pub trait PolicySource: Send + Sync + fmt::Debug {
    /// The policy now.
    fn policy(&self) -> Arc<Policy>;
}

/// A policy that never changes.
impl PolicySource for Arc<Policy> {
    fn policy(&self) -> Arc<Policy> {
        Arc::clone(self)
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not public, or missing: HTTP 404, TFTP error 1.
    Hidden(Denied),
    /// A public file the server cannot read: HTTP 403, TFTP error 2.
    Unreadable(Denied),
    /// `configs_access = "owner"` and the client is not the device: HTTP 403, TFTP error 2.
    NotOwner(Mac),
}

impl Refusal {
    /// True when the client is told "not found".
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, Refusal::Hidden(_))
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Hidden(d) | Refusal::Unreadable(d) => d.fmt(f),
            Refusal::NotOwner(mac) => write!(f, "configs_access = owner: the client is not {mac}"),
        }
    }
}

impl From<Denied> for Refusal {
    fn from(d: Denied) -> Refusal {
        if d.is_not_found() {
            Refusal::Hidden(d)
        } else {
            Refusal::Unreadable(d)
        }
    }
}

/// May `client` fetch the archive of `mac`? Always with `configs_access = "any"`; with
/// `"owner"` only when a neighbour source says `client` is `mac`.
pub(crate) fn may_fetch_archive(
    policy: &Policy,
    neighbours: &Neighbours,
    client: IpAddr,
    mac: &Mac,
) -> bool {
    policy.configs_access == ConfigsAccess::Any || neighbours.owns(client, mac)
}

/// The MAC of the archive a request names (`configs/MAC.tar.gz`), if it names one.
pub(crate) fn requested_archive(request: &str) -> Option<Mac> {
    archive_in(&public::components(request).ok()?)
}

/// The MAC of the archive a request's path components name, if they name one.
pub(crate) fn archive_in(components: &[&str]) -> Option<Mac> {
    match components {
        [dir, name] if *dir == CONFIGS_DIR => public::archive_mac(name),
        _ => None,
    }
}

/// Decides `client`'s request for `request` under `policy`: the file to serve, or why not
/// (see the module documentation). Blocking: it looks the path up and may read the kernel's
/// neighbour table.
pub(crate) fn check(
    root: &Path,
    policy: &Policy,
    neighbours: &Neighbours,
    client: IpAddr,
    request: &str,
) -> Result<Resolved, Refusal> {
    if let Some(mac) = requested_archive(request)
        && !may_fetch_archive(policy, neighbours, client, &mac)
    {
        return Err(Refusal::NotOwner(mac));
    }
    let resolved = public::resolve(root, &policy.public, request)?;
    if let Some(mac) = resolved.archive
        && !may_fetch_archive(policy, neighbours, client, &mac)
    {
        return Err(Refusal::NotOwner(mac));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::neighbours::StaticNeighbours;

    const A: &str = "52:54:00:00:00:0a";
    const B: &str = "52:54:00:00:00:0b";

    fn site(access: &str) -> (tempfile::TempDir, Policy) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(
            root.join("ovl.toml"),
            format!("[serve]\nconfigs_access = \"{access}\"\npublic = [\"data/\"]\n"),
        )
        .unwrap();
        std::fs::create_dir_all(root.join("configs")).unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::write(root.join(format!("configs/{A}.tar.gz")), b"a").unwrap();
        std::fs::write(root.join(format!("configs/{B}.tar.gz")), b"b").unwrap();
        std::os::unix::fs::symlink(format!("../configs/{B}.tar.gz"), root.join("data/b")).unwrap();
        let policy = Policy::of_site(&Site::open(root).unwrap());
        (dir, policy)
    }

    fn neighbours(ip: &str, mac: &str) -> Neighbours {
        let table = [(ip.parse().unwrap(), mac.parse().unwrap())];
        Neighbours::new(vec![Arc::new(StaticNeighbours(
            table.into_iter().collect(),
        ))])
    }

    #[test]
    fn owner_mode_serves_each_archive_to_its_device_only() {
        let (dir, policy) = site("owner");
        let n = neighbours("10.0.0.10", A);
        let a: IpAddr = "10.0.0.10".parse().unwrap();
        let other: IpAddr = "10.0.0.11".parse().unwrap();
        let req = format!("configs/{A}.tar.gz");
        assert!(check(dir.path(), &policy, &n, a, &req).is_ok());
        let b = B.parse().unwrap();
        let refused = |client, request: &str| check(dir.path(), &policy, &n, client, request);
        assert_eq!(
            refused(other, &req),
            Err(Refusal::NotOwner(A.parse().unwrap()))
        );
        assert_eq!(
            refused(a, &format!("/configs/{B}.tar.gz")),
            Err(Refusal::NotOwner(b))
        );
        // Through a symlink: the real archive's owner decides.
        assert_eq!(refused(a, "data/b"), Err(Refusal::NotOwner(b)));
        // A missing archive of someone else is refused the same way: no existence oracle.
        let missing = "configs/52:54:00:00:00:0c.tar.gz";
        assert!(matches!(refused(a, missing), Err(Refusal::NotOwner(_))));
        assert!(!refused(a, missing).unwrap_err().is_not_found());
    }

    #[test]
    fn any_mode_serves_every_public_archive() {
        let (dir, policy) = site("any");
        let n = Neighbours::new(vec![]);
        let c: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(check(dir.path(), &policy, &n, c, &format!("configs/{B}.tar.gz")).is_ok());
        assert!(check(dir.path(), &policy, &n, c, "data/b").is_ok());
        let e = check(dir.path(), &policy, &n, c, "ovl.toml").unwrap_err();
        assert_eq!(e, Refusal::Hidden(Denied::NotPublic));
        assert!(e.is_not_found());
    }

    #[test]
    fn requested_archives_are_canonical_names_only() {
        assert_eq!(
            requested_archive(&format!("/configs/{A}.tar.gz")),
            Some(A.parse().unwrap())
        );
        assert_eq!(requested_archive("configs/52-54-00-00-00-0a.tar.gz"), None);
        assert_eq!(requested_archive("data/x"), None);
        assert_eq!(requested_archive("configs/../x"), None);
    }
}
