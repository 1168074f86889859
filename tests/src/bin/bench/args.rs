//! The bench's command line.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(about = "egress-router benchmarks (run through `cargo xtask bench`)")]
pub(crate) struct Args {
    /// Rounds of A B C (interleaved). TCP figures vary by up to 20 % between rounds on a
    /// shared 2-vCPU machine; 7 rounds keep their medians steady within the time budget.
    #[arg(long, default_value_t = 7)]
    pub(crate) rounds: usize,
    /// Rounds of the HTTP load (squid, HAProxy, DNAT, http-proxy, dns-proxy, interleaved).
    #[arg(long, default_value_t = 5)]
    pub(crate) http_rounds: usize,
    /// Seconds each HTTP load (wrk) is measured.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) http_measure: f64,
    /// Only the HTTP load; prints it, writes nothing.
    #[arg(long)]
    pub(crate) http_only: bool,
    /// Failovers per variant (stable MAC, own MAC).
    #[arg(long, default_value_t = 5)]
    pub(crate) failover_rounds: usize,
    /// Only the failovers: measured, put into bench/results.json in place of the earlier
    /// ones, and the report rendered again.
    #[arg(long)]
    pub(crate) failover_only: bool,
    /// With --http-only: only these HTTP set-ups (squid, haproxy, dnat, http-proxy,
    /// dns-proxy).
    #[arg(long, value_delimiter = ',')]
    pub(crate) http_variant: Vec<String>,
    /// Seconds of load before counting.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) warmup: f64,
    /// Seconds each load is measured.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) measure: f64,
    /// BPF_PROG_TEST_RUN runs per path, table and round.
    #[arg(long, default_value_t = 8192)]
    pub(crate) calls: usize,
    /// Where BENCHMARKS.md and bench/ are written.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Only the BPF_PROG_TEST_RUN costs (no lab rounds); prints them, writes nothing.
    #[arg(long)]
    pub(crate) costs_only: bool,
    /// Only the 1k-flow table (with --costs-only, for a quick look at a program change).
    #[arg(long)]
    pub(crate) small_table_only: bool,
    /// Measure nothing: rewrite BENCHMARKS.md and the chart from bench/results.json (after
    /// editing bench/NOTES.md, or the report's layout).
    #[arg(long)]
    pub(crate) render_only: bool,
    /// Only the lab rounds of these variants (A, B, C, A6, B6, N, P), printed; writes
    /// nothing. For a quick look at one variant, e.g.
    /// `--lab-only --variants A --rounds 1`.
    #[arg(long)]
    pub(crate) lab_only: bool,
    /// Rounds of N (node mode) and P (pod mode in the node lab) in the lab, and of the
    /// unsolicited flood; the per-core mode measures them in --core-rounds.
    #[arg(long, default_value_t = 3)]
    pub(crate) node_rounds: usize,
    /// Only node mode's rounds (lab, per-core, flood): measured, put into
    /// bench/results.json in place of the earlier ones, and the report rendered again.
    #[arg(long)]
    pub(crate) node_only: bool,
    /// Rounds of A B C in the per-core mode (router on a CPU of its own).
    #[arg(long, default_value_t = 5)]
    pub(crate) core_rounds: usize,
    /// Only the per-core rounds: measured, put into bench/results.json in place of the
    /// earlier ones, and the report rendered again.
    #[arg(long)]
    pub(crate) core_only: bool,
    /// Rounds of T (A attached with tc) against A (TCX), A then T, each a lab round of the
    /// small-packet load and a per-core round; 0 leaves them out.
    #[arg(long, default_value_t = 5)]
    pub(crate) attach_rounds: usize,
    /// Only the rounds of T against A: measured, put into bench/results.json in place of
    /// the earlier ones, and the report rendered again. E.g.
    /// `cargo xtask bench --attach-only --attach-rounds 5`.
    #[arg(long)]
    pub(crate) attach_only: bool,
    /// With --lab-only or --core-only: the variants measured.
    #[arg(long, value_delimiter = ',')]
    pub(crate) variants: Vec<String>,
    /// How the run was started, for the report.
    #[arg(long, default_value = "cargo xtask bench")]
    pub(crate) command: String,
}
