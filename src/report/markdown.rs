//! The report as GitHub-flavoured Markdown, sized for `$GITHUB_STEP_SUMMARY` (a step's
//! summary must stay under 1 MiB): the headline and a handful of short tables, the same
//! cells as the text ([`super::text::tables`]).

use super::full::Report;
use super::text::{summary, tables};

/// A cell with the characters that would break a Markdown table escaped.
fn cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('\n', " ")
}

/// The report in Markdown.
pub fn render(r: &Report) -> String {
    let mut out = format!(
        "## nix-ledger report: {}\n\n",
        cell(&super::text::subject(r))
    );
    if !r.regressions.is_empty() {
        out.push_str(&format!(
            "> **{} regression{}** found: see below.\n\n",
            r.regressions.len(),
            if r.regressions.len() == 1 { "" } else { "s" }
        ));
    }
    out.push_str("| | |\n|---|---|\n");
    for (k, v) in summary(r) {
        out.push_str(&format!("| {} | {} |\n", cell(k), cell(&v)));
    }
    for t in tables(r) {
        out.push_str(&format!("\n### {}\n\n", t.title));
        if let Some(note) = &t.note {
            out.push_str(&format!("{}\n\n", cell(note)));
        }
        if t.rows.is_empty() {
            continue;
        }
        out.push_str(&format!("| {} |\n", t.head.join(" | ")));
        out.push_str(&format!("|{}\n", "---|".repeat(t.head.len())));
        for row in &t.rows {
            let cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        if !t.code.is_empty() {
            out.push_str(&format!("\n```\n{}\n```\n", t.code.join("\n")));
        }
    }
    out.push_str(&format!(
        "\n<sub>nix-ledger {} · generated {}</sub>\n",
        r.version, r.generated_at
    ));
    out
}
