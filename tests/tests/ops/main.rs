//! Operating an instance in the netns lab: restarts, inspection and metrics, live
//! configuration, upgrades, teardown, one agent per instance, failover across nodes, one
//! owner of an EGRESS_SOURCE, a health check clients cannot starve, and
//! a soak (`cargo xtask soak` runs `soak::` longer).
//!
//! | module | what it proves |
//! |---|---|
//! | `operate` | restarts keep flows, adoption, inspection, metrics, conntrack GC |
//! | `errors` | real failures as the CLI prints them: each cause once |
//! | `reload` | `--config-file` edits and SIGHUP, from start-up on |
//! | `upgrade` | a new build takes over what an earlier release left running |
//! | `teardown` | `egress-router teardown` removes everything it set up |
//! | `agent` | a second agent for an instance is refused unless it takes over |
//! | `failover` | the replacement on another node keeps the stable MAC |
//! | `owner` | two routers with one EGRESS_SOURCE: the second is refused, one of two started together stays |
//! | `health` | slow clients of one pod cannot starve `/healthz` |
//! | `soak` | mixed churn loses no established flow |

mod agent;
mod errors;
mod failover;
mod health;
mod operate;
mod owner;
mod reload;
mod soak;
mod teardown;
mod upgrade;
