//! A background process of a lab (a server, an agent), killed on Drop.

use std::{process::Child, time::Duration};

use anyhow::{Context as _, Result, bail};

use crate::netns::wait_bounded;

/// A background process of a lab, killed on Drop.
pub struct Daemon {
    pub(crate) child: Option<Child>,
    pub(crate) what: String,
}

impl Daemon {
    /// Stops the process (SIGTERM, then SIGKILL after `grace`) and returns its output.
    pub fn stop(&mut self, grace: Duration) -> Result<std::process::Output> {
        let Some(child) = self.child.take() else {
            bail!("{} was already stopped", self.what);
        };
        let pid = i32::try_from(child.id()).context("pid")?;
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        match wait_bounded(child, grace) {
            Ok(out) => Ok(out),
            Err(err) => Err(err.context(format!("{} ignored SIGTERM", self.what))),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
