//! Helpers shared by the lab tests.

use std::{process::Command, time::Duration};

use crate::{
    asset, egress_router_bin,
    lab::{EGRESS_SOURCE, GATEWAY_IP, Lab, METRICS_PORT, ROUTER_POD_IP, SERVER_IP},
    netns::{Netns, run_bounded},
};

/// Runs `cmd`, bounded in time; returns stdout, panics with its stderr on failure.
pub fn stdout_ok(cmd: &mut Command, limit: Duration) -> String {
    let out = run_bounded(cmd, limit).unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command in `ns`, bounded in time; returns stdout, panics with stderr on failure.
pub fn run_ok(ns: &Netns, program: &str, args: &[&str], limit: u64) -> String {
    stdout_ok(ns.command(program).args(args), Duration::from_secs(limit))
}

/// Runs a tool in the test's own namespaces (bpftool on the lab's bpffs) and returns its
/// stdout; panics if it fails.
pub fn run_ok_here(program: &str, args: &[&str]) -> String {
    stdout_ok(Command::new(program).args(args), Duration::from_secs(10))
}

/// Starts a peer server (tests/assets/peer_server.py) in the server namespace.
pub fn peer_server(lab: &mut Lab, kind: &str, port: u16) {
    let script = asset("peer_server.py");
    let mut cmd = lab.server.command("python3");
    cmd.arg(script)
        .args([kind, &SERVER_IP.to_string(), &port.to_string()]);
    lab.spawn(cmd).unwrap();
}

/// Starts a peer server of `kind` (see tests/assets/peer_server.py) on `addr`:`port` in the
/// server namespace, with `extra` arguments (the certificate and key of `https`).
pub fn peer_server_at(lab: &mut Lab, kind: &str, addr: &str, port: u16, extra: &[&str]) {
    let mut cmd = lab.server.command("python3");
    cmd.arg(asset("peer_server.py"))
        .args([kind, addr, &port.to_string()])
        .args(extra);
    lab.spawn(cmd).unwrap();
}

/// Waits until something listens on TCP `port` in the server namespace.
pub fn wait_listening(lab: &Lab, port: u16) {
    wait_listening_in(&lab.server, port);
}

/// Waits (at most 10 s) until something listens on TCP `port` in `ns`.
pub fn wait_listening_in(ns: &Netns, port: u16) {
    wait_sockets(ns, &["-Htln", &format!("sport = :{port}")], |n| n > 0);
}

/// Waits (at most 10 s) until the sockets `ss ARGS` lists in `ns` are as many as `want`
/// accepts; panics naming the query otherwise.
pub fn wait_sockets(ns: &Netns, args: &[&str], want: impl Fn(usize) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = run_ok(ns, "ss", args, 5);
        if want(out.lines().count()) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ss {args:?} in {}: {out}",
            ns.name()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes a configuration file the way a ConfigMap update replaces it: the new content in a
/// file beside it, then renamed over it. (A truncating write lets the agent's one-second
/// poll read an empty or half-written file and count a spurious rejection.)
pub fn write_config(path: &std::path::Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// A scratch directory for a test's files (served pages, downloads), unique per process and
/// removed with everything in it on Drop, also when the test panics.
#[derive(Debug)]
pub struct TempDir(std::path::PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.0)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("removing {}: {err}", self.0.display());
        }
    }
}

/// A new [`TempDir`] named after `tag` (`er-test-PID-TAG` under the temporary directory).
pub fn tempdir(tag: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("er-test-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// `curl URL` from the client through the HTTP proxy at `proxy` (a URL) with `extra`
/// arguments: "STATUS BODY".
pub fn fetch_via(lab: &Lab, proxy: &str, url: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "-s",
        "--max-time",
        "10",
        "--proxy",
        proxy,
        "-w",
        " %{http_code}",
    ];
    args.extend_from_slice(extra);
    args.push(url);
    let out = run_ok(&lab.client, "curl", &args, 15);
    match out.rsplit_once(' ') {
        Some((body, status)) => format!("{status} {}", body.trim()),
        None => out,
    }
}

/// `egress-router teardown` for `instance` in the router namespace, by hand: without
/// EGRESS_SOURCE and EGRESS_GATEWAY (the running data plane names them); asserts it
/// succeeds and returns its `teardown done` event (what it removed).
pub fn teardown_by_hand(lab: &Lab, instance: &str) -> serde_json::Value {
    let out = run_bounded(
        lab.router
            .command(egress_router_bin())
            .env_remove("EGRESS_SOURCE")
            .env_remove("EGRESS_GATEWAY")
            .arg("--bpffs")
            .arg(lab.bpffs.path())
            .args(["--instance", instance, "--log-format", "json", "teardown"]),
        Duration::from_secs(20),
    )
    .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "teardown done")
        .unwrap_or_else(|| panic!("no 'teardown done' in {log}"))
}

/// One line through a redirect port: what the peer server saw ("IP PORT"), or "" on failure.
pub fn ask(lab: &Lab, port: u16) -> String {
    let out = run_bounded(
        lab.client.command("sh").args([
            "-c",
            &format!("printf 'hi\\n' | nc -N -w 3 {ROUTER_POD_IP} {port}"),
        ]),
        Duration::from_secs(10),
    )
    .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `egress-router ARGS` in the router namespace (the caller's mount namespace), with the
/// lab's EGRESS_SOURCE and EGRESS_GATEWAY.
pub fn router_cli(lab: &Lab, instance: &str, args: &[&str]) -> String {
    stdout_ok(
        lab.router
            .command(egress_router_bin())
            .env("EGRESS_SOURCE", EGRESS_SOURCE.to_string())
            .env("EGRESS_GATEWAY", GATEWAY_IP.to_string())
            .arg("--bpffs")
            .arg(lab.bpffs.path())
            .args(["--instance", instance])
            .args(args),
        Duration::from_secs(20),
    )
}

/// The drop counters of `instance` (`egress-router stats`), by reason, in packets.
pub fn drop_counts(lab: &Lab, instance: &str) -> std::collections::BTreeMap<String, u64> {
    drops_in(&router_cli(lab, instance, &["stats"]))
}

/// The drop counters in the output of `egress-router stats`, by reason, in packets.
#[must_use]
pub fn drops_in(stats: &str) -> std::collections::BTreeMap<String, u64> {
    stats
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let reason = words.next()?.strip_prefix("drop:")?;
            Some((reason.to_owned(), words.next()?.parse().ok()?))
        })
        .collect()
}

/// A scrape of the agent's `/metrics` on the pod IP, from the client namespace.
pub fn metrics(lab: &Lab) -> prometheus_parse::Scrape {
    let body = run_ok(
        &lab.client,
        "curl",
        &[
            "-sf",
            "--max-time",
            "5",
            &format!("http://{ROUTER_POD_IP}:{METRICS_PORT}/metrics"),
        ],
        10,
    );
    // The text format demands HELP/TYPE before samples and a value per sample line.
    for line in body.lines() {
        assert!(
            line.starts_with("# HELP ")
                || line.starts_with("# TYPE ")
                || line
                    .rsplit_once(' ')
                    .is_some_and(|(_, v)| v.parse::<f64>().is_ok()),
            "not a Prometheus text line: {line:?}"
        );
    }
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of metric `name` (with `label` = value, if given) in a scrape; panics unless
/// exactly one sample matches.
pub fn metric(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    let samples: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .collect();
    assert_eq!(samples.len(), 1, "one sample of {name} {label:?}");
    match samples[0].value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

/// `egress-router` in the router namespace as an unprivileged main container runs it:
/// user and group `nobody`, no capabilities (OpenShift runs the proxies' main containers so).
pub fn unprivileged_router(lab: &Lab) -> Command {
    let mut cmd = lab.router.command("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ])
    .arg(egress_router_bin());
    cmd
}

/// The MAC of interface `dev` in `ns`, as `ip` prints it.
pub fn mac_of(ns: &Netns, dev: &str) -> String {
    ns.mac(dev).unwrap_or_else(|_| "-".to_owned())
}

/// The paths under `dir` (a bpffs), sorted: what a failed command must not have pinned.
pub fn pins(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    names.sort();
    names
}

/// OpenShift's dns-proxy main container in the lab's router namespace: the same image with
/// only `EGRESS_DNS_PROXY_DESTINATION` (`routes`, with EGRESS_DNS_PROXY_DEBUG) and the
/// lab's resolver; `privileged` selects the data plane, else it runs as nobody without
/// capabilities and serves with the userspace relay. Returns the daemon's index.
pub fn spawn_dns_proxy(
    lab: &mut Lab,
    routes: &str,
    resolv_conf: &std::path::Path,
    privileged: bool,
) -> usize {
    let mut proxy = if privileged {
        lab.router.command(egress_router_bin())
    } else {
        unprivileged_router(lab)
    };
    proxy
        .env_clear()
        .env("EGRESS_DNS_PROXY_DESTINATION", routes)
        .env("EGRESS_DNS_PROXY_DEBUG", "1")
        .arg("--resolv-conf")
        .arg(resolv_conf)
        .arg("--bpffs")
        .arg(lab.bpffs.path());
    let index = lab.daemons_len();
    lab.spawn(proxy).unwrap();
    index
}

/// TCP packets that entered namespace `ns` from now on (an nftables counter at the first
/// hook).
pub fn count_tcp_in(ns: &Netns) -> impl Fn() -> u64 + '_ {
    let rules = "table inet seen {\n counter tcp_in { }\n chain pre { type filter hook \
                 prerouting priority -400; meta l4proto tcp counter name tcp_in; }\n}\n";
    let file = std::env::temp_dir().join(format!("er-nft-{}-{}", std::process::id(), ns.name()));
    std::fs::write(&file, rules).unwrap();
    run_ok(ns, "nft", &["-f", file.to_str().unwrap()], 5);
    let _ = std::fs::remove_file(&file);
    move || {
        let out = run_ok(
            ns,
            "nft",
            &["-j", "list", "counter", "inet", "seen", "tcp_in"],
            5,
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["nftables"]
            .as_array()
            .and_then(|items| items.iter().find_map(|i| i["counter"]["packets"].as_u64()))
            .expect("the counter")
    }
}

/// `curl` from `ns` to `url` (3 s at most; IPv6 literals in brackets taken as they are):
/// the body, or what curl said when it failed.
pub fn curl(ns: &Netns, url: &str) -> Result<String, String> {
    let out = run_bounded(
        ns.command("curl").args(["-sS", "-g", "-m", "3", url]),
        Duration::from_secs(10),
    )
    .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A download of `bytes` (iperf3's size, e.g. `64M`) from the iperf3 server behind
/// `target` port `port` to `ns` (`-R`: the reply direction), within 20 s; the bytes
/// received, and what iperf3 said on stderr.
pub fn download(ns: &Netns, target: std::net::IpAddr, port: u16, bytes: &str) -> (u64, String) {
    let out = run_bounded(
        ns.command("iperf3").args([
            "-c",
            &target.to_string(),
            "-p",
            &port.to_string(),
            "-R",
            "-n",
            bytes,
            "-J",
        ]),
        Duration::from_secs(20),
    )
    .expect("iperf3 ran");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let received = json["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    (received, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// How the router under test attaches its TC programs, as `status` names it: `tc` when the
/// suite runs with `EGRESS_ROUTER_ATTACH=tc` (xtask runs the attaching tests once more so),
/// else what `auto` takes on this kernel.
#[must_use]
pub fn attach_kind() -> &'static str {
    match std::env::var("EGRESS_ROUTER_ATTACH").as_deref() {
        Ok("tc") => "tc",
        Ok("tcx") => "tcx",
        _ if egress_user::dataplane::attach::tcx_supported() => "tcx",
        _ => "tc",
    }
}

/// The translated flows of client address `from` in `egress-router conntrack --json` of
/// `instance`.
pub fn nat_flows_from(lab: &Lab, instance: &str, from: &str) -> usize {
    let json = router_cli(lab, instance, &["conntrack", "--json"]);
    serde_json::from_str::<serde_json::Value>(&json)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "nat" && f["original"]["src"] == from)
        .count()
}
