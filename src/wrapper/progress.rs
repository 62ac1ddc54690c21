//! What the user sees on stderr while Nix runs.
//!
//! On a terminal: Nix's messages and (with `-L`) build logs scroll above a status area
//! that is redrawn at most every [`REDRAW`]: the running builds with elapsed and expected
//! time, done/expected builds with the whole build's ETA, downloads, bytes downloaded.
//! Not a terminal (CI): one plain line per finished build, ending with
//! `[done/total, ETA 1m05s]`. Output is buffered and flushed when the stream goes
//! quiet, so a build printing a million log lines does not pay a write per line.

use std::io::Write;
use std::time::{Duration, Instant};

use super::state::{FinishedBuild, State};
use crate::ledger::model::BuildStatus;
use crate::size::human_bytes;
use crate::time::human_duration_ms;

/// The status area is redrawn at most this often.
pub const REDRAW: Duration = Duration::from_millis(100);
/// Running builds shown in the status area; the rest are counted.
const MAX_SHOWN: usize = 8;
/// Log lines of a failed build shown under its failure.
const FAILED_TAIL: usize = 10;
/// Buffered output is written out once it is this large, even if the stream is busy.
const FLUSH_AT: usize = 64 << 10;

/// How to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Live status area (stderr is a terminal).
    pub live: bool,
    /// Colour (a terminal and no `NO_COLOR`).
    pub color: bool,
    /// `-L`/`--print-build-logs`: show every build log line.
    pub print_build_logs: bool,
    /// Nix messages up to this level are shown (3 = info, what plain `nix build` shows).
    pub max_level: u64,
}

impl Style {
    /// The style for this process's stderr and environment.
    pub fn detect(print_build_logs: bool, extra_verbosity: u64) -> Style {
        let live = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            live,
            color: live && !no_color,
            print_build_logs,
            max_level: 3 + extra_verbosity,
        }
    }
}

/// How far the whole build is: builds done of the total Nix expects, and the ETA of
/// the whole build when known (`crate::tune::live`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    pub done: u64,
    pub total: u64,
    pub eta_ms: Option<i64>,
}

impl Position {
    /// `3/27, ETA 1m05s` (the ETA only when known).
    fn text(&self) -> String {
        match self.eta_ms {
            Some(ms) => format!(
                "{}/{}, ETA {}",
                self.done,
                self.total,
                human_duration_ms(ms)
            ),
            None => format!("{}/{}", self.done, self.total),
        }
    }
}

/// The renderer. Writes to an internal buffer; [`Progress::flush`] sends it to stderr.
pub struct Progress {
    style: Style,
    /// Where the whole build is, for the plain lines and the status area.
    position: Option<Position>,
    buf: Vec<u8>,
    /// Lines of status area currently on screen.
    drawn: usize,
    last_draw: Option<Instant>,
}

impl Progress {
    pub fn new(style: Style) -> Progress {
        Progress {
            style,
            position: None,
            buf: Vec::with_capacity(FLUSH_AT * 2),
            drawn: 0,
            last_draw: None,
        }
    }

    pub fn style(&self) -> Style {
        self.style
    }

    /// Where the whole build is now.
    pub fn set_position(&mut self, position: Position) {
        self.position = Some(position);
    }

    /// One line scrolling above the status area.
    fn scroll_line(&mut self, parts: &[&str]) {
        self.erase_status();
        for part in parts {
            self.buf.extend_from_slice(part.as_bytes());
        }
        self.buf.push(b'\n');
        if self.buf.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// A build log line (shown only with `-L`).
    pub fn log_line(&mut self, name: &str, line: &str) {
        if self.style.print_build_logs {
            let line = self.clean(line);
            self.scroll_line(&[name, "> ", &line]);
        }
    }

    /// A line printed by the post-build-hook, shown as plain Nix shows it.
    pub fn hook_line(&mut self, line: &str) {
        let line = self.clean(line);
        self.scroll_line(&["post-build-hook> ", &line]);
    }

    /// One of Nix's messages.
    pub fn message(&mut self, level: u64, text: &str) {
        if level <= self.style.max_level {
            let text = self.clean(text);
            self.scroll_line(&[&text]);
        }
    }

    /// Unparsed stderr text from Nix, shown as is.
    pub fn raw(&mut self, line: &[u8]) {
        self.erase_status();
        self.buf.extend_from_slice(line);
        self.buf.push(b'\n');
    }

    /// A build whose outcome is settled.
    pub fn finished(&mut self, build: &FinishedBuild) {
        let took = human_duration_ms(build.duration_ms());
        let peak = build
            .usage
            .filter(|u| u.peak_rss_bytes > 0)
            .map(|u| format!(", peak {}", human_bytes(u.peak_rss_bytes as i64)))
            .unwrap_or_default();
        let on = on_machine(build.machine.as_deref());
        match build.status {
            BuildStatus::Failed => {
                let what = if build.interrupted {
                    "interrupted"
                } else {
                    "failed"
                };
                let head = self.paint("31", &format!("{what} {}", build.name));
                self.scroll_line(&[&head, &format!(" after {took}{on}")]);
                // With -L the log was already shown in full.
                if !self.style.print_build_logs && !build.interrupted {
                    let lines: Vec<&str> = build.tail.lines().collect();
                    let from = lines.len().saturating_sub(FAILED_TAIL);
                    for line in &lines[from..] {
                        let line = self.clean(line);
                        self.scroll_line(&["  ", &build.name, "> ", &line]);
                    }
                }
            }
            _ if !self.style.live => {
                // Without a terminal (CI), each line says how far the build is.
                let at = self
                    .position
                    .filter(|p| p.total > 0)
                    .map(|p| format!(" [{}]", p.text()))
                    .unwrap_or_default();
                self.scroll_line(&["built ", &build.name, " in ", &took, &on, &peak, &at]);
            }
            _ => {}
        }
    }

    /// Redraws the status area if the last draw is older than [`REDRAW`].
    pub fn tick(&mut self, state: &State, now: Instant) {
        if !self.style.live || self.last_draw.is_some_and(|t| now - t < REDRAW) {
            return;
        }
        self.last_draw = Some(now);
        self.erase_status();
        let mut lines = Vec::new();
        let mut running: Vec<_> = state.running.values().collect();
        running.sort_by_key(|b| b.started);
        for build in running.iter().take(MAX_SHOWN) {
            let elapsed = human_duration_ms((now - build.started).as_millis() as i64);
            let expected = build
                .expected_ms
                .map(|e| format!(" (usually {})", human_duration_ms(e)))
                .unwrap_or_default();
            let phase = build
                .phase
                .as_deref()
                .map(|p| format!(" [{p}]"))
                .unwrap_or_default();
            let on = on_machine(build.machine.as_deref());
            lines.push(format!(
                "  building {}{phase}{on} {elapsed}{expected}",
                build.name
            ));
        }
        if running.len() > MAX_SHOWN {
            lines.push(format!("  … and {} more", running.len() - MAX_SHOWN));
        }
        let b = state.builds;
        let d = state.downloads;
        let mut head = format!("[builds {}/{}", b.done, b.expected);
        if b.failed > 0 {
            head.push_str(&format!(", {} failed", b.failed));
        }
        if let Some(eta) = self.position.and_then(|p| p.eta_ms) {
            head.push_str(&format!(", ETA {}", human_duration_ms(eta)));
        }
        head.push(']');
        if d.expected > 0 || state.downloaded_bytes() > 0 {
            head.push_str(&format!(
                " [downloads {}/{}, {}]",
                d.done,
                d.expected,
                human_bytes(state.downloaded_bytes() as i64)
            ));
        }
        let head = self.paint("1", &head);
        lines.insert(0, head);
        for line in &lines {
            self.buf.extend_from_slice(line.as_bytes());
            self.buf.push(b'\n');
        }
        self.drawn = lines.len();
    }

    /// Removes the status area (before scrolling text, and at the end).
    pub fn erase_status(&mut self) {
        if self.drawn > 0 {
            // Up `drawn` lines, then clear to the end of the screen.
            self.buf
                .extend_from_slice(format!("\x1b[{}A\x1b[J", self.drawn).as_bytes());
            self.drawn = 0;
            self.last_draw = None;
        }
    }

    /// Writes the buffer to stderr. A closed stderr is not worth failing the build for.
    pub fn flush(&mut self) {
        if !self.buf.is_empty() {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(&self.buf);
            let _ = err.flush();
            self.buf.clear();
        }
    }

    /// Anything to write.
    pub fn has_output(&self) -> bool {
        !self.buf.is_empty()
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.style.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// Without colour, Nix's own ANSI colour codes are removed.
    fn clean<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        if self.style.color || !text.contains('\x1b') {
            std::borrow::Cow::Borrowed(text)
        } else {
            std::borrow::Cow::Owned(strip_ansi(text))
        }
    }
}

/// Removes ANSI escape sequences (CSI `ESC [ … letter` and two-byte escapes).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

/// " on MACHINE" for a build on a remote builder, "" for one on this machine.
fn on_machine(machine: Option<&str>) -> String {
    machine
        .filter(|m| !m.is_empty())
        .map(|m| format!(" on {m}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wrapper::state::Tail;

    fn build(status: BuildStatus) -> FinishedBuild {
        let mut tail = Tail::default();
        for i in 0..12 {
            tail.push(&format!("line {i}"));
        }
        FinishedBuild {
            drv_path: "/nix/store/x-a.drv".into(),
            name: "a".into(),
            machine: None,
            remote: None,
            started_ms: 0,
            finished_ms: 1_500,
            log_lines: 12,
            tail,
            status,
            pending: false,
            interrupted: false,
            usage: None,
        }
    }

    fn plain() -> Style {
        Style {
            live: false,
            color: false,
            print_build_logs: false,
            max_level: 3,
        }
    }

    #[test]
    fn without_a_terminal_each_finished_build_is_one_plain_line() {
        let mut p = Progress::new(plain());
        p.finished(&build(BuildStatus::Built));
        p.log_line("a", "hidden without -L");
        p.message(4, "too verbose");
        p.message(0, "\x1b[31;1merror:\x1b[0m boom");
        assert_eq!(
            String::from_utf8(p.buf.clone()).unwrap(),
            "built a in 1.5s\nerror: boom\n"
        );
    }

    #[test]
    fn plain_lines_end_with_the_position_and_the_eta() {
        let mut p = Progress::new(plain());
        p.set_position(Position {
            done: 3,
            total: 27,
            eta_ms: Some(65_000),
        });
        p.finished(&build(BuildStatus::Built));
        p.set_position(Position {
            done: 4,
            total: 27,
            eta_ms: None,
        });
        p.finished(&build(BuildStatus::Built));
        assert_eq!(
            String::from_utf8(p.buf.clone()).unwrap(),
            "built a in 1.5s [3/27, ETA 1m05s]\nbuilt a in 1.5s [4/27]\n"
        );
    }

    #[test]
    fn a_failed_build_shows_the_last_lines_of_its_log() {
        let mut p = Progress::new(plain());
        p.finished(&build(BuildStatus::Failed));
        let text = String::from_utf8(p.buf.clone()).unwrap();
        assert!(text.starts_with("failed a after 1.5s\n"), "{text}");
        assert!(
            text.contains("  a> line 11\n") && text.contains("  a> line 2\n"),
            "{text}"
        );
        assert!(!text.contains("line 1\n"), "{text}");
    }

    #[test]
    fn ansi_codes_are_stripped() {
        assert_eq!(
            strip_ansi("\x1b[35;1m/nix/store/x\x1b[0m'"),
            "/nix/store/x'"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }
}
