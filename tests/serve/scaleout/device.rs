//! A scripted device of the scale-out lab: the PXE chain as firmware and iPXE walk it, over
//! real sockets in a client namespace. DHCP twice (firmware, then iPXE): DISCOVER, collect
//! the Kea offer (an address) and the proxyDHCP offers of the `ovl serve --dhcp proxy` nodes
//! (boot information, no address), REQUEST the address from the Kea peer that offered it;
//! then, with the leased address added to the namespace's interface (a second device given
//! the same address fails here), TFTP of the iPXE binary from the node the firmware's
//! answer named, HTTP of the boot script from the node iPXE's answer named, and the
//! script's kernel, initramfs and apkovl (`${next-server}` standing for that node). Any
//! failure ends the attempt; like a device whose script gives up (`[boot] on_failure =
//! "reboot"`), the device then starts over with DHCP, until its deadline.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dhcproto::v4::{Architecture, DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};

/// The client namespaces' interface.
pub const CLIENT_IF: &str = "eth0";

/// One simulated device.
#[derive(Debug, Clone)]
pub struct Device {
    /// Its MAC.
    pub mac: [u8; 6],
    /// Its reservation, if the inventory gives it one.
    pub fixed: Option<Ipv4Addr>,
}

impl Device {
    /// `aa:bb:…`, as iPXE's `${net0/mac}` expands.
    pub fn mac_text(&self) -> String {
        self.mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// What a completed boot used.
#[derive(Debug, Clone)]
pub struct Booted {
    /// The leased address.
    pub lease: Ipv4Addr,
    /// The Kea peer that acknowledged it (server identifier).
    pub kea: Ipv4Addr,
    /// The node the firmware fetched iPXE from (TFTP).
    pub tftp_node: Ipv4Addr,
    /// The node iPXE fetched the script, kernel, initramfs and apkovl from (HTTP).
    pub http_node: Ipv4Addr,
    /// The proxy nodes that answered the firmware's DISCOVER.
    pub answering_nodes: Vec<Ipv4Addr>,
    /// Attempts it took (1: no restart).
    pub attempts: u32,
    /// When it completed.
    pub done: Instant,
}

/// Where the device compares what it downloaded: the site folder.
#[derive(Debug, Clone)]
pub struct Files {
    /// The site folder.
    pub site: PathBuf,
    /// Scratch folder for downloads.
    pub scratch: PathBuf,
    /// How long to keep listening for more proxyDHCP offers once one came (to record every
    /// node that answers; the device itself takes the first).
    pub linger: Duration,
}

/// Boots `dev` until it completes or `deadline` passes; the failures of the attempts that
/// did not complete are returned with the error.
pub fn boot(dev: &Device, files: &Files, deadline: Instant) -> Result<Booted, Vec<String>> {
    let mut errors = Vec::new();
    let t0 = Instant::now();
    for attempt in 1.. {
        match attempt_once(dev, files, t0) {
            Ok(mut b) => {
                b.attempts = attempt;
                return Ok(b);
            }
            Err(e) => errors.push(format!("attempt {attempt}: {e}")),
        }
        if Instant::now() + Duration::from_secs(1) >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(errors)
}

/// One run of the chain, DHCP to apkovl.
fn attempt_once(dev: &Device, files: &Files, t0: Instant) -> Result<Booted, String> {
    let fw = dhcp(dev, false, files.linger, t0)?;
    if let Some(fixed) = dev.fixed
        && fw.lease != fixed
    {
        return Err(format!(
            "got {} instead of the reservation {fixed}",
            fw.lease
        ));
    }
    let _addr = LeaseAddr::add(fw.lease)?;
    let tftp_node = fw.node;
    let kpxe = fetch(
        &format!("tftp://{tftp_node}/{}", fw.boot_file),
        fw.lease,
        files,
    )?;
    same_as_site(&kpxe, &files.site.join(&fw.boot_file))?;

    let ipxe = dhcp(dev, true, files.linger, t0)?;
    if ipxe.lease != fw.lease {
        return Err(format!("iPXE got {} after {}", ipxe.lease, fw.lease));
    }
    let node = ipxe.node.to_string();
    let expand = |s: &str| {
        s.replace("${next-server}", &node)
            .replace("${net0/mac}", &dev.mac_text())
    };
    let script_path = fetch(&expand(&ipxe.boot_file), fw.lease, files)?;
    let script = std::fs::read_to_string(&script_path).map_err(|e| format!("script: {e}"))?;
    let urls = script_urls(&script)?;
    for url in urls {
        let url = expand(&url);
        let got = fetch(&url, fw.lease, files)?;
        let rel = url
            .split_once(&format!("{node}/"))
            .map(|(_, r)| r.to_string())
            .ok_or_else(|| format!("{url} is not on the node {node}"))?;
        same_as_site(&got, &files.site.join(rel))?;
    }
    Ok(Booted {
        lease: fw.lease,
        kea: ipxe.kea,
        tftp_node,
        http_node: ipxe.node,
        answering_nodes: fw.answering,
        attempts: 0,
        done: Instant::now(),
    })
}

/// The kernel, initramfs and apkovl URLs of a boot script.
fn script_urls(script: &str) -> Result<Vec<String>, String> {
    let mut urls = Vec::new();
    for line in script.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("kernel") => {
                urls.extend(words.next().map(String::from));
                urls.extend(
                    line.split_whitespace()
                        .filter_map(|w| w.strip_prefix("apkovl="))
                        .map(String::from),
                );
            }
            Some("initrd") => urls.extend(words.next().map(String::from)),
            _ => {}
        }
    }
    if urls.len() < 3 {
        return Err(format!(
            "the script names {urls:?}, not kernel, apkovl and initrd"
        ));
    }
    Ok(urls)
}

/// The downloaded file must equal the site's.
fn same_as_site(got: &Path, want: &Path) -> Result<(), String> {
    let a = std::fs::read(got).map_err(|e| format!("{}: {e}", got.display()))?;
    let b = std::fs::read(want).map_err(|e| format!("{}: {e}", want.display()))?;
    if a != b {
        return Err(format!(
            "{} ({} bytes) differs from {} ({} bytes)",
            got.display(),
            a.len(),
            want.display(),
            b.len()
        ));
    }
    Ok(())
}

/// curl, from the leased address, into a scratch file.
fn fetch(url: &str, from: Ipv4Addr, files: &Files) -> Result<PathBuf, String> {
    let out = files.scratch.join(format!(
        "{from}-{}",
        url.rsplit('/')
            .next()
            .unwrap_or("x")
            .replace(['?', '&', '='], "_")
    ));
    let st = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "--max-time",
            "20",
            "--connect-timeout",
            "3",
        ])
        .args([
            "--tftp-blksize",
            "1468",
            "--interface",
            &from.to_string(),
            "-o",
        ])
        .arg(&out)
        .arg(url)
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    if !st.status.success() {
        return Err(format!(
            "curl {url}: {}",
            String::from_utf8_lossy(&st.stderr).trim()
        ));
    }
    Ok(out)
}

/// The leased address on the client interface while the device uses it.
struct LeaseAddr(Ipv4Addr);

impl LeaseAddr {
    fn add(ip: Ipv4Addr) -> Result<LeaseAddr, String> {
        let out = Command::new("ip")
            .args(["addr", "add", &format!("{ip}/24"), "dev", CLIENT_IF])
            .output()
            .map_err(|e| format!("ip: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ip addr add {ip}: {} (another device holds this address)",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(LeaseAddr(ip))
    }
}

impl Drop for LeaseAddr {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["addr", "del", &format!("{}/24", self.0), "dev", CLIENT_IF])
            .output();
    }
}

/// What one DHCP exchange gave.
struct Dhcp {
    lease: Ipv4Addr,
    kea: Ipv4Addr,
    node: Ipv4Addr,
    boot_file: String,
    answering: Vec<Ipv4Addr>,
}

/// The options a PXE firmware (BIOS) or iPXE (x86-64 UEFI, user class `iPXE`) sends.
fn client_opts(ipxe: bool) -> Vec<DhcpOption> {
    let (class, arch): (&[u8], u16) = if ipxe {
        (b"PXEClient:Arch:00007:UNDI:003010", 7)
    } else {
        (b"PXEClient:Arch:00000:UNDI:002001", 0)
    };
    let mut opts = vec![
        DhcpOption::ClassIdentifier(class.to_vec()),
        DhcpOption::ClientSystemArchitecture(Architecture::from(arch)),
        DhcpOption::ClientMachineIdentifier(vec![0, 0x11, 0x22, 0x33]),
    ];
    if ipxe {
        opts.push(DhcpOption::UserClass(b"iPXE".to_vec()));
    }
    opts
}

fn message(dev: &Device, xid: u32, kind: MessageType, ipxe: bool, t0: Instant) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest)
        .set_xid(xid)
        .set_secs(u16::try_from(t0.elapsed().as_secs()).unwrap_or(u16::MAX))
        .set_chaddr(&dev.mac)
        .set_flags(Flags::default().set_broadcast());
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    for o in client_opts(ipxe) {
        m.opts_mut().insert(o);
    }
    m
}

fn socket() -> Result<UdpSocket, String> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(|e| e.to_string())?;
    sock.set_reuse_address(true).map_err(|e| e.to_string())?;
    sock.set_broadcast(true).map_err(|e| e.to_string())?;
    sock.bind_device(Some(CLIENT_IF.as_bytes()))
        .map_err(|e| e.to_string())?;
    sock.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68).into())
        .map_err(|e| format!("bind :68: {e}"))?;
    Ok(sock.into())
}

/// Sends `msg` to the broadcast address and gathers the replies with its xid for `wait`
/// (less once `enough` says so).
fn exchange(
    sock: &UdpSocket,
    msg: &Message,
    wait: Duration,
    enough: impl Fn(&[Message]) -> bool,
) -> Result<Vec<Message>, String> {
    let bytes = msg.to_vec().map_err(|e| e.to_string())?;
    sock.send_to(&bytes, SocketAddrV4::new(Ipv4Addr::BROADCAST, 67))
        .map_err(|e| format!("send: {e}"))?;
    let deadline = Instant::now() + wait;
    let mut replies = Vec::new();
    let mut buf = [0u8; 1500];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let _ = sock.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        let Ok(len) = sock.recv(&mut buf) else { break };
        let Ok(m) = Message::from_bytes(&buf[..len]) else {
            continue;
        };
        if m.xid() == msg.xid()
            && m.opcode() == Opcode::BootReply
            && m.chaddr().get(..6) == msg.chaddr().get(..6)
        {
            replies.push(m);
            if enough(&replies) {
                break;
            }
        }
    }
    Ok(replies)
}

fn server_id(m: &Message) -> Option<Ipv4Addr> {
    match m.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

fn file(m: &Message) -> String {
    String::from_utf8_lossy(m.fname().unwrap_or_default())
        .trim_end_matches('\0')
        .to_string()
}

/// An address offer (Kea) and at least one boot offer (a node) seen.
fn complete(replies: &[Message]) -> bool {
    let address = replies.iter().any(|m| !m.yiaddr().is_unspecified());
    let boot = replies
        .iter()
        .any(|m| m.yiaddr().is_unspecified() && !file(m).is_empty());
    address && boot
}

/// DISCOVER (three tries) and REQUEST (three tries) with the options of the firmware or of
/// iPXE.
fn dhcp(dev: &Device, ipxe: bool, linger: Duration, t0: Instant) -> Result<Dhcp, String> {
    let sock = socket()?;
    let xid = rand_xid(dev);
    let mut discover = message(dev, xid, MessageType::Discover, ipxe, t0);
    let mut offers = Vec::new();
    for _ in 0..3 {
        discover.set_secs(u16::try_from(t0.elapsed().as_secs()).unwrap_or(u16::MAX));
        offers.extend(exchange(
            &sock,
            &discover,
            Duration::from_secs(2),
            complete,
        )?);
        if complete(&offers) {
            break;
        }
    }
    // Give the slower node a moment: the firmware takes the first, the test records both.
    offers.extend(exchange_more(&sock, xid, dev.mac, linger));
    let kea_offer = offers
        .iter()
        .find(|m| !m.yiaddr().is_unspecified())
        .ok_or_else(|| format!("no address offer ({} replies)", offers.len()))?;
    let boot = offers
        .iter()
        .find(|m| m.yiaddr().is_unspecified() && !file(m).is_empty())
        .ok_or("no proxyDHCP offer")?;
    let answering: Vec<Ipv4Addr> = offers
        .iter()
        .filter(|m| m.yiaddr().is_unspecified())
        .map(|m| m.siaddr())
        .collect();
    let kea = server_id(kea_offer).ok_or("Kea's offer has no server identifier")?;
    let offered = kea_offer.yiaddr();
    let mut request = message(dev, xid, MessageType::Request, ipxe, t0);
    request.opts_mut().insert(DhcpOption::ServerIdentifier(kea));
    request
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(offered));
    let is_ack =
        |m: &Message| m.opts().msg_type() == Some(MessageType::Ack) && server_id(m) == Some(kea);
    let is_answer = |ms: &[Message]| {
        ms.iter().any(|m| {
            server_id(m) == Some(kea)
                && matches!(
                    m.opts().msg_type(),
                    Some(MessageType::Ack | MessageType::Nak)
                )
        })
    };
    for _ in 0..3 {
        let replies = exchange(&sock, &request, Duration::from_secs(2), is_answer)?;
        if let Some(ack) = replies.iter().find(|m| is_ack(m)) {
            return Ok(Dhcp {
                lease: ack.yiaddr(),
                kea,
                node: boot.siaddr(),
                boot_file: file(boot),
                answering,
            });
        }
        if replies
            .iter()
            .any(|m| m.opts().msg_type() == Some(MessageType::Nak))
        {
            return Err(format!("NAK from {kea} for {offered}"));
        }
    }
    Err(format!("no ACK from {kea} for {offered}"))
}

/// Replies with `xid` arriving within `wait`, without sending anything.
fn exchange_more(sock: &UdpSocket, xid: u32, mac: [u8; 6], wait: Duration) -> Vec<Message> {
    let deadline = Instant::now() + wait;
    let mut replies = Vec::new();
    let mut buf = [0u8; 1500];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let _ = sock.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        let Ok(len) = sock.recv(&mut buf) else { break };
        if let Ok(m) = Message::from_bytes(&buf[..len])
            && m.xid() == xid
            && m.opcode() == Opcode::BootReply
            && m.chaddr().get(..6) == Some(&mac[..])
        {
            replies.push(m);
        }
    }
    replies
}

/// A transaction id that differs per device and per call.
fn rand_xid(dev: &Device) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u32::from_be_bytes([dev.mac[2], dev.mac[3], dev.mac[4], dev.mac[5]]) ^ nanos
}
