//! Node mode (`egress_common::node`): the programs of one node agent serve every instance
//! on the node. A client's packet to a router pod is caught at the TC egress of the pod's
//! host-side interface (`node_forward`), before it enters the pod, translated by the same
//! code as in pod mode ([`crate::pod`]) with that instance's configuration, and sent out of
//! the uplink toward the instance's EGRESS_GATEWAY. A reply on the uplink (`node_reply`)
//! is translated back ([`crate::egress`]) and sent toward the client along the node's own
//! routes. XDP on the uplink (`node_xdp`) answers ARP and neighbour solicitations for the
//! egress addresses and drops traffic to them that is part of no flow; the addresses are
//! never the node stack's.
//!
//! | module | concern |
//! |---|---|
//! | `maps` | the node's maps, and an instance's configuration by interface or address |
//! | `tc` | `node_forward`, `node_reply` and their IPv6 twins, and the way out |
//! | `xdp` | `node_xdp` on the uplink: ARP and NDP responders, the early drop |

mod maps;
mod tc;
mod xdp;
