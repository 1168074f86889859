//! `egress-router`: sets up the egress-router data plane, runs its agent and proxies, and
//! inspects it. Everything but the command line is the `egress_user` library.
//!
//! | module | concern |
//! |---|---|
//! | `cli` | the command line: clap definitions and one file per subcommand |

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
