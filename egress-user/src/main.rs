//! `egress-router`: sets up the egress-router data plane, runs its agent and proxies, and
//! inspects it. The command line lives in `cli/`, one file per subcommand; everything else
//! is the `egress_user` library.
//!
//! | module | concern |
//! |---|---|
//! | `cli` | clap only: one file per subcommand, each a few calls into the library |

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
