//! The report as tables of text cells, shared by every rendering (text here, Markdown
//! and HTML beside it), so that each shows the same numbers, formatted once.

use super::full::Report;
use crate::size::human_bytes;
use crate::time::human_duration_ms;
use crate::trends::render::{human, version_change};

/// One table of the report.
#[derive(Debug, Clone)]
pub struct Table {
    pub title: &'static str,
    /// Said under the title (what the table counts, or why it is empty).
    pub note: Option<String>,
    pub head: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

/// A duration in milliseconds, or `-`.
pub fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| human_duration_ms(v.round() as i64))
}

/// A share as a percentage, or `-`.
pub fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{:.1} %", v * 100.0))
}

/// The headline: (what, value) pairs.
pub fn summary(r: &Report) -> Vec<(&'static str, String)> {
    let s = &r.sessions;
    let memory = s.peak_memory.as_ref().map_or_else(
        || "-".into(),
        |m| match (m.host_memory_bytes, m.share_of_ram) {
            (Some(ram), Some(share)) => format!(
                "{} of {} RAM ({})",
                human_bytes(m.bytes),
                human_bytes(ram),
                percent(Some(share))
            ),
            _ => human_bytes(m.bytes),
        },
    );
    vec![
        ("period", format!("{} (since {})", r.period, &r.since[..16])),
        ("regressions", regressions_headline(r)),
        (
            "builds",
            format!(
                "{} of {} derivation names, {} building",
                r.builds,
                r.series,
                human_duration_ms(r.build_time_ms)
            ),
        ),
        (
            "sessions",
            format!("{} ({} failed or interrupted)", s.count, s.failed),
        ),
        ("cache hit ratio", percent(s.cache_hit_ratio)),
        (
            "evaluation p50 / p90",
            format!("{} / {}", ms(s.eval_ms.median), ms(s.eval_ms.p90)),
        ),
        ("downloaded", human_bytes(s.downloaded_bytes)),
        (
            "lost to wasted rebuilds",
            format!(
                "{} ({} avoidable, {} no-op)",
                human_duration_ms(r.rebuilds.wasted_ms),
                r.rebuilds.avoidable,
                r.rebuilds.no_op
            ),
        ),
        ("peak build memory", memory),
    ]
}

fn regressions_headline(r: &Report) -> String {
    match r.regressions.len() {
        0 => format!("none ({} tests)", r.regression_tests),
        n => format!("{n} ({} tests)", r.regression_tests),
    }
}

/// The report's tables, in order.
pub fn tables(r: &Report) -> Vec<Table> {
    let mut tables = vec![
        Table {
            title: "Regressions",
            note: Some(match (&r.regression_warning, r.regressions.is_empty()) {
                (Some(w), _) => w.clone(),
                (None, true) => format!(
                    "None: the last 5 builds of each derivation against up to 30 before ({} tests).",
                    r.regression_tests
                ),
                (None, false) => {
                    "The last 5 builds of each derivation against up to 30 before.".into()
                }
            }),
            head: vec![
                "derivation",
                "metric",
                "baseline",
                "recent",
                "ratio",
                "p",
                "versions",
            ],
            rows: r
                .regressions
                .iter()
                .map(|g| {
                    vec![
                        g.name.clone(),
                        g.metric.label().to_string(),
                        human(g.metric, g.baseline),
                        human(g.metric, g.recent),
                        g.ratio.map_or_else(|| "from 0".into(), |x| format!("×{x:.2}")),
                        format!("{:.1e}", g.p_value),
                        version_change(g),
                    ]
                })
                .collect(),
        },
        sessions_table(r),
        Table {
            title: "Slowest derivations",
            note: Some("The most build time in the period.".into()),
            head: vec!["derivation", "builds", "p50", "p90", "total", "version"],
            rows: r
                .slowest
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.builds.to_string(),
                        ms(s.median_ms),
                        ms(s.p90_ms),
                        human_duration_ms(s.total_ms),
                        s.version.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
        },
        Table {
            title: "Time lost to wasted rebuilds",
            note: Some(format!(
                "{} avoidable and {} no-op rebuilds took {}{} (`nb rebuilds` lists them).",
                r.rebuilds.avoidable,
                r.rebuilds.no_op,
                human_duration_ms(r.rebuilds.wasted_ms),
                match r.rebuilds.unknown_durations {
                    0 => String::new(),
                    n => format!(", and {n} of unknown duration"),
                }
            )),
            head: vec!["derivation", "kind", "rebuilds", "time", "latest cause"],
            rows: r
                .rebuilds
                .costliest
                .iter()
                .map(|e| {
                    let mut cause: String = e.detail.chars().take(80).collect();
                    if e.detail.chars().count() > 80 {
                        cause.push('…');
                    }
                    vec![
                        e.name.clone(),
                        e.kind.as_str().to_string(),
                        e.rebuilds.to_string(),
                        human_duration_ms(e.wasted_ms),
                        cause,
                    ]
                })
                .collect(),
        },
    ];
    if !r.advice.is_empty() {
        tables.push(Table {
            title: "Advice",
            note: Some("Where a better setting differs from the one in effect.".into()),
            head: vec!["from", "setting", "in effect", "advised", "why"],
            rows: r
                .advice
                .iter()
                .map(|a| {
                    vec![
                        a.source.clone(),
                        a.setting.clone(),
                        a.in_effect.clone(),
                        a.advised.clone(),
                        a.why.clone(),
                    ]
                })
                .collect(),
        });
    }
    tables
}

fn sessions_table(r: &Report) -> Table {
    let s = &r.sessions;
    Table {
        title: "Sessions",
        note: Some(
            "`nb build` runs: cache hit ratio = substituted ÷ (built + substituted).".into(),
        ),
        head: vec![
            "sessions",
            "wall p50 / p90",
            "evaluation p50 / p90",
            "built",
            "substituted",
            "cache hit ratio",
            "downloaded",
        ],
        rows: if s.count == 0 {
            Vec::new()
        } else {
            vec![vec![
                s.count.to_string(),
                format!("{} / {}", ms(s.wall_ms.median), ms(s.wall_ms.p90)),
                format!("{} / {}", ms(s.eval_ms.median), ms(s.eval_ms.p90)),
                s.built.to_string(),
                s.substituted.to_string(),
                percent(s.cache_hit_ratio),
                human_bytes(s.downloaded_bytes),
            ]]
        },
    }
}

/// Column widths that fit every cell.
fn widths(t: &Table) -> Vec<usize> {
    let mut w: Vec<usize> = t.head.iter().map(|h| h.chars().count()).collect();
    for row in &t.rows {
        for (w, cell) in w.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    w
}

/// The report as plain text.
pub fn render(r: &Report) -> String {
    let mut out = format!("nix-ledger report, {}\n\n", r.period);
    let pairs = summary(r);
    let label_width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in &pairs {
        out.push_str(&format!("  {k:<label_width$}  {v}\n"));
    }
    for t in tables(r) {
        out.push_str(&format!("\n{}\n", t.title.to_uppercase()));
        if let Some(note) = &t.note {
            out.push_str(&format!("  {note}\n"));
        }
        if t.rows.is_empty() {
            continue;
        }
        let w = widths(&t);
        let line = |cells: &[String]| {
            let mut text = String::from("  ");
            for (i, cell) in cells.iter().enumerate() {
                text.push_str(cell);
                if i + 1 < cells.len() {
                    text.push_str(&" ".repeat(w[i] - cell.chars().count() + 2));
                }
            }
            text.push('\n');
            text
        };
        let head: Vec<String> = t.head.iter().map(|h| h.to_uppercase()).collect();
        out.push_str(&line(&head));
        for row in &t.rows {
            out.push_str(&line(row));
        }
    }
    out
}
