//! A soak in the netns lab: mixed churn for `EGRESS_SOAK_SECONDS` (CI: 45 s; `cargo xtask
//! soak`: 10 minutes) against one instance, then the checks a user would make.
//!
//! Churn, all at once: short TCP connections, connections ended by RST, UDP queries,
//! connections opened and left idle, a spray of UDP flows nobody answers from another
//! client (the table of unanswered flows under pressure), agent restarts by SIGKILL (the
//! data plane stays) and configuration reloads (a rule added and removed).
//!
//! Checks: every long-lived connection, busy or idle the whole time, still answers with the
//! translation it started with (no established flow lost); the short connections
//! succeeded; every translated flow in conntrack has both entries and none has outlived
//! its timeout by more than the GC's interval; the last agent's memory stayed flat. The
//! lab removes what it created; `cargo xtask test` and `cargo xtask soak` check the host.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use egress_tests::{
    lab::{EGRESS_SOURCE, Lab, ROUTER_POD_IP, SERVER_IP},
    util::{peer_server_at, router_cli, tempdir, wait_listening, write_config},
};

/// A connection to the echo server through the router that remembers its translation.
struct Echo {
    conn: egress_tests::echo::Echo,
    /// The source port the server saw first: the translation.
    seen_port: Option<String>,
}

impl Echo {
    fn connect(lab: &Lab) -> std::io::Result<Self> {
        Ok(Self {
            conn: egress_tests::echo::Echo::connect(lab, 7000)?,
            seen_port: None,
        })
    }

    /// Sends `word` and checks the answer: the server saw EGRESS_SOURCE, and the same port
    /// as on the first answer.
    fn ask(&mut self, word: &str) -> Result<(), String> {
        let seen = self.conn.ask(word).map_err(|e| e.to_string())?;
        if seen.peer != EGRESS_SOURCE.to_string() {
            return Err(format!("the server saw {seen:?}"));
        }
        match &self.seen_port {
            None => self.seen_port = Some(seen.peer_port),
            Some(first) if *first != seen.peer_port => {
                return Err(format!(
                    "translation changed: port {first} then {}",
                    seen.peer_port
                ));
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Ends the connection with a RST, as a crashing client would.
    fn reset(self) {
        self.conn.reset();
    }
}

/// The agent (legacy mode) of the soak's instance, SIGKILLed when replaced or dropped.
struct Agent(std::process::Child);

impl Agent {
    /// Starts an agent and waits until its `/healthz` answers 200 (set-up done).
    fn start(lab: &Lab, args: &[&str]) -> Self {
        // The agents' logs go to a file of the soak's directory (they are long).
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(
                std::env::temp_dir()
                    .join(format!("er-test-{}-soak/agents.log", std::process::id())),
            )
            .unwrap();
        let agent = Self(
            lab.agent_command("soak", "", args)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let url = format!(
            "http://{ROUTER_POD_IP}:{}/healthz",
            egress_tests::lab::METRICS_PORT
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !egress_tests::netns::run_bounded(
            lab.client
                .command("curl")
                .args(["-sf", "--max-time", "1", &url]),
            Duration::from_secs(3),
        )
        .is_ok_and(|out| out.status.success())
        {
            assert!(Instant::now() < deadline, "the agent did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        agent
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Whether it still runs (an agent that exits on its own is a failure).
    fn running(&mut self) -> bool {
        self.0.try_wait().is_ok_and(|status| status.is_none())
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl Tally {
    fn count(&self, ok: bool) {
        let counter = if ok { &self.ok } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[test]
fn mixed_churn_loses_no_established_flow() {
    let seconds: u64 = std::env::var("EGRESS_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45);
    let mut lab = Lab::new("soak").unwrap();
    peer_server_at(&mut lab, "echo", "0.0.0.0", 7000, &[]);
    peer_server_at(&mut lab, "udp", "0.0.0.0", 5353, &[]);
    wait_listening(&lab, 7000);
    lab.client
        .ip(&["addr", "add", "192.0.2.3/24", "dev", "eth0"])
        .unwrap();
    let dir = tempdir("soak");
    let file = dir.join("destination");
    let base = format!("7000 tcp {SERVER_IP}\n5353 udp {SERVER_IP}\n");
    write_config(&file, &format!("{base}{SERVER_IP}\n"));
    let agent_args = [
        "--config-file",
        file.to_str().unwrap(),
        "--conntrack-size",
        "16384",
        "--gc-max-interval",
        "2",
    ];
    let mut agent = Agent::start(&lab, &agent_args);

    // The long-lived connections: half asked every round, half idle until the end.
    let mut busy: Vec<Echo> = (0..8).map(|_| Echo::connect(&lab).unwrap()).collect();
    let mut idle: Vec<Echo> = (0..8).map(|_| Echo::connect(&lab).unwrap()).collect();
    for (i, echo) in busy.iter_mut().chain(idle.iter_mut()).enumerate() {
        echo.ask(&format!("hello{i}")).unwrap();
    }

    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let (short, resets, udp) = (Tally::default(), Tally::default(), Tally::default());
    let sprayed = AtomicU64::new(0);
    let mut restarts = 0;
    let mut reloads = 0u32;
    let mut rss = Vec::new();
    std::thread::scope(|s| {
        let lab = &lab;
        let agent = &mut agent;
        // Short TCP connections and RSTs.
        s.spawn(|| {
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let result = Echo::connect(lab)
                    .map_err(|e| e.to_string())
                    .and_then(|mut e| {
                        e.ask(&format!("short{n}"))?;
                        if n.is_multiple_of(4) {
                            e.reset();
                        }
                        Ok(())
                    });
                if n.is_multiple_of(4) {
                    resets.count(result.is_ok());
                } else {
                    short.count(result.is_ok());
                }
                if let Err(err) = result {
                    eprintln!("soak: short connection {n}: {err}");
                }
                std::thread::sleep(Duration::from_millis(40));
            }
        });
        // UDP queries, each from a new socket (a new flow).
        s.spawn(|| {
            let to = SocketAddr::from((ROUTER_POD_IP, 5353));
            while Instant::now() < deadline {
                let ok = lab
                    .client
                    .enter(|| -> std::io::Result<bool> {
                        let sock = UdpSocket::bind("192.0.2.2:0")?;
                        sock.set_read_timeout(Some(Duration::from_secs(2)))?;
                        sock.send_to(b"query\n", to)?;
                        let mut buf = [0u8; 128];
                        let (n, _) = sock.recv_from(&mut buf)?;
                        Ok(String::from_utf8_lossy(&buf[..n])
                            .starts_with(&EGRESS_SOURCE.to_string()))
                    })
                    .unwrap()
                    .unwrap_or(false);
                udp.count(ok);
                std::thread::sleep(Duration::from_millis(40));
            }
        });
        // Pressure: flows nobody answers, from another client, to the fallback.
        s.spawn(|| {
            let sock = lab
                .client
                .enter(|| UdpSocket::bind("192.0.2.3:0"))
                .unwrap()
                .unwrap();
            let mut port = 20000u16;
            while Instant::now() < deadline {
                for _ in 0..20 {
                    port = if port >= 60000 { 20000 } else { port + 1 };
                    let _ = sock.send_to(b"x", SocketAddr::from((ROUTER_POD_IP, port)));
                    sprayed.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        // The busy long-lived connections, and the agent: restarts in the first half,
        // reloads throughout, memory samples in the second half.
        let mut round = 0u64;
        while Instant::now() < deadline {
            round += 1;
            for (i, echo) in busy.iter_mut().enumerate() {
                echo.ask(&format!("busy{i}r{round}")).unwrap_or_else(|err| {
                    panic!("long-lived connection {i}, round {round}: {err}")
                });
            }
            let elapsed = started.elapsed();
            if round.is_multiple_of(5) {
                let extra = if reloads.is_multiple_of(2) {
                    format!("7100 tcp {SERVER_IP} 7000\n")
                } else {
                    String::new()
                };
                write_config(&file, &format!("{base}{extra}{SERVER_IP}\n"));
                reloads += 1;
            }
            if round.is_multiple_of(8) && elapsed < Duration::from_secs(seconds / 2) {
                // SIGKILL, then a new agent adopts the data plane.
                agent.kill();
                *agent = Agent::start(lab, &agent_args);
                restarts += 1;
            }
            assert!(agent.running(), "the agent exited");
            if elapsed > Duration::from_secs(seconds / 2) {
                rss.push(rss_kib(agent.pid()));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });

    // Every long-lived connection, busy or idle all along, is still there, unchanged.
    for (i, echo) in busy.iter_mut().chain(idle.iter_mut()).enumerate() {
        echo.ask(&format!("bye{i}"))
            .unwrap_or_else(|err| panic!("long-lived connection {i} at the end: {err}"));
    }
    let (short_ok, short_failed) = short.read();
    let (resets_ok, resets_failed) = resets.read();
    let (udp_ok, udp_failed) = udp.read();
    eprintln!(
        "soak: {seconds} s, {restarts} agent restarts, {reloads} reloads; short TCP \
         {short_ok} ok {short_failed} failed; RST {resets_ok}/{resets_failed}; UDP \
         {udp_ok}/{udp_failed}; {} unanswered flows sprayed; agent RSS (KiB) {rss:?}",
        sprayed.load(Ordering::Relaxed)
    );
    assert!(restarts >= 1 && reloads >= 2, "the churn ran");
    assert!(short_ok > 0 && resets_ok > 0 && udp_ok > 0, "the churn ran");
    // On a loaded two-CPU machine a connection may time out now and then; more is a loss.
    let total = short_ok + short_failed + resets_ok + resets_failed;
    assert!(
        (short_failed + resets_failed) * 100 <= total,
        "short connections failed: {short_failed} + {resets_failed} of {total}"
    );
    assert!(
        udp_failed * 100 <= (udp_ok + udp_failed) * 2,
        "UDP queries failed: {udp_failed}"
    );

    // --conntrack-size 16384: both tables as sized (two entries per flow; the unanswered
    // table a quarter).
    let status: serde_json::Value =
        serde_json::from_str(&router_cli(&lab, "soak", &["status", "--json"])).unwrap();
    assert_eq!(status["conntrack_capacity"], 2 * 16384, "{status}");
    assert_eq!(status["unreplied_capacity"], 2 * 16384 / 4, "{status}");

    // Only whole, live flows in the table, once the GC has had its say: half flows (the
    // LRU of the full unanswered table evicts one half at a time) heal with their next
    // packet or go after 10 s without one.
    std::thread::sleep(Duration::from_secs(14));
    let json: serde_json::Value =
        serde_json::from_str(&router_cli(&lab, "soak", &["conntrack", "--json"])).unwrap();
    for flow in json.as_array().unwrap() {
        if flow["kind"] != "nat" {
            continue;
        }
        assert_eq!(
            flow["reply_entry"], true,
            "a flow without its reply entry: {flow}"
        );
        let idle = flow["idle_seconds"].as_u64().unwrap();
        let timeout = flow["timeout_seconds"].as_u64().unwrap();
        assert!(idle <= timeout + 4, "an expired flow the GC left: {flow}");
    }
    // Memory flat over the second half (the maps are preallocated; only the agent's heap
    // could grow).
    let (first, last) = (rss[0], rss[rss.len() - 1]);
    assert!(first > 0, "the agent's memory was read: {rss:?}");
    assert!(last <= first + first / 4 + 4096, "agent RSS grew: {rss:?}");
    drop(agent);
}
