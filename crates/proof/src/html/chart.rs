//! The report's SVG charts, drawn by hand: one shared time axis (seconds from the start, the same
//! scale on every chart so they line up), scenario bands and fault shading, ticks, legends.
//!
//! Every number written into the SVG goes through [`fin`] or a clamp first, so degenerate input
//! (no points, one point, zeros, huge or non-finite values) draws an empty or flat chart, never
//! `NaN`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::esc;
use super::scale::{YScale, fin, number};
use crate::report::{MarkKind, Point, ProofReport, ServicePoint};

/// The SVG's width (its `viewBox`; the page scales it to the column).
const WIDTH: f64 = 900.0;
/// Left edge of every plot area: room for the y tick labels and the axis title.
const LEFT: f64 = 68.0;
/// Right edge of every plot area.
const RIGHT: f64 = WIDTH - 16.0;
/// Height of every plot area.
const PLOT_H: f64 = 200.0;
/// Below the plot: x ticks and the axis title.
const BOTTOM: f64 = 42.0;
/// A legend row's height.
const ROW: f64 = 16.0;

/// Series colours; zones take theirs from [`ZONE_COLOURS`] by their sorted position.
const SENT: &str = "#64748b";
const OK: &str = "#16a34a";
const ERR: &str = "#dc2626";
const P50: &str = "#2563eb";
const P99: &str = "#7c3aed";
const DESIRED: &str = "#0f172a";
const RUNNING: &str = "#2563eb";
const SERVING: &str = "#9333ea";
const ZONE_COLOURS: [&str; 8] = [
    "#0ea5e9", "#f97316", "#8b5cf6", "#14b8a6", "#eab308", "#ec4899", "#64748b", "#84cc16",
];

/// The five charts, and a sixth of the writes when there were any, in page order: (anchor
/// id, SVG).
pub(super) fn charts(report: &ProofReport) -> Vec<(&'static str, String)> {
    let ctx = Ctx::new(report);
    let mut all = vec![
        ("chart-rps", requests(&ctx)),
        ("chart-latency", latency(&ctx)),
        ("chart-errors", errors(&ctx)),
        ("chart-zones", zone_share(&ctx)),
        ("chart-tasks", tasks(&ctx)),
    ];
    if !report.writes.is_empty() {
        all.push(("chart-writes", writes(&ctx)));
    }
    all
}

/// (f) Writes (`POST /orders`) per second of their answers: acknowledged and failed, stacked.
fn writes(ctx: &Ctx<'_>) -> String {
    let points: Vec<&crate::report::WritePoint> = ctx
        .report
        .writes
        .iter()
        .filter(|w| w.t.is_finite())
        .collect();
    let max = max_of(points.iter().map(|w| (w.acknowledged + w.failed) as f64));
    let legend = [
        ("acknowledged writes / s".to_owned(), Key::Fill(OK)),
        ("failed writes / s".to_owned(), Key::Fill(ERR)),
    ];
    chart(
        ctx,
        "Writes per second (orders, by answer time)",
        "writes / s",
        YScale::linear(max, true),
        &legend,
        |f, out| {
            for w in &points {
                let (x0, x1) = (f.x(w.t), f.x(w.t + 1.0));
                let width = (x1 - x0).max(0.8);
                let acked = w.acknowledged as f64;
                let all = acked + w.failed as f64;
                if let (Some(y_ok), Some(y_all)) = (f.y(acked), f.y(all)) {
                    let _ = write!(
                        out,
                        "<rect x=\"{x0:.1}\" y=\"{y_ok:.1}\" width=\"{width:.1}\" height=\"{:.1}\" \
                         fill=\"{OK}\"><title>{:.0} s: {} acknowledged</title></rect>\
                         <rect x=\"{x0:.1}\" y=\"{y_all:.1}\" width=\"{width:.1}\" height=\"{:.1}\" \
                         fill=\"{ERR}\"><title>{:.0} s: {} failed</title></rect>",
                        f.bottom() - y_ok,
                        fin(w.t),
                        w.acknowledged,
                        (y_ok - y_all).max(0.0),
                        fin(w.t),
                        w.failed
                    );
                }
            }
            !points.is_empty()
        },
    )
}

/// What every chart shares: the time domain, the zones and their colours, the spans to mark.
struct Ctx<'a> {
    report: &'a ProofReport,
    /// The timeline, sorted by time, non-finite times dropped.
    points: Vec<&'a Point>,
    /// The service samples, sorted by time, non-finite times dropped.
    service: Vec<&'a ServicePoint>,
    /// The end of the shared x axis, seconds (at least 1).
    x_max: f64,
    /// Every zone seen, sorted: the index is the colour.
    zones: Vec<&'a str>,
    /// Scenario spans (start, end, name).
    bands: Vec<(f64, f64, &'a str)>,
    /// Fault spans (start, end, label).
    faults: Vec<(f64, f64, &'a str)>,
    warmups: Vec<(f64, f64, &'a str)>,
}

impl<'a> Ctx<'a> {
    fn new(report: &'a ProofReport) -> Self {
        let mut points: Vec<&Point> = report.timeline.iter().filter(|p| p.t.is_finite()).collect();
        points.sort_by(|a, b| a.t.total_cmp(&b.t));
        let mut service: Vec<&ServicePoint> =
            report.service.iter().filter(|p| p.t.is_finite()).collect();
        service.sort_by(|a, b| a.t.total_cmp(&b.t));
        let span = |a: f64, b: f64| {
            let (a, b) = (fin(a).max(0.0), fin(b).max(0.0));
            (a.min(b), a.max(b))
        };
        let mut bands: Vec<(f64, f64, &str)> = report
            .marks
            .iter()
            .filter(|m| m.kind == MarkKind::Scenario)
            .map(|m| {
                let (a, b) = span(m.start_s, m.end_s);
                (a, b, m.label.as_str())
            })
            .collect();
        if bands.is_empty() {
            bands = report
                .scenarios
                .iter()
                .map(|s| {
                    let (a, b) = span(s.start_s, s.end_s);
                    (a, b, s.name.as_str())
                })
                .collect();
        }
        let marked = |kind: MarkKind| -> Vec<(f64, f64, &str)> {
            report
                .marks
                .iter()
                .filter(|m| m.kind == kind)
                .map(|m| {
                    let (a, b) = span(m.start_s, m.end_s);
                    (a, b, m.label.as_str())
                })
                .collect()
        };
        let faults = marked(MarkKind::Fault);
        let warmups = marked(MarkKind::Warmup);
        let x_max = [fin(report.elapsed_s)]
            .into_iter()
            .chain(points.iter().map(|p| p.t + 1.0))
            .chain(service.iter().map(|p| p.t))
            .chain(bands.iter().chain(&faults).map(|b| b.1))
            .fold(1.0_f64, f64::max)
            .ceil();
        let x_max = if x_max.is_finite() { x_max } else { 1.0 };
        let zones: BTreeSet<&str> = points
            .iter()
            .flat_map(|p| p.by_zone.keys())
            .chain(service.iter().flat_map(|s| s.running_by_zone.keys()))
            .map(String::as_str)
            .collect();
        Ctx {
            report,
            points,
            service,
            x_max,
            zones: zones.into_iter().collect(),
            bands,
            faults,
            warmups,
        }
    }

    fn zone_colour(&self, zone: &str) -> &'static str {
        let i = self.zones.iter().position(|z| *z == zone).unwrap_or(0);
        ZONE_COLOURS[i % ZONE_COLOURS.len()]
    }
}

/// How a legend entry is drawn.
#[derive(Debug, Clone, Copy)]
enum Key {
    /// A line, dashed if the dash array is not empty.
    Line(&'static str, f64, &'static str),
    /// A filled square.
    Fill(&'static str),
}

/// One plot's geometry: the shared x scale and this chart's y.
struct Frame {
    x_max: f64,
    top: f64,
    y: YScale,
}

impl Frame {
    /// The x pixel of `t` seconds, clamped to the plot.
    fn x(&self, t: f64) -> f64 {
        LEFT + (fin(t) / self.x_max).clamp(0.0, 1.0) * (RIGHT - LEFT)
    }

    /// The y pixel of a 0..=1 fraction.
    fn y_frac(&self, f: f64) -> f64 {
        self.top + PLOT_H * (1.0 - fin(f).clamp(0.0, 1.0))
    }

    /// The y pixel of `v`, if it can be drawn.
    fn y(&self, v: f64) -> Option<f64> {
        self.y.frac(v).map(|f| self.y_frac(f))
    }

    fn bottom(&self) -> f64 {
        self.top + PLOT_H
    }

    /// A polyline through `(t, v)` pairs, broken where a value cannot be drawn or where more
    /// than 1.5 s pass between two points.
    fn line(&self, out: &mut String, pts: &[(f64, f64)], colour: &str, width: f64, dash: &str) {
        let mut d = String::new();
        let mut prev: Option<f64> = None;
        for &(t, v) in pts {
            let Some(y) = self.y(v) else {
                prev = None;
                continue;
            };
            let cmd = match prev {
                Some(p) if t - p <= 1.5 => 'L',
                _ => 'M',
            };
            let _ = write!(d, "{cmd}{:.1},{:.1}", self.x(t), y);
            prev = Some(t);
        }
        path(out, &d, colour, width, dash);
    }

    /// A step line: each value holds from its time to the next sample's (the last for 1 s).
    fn step(&self, out: &mut String, pts: &[(f64, f64)], colour: &str, width: f64, dash: &str) {
        let mut d = String::new();
        for (i, &(t, v)) in pts.iter().enumerate() {
            let Some(y) = self.y(v) else { continue };
            let end = pts.get(i + 1).map_or(t + 1.0, |n| n.0);
            let cmd = if d.is_empty() { 'M' } else { 'L' };
            let _ = write!(d, "{cmd}{:.1},{:.1}H{:.1}", self.x(t), y, self.x(end));
        }
        path(out, &d, colour, width, dash);
    }
}

/// A stroked path (nothing if `d` is empty).
fn path(out: &mut String, d: &str, colour: &str, width: f64, dash: &str) {
    if d.is_empty() {
        return;
    }
    let dash = if dash.is_empty() {
        String::new()
    } else {
        format!(" stroke-dasharray=\"{dash}\"")
    };
    let _ = write!(
        out,
        "<path d=\"{d}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"{width}\" \
         stroke-linejoin=\"round\"{dash}/>"
    );
}

/// Draws one chart: frame, bands, faults, grid, axes, legend, and the series `draw` adds (it
/// returns whether there was anything to draw; if not, the plot says "no data").
fn chart(
    ctx: &Ctx<'_>,
    title: &str,
    y_label: &str,
    y: YScale,
    legend: &[(String, Key)],
    draw: impl FnOnce(&Frame, &mut String) -> bool,
) -> String {
    // Legend rows, laid out left to right under the title, wrapping at the right edge.
    let mut items = Vec::new();
    let (mut lx, mut row) = (LEFT, 0.0_f64);
    for (label, key) in legend {
        let w = 26.0 + 6.6 * label.chars().count() as f64 + 14.0;
        if lx + w > RIGHT && lx > LEFT {
            lx = LEFT;
            row += 1.0;
        }
        items.push((lx, row, label, *key));
        lx += w;
    }
    let rows = if legend.is_empty() { 0.0 } else { row + 1.0 };
    let top = 30.0 + rows * ROW + 22.0;
    let height = top + PLOT_H + BOTTOM;
    let f = Frame {
        x_max: ctx.x_max,
        top,
        y,
    };
    let (bottom, pw) = (f.bottom(), RIGHT - LEFT);

    let mut s = String::new();
    let _ = write!(
        s,
        "<svg viewBox=\"0 0 {WIDTH} {height:.0}\" role=\"img\" aria-label=\"{t}\">\
         <text x=\"{LEFT}\" y=\"20\" class=\"ct\">{t}</text>",
        t = esc(title)
    );
    draw_legend(&mut s, &items);
    let _ = write!(
        s,
        "<rect x=\"{LEFT}\" y=\"{top:.1}\" width=\"{pw:.1}\" height=\"{PLOT_H}\" fill=\"#fff\"/>"
    );
    draw_underlay(&mut s, ctx, &f);
    draw_grid(&mut s, ctx, &f);

    let mut series = String::new();
    let drawn = draw(&f, &mut series);
    s.push_str(&series);
    if !drawn {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"nd\" text-anchor=\"middle\">no data</text>",
            (LEFT + RIGHT) / 2.0,
            top + PLOT_H / 2.0
        );
    }

    draw_overlay(&mut s, ctx, &f);
    // Axes and their titles.
    let _ = write!(
        s,
        "<line x1=\"{LEFT}\" y1=\"{bottom:.1}\" x2=\"{RIGHT}\" y2=\"{bottom:.1}\" stroke=\"#475569\"/>\
         <line x1=\"{LEFT}\" y1=\"{top:.1}\" x2=\"{LEFT}\" y2=\"{bottom:.1}\" stroke=\"#475569\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" class=\"at\" text-anchor=\"middle\">seconds from start</text>\
         <text transform=\"translate(16 {:.1}) rotate(-90)\" class=\"at\" text-anchor=\"middle\">{}</text>\
         </svg>",
        (LEFT + RIGHT) / 2.0,
        bottom + 36.0,
        top + PLOT_H / 2.0,
        esc(y_label)
    );
    s
}

/// The legend: a line or a swatch and a label per series, at the positions laid out.
fn draw_legend(s: &mut String, items: &[(f64, f64, &String, Key)]) {
    for (x, row, label, key) in items {
        let y = 30.0 + row * ROW + 8.0;
        match key {
            Key::Line(c, w, dash) => {
                let _ = write!(
                    s,
                    "<line x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{c}\" \
                     stroke-width=\"{}\" stroke-dasharray=\"{dash}\"/>",
                    x + 20.0,
                    w.max(2.0)
                );
            }
            Key::Fill(c) => {
                let _ = write!(
                    s,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"14\" height=\"10\" fill=\"{c}\"/>",
                    x + 3.0,
                    y - 5.0
                );
            }
        }
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"lg\">{}</text>",
            x + 26.0,
            y + 4.0,
            esc(label)
        );
    }
}

/// Scenario bands, alternating, and fault and warm-up shading, under the series.
fn draw_underlay(s: &mut String, ctx: &Ctx<'_>, f: &Frame) {
    let top = f.top;
    for (i, (a, b, _)) in ctx.bands.iter().enumerate() {
        let fill = if i % 2 == 0 { "#eef2f7" } else { "#f8fafc" };
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{PLOT_H}\" fill=\"{fill}\"/>",
            f.x(*a),
            f.x(*b) - f.x(*a)
        );
    }
    for (a, b, label) in &ctx.faults {
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{PLOT_H}\" fill=\"{ERR}\" \
             fill-opacity=\"0.13\"><title>{}</title></rect>",
            f.x(*a),
            (f.x(*b) - f.x(*a)).max(1.0),
            esc(label)
        );
    }
    for (a, b, label) in &ctx.warmups {
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{PLOT_H}\" fill=\"#64748b\" \
             fill-opacity=\"0.14\"><title>{}</title></rect>",
            f.x(*a),
            (f.x(*b) - f.x(*a)).max(1.0),
            esc(label)
        );
    }
}

/// Gridlines and y ticks; x ticks, the same on every chart.
fn draw_grid(s: &mut String, ctx: &Ctx<'_>, f: &Frame) {
    let bottom = f.bottom();
    for (frac, label) in f.y.ticks() {
        let py = f.y_frac(frac);
        let stroke = if label.is_empty() {
            "#f1f5f9"
        } else {
            "#e2e8f0"
        };
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{RIGHT}\" y2=\"{py:.1}\" stroke=\"{stroke}\"/>"
        );
        if !label.is_empty() {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" class=\"tk\" text-anchor=\"end\">{label}</text>",
                LEFT - 6.0,
                py + 4.0
            );
        }
    }
    // X ticks: the same on every chart.
    let xs = YScale::linear_n(ctx.x_max, true, 8.0);
    if let YScale::Linear { step, .. } = xs {
        for k in 0..=40 {
            let t = f64::from(k) * step;
            if t > ctx.x_max + 1e-9 {
                break;
            }
            let px = f.x(t);
            let _ = write!(
                s,
                "<line x1=\"{px:.1}\" y1=\"{bottom:.1}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#94a3b8\"/>\
                 <text x=\"{px:.1}\" y=\"{:.1}\" class=\"tk\" text-anchor=\"middle\">{}</text>",
                bottom + 5.0,
                bottom + 18.0,
                number(t, step)
            );
        }
    }
}

/// Fault edges and labels, warm-up labels and scenario names, on top of the series.
fn draw_overlay(s: &mut String, ctx: &Ctx<'_>, f: &Frame) {
    let (top, bottom) = (f.top, f.bottom());
    for (a, b, label) in &ctx.faults {
        for edge in [a, b] {
            let px = f.x(*edge);
            let _ = write!(
                s,
                "<line x1=\"{px:.1}\" y1=\"{top:.1}\" x2=\"{px:.1}\" y2=\"{bottom:.1}\" \
                 stroke=\"{ERR}\" stroke-dasharray=\"3 3\" stroke-opacity=\"0.7\"/>"
            );
        }
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"fl\">{}</text>",
            f.x(*a) + 4.0,
            top + 26.0,
            esc(label)
        );
    }
    for (a, b, label) in &ctx.warmups {
        if f.x(*b) - f.x(*a) >= 24.0 {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" class=\"tk\">{}</text>",
                f.x(*a) + 3.0,
                bottom - 5.0,
                esc(label)
            );
        }
    }
    for (a, b, name) in &ctx.bands {
        if f.x(*b) - f.x(*a) >= 24.0 {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" class=\"sn\">{}</text>",
                f.x(*a) + 4.0,
                top + 12.0,
                esc(name)
            );
        }
    }
}

/// Largest finite value of an iterator (0 if none).
fn max_of(it: impl IntoIterator<Item = f64>) -> f64 {
    it.into_iter().map(fin).fold(0.0, f64::max)
}

/// A timeline series at the middle of each second.
fn series(ctx: &Ctx<'_>, f: impl Fn(&Point) -> f64) -> Vec<(f64, f64)> {
    ctx.points.iter().map(|p| (p.t + 0.5, f(p))).collect()
}

/// (a) Requests per second: sent, ok and errors.
fn requests(ctx: &Ctx<'_>) -> String {
    let max = max_of(
        ctx.points
            .iter()
            .map(|p| p.sent.max(p.ok).max(p.errors) as f64),
    );
    let legend = [
        ("sent".to_owned(), Key::Line(SENT, 2.0, "")),
        ("ok (2xx/3xx)".to_owned(), Key::Line(OK, 2.0, "")),
        (
            "errors (transport, 5xx)".to_owned(),
            Key::Line(ERR, 2.0, ""),
        ),
    ];
    chart(
        ctx,
        "Requests per second",
        "requests / s",
        YScale::linear(max, true),
        &legend,
        |f, out| {
            f.line(out, &series(ctx, |p| p.sent as f64), SENT, 2.5, "");
            f.line(out, &series(ctx, |p| p.ok as f64), OK, 1.5, "");
            f.line(out, &series(ctx, |p| p.errors as f64), ERR, 1.5, "");
            !ctx.points.is_empty()
        },
    )
}

/// (b) Latency: p50 and p99 per second against the SLO, log scale when it spans > 2 decades.
fn latency(ctx: &Ctx<'_>) -> String {
    let slo = fin(ctx.report.slo.p99_ms).max(0.0);
    let values: Vec<f64> = ctx
        .points
        .iter()
        .flat_map(|p| [fin(p.p50_ms), fin(p.p99_ms)])
        .chain([slo])
        .filter(|v| *v > 0.0)
        .collect();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = max_of(values.iter().copied());
    let (y, label) = if min.is_finite() && max / min > 100.0 {
        (YScale::log(min, max), "ms (log scale)")
    } else {
        (YScale::linear(max * 1.05, false), "ms")
    };
    let legend = [
        ("p50".to_owned(), Key::Line(P50, 2.0, "")),
        ("p99".to_owned(), Key::Line(P99, 2.0, "")),
        (
            format!("SLO p99 ≤ {} ms", number(slo, 0.1)),
            Key::Line(ERR, 1.5, "6 4"),
        ),
    ];
    chart(
        ctx,
        "Latency per second (corrected for coordinated omission)",
        label,
        y,
        &legend,
        |f, out| {
            f.line(out, &series(ctx, |p| p.p50_ms), P50, 1.5, "");
            f.line(out, &series(ctx, |p| p.p99_ms), P99, 2.0, "");
            if let Some(py) = f.y(slo).filter(|_| slo > 0.0) {
                let _ = write!(
                    out,
                    "<line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{RIGHT}\" y2=\"{py:.1}\" stroke=\"{ERR}\" \
                     stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>\
                     <text x=\"{:.1}\" y=\"{:.1}\" class=\"fl\" text-anchor=\"end\">SLO p99</text>",
                    RIGHT - 4.0,
                    py - 4.0
                );
            }
            ctx.points.iter().any(|p| p.p50_ms > 0.0 || p.p99_ms > 0.0)
        },
    )
}

/// (c) Errors per second as bars, with what the SLO's error rate would allow at that load.
fn errors(ctx: &Ctx<'_>) -> String {
    let rate = fin(ctx.report.slo.max_error_rate).clamp(0.0, 1.0);
    let allowed = |p: &Point| p.sent as f64 * rate;
    let max = max_of(
        ctx.points
            .iter()
            .flat_map(|p| [p.errors as f64, allowed(p)]),
    );
    let legend = [
        ("errors / s".to_owned(), Key::Fill(ERR)),
        (
            format!("allowed at the SLO rate ({} %)", number(rate * 100.0, 0.01)),
            Key::Line(SENT, 1.5, "4 3"),
        ),
    ];
    chart(
        ctx,
        "Errors per second",
        "errors / s",
        YScale::linear(max, true),
        &legend,
        |f, out| {
            for p in ctx.points.iter().filter(|p| p.errors > 0) {
                let (x0, x1) = (f.x(p.t), f.x(p.t + 1.0));
                if let Some(y) = f.y(p.errors as f64) {
                    let _ = write!(
                        out,
                        "<rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" \
                         fill=\"{ERR}\"><title>{:.0} s: {} errors of {} sent</title></rect>",
                        (x1 - x0).max(0.8),
                        f.bottom() - y,
                        fin(p.t),
                        p.errors,
                        p.sent
                    );
                }
            }
            if rate > 0.0 {
                f.line(out, &series(ctx, allowed), SENT, 1.5, "4 3");
            }
            !ctx.points.is_empty()
        },
    )
}

/// (d) Each zone's share of the responses, stacked to 100 % per second.
fn zone_share(ctx: &Ctx<'_>) -> String {
    let legend: Vec<(String, Key)> = ctx
        .zones
        .iter()
        .map(|z| ((*z).to_owned(), Key::Fill(ctx.zone_colour(z))))
        .collect();
    chart(
        ctx,
        "Share of responses per availability zone",
        "% of responses",
        YScale::Linear {
            max: 100.0,
            step: 25.0,
        },
        &legend,
        |f, out| {
            // Runs of consecutive seconds that had responses; each second is a flat step.
            let mut runs: Vec<Vec<&Point>> = Vec::new();
            let mut last = f64::NEG_INFINITY;
            for p in &ctx.points {
                let total: u64 = p.by_zone.values().fold(0, |a, v| a.saturating_add(*v));
                if total == 0 {
                    last = f64::NEG_INFINITY;
                    continue;
                }
                match runs.last_mut() {
                    Some(run) if p.t - last <= 1.5 => run.push(*p),
                    _ => runs.push(vec![*p]),
                }
                last = p.t;
            }
            for run in &runs {
                let totals: Vec<f64> = run
                    .iter()
                    .map(|p| p.by_zone.values().map(|v| *v as f64).sum())
                    .collect();
                let mut below = vec![0.0_f64; run.len()];
                for zone in &ctx.zones {
                    let above: Vec<f64> = run
                        .iter()
                        .zip(&totals)
                        .zip(&below)
                        .map(|((p, tot), b)| {
                            b + p.by_zone.get(*zone).map_or(0.0, |v| *v as f64) / tot * 100.0
                        })
                        .collect();
                    let mut d = String::new();
                    for (p, v) in run.iter().zip(&above) {
                        let y = f.y(*v).unwrap_or(f.bottom());
                        let cmd = if d.is_empty() { 'M' } else { 'L' };
                        let _ = write!(
                            d,
                            "{cmd}{:.1},{y:.1}L{:.1},{y:.1}",
                            f.x(p.t),
                            f.x(p.t + 1.0)
                        );
                    }
                    for (p, v) in run.iter().zip(&below).rev() {
                        let y = f.y(*v).unwrap_or(f.bottom());
                        let _ = write!(d, "L{:.1},{y:.1}L{:.1},{y:.1}", f.x(p.t + 1.0), f.x(p.t));
                    }
                    let _ = write!(
                        out,
                        "<path d=\"{d}Z\" fill=\"{}\" fill-opacity=\"0.85\" stroke=\"none\"><title>{}</title></path>",
                        ctx.zone_colour(zone),
                        esc(zone)
                    );
                    below = above;
                }
            }
            !runs.is_empty()
        },
    )
}

/// (e) Tasks: ECS desired and running, running per zone, and tasks seen answering.
fn tasks(ctx: &Ctx<'_>) -> String {
    let max = max_of(
        ctx.service
            .iter()
            .flat_map(|s| [f64::from(s.desired), f64::from(s.running)])
            .chain(ctx.points.iter().map(|p| f64::from(p.tasks_serving))),
    );
    let mut legend = vec![
        ("desired".to_owned(), Key::Line(DESIRED, 2.0, "6 3")),
        ("running".to_owned(), Key::Line(RUNNING, 2.5, "")),
        (
            "answering (x-task seen)".to_owned(),
            Key::Line(SERVING, 1.5, "2 2"),
        ),
    ];
    let service_zones: BTreeSet<&str> = ctx
        .service
        .iter()
        .flat_map(|s| s.running_by_zone.keys().map(String::as_str))
        .collect();
    for z in &service_zones {
        legend.push((
            format!("running in {z}"),
            Key::Line(ctx.zone_colour(z), 1.0, ""),
        ));
    }
    chart(
        ctx,
        "Tasks",
        "tasks",
        YScale::linear(max * 1.1, true),
        &legend,
        |f, out| {
            let svc = |g: &dyn Fn(&ServicePoint) -> f64| -> Vec<(f64, f64)> {
                ctx.service.iter().map(|s| (s.t, g(s))).collect()
            };
            // Zones running the same count would draw one line over the other: each zone's
            // line is nudged a few pixels from the next.
            let per_px = max * 1.1 / PLOT_H;
            let middle = (f64::from(u32::try_from(service_zones.len()).unwrap_or(1)) - 1.0) / 2.0;
            for (i, z) in (0u32..).zip(&service_zones) {
                let nudge = (f64::from(i) - middle) * 3.0 * per_px;
                let pts = svc(&|s: &ServicePoint| {
                    s.running_by_zone.get(*z).map_or(0.0, |v| f64::from(*v)) + nudge
                });
                f.step(out, &pts, ctx.zone_colour(z), 1.5, "");
            }
            f.step(
                out,
                &svc(&|s: &ServicePoint| f64::from(s.desired)),
                DESIRED,
                2.0,
                "6 3",
            );
            f.step(
                out,
                &svc(&|s: &ServicePoint| f64::from(s.running)),
                RUNNING,
                2.5,
                "",
            );
            f.line(
                out,
                &series(ctx, |p| f64::from(p.tasks_serving)),
                SERVING,
                1.5,
                "2 2",
            );
            !ctx.service.is_empty() || !ctx.points.is_empty()
        },
    )
}
