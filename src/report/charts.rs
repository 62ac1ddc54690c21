//! The HTML report's charts, drawn by plotters' SVG backend into inline `<svg>`: build
//! times of the costliest derivations, the cache hit ratio per day, and the evaluation
//! time of each session.
//!
//! Text and axes are drawn in a placeholder colour that becomes `currentColor`, so the
//! page's CSS gives them its own text colour in light and in dark mode; the data
//! colours are mid-tones that read on both backgrounds.

use plotters::prelude::*;

use super::full::{DurationSeries, Report};
use crate::time::rfc3339_ms;
use crate::{Error, Result};

/// Drawn in this colour, then replaced by `currentColor` (see the module doc).
const INK: RGBColor = RGBColor(1, 2, 3);
const INK_HEX: &str = "#010203";
/// Data colours (Tableau 10): distinguishable, and legible on white and on near-black.
const PALETTE: [RGBColor; 6] = [
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(89, 161, 79),
    RGBColor(176, 122, 161),
    RGBColor(118, 183, 178),
    RGBColor(237, 201, 72),
];
const ALARM: RGBColor = RGBColor(225, 87, 89);

const SMALL: (u32, u32) = (360, 200);
const WIDE: (u32, u32) = (720, 240);

/// One chart as inline SVG.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub svg: String,
}

/// The charts of `report`: one per charted series, then the sessions' two.
pub fn charts(report: &Report) -> Result<Vec<Chart>> {
    let mut charts = Vec::new();
    for (i, series) in report.charts.durations.iter().enumerate() {
        charts.push(duration_chart(series, PALETTE[i % PALETTE.len()])?);
    }
    let days = &report.sessions.by_day;
    let ratio: Vec<(f64, f64)> = days
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.cache_hit_ratio.map(|r| (i as f64, r * 100.0)))
        .collect();
    let labels: Vec<String> = days.iter().map(|d| d.day[5..].to_string()).collect();
    charts.push(line_chart(
        "Cache hit ratio per day (%)",
        WIDE,
        &ratio,
        Some(100.0),
        &|x| labels.get(x.round() as usize).cloned().unwrap_or_default(),
        &|y| format!("{y:.0}"),
        PALETTE[2],
        &[],
        1.0,
    )?);
    let sessions = &report.sessions.latest;
    let eval: Vec<(f64, f64)> = sessions
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.eval_ms.map(|e| (i as f64, e as f64 / 1000.0)))
        .collect();
    let starts: Vec<String> = sessions
        .iter()
        .map(|s| s.started_at[5..16].replace('T', " "))
        .collect();
    charts.push(line_chart(
        "Evaluation time per session (s)",
        WIDE,
        &eval,
        None,
        &|x| starts.get(x.round() as usize).cloned().unwrap_or_default(),
        &tick,
        PALETTE[0],
        &[],
        1.0,
    )?);
    Ok(charts)
}

/// One series' build times, its version changes marked, in ms, s or min as they fit.
fn duration_chart(series: &DurationSeries, color: RGBColor) -> Result<Chart> {
    let longest = series.points.iter().map(|p| p.1).max().unwrap_or(0);
    let (unit, per) = match longest {
        0..=1_999 => ("ms", 1.0),
        2_000..=599_999 => ("s", 1_000.0),
        _ => ("min", 60_000.0),
    };
    let points: Vec<(f64, f64)> = series
        .points
        .iter()
        .map(|&(at, ms)| (at as f64, ms as f64 / per))
        .collect();
    let span = match (series.points.first(), series.points.last()) {
        (Some(a), Some(b)) => b.0 - a.0,
        _ => 0,
    };
    // Dates over a long period, times of day over a short one.
    let x_label = move |x: &f64| {
        let at = rfc3339_ms(*x as i64);
        if span > 2 * 86_400_000 {
            at[5..10].to_string()
        } else {
            at[11..16].to_string()
        }
    };
    let markers: Vec<(f64, String)> = series
        .version_changes
        .iter()
        .map(|(at, v)| (*at as f64, v.clone()))
        .collect();
    let title = if series.regressed {
        format!("{} ({unit}) ▲ regressed", series.name)
    } else {
        format!("{} ({unit})", series.name)
    };
    let color = if series.regressed { ALARM } else { color };
    // An hour at least, so that one build's chart has distinct times on its axis.
    line_chart(
        &title,
        SMALL,
        &points,
        None,
        &x_label,
        &tick,
        color,
        &markers,
        3_600_000.0,
    )
}

/// A tick label with as many decimals as the axis needs.
fn tick(y: &f64) -> String {
    match y.abs() {
        v if v >= 10.0 || v == 0.0 => format!("{y:.0}"),
        v if v >= 1.0 => format!("{y:.1}"),
        _ => format!("{y:.2}"),
    }
}

/// A line chart with its points marked, the y axis from 0.
#[allow(clippy::too_many_arguments)]
fn line_chart(
    title: &str,
    size: (u32, u32),
    points: &[(f64, f64)],
    y_max: Option<f64>,
    x_label: &dyn Fn(&f64) -> String,
    y_label: &dyn Fn(&f64) -> String,
    color: RGBColor,
    markers: &[(f64, String)],
    min_span: f64,
) -> Result<Chart> {
    let fail = |e: &dyn std::fmt::Display| Error::Chart {
        chart: title.to_string(),
        message: e.to_string(),
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let (x0, x1) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p.0), hi.max(p.0))
        });
        let (x0, x1) = if points.is_empty() {
            (0.0, 1.0)
        } else if x1 - x0 < min_span {
            // One point (or all at once): an axis of ±1 ms would label every tick alike.
            let mid = (x0 + x1) / 2.0;
            (mid - min_span / 2.0, mid + min_span / 2.0)
        } else {
            let pad = (x1 - x0) * 0.03;
            (x0 - pad, x1 + pad)
        };
        let top = y_max.unwrap_or_else(|| {
            let highest = points.iter().map(|p| p.1).fold(0.0, f64::max);
            if highest > 0.0 {
                highest * 1.15
            } else {
                1.0
            }
        });
        let mut chart = ChartBuilder::on(&root)
            .margin(6)
            // Room for the last x label, centred on the axis's end.
            .margin_right(22)
            .x_label_area_size(24)
            .y_label_area_size(40)
            .build_cartesian_2d(x0..x1, 0f64..top)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_labels(4)
            .y_labels(5)
            .x_label_formatter(x_label)
            .y_label_formatter(y_label)
            .axis_style(INK.mix(0.6))
            .bold_line_style(INK.mix(0.12))
            .light_line_style(TRANSPARENT)
            .label_style(("sans-serif", 13).into_font().color(&INK.mix(0.8)))
            .draw()
            .map_err(|e| fail(&e))?;
        for (at, version) in markers {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(*at, 0.0), (*at, top)],
                    INK.mix(0.35),
                )))
                .map_err(|e| fail(&e))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    version.clone(),
                    (*at, top * 0.97),
                    ("sans-serif", 12).into_font().color(&INK.mix(0.8)),
                )))
                .map_err(|e| fail(&e))?;
        }
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| fail(&e))?;
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(Chart {
        title: title.to_string(),
        svg: svg.replace(INK_HEX, "currentColor"),
    })
}
