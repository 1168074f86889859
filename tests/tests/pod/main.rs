//! The router pod in the netns lab (`egress_tests::lab`), redirect mode above all: real
//! clients and servers through the data plane, the egress side's set-up and claim, the
//! router as a hop, what holds in every mode (isolation), and the per-client limits. IPv4
//! unmarked, IPv6 with a `6` suffix, both families at once `dual_stack`.
//!
//! | module | what it proves |
//! |---|---|
//! | `first_light` | the loader attaches, exits, and the pinned counters show traffic |
//! | `redirect` | redirect mode end to end with real clients and servers |
//! | `attach_tc` | the attachment without TCX: beside other owners, switched, torn down; `features` |
//! | `dual_stack` | one instance serves both families, each from its own EGRESS_SOURCE |
//! | `alone6` | IPv6 alone in every mode |
//! | `network` | the egress side's set-up, idempotent, failures that change nothing |
//! | `claim` | the stable MAC, and a set-up refused when the address is taken |
//! | `path` | the router as a hop with real `ping` |
//! | `path6` | the router as a hop with real `ping` |
//! | `isolation` | no routing between the pod's two networks, in any mode |
//! | `limits` | the per-client flow limit |
//! | `sources` | only client networks' addresses open flows (`bad_source`) |
//! | `connections` | short connections reusing the client's ports, none lost |

mod alone6;
mod attach_tc;
mod claim;
mod connections;
mod dual_stack;
mod first_light;
mod isolation;
mod limits;
mod network;
mod path;
mod path6;
mod redirect;
mod sources;
