//! The intended-time schedule: when each request of an open-loop run should start.

use std::time::Duration;

use crate::config::Stage;

/// Intended send times (offsets from the start of the run) for a constant rate or a series of
/// linear ramps. Request `k` (0-based) is due when the integral of the rate reaches `k`, so the
/// first request is due at 0 and a constant rate `r` gives `k / r`.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// (start offset s, start rate, end rate, duration s, requests before this stage)
    stages: Vec<(f64, f64, f64, f64, f64)>,
    stage: usize,
    next: u64,
}

impl Schedule {
    /// A constant `rate` (requests per second) for `duration`.
    pub fn constant(rate: f64, duration: Duration) -> Self {
        Self::staged(
            rate,
            &[Stage {
                target: rate,
                duration: duration.as_secs_f64(),
            }],
        )
    }

    /// Starts at `start_rate`; each stage ramps linearly to its target over its duration.
    pub fn staged(start_rate: f64, stages: &[Stage]) -> Self {
        let mut out = Vec::with_capacity(stages.len());
        let (mut t, mut before, mut prev) = (0.0, 0.0, start_rate.max(0.0));
        for s in stages {
            let target = s.target.max(0.0);
            let d = s.duration.max(0.0);
            out.push((t, prev, target, d, before));
            before += (prev + target) / 2.0 * d;
            t += d;
            prev = target;
        }
        Self {
            stages: out,
            stage: 0,
            next: 0,
        }
    }

    /// Number of requests the whole schedule holds.
    pub fn total(&self) -> u64 {
        let end: f64 = self
            .stages
            .last()
            .map(|&(_, r0, r1, d, b)| b + (r0 + r1) / 2.0 * d)
            .unwrap_or(0.0);
        // Requests are due at k = 0, 1, ... while k < end (k == end would fall on the end time).
        let n = end.ceil();
        if n.is_finite() && n > 0.0 {
            n as u64
        } else {
            0
        }
    }

    /// The offset of the next request, or `None` when the schedule is over.
    #[inline]
    pub fn next_offset(&mut self) -> Option<Duration> {
        let k = self.next as f64;
        while let Some(&(t0, r0, r1, d, before)) = self.stages.get(self.stage) {
            let x = k - before;
            let stage_total = (r0 + r1) / 2.0 * d;
            if x < stage_total {
                let a = (r1 - r0) / (2.0 * d);
                let t = if a.abs() < 1e-12 {
                    x / r0
                } else {
                    // N(t) = r0 t + a t^2 = x, solved in the form that is stable when a is small.
                    let disc = (r0 * r0 + 4.0 * a * x).max(0.0);
                    let den = r0 + disc.sqrt();
                    if den > 0.0 { 2.0 * x / den } else { 0.0 }
                };
                self.next += 1;
                return Some(Duration::from_secs_f64((t0 + t.clamp(0.0, d)).max(0.0)));
            }
            self.stage += 1;
        }
        None
    }
}

impl Iterator for Schedule {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        self.next_offset()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_rate_spaces_requests_evenly() {
        let s: Vec<_> = Schedule::constant(4.0, Duration::from_secs(1)).collect();
        assert_eq!(
            s,
            vec![
                Duration::ZERO,
                Duration::from_millis(250),
                Duration::from_millis(500),
                Duration::from_millis(750)
            ]
        );
        assert_eq!(
            Schedule::constant(1000.0, Duration::from_secs(3)).count(),
            3000
        );
        assert_eq!(
            Schedule::constant(1000.0, Duration::from_secs(3)).total(),
            3000
        );
    }

    #[test]
    fn ramp_holds_the_integral_of_the_rate() {
        // 0 -> 100 rps over 10 s then 100 for 5 s: 500 + 500 requests.
        let stages = [
            Stage {
                target: 100.0,
                duration: 10.0,
            },
            Stage {
                target: 100.0,
                duration: 5.0,
            },
        ];
        let s: Vec<_> = Schedule::staged(0.0, &stages).collect();
        assert_eq!(s.len(), 1000);
        assert!(s.windows(2).all(|w| w[0] <= w[1]));
        // Half the ramp's requests fall in its last 10 * (1 - 1/sqrt 2) = 2.93 s.
        let late = s
            .iter()
            .filter(|t| t.as_secs_f64() >= 10.0 - 2.93 && t.as_secs_f64() < 10.0)
            .count();
        assert!((245..=255).contains(&late), "{late}");
        assert!(s[999] < Duration::from_secs(15));
        // Ramp down: 100 -> 0 over 10 s is 500 requests, front-loaded.
        let down: Vec<_> = Schedule::staged(
            100.0,
            &[Stage {
                target: 0.0,
                duration: 10.0,
            }],
        )
        .collect();
        assert_eq!(down.len(), 500);
        assert!(down.iter().filter(|t| t.as_secs_f64() < 5.0).count() > 350);
    }
}
