//! `egress-router`: sets up the egress-router data plane, runs its agent and proxies, and
//! inspects it. The command line lives in `cli/`, one file per subcommand; everything else
//! is the `egress_user` library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
