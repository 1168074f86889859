//! Test harness of egress-router: the netns lab (real namespaces, veth and macvlan links, a
//! bpffs) and helpers shared by the end-to-end suites in `tests/tests/`.
//!
//! Everything here needs root, as CI has. Nothing is skipped without it: a test fails and
//! says why.
//!
//! | module | concern |
//! |---|---|
//! | [`lab`] | the pod lab: the topology of an egress router pod, built per test |
//! | [`lab6`] | its IPv6 half |
//! | [`nodelab`] | node mode's lab, pods wired as routed CNIs wire them |
//! | [`nodelab6`] | its IPv6 half |
//! | [`failover`] | the two-node lab of pod mode's failover |
//! | [`owner`] | two routers with one EGRESS_SOURCE in the two-node lab: who the switch hears |
//! | [`nodefail`] | node mode's failover in a two-node node lab |
//! | [`bed`] | what the benchmarks' loads need of either lab |
//! | [`netns`] | named network namespaces, deleted on Drop |
//! | [`daemon`] | background processes of a lab, killed on Drop |
//! | [`bpffs`] | a bpffs for a lab's pins |
//! | [`util`] | helpers shared by the lab tests |
//! | [`echo`] | a client of the lab's echo server |
//! | [`container`] | the image run as a kubelet runs a pod's containers |
//! | [`labbpf`] | the benchmarks' own BPF object (`egress-lab-ebpf`) and its loader |
//! | [`pktgen`] | BPF_PROG_TEST_RUN frames and checks |
//! | [`pktgen6`] | the same for IPv6 |
//! | [`flood`] | floods for BPF_PROG_TEST_RUN tests |
//! | [`fuzz`] | the packet fuzzer |

pub mod bed;
pub mod bpffs;
pub mod container;
pub mod daemon;
pub mod echo;
pub mod failover;
pub mod flood;
pub mod fuzz;
pub mod lab;
pub mod lab6;
pub mod labbpf;
pub mod netns;
pub mod nodefail;
pub mod nodelab;
pub mod nodelab6;
pub mod owner;
pub mod pktgen;
pub mod pktgen6;
pub mod util;

use std::path::PathBuf;

/// Path of the `egress-router` binary under test: `$EGRESS_ROUTER_BIN` (set by
/// `cargo xtask test`), else the one cargo built next to this test executable.
pub fn egress_router_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("EGRESS_ROUTER_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/egress-router
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("egress-router"))
        .expect("test executable lives in target/<profile>/deps");
    assert!(
        bin.exists(),
        "{} does not exist: build it with `cargo build -p egress-user` or run `cargo xtask test`",
        bin.display()
    );
    bin
}

/// Path of a helper script in `tests/assets/`.
pub fn asset(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(name)
}
