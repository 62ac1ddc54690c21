//! The regression detector's detection and false-alarm rates, measured on synthetic
//! series recorded through the ledger's own record path (`Ledger::record_session_builds`)
//! and judged by `trends::compute`, as `nix-ledger trends` judges them: the tables of
//! docs/trends.md.
//!
//! Per baseline length (20, 30, 40 builds) and noise (lognormal, CV 5, 10, 15 %): 1,000
//! series each with +20 %, +50 % and +100 % in their last 5 builds; `--null N` (default
//! 5,000) series without change; 1,000 without change but one build of the last 5
//! twice as slow (a busy machine, a cold cache). Deterministic (seeded).
//!
//! Run: `cargo bench --bench trends_detection` (optionally `-- --series N --null N`).

use nix_ledger::ledger::Ledger;
use nix_ledger::trends;

#[path = "../tests/integration/sim.rs"]
mod sim;
use sim::{record_series, series, Rng};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn percent(n: usize, of: usize) -> String {
    format!("{:.1} %", 100.0 * n as f64 / of as f64)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("trends_detection bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> nix_ledger::Result<()> {
    let per = arg("--series", 1_000);
    let nulls = arg("--null", 5_000);
    let started = std::time::Instant::now();
    println!("{per} series per change, {nulls} unchanged, per baseline and CV\n");
    println!("| baseline builds | CV | +20 % | +50 % | +100 % | false alarms | false alarms, one 2× build among the last 5 |");
    println!("|---|---|---|---|---|---|---|");
    let (mut all_nulls, mut all_false) = (0, 0);
    for baseline in [20, 30, 40] {
        for cv in [0.05, 0.10, 0.15] {
            let dir = tempfile::tempdir().map_err(|source| nix_ledger::Error::Write {
                path: std::env::temp_dir(),
                source,
            })?;
            let mut ledger = Ledger::open(&dir.path().join("ledger.sqlite"))?;
            let mut rng = Rng::new((baseline as u64) << 8 | (cv * 100.0) as u64);
            let mut serial = 0;
            for (factor, tag) in [(1.2, "upa"), (1.5, "upb"), (2.0, "upc")] {
                for i in 0..per {
                    let values = series(&mut rng, 60_000.0, baseline, 5, factor, cv);
                    record_series(
                        &mut ledger,
                        &format!("{tag}{i}-1.0"),
                        &values,
                        0,
                        &mut serial,
                    )?;
                }
            }
            for i in 0..nulls {
                let values = series(&mut rng, 60_000.0, baseline + 5, 0, 1.0, cv);
                record_series(
                    &mut ledger,
                    &format!("null{i}-1.0"),
                    &values,
                    0,
                    &mut serial,
                )?;
            }
            for i in 0..per {
                let mut values = series(&mut rng, 60_000.0, baseline + 5, 0, 1.0, cv);
                let at = values.len() - 1 - rng.below(5);
                values[at] *= 2.0;
                record_series(
                    &mut ledger,
                    &format!("slow{i}-1.0"),
                    &values,
                    0,
                    &mut serial,
                )?;
            }
            let found = trends::compute(&ledger, &trends::Request::default())?;
            let count = |prefix: &str| {
                found
                    .regressions
                    .iter()
                    .filter(|r| r.name.starts_with(prefix))
                    .count()
            };
            all_nulls += nulls;
            all_false += count("null");
            println!(
                "| {baseline} | {:.0} % | {} | {} | {} | {} | {} |",
                cv * 100.0,
                percent(count("upa"), per),
                percent(count("upb"), per),
                percent(count("upc"), per),
                percent(count("null"), nulls),
                percent(count("slow"), per),
            );
        }
    }
    println!(
        "\nall unchanged series: {all_false} false alarms in {all_nulls} ({}); {:.0} s",
        percent(all_false, all_nulls),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
