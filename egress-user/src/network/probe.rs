//! Address conflict detection before EGRESS_SOURCE is claimed (RFC 5227's ARP probe): a
//! request for the address with sender address 0.0.0.0, so that no neighbour learns
//! anything from it; any host that holds the address answers. Two routers with one
//! EGRESS_SOURCE on one segment (a failed-over pod whose predecessor still runs) would
//! split the replies between them.
//!
//! Timing: RFC 5227 waits up to 1 s, probes three times 1-2 s apart and waits 2 s more, for
//! about 7 s in all, sized for slow links and hosts. A router replacing a failed one must
//! be up in well under a second, and on a LAN a live host answers an ARP request in
//! microseconds to milliseconds: [`Probe::default`] sends three probes 50 ms apart and
//! listens for 150 ms after the last, 250 ms in all.

use std::{io, net::Ipv4Addr, os::fd::AsRawFd as _, time::Duration};

use etherparse::{ArpEthIpv4Packet, ArpOperation};

/// How long to probe.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    pub probes: u32,
    pub interval: Duration,
    /// Listening after the last probe.
    pub wait: Duration,
}

impl Default for Probe {
    fn default() -> Self {
        Self {
            probes: 3,
            interval: Duration::from_millis(50),
            wait: Duration::from_millis(150),
        }
    }
}

/// A host that answered for the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    pub mac: [u8; 6],
}

/// Probes for `ip` on interface `ifindex` (which must be up) from `mac`; returns the first
/// other host that claims it: one that answers, announces it, or probes for it too.
/// Blocking; run it off the async runtime.
pub fn probe(ifindex: u32, mac: [u8; 6], ip: Ipv4Addr, how: Probe) -> io::Result<Option<Holder>> {
    let socket = ArpSocket::bind(ifindex)?;
    let request = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: mac,
        sender_ipv4: [0; 4],
        target_mac: [0; 6],
        target_ipv4: ip.octets(),
    }
    .to_bytes();
    for n in 0..how.probes {
        socket.send_broadcast(&request)?;
        let listen = if n + 1 == how.probes {
            how.wait
        } else {
            how.interval
        };
        let deadline = std::time::Instant::now() + listen;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let Some(arp) = socket.recv(left)? else {
                break;
            };
            if claims(&arp, ip, mac) {
                return Ok(Some(Holder {
                    mac: arp.sender_mac,
                }));
            }
        }
    }
    Ok(None)
}

/// Asks "who has `target`?" from `mac` on interface `ifindex` (sender address
/// `sender`; 0.0.0.0 makes it a probe that teaches nobody anything), up to `tries` times
/// `wait` apart; returns the MAC that answered, if any. Blocking.
pub fn ask(
    ifindex: u32,
    mac: [u8; 6],
    sender: Ipv4Addr,
    target: Ipv4Addr,
    tries: u32,
    wait: Duration,
) -> io::Result<Option<[u8; 6]>> {
    let socket = ArpSocket::bind(ifindex)?;
    let request = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: mac,
        sender_ipv4: sender.octets(),
        target_mac: [0; 6],
        target_ipv4: target.octets(),
    }
    .to_bytes();
    for _ in 0..tries {
        socket.send_broadcast(&request)?;
        let deadline = std::time::Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let Some(arp) = socket.recv(left)? else {
                break;
            };
            if arp.operation == ArpOperation::REPLY && arp.sender_ipv4 == target.octets() {
                return Ok(Some(arp.sender_mac));
            }
        }
    }
    Ok(None)
}

/// Whether an ARP packet received from another host claims `ip`: a reply or an
/// announcement from it, or a probe for it that is not ours (RFC 5227 section 2.1.1).
fn claims(arp: &ArpEthIpv4Packet, ip: Ipv4Addr, ours: [u8; 6]) -> bool {
    let ip = ip.octets();
    let from_holder = arp.sender_ipv4 == ip;
    let other_probe = arp.operation == ArpOperation::REQUEST
        && arp.sender_ipv4 == [0; 4]
        && arp.target_ipv4 == ip
        && arp.sender_mac != ours;
    from_holder || other_probe
}

/// An AF_PACKET socket for ARP on one interface.
struct ArpSocket {
    fd: std::os::fd::OwnedFd,
    ifindex: u32,
}

const ETH_P_ARP: u16 = libc::ETH_P_ARP as u16;

impl ArpSocket {
    fn bind(ifindex: u32) -> io::Result<Self> {
        // SAFETY: plain syscall; the fd is owned right after.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ARP.to_be()),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        let addr = Self::addr(ifindex, [0; 6]);
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

    fn addr(ifindex: u32, mac: [u8; 6]) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data; zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ARP.to_be();
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&mac);
        addr
    }

    fn send_broadcast(&self, arp: &[u8]) -> io::Result<()> {
        let addr = Self::addr(self.ifindex, [0xff; 6]);
        // SAFETY: a valid buffer and sockaddr_ll.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                arp.as_ptr().cast(),
                arp.len(),
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

    /// The next ARP packet another host sent (our own, seen going out, are skipped), or
    /// None after `timeout`.
    fn recv(&self, timeout: Duration) -> io::Result<Option<ArpEthIpv4Packet>> {
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
            let mut buf = [0u8; 128];
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
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let parsed = etherparse::ArpPacket::from_slice(&buf[..n as usize])
                .ok()
                .and_then(|packet| packet.try_eth_ipv4().ok());
            if let Some(arp) = parsed {
                return Ok(Some(arp));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arp(operation: ArpOperation, sender: [u8; 4], target: [u8; 4], mac: u8) -> ArpEthIpv4Packet {
        ArpEthIpv4Packet {
            operation,
            sender_mac: [2, 0, 0, 0, 0, mac],
            sender_ipv4: sender,
            target_mac: [0; 6],
            target_ipv4: target,
        }
    }

    #[test]
    fn replies_announcements_and_other_probes_claim_the_address() {
        let ip = Ipv4Addr::new(198, 51, 100, 100);
        let ours = [2, 0, 0, 0, 0, 1];
        let o = ip.octets();
        let other = [198, 51, 100, 7];
        assert!(claims(&arp(ArpOperation::REPLY, o, [0; 4], 9), ip, ours));
        assert!(
            claims(&arp(ArpOperation::REQUEST, o, o, 9), ip, ours),
            "announcement"
        );
        assert!(
            claims(&arp(ArpOperation::REQUEST, [0; 4], o, 9), ip, ours),
            "a probe"
        );
        assert!(
            !claims(&arp(ArpOperation::REQUEST, [0; 4], o, 1), ip, ours),
            "our probe"
        );
        assert!(
            !claims(&arp(ArpOperation::REQUEST, other, o, 9), ip, ours),
            "a question"
        );
        assert!(!claims(
            &arp(ArpOperation::REPLY, other, [0; 4], 9),
            ip,
            ours
        ));
    }
}
