//! `nix-ledger report`: every format shows the numbers the JSON has, Markdown fits a
//! GitHub step summary, and the HTML opens in a real browser (headless Chromium) with
//! its charts, without console errors or any URL. The builders, garbage collections
//! and advice appear when there is something to say, with the same numbers everywhere.

use std::path::Path;
use std::process::Command;

use nix_ledger::ledger::retention::{RunStart, RunStatus};
use nix_ledger::ledger::Ledger;
use nix_ledger::report::text::{ms, percent};
use nix_ledger::size::human_bytes;
use nix_ledger::time::human_duration_ms;
use nix_ledger::trends::detect::Metric;
use nix_ledger::trends::render::human;
use serde_json::Value;

use crate::util::{ledger_bin, TestEnv};

mod history;
use history::{host_cores, record_builders_and_gc, record_tunable_sessions, record_twenty_days};

fn env_with_history(test: &str) -> TestEnv {
    let env = TestEnv::new(test);
    record_twenty_days(env.home());
    env
}

/// `nix-ledger ARGS` with Nix's settings in effect set by `NIX_CONFIG`; its stdout.
fn with_settings(env: &TestEnv, nix_config: &str, args: &[&str]) -> String {
    let out = Command::new(ledger_bin())
        .args(args)
        .env("NIX_LEDGER_HOME", env.home())
        .env("NIX_CONFIG", nix_config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nix-ledger {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The full history: twenty days, the tunable sessions, a builder and a GC run.
fn env_with_everything(test: &str) -> TestEnv {
    let env = env_with_history(test);
    record_tunable_sessions(env.home());
    record_builders_and_gc(env.home());
    env
}

/// What every format must show of the builders, the GC runs and the advice.
fn upkeep_cells(report: &Value) -> Vec<String> {
    let mut cells = Vec::new();
    for b in report["builders"]["builders"].as_array().unwrap() {
        let ms = |v: &Value| v.as_i64().map_or("-".into(), human_duration_ms);
        cells.push(b["builds"].to_string());
        cells.push(ms(&b["total_ms"]));
        cells.push(ms(&b["median_ms"]));
        if b["machine"].is_string() {
            cells.push("builder1".into());
            cells.push(ms(&b["overhead_per_build_ms"]));
            cells.push(format!("{:.2}x", b["speed_vs_local"].as_f64().unwrap()));
        }
    }
    let g = &report["gc_runs"];
    cells.push(human_bytes(g["freed_bytes"].as_i64().unwrap()));
    cells.push(human_duration_ms(g["cost_to_restore_ms"].as_i64().unwrap()));
    for run in g["runs"].as_array().unwrap() {
        cells.push(format!("#{}", run["id"]));
        cells.push(run["command"].as_str().unwrap().to_string());
        cells.push(human_bytes(run["freed_bytes"].as_i64().unwrap()));
    }
    for a in report["advice"].as_array().unwrap() {
        for field in ["in_effect", "advised", "why"] {
            cells.push(a[field].as_str().unwrap().to_string());
        }
        for line in a["lines"].as_array().unwrap() {
            let line = line.as_str().unwrap();
            if !line.starts_with('#') {
                cells.push(line.to_string());
            }
        }
    }
    cells
}

/// The page's text as a reader sees it: what HTML escapes, unescaped.
fn unescape(html: &str) -> String {
    html.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[test]
fn builders_garbage_collections_and_advice_show_the_same_numbers_in_every_format() {
    let env = env_with_everything("report-upkeep");
    let slow = "max-jobs = 1\ncores = 1";
    let json: Value =
        serde_json::from_str(&with_settings(&env, slow, &["report", "--format", "json"])).unwrap();

    // The builders: this machine first, then builder1, twice as fast on beta.
    let b = json["builders"]["builders"].as_array().unwrap();
    assert_eq!(b.len(), 2, "{:#}", json["builders"]);
    assert!(b[0]["machine"].is_null());
    assert_eq!(b[1]["machine"], "ssh-ng://builder1");
    assert_eq!(
        (b[1]["builds"].as_u64(), b[1]["failed"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(b[1]["median_ms"], 15_000);
    assert_eq!(b[1]["overhead_per_build_ms"], 1_700);
    let speed = b[1]["speed_vs_local"].as_f64().unwrap();
    assert!(
        (1.8..=2.2).contains(&speed),
        "beta takes ~30 s here: {speed}"
    );

    // The GC run: 3 builds (4 paths) went, 1 path refused, 25m + 30s + 2s to get back.
    let g = &json["gc_runs"];
    assert_eq!(g["count"], 1);
    assert_eq!(g["deleted_builds"], 3);
    assert_eq!(g["deleted_paths"], 4);
    assert_eq!(g["freed_bytes"], 4 << 20);
    assert_eq!(g["cost_to_restore_ms"], 1_532_000);
    assert_eq!(g["refused_paths"], 1);
    assert_eq!(g["runs"][0]["trigger"], "maintenance");
    assert_eq!(g["runs"][0]["command"], "nb gc --keep-generations 3");

    // The advice: the tuner's against 1 × 1, the retention policy's against
    // --keep-generations 3 alone.
    let advice = json["advice"].as_array().unwrap();
    let by = |source: &str| advice.iter().find(|a| a["source"] == source);
    let retention = by("retention").expect("retention advice");
    let r = &retention["retention"];
    assert_eq!(r["in_effect"]["command"], "nb gc --keep-generations 3");
    assert_eq!(
        r["costly_builds"]["builds"], 1,
        "chromium is in a cache: {r:#}"
    );
    assert_eq!(r["costly_builds"]["cached"], 1);
    assert_eq!(
        r["costly_builds"]["longest"],
        serde_json::json!(["bigthing-2.0", 1_200_000])
    );
    assert_eq!(r["deleted_by_last_run"]["builds"], 1);
    assert_eq!(r["deleted_by_last_run"]["cost_ms"], 1_500_000);
    assert!(
        retention["lines"]
            .as_array()
            .unwrap()
            .contains(&Value::from(
                "services.nix-ledger.retention.keepCostlierThan = \"10m\";"
            )),
        "{retention:#}"
    );
    let tune_cli: Value =
        serde_json::from_str(&with_settings(&env, slow, &["tune", "--json"])).unwrap();
    if host_cores() >= 2 {
        // Eight independent builds one at a time on several cores: the tuner's pick
        // (the same as `nb tune`'s) runs them side by side.
        let tune = by("tune").expect("tune advice");
        let t = &tune["tune"];
        assert_eq!(t["advised"], tune_cli["recommended"], "{tune:#}");
        assert_eq!(t["in_effect"], tune_cli["current"]);
        assert_eq!(
            (
                t["in_effect"]["max_jobs"].as_u64(),
                t["in_effect"]["cores"].as_u64()
            ),
            (Some(1), Some(1))
        );
        assert!(t["advised"]["max_jobs"].as_u64().unwrap() >= 2, "{t:#}");
        assert!(t["gain"].as_f64().unwrap() >= 0.05, "{t:#}");
        assert_eq!(t["measured"], 40, "5 sessions of 8 measured builds: {t:#}");
        assert_eq!(t["nix_conf"], tune_cli["nix_conf"]);
        assert!(tune["why"]
            .as_str()
            .unwrap()
            .contains("40 of 40 derivations measured"));
        // The cells say the numbers: both predicted build times.
        for field in ["in_effect", "advised"] {
            let predicted = human_duration_ms(t[field]["makespan_ms"].as_i64().unwrap());
            assert!(
                tune[field].as_str().unwrap().ends_with(&predicted),
                "{tune:#}"
            );
        }
    }

    // Text wraps long cells: words are compared, not the spaces between them.
    let words = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    let cells = upkeep_cells(&json);
    for format in ["text", "markdown", "html"] {
        let shown = words(&unescape(&with_settings(
            &env,
            slow,
            &["report", "--format", format],
        )));
        for cell in &cells {
            assert!(
                shown.contains(&words(cell)),
                "{format} lacks {cell:?}:\n{shown}"
            );
        }
        for title in ["uilders", "arbage collections", "dvice"] {
            assert!(
                shown.to_lowercase().contains(&title.to_lowercase()),
                "{format}: {title}"
            );
        }
    }

    // Once the advice is taken, it is no longer given: the tuner's pick in effect, and a
    // retention policy that keeps costly builds.
    let picked = format!(
        "max-jobs = {}\ncores = {}",
        tune_cli["recommended"]["max_jobs"], tune_cli["recommended"]["cores"]
    );
    {
        let mut ledger = Ledger::open(&env.home().join("ledger.sqlite")).unwrap();
        let run = ledger
            .begin_gc_run(&RunStart {
                trigger: "maintenance",
                policy: r#"{"keep_generations":3,"keep_costlier_than_ms":600000}"#,
                store_dir: "/nix/store",
                planned_paths: 0,
                planned_bytes: 0,
            })
            .unwrap();
        ledger
            .finish_gc_run(run, RunStatus::Finished, None)
            .unwrap();
    }
    let json: Value = serde_json::from_str(&with_settings(
        &env,
        &picked,
        &["report", "--format", "json"],
    ))
    .unwrap();
    assert_eq!(
        json["advice"],
        serde_json::json!([]),
        "{:#}",
        json["advice"]
    );
    assert_eq!(json["gc_runs"]["count"], 2);
    let text = with_settings(&env, &picked, &["report"]);
    assert!(!text.contains("ADVICE"), "{text}");
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
    // Nothing measured (no CPU times), no builder, no GC: none of those sections.
    assert_eq!(json["advice"], serde_json::json!([]));
    assert!(json["builders"].is_null());
    assert_eq!(json["gc_runs"]["count"], 0);

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
    let text = env.ledger_ok(&["report"]);
    for absent in ["BUILDERS", "GARBAGE COLLECTIONS", "ADVICE"] {
        assert!(!text.contains(absent), "{text}");
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
    // Every section: the builders, the GC run and both pieces of advice too.
    let env = env_with_everything("report-html");
    let slow = "max-jobs = 1\ncores = 1";
    let page = env.home().join("report.html");
    with_settings(
        &env,
        slow,
        &["report", "--format", "html", "-o", page.to_str().unwrap()],
    );
    let json: Value =
        serde_json::from_str(&with_settings(&env, slow, &["report", "--format", "json"])).unwrap();
    let charted = json["charts"]["durations"].as_array().unwrap().len();
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
    // The costliest series' build times, the cache hit ratio and the evaluation time,
    // each an SVG with its line drawn.
    assert_eq!(charted, 6);
    assert_eq!(dom.matches("<svg").count(), charted + 2, "{dom}");
    assert!(dom.matches("<polyline").count() >= charted + 2, "{dom}");
    assert!(dom.contains("alpha (s) ▲ regressed"), "{dom}");
    for section in [
        "<h2>Builders</h2>",
        "<h2>Garbage collections</h2>",
        "<h2>Advice</h2>",
        "<pre>",
    ] {
        assert!(dom.contains(section), "{section} missing: {dom}");
    }

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
