//! What the proxy modes share: the pod's resolver, name resolution with TTLs, and outbound
//! TCP connections that leave from EGRESS_SOURCE.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
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

/// The addresses among `addrs` the router may connect to from EGRESS_SOURCE: IPv4 (there is
/// no IPv6 EGRESS_SOURCE yet; IPv4-mapped forms count as IPv4) that does not loop back.
#[must_use]
pub fn destinations(addrs: impl IntoIterator<Item = IpAddr>, own: &[IpAddr]) -> Vec<Ipv4Addr> {
    addrs
        .into_iter()
        .filter(|addr| !loops_back(*addr, own))
        .filter_map(|addr| match addr.to_canonical() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .collect()
}

/// Connects to the first of `addrs` that answers within `timeout` each, from `source`
/// (EGRESS_SOURCE), with the port left to `connect` so that the 4-tuple, not the bare port,
/// has to be unique (`IP_BIND_ADDRESS_NO_PORT`). IPv4 only: a connection never leaves from
/// another address.
pub async fn connect(
    addrs: &[Ipv4Addr],
    port: u16,
    source: Ipv4Addr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
    for &ip in addrs {
        let target = SocketAddr::from((ip, port));
        let attempt = async {
            let socket = TcpSocket::new_v4()?;
            set_bind_no_port(&socket)?;
            socket.bind(SocketAddr::new(source.into(), 0))?;
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
    fn destinations_are_ipv4_and_never_the_pod_itself() {
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
        let ok: Vec<String> = destinations(addrs, &own)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ok, ["203.0.113.10", "203.0.113.11", "203.0.113.12"]);
    }
}
