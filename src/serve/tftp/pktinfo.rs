//! Which local address a request was sent to, for a server listening on `0.0.0.0` or `::`.
//!
//! A transfer must answer from the address the client talked to: PXE ROMs drop packets from
//! any other. With the listening socket bound to the unspecified address, the kernel tells
//! that address only through `IP_PKTINFO` / `IPV6_PKTINFO` control messages (as tftpd-hpa
//! reads it). Linux only; elsewhere the destination stays unknown and transfer sockets bind
//! to the unspecified address.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;

/// Asks the kernel to report each datagram's destination address on `socket`.
pub(super) fn enable(socket: &UdpSocket) -> io::Result<()> {
    imp::enable(socket)
}

/// Receives one datagram: its length, sender, and the local address it was sent to (when
/// the kernel reported it).
pub(super) async fn recv(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    imp::recv(socket, buf).await
}

/// The address a transfer socket binds to: the listening address, or when that is
/// unspecified the request's unicast destination.
pub(super) fn transfer_ip(listen: IpAddr, destination: Option<IpAddr>) -> IpAddr {
    if !listen.is_unspecified() {
        return listen;
    }
    match destination {
        Some(IpAddr::V4(d)) if !d.is_unspecified() && !d.is_multicast() && !d.is_broadcast() => {
            // A v4 request on a v4 socket; on a dual-stack v6 socket the kernel reports
            // v6 (v4-mapped) addresses instead.
            if listen.is_ipv4() {
                IpAddr::V4(d)
            } else {
                IpAddr::V6(d.to_ipv6_mapped())
            }
        }
        Some(IpAddr::V6(d)) if !d.is_unspecified() && !d.is_multicast() && listen.is_ipv6() => {
            IpAddr::V6(d)
        }
        _ => listen,
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::mem::{MaybeUninit, size_of, size_of_val};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd;

    use tokio::io::Interest;
    use tokio::net::UdpSocket;

    /// Asks the kernel for each datagram's destination address (`IP_PKTINFO`,
    /// `IPV6_RECVPKTINFO`).
    pub(super) fn enable(socket: &UdpSocket) -> io::Result<()> {
        let on: libc::c_int = 1;
        let (level, name) = match socket.local_addr()? {
            SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_PKTINFO),
            SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
        };
        // SAFETY: a valid fd, a pointer to a c_int option value and its exact size.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Receives one datagram: its length, sender, and the address it was sent to.
    pub(super) async fn recv(
        socket: &UdpSocket,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
        socket
            .async_io(Interest::READABLE, || recvmsg(socket.as_raw_fd(), buf))
            .await
    }

    /// One non-blocking `recvmsg` (the socket is non-blocking: no data is `WouldBlock`).
    fn recvmsg(
        fd: std::os::fd::RawFd,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
        let mut name = MaybeUninit::<libc::sockaddr_storage>::zeroed();
        // u64s keep the control buffer aligned for cmsghdr.
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; all-zero is a valid (empty) value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = name.as_mut_ptr().cast();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control) as _;
        // SAFETY: msg points at live buffers of the stated sizes for the whole call.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: recvmsg filled at most msg_namelen bytes of the zeroed storage.
        let name = unsafe { name.assume_init() };
        let from = sockaddr(&name)?;
        let mut destination = None;
        // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, bounded by
        // msg_controllen; data is read unaligned into plain structs.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                let c = &*cmsg;
                if c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_PKTINFO {
                    let info =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::in_pktinfo>());
                    destination = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        info.ipi_addr.s_addr,
                    ))));
                } else if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_PKTINFO {
                    let info =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::in6_pktinfo>());
                    destination = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        Ok((n as usize, from, destination))
    }

    fn sockaddr(s: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
        match libc::c_int::from(s.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in.
                let a =
                    unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                Ok(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the storage holds a sockaddr_in6.
                let a =
                    unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                Ok(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "datagram from an unknown address family",
            )),
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;
    use std::net::{IpAddr, SocketAddr};

    use tokio::net::UdpSocket;

    /// Nothing to enable: the destination address is not known here.
    pub(super) fn enable(_socket: &UdpSocket) -> io::Result<()> {
        Ok(())
    }

    /// Receives one datagram: its length and sender (the destination is not known here).
    pub(super) async fn recv(
        socket: &UdpSocket,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
        let (n, from) = socket.recv_from(buf).await?;
        Ok((n, from, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn a_specific_listen_address_always_wins() {
        let l: IpAddr = "192.168.0.2".parse().unwrap();
        assert_eq!(transfer_ip(l, Some("10.0.0.1".parse().unwrap())), l);
        assert_eq!(transfer_ip(l, None), l);
    }

    #[test]
    fn unspecified_listen_uses_the_unicast_destination() {
        let any4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let any6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        let d: IpAddr = "192.168.0.2".parse().unwrap();
        assert_eq!(transfer_ip(any4, Some(d)), d);
        assert_eq!(transfer_ip(any4, None), any4);
        assert_eq!(
            transfer_ip(any4, Some("255.255.255.255".parse().unwrap())),
            any4
        );
        assert_eq!(transfer_ip(any4, Some("224.0.0.1".parse().unwrap())), any4);
        assert_eq!(
            transfer_ip(any6, Some(d)),
            "::ffff:192.168.0.2".parse::<IpAddr>().unwrap()
        );
        let d6: IpAddr = "fd00::2".parse().unwrap();
        assert_eq!(transfer_ip(any6, Some(d6)), d6);
        assert_eq!(transfer_ip(any4, Some(d6)), any4);
    }

    #[tokio::test]
    async fn reports_the_destination_on_an_unspecified_socket() {
        // Bound to 0.0.0.0 for the test; the only datagram goes to 127.0.0.1.
        let server = UdpSocket::bind("0.0.0.0:0").await.unwrap();
        enable(&server).unwrap();
        let port = server.local_addr().unwrap().port();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"hello", ("127.0.0.1", port)).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from, dst) =
            tokio::time::timeout(std::time::Duration::from_secs(5), recv(&server, &mut buf))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(from, client.local_addr().unwrap());
        assert_eq!(dst, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
}
