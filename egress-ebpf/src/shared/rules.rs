//! Where a new flow from the pod interface goes: its rule (by protocol and local port), the
//! fallback, or nowhere. A rule that sends to a name takes one of the name's current
//! addresses at random, so new connections spread over all of them; established ones keep
//! theirs in conntrack.

use aya_ebpf::{btf_maps::HashMap, helpers::generated::bpf_get_prandom_u32, macros::btf_map};
use egress_common::{
    Addr, DropReason, FALLBACK6_RULE_ID, MAX_RULE_ADDRS, MAX_RULES, RULES_CAPACITY, RouterConfig,
    RouterConfig6, RuleAddrs, RuleAddrs6, RuleKey, RuleTarget, RuleTarget6, config_flags, proto,
};

/// Redirect rules: local port and protocol on the pod IP -> remote address and port.
#[btf_map]
static RULES: HashMap<RuleKey, RuleTarget, { RULES_CAPACITY as usize }> = HashMap::new();

/// IPv6 redirect rules: local port and protocol on the pod's IPv6 address -> remote.
#[btf_map]
static RULES6: HashMap<RuleKey, RuleTarget6, { RULES_CAPACITY as usize }> = HashMap::new();

/// [`target`] for IPv6: its rules (a name's AAAA records) and fallback.
#[inline(always)]
pub(crate) fn target6(
    (cfg, cfg6): (&RouterConfig, &RouterConfig6),
    protocol: u8,
    dport: u16,
) -> Result<Option<RuleTarget6>, DropReason> {
    if protocol == proto::TCP || protocol == proto::UDP {
        let key = key(cfg.instance, protocol, dport);
        // SAFETY: read-only copy of a live value.
        if let Some(mut target) = RULES6.get_ptr(key).map(|p| unsafe { *p }) {
            if target.by_name() {
                pick_addr(&RULE_ADDRS6, &key, &mut target.remote_ip)?;
            }
            return Ok(Some(target));
        }
    }
    if cfg6.flags & config_flags::HAS_FALLBACK != 0 {
        return Ok(Some(RuleTarget6 {
            remote_ip: cfg6.fallback_ip,
            remote_port: dport,
            rule_id: FALLBACK6_RULE_ID,
            flags: 0,
        }));
    }
    Ok(None)
}

/// Whether a rule or the fallback sends IPv6 packets to `dport` on (the pod's own
/// listeners are not sent on): [`target6`] without picking a name's address.
#[inline(always)]
pub(crate) fn sends_on6(
    (cfg, cfg6): (&RouterConfig, &RouterConfig6),
    protocol: u8,
    dport: u16,
) -> bool {
    if protocol == proto::TCP || protocol == proto::UDP {
        let key = key(cfg.instance, protocol, dport);
        // SAFETY: a live value, read once.
        if let Some(target) = RULES6.get_ptr(key).map(|p| unsafe { &*p }) {
            return !target.is_local();
        }
    }
    cfg6.flags & config_flags::HAS_FALLBACK != 0
}

/// The key of instance `instance`'s rule for `dport`.
#[inline(always)]
fn key(instance: u8, protocol: u8, dport: u16) -> RuleKey {
    RuleKey {
        port: dport,
        proto: protocol,
        instance,
    }
}

/// The current addresses of rules that send to a name (DNS proxy mode).
#[btf_map]
static RULE_ADDRS: HashMap<RuleKey, RuleAddrs, { MAX_RULES as usize }> = HashMap::new();

/// [`RULE_ADDRS`] for IPv6: the names' AAAA records.
#[btf_map]
static RULE_ADDRS6: HashMap<RuleKey, RuleAddrs6, { MAX_RULES as usize }> = HashMap::new();

/// The target of a new flow to `dport`, or `None` when neither a rule nor the fallback
/// takes it.
#[inline(always)]
pub(crate) fn target(
    cfg: &RouterConfig,
    protocol: u8,
    dport: u16,
) -> Result<Option<RuleTarget>, DropReason> {
    if protocol == proto::TCP || protocol == proto::UDP {
        let key = key(cfg.instance, protocol, dport);
        // SAFETY: read-only copy of a live value.
        if let Some(mut target) = RULES.get_ptr(key).map(|p| unsafe { *p }) {
            if target.by_name() {
                pick_addr(&RULE_ADDRS, &key, &mut target.remote_ip)?;
            }
            return Ok(Some(target));
        }
    }
    if cfg.flags & config_flags::HAS_FALLBACK != 0 {
        return Ok(Some(RuleTarget {
            remote_ip: cfg.fallback_ip,
            remote_port: dport,
            rule_id: 0,
            flags: 0,
        }));
    }
    Ok(None)
}

/// One of the current addresses of a name rule in `table`, at random, into `addr`. A
/// BPF-to-BPF call (it needs no stack of its own): only new flows to a name make it, and
/// inlined, its registers would be spilled onto pod_ingress6's stack, which has no room.
#[inline(never)]
fn pick_addr<A: Addr>(
    table: &HashMap<RuleKey, RuleAddrs<A>, { MAX_RULES as usize }>,
    key: &RuleKey,
    addr: &mut A,
) -> Result<(), DropReason> {
    let addrs = table.get_ptr(key).ok_or(DropReason::Unresolved)?;
    // SAFETY: a live map value; `len` is read once and bounded below.
    let len = unsafe { (*addrs).len };
    if len == 0 || len > MAX_RULE_ADDRS as u32 {
        return Err(DropReason::Unresolved);
    }
    // Multiply-shift maps 32 random bits onto 0..len without a division, and the verifier
    // follows its bounds (it knows nothing of a modulo's result, and LLVM drops a mask it
    // can prove redundant).
    // SAFETY: no arguments, no side effects.
    let index = ((u64::from(unsafe { bpf_get_prandom_u32() }) * u64::from(len)) >> 32) as usize;
    // Linux before 6.10 knows nothing of a product by an unknown factor: the bound it needs
    // is checked on a copy read back from the stack, whose range LLVM does not know, so
    // that it keeps a check it could otherwise prove redundant.
    // SAFETY: a local, read back.
    let index = unsafe { core::ptr::read_volatile(&index) };
    if index >= MAX_RULE_ADDRS {
        return Err(DropReason::Unresolved);
    }
    // SAFETY: `index` < MAX_RULE_ADDRS, inside the live value.
    *addr = unsafe { (*addrs).addrs[index] };
    Ok(())
}
