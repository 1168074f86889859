//! The figures every section of the report is made of: a median and its range over the
//! rounds ([`Spread`]), a target it meets or not, and the rows and table heads the
//! sections share.

use serde::Serialize;

/// The head of the tables with one column per variant and the ratios A/B and A/C.
pub(crate) const VARIANT_TABLE_HEAD: &str = "| figure | A egress-router | B iptables (classic) | C stateless BPF forwarder | A/B | A/C |\n|---|---|---|---|---|---|";

/// Median of `values` (sorted in place); NaN when empty.
pub(crate) fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Median and range of one figure over the rounds.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    pub(crate) fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        let median = median(&mut v);
        Self {
            median,
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
            n: v.len(),
        }
    }

    /// `median (min-max; rounds)` with `digits` decimals, each value divided by `scale`.
    pub(crate) fn show(&self, scale: f64, digits: usize) -> String {
        if self.n == 0 {
            return "n/a".into();
        }
        format!(
            "{:.d$} ({:.d$}-{:.d$}; {})",
            self.median / scale,
            self.min / scale,
            self.max / scale,
            self.n,
            d = digits
        )
    }
}

/// A data-plane target and whether the median meets it.
pub(crate) struct Target {
    pub what: &'static str,
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

/// A target of at most `limit` (in `unit`, shown with `digits` decimals).
pub(crate) fn at_most(
    what: &'static str,
    spread: Spread,
    limit: f64,
    unit: &str,
    digits: usize,
) -> Target {
    Target {
        what,
        goal: format!("<= {limit} {unit}"),
        measured: format!("{} {unit}", spread.show(1.0, digits)),
        met: spread.median <= limit,
    }
}

/// A target of a ratio of at least `limit`.
pub(crate) fn at_least(what: &'static str, spread: Spread, limit: f64) -> Target {
    Target {
        what,
        goal: format!(">= {limit}x"),
        measured: format!("{}x", spread.show(1.0, 2)),
        met: spread.median >= limit,
    }
}

/// The four rows of two set-ups side by side and their ratio: small UDP frames (labelled
/// `frames`), TCP with 1 and 4 streams, short connections.
pub(crate) fn pair_rows(
    w: &mut String,
    frames: &str,
    pair: &[[Spread; 2]; 4],
    ratio: &[Spread; 4],
) {
    use std::fmt::Write as _;
    let rows = [
        (frames, 1e3, 0),
        ("TCP, 1 stream, Gbit/s", 1.0, 2),
        ("TCP, 4 streams, Gbit/s", 1.0, 2),
        ("short TCP connections/s", 1.0, 0),
    ];
    for (i, (what, scale, digits)) in rows.into_iter().enumerate() {
        let _ = writeln!(
            w,
            "| {what} | {} | {} | {} |",
            pair[i][0].show(scale, digits),
            pair[i][1].show(scale, digits),
            ratio[i].show(1.0, 2)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{Spread, median};

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn spread_ignores_missing_values_and_shows_scaled() {
        let s = Spread::of([2000.0, f64::NAN, 1000.0, 3000.0]);
        assert_eq!((s.median, s.min, s.max, s.n), (2000.0, 1000.0, 3000.0, 3));
        assert_eq!(
            s.show(1e3, 1),
            "2.0 (1.0-3.0; 3)",
            "median (min-max; rounds)"
        );
        assert_eq!(Spread::of([]).show(1.0, 0), "n/a");
    }
}
