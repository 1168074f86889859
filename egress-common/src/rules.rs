//! Redirect rules: [`RuleKey`] -> [`RuleTarget`] in [`crate::maps::RULES`], and the
//! addresses of rules that send to a name in [`crate::maps::RULE_ADDRS`].

use bytemuck::{Pod, Zeroable};

use crate::flow::Addr;

/// Most redirect rules one instance holds (both families); rule ids are `1..=MAX_RULES`, 0
/// is the IPv4 fallback and [`FALLBACK6_RULE_ID`] the IPv6 one.
pub const MAX_RULES: u32 = 4096;

/// The IPv6 fallback's rule id: its counters in [`crate::maps::RULE_STATS`] are its own.
pub const FALLBACK6_RULE_ID: u16 = MAX_RULES as u16 + 1;

/// Entries of [`crate::maps::RULE_STATS`]: the fallbacks and every rule id.
pub const RULE_STATS_LEN: u32 = MAX_RULES + 2;

/// Most entries of the agent's own ports (`/metrics`) in [`crate::maps::RULES`], beside
/// the rules: they are delivered to the pod even when a fallback takes everything else.
pub const MAX_LOCAL_RULES: u32 = 16;

/// Capacity of [`crate::maps::RULES`]: every rule and every local port at once.
pub const RULES_CAPACITY: u32 = MAX_RULES + MAX_LOCAL_RULES;

/// Key of [`crate::maps::RULES`]: a local port and protocol on the pod IP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct RuleKey {
    /// Host byte order.
    pub port: u16,
    /// [`crate::proto::TCP`] or [`crate::proto::UDP`].
    pub proto: u8,
    /// The instance the rule is of: 0 in pod mode, its number in node mode
    /// ([`crate::node`]). (The padding byte of earlier releases, always 0.)
    pub instance: u8,
}

/// [`RuleTarget::flags`] bits.
pub mod rule_flags {
    /// The rule sends to a name: new connections take one of the addresses in
    /// [`crate::maps::RULE_ADDRS`] at random, and `remote_ip` is unused.
    pub const ADDRS: u32 = 1;
}

/// Value of [`crate::maps::RULES`] (and, with an IPv6 address, [`crate::maps::RULES6`]):
/// where matching connections go.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleTarget<A = [u8; 4]> {
    pub remote_ip: A,
    /// Host byte order.
    pub remote_port: u16,
    /// Index into [`crate::maps::RULE_STATS`]; 1-based, 0 is the fallback.
    pub rule_id: u16,
    /// [`rule_flags`] bits.
    pub flags: u32,
}

/// The IPv6 rules' target.
pub type RuleTarget6 = RuleTarget<[u8; 16]>;

crate::flow::pod_instances!(RuleTarget);

impl RuleTarget {
    /// A target that delivers to the pod itself instead of translating: the agent's own
    /// listeners (metrics, health), which a fallback would otherwise redirect.
    pub const LOCAL: Self = Self {
        remote_ip: [0; 4],
        remote_port: 0,
        rule_id: 0,
        flags: 0,
    };
}

impl<A: Addr> RuleTarget<A> {
    /// Whether this target delivers to the pod itself.
    #[must_use]
    pub fn is_local(&self) -> bool {
        self.remote_ip.same(A::default()) && self.flags & rule_flags::ADDRS == 0
    }

    /// Whether new connections take their address from [`crate::maps::RULE_ADDRS`] (or
    /// [`crate::maps::RULE_ADDRS6`]).
    #[must_use]
    pub const fn by_name(&self) -> bool {
        self.flags & rule_flags::ADDRS != 0
    }
}

/// Most addresses a name rule spreads its new connections over.
pub const MAX_RULE_ADDRS: usize = 16;

/// Value of [`crate::maps::RULE_ADDRS`] (IPv4, A records) and [`crate::maps::RULE_ADDRS6`]
/// (IPv6, AAAA records): the current addresses of a rule's name. Replaced whole by the agent
/// (a hash map update is atomic for readers), so a reader never sees a half-written list.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleAddrs<A = [u8; 4]> {
    /// Valid entries of `addrs`, 0 to [`MAX_RULE_ADDRS`].
    pub len: u32,
    pub addrs: [A; MAX_RULE_ADDRS],
}

/// The IPv6 addresses of a rule's name.
pub type RuleAddrs6 = RuleAddrs<[u8; 16]>;

crate::flow::pod_instances!(RuleAddrs);

const _: () = assert!(core::mem::size_of::<RuleKey>() == 4);
const _: () = assert!(core::mem::size_of::<RuleTarget>() == 12);
const _: () = assert!(core::mem::size_of::<RuleTarget6>() == 24);
const _: () = assert!(core::mem::size_of::<RuleAddrs>() == 68);
const _: () = assert!(core::mem::size_of::<RuleAddrs6>() == 260);
