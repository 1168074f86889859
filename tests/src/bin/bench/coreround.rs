//! One variant's round in the per-core mode (the rounds: `percore`), as
//! bench/results.json holds it, and what a round prints.

use crate::variant::Variant;

/// One variant's round in the per-core mode.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct CoreRound {
    pub round: usize,
    pub variant: Variant,
    /// Small UDP frames per second that left the router (macvlan0's transmit counter).
    pub pps: f64,
    /// The router CPU's busy share over the packet window (0-1).
    pub pps_router_busy: f64,
    /// Short connections per second.
    pub conn_per_s: f64,
    /// The router CPU's busy share over the connection window.
    pub conn_router_busy: f64,
    /// The router's NAPI threads' CPU time over the packet window, as a share of it: the
    /// router's own time, in nanoseconds from the scheduler (absent in results of earlier
    /// versions, which fall back to the CPU's busy share).
    #[serde(default)]
    pub pps_threads_busy: Option<f64>,
    /// The same over the connection window.
    #[serde(default)]
    pub conn_threads_busy: Option<f64>,
    /// Run time per run of the BPF programs on the router's path, ns, by name (the kernel's
    /// BPF statistics over half a second after the packet window, the programs that ran at
    /// least once per 100 runs of the busiest; absent in results of earlier versions).
    #[serde(default)]
    pub program_ns: std::collections::BTreeMap<String, f64>,
    /// The small-packet generator where not `lab_xdp_gen`: `AF_PACKET` (a sender of the
    /// bench's, `corelab::Sender`) on kernels that refuse live frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<String>,
}

impl CoreRound {
    /// Prints one per-core round's figures.
    pub(crate) fn print(&self) {
        eprintln!(
            "bench: round {} per-core {:<28} {:>8.0} pps at {:>3.0} % ({:>5.0} ns/packet)  {:>5.0} conn/s at {:>3.0} % ({:.1} us/conn; router threads {:.0} % and {:.0} %)",
            self.round,
            self.variant.label(),
            self.pps,
            self.pps_router_busy * 100.0,
            self.ns_per_packet(),
            self.conn_per_s,
            self.conn_router_busy * 100.0,
            self.us_per_conn(),
            self.pps_threads_busy.unwrap_or(f64::NAN) * 100.0,
            self.conn_threads_busy.unwrap_or(f64::NAN) * 100.0,
        );
        eprintln!(
            "bench: round {} per-core {:?} programs, ns per run (statistics on): {:?}",
            self.round, self.variant, self.program_ns
        );
    }

    /// Router CPU time per packet, nanoseconds.
    pub(crate) fn ns_per_packet(&self) -> f64 {
        self.pps_threads_busy.unwrap_or(self.pps_router_busy) * 1e9 / self.pps
    }

    /// Router CPU time per connection, microseconds.
    pub(crate) fn us_per_conn(&self) -> f64 {
        self.conn_threads_busy.unwrap_or(self.conn_router_busy) * 1e6 / self.conn_per_s
    }
}
