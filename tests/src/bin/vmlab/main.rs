//! `vmlab`: the small static helper that `cargo xtask vm-test` puts in the VM's initramfs
//! next to `egress-router` and busybox (`tests/vm/`). Built for the musl target, so it needs
//! nothing from the initramfs.
//!
//! - `verify [--stats]`: loads every program of the product's BPF object on the running
//!   kernel, one at a time, and reports each verifier failure with the kernel's message
//!   and the source line it names (`--stats`: instructions and stack depth of each).
//! - `serve-tcp`, `serve-udp`: servers that answer each line or datagram with the source
//!   address and port they saw, then the line: what tells EGRESS_SOURCE was used.
//! - `ask-tcp`, `ask-udp`: their clients. `ask-tcp` sends each line of its standard input
//!   on one connection and prints each answer, so a script can keep a connection open
//!   across steps (standard input from a FIFO).
//! - `http-get`: one HTTP/1.0 GET, the answer printed, success only on 200 (busybox's
//!   `wget` crashed on the agent's `/healthz` in the VM).
//!
//! | module | concern |
//! |---|---|
//! | `verify` | every program of the object loaded, the verifier's failures reported |
//! | `stats` | instructions and stack depth of each program |

mod stats;
mod verify;

use std::{
    io::{self, BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "egress-router's helper inside the test VM")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load every program of the product's object; one line per program.
    Verify {
        /// Also load each program once more without BTF line info, with the verifier's
        /// statistics: instructions processed and stack depth.
        #[arg(long)]
        stats: bool,
        /// Lines of the instruction-level log shown for each failure (its end: the walk
        /// that led to the rejected instruction).
        #[arg(long, default_value_t = 0)]
        trace: usize,
        /// An object file to load instead of the one `egress-router` embeds (e.g. one built
        /// with a fix, to try it without relinking).
        #[arg(long)]
        object: Option<std::path::PathBuf>,
        /// Only these programs (default: every program the product loads).
        names: Vec<String>,
    },
    /// Answer each line with `<peer ip> <peer port> <line>`.
    ServeTcp { listen: SocketAddr },
    /// Answer each datagram with `<peer ip> <peer port> <payload>`.
    ServeUdp { listen: SocketAddr },
    /// Send each line of standard input on one connection; print each answer.
    AskTcp {
        to: SocketAddr,
        /// Seconds to wait for the connection and for each answer.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
    /// GET `path` from `to` (HTTP/1.0); print the answer; fail unless it is 200.
    HttpGet {
        to: SocketAddr,
        path: String,
        #[arg(long, default_value_t = 2)]
        timeout: u64,
    },
    /// Send `word` in one datagram; print the answer.
    AskUdp {
        to: SocketAddr,
        word: String,
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Verify {
            stats,
            trace,
            object,
            names,
        } => match object.map(std::fs::read).transpose() {
            Ok(bytes) => verify::run(
                bytes.as_deref().unwrap_or(egress_user::EBPF_OBJECT),
                &names,
                stats,
                trace,
            ),
            Err(err) => Err(err.into()),
        },
        Cmd::ServeTcp { listen } => serve_tcp(listen).map(|()| true),
        Cmd::ServeUdp { listen } => serve_udp(listen).map(|()| true),
        Cmd::AskTcp { to, timeout } => ask_tcp(to, Duration::from_secs(timeout)).map(|()| true),
        Cmd::HttpGet { to, path, timeout } => http_get(to, &path, Duration::from_secs(timeout)),
        Cmd::AskUdp { to, word, timeout } => {
            ask_udp(to, &word, Duration::from_secs(timeout)).map(|()| true)
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("vmlab: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve_tcp(listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        std::thread::spawn(move || {
            let _ = answer_lines(stream);
        });
    }
    Ok(())
}

fn answer_lines(stream: TcpStream) -> io::Result<()> {
    let peer = stream.peer_addr()?;
    eprintln!("serve-tcp: connection from {peer}");
    let mut writer = stream.try_clone()?;
    for line in BufReader::new(stream).lines() {
        writeln!(writer, "{} {} {}", peer.ip(), peer.port(), line?)?;
    }
    Ok(())
}

fn serve_udp(listen: SocketAddr) -> Result<()> {
    let socket = UdpSocket::bind(listen).with_context(|| format!("binding {listen}"))?;
    let mut buf = [0u8; 1500];
    loop {
        let (len, peer) = socket.recv_from(&mut buf)?;
        let payload = String::from_utf8_lossy(&buf[..len]);
        eprintln!("serve-udp: datagram from {peer}");
        let answer = format!("{} {} {}", peer.ip(), peer.port(), payload.trim_end());
        let _ = socket.send_to(answer.as_bytes(), peer);
    }
}

fn ask_tcp(to: SocketAddr, timeout: Duration) -> Result<()> {
    let stream =
        TcpStream::connect_timeout(&to, timeout).with_context(|| format!("connecting to {to}"))?;
    stream.set_read_timeout(Some(timeout))?;
    let mut writer = stream.try_clone()?;
    let mut answers = BufReader::new(stream);
    for line in io::stdin().lock().lines() {
        let line = line?;
        writeln!(writer, "{line}")?;
        let mut answer = String::new();
        if answers
            .read_line(&mut answer)
            .with_context(|| format!("waiting for the answer to {line:?}"))?
            == 0
        {
            bail!("{to} closed the connection before answering {line:?}");
        }
        print!("{answer}");
        io::stdout().flush()?;
    }
    Ok(())
}

fn http_get(to: SocketAddr, path: &str, timeout: Duration) -> Result<bool> {
    let mut stream =
        TcpStream::connect_timeout(&to, timeout).with_context(|| format!("connecting to {to}"))?;
    stream.set_read_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {to}\r\n\r\n")?;
    let mut answer = String::new();
    io::Read::read_to_string(&mut stream, &mut answer)?;
    print!("{answer}");
    Ok(answer
        .lines()
        .next()
        .is_some_and(|status| status.split_whitespace().nth(1) == Some("200")))
}

fn ask_udp(to: SocketAddr, word: &str, timeout: Duration) -> Result<()> {
    let bind: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(bind)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.send_to(word.as_bytes(), to)?;
    let mut buf = [0u8; 1500];
    let (len, _) = socket
        .recv_from(&mut buf)
        .with_context(|| format!("no answer from {to}"))?;
    println!("{}", String::from_utf8_lossy(&buf[..len]));
    Ok(())
}
