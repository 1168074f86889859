//! What an admin meets before an instance runs: the configuration's validation through the
//! real binary, the egress network's preflight (`egress-router check`), the manifests in
//! `deploy/`, and the image in a real container runtime (needs EGRESS_ROUTER_IMAGE).
//!
//! | module | what it proves |
//! |---|---|
//! | `config` | malformed values are refused before anything changes; the `unit-test` plan |
//! | `verdicts` | `unit-test` refuses what `legacy` refuses, with the same words |
//! | `proxy_config` | the same for the proxy modes' variables |
//! | `check` | the preflight's verdicts on healthy and filtered networks, both families |
//! | `manifests` | every document validates, and its configuration passes the binary's |
//! | `container` | the image run as a kubelet runs it, one test per mode |

mod check;
mod config;
mod container;
mod manifests;
mod proxy_config;
mod verdicts;
