//! PXE client recognition and the choice of boot file (PXE 2.1, RFC 4578).
//!
//! - Option 60 starting with `PXEClient` marks a PXE client (PXE 2.1 §2.2).
//! - Option 93 (client system architecture, RFC 4578 §2.1) picks the boot file: by default
//!   0 (BIOS) → `undionly.kpxe`, 6/7/9 (x86/x86-64 UEFI) → `ipxe.efi`.
//! - User class 77 containing `iPXE` (RFC 3004), or option 175 (iPXE's encapsulated
//!   options) marks iPXE itself, which gets the HTTP script URL instead of the iPXE binary:
//!   that breaks the chainload loop.
//! - Replies to PXE firmware carry option 60 `PXEClient` and vendor option 43 with
//!   `PXE_DISCOVERY_CONTROL = 8` (PXE 2.1 §2.4.2: take the boot file from this offer). UEFI
//!   firmware (EDK2/OVMF) needs option 43: without it a `PXEClient` offer is a "BINL" offer
//!   to EDK2, which then asks port 4011 for the boot file (seen as `PXE-E16`).

use dhcproto::v4::{DhcpOption, Message, OptionCode};

use super::config::DhcpConfig;
use crate::mac::Mac;

/// iPXE's encapsulated options (not in `dhcproto`'s list of known options).
const IPXE_ENCAP: u8 = 175;

/// What kind of boot client sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClientKind {
    /// The client's MAC (`chaddr`).
    pub mac: Mac,
    /// Option 60 starts with `PXEClient`.
    pub pxe: bool,
    /// The request comes from iPXE (user class `iPXE` or option 175).
    pub ipxe: bool,
    /// Option 93, when sent.
    pub arch: Option<u16>,
}

/// Classifies a (decoded, Ethernet) request.
pub(super) fn classify(req: &Message) -> ClientKind {
    let mut mac = Mac([0u8; 6]);
    if let Some(bytes) = req.chaddr().get(..6) {
        mac.0.copy_from_slice(bytes);
    }
    let opts = req.opts();
    let pxe = matches!(opts.get(OptionCode::ClassIdentifier),
        Some(DhcpOption::ClassIdentifier(class)) if class.starts_with(b"PXEClient"));
    let user_class_ipxe = matches!(opts.get(OptionCode::UserClass),
        Some(DhcpOption::UserClass(class)) if class.windows(4).any(|w| w == b"iPXE"));
    let ipxe = user_class_ipxe || opts.get(OptionCode::from(IPXE_ENCAP)).is_some();
    let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(arch)) => Some(u16::from(*arch)),
        _ => None,
    };
    ClientKind {
        mac,
        pxe,
        ipxe,
        arch,
    }
}

/// The boot file for a client: the script URL with `?mac=` for iPXE, the file mapped to
/// its architecture (0 when it sends none) for other PXE clients, nothing for plain clients
/// or unmapped architectures.
pub(super) fn boot_file(cfg: &DhcpConfig, client: &ClientKind) -> Option<String> {
    if client.ipxe {
        return Some(script_url(&cfg.ipxe_script_url, &client.mac));
    }
    if !client.pxe {
        return None;
    }
    cfg.boot_files.get(&client.arch.unwrap_or(0)).cloned()
}

/// `URL?mac=MAC` (or `URL&mac=MAC` when the URL already has a query).
pub(super) fn script_url(url: &str, mac: &Mac) -> String {
    with_mac(url, &mac.to_string())
}

/// `URL?mac=VALUE` (or `URL&mac=VALUE` when the URL already has a query); `VALUE` may be
/// iPXE's `${net0/mac}`, which iPXE expands in a boot file name.
pub(crate) fn with_mac(url: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}mac={value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_url_appends_the_mac() {
        let mac = Mac([0x52, 0x54, 0, 0xab, 0xcd, 0xef]);
        assert_eq!(
            script_url("http://10.0.0.1/boot.ipxe", &mac),
            "http://10.0.0.1/boot.ipxe?mac=52:54:00:ab:cd:ef"
        );
        assert_eq!(
            script_url("http://h/b?x=1", &mac),
            "http://h/b?x=1&mac=52:54:00:ab:cd:ef"
        );
    }
}
