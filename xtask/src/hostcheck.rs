//! The test suite must leave the host as it found it: no lab namespace, and no new link,
//! address, route, firewall rule, forwarding setting, bpffs pin or mount in the root
//! namespace, no BPF program or link still
//! loaded (wherever it is attached: TCX in the root namespace is invisible to `tc`), no
//! process of the kinds the tests start, and no temporary file of theirs. `cargo xtask test`
//! takes a snapshot before and after the suite and fails on any difference.

use std::{collections::BTreeSet, path::Path, process::Command};

use anyhow::{Result, bail};

use crate::output;

/// Must match `egress_tests::lab::NETNS_PREFIX`.
const LAB_PREFIX: &str = "er-lab-";

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    sections: Vec<(&'static str, BTreeSet<String>)>,
}

impl Snapshot {
    pub(crate) fn take() -> Result<Self> {
        let Some(links) = output("ip", &["-o", "link", "show"]) else {
            bail!("`ip -o link show` failed");
        };
        // "2: eth0@if3: <FLAGS> mtu ..." -> "2: eth0@if3" (state and counters may change).
        let links = links
            .lines()
            .map(|l| l.split(": <").next().unwrap_or(l).to_owned())
            .collect();
        // "2: eth0    inet 10.0.0.2/24 brd ... scope global eth0\ valid_lft ..." -> "eth0 inet 10.0.0.2/24"
        let addrs = output("ip", &["-o", "addr", "show"])
            .unwrap_or_default()
            .lines()
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let routes = ["-4", "-6"]
            .iter()
            .flat_map(|family| {
                output("ip", &[family, "route", "show", "table", "all"])
                    .unwrap_or_default()
                    .lines()
                    .map(|l| l.split(" expires ").next().unwrap_or(l).trim().to_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
        let netns = netns_names().into_iter().collect();
        let mut pins = BTreeSet::new();
        list_tree(Path::new("/sys/fs/bpf"), &mut pins);
        let mounts = std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" bpf ") || l.contains(LAB_PREFIX))
            .map(str::to_owned)
            .collect();
        // Loaded programs and links, by id: system-wide, so a program left attached in any
        // namespace (or held by a leaked process or pin) shows.
        let bpf = |what: &str| -> BTreeSet<String> {
            let json = output("bpftool", &[what, "show", "-j"]).unwrap_or_default();
            serde_json::from_str::<Vec<serde_json::Value>>(&json)
                .unwrap_or_default()
                .iter()
                .map(|v| format!("{} {} {}", v["id"], v["type"], v["name"]))
                .collect()
        };
        // The root namespace's firewall and forwarding: a container runtime started with
        // its default network adds both (netavark's chains, ip_forward=1).
        let ruleset = output("nft", &["list", "ruleset"])
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        let sysctls = ["net/ipv4/ip_forward", "net/ipv4/conf/all/forwarding"]
            .iter()
            .map(|key| {
                let value =
                    std::fs::read_to_string(Path::new("/proc/sys").join(key)).unwrap_or_default();
                format!("{key} = {}", value.trim())
            })
            .collect();
        Ok(Self {
            sections: vec![
                ("root firewall (nft list ruleset)", ruleset),
                ("root sysctls", sysctls),
                ("loaded BPF programs", bpf("prog")),
                ("BPF links", bpf("link")),
                ("processes the tests start", test_processes()),
                (TEMP_FILES, temp_files()),
                ("links", links),
                ("addresses", addrs),
                ("routes", routes),
                ("network namespaces", netns),
                ("pins under /sys/fs/bpf", pins),
                ("bpf and lab mounts", mounts),
            ],
        })
    }

    /// Compares the host now with `self`, again for up to 5 s while they differ: the
    /// kernel deletes a network namespace asynchronously, and the programs attached in it
    /// are freed only then.
    pub(crate) fn settled(&self) -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let result = self.compare(&Self::take()?);
            if result.is_ok() || std::time::Instant::now() > deadline {
                return result;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }

    /// Fails listing what `after` has that `self` had not, and what it lost.
    pub(crate) fn compare(&self, after: &Self) -> Result<()> {
        let mut report = String::new();
        for ((name, before), (_, now)) in self.sections.iter().zip(&after.sections) {
            for added in now.difference(before) {
                report.push_str(&format!("\n  {name}: added   {added}"));
            }
            // A test's scratch directory is named by its process id: a stale one of an
            // earlier, interrupted run is removed when a test of this run gets that id
            // again. Cleaning up is not a change to the host.
            if *name == TEMP_FILES {
                continue;
            }
            for removed in before.difference(now) {
                report.push_str(&format!("\n  {name}: removed {removed}"));
            }
        }
        if !report.is_empty() {
            bail!("the test suite changed the host:{report}");
        }
        Ok(())
    }
}

/// The commands the tests and labs run as daemons or clients.
const TEST_COMMANDS: &[&str] = &[
    "egress-router",
    "iperf3",
    "dnsmasq",
    "nginx",
    "squid",
    "haproxy",
    "python3",
    "nc",
    "curl",
    "wrk",
    "socat",
    "dig",
    "setpriv",
    "ethtool",
];

/// "pid comm" of every running process whose command is one of [`TEST_COMMANDS`].
fn test_processes() -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            let comm = comm.trim();
            // comm is cut at 15 bytes ("egress-router" fits).
            TEST_COMMANDS
                .contains(&comm)
                .then(|| format!("{pid} {comm}"))
        })
        .collect()
}

/// The section of the temporary files.
const TEMP_FILES: &str = "temporary files of the tests";

/// The temporary directories and files the tests, labs and benches name with these prefixes.
const TEMP_PREFIXES: &[&str] = &[LAB_PREFIX, "er-test-", "er-demo-", "egress-btf-"];

fn temp_files() -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .map(|e| e.path().display().to_string())
        .filter(|path| {
            let name = path.rsplit('/').next().unwrap_or(path);
            TEMP_PREFIXES.iter().any(|p| name.starts_with(p))
        })
        .collect()
}

fn netns_names() -> Vec<String> {
    output("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn list_tree(dir: &Path, into: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        into.insert(path.display().to_string());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            list_tree(&path, into);
        }
    }
}

/// Removes labs left behind by a run that was killed (its pid, in the names, is gone): the
/// suite's own cleanup runs on Drop, which SIGKILL skips.
pub(crate) fn remove_stale_labs() {
    let alive = |pid: &str| Path::new("/proc").join(pid).exists();
    for name in netns_names() {
        let Some(pid) = name
            .strip_prefix(LAB_PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if alive(pid) {
            continue;
        }
        eprintln!("xtask: removing stale lab namespace {name} (its test run died)");
        if let Some(pids) = output("ip", &["netns", "pids", &name]) {
            for p in pids.split_whitespace() {
                let _ = Command::new("kill").args(["-9", p]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
    }
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(LAB_PREFIX)
                .and_then(|rest| rest.split('-').next())
            else {
                continue;
            };
            if !alive(pid) {
                eprintln!("xtask: removing stale lab bpffs {}", entry.path().display());
                let _ = Command::new("umount").arg("-l").arg(entry.path()).status();
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(links: &[&str]) -> Snapshot {
        Snapshot {
            sections: vec![("links", links.iter().map(|s| (*s).to_owned()).collect())],
        }
    }

    #[test]
    fn compare_reports_added_and_removed_entries() {
        let before = snapshot(&["1: lo", "2: eth0"]);
        assert!(before.compare(&snapshot(&["1: lo", "2: eth0"])).is_ok());
        let err = before
            .compare(&snapshot(&["1: lo", "9: veth-leak"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("added   9: veth-leak"), "{err}");
        assert!(err.contains("removed 2: eth0"), "{err}");
    }
}
