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
    /// The namespace and interface whose MAC the client's frames are addressed to.
    fn client_next_hop(&self) -> (&Netns, &'static str);
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
    fn client_next_hop(&self) -> (&Netns, &'static str) {
        (&self.router, "eth0")
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
    fn client_next_hop(&self) -> (&Netns, &'static str) {
        (&self.node, "cli0")
    }
    fn daemons(&mut self) -> &mut Daemons {
        self.daemons_mut()
    }
}
