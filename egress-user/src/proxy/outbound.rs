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
    Resolver, TokioResolver,
    name_server::TokioConnectionProvider,
    proto::{
        ProtoErrorKind,
        rr::{RData, RecordType},
    },
    system_conf::parse_resolv_conf,
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

/// Why a name gave no address of the family asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unresolved {
    /// An answer: the name has no record of the family (an A-only name asked for AAAA),
    /// to be believed until the instant (its negative TTL).
    NoRecords(Instant),
    /// No answer (a timeout, a refusal, no such name): the resolver's error.
    Failed(String),
}

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoRecords(_) => f.write_str("no record of the family"),
            Self::Failed(err) => f.write_str(err),
        }
    }
}

/// How long "no record" is believed without a negative TTL in the answer, and at most.
const NO_RECORDS_DEFAULT: Duration = Duration::from_secs(30);
const NO_RECORDS_MAX: Duration = Duration::from_secs(300);

/// The IPv4 (A) or, with `v6`, IPv6 (AAAA) addresses of the name `host` (as an absolute
/// name), sorted, and until when they are valid.
pub async fn resolve(
    resolver: &TokioResolver,
    host: &str,
    v6: bool,
) -> Result<(Vec<IpAddr>, Instant), Unresolved> {
    let kind = if v6 { RecordType::AAAA } else { RecordType::A };
    let found = match resolver.lookup(absolute(host), kind).await {
        Ok(found) => found,
        Err(err) if err.is_no_records_found() => {
            let ttl = err
                .proto()
                .and_then(|p| match p.kind() {
                    ProtoErrorKind::NoRecordsFound { negative_ttl, .. } => *negative_ttl,
                    _ => None,
                })
                .map_or(NO_RECORDS_DEFAULT, |s| Duration::from_secs(s.into()));
            return Err(Unresolved::NoRecords(
                Instant::now() + ttl.min(NO_RECORDS_MAX),
            ));
        }
        Err(err) => return Err(Unresolved::Failed(crate::error_chain(&err).to_string())),
    };
    // The answer's A or AAAA records (a CNAME chain's names are in it too).
    let mut addrs: Vec<IpAddr> = found
        .iter()
        .filter_map(RData::ip_addr)
        .filter(|ip| ip.is_ipv6() == v6)
        .collect();
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(Unresolved::NoRecords(Instant::now() + NO_RECORDS_DEFAULT));
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

/// [`destinations`] of one family for the DNS proxy, which keeps a client's family: the
/// addresses of `addrs` of that family that do not loop back. An IPv4-mapped AAAA record is
/// of neither (it would be NAT46 by another name), and a link-local one is no destination
/// behind a gateway (the configured remotes may not be link-local either).
#[must_use]
pub fn destinations_of(addrs: &[IpAddr], own: &[IpAddr], v6: bool) -> Vec<IpAddr> {
    addrs
        .iter()
        .copied()
        .filter(|addr| addr.is_ipv6() == v6 && !loops_back(*addr, own))
        .filter(|addr| {
            !matches!(addr, IpAddr::V6(v6)
                if v6.to_ipv4_mapped().is_some() || v6.is_unicast_link_local())
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

    #[test]
    fn the_dns_proxy_keeps_the_family_and_never_the_pod_itself() {
        let own: Vec<IpAddr> = ["192.0.2.1", "2001:db8:e::100"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let addrs: Vec<IpAddr> = [
            "203.0.113.10",
            "192.0.2.1",
            "2001:db8::1",
            "2001:db8:e::100",
            "::ffff:203.0.113.11",
            "::1",
            "ff02::1",
            "fe80::1",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let shown = |v6| -> Vec<String> {
            destinations_of(&addrs, &own, v6)
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(shown(false), ["203.0.113.10"]);
        assert_eq!(shown(true), ["2001:db8::1"]);
    }
}
