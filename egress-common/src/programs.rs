//! Program names in the BPF object, named for where they run (README.md#vocabulary): pod
//! mode's `<interface>_<hook>`, the interface being the pod interface (`eth0`) or the egress
//! interface (`macvlan0`); node mode's `node_<role>`; a `6` suffix for an IPv6 twin.

/// TC ingress of the pod interface (`eth0`): client -> remote.
pub const POD_INGRESS: &str = "pod_ingress";
/// TC ingress of the egress interface (`macvlan0`): remote -> client, and the pod's own
/// flows.
pub const EGRESS_INGRESS: &str = "egress_ingress";
/// TC egress of the egress interface: tracks the connections the pod itself opens.
pub const EGRESS_EGRESS: &str = "egress_egress";
/// TC ingress of the pod interface for IPv6: attached after [`POD_INGRESS`] (TCX), which
/// hands it the IPv6 frames, only for an instance with IPv6, so an IPv4 router neither
/// loads nor verifies it. Likewise the two below.
pub const POD_INGRESS6: &str = "pod_ingress6";
/// TC ingress of the egress interface for IPv6, after [`EGRESS_INGRESS`].
pub const EGRESS_INGRESS6: &str = "egress_ingress6";
/// TC egress of the egress interface for IPv6, after [`EGRESS_EGRESS`].
pub const EGRESS_EGRESS6: &str = "egress_egress6";
/// The conntrack GC's sweep: judges every entry of one table in the kernel and hands the
/// agent the collectable flows and the per-client census. Never attached: the agent runs
/// it with BPF_PROG_TEST_RUN.
pub const CT_SWEEP: &str = "ct_sweep";
/// Node mode: TC egress of a router pod's host-side interface, where clients' packets to
/// the pod leave the node's stack: translated and sent out of the uplink toward the
/// instance's EGRESS_GATEWAY, never reaching the pod.
pub const NODE_FORWARD: &str = "node_forward";
/// Node mode: TC ingress of the uplink: replies to an egress address translated back and
/// sent toward the client; everything else is the node's and passes untouched.
pub const NODE_REPLY: &str = "node_reply";
/// Node mode: [`NODE_FORWARD`] for IPv6, after it at the hook (it hands it the IPv6
/// packets of instances with an IPv6 EGRESS_SOURCE).
pub const NODE_FORWARD6: &str = "node_forward6";
/// Node mode: [`NODE_REPLY`] for IPv6, after it at the hook.
pub const NODE_REPLY6: &str = "node_reply6";
/// Node mode: XDP on the uplink: answers ARP and neighbour solicitations for the egress
/// addresses with the uplink's MAC, and drops traffic to them that is part of no flow
/// before the stack sees it.
pub const NODE_XDP: &str = "node_xdp";
