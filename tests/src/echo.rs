//! A client of the lab's echo server (`peer_server.py echo`) through the router: one TCP
//! connection that stays open, each line answered with what the server saw.

use std::{
    io::{self, BufRead as _, BufReader, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
    time::Duration,
};

use crate::lab::{Lab, ROUTER_POD_IP};

/// What the echo server answered to one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The source address and port the server saw (EGRESS_SOURCE and the translated port).
    pub peer: String,
    pub peer_port: String,
    /// The server address the connection reached.
    pub local: String,
}

/// An open connection from the client namespace to the router pod's `port`.
pub struct Echo {
    reader: BufReader<TcpStream>,
    /// The client's own port.
    pub port: u16,
}

impl Echo {
    pub fn connect(lab: &Lab, port: u16) -> io::Result<Self> {
        Self::connect_to(lab, ROUTER_POD_IP.into(), port)
    }

    /// [`Echo::connect`] to another address of the router pod (its IPv6 one).
    pub fn connect_to(lab: &Lab, ip: IpAddr, port: u16) -> io::Result<Self> {
        Self::connect_from(&lab.client, ip, port)
    }

    /// [`Echo::connect_to`] from any namespace's client (another lab's).
    pub fn connect_from(client: &crate::netns::Netns, ip: IpAddr, port: u16) -> io::Result<Self> {
        let addr = SocketAddr::from((ip, port));
        let stream = client
            .enter(|| TcpStream::connect_timeout(&addr, Duration::from_secs(3)))
            .map_err(io::Error::other)??;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Self {
            port: stream.local_addr()?.port(),
            reader: BufReader::new(stream),
        })
    }

    /// Sends `word` and reads the answer, which must echo it.
    pub fn ask(&mut self, word: &str) -> io::Result<Seen> {
        self.reader
            .get_mut()
            .write_all(format!("{word}\n").as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[..] {
            [peer, peer_port, local, echoed] if echoed == word => Ok(Seen {
                peer: peer.to_owned(),
                peer_port: peer_port.to_owned(),
                local: local.to_owned(),
            }),
            _ => Err(io::Error::other(format!("unexpected answer {line:?}"))),
        }
    }

    /// Ends the connection with a RST (SO_LINGER 0), as a crashing client would.
    pub fn reset(self) {
        let stream = self.reader.into_inner();
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on an open socket with a linger struct.
        unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                std::ptr::from_ref(&linger).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }
}
