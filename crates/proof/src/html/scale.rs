//! Axis scales for the charts: linear from zero with round ticks, or logarithmic over whole
//! decades, and tick labels that stay readable (and finite) for any input.

/// `v`, or 0 when it is not a finite number.
pub(super) fn fin(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

/// A y axis: maps values to a 0..=1 fraction of the plot's height.
#[derive(Debug, Clone, Copy)]
pub(super) enum YScale {
    /// From 0 to `max`, ticks every `step`.
    Linear { max: f64, step: f64 },
    /// Decades `10^lo ..= 10^hi`.
    Log { lo: i32, hi: i32 },
}

impl YScale {
    /// A linear scale from 0 that holds `max`, with round ticks (whole ones if `whole`).
    pub(super) fn linear(max: f64, whole: bool) -> Self {
        Self::linear_n(max, whole, 4.0)
    }

    /// A linear scale from 0 that holds `max` with about `n` round ticks.
    pub(super) fn linear_n(max: f64, whole: bool, n: f64) -> Self {
        let max = fin(max);
        let max = if max < 1e-6 { 1.0 } else { max };
        let raw = max / n;
        let mag = 10_f64.powf(raw.log10().floor());
        let norm = raw / mag;
        let nice = if norm <= 1.0 {
            1.0
        } else if norm <= 2.0 {
            2.0
        } else if norm <= 2.5 {
            2.5
        } else if norm <= 5.0 {
            5.0
        } else {
            10.0
        };
        let mut step = nice * mag;
        if whole {
            step = step.max(1.0).round();
        }
        let top = (max / step).ceil() * step;
        if step > 0.0 && step.is_finite() && top.is_finite() && top > 0.0 {
            YScale::Linear { max: top, step }
        } else {
            YScale::Linear {
                max,
                step: max / 4.0,
            }
        }
    }

    /// A log scale over whole decades that holds `min..=max` (both > 0).
    pub(super) fn log(min: f64, max: f64) -> Self {
        let lo = (min.log10().floor() as i32).clamp(-300, 300);
        let hi = (max.log10().ceil() as i32).clamp(-300, 300);
        YScale::Log {
            lo,
            hi: hi.max(lo + 1),
        }
    }

    /// Where `v` sits, 0 (bottom) to 1 (top), clamped; `None` where it cannot be drawn (a value
    /// <= 0 on a log scale, or not a number).
    pub(super) fn frac(self, v: f64) -> Option<f64> {
        if !v.is_finite() {
            return None;
        }
        let f = match self {
            YScale::Linear { max, .. } => v / max,
            YScale::Log { lo, hi } => {
                if v <= 0.0 {
                    return None;
                }
                (v.log10() - f64::from(lo)) / f64::from(hi - lo)
            }
        };
        f.is_finite().then_some(f.clamp(0.0, 1.0))
    }

    /// Gridlines: (fraction, label; empty for a minor line).
    pub(super) fn ticks(self) -> Vec<(f64, String)> {
        let mut out = Vec::new();
        match self {
            YScale::Linear { max, step } => {
                for k in 0..=12 {
                    let v = f64::from(k) * step;
                    if !v.is_finite() || v / max > 1.0 + 1e-9 {
                        break;
                    }
                    out.push((v / max, number(v, step)));
                }
            }
            YScale::Log { lo, hi } => {
                let n = f64::from(hi - lo);
                // At most about ten labelled decades.
                let stride = ((hi - lo) / 10).max(1);
                for k in lo..=hi {
                    if (k - lo) % stride != 0 && k != hi {
                        continue;
                    }
                    out.push((f64::from(k - lo) / n, decade(k)));
                    if k < hi && hi - lo <= 4 {
                        for m in [2.0_f64, 5.0] {
                            out.push(((f64::from(k - lo) + m.log10()) / n, String::new()));
                        }
                    }
                }
            }
        }
        out
    }
}

/// A tick label for `v` on a scale stepping by `step`: compact for big numbers (`12k`, `3.5M`).
pub(super) fn number(v: f64, step: f64) -> String {
    let a = v.abs();
    if a >= 1e15 {
        return format!("{v:.1e}");
    }
    for (from, div, suffix) in [
        (1e12, 1e12, "T"),
        (1e9, 1e9, "G"),
        (1e6, 1e6, "M"),
        (1e4, 1e3, "k"),
    ] {
        if a >= from {
            return trim(format!("{:.1}", v / div)) + suffix;
        }
    }
    let decimals = if step >= 1.0 {
        0
    } else {
        ((-step.log10()).ceil() as usize).min(6)
    };
    trim(format!("{v:.decimals$}"))
}

/// `10^k` for a log axis label, without ever computing an infinity.
fn decade(k: i32) -> String {
    match k {
        i32::MIN..=-1 if k >= -6 => trim(format!("{:.*}", (-k) as usize, 10_f64.powi(k))),
        0..=3 => format!("{}", 10_i32.pow(k as u32)),
        4..=14 => number(10_f64.powi(k), 1.0),
        _ => format!("1e{k}"),
    }
}

/// `12.0` → `12`, `1.50` → `1.5`.
fn trim(s: String) -> String {
    if s.contains('.') && !s.contains('e') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_give_round_finite_ticks() {
        let labels = |y: YScale| y.ticks().into_iter().map(|t| t.1).collect::<Vec<_>>();
        assert_eq!(
            labels(YScale::linear(500.0, true)),
            ["0", "200", "400", "600"]
        );
        assert_eq!(labels(YScale::linear(3.0, true)), ["0", "1", "2", "3"]);
        assert_eq!(labels(YScale::linear(0.0, true)), ["0", "1"]);
        let big = labels(YScale::linear(f64::MAX, false));
        assert!(
            big.iter().all(|l| !l.contains("inf") && !l.contains("NaN")),
            "{big:?}"
        );
        let log = YScale::log(8.0, 5000.0);
        assert!(matches!(log, YScale::Log { lo: 0, hi: 4 }), "{log:?}");
        let log_labels: Vec<String> = labels(log).into_iter().filter(|l| !l.is_empty()).collect();
        assert_eq!(log_labels, ["1", "10", "100", "1000", "10k"]);
        assert_eq!(log.frac(0.0), None);
        assert_eq!(decade(-2), "0.01");
        assert_eq!(decade(400), "1e400");
    }
}
