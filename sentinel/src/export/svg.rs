//! Line charts as inline SVG: no script, no fonts or images to fetch, so
//! the report renders the same offline, in any browser, and in a mail
//! client that strips scripts. Elements carry stable classes and data
//! attributes (`svg.chart#chart-…`, `path.series[data-…]`,
//! `line.event-mark[data-event-id]`) so tests and people can find them.
use std::fmt::Write as _;

use super::report::esc;
use crate::event::{Severity, State, rfc3339};

const W: f64 = 960.0;
const H: f64 = 300.0;
/// Plot area: room on the left for "1023.5 MiB", below for times, above
/// for the event labels.
const LEFT: f64 = 78.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 38.0;
const BOTTOM: f64 = 42.0;

/// Colour-blind-safe and distinct from the event marks' red and amber.
pub const PALETTE: [&str; 8] = [
    "#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
];

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    Bytes,
    BytesPerSec,
    Count,
}

#[derive(Debug, Clone, Default)]
pub struct Series {
    pub label: String,
    /// Extra attributes on the path, e.g. `("data-pid", "1234")`.
    pub attrs: Vec<(&'static str, String)>,
    /// (unix ms, value), time order; None breaks the line (not recorded).
    pub points: Vec<Option<(u64, f64)>>,
}

#[derive(Debug, Clone)]
pub struct Mark {
    pub id: String,
    pub unix_ms: u64,
    pub kind: &'static str,
    pub severity: Severity,
    pub state: State,
    /// The hover text: time and summary.
    pub title: String,
}

pub struct Chart<'a> {
    pub id: &'a str,
    pub title: &'a str,
    /// What the y axis measures, with the unit added ("RSS").
    pub y_label: &'a str,
    pub unit: Unit,
    pub x: (u64, u64),
    pub series: Vec<Series>,
    pub marks: &'a [Mark],
    /// Shown when there are no series.
    pub empty: &'a str,
}

/// A figure: the SVG, then its legend.
pub fn render(c: &Chart) -> String {
    let (x0, x1) = if c.x.1 > c.x.0 {
        c.x
    } else {
        (c.x.0.saturating_sub(30_000), c.x.0 + 30_000)
    };
    let ymax_data = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().flatten().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let (scale, unit_name) = unit_scale(c.unit, ymax_data);
    let (step, top) = nice_axis(ymax_data / scale, c.unit == Unit::Count);
    let ymax = top * scale;
    let px = |t: u64| LEFT + (t.saturating_sub(x0)) as f64 / (x1 - x0) as f64 * (W - LEFT - RIGHT);
    let py = |v: f64| H - BOTTOM - (v / ymax).clamp(0.0, 1.0) * (H - TOP - BOTTOM);

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<figure class="chart-figure"><figcaption>{}</figcaption><svg class="chart" id="{}" viewBox="0 0 {W} {H}" role="img" aria-label="{}" preserveAspectRatio="xMidYMid meet">"#,
        esc(c.title),
        esc(c.id),
        esc(c.title)
    );
    // Grid and y axis labels.
    s.push_str(r#"<g class="axis y-axis">"#);
    let mut v = 0.0;
    while v <= top + step / 2.0 {
        let y = py(v * scale);
        let _ = write!(
            s,
            r#"<line class="grid" x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            esc(&tick_label(v, unit_name))
        );
        v += step;
    }
    let _ = write!(
        s,
        r#"<text class="axis-title" transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">{} ({})</text></g>"#,
        TOP + (H - TOP - BOTTOM) / 2.0,
        esc(c.y_label),
        esc(unit_name)
    );
    // Time axis.
    s.push_str(r#"<g class="axis x-axis">"#);
    let _ = write!(
        s,
        r#"<line class="baseline" x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}"/>"#,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM
    );
    let tstep = time_step(x1 - x0);
    let mut t = x0.div_ceil(tstep) * tstep;
    while t <= x1 {
        let x = px(t);
        // The last label would run off the right edge.
        let anchor = if x > W - RIGHT - 28.0 {
            "end"
        } else {
            "middle"
        };
        let _ = write!(
            s,
            r#"<line class="tick" x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}"/><text x="{x:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"#,
            H - BOTTOM,
            H - BOTTOM + 5.0,
            H - BOTTOM + 18.0,
            time_label(t, tstep, x1 - x0)
        );
        t += tstep;
    }
    let _ = write!(
        s,
        r#"<text class="axis-title" x="{:.1}" y="{:.1}" text-anchor="middle">time (UTC)</text></g>"#,
        LEFT + (W - LEFT - RIGHT) / 2.0,
        H - 6.0
    );
    // Series.
    if c.series.is_empty() {
        let _ = write!(
            s,
            r#"<text class="empty" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + (W - LEFT - RIGHT) / 2.0,
            TOP + (H - TOP - BOTTOM) / 2.0,
            esc(c.empty)
        );
    }
    for (i, ser) in c.series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let d = path_data(&ser.points, &px, &py);
        let _ = write!(
            s,
            r#"<path class="series" data-series="{i}" data-label="{}""#,
            esc(&ser.label)
        );
        for (k, v) in &ser.attrs {
            let _ = write!(s, r#" {k}="{}""#, esc(v));
        }
        let _ = write!(
            s,
            r#" stroke="{colour}" fill="none" stroke-width="2.5" stroke-linecap="round" stroke-linejoin="round" d="{d}"><title>{}</title></path>"#,
            esc(&ser.label)
        );
    }
    // Event marks last, over the lines; labels take turns between two rows
    // and are left out where they would overlap (the line and its hover
    // text stay).
    let mut last_label = [f64::NEG_INFINITY; 2];
    for (i, m) in c.marks.iter().enumerate() {
        if m.unix_ms < x0 || m.unix_ms > x1 {
            continue;
        }
        let x = px(m.unix_ms);
        let class = format!(
            "event-mark sev-{} state-{}",
            m.severity.name(),
            m.state.name()
        );
        let _ = write!(
            s,
            r#"<g class="event" data-event-id="{id}"><title>{title}</title><line class="{class}" data-event-id="{id}" data-kind="{kind}" x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}"/>"#,
            TOP - 4.0,
            H - BOTTOM,
            id = esc(&m.id),
            title = esc(&m.title),
            kind = m.kind,
        );
        let row = i % 2;
        let label = m.kind.replace('_', " ");
        let width = label.len() as f64 * 6.2;
        let anchor_left = x + width + 4.0 <= W - RIGHT;
        let (lx, anchor) = if anchor_left {
            (x + 3.0, "start")
        } else {
            (x - 3.0, "end")
        };
        let from = if anchor_left { lx } else { lx - width };
        if from > last_label[row] + 4.0 {
            last_label[row] = from + width;
            let _ = write!(
                s,
                r#"<text class="event-label sev-{}" x="{lx:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"#,
                m.severity.name(),
                TOP - 22.0 + 12.0 * row as f64,
                esc(&label)
            );
        }
        s.push_str("</g>");
    }
    s.push_str("</svg>");
    // The legend.
    if !c.series.is_empty() {
        s.push_str(r#"<ul class="legend">"#);
        for (i, ser) in c.series.iter().enumerate() {
            let peak = ser
                .points
                .iter()
                .flatten()
                .map(|p| p.1)
                .fold(f64::NEG_INFINITY, f64::max);
            let _ = write!(
                s,
                r#"<li><span class="swatch" style="background:{}"></span>{} <span class="peak">peak {}</span></li>"#,
                PALETTE[i % PALETTE.len()],
                esc(&ser.label),
                esc(&value_label(c.unit, peak))
            );
        }
        s.push_str("</ul>");
    }
    s.push_str("</figure>");
    s
}

/// `M x y L x y …`, a new subpath after each gap. A point alone gets a
/// zero-length segment, which round line caps draw as a dot.
fn path_data(
    pts: &[Option<(u64, f64)>],
    px: &impl Fn(u64) -> f64,
    py: &impl Fn(f64) -> f64,
) -> String {
    let mut d = String::new();
    let mut run = 0;
    for p in pts {
        match p {
            Some((t, v)) if v.is_finite() => {
                let (x, y) = (px(*t), py(*v));
                let cmd = if run == 0 { 'M' } else { 'L' };
                let _ = write!(d, "{cmd}{x:.1} {y:.1} ");
                run += 1;
            }
            _ => {
                if run == 1 {
                    d.push_str("h0 ");
                }
                run = 0;
            }
        }
    }
    if run == 1 {
        d.push_str("h0 ");
    }
    d.trim_end().to_string()
}

/// The divisor and unit name that keep the axis under four digits.
fn unit_scale(u: Unit, max: f64) -> (f64, &'static str) {
    let names: &[&str] = match u {
        Unit::Bytes => &["B", "KiB", "MiB", "GiB", "TiB"],
        Unit::BytesPerSec => &["B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s"],
        Unit::Count => return (1.0, "threads"),
    };
    let mut scale = 1.0;
    let mut i = 0;
    while max / scale >= 1024.0 && i < names.len() - 1 {
        scale *= 1024.0;
        i += 1;
    }
    (scale, names[i])
}

/// A 1-2-5 step giving three to six intervals, and the axis top (a multiple
/// of it at or above `max`).
fn nice_axis(max: f64, integers: bool) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 4.0);
    }
    let raw = max / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    let mut step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    if integers {
        step = step.max(1.0).round();
    }
    let top = (max / step).ceil().max(1.0) * step;
    (step, top)
}

fn tick_label(v: f64, unit: &str) -> String {
    let n = if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    };
    if unit == "threads" {
        n
    } else {
        format!("{n} {unit}")
    }
}

pub fn value_label(u: Unit, v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    match u {
        Unit::Bytes => crate::units::bytes(v.max(0.0) as u64),
        Unit::BytesPerSec => format!("{}/s", crate::units::bytes(v.max(0.0) as u64)),
        Unit::Count => format!("{v:.0}"),
    }
}

/// Tick spacing in ms: at most about eight ticks.
fn time_step(span_ms: u64) -> u64 {
    const STEPS_S: [u64; 19] = [
        1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200,
        86_400, 172_800,
    ];
    STEPS_S
        .iter()
        .map(|s| s * 1000)
        .find(|s| span_ms / s <= 8)
        .unwrap_or(604_800_000)
}

fn time_label(t: u64, step: u64, span: u64) -> String {
    // rfc3339: 2026-11-23T03:12:04.000Z
    let r = rfc3339(t);
    if span > 86_400_000 {
        format!("{} {}", &r[5..10], &r[11..16])
    } else if step < 60_000 {
        r[11..19].to_string()
    } else {
        r[11..16].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_round() {
        assert_eq!(nice_axis(260.0, false), (50.0, 300.0));
        assert_eq!(nice_axis(3.0, true), (1.0, 3.0));
        assert_eq!(nice_axis(0.0, false), (1.0, 4.0));
        assert_eq!(
            unit_scale(Unit::Bytes, 300.0 * 1048576.0),
            (1048576.0, "MiB")
        );
        assert_eq!(time_step(20 * 60_000), 300_000);
        assert_eq!(time_step(30_000), 5_000);
    }

    #[test]
    fn gaps_break_the_line_and_lone_points_are_dots() {
        let px = |t: u64| t as f64;
        let py = |v: f64| v;
        let d = path_data(
            &[Some((1, 1.0)), Some((2, 2.0)), None, Some((4, 4.0)), None],
            &px,
            &py,
        );
        assert_eq!(d, "M1.0 1.0 L2.0 2.0 M4.0 4.0 h0");
    }

    #[test]
    fn text_is_escaped_and_marks_are_findable() {
        let marks = [Mark {
            id: "abc\"><script>".into(),
            unix_ms: 1_500,
            kind: "oom_kill",
            severity: Severity::Critical,
            state: State::Firing,
            title: "<b>".into(),
        }];
        let svg = render(&Chart {
            id: "chart-rss",
            title: "RSS",
            y_label: "RSS",
            unit: Unit::Bytes,
            x: (1_000, 2_000),
            series: vec![Series {
                label: "<img src=x>".into(),
                attrs: vec![("data-pid", "1".into())],
                points: vec![Some((1_000, 1.0)), Some((2_000, 2.0))],
            }],
            marks: &marks,
            empty: "",
        });
        assert!(!svg.contains("<script>") && !svg.contains("<img"), "{svg}");
        assert!(svg.contains(r#"<svg class="chart" id="chart-rss""#));
        assert!(svg.contains(r#"data-event-id="abc&quot;&gt;&lt;script&gt;""#));
        assert!(svg.contains(r#"<path class="series" data-series="0""#));
    }
}
