//! The classic TC attachment, for kernels without TCX (before Linux 6.6: RHEL 9's 5.14,
//! Ubuntu 22.04's 5.15, Debian 12's 6.1): a `clsact` qdisc on the interface and `cls_bpf`
//! filters in direct-action mode, made over rtnetlink. Like a TCX program attached without a
//! link, a filter belongs to the interface and keeps running after the process that made it
//! has exited.
//!
//! egress-router's filters sit at preferences of their own ([`PRIORITY`] and the ones after
//! it), handle [`HANDLE`], so filters of other owners on the same hook are never touched. A
//! program is replaced in place by writing its filter again at the same preference and
//! handle (`tc filter replace`): cls_bpf swaps the program atomically, and no packet goes
//! through the hook without one.
//!
//! Verdicts mean the same as with TCX: `TC_ACT_UNSPEC` (TCX_NEXT) hands the packet to the
//! next filter, which is how an IPv4 program hands IPv6 to its twin at the next preference.

use std::{io, os::fd::BorrowedFd};

use rtnetlink::{
    packet_core::{
        NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
        NetlinkMessage, NetlinkPayload,
    },
    packet_route::{
        RouteNetlinkMessage,
        tc::{TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcMessage, TcOption},
    },
    sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE},
};

/// The preference of egress-router's first filter on a hook; its IPv6 twin takes the next.
/// Filters with a lower preference run before them, higher after. 0xE700 is far from
/// `tc`'s automatic preferences (49152 and down) and from the low ones other datapaths pick
/// (Cilium: 1).
pub const PRIORITY: u16 = 0xE700;
/// The handle of every egress-router filter (one filter per preference).
pub const HANDLE: u32 = 1;

/// `ETH_P_ALL` in network byte order, as `tcm_info` carries the protocol.
const ALL_PROTOCOLS: u16 = (libc::ETH_P_ALL as u16).to_be();

/// Which hook of the clsact qdisc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn parent(self) -> TcHandle {
        TcHandle {
            major: 0xffff,
            minor: match self {
                Self::Ingress => TcHandle::MIN_INGRESS,
                Self::Egress => TcHandle::MIN_EGRESS,
            },
        }
    }
}

/// A `cls_bpf` filter on one hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub priority: u16,
    pub handle: u32,
    /// The program's ID (absent only on kernels before 4.13).
    pub prog_id: Option<u32>,
    /// The name the filter was given (egress-router gives the program's).
    pub name: Option<String>,
    pub direct_action: bool,
}

/// A netlink request that failed: what it was, and the kernel's answer.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct Error {
    what: &'static str,
    #[source]
    source: io::Error,
}

impl Error {
    /// The kernel's errno, if the kernel refused the request.
    #[must_use]
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// Sends `message` on a netlink socket of the current network namespace and collects the
/// kernel's answer: every message of a dump, or the acknowledgement.
fn request(message: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut req = NetlinkMessage::from(message);
    req.header.flags = NLM_F_REQUEST | flags;
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut answers = Vec::new();
    loop {
        let (data, _) = socket.recv_from_full()?;
        let mut at = 0;
        while at < data.len() {
            let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[at..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(answers),
                // An error, or (code 0) the acknowledgement that ends a request.
                NetlinkPayload::Error(err) => match err.code {
                    Some(_) => return Err(err.to_io()),
                    None => return Ok(answers),
                },
                NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                _ => {}
            }
            if length == 0 {
                break;
            }
            at += length;
        }
    }
}

fn refused(what: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error { what, source }
}

fn errno_in(err: &io::Error, codes: &[i32]) -> bool {
    err.raw_os_error().is_some_and(|code| codes.contains(&code))
}

fn clsact(ifindex: u32) -> TcMessage {
    let mut message = TcMessage::with_index(ifindex as i32);
    message.header.parent = TcHandle::CLSACT;
    message.header.handle = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    message.attributes.push(TcAttribute::Kind("clsact".into()));
    message
}

/// Adds the clsact qdisc to the interface: `true` when this call created it, `false` when
/// one was there already.
pub fn add_clsact(ifindex: u32) -> Result<bool, Error> {
    let message = RouteNetlinkMessage::NewQueueDiscipline(clsact(ifindex));
    match request(message, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL) {
        Ok(_) => Ok(true),
        Err(err) if errno_in(&err, &[libc::EEXIST]) => Ok(false),
        Err(err) => Err(refused("adding the clsact qdisc")(err)),
    }
}

/// Whether the interface has a clsact qdisc.
pub fn has_clsact(ifindex: u32) -> Result<bool, Error> {
    let mut message = TcMessage::with_index(ifindex as i32);
    message.header.parent = TcHandle::CLSACT;
    let answers = request(RouteNetlinkMessage::GetQueueDiscipline(message), NLM_F_DUMP)
        .map_err(refused("listing the qdiscs"))?;
    Ok(answers.iter().any(|answer| match answer {
        RouteNetlinkMessage::NewQueueDiscipline(qdisc) => {
            qdisc.header.index == ifindex as i32
                && qdisc
                    .attributes
                    .iter()
                    .any(|a| matches!(a, TcAttribute::Kind(kind) if kind == "clsact"))
        }
        _ => false,
    }))
}

/// Removes the interface's clsact qdisc, and every filter on it with it. One that is not
/// there is nothing to remove.
pub fn del_clsact(ifindex: u32) -> Result<(), Error> {
    let message = RouteNetlinkMessage::DelQueueDiscipline(clsact(ifindex));
    match request(message, NLM_F_ACK) {
        Ok(_) => Ok(()),
        Err(err) if errno_in(&err, &[libc::ENOENT, libc::EINVAL, libc::ENODEV]) => Ok(()),
        Err(err) => Err(refused("removing the clsact qdisc")(err)),
    }
}

/// The `cls_bpf` filters on one hook, in the order they run. An interface without a clsact
/// qdisc has none.
pub fn filters(ifindex: u32, direction: Direction) -> Result<Vec<Filter>, Error> {
    let mut message = TcMessage::with_index(ifindex as i32);
    message.header.parent = direction.parent();
    let answers = match request(RouteNetlinkMessage::GetTrafficFilter(message), NLM_F_DUMP) {
        Ok(answers) => answers,
        // No clsact qdisc (EINVAL), or the interface went away.
        Err(err) if errno_in(&err, &[libc::EINVAL, libc::ENOENT, libc::ENODEV]) => {
            return Ok(Vec::new());
        }
        Err(err) => return Err(refused("listing the tc filters")(err)),
    };
    let mut found: Vec<Filter> = answers
        .iter()
        .filter_map(|answer| match answer {
            RouteNetlinkMessage::NewTrafficFilter(filter) => bpf_filter(filter),
            _ => None,
        })
        .collect();
    found.sort_by_key(|f| (f.priority, f.handle));
    Ok(found)
}

/// The filter a dump entry describes, if it is a `cls_bpf` filter with a handle (the dump
/// also lists each preference's head, with handle 0 and no program).
fn bpf_filter(message: &TcMessage) -> Option<Filter> {
    let handle = u32::from(message.header.handle);
    let is_bpf = message
        .attributes
        .iter()
        .any(|a| matches!(a, TcAttribute::Kind(kind) if kind == "bpf"));
    if !is_bpf || handle == 0 {
        return None;
    }
    let mut filter = Filter {
        priority: (message.header.info >> 16) as u16,
        handle,
        prog_id: None,
        name: None,
        direct_action: false,
    };
    for attribute in &message.attributes {
        let TcAttribute::Options(options) = attribute else {
            continue;
        };
        for option in options {
            match option {
                TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => filter.prog_id = Some(*id),
                TcOption::Bpf(TcFilterBpfOption::ProgName(name)) => {
                    filter.name = Some(name.clone());
                }
                TcOption::Bpf(TcFilterBpfOption::Flags(flags)) => {
                    filter.direct_action = flags.contains(TcBpfFlags::DirectAction);
                }
                _ => {}
            }
        }
    }
    Some(filter)
}

fn filter_message(ifindex: u32, direction: Direction, priority: u16) -> TcMessage {
    let mut message = TcMessage::with_index(ifindex as i32);
    message.header.parent = direction.parent();
    message.header.handle = TcHandle::from(HANDLE);
    message.header.info = (u32::from(priority) << 16) | u32::from(ALL_PROTOCOLS);
    message
}

/// Puts program `fd` (named `name`) in a direct-action filter at `priority` on the hook,
/// replacing in place the program of a filter already there (atomically: no packet runs
/// without one), or creating the filter.
pub fn attach(
    ifindex: u32,
    direction: Direction,
    priority: u16,
    fd: BorrowedFd<'_>,
    name: &str,
) -> Result<(), Error> {
    use std::os::fd::AsRawFd as _;
    let mut message = filter_message(ifindex, direction, priority);
    message.attributes.push(TcAttribute::Kind("bpf".into()));
    message.attributes.push(TcAttribute::Options(vec![
        TcOption::Bpf(TcFilterBpfOption::ProgFd(fd.as_raw_fd() as u32)),
        TcOption::Bpf(TcFilterBpfOption::ProgName(name.to_owned())),
        TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
    ]));
    request(
        RouteNetlinkMessage::NewTrafficFilter(message),
        NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
    )
    .map(drop)
    .map_err(refused("writing the tc filter"))
}

/// Removes egress-router's filter at `priority` from the hook; one that is not there (or
/// an interface without clsact) is nothing to remove.
pub fn detach(ifindex: u32, direction: Direction, priority: u16) -> Result<(), Error> {
    let mut message = filter_message(ifindex, direction, priority);
    message.attributes.push(TcAttribute::Kind("bpf".into()));
    match request(RouteNetlinkMessage::DelTrafficFilter(message), NLM_F_ACK) {
        Ok(_) => Ok(()),
        Err(err) if errno_in(&err, &[libc::ENOENT, libc::EINVAL, libc::ENODEV]) => Ok(()),
        Err(err) => Err(refused("removing the tc filter")(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_are_clsacts_minor_handles() {
        assert_eq!(u32::from(Direction::Ingress.parent()), 0xffff_fff2);
        assert_eq!(u32::from(Direction::Egress.parent()), 0xffff_fff3);
        let m = filter_message(7, Direction::Egress, PRIORITY + 1);
        assert_eq!(
            m.header.info, 0xE701_0300,
            "preference, then ETH_P_ALL in network order"
        );
        assert_eq!(u32::from(m.header.handle), 1);
    }
}
