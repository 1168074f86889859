//! The command line: clap definitions, the entrypoint rule, and dispatch to one file per
//! subcommand. Every variable of OpenShift's image is also a flag.
//!
//! | module | subcommand |
//! |---|---|
//! | `args` | the option groups (one concern each) that the subcommands flatten |
//! | `parse` | options accepted before or after the subcommand they apply to |
//! | `run` | the default command: what `EGRESS_ROUTER_MODE` says |
//! | `http_proxy` | `http-proxy`: the HTTP proxy pod's main container |
//! | `dns_proxy` | `dns-proxy`: the DNS proxy pod's main container |
//! | `status` | `status` |
//! | `conntrack` | `conntrack` |
//! | `stats` | `stats` |
//! | `teardown` | `teardown` |
//! | `check` | `check`: the preflight of the egress network |
//! | `features` | `features`: the kernel features the data plane uses, probed |
//! | `node` | `node`, `node-register`, `node-status`, `node-teardown` |
//! | `attach` | `attach`: low level, the pod interface's program alone, maps pinned |
//! | `tests` | the command tree: help on every option, which options each subcommand reads |

mod args;
mod attach;
mod check;
mod conntrack;
mod dns_proxy;
mod features;
mod http_proxy;
mod node;
mod parse;
mod run;
mod stats;
mod status;
mod teardown;
#[cfg(test)]
mod tests;

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};
use egress_user::{config::error::ConfigError, error_chain};

use crate::cli::{
    args::{LogFormat, Logging, Resolver},
    dns_proxy::{DnsProxyArgs, DnsProxyOptions},
    http_proxy::{HttpProxyArgs, HttpProxyOptions, HttpProxyRules},
    run::RunArgs,
};

#[derive(Parser)]
#[command(
    version,
    about = "Dedicated, allow-listable egress IP for pods, in eBPF",
    after_help = "Without a command: what EGRESS_ROUTER_MODE says, or the proxy its variables \
                  name. An option above may also be written before a command that reads it; \
                  `egress-router COMMAND --help` lists what each command reads."
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) logging: Logging,
    #[command(flatten)]
    pub(crate) modeless: Modeless,
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// The options of the form without a subcommand (OpenShift's image, driven by variables):
/// what its implicit commands read (`run`, and the proxies of the entrypoint rule). Given
/// before a subcommand, they go to it (see [`parse`]).
#[derive(Args)]
pub(crate) struct Modeless {
    #[command(flatten)]
    pub(crate) run: RunArgs,
    #[command(flatten)]
    pub(crate) http: HttpProxyRules,
    #[command(flatten)]
    pub(crate) dns: DnsProxyOptions,
    #[command(flatten)]
    pub(crate) resolver: Resolver,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Do what EGRESS_ROUTER_MODE says (the default).
    Run(RunArgs),
    /// The HTTP proxy of an HTTP proxy pod's main container (EGRESS_HTTP_PROXY_DESTINATION):
    /// forward requests and CONNECT tunnels, on the pod IP, out from EGRESS_SOURCE.
    HttpProxy(HttpProxyArgs),
    /// The DNS proxy of a DNS proxy pod's main container (EGRESS_DNS_PROXY_DESTINATION): in
    /// the data plane when the process may update BPF maps, else a userspace relay.
    DnsProxy(DnsProxyArgs),
    /// Low level: load the data plane and attach it to an interface's ingress without
    /// changing the network, pin its maps, and exit. The attachment belongs to the interface.
    Attach(attach::AttachArgs),
    /// The running instance: interfaces, attached programs, rules with their counters.
    Status(status::StatusArgs),
    /// The tracked connections: original and translated tuples, state, age.
    Conntrack(conntrack::ConntrackArgs),
    /// The data plane's packet counters, drops by reason and allocation retries.
    Stats(conntrack::RunningArgs),
    /// Remove what this instance added: programs, pins, the egress interface it created (or
    /// EGRESS_SOURCE and its routes on one it did not).
    Teardown(teardown::TeardownArgs),
    /// Preflight of the egress network: link, EGRESS_SOURCE free, the gateway answering the
    /// router's MAC (else: MAC filtering, and the fix per platform). Changes nothing that
    /// stays. Exit status: 0 ok, 1 setup missing, 2 link down, 3 EGRESS_SOURCE in use, 4 MAC
    /// filtered, 5 gateway unreachable.
    Check(check::CheckArgs),
    /// The kernel features the data plane and the agents use, probed on this kernel: which
    /// are there, what takes the place of a missing one, and whether each mode can run.
    Features(features::FeaturesArgs),
    /// The node agent (a DaemonSet, hostNetwork): serves every instance whose router pod
    /// registered in the spool, from the node's uplink, with no macvlan.
    Node(node::NodeArgs),
    /// A router pod's init container in node mode: validate the variables and register the
    /// instance with the node agent.
    NodeRegister(node::RegisterArgs),
    /// The instances the node agent serves (from the node's pins under --bpffs): pod,
    /// host-side interface, EGRESS_SOURCE and gateway, rules with their counters, flows.
    /// `--instance node stats` and `--instance node conntrack` show the node's counters
    /// and flows.
    NodeStatus(node::NodeStatusArgs),
    /// Remove what the node agent left on the node (once its DaemonSet is gone): its
    /// programs on the pods' interfaces and the uplink, the XDP link, the gateways'
    /// managed neighbour entries, the node's pins. Prints what went, as JSON.
    NodeTeardown(node::NodeTeardownArgs),
}

pub(crate) fn main() -> ExitCode {
    let cli = parse::parse(std::env::args_os()).unwrap_or_else(|err| err.exit());
    init_logs(&cli.logging);
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Configuration errors are printed bare: OpenShift's texts, for scripts and docs.
            match err.downcast_ref::<ConfigError>() {
                Some(config) => eprintln!("{}", error_chain(config)),
                None => eprintln!("egress-router: {}", error_chain(&*err)),
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logs(logging: &Logging) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("EGRESS_ROUTER_LOG")
        .unwrap_or_else(|_| EnvFilter::new(if logging.debug() { "debug" } else { "info" }));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match logging.log_format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    let debug = cli.logging.debug();
    let command = match cli.command {
        Some(command) => command,
        None => implicit_command(cli.modeless)?,
    };
    match command {
        Command::Run(args) => run::execute(&args, debug),
        Command::HttpProxy(args) => http_proxy::execute(&args),
        Command::DnsProxy(args) => dns_proxy::execute(&args, debug),
        Command::Attach(args) => attach::execute(&args),
        Command::Status(args) => status::execute(&args),
        Command::Conntrack(args) => conntrack::execute(&args),
        Command::Stats(args) => stats::execute(&args),
        Command::Teardown(args) => teardown::execute(&args),
        Command::Check(args) => check::execute(&args),
        Command::Features(args) => features::execute(&args),
        Command::Node(args) => node::execute(&args),
        Command::NodeRegister(args) => node::register(&args),
        Command::NodeStatus(args) => node::status(&args),
        Command::NodeTeardown(args) => node::teardown(&args),
    }
}

/// What to do without a subcommand: the entrypoint rule that lets one image serve both
/// containers of OpenShift's proxy Deployments.
///
/// 1. `EGRESS_ROUTER_MODE` set and not empty: that mode (the init container).
/// 2. Else `EGRESS_HTTP_PROXY_DESTINATION` present: `http-proxy` (the main container).
/// 3. Else `EGRESS_DNS_PROXY_DESTINATION` present: `dns-proxy`.
/// 4. Else the default mode, legacy.
fn implicit_command(args: Modeless) -> Result<Command> {
    let Modeless {
        run,
        http,
        dns,
        resolver,
    } = args;
    if run.mode.as_deref().is_some_and(|m| !m.trim().is_empty()) {
        return Ok(Command::Run(run));
    }
    // Present counts, even empty: an empty value then gets the proxy's own error.
    let present =
        |name: &str, value: &Option<String>| value.is_some() || std::env::var_os(name).is_some();
    let http_present = present(
        "EGRESS_HTTP_PROXY_DESTINATION",
        &http.http_proxy_destination,
    );
    let dns_present = present("EGRESS_DNS_PROXY_DESTINATION", &dns.dns_proxy_destination);
    match (http_present, dns_present) {
        (true, true) => bail!(
            "EGRESS_HTTP_PROXY_DESTINATION and EGRESS_DNS_PROXY_DESTINATION are both set and \
             EGRESS_ROUTER_MODE is not: run `egress-router http-proxy` or `egress-router \
             dns-proxy`, or set EGRESS_ROUTER_MODE"
        ),
        (true, false) => Ok(Command::HttpProxy(HttpProxyArgs {
            options: HttpProxyOptions::try_parse_from(["egress-router http-proxy"])
                .map_err(|err| anyhow::anyhow!("{}", err.render()))?,
            rules: http,
            resolver,
            source: run.source,
            pod: run.pod,
            egress: run.egress,
        })),
        (false, true) => Ok(Command::DnsProxy(DnsProxyArgs {
            dns,
            resolver,
            source: run.source,
            gateway: run.gateway,
            pins: run.pins,
            pod: run.pod,
            egress: run.egress,
            network: run.network,
            conntrack: run.conntrack,
            agent: run.agent,
            kernel: run.kernel,
        })),
        (false, false) => Ok(Command::Run(run)),
    }
}
