//! Options before or after the subcommand. The top level has the options of the form
//! without a subcommand ([`crate::cli::Modeless`]); a subcommand has those it reads. An
//! option written before a subcommand goes to the subcommand, as if written after its name
//! (`egress-router --macvlan-parent ens4 check` is `egress-router check --macvlan-parent
//! ens4`); before a subcommand that does not read it, it is an error that says so, never
//! ignored. Given both before and after, it is given twice: clap's error. The logging
//! options are global: accepted anywhere, read by every command.

use std::ffi::OsString;

use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _, error::ErrorKind};

use crate::cli::Cli;

/// Parses `argv` (the program name first).
pub(crate) fn parse(argv: impl IntoIterator<Item = OsString>) -> Result<Cli, clap::Error> {
    let argv: Vec<OsString> = argv.into_iter().collect();
    let mut command = Cli::command();
    let matches = command.try_get_matches_from_mut(&argv)?;
    let matches = match hoisted(&command, &matches, &argv)? {
        Some(argv) => Cli::command().try_get_matches_from(argv)?,
        None => matches,
    };
    Cli::from_arg_matches(&matches)
}

/// `argv` with the subcommand's name moved before the options written ahead of it, when
/// there are such options; an error if the subcommand does not take one of them.
fn hoisted(
    command: &clap::Command,
    matches: &ArgMatches,
    argv: &[OsString],
) -> Result<Option<Vec<OsString>>, clap::Error> {
    let Some((name, _)) = matches.subcommand() else {
        return Ok(None);
    };
    let Some(sub) = command.find_subcommand(name) else {
        return Ok(None);
    };
    let given: Vec<&clap::Arg> = command
        .get_arguments()
        .filter(|arg| !arg.is_global_set())
        .filter(|arg| {
            matches.value_source(arg.get_id().as_str())
                == Some(clap::parser::ValueSource::CommandLine)
        })
        .collect();
    if given.is_empty() {
        return Ok(None);
    }
    for arg in &given {
        let long = arg.get_long().unwrap_or_default();
        if !sub.get_arguments().any(|a| a.get_long() == Some(long)) {
            let mut sub = sub.clone();
            return Err(sub.error(
                ErrorKind::UnknownArgument,
                format!(
                    "--{long} does not apply to `{name}` (`egress-router {name} --help` lists \
                     the options it reads)"
                ),
            ));
        }
    }
    let Some(at) = subcommand_index(command, argv).filter(|&i| argv[i] == *name) else {
        // Not met with clap's own parsing; never ignored all the same.
        let mut sub = sub.clone();
        return Err(sub.error(
            ErrorKind::ArgumentConflict,
            format!("write the options of `{name}` after it"),
        ));
    };
    let mut moved = vec![argv[0].clone(), argv[at].clone()];
    moved.extend_from_slice(&argv[1..at]);
    moved.extend_from_slice(&argv[at + 1..]);
    Ok(Some(moved))
}

/// Where the subcommand's name is in `argv`, which parsed: the first word that is neither
/// an option of the top level nor an option's value.
fn subcommand_index(command: &clap::Command, argv: &[OsString]) -> Option<usize> {
    let mut i = 1;
    while let Some(word) = argv.get(i) {
        let word = word.to_string_lossy();
        if word == "--" {
            return None;
        }
        if let Some(option) = word.strip_prefix("--") {
            let takes_value = !option.contains('=')
                && command
                    .get_arguments()
                    .find(|arg| arg.get_long() == Some(option))
                    .is_some_and(|arg| arg.get_action().takes_values());
            i += if takes_value { 2 } else { 1 };
        } else if word.starts_with('-') {
            i += 1;
        } else {
            return Some(i);
        }
    }
    None
}
