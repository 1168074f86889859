//! Announcing EGRESS_SOURCE with gratuitous ARP, as OpenShift's router does with
//! `arping -A` and `arping -U`.

use std::{io, net::Ipv4Addr, time::Duration};

use etherparse::{ArpEthIpv4Packet, ArpOperation};

use crate::network::error::Error;

/// Announces `ip` at `mac` on interface `ifindex` (named `iface` in errors) so the upstream
/// switch and neighbours learn it at once, e.g. after a failover: an unsolicited ARP reply
/// now and a gratuitous ARP request `request_after` later, as OpenShift's router does with
/// `arping -A` and `arping -U`.
pub async fn announce(
    iface: &str,
    ifindex: u32,
    mac: [u8; 6],
    ip: Ipv4Addr,
    request_after: Duration,
) -> Result<(), Error> {
    let arp_error = |source| Error::Arp {
        iface: iface.to_owned(),
        source,
    };
    send_gratuitous_arp(ifindex, mac, ip, ArpOperation::REPLY).map_err(arp_error)?;
    tokio::time::sleep(request_after).await;
    send_gratuitous_arp(ifindex, mac, ip, ArpOperation::REQUEST).map_err(arp_error)
}

/// Sends one broadcast ARP packet whose sender and target are both `ip`.
fn send_gratuitous_arp(
    ifindex: u32,
    mac: [u8; 6],
    ip: Ipv4Addr,
    operation: ArpOperation,
) -> io::Result<()> {
    let arp = ArpEthIpv4Packet {
        operation,
        sender_mac: mac,
        sender_ipv4: ip.octets(),
        // A reply names our own MAC as target; a gratuitous request leaves it zero (RFC 5227).
        target_mac: if operation == ArpOperation::REPLY {
            mac
        } else {
            [0; 6]
        },
        target_ipv4: ip.octets(),
    }
    .to_bytes();
    let proto = (libc::ETH_P_ARP as u16).to_be();
    // SOCK_DGRAM: the kernel builds the Ethernet header from the sockaddr_ll below.
    // SAFETY: plain syscalls with valid arguments; the fd is closed on every path.
    unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            i32::from(proto),
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        let sent = libc::sendto(
            fd,
            arp.as_ptr().cast(),
            arp.len(),
            0,
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        let result = if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        };
        libc::close(fd);
        result
    }
}
