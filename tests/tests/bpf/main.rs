//! The data plane's programs in the kernel, without a lab: frames built in Rust run through
//! the real programs with BPF_PROG_TEST_RUN, the packet fuzzer, and the embedded object
//! itself. Quick; one module per concern, IPv4 unmarked and IPv6 with a `6` suffix.
//!
//! | module | what it proves |
//! |---|---|
//! | `object` | the embedded object holds the product's programs, nothing of the lab |
//! | `prog` | first frames through the programs; an earlier build's maps taken over |
//! | `nat` | the translation both ways, checksums, counters, conntrack entries |
//! | `nat6` | the translation both ways, checksums, counters, conntrack entries |
//! | `frag6` | IPv6 fragments translated with their first fragment's ports |
//! | `chains6` | random IPv6 extension-header chains from either side |
//! | `path` | the router's own ICMP errors (Time Exceeded, Fragmentation Needed) |
//! | `path6` | the router's own ICMP errors (Time Exceeded, Fragmentation Needed) |
//! | `conntrack` | conntrack against spoofing: which RST and FIN end a flow, timeouts |
//! | `port_reuse` | translated ports of flows that are over |
//! | `races` | conntrack races between CPUs and with the GC |
//! | `gc_sweep` | the conntrack GC in the kernel as the agent's pass; IPv6 tables |
//! | `gc6` | the conntrack GC in the kernel as the agent's pass; IPv6 tables |
//! | `drops` | the drop reasons no other test reaches |
//! | `lab` | the per-core bench mode's programs |
//! | `fuzz` | the packet fuzzer with a fixed seed (`cargo xtask fuzz`: `fuzz::`) |
//! | `btf` | the embedded object's BTF, as bpftool shows it |

mod btf;
mod chains6;
mod conntrack;
mod drops;
mod frag6;
mod fuzz;
mod gc6;
mod gc_sweep;
mod lab;
mod nat;
mod nat6;
mod object;
mod path;
mod path6;
mod port_reuse;
mod prog;
mod races;
