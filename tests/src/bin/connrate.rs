//! Short-TCP-connection load for the benchmarks: one connection per request, the way a
//! client without keep-alive talks through an egress router.
//!
//! ```text
//! connrate serve ADDR:PORT WORKERS PEER         answers each connection from PEER once,
//!                                               then closes (others get no reply)
//! connrate client ADDR:PORT SECONDS WORKERS     connect, request, read reply to EOF, close
//! ```
//!
//! The client prints one line: `connections=N errors=E slow=W seconds=S`, where W counts
//! the connections that took longer than a retransmission timeout. The server closes first,
//! so TIME_WAIT stays on the server and the client's ports are free again at once.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

const REQUEST: &[u8] = b"GET /ping HTTP/1.0\r\n\r\n";
const REPLY: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\npong\n";
/// A connection that takes longer than this counts as an error.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection that takes longer than this waited for a retransmission (the shortest
/// retransmission timeout is 200 ms): counted as slow.
const SLOW: Duration = Duration::from_millis(150);

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", addr, workers, peer] => serve(addr.parse()?, workers.parse()?, peer.parse()?),
        ["client", addr, seconds, workers] => {
            client(addr.parse()?, seconds.parse()?, workers.parse()?)
        }
        _ => {
            bail!("usage: connrate serve ADDR:PORT WORKERS PEER | client ADDR:PORT SECONDS WORKERS")
        }
    }
}

/// The peer check is what makes a counted connection one that was translated: through the
/// egress router, the server sees EGRESS_SOURCE, never the client.
fn serve(addr: SocketAddr, workers: usize, peer: IpAddr) -> Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    let mut handles = Vec::new();
    for _ in 0..workers {
        let listener = listener.try_clone()?;
        handles.push(thread::spawn(move || {
            loop {
                let Ok((mut conn, from)) = listener.accept() else {
                    continue;
                };
                if from.ip() == peer {
                    let _ = answer(&mut conn);
                }
            }
        }));
    }
    for handle in handles {
        let _ = handle.join();
    }
    Ok(())
}

fn answer(conn: &mut TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut buf = [0u8; 256];
    let mut got = 0;
    while !buf[..got].ends_with(b"\r\n\r\n") && got < buf.len() {
        let n = conn.read(&mut buf[got..])?;
        if n == 0 {
            return Ok(());
        }
        got += n;
    }
    conn.write_all(REPLY)
}

fn client(addr: SocketAddr, seconds: f64, workers: usize) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let slow = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (stop, done, errors, slow) =
                (stop.clone(), done.clone(), errors.clone(), slow.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match once(addr) {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                    if t.elapsed() >= SLOW {
                        slow.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let counted = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for handle in handles {
        let _ = handle.join();
    }
    println!(
        "connections={counted} errors={} slow={} seconds={elapsed:.3}",
        errors.load(Ordering::Relaxed),
        slow.load(Ordering::Relaxed)
    );
    Ok(())
}

fn once(addr: SocketAddr) -> std::io::Result<()> {
    let mut conn = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.write_all(REQUEST)?;
    let mut reply = Vec::with_capacity(REPLY.len());
    conn.read_to_end(&mut reply)?;
    if reply != REPLY {
        return Err(std::io::Error::other("unexpected reply"));
    }
    Ok(())
}
