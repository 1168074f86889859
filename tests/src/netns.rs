//! A named network namespace that is deleted on Drop, and commands run inside it.

use std::{
    ffi::OsStr,
    fs::File,
    io,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// Directory where `ip netns` keeps its named namespaces.
const NETNS_RUN_DIR: &str = "/var/run/netns";

/// A named network namespace (`ip netns add`), deleted with everything in it on Drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    file: File,
}

impl Netns {
    /// Creates the namespace `name` with its loopback up.
    pub fn new(name: &str) -> Result<Self> {
        run_checked(Command::new("ip").args(["netns", "add", name]))?;
        let path = format!("{NETNS_RUN_DIR}/{name}");
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(err) => {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
                return Err(err).with_context(|| format!("opening {path}"));
            }
        };
        let ns = Self {
            name: name.to_owned(),
            file,
        };
        // The data plane is IPv4. Without IPv6, links created later get no link-local
        // addresses, and no router solicitations or MLD reports show up in counters.
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        // A new namespace inherits IPv4 forwarding from the host's (a container host often
        // has it on): off, as a pod's namespace starts; namespaces that route turn it on.
        ns.sysctl("net.ipv4.ip_forward", "0")?;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns list` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs inside this namespace. Only the network namespace changes: the
    /// mount namespace stays the caller's (unlike `ip netns exec`), so a bpffs mounted by the
    /// test is visible and outlives the command.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let fd = self.file.as_raw_fd();
        // SAFETY: setns is async-signal-safe; `fd` stays open in the parent until the child
        // has exec'd (the Command borrows nothing, but `self` outlives every spawn here).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
        cmd
    }

    /// Runs `ip ARGS` in this namespace and fails with its stderr if it fails.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        run_checked(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// The MAC address of interface `dev` in this namespace, as `ip` prints it.
    pub fn mac(&self, dev: &str) -> Result<String> {
        let out = self
            .command("ip")
            .args(["-j", "link", "show", dev])
            .output()?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("ip -j link show {dev} in {}", self.name))?;
        json[0]["address"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no MAC address for {dev} in {}", self.name))
    }

    /// Sets a sysctl of this namespace (e.g. `net.ipv4.ip_forward`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        run_checked(
            self.command("sysctl")
                .arg("-q")
                .arg("-w")
                .arg(format!("{key}={value}")),
        )
    }

    /// Loads the nftables ruleset `rules` (`nft -f -`) in the namespace; `what` names it in
    /// the error.
    pub fn nft(&self, rules: &str, what: &str) -> Result<()> {
        let mut nft = self.command("nft");
        nft.args(["-f", "-"]).stdin(std::process::Stdio::piped());
        let mut child = nft.spawn().context("nft")?;
        std::io::Write::write_all(child.stdin.as_mut().context("stdin")?, rules.as_bytes())?;
        drop(child.stdin.take());
        if !child.wait()?.success() {
            bail!("nft rejected {what}");
        }
        Ok(())
    }

    /// The namespace's configuration as text: links (name, MTU, address, master), addresses
    /// and routes, without operational state, counters or timers. Equal before and after an
    /// operation that must not change the network.
    pub fn network_state(&self) -> Result<String> {
        let ip = |args: &[&str]| -> Result<String> {
            let out = self
                .command("ip")
                .args(args)
                .output()
                .with_context(|| format!("ip {args:?}"))?;
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let mut state = String::new();
        let mut names = Vec::new();
        for line in ip(&["-d", "-o", "link", "show"])?.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let after = |key: &str| {
                words
                    .iter()
                    .position(|w| *w == key)
                    .and_then(|i| words.get(i + 1))
                    .copied()
                    .unwrap_or("-")
            };
            let name = words.get(1).copied().unwrap_or("?");
            names.push(
                name.trim_end_matches(':')
                    .split('@')
                    .next()
                    .unwrap_or("?")
                    .to_owned(),
            );
            // XDP shows as "prog/xdp id N" (or xdpgeneric, xdpdrv) in the details.
            let xdp = words
                .iter()
                .position(|w| w.starts_with("prog/xdp"))
                .map(|i| {
                    words[i..]
                        .iter()
                        .take(3)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_else(|| "-".to_owned());
            let mac = words
                .iter()
                .position(|w| w.starts_with("link/"))
                .and_then(|i| words.get(i + 1))
                .copied()
                .unwrap_or("-");
            state.push_str(&format!(
                "link {name} mtu {} master {} mac {mac} xdp {xdp}\n",
                after("mtu"),
                after("master")
            ));
        }
        // TC programs by hook (TCX's, which `tc filter show` cannot see, then cls_bpf's), as
        // program ids: a replaced program is a change too.
        let tcx = self.enter(|| {
            use egress_user::dataplane::programs::Hook::{TcEgress, TcIngress};
            names
                .iter()
                .map(|name| {
                    let index = egress_user::network::interface::ifindex(name).unwrap_or(0);
                    let ids = |hook| {
                        egress_user::dataplane::attach::program_ids(index, hook)
                            .map(|ids| format!("{ids:?}"))
                            .unwrap_or_else(|e| format!("({e})"))
                    };
                    format!(
                        "tcx {name} ingress {} egress {}\n",
                        ids(TcIngress),
                        ids(TcEgress)
                    )
                })
                .collect::<String>()
        })?;
        state.push_str(&tcx);
        // Classifier qdiscs (a clsact left behind by the tc attachment is a change too).
        for name in &names {
            let out = self
                .command("tc")
                .args(["qdisc", "show", "dev", name])
                .output()
                .context("tc qdisc show")?;
            // Only the classifier qdiscs (a root qdisc comes and goes with the link's state).
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let words: Vec<&str> = line.split_whitespace().take(3).collect();
                if matches!(words.get(1), Some(&("clsact" | "ingress"))) {
                    state.push_str(&format!("qdisc {name} {}\n", words.join(" ")));
                }
            }
        }
        // The sysctls a router could touch: forwarding, reverse-path and ARP behaviour,
        // the local port range, IPv6 on or off.
        let sysctl = self
            .command("sysctl")
            .args([
                "-a",
                "-r",
                concat!(
                    r"^net\.ipv4\.(ip_forward|ip_local_port_range)$",
                    r"|^net\.ipv4\.conf\.[^.]+\.(forwarding|rp_filter|arp_ignore|arp_announce",
                    r"|arp_notify|proxy_arp|accept_local|route_localnet|send_redirects)$",
                    r"|^net\.ipv6\.conf\.[^.]+\.(disable_ipv6|forwarding)$",
                ),
            ])
            .output()
            .context("sysctl -a")?;
        state.push_str(&String::from_utf8_lossy(&sysctl.stdout));
        for line in ip(&["-o", "addr", "show"])?.lines() {
            let words: Vec<&str> = line.split_whitespace().take(4).collect();
            state.push_str(&format!("addr {}\n", words[1..].join(" ")));
        }
        for family in ["-4", "-6"] {
            for line in ip(&[family, "route", "show", "table", "all"])?.lines() {
                let route = line.split(" expires ").next().unwrap_or(line).trim();
                state.push_str(&format!("route {route}\n"));
            }
        }
        Ok(state)
    }

    /// Runs `f` on a thread that has entered this namespace (e.g. to attach a program with the
    /// loader's library API). The thread ends with `f`, so no other code runs in the namespace.
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R> {
        let fd = self.file.as_raw_fd();
        thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: plain syscall on a valid fd; affects only this thread.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error()).context("setns");
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes keep a namespace (and its links) alive: end them first. Never panic here,
        // this may run while a test is already panicking.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: plain syscall.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "lab: deleting netns {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(err) => eprintln!("lab: deleting netns {}: {err}", self.name),
        }
    }
}

/// Runs `cmd` to completion and fails with its stderr if it fails.
pub fn run_checked(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `cmd`, killing it after `limit`, and returns its output (whatever its exit status).
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    wait_bounded(child, limit).with_context(|| format!("{cmd:?}"))
}

/// Waits for `child` at most `limit`, then kills it; returns its output. Its stdout and
/// stderr are read while it runs, so a child that writes more than a pipe holds (64 KiB)
/// is not blocked until the deadline.
pub fn wait_bounded(mut child: Child, limit: Duration) -> Result<Output> {
    // Read on threads that hand the bytes over a channel: a grandchild that inherited the
    // pipe may hold it open after the child is gone, and must not hold this up for long.
    fn drain(
        pipe: Option<impl std::io::Read + Send + 'static>,
    ) -> std::sync::mpsc::Receiver<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            let _ = tx.send(buf);
        });
        rx
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let stdout = stdout
        .recv_timeout(Duration::from_secs(2))
        .unwrap_or_default();
    let stderr = stderr
        .recv_timeout(Duration::from_secs(2))
        .unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => bail!(
            "still running after {limit:?}; killed. stdout: {} stderr: {}",
            String::from_utf8_lossy(&stdout).trim(),
            String::from_utf8_lossy(&stderr).trim()
        ),
    }
}
