//! A background process of a lab (a server, an agent), killed on Drop. Its stdout and
//! stderr go to files, not pipes: a pipe nobody reads fills after 64 KiB, and a server that
//! prints a line per client (or an agent that logs) then blocks (a soak of ten minutes
//! got there: the echo server stopped answering).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::netns::wait_bounded;

/// A background process of a lab, killed on Drop.
pub struct Daemon {
    pub(crate) child: Option<Child>,
    pub(crate) what: String,
    /// Where its stdout and stderr go.
    pub(crate) logs: (PathBuf, PathBuf),
}

impl Daemon {
    /// Starts `cmd` with its output in `base`.out and `base`.err.
    pub fn spawn(mut cmd: Command, base: &Path) -> Result<Self> {
        let logs = (base.with_extension("out"), base.with_extension("err"));
        let stdout = std::fs::File::create(&logs.0).context("creating a daemon's stdout file")?;
        let stderr = std::fs::File::create(&logs.1).context("creating a daemon's stderr file")?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {cmd:?}"))?;
        Ok(Self {
            child: Some(child),
            what: format!("{cmd:?}"),
            logs,
        })
    }

    /// Stops the process (SIGTERM, then SIGKILL after `grace`) and returns its output.
    pub fn stop(&mut self, grace: Duration) -> Result<Output> {
        let Some(child) = self.child.take() else {
            bail!("{} was already stopped", self.what);
        };
        let pid = i32::try_from(child.id()).context("pid")?;
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        match wait_bounded(child, grace) {
            Ok(out) => Ok(self.with_logs(out)),
            Err(err) => {
                let out = self.with_logs(Output {
                    status: std::os::unix::process::ExitStatusExt::from_raw(0),
                    stdout: Vec::new(),
                    stderr: Vec::new(),
                });
                Err(err.context(format!(
                    "{} ignored SIGTERM; stderr: {}",
                    self.what,
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
        }
    }

    /// Kills the process with SIGKILL and returns its output.
    pub fn kill(&mut self) -> Result<Output> {
        let Some(mut child) = self.child.take() else {
            bail!("{} was already stopped", self.what);
        };
        child.kill()?;
        let out = wait_bounded(child, Duration::from_secs(5))?;
        Ok(self.with_logs(out))
    }

    /// `out` with what the process wrote so far.
    fn with_logs(&self, mut out: Output) -> Output {
        out.stdout = std::fs::read(&self.logs.0).unwrap_or_default();
        out.stderr = std::fs::read(&self.logs.1).unwrap_or_default();
        out
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.logs.0);
        let _ = std::fs::remove_file(&self.logs.1);
    }
}

/// A lab's daemons, in start order (a daemon's index is the count before its start), with
/// their logs beside `base`.
pub struct Daemons {
    list: Vec<Daemon>,
    base: PathBuf,
}

impl Daemons {
    /// No daemons yet; their logs will be `base-daemon-N.out` and `.err`.
    #[must_use]
    pub fn new(base: PathBuf) -> Self {
        Self {
            list: Vec::new(),
            base,
        }
    }

    /// Starts `cmd`; returns it.
    pub fn spawn(&mut self, cmd: Command) -> Result<&mut Daemon> {
        let base = PathBuf::from(format!(
            "{}-daemon-{}",
            self.base.display(),
            self.list.len()
        ));
        self.list.push(Daemon::spawn(cmd, &base)?);
        Ok(self.list.last_mut().expect("just pushed"))
    }

    /// What daemon `index` has written to stderr so far, running or not.
    #[must_use]
    pub fn stderr(&self, index: usize) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.list[index].logs.1).unwrap_or_default())
            .into_owned()
    }

    /// Waits (at most `limit`) until daemon `index`'s stderr contains `text`; returns it.
    pub fn wait_for_log(&self, index: usize, text: &str, limit: Duration) -> Result<String> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let log = self.stderr(index);
            if log.contains(text) {
                return Ok(log);
            }
            if std::time::Instant::now() > deadline {
                bail!("{text:?} not logged within {limit:?}: {log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id of daemon `index`, if it runs.
    #[must_use]
    pub fn pid(&self, index: usize) -> Option<i32> {
        self.list[index]
            .child
            .as_ref()
            .and_then(|c| i32::try_from(c.id()).ok())
    }

    /// Stops daemon `index` (SIGTERM, 5 s grace) and returns its output.
    pub fn stop(&mut self, index: usize) -> Result<Output> {
        self.list[index].stop(Duration::from_secs(5))
    }

    /// Kills daemon `index` outright (SIGKILL) and returns its output.
    pub fn kill(&mut self, index: usize) -> Result<Output> {
        self.list[index].kill()
    }
}

impl std::ops::Deref for Daemons {
    type Target = Vec<Daemon>;
    fn deref(&self) -> &Vec<Daemon> {
        &self.list
    }
}

impl std::ops::DerefMut for Daemons {
    fn deref_mut(&mut self) -> &mut Vec<Daemon> {
        &mut self.list
    }
}
