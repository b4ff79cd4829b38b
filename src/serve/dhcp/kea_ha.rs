//! `ovl export kea --ha`: the configurations of a Kea DHCPv4 high-availability pair in
//! hot-standby mode, one per peer, for the scale-out set-up (README "Scale-out").
//!
//! Each configuration is the plain Kea export ([`super::export::kea`]: pool, options,
//! reservations) without the PXE client classes, plus the two hook libraries HA needs
//! (`libdhcp_lease_cmds.so` first, then `libdhcp_ha.so`) and Kea's multi-threading with the
//! HA hook's dedicated HTTP listener, so the peers talk to each other without
//! `kea-ctrl-agent`. The peers' lists are identical; only `this-server-name` differs. The
//! first peer is the primary, the second the standby, any further peers are backups.
//!
//! Why no PXE classes: a Kea class names one `next-server` and one script URL, so the boot
//! server it names would be the single point of failure again. In the scale-out set-up the
//! PXE answers come from the `ovl serve --dhcp proxy` nodes, each naming itself; a node that
//! is down does not answer, so a device boots from a node that does.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::export::{DhcpExport, kea_document};

/// The folder of Kea's hook libraries in Debian's and Ubuntu's packages.
pub fn default_hooks_dir() -> PathBuf {
    PathBuf::from(format!(
        "/usr/lib/{}-linux-gnu/kea/hooks",
        std::env::consts::ARCH
    ))
}

/// A peer's role in the hot-standby relationship.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Answers every client while it is up.
    Primary,
    /// Takes over when the primary is down.
    Standby,
    /// Receives lease updates only.
    Backup,
}

impl Role {
    /// Kea's name of the role.
    pub fn name(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
            Role::Backup => "backup",
        }
    }
}

/// One Kea server of the pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaPeer {
    /// Its name (`this-server-name`, the output file's name).
    pub name: String,
    /// The URL its HA listener binds to and the other peers send to, `http://IP:PORT/`.
    pub url: String,
}

/// `NAME=URL` as given to `--ha-peer`: a name of letters, digits, `-`, `_` and `.`, and an
/// `http://IP:PORT/` URL (the dedicated listener binds to that address, so no host name).
pub fn parse_peer(s: &str) -> Result<HaPeer, String> {
    let (name, url) = s
        .split_once('=')
        .ok_or_else(|| "expected NAME=URL (e.g. kea1=http://10.0.0.2:8001/)".to_string())?;
    let name = name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("the name must be letters, digits, '-', '_' or '.'".to_string());
    }
    let url = url.trim();
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        "the URL must start with http:// (Kea's HA listener speaks plain HTTP here)".to_string()
    })?;
    let authority = rest.trim_end_matches('/');
    let bad = || "expected http://IP:PORT/ with an IP address and a port".to_string();
    let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<IpAddr>().map_err(|_| bad())?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(bad()),
    }
    Ok(HaPeer {
        name: name.to_string(),
        url: format!("http://{authority}/"),
    })
}

/// The role of the peer at `index` of the command line's list.
fn role(index: usize) -> Role {
    match index {
        0 => Role::Primary,
        1 => Role::Standby,
        _ => Role::Backup,
    }
}

/// Checks a list of peers: at least two, names unique, URLs unique.
pub fn check_peers(peers: &[HaPeer]) -> Result<(), String> {
    if peers.len() < 2 {
        return Err(format!(
            "--ha needs two --ha-peer NAME=URL (primary, then standby), got {}",
            peers.len()
        ));
    }
    for (i, p) in peers.iter().enumerate() {
        if let Some(q) = peers[..i].iter().find(|q| q.name == p.name) {
            return Err(format!("--ha-peer: name {:?} is given twice", q.name));
        }
        if let Some(q) = peers[..i].iter().find(|q| q.url == p.url) {
            return Err(format!("--ha-peer: URL {} is given twice", q.url));
        }
    }
    Ok(())
}

/// The HA hook's parameters for the peer named `this`.
fn ha_parameters(this: &str, peers: &[HaPeer]) -> Value {
    let list: Vec<Value> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            json!({
                "name": p.name,
                "url": p.url,
                "role": role(i).name(),
                "auto-failover": true,
            })
        })
        .collect();
    json!({
        "high-availability": [{
            "this-server-name": this,
            "mode": "hot-standby",
            "heartbeat-delay": 5000,
            "max-response-delay": 15000,
            "max-ack-delay": 5000,
            "max-unacked-clients": 3,
            "multi-threading": {
                "enable-multi-threading": true,
                "http-dedicated-listener": true,
                "http-listener-threads": 0,
                "http-client-threads": 0,
            },
            "peers": list,
        }]
    })
}

/// One configuration per peer, in the order given, each a whole `kea-dhcp4` configuration;
/// `None` when `cfg` has no pool (`[serve.dhcp] range` unset).
pub fn kea_ha(cfg: &DhcpExport, peers: &[HaPeer], hooks: &Path) -> Option<Vec<(String, Value)>> {
    let base = kea_document(cfg, false)?;
    let lib = |name: &str| hooks.join(name).display().to_string();
    let configs = peers
        .iter()
        .map(|peer| {
            let mut doc = base.clone();
            if let Some(dhcp4) = doc.get_mut("Dhcp4").and_then(Value::as_object_mut) {
                dhcp4.insert(
                    "multi-threading".into(),
                    json!({
                        "enable-multi-threading": true,
                        "thread-pool-size": 0,
                        "packet-queue-size": 64,
                    }),
                );
                dhcp4.insert(
                    "hooks-libraries".into(),
                    json!([
                        {"library": lib("libdhcp_lease_cmds.so")},
                        {
                            "library": lib("libdhcp_ha.so"),
                            "parameters": ha_parameters(&peer.name, peers),
                        },
                    ]),
                );
            }
            (peer.name.clone(), doc)
        })
        .collect();
    Some(configs)
}

/// The file `--out DIR` writes for `peer`: `kea-dhcp4-NAME.conf`.
pub fn file_name(peer: &str) -> String {
    format!("kea-dhcp4-{peer}.conf")
}

/// A configuration as written to its file: a `//` heading (Kea's parser reads comments)
/// naming the peer and its role, then the pretty-printed JSON.
pub fn file_text(peer: &str, index: usize, doc: &Value) -> String {
    let mut text = format!(
        "// Generated by `ovl export kea --ha`: Kea DHCPv4 peer {peer:?} ({role}) of a\n\
         // hot-standby pair. Addresses and reservations only: the PXE answers come from the\n\
         // `ovl serve --dhcp proxy` nodes (README \"Scale-out\").\n",
        role = role(index).name()
    );
    text.push_str(&serde_json::to_string_pretty(doc).unwrap_or_default());
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_are_checked() {
        let p = parse_peer("kea1=http://10.0.0.2:8001").unwrap();
        assert_eq!(p.url, "http://10.0.0.2:8001/");
        assert_eq!(p.name, "kea1");
        assert!(parse_peer("kea1").is_err());
        assert!(parse_peer("=http://10.0.0.2:8001/").is_err());
        assert!(parse_peer("a b=http://10.0.0.2:8001/").is_err());
        assert!(parse_peer("k=https://10.0.0.2:8001/").is_err());
        assert!(parse_peer("k=http://kea.lan:8001/").is_err());
        assert!(parse_peer("k=http://10.0.0.2/").is_err());
        assert!(parse_peer("k=http://10.0.0.2:0/").is_err());
        assert!(parse_peer("k=http://[fd00::2]:8001/").is_ok());
        let a = parse_peer("a=http://10.0.0.2:8001/").unwrap();
        let b = parse_peer("b=http://10.0.0.3:8001/").unwrap();
        assert!(check_peers(std::slice::from_ref(&a)).is_err());
        assert!(check_peers(&[a.clone(), a.clone()]).is_err());
        let same_url = HaPeer {
            name: "c".into(),
            url: a.url.clone(),
        };
        assert!(check_peers(&[a.clone(), same_url]).is_err());
        assert!(check_peers(&[a, b]).is_ok());
    }

    #[test]
    fn roles_follow_the_order() {
        assert_eq!(role(0), Role::Primary);
        assert_eq!(role(1), Role::Standby);
        assert_eq!(role(2), Role::Backup);
    }
}
