//! What the proxy modes share: the pod's resolver, and outbound TCP connections that leave
//! from EGRESS_SOURCE.

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
use tokio::net::{TcpSocket, TcpStream};

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

/// EGRESS_SOURCE for a process that may not have the variable (OpenShift sets it on the
/// init container only): the variable if given, else the first IPv4 address of the egress
/// interface, which the init container put there.
pub async fn egress_source(variable: Option<&str>, egress_interface: &str) -> Result<Ipv4Addr> {
    if let Some(value) = variable.map(str::trim).filter(|v| !v.is_empty()) {
        let source: crate::config::EgressSource = value.parse()?;
        return Ok(source.ip);
    }
    let facts = crate::network::interface_facts(egress_interface)
        .await
        .with_context(|| {
            format!(
                "EGRESS_SOURCE is not set and cannot be read from {egress_interface}; set it, \
                 or run the init container (EGRESS_ROUTER_MODE=http-proxy or dns-proxy) first"
            )
        })?;
    facts.ipv4.first().copied().with_context(|| {
        format!(
            "EGRESS_SOURCE is not set and {egress_interface} has no IPv4 address; set it, or \
             run the init container first"
        )
    })
}

/// The pod interface's first IPv4 address: where the proxies listen.
pub async fn pod_ip(pod_interface: &str) -> Result<Ipv4Addr> {
    let facts = crate::network::interface_facts(pod_interface)
        .await
        .with_context(|| format!("reading the pod interface {pod_interface}"))?;
    facts
        .ipv4
        .first()
        .copied()
        .with_context(|| format!("the pod interface {pod_interface} has no IPv4 address"))
}

/// Connects to the first of `addrs` that answers within `timeout` each. IPv4 connections
/// are bound to `source` (EGRESS_SOURCE), with the port left to `connect` so that the
/// 4-tuple, not the bare port, has to be unique (`IP_BIND_ADDRESS_NO_PORT`).
pub async fn connect(
    addrs: &[IpAddr],
    port: u16,
    source: Ipv4Addr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
    for &ip in addrs {
        let target = SocketAddr::new(ip, port);
        let attempt = async {
            let socket = match ip {
                IpAddr::V4(_) => {
                    let socket = TcpSocket::new_v4()?;
                    set_bind_no_port(&socket)?;
                    socket.bind(SocketAddr::new(source.into(), 0))?;
                    socket
                }
                IpAddr::V6(_) => TcpSocket::new_v6()?,
            };
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
