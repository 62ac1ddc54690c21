//! The histories the report tests record, through the ledger's own record paths (the
//! wrapper's records, the retention module's recording of a GC run), as nix-ledger
//! would have written them.

use std::collections::HashMap;
use std::path::Path;

use nix_ledger::ledger::model::{SessionKind, SessionStatus, TimingSource};
use nix_ledger::ledger::record::{BuildRecord, BuildStatus, Source};
use nix_ledger::ledger::retention::{DeletionState, PlannedDeletion, RunStart, RunStatus};
use nix_ledger::ledger::sessions::{SessionClosing, SessionOpening};
use nix_ledger::ledger::Ledger;

use crate::sim::{hash_of, Rng};

pub const DAY: i64 = 86_400_000;

/// Twenty days of one `nb build` session a day, as the wrapper records them: `alpha`
/// (60 s) regresses by 60 % in the last five and changes version, `beta` and `gamma`
/// stay, a few paths come from a cache; evaluation takes ~1.5 s, 34 s the first time.
pub fn record_twenty_days(home: &Path) {
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

pub fn drv_of(serial: u64, name: &str) -> String {
    format!("/nix/store/{}-{name}.drv", hash_of(serial))
}

pub fn out_of(serial: u64, name: &str) -> String {
    format!("/nix/store/{}-{name}", hash_of(serial))
}

/// Cores `nb tune` sweeps for on this machine.
pub fn host_cores() -> i64 {
    std::thread::available_parallelism().unwrap().get() as i64
}

/// Five `nb build` sessions in the last hours, one build at a time (`-j 1 --cores 1`):
/// eight independent 20 s single-threaded builds each, every one measured as the wrapper
/// measures (CPU time, peak memory), so that the tuner knows each name.
pub fn record_tunable_sessions(home: &Path) {
    let mut ledger = Ledger::open(&home.join("ledger.sqlite")).unwrap();
    let now = nix_ledger::time::now_ms();
    let mut serial = 10_000;
    for s in 0..5 {
        let started = now - (5 - s) * 3_600_000;
        let id = ledger
            .open_session(&SessionOpening {
                kind: SessionKind::Build,
                command: vec!["nix".into(), "build".into(), ".#work".into()],
                cwd: None,
                started_ms: started,
                hostname: Some("ci".into()),
                pid: 1,
            })
            .unwrap();
        let mut at = started + 1_000;
        let mut records = Vec::new();
        for i in 0..8 {
            serial += 1;
            let name = format!("work{i}-1.0");
            let mut rec = BuildRecord::new(
                &drv_of(serial, &name),
                Source::Wrapper,
                BuildStatus::Built,
                at + 20_000,
            );
            rec.session_id = Some(id);
            rec.started_ms = Some(at);
            rec.timing_source = Some(TimingSource::Wrapper);
            rec.cpu_user_ms = Some(19_000);
            rec.cpu_system_ms = Some(500);
            rec.peak_rss_bytes = Some(200 << 20);
            records.push(rec);
            at += 20_000;
        }
        let closing = SessionClosing {
            built: 8,
            max_jobs: Some(1),
            cores: Some(1),
            host_cores: Some(host_cores()),
            host_memory_bytes: Some(16 << 30),
            eval_ms: Some(1_000),
            ..SessionClosing::new(at, SessionStatus::Succeeded, 0)
        };
        ledger.finish_session(id, &[], &records, &closing).unwrap();
    }
}

/// What a machine with a remote builder and nix-ledger's retention records: `beta` built
/// on `builder1` too (twice as fast as here), two builds that took 20 and 30 minutes (a
/// cache has the second), and one maintenance GC run under `--keep-generations 3` that
/// deleted a 25-minute build, two cheap ones, and had a path refused.
pub fn record_builders_and_gc(home: &Path) {
    let mut ledger = Ledger::open(&home.join("ledger.sqlite")).unwrap();
    let now = nix_ledger::time::now_ms();
    let mut records = Vec::new();
    for i in 0..4u64 {
        let name = "beta-2.0";
        let status = if i == 3 {
            BuildStatus::Failed
        } else {
            BuildStatus::Built
        };
        let finished = now - DAY + i as i64 * 60_000;
        let mut rec =
            BuildRecord::new(&drv_of(20_000 + i, name), Source::Wrapper, status, finished);
        rec.started_ms = Some(finished - 15_000);
        rec.timing_source = Some(TimingSource::Wrapper);
        rec.machine = Some("ssh-ng://builder1".into());
        rec.upload_ms = Some(1_000);
        rec.download_ms = Some(500);
        rec.connect_ms = Some(200);
        records.push(rec);
    }
    for (serial, name, ms) in [
        (20_100, "bigthing-2.0", 1_200_000),
        (20_101, "chromium-1.0", 1_800_000),
    ] {
        let finished = now - 2 * DAY;
        let mut rec = BuildRecord::new(
            &drv_of(serial, name),
            Source::Wrapper,
            BuildStatus::Built,
            finished,
        );
        rec.started_ms = Some(finished - ms);
        rec.timing_source = Some(TimingSource::Wrapper);
        rec.outputs = vec![("out".into(), out_of(serial, name))];
        records.push(rec);
    }
    ledger.record_session_builds(&records).unwrap();
    let cached = HashMap::from([(out_of(20_101, "chromium-1.0"), true)]);
    ledger
        .store_cache_answers("https://cache.example", &cached)
        .unwrap();

    let run = ledger
        .begin_gc_run(&RunStart {
            trigger: "maintenance",
            policy: r#"{"keep_generations":3}"#,
            store_dir: "/nix/store",
            planned_paths: 5,
            planned_bytes: 5 << 20,
        })
        .unwrap();
    let paths: Vec<String> = (0..5).map(|i| out_of(20_200 + i, "gone-1.0")).collect();
    let row = |i: usize, unit, cost, basis| PlannedDeletion {
        path: &paths[i],
        unit,
        nar_size: 1 << 20,
        unit_cost_ms: cost,
        cost_basis: basis,
        reason: "no root keeps it",
    };
    ledger
        .queue_batch(
            run,
            1,
            &[
                row(0, 1, Some(1_500_000), "build"),
                row(1, 1, Some(1_500_000), "build"),
                row(2, 2, Some(30_000), "build"),
                row(3, 3, Some(2_000), "download"),
                row(4, 4, None, "unknown"),
            ],
        )
        .unwrap();
    let mut settled: Vec<(&str, DeletionState)> = paths[..4]
        .iter()
        .map(|p| (p.as_str(), DeletionState::Deleted))
        .collect();
    settled.push((paths[4].as_str(), DeletionState::Refused));
    ledger.settle_deletions(run, &settled).unwrap();
    ledger
        .finish_gc_run(run, RunStatus::Finished, None)
        .unwrap();
}
