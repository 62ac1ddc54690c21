//! The simulator with remote machines: Nix 2.8's build-remote choice, postponed builds,
//! the loop waiting for connections, and the copies a remote build costs.

use super::*;
use crate::tune::fleet::RemoteMachine;
use crate::tune::model::Profile;
use crate::tune::workload::JobSpec;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6 * (1.0 + b.abs())
}

fn independent(n: usize, p: Profile) -> Workload {
    Workload::new(
        (0..n)
            .map(|i| JobSpec::new(format!("j{i:02}"), vec![], p))
            .collect(),
    )
    .unwrap()
}

fn machine(slots: u32, speed: f64) -> RemoteMachine {
    RemoteMachine {
        slots,
        speed,
        speed_factor: speed,
        transfer_ms: 0.0,
        connect_ms: 0.0,
    }
}

fn fleet(machines: Vec<RemoteMachine>) -> Fleet {
    Fleet {
        machines,
        poll_interval_ms: 5000.0,
        whole_speed_factors: true,
    }
}

fn sleep(ms: f64) -> Profile {
    Profile::new(ms, 0.0, 0.0, 0)
}

#[test]
fn no_remote_slots_is_the_local_simulation() {
    let w = Workload::new(vec![
        JobSpec::new("a", vec![], Profile::new(100.0, 900.0, 2000.0, 10)),
        JobSpec::new("b", vec![0], Profile::new(0.0, 500.0, 0.0, 20)),
        JobSpec::new("c", vec![], Profile::new(300.0, 0.0, 1000.0, 30)),
    ])
    .unwrap();
    let mut p = SimParams::new(2, 1, 2);
    p.hook_ms = 3.0;
    p.loop_ms_per_build = 10.0;
    let alone = simulate(&w, &p).unwrap();
    for f in [Fleet::none(), fleet(vec![machine(0, 4.0)])] {
        let with = simulate_on(&w, &p, &f).unwrap();
        assert_eq!(with.timings, alone.timings);
        assert!(close(with.makespan_ms, alone.makespan_ms));
        assert_eq!(with.peak_rss_bytes, alone.peak_rss_bytes);
        assert!(with.remote_builds.iter().all(|&n| n == 0));
    }
    // max-jobs 0 and nowhere else to build: rejected, as Nix refuses to start.
    let e = simulate_on(&w, &SimParams::new(0, 1, 2), &Fleet::none()).unwrap_err();
    assert!(e.to_string().contains("max-jobs 0"), "{e}");
}

#[test]
fn a_faster_remote_takes_more_builds() {
    let w = independent(12, sleep(1000.0));
    // Same slots; the second three times as fast (speed factor 3).
    let f = fleet(vec![machine(2, 1.0), machine(2, 3.0)]);
    let r = simulate_on(&w, &SimParams::new(1, 0, 2), &f).unwrap();
    assert_eq!(r.remote_builds.len(), 2);
    let (slow, fast) = (r.remote_builds[0], r.remote_builds[1]);
    assert!(fast > slow, "fast {fast}, slow {slow}");
    let local = 12 - slow - fast;
    assert!(local >= 1, "the free local slot builds too: {r:?}");
    // Builds that find every slot taken wait for the 5 s poll, yet it is faster than
    // building all of them here one at a time.
    let here = simulate(&w, &SimParams::new(1, 0, 2)).unwrap();
    assert!(close(here.makespan_ms, 12_000.0));
    assert!(
        close(r.makespan_ms, 6000.0 + 1000.0 / 3.0),
        "{}",
        r.makespan_ms
    );
}

#[test]
fn remote_builds_cost_their_copies_and_connections() {
    let w = independent(1, sleep(1000.0));
    let mut m = machine(1, 2.0);
    m.transfer_ms = 400.0;
    m.connect_ms = 100.0;
    let r = simulate_on(&w, &SimParams::new(0, 0, 2), &fleet(vec![m])).unwrap();
    // Connect, copy and build at twice the speed.
    assert!(
        close(r.makespan_ms, 100.0 + 400.0 + 500.0),
        "{}",
        r.makespan_ms
    );
    // The loop waits while build-remote connects: the second build starts after.
    let two = independent(2, sleep(1000.0));
    m.slots = 2;
    let r = simulate_on(&two, &SimParams::new(0, 0, 2), &fleet(vec![m])).unwrap();
    let starts: Vec<f64> = r.timings.iter().map(|t| t.unwrap().start_ms).collect();
    assert!(
        close(starts[0], 0.0) && close(starts[1], 100.0),
        "{starts:?}"
    );
    assert!(close(r.makespan_ms, 100.0 + 1000.0), "{}", r.makespan_ms);
    // A build of 1 s that costs 3 s to ship: slower than building here.
    let mut heavy = machine(1, 1.0);
    heavy.transfer_ms = 2000.0;
    let r = simulate_on(&w, &SimParams::new(0, 0, 2), &fleet(vec![heavy])).unwrap();
    assert!(close(r.makespan_ms, 3000.0), "{}", r.makespan_ms);
}

#[test]
fn j0_builds_everything_remotely_and_waits_for_the_poll_when_full() {
    let w = independent(3, sleep(1000.0));
    let f = fleet(vec![machine(1, 1.0)]);
    let r = simulate_on(&w, &SimParams::new(0, 0, 2), &f).unwrap();
    assert_eq!(r.remote_builds, vec![3]);
    // One slot: the first build at 0; the others were postponed at 0, tried again at
    // the poll (5 s), one of them taken and the last postponed again until 10 s.
    assert!(close(r.makespan_ms, 11_000.0), "{}", r.makespan_ms);
    let mut quick = f.clone();
    quick.poll_interval_ms = 0.0;
    let r = simulate_on(&w, &SimParams::new(0, 0, 2), &quick).unwrap();
    assert!(
        close(r.makespan_ms, 3000.0),
        "polls every second at least: {}",
        r.makespan_ms
    );
    // With a local slot the build that finds the machine full builds here at once.
    let r = simulate_on(&independent(2, sleep(1000.0)), &SimParams::new(1, 0, 2), &f).unwrap();
    assert_eq!(r.remote_builds, vec![1]);
    assert!(close(r.makespan_ms, 1000.0), "{}", r.makespan_ms);
}

#[test]
fn remote_builds_use_no_cpu_or_memory_here() {
    // Two CPU-bound builds on one core: together here they share it.
    let w = independent(2, Profile::new(0.0, 1000.0, 0.0, 1 << 30));
    let r = simulate_on(&w, &SimParams::new(1, 1, 1), &fleet(vec![machine(1, 1.0)])).unwrap();
    assert_eq!(r.remote_builds, vec![1]);
    assert!(close(r.makespan_ms, 1000.0), "{}", r.makespan_ms);
    assert_eq!(r.peak_rss_bytes, 1 << 30, "only the local build's memory");
    assert!(close(r.cpu_ms, 1000.0));
}

#[test]
fn dependents_of_a_remote_build_wait_for_its_end_and_hook() {
    let w = Workload::new(vec![
        JobSpec::new("lib", vec![], sleep(1000.0)),
        JobSpec::new("app", vec![0], sleep(1000.0)),
    ])
    .unwrap();
    let mut p = SimParams::new(1, 0, 2);
    p.hook_ms = 50.0;
    let mut m = machine(1, 1.0);
    m.transfer_ms = 200.0;
    let r = simulate_on(&w, &p, &fleet(vec![m])).unwrap();
    let app = r.timings[1].unwrap();
    // lib: 1.2 s on the builder, its hook 50 ms here; then app, also remote.
    assert!(close(app.ready_ms, 1250.0), "{app:?}");
    assert!(close(r.makespan_ms, 2500.0), "{}", r.makespan_ms);
    assert_eq!(r.remote_builds, vec![2]);
}

/// A poll due while the loop handles a build's end: the postponed build starts after
/// that pass (found by review: the clock stopped at the poll and the simulation never
/// ended).
#[test]
fn a_poll_due_during_a_pass_wakes_its_builds_after_the_pass() {
    // `a` (remote) ends at 4995; in its pass `c` goes to the builder and `d` is
    // postponed (the local slot is `b`'s) until the poll at 10,005, which falls in the
    // pass [10,000, 10,010] of `b`'s end.
    let w = Workload::new(vec![
        JobSpec::new("a", vec![], sleep(4995.0)),
        JobSpec::new("b", vec![], sleep(10000.0)),
        JobSpec::new("c", vec![], sleep(100000.0)),
        JobSpec::new("d", vec![], sleep(100.0)),
    ])
    .unwrap();
    let mut p = SimParams::new(1, 1, 1);
    p.loop_ms_per_build = 10.0;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(simulate_on(&w, &p, &fleet(vec![machine(1, 1.0)])));
    });
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the simulation ends")
        .unwrap();
    let d = r.timings[3].unwrap();
    assert!(d.start_ms >= 10_010.0 - 1e-6, "{d:?}");
    assert!(d.start_ms < 10_100.0, "{d:?}");
    assert_eq!(r.remote_builds, vec![2]);
    assert!(close(r.makespan_ms, 105_015.0), "{}", r.makespan_ms);
}
