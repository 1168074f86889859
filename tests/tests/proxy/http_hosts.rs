//! Numeric hosts in the HTTP proxy: `0xcb00710b`, `3405803787`, `0313.0.0161.013`,
//! `203.28939`, `0` and a trailing dot are the IPv4 addresses they stand for, never names
//! sent to DNS. Each gets its answer at once and is allowed or denied as that address; a
//! host that ends in a number but is no address is a bad request. Raw requests, since curl
//! itself rewrites such URLs before sending them.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use egress_tests::lab::{EGRESS_SOURCE, ROUTER_POD_IP};

use super::http_rules::proxy_lab_with;

/// Sends `request` to the proxy (from the namespace this runs in) and reads the answer until
/// the proxy closes or, for a tunnel, until its status line: the answer and how long it took.
fn ask(request: &str) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(
        &SocketAddr::from((ROUTER_POD_IP, 8080)),
        Duration::from_secs(2),
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
        // A tunnel stays open: its status line (and blank line) is the answer.
        if request.starts_with("CONNECT") && answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

fn get(host: &str) -> String {
    format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

fn connect(target: &str) -> String {
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")
}

#[test]
fn numeric_hosts_are_the_addresses_they_stand_for_and_answered_at_once() {
    // 203.0.113.11 allowed by address; 203.0.113.12 (a server too) by nothing.
    let (lab, _dir) = proxy_lab_with("proxy-numeric", "", "203.0.113.11\n", "", &[]);
    let source = EGRESS_SOURCE.to_string();
    let cases: Vec<(String, &str)> = vec![
        (get("0xcb00710b"), "200"),
        (get("0XCB00710B"), "200"),
        (get("3405803787"), "200"),
        (get("0313.0.0161.013"), "200"),
        (get("203.28939"), "200"),
        (get("203.0.28939"), "200"),
        (get("203.0.113.11."), "200"),
        (get("3405803787:80"), "200"),
        (connect("3405803787:80"), "200"),
        (connect("0xcb00710b:80"), "200"),
        // Another address, and the unspecified one (`0`): no rule allows them.
        (get("0xcb00710c"), "403"),
        (get("3405803788"), "403"),
        (connect("3405803788:80"), "403"),
        (get("0:8080"), "403"),
        (connect("0:8080"), "403"),
        // A number that is no address.
        (get("1.2.3.256"), "400"),
        (get("08"), "400"),
        (connect("4294967296:80"), "400"),
    ];
    let answers = lab
        .client
        .enter(|| {
            cases
                .iter()
                .map(|(request, _)| ask(request))
                .collect::<Vec<_>>()
        })
        .unwrap();
    for ((request, status), (answer, took)) in cases.iter().zip(&answers) {
        let line = request.lines().next().unwrap();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{line}: want {status}, got {answer:?}"
        );
        assert!(
            *took < Duration::from_secs(2),
            "{line}: answered after {took:?}"
        );
        // Forwarded: from EGRESS_SOURCE, the server asked for the address as a host.
        if status == &"200" && line.starts_with("GET") {
            assert!(
                answer.contains(&source)
                    && answer
                        .trim_end()
                        .rsplit(' ')
                        .next()
                        .is_some_and(|host| host.starts_with("203.0.113.11")),
                "{line}: {answer:?}"
            );
        }
    }
}
