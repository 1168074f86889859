//! The pod interface's ingress: client -> remote. A packet to the pod IP that matches a rule
//! or the fallback is translated and leaves through the egress interface; everything else
//! reaches the pod as it was.

use aya_ebpf::programs::TcContext;
use egress_common::{DropReason, RouterConfig, Stat, config_flags, flow_kind, proto};

use crate::{
    conntrack::{self, Ct},
    flow::{self, L4},
    icmp,
    metrics::{self, Verdict},
    nat, parse,
    path::{self, Hop},
    rules,
};

#[inline(always)]
pub(crate) fn ingress(ctx: &TcContext, cfg: &RouterConfig) -> Result<Verdict, DropReason> {
    let passed = Verdict::Pass(Stat::PodIngressPassed);
    let Some(ip) = parse::ipv4(ctx)? else {
        return Ok(passed);
    };
    if ip.daddr.to_ne_bytes() != cfg.pod_ip {
        return Ok(passed);
    }
    let has_fallback = cfg.flags & config_flags::HAS_FALLBACK != 0;

    if icmp::is_error(ctx, &ip)? {
        // An error the client sends about a reply it got (e.g. port unreachable).
        return match icmp::related(ctx, &ip)? {
            Some((emb, entry)) if entry.kind == flow_kind::FORWARD => {
                icmp::translate_error(ctx, &ip, &emb, &entry)?;
                Ok(Verdict::Redirect(cfg.egress_ifindex, Stat::Forwarded))
            }
            _ => Ok(passed),
        };
    }

    let flow = match flow::of(ctx, &ip) {
        Ok(Some(flow)) => flow,
        Ok(None) if has_fallback && ip.proto != proto::ICMP => {
            return Err(DropReason::UnsupportedProtocol);
        }
        Ok(None) => return Ok(passed),
        // A later fragment of a datagram whose first fragment went to the pod itself.
        Err(DropReason::FragmentUnknown) if !has_fallback => return Ok(passed),
        Err(reason) => return Err(reason),
    };
    let hop = Hop::toward_remote(cfg);
    let entry = match conntrack::lookup(&flow.key, &flow.seg) {
        Ct::Forward(entry) => {
            if let Some(verdict) = path::guard(ctx, &ip, &hop)? {
                return Ok(verdict);
            }
            entry
        }
        state @ (Ct::New | Ct::Stale(_) | Ct::Closed(..)) => {
            match state {
                // Its reply tuple went to another flow after an eviction: start afresh.
                Ct::Stale(table) => conntrack::forget(&flow.key, table),
                // A new connection over the tuple of one that ended.
                Ct::Closed(old, table) => {
                    conntrack::reopen(&flow.key, &old, table);
                    metrics::count(Stat::FlowsReopened, 0);
                }
                _ => {}
            }
            if flow.l4 == L4::None {
                return Err(DropReason::FragmentUnknown);
            }
            let Some(target) = rules::target(cfg, flow.key.proto, flow.key.dport)? else {
                return Ok(passed);
            };
            if target.is_local() {
                // The agent's own listener on the pod IP (metrics, health).
                return Ok(passed);
            }
            if let Some(verdict) = path::guard(ctx, &ip, &hop)? {
                return Ok(verdict);
            }
            nat::create_flow(&flow.key, &target, cfg, &flow.seg)?
        }
        // Reply-side entries are keyed by EGRESS_SOURCE, never by the pod IP: whatever this
        // is, it is not a client's flow.
        Ct::Reply(_) | Ct::Local | Ct::Expired => return Ok(passed),
    };
    nat::translate(ctx, cfg, &ip, &flow, &entry)?;
    Ok(Verdict::Redirect(cfg.egress_ifindex, Stat::Forwarded))
}
