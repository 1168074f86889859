//! The per-core mode's CPU placement and accounting: NAPI threads and their pinning, this
//! process's own pinning, the signal that stops the generator, and per-CPU busy time.

use std::collections::BTreeSet;

use anyhow::{Context as _, Result, ensure};

/// SIGUSR1 with a handler that does nothing and no SA_RESTART: it ends the generator's
/// BPF_PROG_TEST_RUN with EINTR.
pub(crate) fn install_wake_handler() -> Result<()> {
    extern "C" fn wake(_: libc::c_int) {}
    // SAFETY: a zeroed sigaction with a valid handler and an empty mask.
    let rc = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = wake as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("sigaction(SIGUSR1)");
    }
    Ok(())
}

/// The pids of the kernel's NAPI threads (`napi/<dev>-<id>`).
pub(crate) fn napi_threads() -> Result<BTreeSet<i32>> {
    let mut pids = BTreeSet::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if std::fs::read_to_string(entry.path().join("comm")).is_ok_and(|c| c.starts_with("napi/"))
        {
            pids.insert(pid);
        }
    }
    Ok(pids)
}

/// Pins task `pid` (0: the calling thread) to `cpu`.
pub(crate) fn set_affinity(pid: i32, cpu: usize) -> Result<()> {
    affinity(pid, cpu..=cpu).with_context(|| format!("pinning task {pid} to CPU {cpu}"))
}

/// Lets task `pid` (0: the calling thread) run on `cpus` only.
fn affinity(pid: i32, cpus: impl IntoIterator<Item = usize>) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t with the given bits set, passed by pointer with its size.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The calling thread pinned to one CPU until dropped; then it may run on every CPU again.
pub(crate) struct Pinned;

impl Pinned {
    pub(crate) fn to(cpu: usize) -> Result<Self> {
        set_affinity(0, cpu)?;
        Ok(Self)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // Nothing to report to from a drop; a thread left pinned runs on, only slower.
        let _ = affinity(0, 0..online_cpus());
    }
}

/// The CPUs online (not just those this thread may run on).
pub(crate) fn online_cpus() -> usize {
    // SAFETY: plain libc call.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).unwrap_or(1)
}

/// Per-CPU busy and total time from /proc/stat, in clock ticks.
pub(crate) struct CpuTimes(Vec<(u64, u64)>);

impl CpuTimes {
    pub(crate) fn now() -> Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let mut cpus = Vec::new();
        for line in stat.lines() {
            let Some(rest) = line.strip_prefix("cpu") else {
                continue;
            };
            if !rest.starts_with(|c: char| c.is_ascii_digit()) {
                continue;
            }
            let v: Vec<u64> = rest
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            ensure!(v.len() >= 8, "short cpu line in /proc/stat: {line}");
            // user nice system idle iowait irq softirq (steal, the hypervisor's, is left out)
            let busy = v[0] + v[1] + v[2] + v[5] + v[6];
            cpus.push((busy, busy + v[3] + v[4]));
        }
        Ok(Self(cpus))
    }

    /// `cpu`'s busy share since `before` (0-1).
    pub(crate) fn busy_since(&self, before: &Self, cpu: usize) -> Result<f64> {
        let (b1, t1) = *self.0.get(cpu).context("no such CPU in /proc/stat")?;
        let (b0, t0) = *before.0.get(cpu).context("no such CPU in /proc/stat")?;
        ensure!(t1 > t0, "no clock ticks on CPU {cpu} over the window");
        Ok((b1 - b0) as f64 / (t1 - t0) as f64)
    }
}

/// The programs whose run time the per-core mode reports: the routers' and the harness's
/// no-op (`lab_xdp_pass`), whose time is the statistics' own cost.
const TIMED: [&str; 9] = [
    "pod_ingress",
    "node_forward",
    "node_reply",
    "node_xdp",
    "egress_egress",
    "egress_ingress",
    "lab_forward",
    "lab_return",
    "lab_xdp_pass",
];

/// Nanoseconds per run of the [`TIMED`] programs that ran over `window` (see
/// [`program_stats`]).
pub(crate) fn program_times(
    window: std::time::Duration,
) -> Result<std::collections::BTreeMap<String, f64>> {
    Ok(program_stats(window)?
        .into_iter()
        .map(|(name, (_, ns))| (name, ns))
        .collect())
}

/// [`program_times`] of the programs that carried a load: those that ran at least once per
/// 100 runs of the busiest. Other data planes on the machine (tests running beside the
/// bench) run programs of the same names a few times in the window: left out.
pub(crate) fn load_program_times(
    window: std::time::Duration,
) -> Result<std::collections::BTreeMap<String, f64>> {
    let stats = program_stats(window)?;
    let most = stats.values().map(|&(runs, _)| runs).max().unwrap_or(0);
    Ok(stats
        .into_iter()
        .filter(|&(_, (runs, _))| runs * 100 >= most)
        .map(|(name, (_, ns))| (name, ns))
        .collect())
}

/// Runs and nanoseconds per run of the [`TIMED`] programs that ran over `window`, from the
/// kernel's BPF statistics, enabled for that window only (`BPF_ENABLE_STATS`: they add two
/// clock reads to every run of every program).
pub(crate) fn program_stats(
    window: std::time::Duration,
) -> Result<std::collections::BTreeMap<String, (u64, f64)>> {
    fn totals() -> Result<std::collections::BTreeMap<String, (u64, u64)>> {
        let mut out = std::collections::BTreeMap::<String, (u64, u64)>::new();
        for info in aya::programs::loaded_programs() {
            // One unloaded between its id and its fd is not one of these.
            let Ok(info) = info else { continue };
            let Some(name) = info.name_as_str().filter(|n| TIMED.contains(n)) else {
                continue;
            };
            let t = out.entry(name.to_owned()).or_default();
            t.0 += info.run_time().as_nanos() as u64;
            t.1 += info.run_count();
        }
        Ok(out)
    }
    let before = totals()?;
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("BPF_ENABLE_STATS")?;
    std::thread::sleep(window);
    let after = totals()?;
    drop(stats);
    Ok(after
        .into_iter()
        .filter_map(|(name, (ns, runs))| {
            let (ns0, runs0) = before.get(&name).copied().unwrap_or_default();
            let runs = runs.checked_sub(runs0).filter(|&r| r > 0)?;
            Some((name, (runs, ns.saturating_sub(ns0) as f64 / runs as f64)))
        })
        .collect())
}

/// CPU time the tasks `pids` have run, in nanoseconds (the scheduler's own account,
/// `/proc/<pid>/schedstat`), summed.
pub(crate) fn runtime(pids: &[i32]) -> Result<u64> {
    let mut total = 0;
    for pid in pids {
        let path = format!("/proc/{pid}/schedstat");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let ns: u64 = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{path}: {text}"))?;
        total += ns;
    }
    Ok(total)
}

/// `ns` of CPU time as a share of `over`.
pub(crate) fn share(ns: u64, over: std::time::Duration) -> f64 {
    ns as f64 / over.as_nanos() as f64
}
