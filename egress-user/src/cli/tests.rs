//! The command line's shape: every option and subcommand has help, each subcommand takes
//! exactly the options it reads, options go before or after the subcommand, and the form
//! without a subcommand keeps OpenShift's variables, flags and defaults.

use std::{collections::BTreeSet, ffi::OsString};

use clap::{CommandFactory as _, error::ErrorKind};

use crate::cli::{Cli, Command, args::LogFormat, parse::parse};

fn try_parse(args: &[&str]) -> Result<Cli, clap::Error> {
    let argv = std::iter::once("egress-router").chain(args.iter().copied());
    parse(argv.map(OsString::from))
}

fn parsed(args: &[&str]) -> Cli {
    try_parse(args).unwrap_or_else(|err| panic!("{args:?}: {}", err.render()))
}

fn refused(args: &[&str]) -> clap::Error {
    match try_parse(args) {
        Ok(_) => panic!("{args:?} parsed"),
        Err(err) => err,
    }
}

/// The long options of `command`, the global ones (logging) and help aside.
fn options(command: &clap::Command) -> BTreeSet<&str> {
    command
        .get_arguments()
        .filter(|arg| !arg.is_global_set())
        .filter_map(clap::Arg::get_long)
        .collect()
}

/// What each subcommand reads: its options, and only those, are in its `--help`.
const APPLIES: &[(&str, &[&str])] = &[
    (
        "run",
        &[
            "mode",
            "egress-source",
            "egress-gateway",
            "egress-destination",
            "config-file",
            "bpffs",
            "instance",
            "pod-interface",
            "egress-interface",
            "macvlan-parent",
            "macvlan-mode",
            "keep-mac",
            "force-source",
            "conntrack-size",
            "gc-max-interval",
            "max-flows-per-source",
            "client-cidrs",
            "metrics-address",
            "health-address",
            "take-over",
            "attach",
        ],
    ),
    (
        "http-proxy",
        &[
            "port",
            "threads",
            "header-timeout",
            "max-connections",
            "tunnel-idle-timeout",
            "http-proxy-destination",
            "resolv-conf",
            "egress-source",
            "pod-interface",
            "egress-interface",
        ],
    ),
    (
        "dns-proxy",
        &[
            "dns-proxy-destination",
            "dns-proxy-max-connections",
            "dns-proxy-debug",
            "resolv-conf",
            "egress-source",
            "egress-gateway",
            "bpffs",
            "instance",
            "pod-interface",
            "egress-interface",
            "macvlan-parent",
            "macvlan-mode",
            "keep-mac",
            "force-source",
            "conntrack-size",
            "gc-max-interval",
            "max-flows-per-source",
            "client-cidrs",
            "metrics-address",
            "health-address",
            "take-over",
            "attach",
        ],
    ),
    ("attach", &["interface", "bpffs", "instance", "attach"]),
    (
        "status",
        &[
            "bpffs",
            "instance",
            "pod-interface",
            "egress-interface",
            "json",
        ],
    ),
    ("conntrack", &["bpffs", "instance", "pod-interface", "json"]),
    ("stats", &["bpffs", "instance", "pod-interface"]),
    (
        "teardown",
        &[
            "bpffs",
            "instance",
            "pod-interface",
            "egress-interface",
            "egress-source",
            "egress-gateway",
        ],
    ),
    (
        "check",
        &[
            "egress-source",
            "egress-gateway",
            "egress-destination",
            "pod-interface",
            "egress-interface",
            "macvlan-parent",
            "keep-mac",
            "json",
        ],
    ),
    (
        "node",
        &[
            "uplink",
            "spool",
            "instances",
            "no-arp",
            "node-metrics-address",
            "ipv6",
            "rescan-ms",
            "bpffs",
            "conntrack-size",
            "gc-max-interval",
            "max-flows-per-source",
            "client-cidrs",
            "attach",
        ],
    ),
    (
        "node-register",
        &[
            "spool",
            "pod-ip",
            "pod-ips",
            "stay",
            "config-name",
            "egress-source",
            "egress-gateway",
            "egress-destination",
            "pod-interface",
        ],
    ),
    ("node-status", &["bpffs", "json"]),
    ("features", &["json"]),
    ("node-teardown", &["uplink", "bpffs"]),
];

#[test]
fn every_option_and_subcommand_has_help() {
    fn visit(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in command.get_arguments() {
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path}: {}", arg.get_id()));
            }
        }
        for sub in command.get_subcommands() {
            let path = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                missing.push(path.clone());
            }
            visit(sub, &path, missing);
        }
    }
    let mut command = Cli::command();
    command.build();
    let mut missing = Vec::new();
    visit(&command, "egress-router", &mut missing);
    assert!(
        command.get_subcommands().count() > 10 && command.get_arguments().count() > 20,
        "the walk saw the tree"
    );
    assert!(missing.is_empty(), "without help text: {missing:?}");
}

#[test]
fn each_subcommand_takes_the_options_it_reads_and_no_other() {
    let command = Cli::command();
    let mut named = BTreeSet::new();
    for &(name, applies) in APPLIES {
        let sub = command.find_subcommand(name).unwrap();
        let expected: BTreeSet<&str> = applies.iter().copied().collect();
        assert_eq!(options(sub), expected, "{name}");
        named.insert(name);
    }
    let all: BTreeSet<&str> = command.get_subcommands().map(|s| s.get_name()).collect();
    assert_eq!(named, all, "every subcommand is in APPLIES");
    // What the review found: node-register listed the proxies' and conntrack's options.
    let register = options(command.find_subcommand("node-register").unwrap());
    for word in ["proxy", "conntrack", "gc-", "flows", "metrics", "resolv"] {
        assert!(
            register.iter().all(|option| !option.contains(word)),
            "node-register: {register:?}"
        );
    }
    // Every option of the form without a subcommand applies to some subcommand, so it can
    // be written before one.
    for option in options(&command) {
        assert!(
            APPLIES.iter().any(|(_, applies)| applies.contains(&option)),
            "--{option}"
        );
    }
}

#[test]
fn options_go_before_or_after_the_subcommand() {
    for args in [
        &["check", "--macvlan-parent", "ens4", "--json"][..],
        &["--macvlan-parent", "ens4", "check", "--json"],
        &["--macvlan-parent=ens4", "check", "--json"],
        &["check", "--json", "--macvlan-parent=ens4"],
    ] {
        let Some(Command::Check(check)) = parsed(args).command else {
            panic!("{args:?}: not check");
        };
        assert_eq!(check.parent.macvlan_parent.as_deref(), Some("ens4"));
        assert!(check.json.json, "{args:?}");
    }
    for args in [
        &["--instance", "a", "--log-format", "json", "stats"][..],
        &["stats", "--instance", "a", "--log-format", "json"],
        &["--log-format=json", "stats", "--instance=a"],
        &["--instance=a", "stats", "--log-format", "json"],
    ] {
        let cli = parsed(args);
        assert_eq!(cli.logging.log_format, LogFormat::Json, "{args:?}");
        let Some(Command::Stats(stats)) = cli.command else {
            panic!("{args:?}: not stats");
        };
        assert_eq!(stats.pins.instance, "a", "{args:?}");
    }
    // An option's value that is also a subcommand's name is the value.
    let Some(Command::Stats(stats)) = parsed(&["--instance", "stats", "stats"]).command else {
        panic!("not stats");
    };
    assert_eq!(stats.pins.instance, "stats");
    // Flags, and options of both agents.
    for args in [
        &["--take-over", "run"][..],
        &["run", "--take-over"],
        &["--gc-max-interval", "0.5", "--take-over", "run"],
    ] {
        let Some(Command::Run(run)) = parsed(args).command else {
            panic!("{args:?}: not run");
        };
        assert!(run.agent.take_over, "{args:?}");
    }
    for args in [
        &["node", "--uplink", "u", "--gc-max-interval", "0.5"][..],
        &["--gc-max-interval", "0.5", "node", "--uplink", "u"],
    ] {
        let Some(Command::Node(node)) = parsed(args).command else {
            panic!("{args:?}: not node");
        };
        assert!((node.conntrack.gc_max_interval - 0.5).abs() < f64::EPSILON);
    }
}

#[test]
fn an_option_before_a_subcommand_that_does_not_read_it_is_refused() {
    for (args, option, name) in [
        (
            &["--conntrack-size", "5", "node-register"][..],
            "conntrack-size",
            "node-register",
        ),
        (
            &["--http-proxy-destination", "*", "node-register"],
            "http-proxy-destination",
            "node-register",
        ),
        (&["--take-over", "check"], "take-over", "check"),
        (&["--bpffs", "/x", "check"], "bpffs", "check"),
        (
            &["--instance", "x", "node", "--uplink", "u"],
            "instance",
            "node",
        ),
    ] {
        let err = refused(args);
        assert_eq!(err.kind(), ErrorKind::UnknownArgument, "{args:?}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("--{option} does not apply to `{name}`")),
            "{args:?}: {text}"
        );
    }
    // After the subcommand, clap's own error; before and after, given twice.
    assert_eq!(
        refused(&["node-register", "--conntrack-size", "5"]).kind(),
        ErrorKind::UnknownArgument
    );
    assert_eq!(
        refused(&["--instance", "a", "stats", "--instance", "b"]).kind(),
        ErrorKind::ArgumentConflict
    );
}

#[test]
fn the_form_without_a_subcommand_keeps_its_flags_variables_and_defaults() {
    let command = Cli::command();
    let mut found: Vec<(String, Option<String>, Vec<String>)> = command
        .get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?.to_owned();
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            let defaults = arg
                .get_default_values()
                .iter()
                .map(|d| d.to_string_lossy().into_owned())
                .collect();
            Some((long, env, defaults))
        })
        .collect();
    found.sort();
    let mut expected: Vec<(String, Option<String>, Vec<String>)> = [
        ("attach", Some("EGRESS_ROUTER_ATTACH"), Some("auto")),
        (
            "bpffs",
            Some("EGRESS_ROUTER_BPFFS"),
            Some("/sys/fs/bpf/egress-router"),
        ),
        ("client-cidrs", Some("EGRESS_ROUTER_CLIENT_CIDRS"), None),
        ("config-file", Some("EGRESS_ROUTER_CONFIG_FILE"), None),
        (
            "conntrack-size",
            Some("EGRESS_ROUTER_CONNTRACK_SIZE"),
            Some("262144"),
        ),
        ("debug", Some("EGRESS_ROUTER_DEBUG"), None),
        ("dns-proxy-debug", Some("EGRESS_DNS_PROXY_DEBUG"), None),
        (
            "dns-proxy-destination",
            Some("EGRESS_DNS_PROXY_DESTINATION"),
            None,
        ),
        (
            "dns-proxy-max-connections",
            Some("EGRESS_DNS_PROXY_MAX_CONNECTIONS"),
            Some("4096"),
        ),
        ("egress-destination", Some("EGRESS_DESTINATION"), None),
        ("egress-gateway", Some("EGRESS_GATEWAY"), None),
        ("egress-interface", None, Some("macvlan0")),
        ("egress-source", Some("EGRESS_SOURCE"), None),
        ("force-source", Some("EGRESS_ROUTER_FORCE_SOURCE"), None),
        (
            "gc-max-interval",
            Some("EGRESS_ROUTER_GC_MAX_INTERVAL"),
            Some("30"),
        ),
        (
            "http-proxy-destination",
            Some("EGRESS_HTTP_PROXY_DESTINATION"),
            None,
        ),
        ("instance", Some("EGRESS_ROUTER_INSTANCE"), Some("default")),
        ("keep-mac", Some("EGRESS_ROUTER_KEEP_MAC"), None),
        ("log-format", Some("EGRESS_ROUTER_LOG_FORMAT"), Some("text")),
        (
            "macvlan-mode",
            Some("EGRESS_ROUTER_MACVLAN_MODE"),
            Some("private"),
        ),
        ("macvlan-parent", Some("EGRESS_ROUTER_MACVLAN_PARENT"), None),
        (
            "max-flows-per-source",
            Some("EGRESS_ROUTER_MAX_FLOWS_PER_SOURCE"),
            None,
        ),
        (
            "metrics-address",
            Some("EGRESS_ROUTER_METRICS_ADDRESS"),
            Some(":9469"),
        ),
        (
            "health-address",
            Some("EGRESS_ROUTER_HEALTH_ADDRESS"),
            Some("off"),
        ),
        ("mode", Some("EGRESS_ROUTER_MODE"), None),
        ("pod-interface", None, Some("eth0")),
        ("resolv-conf", None, Some("/etc/resolv.conf")),
        ("take-over", Some("EGRESS_ROUTER_TAKE_OVER"), None),
    ]
    .into_iter()
    .map(|(long, env, default)| {
        (
            long.to_owned(),
            env.map(str::to_owned),
            default.into_iter().map(str::to_owned).collect(),
        )
    })
    .collect();
    expected.sort();
    assert_eq!(found, expected);
    // Without a subcommand, nothing is a subcommand's.
    let cli = parsed(&[
        "--instance",
        "a",
        "--conntrack-size",
        "5",
        "--resolv-conf",
        "/r",
    ]);
    assert!(cli.command.is_none());
    assert_eq!(cli.modeless.run.pins.instance, "a");
    assert_eq!(cli.modeless.run.conntrack.conntrack_size, 5);
    assert_eq!(cli.modeless.resolver.resolv_conf.to_str(), Some("/r"));
}
