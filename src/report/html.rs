//! The report as one self-contained HTML file: inline CSS (light and dark, by
//! `prefers-color-scheme`), inline SVG charts ([`super::charts`]), the same tables as the
//! text and Markdown, and nothing fetched from anywhere.

use super::charts::charts;
use super::full::Report;
use super::text::{summary, tables};
use crate::Result;

const STYLE: &str = r#"
:root { color-scheme: light dark; --bg: #ffffff; --fg: #1f2328; --muted: #59636e;
        --line: #d1d9e0; --card: #f6f8fa; --alarm: #cf222e; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #0d1117; --fg: #e6edf3; --muted: #9198a1; --line: #3d444d;
          --card: #151b23; --alarm: #ff7b72; }
}
body { background: var(--bg); color: var(--fg); margin: 2rem auto; max-width: 80rem;
       padding: 0 1rem; font: 14px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid var(--line); }
h3 { font-size: .95rem; margin: .2rem 0; font-weight: 600; }
p.note, .meta { color: var(--muted); }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border: 1px solid var(--line); padding: .25rem .6rem; text-align: left;
         vertical-align: top; }
th { background: var(--card); }
table.summary th { width: 14rem; }
.alarm { color: var(--alarm); font-weight: 600; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; padding: .5rem; background: var(--card); border: 1px solid var(--line);
         border-radius: 6px; color: var(--fg); }
svg { display: block; }
pre { background: var(--card); border: 1px solid var(--line); border-radius: 6px;
      padding: .5rem .8rem; overflow-x: auto; }
"#;

/// Text safe inside HTML elements and attributes.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The report as an HTML page.
pub fn render(r: &Report) -> Result<String> {
    let mut out = String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n");
    out.push_str("<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.push_str(&format!(
        "<title>nix-ledger report: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&super::text::subject(r))
    ));
    out.push_str(&format!(
        "<h1>nix-ledger report: {}</h1>\n<p class=\"meta\">nix-ledger {}, generated {}</p>\n",
        escape(&super::text::subject(r)),
        escape(&r.version),
        escape(&r.generated_at)
    ));
    if !r.regressions.is_empty() {
        out.push_str(&format!(
            "<p class=\"alarm\">{} regression{} found.</p>\n",
            r.regressions.len(),
            if r.regressions.len() == 1 { "" } else { "s" }
        ));
    }
    out.push_str("<table class=\"summary\">\n");
    for (k, v) in summary(r) {
        out.push_str(&format!(
            "<tr><th>{}</th><td>{}</td></tr>\n",
            escape(k),
            escape(&v)
        ));
    }
    out.push_str("</table>\n");
    let drawn = charts(r)?;
    let (series, sessions) = drawn.split_at(drawn.len().saturating_sub(2));
    if !series.is_empty() {
        out.push_str("<h2>Build times of the costliest derivations</h2>\n");
        out.push_str(
            "<p class=\"note\">Each successful local build; a vertical line marks a new version.</p>\n",
        );
        figures(&mut out, series);
    }
    for t in tables(r) {
        out.push_str(&format!("<h2>{}</h2>\n", escape(t.title)));
        if let Some(note) = &t.note {
            out.push_str(&format!("<p class=\"note\">{}</p>\n", escape(note)));
        }
        if t.title == "Sessions" && r.sessions.count > 0 {
            figures(&mut out, sessions);
        }
        if t.rows.is_empty() {
            continue;
        }
        out.push_str("<table>\n<tr>");
        for h in &t.head {
            out.push_str(&format!("<th>{}</th>", escape(h)));
        }
        out.push_str("</tr>\n");
        for row in &t.rows {
            out.push_str("<tr>");
            for cell in row {
                out.push_str(&format!("<td>{}</td>", escape(cell)));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n");
        if !t.code.is_empty() {
            out.push_str(&format!("<pre>{}</pre>\n", escape(&t.code.join("\n"))));
        }
    }
    out.push_str("</body>\n</html>\n");
    Ok(out)
}

/// Charts side by side. Inline SVG needs no namespace declaration in HTML; leaving it
/// out keeps the file free of any URL at all.
fn figures(out: &mut String, charts: &[super::charts::Chart]) {
    out.push_str("<div class=\"charts\">\n");
    for chart in charts {
        let svg = chart
            .svg
            .replace(" xmlns=\"http://www.w3.org/2000/svg\"", "");
        out.push_str(&format!(
            "<figure><h3>{}</h3>\n{svg}</figure>\n",
            escape(&chart.title)
        ));
    }
    out.push_str("</div>\n");
}
