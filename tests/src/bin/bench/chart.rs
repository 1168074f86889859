//! bench/chart.svg: the headline figures as a bar chart.

use std::fmt::Write as _;

use crate::{figures::Spread, report::Summary};

const COLORS: [&str; 3] = ["#2b7bb9", "#c0392b", "#7f8c8d"];

/// One bar of a panel: label, colour, spread.
type Bar = (&'static str, &'static str, Spread);

/// The chart: one panel per figure, bars at the median, whiskers from min to max.
pub(crate) fn svg(s: &Summary) -> String {
    let [a, b, c] = COLORS;
    let mut panels: Vec<(&str, &str, f64, Vec<Bar>)> = vec![
        (
            "Small UDP frames",
            "kpps (higher is better)",
            1e3,
            vec![("A", a, s.pps[0]), ("B", b, s.pps[1]), ("C", c, s.pps[2])],
        ),
        (
            "2 CPUs / pps over C (estimate)",
            "ns (lower is better)",
            1.0,
            vec![("A", a, s.overhead[0]), ("B", b, s.overhead[1])],
        ),
        (
            "TCP throughput",
            "Gbit/s (higher is better)",
            1.0,
            vec![
                ("A 1", a, s.tcp1[0]),
                ("B 1", b, s.tcp1[1]),
                ("A 4", a, s.tcp4[0]),
                ("B 4", b, s.tcp4[1]),
            ],
        ),
        (
            "Short TCP connections",
            "connections/s (higher is better)",
            1.0,
            vec![("A", a, s.conn[0]), ("B", b, s.conn[1])],
        ),
    ];
    // The router's own CPU, measured on a core of its own, where the run has the per-core
    // mode (it replaces the estimate).
    if s.core.rounds > 0 {
        panels[1] = (
            "Router CPU per packet over C",
            "ns on its own core (lower is better)",
            1.0,
            vec![("A", a, s.core.ns_over_c[0]), ("B", b, s.core.ns_over_c[1])],
        );
        panels.push((
            "Router CPU per connection over C",
            "µs on its own core (lower is better)",
            1.0,
            vec![("A", a, s.core.us_over_c[0]), ("B", b, s.core.us_over_c[1])],
        ));
    }
    for (t, title) in [
        "Program cost, 1k flows in the table",
        "Program cost, 1M flows in the table",
    ]
    .into_iter()
    .enumerate()
    {
        panels.push((
            title,
            "ns above the no-op (lower is better)",
            1.0,
            vec![
                ("C prog", c, s.forwarder[t]),
                ("est", a, s.established[t]),
                ("new", a, s.new_flow[t]),
                ("reply", a, s.reply[t]),
            ],
        ));
    }
    let (pw, ph, top, bottom, left) = (300.0, 260.0, 50.0, 40.0, 50.0);
    let cols = 3;
    let rows = panels.len().div_ceil(cols);
    let (width, height) = (pw * cols as f64, ph * rows as f64 + 45.0);
    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="10" y="18" font-size="13" font-weight="bold">egress-router benchmarks: A egress-router, B iptables (classic), C stateless BPF forwarder</text><text x="10" y="33" fill="gray">bars: medians over the rounds; whiskers: min-max. Raw rounds in bench/results.json.</text>"#
    );
    for (i, (title, unit, scale, bars)) in panels.iter().enumerate() {
        let x0 = (i % cols) as f64 * pw;
        let y0 = 45.0 + (i / cols) as f64 * ph;
        let plot_h = ph - top - bottom;
        let max = bars
            .iter()
            .map(|(_, _, sp)| sp.max / scale)
            .filter(|v| v.is_finite())
            .fold(0.0_f64, f64::max)
            .max(1e-9)
            * 1.1;
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}" font-weight="bold">{title}</text><text x="{}" y="{}" fill="gray">{unit}</text>"#,
            x0 + left,
            y0 + 14.0,
            x0 + left,
            y0 + 28.0
        );
        let base = y0 + top + plot_h;
        let _ = writeln!(
            o,
            "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{base}\" stroke=\"#999\"/><line x1=\"{x}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#999\"/>",
            y0 + top,
            x0 + pw - 20.0,
            x = x0 + left,
        );
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}" text-anchor="end" fill="gray">{}</text><text x="{}" y="{base}" text-anchor="end" fill="gray">0</text>"#,
            x0 + left - 4.0,
            y0 + top + 4.0,
            fmt_axis(max),
            x0 + left - 4.0
        );
        let slot = (pw - left - 30.0) / bars.len() as f64;
        for (j, (label, color, sp)) in bars.iter().enumerate() {
            let cx = r1(x0 + left + slot * (j as f64 + 0.5));
            let y = |v: f64| r1(base - (v / scale).max(0.0) / max * plot_h);
            let bw = r1(slot * 0.6);
            if sp.n > 0 {
                let _ = writeln!(
                    o,
                    r#"<rect x="{}" y="{}" width="{bw}" height="{}" fill="{color}"/>"#,
                    r1(cx - bw / 2.0),
                    y(sp.median),
                    r1(base - y(sp.median))
                );
                let _ = writeln!(
                    o,
                    "<line x1=\"{cx}\" y1=\"{}\" x2=\"{cx}\" y2=\"{}\" stroke=\"black\"/>",
                    y(sp.min),
                    y(sp.max)
                );
                let _ = writeln!(
                    o,
                    r#"<text x="{cx}" y="{}" text-anchor="middle">{}</text>"#,
                    y(sp.max) - 4.0,
                    fmt_axis(sp.median / scale)
                );
            }
            let _ = writeln!(
                o,
                r#"<text x="{cx}" y="{}" text-anchor="middle">{label}</text>"#,
                base + 14.0
            );
        }
    }
    let _ = writeln!(o, "</svg>");
    out
}

/// Rounded to 0.1: coordinates that read the same after a JSON round trip.
fn r1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn fmt_axis(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
