//! What the benchmarks' loads need of a lab, whichever its topology: the client's, the
//! gateway's and the server's namespaces, where the client's frames go first, and the
//! daemons. The pod lab ([`crate::lab::Lab`]: the client wired to the router pod) and the
//! node lab ([`crate::nodelab::NodeLab`]: the client routed through the node) both are one.

use crate::{daemon::Daemons, lab::Lab, netns::Netns, nodelab::NodeLab};

/// A lab the loads run in.
pub trait Bed {
    fn client(&self) -> &Netns;
    fn gateway(&self) -> &Netns;
    fn server(&self) -> &Netns;
    /// The node's namespace (its `uplink` faces the gateway).
    fn node(&self) -> &Netns;
    /// The namespace and interface whose MAC the client's frames are addressed to.
    fn client_next_hop(&self) -> (&Netns, &'static str);
    /// The interfaces where the router's work enters (the client's frames' first hop, and
    /// the replies' on the uplink): the per-core benchmark steers them to the router's CPU.
    fn router_path(&self) -> Vec<(&Netns, &'static str)>;
    fn daemons(&mut self) -> &mut Daemons;
}

impl Bed for Lab {
    fn client(&self) -> &Netns {
        &self.client
    }
    fn gateway(&self) -> &Netns {
        &self.gateway
    }
    fn server(&self) -> &Netns {
        &self.server
    }
    fn node(&self) -> &Netns {
        &self.node
    }
    fn client_next_hop(&self) -> (&Netns, &'static str) {
        (&self.router, "eth0")
    }
    fn router_path(&self) -> Vec<(&Netns, &'static str)> {
        vec![(&self.router, "eth0"), (&self.node, "uplink")]
    }
    fn daemons(&mut self) -> &mut Daemons {
        self.daemons_mut()
    }
}

impl Bed for NodeLab {
    fn client(&self) -> &Netns {
        &self.clients[0]
    }
    fn gateway(&self) -> &Netns {
        &self.gateway
    }
    fn server(&self) -> &Netns {
        &self.server
    }
    fn node(&self) -> &Netns {
        &self.node
    }
    fn client_next_hop(&self) -> (&Netns, &'static str) {
        (&self.node, "cli0")
    }
    /// The node's side of the client pod and the uplink. The hops after the first (into
    /// the router pod in pod mode) stay in the kernel's usual way, processed on the CPU
    /// of the hop before.
    fn router_path(&self) -> Vec<(&Netns, &'static str)> {
        vec![(&self.node, "cli0"), (&self.node, "uplink")]
    }
    fn daemons(&mut self) -> &mut Daemons {
        self.daemons_mut()
    }
}
