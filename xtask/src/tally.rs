//! The test totals of a `cargo xtask test` run and the rules a run must pass.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::display;

/// The least number of tests a full `cargo xtask test` runs: a drop below it (a test
/// binary that stopped building its tests, a module left out) fails the run. Raise it
/// when tests are added.
const MIN_TESTS: u64 = 316;

/// Test counts summed over cargo's `test result:` lines.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) passed: u64,
    pub(crate) failed: u64,
    pub(crate) ignored: u64,
}

impl Tally {
    /// Whether the run is good: nothing failed, nothing skipped (an ignored test proves
    /// nothing), and, for a full run, at least [`MIN_TESTS`] passed.
    pub(crate) fn judge(&self, filtered: bool) -> Result<()> {
        if self.failed > 0 {
            bail!("{} tests failed", self.failed);
        }
        if self.ignored > 0 {
            bail!(
                "{} tests were skipped (ignored): every test must run",
                self.ignored
            );
        }
        if self.passed == 0 {
            bail!("no test ran");
        }
        if !filtered && self.passed < MIN_TESTS {
            bail!(
                "{} tests passed, fewer than the {MIN_TESTS} a full run has: a test binary or \
                 module did not run",
                self.passed
            );
        }
        Ok(())
    }

    /// Adds one `test result: ok. 2 passed; 0 failed; 1 ignored; ...` line.
    pub(crate) fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Runs `cmd`, echoing its stdout while counting the test results in it.
pub(crate) fn run_tallied(cmd: &mut Command, tally: &mut Tally) -> Result<()> {
    use std::io::{BufRead as _, BufReader};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", display(cmd)))?;
    let stdout = child.stdout.take().context("child stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading test output")?;
        println!("{line}");
        tally.add(&line);
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{} failed: {status}", display(cmd));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{MIN_TESTS, Tally};

    #[test]
    fn tally_sums_cargo_test_result_lines() {
        let mut tally = Tally::default();
        tally.add("test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.08s");
        tally.add("test foo ... ok");
        tally.add("test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out");
        assert_eq!((tally.passed, tally.failed, tally.ignored), (5, 1, 1));
    }

    fn tally(lines: &[&str]) -> Tally {
        let mut tally = Tally::default();
        for line in lines {
            tally.add(line);
        }
        tally
    }

    #[test]
    fn a_run_fails_on_a_failure_a_skip_or_too_few_tests() {
        let full = format!("test result: ok. {MIN_TESTS} passed; 0 failed; 0 ignored; 0 measured");
        assert!(tally(&[&full]).judge(false).is_ok());
        let skipped = "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured";
        let err = tally(&[&full, skipped])
            .judge(false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("skipped"), "{err}");
        let failed = "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured";
        assert!(tally(&[&full, failed]).judge(false).is_err());
        let few = "test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured";
        let err = tally(&[few]).judge(false).unwrap_err().to_string();
        assert!(err.contains("fewer than"), "{err}");
        // A filtered run (`cargo xtask test NAME`) runs what it selects.
        assert!(tally(&[few]).judge(true).is_ok());
        assert!(tally(&[]).judge(true).is_err(), "no test ran");
    }
}
