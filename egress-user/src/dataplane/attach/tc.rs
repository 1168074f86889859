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

use futures_util::StreamExt as _;
use rtnetlink::{
    Handle,
    packet_core::{
        NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
        NetlinkMessage, NetlinkPayload,
    },
    packet_route::{
        RouteNetlinkMessage,
        tc::{TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcMessage, TcOption},
    },
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

/// Errors of the netlink requests, with the errno where the kernel gave one.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct Error {
    what: &'static str,
    #[source]
    source: rtnetlink::Error,
}

impl Error {
    /// The kernel's errno, if the kernel refused the request.
    #[must_use]
    pub fn errno(&self) -> Option<i32> {
        errno(&self.source)
    }
}

fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => Some(-msg.raw_code()),
        _ => None,
    }
}

/// Sends `message` and waits for the kernel's answer, every part of it.
async fn request(
    handle: &Handle,
    message: RouteNetlinkMessage,
    flags: u16,
) -> Result<Vec<RouteNetlinkMessage>, rtnetlink::Error> {
    let mut req = NetlinkMessage::from(message);
    req.header.flags = NLM_F_REQUEST | flags;
    let mut response = handle.clone().request(req)?;
    let mut answers = Vec::new();
    while let Some(message) = response.next().await {
        match message.payload {
            NetlinkPayload::Error(err) => return Err(rtnetlink::Error::NetlinkError(err)),
            NetlinkPayload::InnerMessage(inner) => answers.push(inner),
            _ => {}
        }
    }
    Ok(answers)
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
pub async fn add_clsact(handle: &Handle, ifindex: u32) -> Result<bool, Error> {
    let message = RouteNetlinkMessage::NewQueueDiscipline(clsact(ifindex));
    match request(handle, message, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL).await {
        Ok(_) => Ok(true),
        Err(err) if errno(&err) == Some(libc::EEXIST) => Ok(false),
        Err(source) => Err(Error {
            what: "adding the clsact qdisc",
            source,
        }),
    }
}

/// Whether the interface has a clsact qdisc.
pub async fn has_clsact(handle: &Handle, ifindex: u32) -> Result<bool, Error> {
    let mut message = TcMessage::with_index(ifindex as i32);
    message.header.parent = TcHandle::CLSACT;
    let answers = request(
        handle,
        RouteNetlinkMessage::GetQueueDiscipline(message),
        NLM_F_DUMP,
    )
    .await
    .map_err(|source| Error {
        what: "listing the qdiscs",
        source,
    })?;
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
pub async fn del_clsact(handle: &Handle, ifindex: u32) -> Result<(), Error> {
    let message = RouteNetlinkMessage::DelQueueDiscipline(clsact(ifindex));
    match request(handle, message, NLM_F_ACK).await {
        Ok(_) => Ok(()),
        Err(err)
            if matches!(
                errno(&err),
                Some(libc::ENOENT | libc::EINVAL | libc::ENODEV)
            ) =>
        {
            Ok(())
        }
        Err(source) => Err(Error {
            what: "removing the clsact qdisc",
            source,
        }),
    }
}

/// The `cls_bpf` filters on one hook, in the order they run. An interface without a clsact
/// qdisc has none.
pub async fn filters(
    handle: &Handle,
    ifindex: u32,
    direction: Direction,
) -> Result<Vec<Filter>, Error> {
    let mut message = TcMessage::with_index(ifindex as i32);
    message.header.parent = direction.parent();
    let answers = match request(
        handle,
        RouteNetlinkMessage::GetTrafficFilter(message),
        NLM_F_DUMP,
    )
    .await
    {
        Ok(answers) => answers,
        // No clsact qdisc (EINVAL), or the interface went away.
        Err(err)
            if matches!(
                errno(&err),
                Some(libc::EINVAL | libc::ENOENT | libc::ENODEV)
            ) =>
        {
            return Ok(Vec::new());
        }
        Err(source) => {
            return Err(Error {
                what: "listing the tc filters",
                source,
            });
        }
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
pub async fn attach(
    handle: &Handle,
    ifindex: u32,
    direction: Direction,
    priority: u16,
    fd: std::os::fd::BorrowedFd<'_>,
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
        handle,
        RouteNetlinkMessage::NewTrafficFilter(message),
        NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
    )
    .await
    .map(drop)
    .map_err(|source| Error {
        what: "writing the tc filter",
        source,
    })
}

/// Removes egress-router's filter at `priority` from the hook; one that is not there (or
/// an interface without clsact) is nothing to remove.
pub async fn detach(
    handle: &Handle,
    ifindex: u32,
    direction: Direction,
    priority: u16,
) -> Result<(), Error> {
    let mut message = filter_message(ifindex, direction, priority);
    message.attributes.push(TcAttribute::Kind("bpf".into()));
    match request(
        handle,
        RouteNetlinkMessage::DelTrafficFilter(message),
        NLM_F_ACK,
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(err)
            if matches!(
                errno(&err),
                Some(libc::ENOENT | libc::EINVAL | libc::ENODEV)
            ) =>
        {
            Ok(())
        }
        Err(source) => Err(Error {
            what: "removing the tc filter",
            source,
        }),
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
