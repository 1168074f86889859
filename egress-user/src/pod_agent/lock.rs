//! One agent per instance: an abstract Unix socket named after the instance, bound for the
//! agent's lifetime. Abstract sockets belong to the network namespace, so this is exactly
//! "one agent per instance per pod", and the kernel frees the name when the agent dies,
//! SIGKILL included: no stale lock file.

use std::{
    io,
    os::{
        fd::AsRawFd as _,
        linux::net::SocketAddrExt as _,
        unix::net::{SocketAddr, UnixListener, UnixStream},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// How long a take-over waits for the running agent to exit.
const TAKE_OVER_WAIT: Duration = Duration::from_secs(15);

/// Held while the agent runs.
#[derive(Debug)]
pub struct AgentLock {
    _socket: UnixListener,
}

impl AgentLock {
    /// Takes the instance's lock. If another agent holds it: an error that names it, or,
    /// with `take_over`, SIGTERM to that agent (which leaves the data plane running) and
    /// the lock once it has exited.
    pub fn acquire(instance: &str, take_over: bool) -> Result<Self> {
        let name = format!("egress-router/agent/{instance}");
        let addr =
            SocketAddr::from_abstract_name(name.as_bytes()).context("naming the agent's lock")?;
        let deadline = Instant::now() + TAKE_OVER_WAIT;
        let mut signalled = None;
        loop {
            match UnixListener::bind_addr(&addr) {
                Ok(socket) => {
                    if let Some(pid) = signalled {
                        tracing::info!(pid, "took over from the running agent");
                    }
                    return Ok(Self { _socket: socket });
                }
                Err(err) if err.kind() == io::ErrorKind::AddrInUse => {}
                Err(err) => return Err(err).context("taking the agent's lock"),
            }
            if let Some(pid) = signalled {
                if Instant::now() > deadline {
                    bail!("the running agent (pid {pid}) did not exit within {TAKE_OVER_WAIT:?}");
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let pid = holder(&addr);
            let who = pid.map_or_else(|| "pid unknown".to_owned(), |pid| format!("pid {pid}"));
            if !take_over {
                bail!(
                    "another egress-router agent ({who}) runs for instance {instance} in this \
                     network namespace; nothing was changed. Stop it first, or pass \
                     --take-over to replace it"
                );
            }
            let Some(pid) = pid else {
                bail!(
                    "another egress-router agent runs for instance {instance} in another PID \
                     namespace: stop it first"
                );
            };
            tracing::info!(pid, "asking the running agent to exit (--take-over)");
            // SAFETY: a plain syscall; the pid is the lock holder's, as the kernel said.
            if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
                return Err(io::Error::last_os_error())
                    .with_context(|| format!("signalling the running agent (pid {pid})"));
            }
            signalled = Some(pid);
        }
    }
}

/// The pid of the process that holds the lock, as seen from this PID namespace (`None`
/// when it is not visible here).
fn holder(addr: &SocketAddr) -> Option<i32> {
    let stream = UnixStream::connect_addr(addr).ok()?;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a connected socket and a ucred-sized buffer, as SO_PEERCRED needs.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(cred.pid)
}
