//! `nix-ledger report`: every format shows the numbers the JSON has, Markdown fits a
//! GitHub step summary, and the HTML opens in a real browser (headless Chromium) with
//! its charts, without console errors or any URL.

use std::path::Path;
use std::process::Command;

use nix_ledger::ledger::model::{SessionKind, SessionStatus, TimingSource};
use nix_ledger::ledger::record::{BuildRecord, BuildStatus, Source};
use nix_ledger::ledger::sessions::{SessionClosing, SessionOpening};
use nix_ledger::ledger::Ledger;
use nix_ledger::report::text::{ms, percent};
use nix_ledger::trends::detect::Metric;
use nix_ledger::trends::render::human;
use serde_json::Value;

use crate::sim::{hash_of, Rng};
use crate::util::TestEnv;

const DAY: i64 = 86_400_000;

/// Twenty days of one `nb build` session a day, as the wrapper records them: `alpha`
/// (60 s) regresses by 60 % in the last five and changes version, `beta` and `gamma`
/// stay, a few paths come from a cache; evaluation takes ~1.5 s, 34 s the first time.
fn record_twenty_days(home: &Path) {
    let mut ledger = Ledger::open(&home.join("ledger.sqlite")).unwrap();
    let mut rng = Rng::new(7);
    let first = nix_ledger::time::now_ms() - 20 * DAY;
    let mut serial = 0u64;
    for day in 0..20 {
        let started = first + day * DAY;
        let id = ledger
            .open_session(&SessionOpening {
                kind: SessionKind::Build,
                command: vec!["nix".into(), "build".into(), ".#checks".into()],
                cwd: None,
                started_ms: started,
                hostname: Some("ci".into()),
                pid: 1,
            })
            .unwrap();
        let mut at = started + 2_000;
        let mut records = Vec::new();
        let alpha_version = if day >= 15 { "1.1" } else { "1.0" };
        let regressed = if day >= 15 { 1.6 } else { 1.0 };
        for (name, level, rss) in [
            (
                format!("alpha-{alpha_version}"),
                60_000.0 * regressed,
                900 << 20,
            ),
            ("beta-2.0".to_string(), 30_000.0, 400 << 20),
            ("gamma-0.3".to_string(), 5_000.0, 100 << 20),
        ] {
            serial += 1;
            let drv = format!("/nix/store/{}-{name}.drv", hash_of(serial));
            let took = (level * rng.lognormal_cv(0.05)) as i64;
            let mut rec = BuildRecord::new(&drv, Source::Wrapper, BuildStatus::Built, at + took);
            rec.session_id = Some(id);
            rec.started_ms = Some(at);
            rec.timing_source = Some(TimingSource::Wrapper);
            rec.peak_rss_bytes = Some(rss);
            records.push(rec);
            // beta and gamma run side by side with alpha: their memory adds up.
            at += 1_000;
        }
        let substituted = day % 4 + 1;
        for _ in 0..substituted {
            serial += 1;
            let drv = format!("/nix/store/{}-dep-1.0.drv", hash_of(serial));
            let mut rec = BuildRecord::new(&drv, Source::Wrapper, BuildStatus::Substituted, at);
            rec.session_id = Some(id);
            records.push(rec);
        }
        let eval_ms = if day == 0 {
            34_000
        } else {
            (1_500.0 * rng.lognormal_cv(0.1)) as i64
        };
        let closing = SessionClosing {
            built: 3,
            substituted,
            downloaded_bytes: substituted * (5 << 20),
            host_memory_bytes: Some(16 << 30),
            host_cores: Some(2),
            eval_ms: Some(eval_ms),
            ifd_ms: Some(0),
            eval_fetches: Some(0),
            ..SessionClosing::new(at + 120_000, SessionStatus::Succeeded, 0)
        };
        ledger.finish_session(id, &[], &records, &closing).unwrap();
    }
}

fn env_with_history(test: &str) -> TestEnv {
    let env = TestEnv::new(test);
    record_twenty_days(env.home());
    env
}

/// What every format must show, taken from the JSON.
fn expected_cells(report: &Value) -> Vec<String> {
    let mut cells = Vec::new();
    for r in report["regressions"].as_array().unwrap() {
        let metric = match r["metric"].as_str().unwrap() {
            "duration" => Metric::Duration,
            "peak_rss" => Metric::PeakRss,
            _ => Metric::OutputSize,
        };
        cells.push(r["name"].as_str().unwrap().to_string());
        cells.push(human(metric, r["baseline"].as_f64().unwrap()));
        cells.push(human(metric, r["recent"].as_f64().unwrap()));
        cells.push(format!("×{:.2}", r["ratio"].as_f64().unwrap()));
    }
    let s = &report["sessions"];
    cells.push(percent(s["cache_hit_ratio"].as_f64()));
    cells.push(ms(s["eval_ms"]["median"].as_f64()));
    cells.push(ms(s["eval_ms"]["p90"].as_f64()));
    cells.push(ms(s["wall_ms"]["median"].as_f64()));
    for slow in report["slowest"].as_array().unwrap() {
        cells.push(slow["name"].as_str().unwrap().to_string());
        cells.push(ms(slow["median_ms"].as_f64()));
    }
    cells
}

#[test]
fn every_format_shows_the_numbers_the_json_has() {
    let env = env_with_history("report-formats");
    let json: Value =
        serde_json::from_str(&env.ledger_ok(&["report", "--format", "json"])).unwrap();
    // The history's regression, found: alpha's duration, with its version change.
    let regressions = json["regressions"].as_array().unwrap();
    assert_eq!(regressions.len(), 1, "{json:#}");
    assert_eq!(regressions[0]["name"], "alpha");
    assert_eq!(regressions[0]["metric"], "duration");
    assert_eq!(regressions[0]["version_changed"], true);
    let s = &json["sessions"];
    assert_eq!(s["count"], 20);
    let (built, substituted) = (
        s["built"].as_i64().unwrap(),
        s["substituted"].as_i64().unwrap(),
    );
    assert_eq!(built, 60);
    let ratio = s["cache_hit_ratio"].as_f64().unwrap();
    assert!((ratio - substituted as f64 / (built + substituted) as f64).abs() < 1e-12);
    assert_eq!(s["eval_ms"]["count"], 20);
    // Three builds at once: 900 + 400 + 100 MiB of 16 GiB.
    assert_eq!(s["peak_memory"]["bytes"], 1400 << 20);
    assert_eq!(json["advice"], serde_json::json!([]));

    let cells = expected_cells(&json);
    for format in ["text", "markdown", "html"] {
        let shown = env.ledger_ok(&["report", "--format", format]);
        for cell in &cells {
            assert!(
                shown.contains(cell.as_str()),
                "{format} lacks {cell:?}:\n{shown}"
            );
        }
    }
    let markdown = env.ledger_ok(&["report", "--format", "markdown"]);
    // $GITHUB_STEP_SUMMARY takes up to 1 MiB; this is meant to be one screen.
    assert!(markdown.len() < 16 << 10, "{} bytes", markdown.len());
    assert!(markdown.lines().count() < 90, "{markdown}");
    // -o writes the same as standard output (bar the time it was generated).
    let file = env.home().join("report.md");
    env.ledger_ok(&[
        "report",
        "--format",
        "markdown",
        "-o",
        file.to_str().unwrap(),
    ]);
    let written = std::fs::read_to_string(&file).unwrap();
    let body = |t: &str| {
        t.lines()
            .filter(|l| !l.contains("generated"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(body(&written), body(&markdown));
}

/// Chromium as Debian packages it (`.ci/run` installs it).
fn chromium() -> &'static str {
    for name in ["chromium", "chromium-browser"] {
        if Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return name;
        }
    }
    panic!("chromium is not installed: `apt-get install chromium` (.ci/run does)");
}

/// Headless Chromium with the flags that work as root on a closed network.
fn headless(profile: &Path) -> Command {
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

#[test]
fn the_html_report_opens_in_chromium_with_its_charts_and_no_console_errors() {
    let env = env_with_history("report-html");
    let page = env.home().join("report.html");
    env.ledger_ok(&["report", "--format", "html", "-o", page.to_str().unwrap()]);
    let html = std::fs::read_to_string(&page).unwrap();
    for outside in [
        "http:", "https:", "//", "src=", "url(", "<link", "<script", "@import",
    ] {
        // `//` outside of a URL would only appear in one; there is none.
        assert!(!html.contains(outside), "the page refers to {outside:?}");
    }
    let url = format!("file://{}", page.display());

    let profile = tempfile::tempdir().unwrap();
    let dom = crate::util::output_within(
        headless(profile.path()).arg("--dump-dom").arg(&url),
        std::time::Duration::from_secs(120),
    );
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let stderr = String::from_utf8_lossy(&dom.stderr);
    assert!(!stderr.contains(":CONSOLE"), "console messages:\n{stderr}");
    let dom = String::from_utf8_lossy(&dom.stdout);
    // Three series' build times, the cache hit ratio and the evaluation time, each an
    // SVG with its line drawn.
    assert_eq!(dom.matches("<svg").count(), 5, "{dom}");
    assert!(dom.matches("<polyline").count() >= 5, "{dom}");
    assert!(dom.contains("alpha (s) ▲ regressed"), "{dom}");

    let profile = tempfile::tempdir().unwrap();
    let shot = env.home().join("report.png");
    let out = crate::util::output_within(
        headless(profile.path())
            .arg(format!("--screenshot={}", shot.display()))
            .arg("--window-size=1280,2000")
            .arg(&url),
        std::time::Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(":CONSOLE"), "console messages:\n{stderr}");
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    // A blank page of that size compresses to a few KiB; tables and charts do not.
    assert!(png.len() > 50 << 10, "{} bytes", png.len());
    if let Some(dir) = std::env::var_os("NIX_LEDGER_SCREENSHOT_DIR") {
        std::fs::copy(&shot, Path::new(&dir).join("report.png")).unwrap();
    }
}
