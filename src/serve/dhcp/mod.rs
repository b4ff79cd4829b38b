//! The embedded DHCPv4 server: full DHCP or PXE proxyDHCP, with the boot information of the
//! PXE chain (DHCP → TFTP → HTTP).
//!
//! Standards followed:
//! - [RFC 2131](https://www.rfc-editor.org/rfc/rfc2131) (DHCP): the client states of §4.3,
//!   reply destinations of §4.1, relay agents (`giaddr`).
//! - [RFC 2132](https://www.rfc-editor.org/rfc/rfc2132) (options 1, 3, 6, 28, 51, 53, 54,
//!   56, 58, 59, 60, 61, 66, 67).
//! - [RFC 4578](https://www.rfc-editor.org/rfc/rfc4578) (PXE options 93, 94, 97).
//! - [RFC 3004](https://www.rfc-editor.org/rfc/rfc3004) (user class 77, which iPXE sets to
//!   `iPXE`), [RFC 6842](https://www.rfc-editor.org/rfc/rfc6842) (client-id echo),
//!   [RFC 3046](https://www.rfc-editor.org/rfc/rfc3046) (relay agent information echo).
//! - Intel's [PXE specification 2.1](https://web.archive.org/web/2011/http://download.intel.com/design/archives/wfm/downloads/pxespec.pdf)
//!   (proxyDHCP on ports 67 and 4011, vendor option 43 discovery control).
//!
//! Leases are keyed by the client's hardware address (`chaddr`), not by option 61: the
//! inventory knows devices by MAC. Fixed addresses come from the inventory; they are never
//! handed to another MAC, and a MAC with a fixed address gets only that one.
//!
//! Layout: `config` holds the settings, `packet` the safe codec over `dhcproto`,
//! `pxe` the boot-file choice, `leases` the persisted lease table, `engine` the pure
//! decision core (bytes and state in, reply out) and `server` the tokio socket layer.
//!
//! How replies reach a client: relayed requests are answered to the relay (`giaddr`, port
//! 67); clients with an address (`ciaddr`) get a unicast; everything else, including
//! clients without an address that did not set the broadcast flag, gets a broadcast to
//! `255.255.255.255:68`. With `interface` set, the socket is bound to that interface with
//! `SO_BINDTODEVICE`, so the broadcast leaves through it without any route. RFC 2131
//! also allows a unicast to `yiaddr` at the link layer, which needs an ARP entry the
//! client cannot answer for yet (a raw socket or an `SIOCSARP` entry); this server does not
//! do that, every client accepts broadcasts.

mod config;
mod engine;
pub mod export;
pub mod kea_ha;
mod leases;
mod packet;
mod pxe;
mod server;
pub(crate) mod site;
mod stats;

pub use config::{ConfigError, DhcpConfig, Mode, Pool, default_boot_files};
pub use engine::{Engine, Listener, Reply};
pub use leases::{Lease, LeaseState, LeaseTable};
pub use server::{DhcpServer, ReplyHook};
pub use stats::{DhcpStats, StatsSnapshot};
