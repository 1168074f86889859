//! What the proxy modes share: the pod's resolver, name resolution with TTLs, and outbound
//! TCP connections that leave from EGRESS_SOURCE.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd as _,
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, Result};
use hickory_resolver::{
    Resolver, TokioResolver, name_server::TokioConnectionProvider, system_conf::parse_resolv_conf,
};
use tokio::{
    net::{TcpSocket, TcpStream},
    time::Instant,
};

/// The resolver of the pod: the nameservers, search list and options of `resolv_conf`
/// (normally `/etc/resolv.conf`, which the kubelet writes), with a TTL-respecting cache.
pub fn resolver(resolv_conf: &Path) -> Result<TokioResolver> {
    let text = std::fs::read(resolv_conf).with_context(|| {
        format!(
            "reading the resolver configuration {}",
            resolv_conf.display()
        )
    })?;
    let (config, options) =
        parse_resolv_conf(text).with_context(|| format!("parsing {}", resolv_conf.display()))?;
    Ok(
        Resolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(options)
            .build(),
    )
}

/// `host` as an absolute name: with its trailing dot, so the resolver never tries it below
/// the pod's search domains (with Kubernetes' `ndots:5`, `x.example.com` would first be
/// `x.example.com.<namespace>.svc.cluster.local`, which anyone who may create a service
/// there could answer). squid and HAProxy resolve names the same way.
#[must_use]
pub fn absolute(host: &str) -> String {
    if host.ends_with('.') {
        host.to_owned()
    } else {
        format!("{host}.")
    }
}

/// The IPv4 addresses of the name `host` (as an absolute name), sorted, and until when they
/// are valid.
pub async fn resolve_ipv4(
    resolver: &TokioResolver,
    host: &str,
) -> Result<(Vec<Ipv4Addr>, Instant), String> {
    let found = resolver
        .ipv4_lookup(absolute(host))
        .await
        .map_err(|err| err.to_string())?;
    let mut addrs: Vec<Ipv4Addr> = found.iter().map(|a| a.0).collect();
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err("no IPv4 address".to_owned());
    }
    Ok((addrs, Instant::from_std(found.valid_until())))
}

/// Whether `addr` would loop back into the router pod, or go nowhere, as a destination: one
/// of the pod's own addresses (`own`), loopback, unspecified or "this network" (0/8),
/// multicast or broadcast. IPv4-mapped IPv6 forms count as their IPv4 address.
#[must_use]
pub fn loops_back(addr: IpAddr, own: &[IpAddr]) -> bool {
    let addr = addr.to_canonical();
    addr.is_loopback()
        || addr.is_unspecified()
        || addr.is_multicast()
        || own.iter().any(|o| o.to_canonical() == addr)
        || matches!(addr, IpAddr::V4(v4) if v4.is_broadcast() || v4.octets()[0] == 0)
}

/// EGRESS_SOURCE as the proxies connect out from it: an address per family it has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl Sources {
    /// The source for a destination's family, if EGRESS_SOURCE has one.
    #[must_use]
    pub fn for_addr(&self, addr: IpAddr) -> Option<IpAddr> {
        match addr {
            IpAddr::V4(_) => self.v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.v6.map(IpAddr::V6),
        }
    }

    /// Every address, for the list of the pod's own.
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> {
        self.v4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.v6.map(IpAddr::V6))
    }
}

impl std::fmt::Display for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all: Vec<String> = self.iter().map(|ip| ip.to_string()).collect();
        f.write_str(&all.join(","))
    }
}

/// The addresses among `addrs` the router may connect to from EGRESS_SOURCE: those of a
/// family it has an address of (IPv4-mapped forms count as IPv4; no family is translated
/// into the other) that do not loop back.
#[must_use]
pub fn destinations(
    addrs: impl IntoIterator<Item = IpAddr>,
    own: &[IpAddr],
    sources: &Sources,
) -> Vec<IpAddr> {
    addrs
        .into_iter()
        .filter(|addr| !loops_back(*addr, own))
        .map(|addr| addr.to_canonical())
        .filter(|addr| sources.for_addr(*addr).is_some())
        .collect()
}

/// [`destinations`] for the DNS proxy, which connects over IPv4 only so far.
#[must_use]
pub fn destinations_v4(addrs: impl IntoIterator<Item = IpAddr>, own: &[IpAddr]) -> Vec<Ipv4Addr> {
    let v4 = Sources {
        v4: Some(Ipv4Addr::UNSPECIFIED),
        v6: None,
    };
    destinations(addrs, own, &v4)
        .into_iter()
        .filter_map(|addr| match addr {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .collect()
}

/// Connects to the first of `addrs` that answers within `timeout` each, from EGRESS_SOURCE's
/// address of its family, with the port left to `connect` so that the 4-tuple, not the bare
/// port, has to be unique (`IP_BIND_ADDRESS_NO_PORT`). A connection never leaves from
/// another address: one of a family EGRESS_SOURCE has not is skipped.
pub async fn connect(
    addrs: &[IpAddr],
    port: u16,
    sources: &Sources,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
    for &ip in addrs {
        let Some(source) = sources.for_addr(ip) else {
            continue;
        };
        let target = SocketAddr::from((ip, port));
        let attempt = async {
            let socket = if ip.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            // IP_BIND_ADDRESS_NO_PORT applies to IPv6 sockets too (SOL_IP level).
            set_bind_no_port(&socket)?;
            socket.bind(SocketAddr::new(source, 0))?;
            socket.set_nodelay(true)?;
            socket.connect(target).await
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(err)) => last = err,
            Err(_) => {
                last = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {} s", timeout.as_secs_f32()),
                );
            }
        }
    }
    Err(last)
}

fn set_bind_no_port(socket: &TcpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket fd and an int option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_of_egress_source_families_and_never_the_pod_itself() {
        let own: Vec<IpAddr> = ["192.0.2.1", "198.51.100.100"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let addrs: Vec<IpAddr> = [
            "203.0.113.10",
            "::ffff:203.0.113.11",
            "::ffff:cb00:710c",
            "192.0.2.1",
            "::ffff:192.0.2.1",
            "198.51.100.100",
            "127.0.0.53",
            "::1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "2001:db8::1",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let v4 = Sources {
            v4: Some("198.51.100.100".parse().unwrap()),
            v6: None,
        };
        let names = |sources: &Sources| -> Vec<String> {
            destinations(addrs.clone(), &own, sources)
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(names(&v4), ["203.0.113.10", "203.0.113.11", "203.0.113.12"]);
        let dual = Sources {
            v6: Some("2001:db8:e::100".parse().unwrap()),
            ..v4
        };
        assert_eq!(
            names(&dual),
            [
                "203.0.113.10",
                "203.0.113.11",
                "203.0.113.12",
                "2001:db8::1"
            ]
        );
        let v6 = Sources { v4: None, ..dual };
        assert_eq!(names(&v6), ["2001:db8::1"], "no IPv4 from an IPv6 source");
    }
}
