//! The text of `why`, of the after-build summary and of `rebuilds`, for people. Long
//! values are cut (with their full length said) so one variable cannot flood a screen;
//! `--json` has them whole.

use std::fmt::Write;

use super::compare::{Change, OwnChanges};
use super::files::FileChangeKind;
use super::rebuilds::RebuildsReport;
use super::verdict::VerdictKind;
use super::{RootCause, WhyReport};
use crate::time::human_duration_ms;

/// Values longer than this many characters are cut.
const MAX_VALUE: usize = 100;
/// At most this many changed files are listed per source.
const MAX_FILES: usize = 20;

/// `s` quoted, on one line, cut to [`MAX_VALUE`] characters.
pub fn cut(s: &str) -> String {
    // Debug formatting escapes newlines, so the value stays on one line.
    let count = s.chars().count();
    if count <= MAX_VALUE {
        return format!("{s:?}");
    }
    let head: String = s.chars().take(MAX_VALUE).collect();
    format!("{head:?}… ({count} chars)")
}

fn value(v: Option<&String>) -> String {
    v.map(|s| cut(s)).unwrap_or_else(|| "(unset)".to_string())
}

/// The full answer of `why`.
pub fn report(r: &WhyReport) -> String {
    let mut out = String::new();
    let _ = write!(out, "{} ({})\n  against {}", r.name, r.target, r.against);
    if let Some(at) = &r.against_built_at {
        let _ = write!(out, " (built {at})");
    }
    out.push('\n');
    if r.root_causes.is_empty() {
        out.push_str("  nothing differs: same derivation\n");
        return out;
    }
    let _ = writeln!(
        out,
        "  {} derivation{} changed; {} root cause{}:",
        r.changed_derivations,
        plural(r.changed_derivations),
        r.root_causes.len(),
        plural(r.root_causes.len())
    );
    for (i, cause) in r.root_causes.iter().enumerate() {
        out.push('\n');
        root_cause(&mut out, i + 1, cause);
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn root_cause(out: &mut String, index: usize, c: &RootCause) {
    let _ = writeln!(out, "{index}. {}  {}", c.name, c.new_drv);
    let _ = writeln!(out, "   was {}", c.old_drv);
    changes(out, &c.changes);
    let _ = writeln!(
        out,
        "   downstream: {} derivation{} rebuild only because of this{}",
        c.downstream,
        plural(c.downstream),
        if c.downstream_shared > 0 {
            format!(
                " ({} more also because of other causes)",
                c.downstream_shared
            )
        } else {
            String::new()
        }
    );
    let v = &c.verdict;
    let cost = match v.cost_ms {
        Some(ms) => format!(
            "; it cost {} of building ({} recorded build{})",
            human_duration_ms(ms),
            v.cost_builds,
            plural(v.cost_builds)
        ),
        None => String::new(),
    };
    match v.kind {
        VerdictKind::Avoidable => {
            let _ = writeln!(
                out,
                "   verdict: AVOIDABLE rebuild: only {} changed{cost}",
                v.files.join(", ")
            );
        }
        VerdictKind::NoOp => {
            let _ = writeln!(
                out,
                "   verdict: NO-OP rebuild: the outputs are identical to the previous build's{cost}"
            );
        }
        VerdictKind::Change => {
            let _ = writeln!(out, "   verdict: a real change{cost}");
        }
    }
    if let Some(advice) = &v.advice {
        let _ = writeln!(out, "   advice: {advice}");
    }
}

fn changes(out: &mut String, own: &OwnChanges) {
    if let Some(why) = &own.unavailable {
        let _ = writeln!(out, "   cannot compare: {why}");
    }
    for e in &own.env {
        let _ = writeln!(
            out,
            "   env {}: {} → {}",
            e.name,
            value(e.old.as_ref()),
            value(e.new.as_ref())
        );
    }
    let mut change = |what: &str, c: &Option<Change<String>>| {
        if let Some(c) = c {
            let _ = writeln!(out, "   {what}: {} → {}", cut(&c.old), cut(&c.new));
        }
    };
    change("builder", &own.builder);
    change("system", &own.system);
    if let Some(args) = &own.args {
        let _ = writeln!(
            out,
            "   args: {} → {}",
            cut(&args.old.join(" ")),
            cut(&args.new.join(" "))
        );
    }
    if let Some(outputs) = &own.outputs {
        let _ = writeln!(
            out,
            "   outputs: {} → {}",
            outputs.old.join(", "),
            outputs.new.join(", ")
        );
    }
    for s in &own.sources {
        let _ = writeln!(out, "   source {}: {} → {}", s.name, s.old_path, s.new_path);
        match &s.files {
            Some(files) => {
                for f in files.iter().take(MAX_FILES) {
                    let what = match f.change {
                        FileChangeKind::Added => "added",
                        FileChangeKind::Removed => "removed",
                        FileChangeKind::Modified => "modified",
                    };
                    let path = if f.path.is_empty() {
                        "(the file)"
                    } else {
                        &f.path
                    };
                    match &f.detail {
                        Some(d) => {
                            let _ = writeln!(out, "     {what} {path} ({d})");
                        }
                        None => {
                            let _ = writeln!(out, "     {what} {path}");
                        }
                    }
                }
                if files.len() > MAX_FILES {
                    let _ = writeln!(out, "     … and {} more", files.len() - MAX_FILES);
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "     files unknown: {}",
                    s.note.as_deref().unwrap_or("no manifest")
                );
            }
        }
    }
    for (what, list) in [
        ("source added", &own.added_sources),
        ("source removed", &own.removed_sources),
        ("input added", &own.added_inputs),
        ("input removed", &own.removed_inputs),
        ("input outputs", &own.input_outputs),
    ] {
        for item in list {
            let _ = writeln!(out, "   {what}: {item}");
        }
    }
}

/// One line saying what a root cause changed, for the after-build summary.
fn headline(own: &OwnChanges) -> String {
    let mut parts = Vec::new();
    if !own.env.is_empty() {
        let names: Vec<&str> = own.env.iter().take(3).map(|e| e.name.as_str()).collect();
        parts.push(format!("env {}", names.join(", ")));
    }
    for s in &own.sources {
        match &s.files {
            Some(files) => {
                let names: Vec<&str> = files
                    .iter()
                    .take(3)
                    .map(|f| {
                        if f.path.is_empty() {
                            s.name.as_str()
                        } else {
                            f.path.as_str()
                        }
                    })
                    .collect();
                let more = files.len().saturating_sub(3);
                parts.push(format!(
                    "{}: {}{}",
                    s.name,
                    names.join(", "),
                    if more > 0 {
                        format!(" +{more}")
                    } else {
                        String::new()
                    }
                ));
            }
            None => parts.push(format!("source {}", s.name)),
        }
    }
    for (what, present) in [
        ("builder", own.builder.is_some()),
        ("args", own.args.is_some()),
        ("system", own.system.is_some()),
        ("outputs", own.outputs.is_some()),
        (
            "inputs added/removed",
            !own.added_inputs.is_empty() || !own.removed_inputs.is_empty(),
        ),
        (
            "sources added/removed",
            !own.added_sources.is_empty() || !own.removed_sources.is_empty(),
        ),
        ("unreadable", own.unavailable.is_some()),
    ] {
        if present {
            parts.push(what.to_string());
        }
    }
    parts.join("; ")
}

/// The after-build summary: at most about one screen (24 lines).
/// How many root causes the summary after a build lists.
pub const SUMMARY_MAX_CAUSES: usize = 8;

pub fn summary(rebuilt: usize, reports: &[WhyReport]) -> String {
    const MAX_CAUSES: usize = SUMMARY_MAX_CAUSES;
    let mut causes: Vec<&RootCause> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in reports {
        for c in &r.root_causes {
            if seen.insert(c.new_drv.as_str()) {
                causes.push(c);
            }
        }
    }
    causes.sort_by_key(|c| std::cmp::Reverse(c.downstream));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "nix-ledger: {rebuilt} derivation{} rebuilt that {} built before; {} root cause{}:",
        plural(rebuilt),
        if rebuilt == 1 { "was" } else { "were" },
        causes.len(),
        plural(causes.len())
    );
    for c in causes.iter().take(MAX_CAUSES) {
        let tag = match c.verdict.kind {
            VerdictKind::Avoidable => " [avoidable]",
            VerdictKind::NoOp => " [no-op]",
            VerdictKind::Change => "",
        };
        let _ = writeln!(
            out,
            "  {}{tag}: {} (+{} downstream)",
            c.name,
            cut_plain(&headline(&c.changes), 60),
            c.downstream
        );
    }
    if causes.len() > MAX_CAUSES {
        let _ = writeln!(out, "  … and {} more", causes.len() - MAX_CAUSES);
    }
    if let Some(top) = reports.first() {
        let _ = writeln!(out, "  details: nix-ledger why {}", top.target);
    }
    out
}

fn cut_plain(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let head: String = s.chars().take(max).collect();
        format!("{head}…")
    }
}

/// The text of `rebuilds`.
pub fn rebuilds(r: &RebuildsReport) -> String {
    let mut out = String::new();
    if r.entries.is_empty() {
        let _ = writeln!(out, "no avoidable or no-op rebuilds since {}", r.since);
        return out;
    }
    for e in &r.entries {
        let _ = writeln!(
            out,
            "{:<10} {:<8} {}  {}  ({})",
            e.kind.as_str(),
            e.duration_ms
                .map(human_duration_ms)
                .unwrap_or_else(|| "?".to_string()),
            e.finished_at,
            e.name,
            cut_plain(&e.detail, 70)
        );
    }
    let _ = writeln!(
        out,
        "{} avoidable, {} no-op since {}: {} wasted{}",
        r.avoidable,
        r.no_op,
        r.since,
        human_duration_ms(r.wasted_ms),
        if r.unknown_durations > 0 {
            format!(" ({} without a recorded duration)", r.unknown_durations)
        } else {
            String::new()
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_and_say_their_length() {
        assert_eq!(cut("abc"), "\"abc\"");
        let long = "x".repeat(250);
        let shown = cut(&long);
        assert!(shown.ends_with("… (250 chars)"), "{shown}");
        assert!(shown.len() < 120);
        assert_eq!(cut("a\nb"), "\"a\\nb\"");
    }
}
