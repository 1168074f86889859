//! The proxy modes' load: wrk -t2 -c50 from the client namespace against nginx in the
//! server namespace, through five set-ups of the router pod, each on a fresh lab: squid and
//! HAProxy (TCP mode), the anchors OpenShift's proxy images run; plain iptables DNAT (the
//! classic redirect mode); and egress-router's HTTP proxy and DNS proxy (data plane, a name
//! resolved through the lab's dnsmasq). Each with keep-alive and with `Connection: close`.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result, bail};
use egress_tests::{
    egress_router_bin,
    lab::{EGRESS_SOURCE, Lab, ROUTER_POD_IP, SERVER_IP},
    netns::run_bounded,
};

use crate::{traffic, variant};

/// nginx's port on the server, and the port clients use where the router forwards TCP.
const WEB_PORT: u16 = 80;
/// Connections and threads of wrk (the reference measurement).
pub(crate) const WRK_CONNECTIONS: u32 = 50;
pub(crate) const WRK_THREADS: u32 = 2;

/// What serves the client's HTTP in the router pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum HttpVariant {
    /// squid as OpenShift's egress HTTP proxy image configures it (allow, no cache).
    Squid,
    /// HAProxy in TCP mode, as OpenShift's egress DNS proxy image runs it.
    Haproxy,
    /// The classic redirect mode: iptables DNAT and SNAT.
    Dnat,
    /// egress-router http-proxy.
    HttpProxy,
    /// egress-router dns-proxy in the data plane, to a name.
    DnsProxy,
}

impl HttpVariant {
    pub(crate) const ALL: [Self; 5] = [
        Self::Squid,
        Self::Haproxy,
        Self::Dnat,
        Self::HttpProxy,
        Self::DnsProxy,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Squid => "squid",
            Self::Haproxy => "HAProxy (TCP mode)",
            Self::Dnat => "iptables DNAT",
            Self::HttpProxy => "egress-router http-proxy",
            Self::DnsProxy => "egress-router dns-proxy",
        }
    }

    /// Short name, for --http-variant.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Squid => "squid",
            Self::Haproxy => "haproxy",
            Self::Dnat => "dnat",
            Self::HttpProxy => "http-proxy",
            Self::DnsProxy => "dns-proxy",
        }
    }

    /// Whether clients speak to it as to an HTTP proxy (absolute URLs).
    fn is_proxy(self) -> bool {
        matches!(self, Self::Squid | Self::HttpProxy)
    }

    fn port(self) -> u16 {
        match self {
            Self::Squid => 3128,
            Self::Haproxy => 8000,
            Self::HttpProxy => 8080,
            Self::Dnat | Self::DnsProxy => WEB_PORT,
        }
    }
}

/// One round of one HTTP variant.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct HttpRound {
    pub round: usize,
    pub variant: HttpVariant,
    /// Requests per second with keep-alive.
    pub keepalive_rps: f64,
    /// Requests per second with `Connection: close`.
    pub close_rps: f64,
    /// Requests that failed (socket errors, non-2xx) in either load.
    pub errors: u64,
}

/// Sets up `variant` on a fresh lab, then measures both loads.
pub(crate) fn round(variant: HttpVariant, round: usize, measure: Duration) -> Result<HttpRound> {
    traffic::settle()?;
    let dir = egress_tests::util::tempdir(&format!("bench-http{round}-{variant:?}"));
    // Declared after `dir`, so the lab (nginx serving from `dir`) goes first.
    let mut lab = Lab::new(&format!("bhttp{round}{}", variant.port()))?;
    start_nginx(&mut lab, &dir)?;
    set_up(&mut lab, variant, &dir)?;
    wait_answering(&lab, variant)?;
    traffic::settle()?;
    let (keepalive_rps, e1) = wrk(&lab, variant, &dir, false, measure)?;
    let (close_rps, e2) = wrk(&lab, variant, &dir, true, measure)?;
    // A rate with failed requests in it is not a rate of the set-up's work.
    if e1 + e2 > 0 {
        bail!(
            "round {round}, {}: wrk reported {} failed requests (keep-alive {e1}, close {e2})",
            variant.label(),
            e1 + e2
        );
    }
    Ok(HttpRound {
        round,
        variant,
        keepalive_rps,
        close_rps,
        errors: e1 + e2,
    })
}

fn start_nginx(lab: &mut Lab, dir: &Path) -> Result<()> {
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "user root;\n\
             worker_processes 2;\n\
             daemon off;\n\
             pid {dir}/nginx.pid;\n\
             error_log stderr warn;\n\
             events {{ worker_connections 8192; }}\n\
             http {{\n\
               access_log off;\n\
               keepalive_requests 1000000;\n\
               client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir};\n\
               uwsgi_temp_path {dir}; scgi_temp_path {dir};\n\
               server {{\n\
                 listen {SERVER_IP}:{WEB_PORT} backlog=4096;\n\
                 location / {{ return 200 \"ok\\n\"; }}\n\
               }}\n\
             }}\n",
            dir = dir.display()
        ),
    )?;
    let mut cmd = lab.server.command("nginx");
    cmd.arg("-c").arg(&conf).arg("-e").arg("stderr");
    lab.spawn(cmd)?;
    egress_tests::util::wait_listening(lab, WEB_PORT);
    Ok(())
}

fn set_up(lab: &mut Lab, variant: HttpVariant, dir: &Path) -> Result<()> {
    match variant {
        HttpVariant::Squid => {
            variant::egress_network(lab)?;
            let conf = dir.join("squid.conf");
            std::fs::write(
                &conf,
                format!(
                    "http_port {ROUTER_POD_IP}:{port}\n\
                     tcp_outgoing_address {EGRESS_SOURCE}\n\
                     http_access allow all\n\
                     cache deny all\n\
                     cache_mem 8 MB\n\
                     access_log none\n\
                     cache_log {dir}/cache.log\n\
                     pid_filename {dir}/squid.pid\n\
                     coredump_dir {dir}\n\
                     shutdown_lifetime 0 seconds\n\
                     max_filedescriptors 8192\n",
                    port = variant.port(),
                    dir = dir.display()
                ),
            )?;
            let mut cmd = lab.router.command("squid");
            cmd.arg("-N").arg("-f").arg(&conf);
            lab.spawn(cmd)?;
        }
        HttpVariant::Haproxy => {
            variant::egress_network(lab)?;
            let conf = dir.join("haproxy.cfg");
            std::fs::write(
                &conf,
                format!(
                    "global\n  nbthread 2\n  maxconn 4096\n\
                     defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1m\n  timeout server 1m\n\
                     frontend f\n  bind {ROUTER_POD_IP}:{port}\n  default_backend b\n\
                     backend b\n  source {EGRESS_SOURCE}\n  server s1 {SERVER_IP}:{WEB_PORT}\n",
                    port = variant.port()
                ),
            )?;
            let mut cmd = lab.router.command("haproxy");
            cmd.arg("-db").arg("-f").arg(&conf);
            lab.spawn(cmd)?;
        }
        HttpVariant::Dnat => variant::classic_rules(lab, &[(WEB_PORT, "tcp")])?,
        HttpVariant::HttpProxy => {
            lab.init_proxy_network("http-proxy")?;
            let mut cmd = lab.router.command(egress_router_bin());
            cmd.env_clear()
                .env("EGRESS_HTTP_PROXY_DESTINATION", format!("{SERVER_IP}/32"))
                .env("EGRESS_ROUTER_LOG", "warn");
            lab.spawn(cmd)?;
        }
        HttpVariant::DnsProxy => {
            let hosts = dir.join("hosts");
            std::fs::write(&hosts, format!("{SERVER_IP} web.example.com\n"))?;
            let (resolv_conf, _) = lab.start_nameserver(dir, &hosts, 60)?;
            lab.init_proxy_network("dns-proxy")?;
            let mut cmd = lab.router.command(egress_router_bin());
            cmd.env_clear()
                .env(
                    "EGRESS_DNS_PROXY_DESTINATION",
                    format!("{WEB_PORT} web.example.com"),
                )
                .env("EGRESS_ROUTER_LOG", "warn")
                .arg("--resolv-conf")
                .arg(resolv_conf)
                .arg("--bpffs")
                .arg(lab.bpffs.path());
            lab.spawn(cmd)?;
        }
    }
    Ok(())
}

/// The URL wrk is given, and the request path (absolute for the proxies).
fn target(variant: HttpVariant) -> (String, String) {
    let url = format!("http://{ROUTER_POD_IP}:{}/", variant.port());
    let path = if variant.is_proxy() {
        format!("http://{SERVER_IP}:{WEB_PORT}/")
    } else {
        "/".to_owned()
    };
    (url, path)
}

/// Waits (at most 20 s) until one request through the set-up gets nginx's answer.
fn wait_answering(lab: &Lab, variant: HttpVariant) -> Result<()> {
    let (url, path) = target(variant);
    let mut args = vec!["-s".to_owned(), "--max-time".into(), "2".into()];
    if variant.is_proxy() {
        args.extend(["--proxy".into(), url.trim_end_matches('/').to_owned(), path]);
    } else {
        args.push(url);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = run_bounded(
            lab.client.command("curl").args(&args),
            Duration::from_secs(5),
        )?;
        if out.stdout == b"ok\n" {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "{} did not answer within 20 s: {}",
                variant.label(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs wrk for a second of warm-up, then for `measure`; returns requests/s and the
/// failed requests of the measured run.
fn wrk(
    lab: &Lab,
    variant: HttpVariant,
    dir: &Path,
    close: bool,
    measure: Duration,
) -> Result<(f64, u64)> {
    let (url, path) = target(variant);
    let script = dir.join("wrk.lua");
    let mut lua = format!("wrk.path = \"{path}\"\nwrk.headers[\"Host\"] = \"{SERVER_IP}\"\n");
    if close {
        lua.push_str("wrk.headers[\"Connection\"] = \"close\"\n");
    }
    std::fs::write(&script, lua)?;
    let run = |seconds: f64| -> Result<String> {
        let out = run_bounded(
            lab.client.command("wrk").args([
                &format!("-t{WRK_THREADS}"),
                &format!("-c{WRK_CONNECTIONS}"),
                &format!("-d{}s", seconds.max(1.0).round()),
                "-s",
                &script.display().to_string(),
                &url,
            ]),
            Duration::from_secs_f64(seconds + 30.0),
        )?;
        if !out.status.success() {
            bail!("wrk: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    run(1.0)?;
    let text = run(measure.as_secs_f64())?;
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))?;
    Ok((rps, errors(&text)))
}

/// Failed requests in wrk's summary: socket errors and non-2xx/3xx responses.
fn errors(text: &str) -> u64 {
    let mut total = 0;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            total += rest
                .split(',')
                .filter_map(|f| f.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            total += rest.trim().parse::<u64>().unwrap_or(0);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_errors_are_summed() {
        let text = "  Socket errors: connect 0, read 12, write 3, timeout 1\n  \
                    Non-2xx or 3xx responses: 5\nRequests/sec:  1234.5\n";
        assert_eq!(errors(text), 21);
    }
}
