//! An AF_PACKET socket on one interface, for the frames the router sends and hears itself
//! (gratuitous ARP, neighbour advertisements, the ARP probe and duplicate address
//! detection): bound to one EtherType, raw (the frame carries its Ethernet header) or
//! datagram (the kernel writes it from the destination given).

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Duration,
};

/// How frames are given to and taken from the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// With their Ethernet header (`SOCK_RAW`).
    Raw,
    /// Without: the kernel builds it (`SOCK_DGRAM`).
    Datagram,
}

/// An AF_PACKET socket bound to one interface and EtherType.
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
    ethertype: u16,
}

impl PacketSocket {
    pub fn bind(ifindex: u32, ethertype: u16, framing: Framing) -> io::Result<Self> {
        let kind = match framing {
            Framing::Raw => libc::SOCK_RAW,
            Framing::Datagram => libc::SOCK_DGRAM,
        };
        // SAFETY: plain syscall; the fd is owned right after.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                kind | libc::SOCK_CLOEXEC,
                i32::from(ethertype.to_be()),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let socket = Self {
            fd,
            ifindex,
            ethertype,
        };
        let addr = socket.addr(None);
        // SAFETY: a valid sockaddr_ll of the size given.
        let bound = unsafe {
            libc::bind(
                socket.fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if bound < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(socket)
    }

    /// The socket's address on its interface, with destination `mac` (datagram framing).
    fn addr(&self, mac: Option<[u8; 6]>) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data; zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = self.ethertype.to_be();
        addr.sll_ifindex = self.ifindex as i32;
        if let Some(mac) = mac {
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(&mac);
        }
        addr
    }

    /// Receives the Ethernet group `mac` on the interface while the socket lives.
    pub fn join(&self, mac: [u8; 6]) -> io::Result<()> {
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

    /// Sends `frame` (to `to` with datagram framing; raw frames name their destination).
    pub fn send(&self, frame: &[u8], to: Option<[u8; 6]>) -> io::Result<()> {
        let addr = self.addr(to);
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
    /// skipped), read into `buf`, or None after `timeout`.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
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
