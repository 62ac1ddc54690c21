//! The report as tables of text cells, shared by every rendering (text here, Markdown
//! and HTML beside it), so that each shows the same numbers, formatted once.

use super::full::Report;
use super::retention::GcRuns;
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
    /// Lines to copy as they are (configuration, commands), shown after the rows.
    pub code: Vec<String>,
    /// Its cells are sentences: text shows each row as a block of `head  cell` lines,
    /// wrapped, rather than as columns wider than a terminal.
    pub stacked: bool,
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
    let mut rows = Vec::new();
    if let Some(m) = &r.machine {
        rows.push(("machine", format!("{m} (a fleet machine, from nb sync)")));
    }
    rows.extend([
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
    ]);
    if let Some(w) = &r.rebuilds {
        rows.push((
            "lost to wasted rebuilds",
            format!(
                "{} ({} avoidable, {} no-op)",
                human_duration_ms(w.wasted_ms),
                w.avoidable,
                w.no_op
            ),
        ));
    }
    rows.push(("peak build memory", memory));
    rows
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
            code: Vec::new(),
            stacked: false,
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
            code: Vec::new(),
            stacked: false,
        },
    ];
    if let Some(w) = &r.rebuilds {
        tables.push(Table {
            title: "Time lost to wasted rebuilds",
            note: Some(format!(
                "{} avoidable and {} no-op rebuilds took {}{} (`nb rebuilds` lists them).",
                w.avoidable,
                w.no_op,
                human_duration_ms(w.wasted_ms),
                match w.unknown_durations {
                    0 => String::new(),
                    n => format!(", and {n} of unknown duration"),
                }
            )),
            head: vec!["derivation", "kind", "rebuilds", "time", "latest cause"],
            rows: w
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
            code: Vec::new(),
            stacked: false,
        });
    }
    if let Some(b) = &r.builders {
        tables.push(Table {
            title: "Builders",
            note: Some(
                "Successful builds per machine; overhead = copies and connections per build; speed = this machine's median time ÷ the builder's, on names built in both places (`nb builders`).".into(),
            ),
            head: vec![
                "builder",
                "builds",
                "failed",
                "total",
                "median",
                "overhead per build",
                "speed vs here",
            ],
            rows: b
                .builders
                .iter()
                .map(|s| super::builder_cells(b, s).to_vec())
                .collect(),
            code: Vec::new(),
            stacked: false,
        });
    }
    if r.gc_runs.count > 0 {
        tables.push(gc_table(&r.gc_runs));
    }
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
            code: r
                .advice
                .iter()
                .flat_map(|a| {
                    a.lines.iter().map(|l| match l.strip_prefix("# ") {
                        Some(comment) => format!("# {}: {comment}", a.source),
                        None => l.clone(),
                    })
                })
                .collect(),
            stacked: true,
        });
    }
    tables
}

/// The period's garbage collections: totals in the note, the newest runs listed.
fn gc_table(g: &GcRuns) -> Table {
    let mut note = format!(
        "{} by nix-ledger freed {}: {} builds ({} paths), {} to get back",
        match g.count {
            1 => "1 run".to_string(),
            n => format!("{n} runs"),
        },
        human_bytes(g.freed_bytes),
        g.deleted_builds,
        g.deleted_paths,
        human_duration_ms(g.cost_to_restore_ms)
    );
    if g.unknown_cost_builds > 0 {
        note.push_str(&format!(
            " and {} builds of unknown cost",
            g.unknown_cost_builds
        ));
    }
    match g.refused_paths {
        0 => {}
        1 => note.push_str("; Nix refused 1 path that had become live"),
        n => note.push_str(&format!("; Nix refused {n} paths that had become live")),
    }
    note.push('.');
    if g.count > g.runs.len() {
        note.push_str(&format!(" The newest {} are listed.", g.runs.len()));
    }
    Table {
        title: "Garbage collections",
        note: Some(note),
        head: vec![
            "run",
            "started",
            "policy",
            "status",
            "builds",
            "paths",
            "freed",
            "cost to get back",
            "refused",
        ],
        rows: g
            .runs
            .iter()
            .map(|run| {
                let r = &run.run;
                let mut cost = human_duration_ms(r.cost_to_restore_ms);
                if r.unknown_cost_builds > 0 {
                    cost.push_str(&format!(" + {} unknown", r.unknown_cost_builds));
                }
                vec![
                    format!("#{}", r.id),
                    r.started_at
                        .get(..16)
                        .unwrap_or(&r.started_at)
                        .replace('T', " "),
                    format!("{} ({})", run.command.as_deref().unwrap_or("?"), r.trigger),
                    r.status.clone(),
                    r.deleted_builds.to_string(),
                    r.deleted_paths.to_string(),
                    human_bytes(r.freed_bytes),
                    cost,
                    r.refused_paths.to_string(),
                ]
            })
            .collect(),
        code: Vec::new(),
        stacked: false,
    }
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
        code: Vec::new(),
        stacked: false,
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

/// The period, and the fleet machine when the report is another machine's.
pub fn subject(r: &Report) -> String {
    match &r.machine {
        Some(m) => format!("{}, fleet machine {m}", r.period),
        None => r.period.clone(),
    }
}

/// The report as plain text.
pub fn render(r: &Report) -> String {
    let mut out = format!("nix-ledger report, {}\n\n", subject(r));
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
        let code: String = t.code.iter().map(|l| format!("    {l}\n")).collect();
        if t.stacked {
            out.push_str(&stacked(&t));
            if !code.is_empty() {
                out.push('\n');
                out.push_str(&code);
            }
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
        if !code.is_empty() {
            out.push('\n');
            out.push_str(&code);
        }
    }
    out
}

/// Text lines fit for a terminal.
const WRAP_AT: usize = 96;

/// A stacked table: per row, its first cell, then `head  cell` for the others, each cell
/// wrapped under itself.
fn stacked(t: &Table) -> String {
    let label = t
        .head
        .iter()
        .skip(1)
        .map(|h| h.chars().count())
        .max()
        .unwrap_or(0);
    let indent = 4 + label + 2;
    let mut out = String::new();
    for row in &t.rows {
        let Some((first, rest)) = row.split_first() else {
            continue;
        };
        out.push_str(&format!("  {first}\n"));
        for (head, cell) in t.head.iter().skip(1).zip(rest) {
            let lines = wrap(cell, WRAP_AT.saturating_sub(indent).max(20));
            for (i, line) in lines.iter().enumerate() {
                let shown = if i == 0 { *head } else { "" };
                out.push_str(&format!("    {shown:<label$}  {line}\n"));
            }
        }
    }
    out
}

/// `text` in lines of at most `width` characters, broken between words (a longer word
/// stays whole on its own line).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacked_cells_are_wrapped_under_their_head() {
        let t = Table {
            title: "Advice",
            note: None,
            head: vec!["from", "why", "in effect"],
            rows: vec![vec![
                "tune".into(),
                "word ".repeat(30).trim().to_string(),
                "x".into(),
            ]],
            code: Vec::new(),
            stacked: true,
        };
        let text = stacked(&t);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "  tune");
        assert!(lines[1].starts_with("    why        word word"), "{text}");
        assert!(lines[2].starts_with("               word"), "{text}");
        assert!(lines.iter().all(|l| l.chars().count() <= WRAP_AT), "{text}");
        assert_eq!(*lines.last().unwrap(), "    in effect  x");
        assert_eq!(wrap("", 10), [""]);
        assert_eq!(wrap("abcdefghijkl mn", 5), ["abcdefghijkl", "mn"]);
    }
}
