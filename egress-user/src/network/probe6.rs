//! Duplicate address detection for EGRESS_SOURCE's IPv6 address before it is claimed, the
//! IPv6 twin of the ARP probe ([`crate::network::probe`]): neighbour solicitations for the
//! address from the unspecified address (RFC 4862 5.4: no neighbour learns anything from
//! them) to its solicited-node multicast group; a host that holds the address answers with
//! an advertisement to all nodes, and one that is probing for it too sends the same kind
//! of solicitation. The timing is the ARP probe's ([`Probe`]): 250 ms, not RFC 4862's
//! second, for the same reason (a router replacing a failed one must be up at once).

use std::{io, net::Ipv6Addr, os::fd::AsRawFd as _, time::Duration};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

use crate::network::probe::{Holder, Probe};

const NEIGHBOR_SOLICITATION: u8 = 135;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
const ETH_P_IPV6: u16 = libc::ETH_P_IPV6 as u16;

/// The solicited-node multicast address of `ip` (RFC 4291 2.7.1) and its Ethernet group.
fn solicited_node(ip: Ipv6Addr) -> (Ipv6Addr, [u8; 6]) {
    let o = ip.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    );
    let g = group.octets();
    (group, [0x33, 0x33, g[12], g[13], g[14], g[15]])
}

/// The probe: a neighbour solicitation for `ip` from `::` and `mac`, hop limit 255.
fn solicitation(mac: [u8; 6], ip: Ipv6Addr) -> Vec<u8> {
    let (group, group_mac) = solicited_node(ip);
    // No source link-layer option: not allowed from the unspecified address.
    let builder = PacketBuilder::ethernet2(mac, group_mac)
        .ipv6(Ipv6Addr::UNSPECIFIED.octets(), group.octets(), 255)
        .icmpv6_raw(NEIGHBOR_SOLICITATION, 0, [0; 4]);
    let mut frame = Vec::with_capacity(builder.size(16));
    builder
        .write(&mut frame, &ip.octets())
        .expect("a Vec takes any frame");
    frame
}

/// Whether a frame another host sent claims `ip`: an advertisement for it, or a probe
/// for it (a solicitation from `::`) that is not ours.
fn claims(frame: &[u8], ip: Ipv6Addr, ours: [u8; 6]) -> Option<Holder> {
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(NetSlice::Ipv6(ipv6)) = &packet.net else {
        return None;
    };
    let Some(TransportSlice::Icmpv6(icmp)) = &packet.transport else {
        return None;
    };
    let mac: [u8; 6] = frame.get(6..12)?.try_into().ok()?;
    let header = icmp.slice();
    let (kind, target) = (*header.first()?, header.get(8..24)?);
    // Neighbour discovery comes from the link only (RFC 4861 7.1).
    if ipv6.header().hop_limit() != 255 || target != ip.octets() {
        return None;
    }
    let other_probe = kind == NEIGHBOR_SOLICITATION
        && ipv6.header().source_addr().is_unspecified()
        && mac != ours;
    (kind == NEIGHBOR_ADVERTISEMENT || other_probe).then_some(Holder { mac })
}

/// Probes for `ip` on interface `ifindex` (which must be up) from `mac`; returns the first
/// other host that claims it. Blocking; run it off the async runtime.
pub fn probe6(ifindex: u32, mac: [u8; 6], ip: Ipv6Addr, how: Probe) -> io::Result<Option<Holder>> {
    let socket = Socket::bind(ifindex)?;
    // The answers go to all nodes, other probes to the solicited-node group: both joined
    // on the interface for the probe's length (it may have no IPv6 yet).
    socket.join([0x33, 0x33, 0, 0, 0, 1])?;
    socket.join(solicited_node(ip).1)?;
    let request = solicitation(mac, ip);
    for n in 0..how.probes {
        socket.send(&request)?;
        let listen = if n + 1 == how.probes {
            how.wait
        } else {
            how.interval
        };
        let deadline = std::time::Instant::now() + listen;
        let mut buf = [0u8; 256];
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let Some(len) = socket.recv(&mut buf, left)? else {
                break;
            };
            if let Some(holder) = claims(&buf[..len], ip, mac) {
                return Ok(Some(holder));
            }
        }
    }
    Ok(None)
}

/// An AF_PACKET socket for IPv6 frames on one interface.
struct Socket {
    fd: std::os::fd::OwnedFd,
    ifindex: u32,
}

impl Socket {
    fn bind(ifindex: u32) -> io::Result<Self> {
        // SAFETY: plain syscall; the fd is owned right after.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_IPV6.to_be()),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        let addr = Self::addr(ifindex);
        // SAFETY: a valid sockaddr_ll of the size given.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if bound < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd, ifindex })
    }

    fn addr(ifindex: u32) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data; zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_IPV6.to_be();
        addr.sll_ifindex = ifindex as i32;
        addr
    }

    /// Receives the Ethernet group `mac` on the interface while the socket lives.
    fn join(&self, mac: [u8; 6]) -> io::Result<()> {
        // SAFETY: packet_mreq is plain data; zero is a valid value.
        let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mreq.mr_ifindex = self.ifindex as i32;
        mreq.mr_type = libc::PACKET_MR_MULTICAST as u16;
        mreq.mr_alen = 6;
        mreq.mr_address[..6].copy_from_slice(&mac);
        // SAFETY: a valid socket and option of the size given.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                (&raw const mreq).cast(),
                size_of::<libc::packet_mreq>() as u32,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        let addr = Self::addr(self.ifindex);
        // SAFETY: a valid buffer and sockaddr_ll.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The length of the next frame another host sent (ours, seen going out, are
    /// skipped), or None after `timeout`.
    fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else {
                return Ok(None);
            };
            let mut poll = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&raw mut poll, 1, ms) };
            if ready < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if ready == 0 {
                return Ok(None);
            }
            // SAFETY: sockaddr_ll is plain data; zero is a valid value.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: a valid buffer and address storage of the sizes given.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&raw mut from).cast(),
                    &raw mut len,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if from.sll_pkttype != libc::PACKET_OUTGOING {
                return Ok(Some(n as usize));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertisements_and_other_probes_claim_the_address() {
        let ip: Ipv6Addr = "2001:db8:e::100".parse().unwrap();
        let (group, group_mac) = solicited_node(ip);
        assert_eq!(group.to_string(), "ff02::1:ff00:100");
        assert_eq!(group_mac, [0x33, 0x33, 0xff, 0, 0x01, 0]);
        let ours = [2, 0, 0, 0, 0, 1];
        let theirs = [2, 0, 0, 0, 0, 9];
        // Our own probe, seen again: not a claim; another host's: a claim.
        assert_eq!(claims(&solicitation(ours, ip), ip, ours), None);
        assert_eq!(
            claims(&solicitation(theirs, ip), ip, ours),
            Some(Holder { mac: theirs })
        );
        // A probe for another address claims nothing.
        let other: Ipv6Addr = "2001:db8:e::7".parse().unwrap();
        assert_eq!(claims(&solicitation(theirs, other), ip, ours), None);
        // An advertisement (what the kernel of a holder answers) claims it.
        let na = {
            let builder = PacketBuilder::ethernet2(theirs, [0x33, 0x33, 0, 0, 0, 1])
                .ipv6(
                    ip.octets(),
                    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets(),
                    255,
                )
                .icmpv6_raw(NEIGHBOR_ADVERTISEMENT, 0, [0x20, 0, 0, 0]);
            let mut frame = Vec::new();
            builder.write(&mut frame, &ip.octets()).unwrap();
            frame
        };
        assert_eq!(claims(&na, ip, ours), Some(Holder { mac: theirs }));
        // With a hop limit below 255 it was routed: not from this link, not a claim.
        let mut routed = na.clone();
        routed[14 + 7] = 64;
        assert_eq!(claims(&routed, ip, ours), None);
    }
}
