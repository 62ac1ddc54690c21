use super::*;
use crate::tune::model::Profile;
use crate::tune::workload::JobSpec;

fn cpu(ms: f64) -> Profile {
    Profile::new(0.0, ms, 0.0, 0)
}

fn sleep(ms: f64) -> Profile {
    Profile::new(ms, 0.0, 0.0, 0)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6 * (1.0 + b.abs())
}

fn wl(jobs: Vec<JobSpec>) -> Workload {
    Workload::new(jobs).unwrap()
}

fn independent(n: usize, p: Profile) -> Workload {
    wl((0..n)
        .map(|i| JobSpec::new(format!("j{i}"), vec![], p))
        .collect())
}

#[test]
fn serial_jobs_at_one_job_add_up() {
    let r = simulate(&independent(4, cpu(1000.0)), &SimParams::new(1, 1, 2)).unwrap();
    assert!(close(r.makespan_ms, 4000.0));
    assert_eq!(r.peak_running, 1);
}

#[test]
fn cpu_is_shared_when_oversubscribed() {
    let r = simulate(&independent(4, cpu(1000.0)), &SimParams::new(4, 1, 2)).unwrap();
    assert!(close(r.makespan_ms, 2000.0), "{}", r.makespan_ms);
    assert!(close(r.cpu_utilisation, 1.0));
}

#[test]
fn sleeps_are_not_slowed_by_load() {
    let w = wl(vec![
        JobSpec::new("a", vec![], cpu(3000.0)),
        JobSpec::new("b", vec![], cpu(3000.0)),
        JobSpec::new("c", vec![], sleep(1000.0)),
    ]);
    let r = simulate(&w, &SimParams::new(3, 1, 1)).unwrap();
    let c = r.timings[2].unwrap();
    assert!(close(c.end_ms - c.start_ms, 1000.0));
    assert!(close(r.makespan_ms, 6000.0));
}

#[test]
fn parallel_work_uses_its_cores_and_zero_means_the_host() {
    let w = wl(vec![JobSpec::new(
        "p",
        vec![],
        Profile::new(0.0, 100.0, 4000.0, 0),
    )]);
    for (cores, want) in [(1, 4100.0), (2, 2100.0), (0, 1100.0), (8, 1100.0)] {
        let r = simulate(&w, &SimParams::new(1, cores, 4)).unwrap();
        assert!(
            close(r.makespan_ms, want),
            "cores {cores}: {}",
            r.makespan_ms
        );
    }
}

#[test]
fn per_build_and_per_thread_sharing_differ() {
    // A 2-thread build and a 1-thread build on one core.
    let w = wl(vec![
        JobSpec::new("p", vec![], Profile::new(0.0, 0.0, 2000.0, 0)),
        JobSpec::new("s", vec![], cpu(1000.0)),
    ]);
    let mut p = SimParams::new(2, 2, 1);
    let r = simulate(&w, &p).unwrap();
    // Per build: half a core each until s ends at 2000; then p's last 1000 alone.
    assert!(close(r.timings[1].unwrap().end_ms, 2000.0));
    assert!(close(r.makespan_ms, 3000.0));
    p.cpu_share = CpuShare::PerThread;
    let r = simulate(&w, &p).unwrap();
    // Per thread: s gets a third -> ends at 3000, as does p.
    assert!(close(r.timings[1].unwrap().end_ms, 3000.0));
    assert!(close(r.makespan_ms, 3000.0));
}

#[test]
fn dependencies_are_respected() {
    let w = wl(vec![
        JobSpec::new("a", vec![], cpu(1000.0)),
        JobSpec::new("b", vec![0], cpu(1000.0)),
        JobSpec::new("c", vec![1], cpu(1000.0)),
    ]);
    let r = simulate(&w, &SimParams::new(8, 1, 8)).unwrap();
    assert!(close(r.makespan_ms, 3000.0));
    assert_eq!(r.critical_chain, vec![0, 1, 2]);
}

#[test]
fn at_startup_nix_goes_by_depth_then_name() {
    // top depends on z (a root at depth 1) and on mid, which depends on a (depth 2).
    let w = wl(vec![
        JobSpec::new("top", vec![1, 2], cpu(1.0)),
        JobSpec::new("z", vec![], cpu(1000.0)),
        JobSpec::new("mid", vec![3], cpu(1.0)),
        JobSpec::new("a", vec![], cpu(1000.0)),
    ]);
    let r = simulate(&w, &SimParams::new(1, 1, 1)).unwrap();
    assert!(r.timings[1].unwrap().start_ms < r.timings[3].unwrap().start_ms);
}

#[test]
fn waiting_goals_go_before_newly_ready_ones() {
    // When a ends, "b" (depends on a) becomes ready while "z" has been waiting.
    let w = wl(vec![
        JobSpec::new("a", vec![], cpu(1000.0)),
        JobSpec::new("b", vec![0], cpu(1000.0)),
        JobSpec::new("z", vec![], cpu(1000.0)),
        JobSpec::new("top", vec![1, 2], cpu(1.0)),
    ]);
    let r = simulate(&w, &SimParams::new(1, 1, 1)).unwrap();
    assert!(r.timings[2].unwrap().start_ms < r.timings[1].unwrap().start_ms);
}

#[test]
fn the_hook_blocks_the_loop() {
    // Measured (nix-facts.md): 4 parallel 1 s builds, a 2 s hook, -j 4: 9 s.
    let w = independent(4, sleep(1000.0));
    let mut p = SimParams::new(4, 1, 4);
    p.hook_ms = 2000.0;
    let r = simulate(&w, &p).unwrap();
    assert!(close(r.makespan_ms, 9000.0), "{}", r.makespan_ms);
    // With -j 1 every build waits for the previous hook: 4 × (1 + 2).
    p.max_jobs = 1;
    let r = simulate(&w, &p).unwrap();
    assert!(close(r.makespan_ms, 12000.0), "{}", r.makespan_ms);
}

#[test]
fn an_ended_build_holds_its_slot_until_handled() {
    // -j 2, hook 500: a (100 ms) ends, its hook runs 100..600; b (200 ms) ends at 200
    // but keeps its slot; c can only start at 600, after a's pass.
    let w = wl(vec![
        JobSpec::new("a", vec![], sleep(100.0)),
        JobSpec::new("b", vec![], sleep(200.0)),
        JobSpec::new("c", vec![], sleep(100.0)),
    ]);
    let mut p = SimParams::new(2, 1, 4);
    p.hook_ms = 500.0;
    let r = simulate(&w, &p).unwrap();
    assert!(close(r.timings[2].unwrap().start_ms, 600.0));
    // b's pass 600..1100, c ends at 700 and its pass is 1100..1600.
    assert!(close(r.makespan_ms, 1600.0), "{}", r.makespan_ms);
}

#[test]
fn peak_memory_is_the_sum_of_what_runs() {
    let w = wl(vec![
        JobSpec::new("a", vec![], Profile::new(1000.0, 0.0, 0.0, 300)),
        JobSpec::new("b", vec![], Profile::new(1000.0, 0.0, 0.0, 500)),
        JobSpec::new("c", vec![0, 1], Profile::new(1000.0, 0.0, 0.0, 700)),
    ]);
    let peak = |j| {
        simulate(&w, &SimParams::new(j, 1, 4))
            .unwrap()
            .peak_rss_bytes
    };
    assert_eq!(peak(2), 800);
    assert_eq!(peak(1), 700);
}

#[test]
fn outside_load_slows_cpu_work() {
    let w = wl(vec![JobSpec::new("a", vec![], cpu(1000.0))]);
    let mut p = SimParams::new(1, 1, 1);
    p.background_demand = 1.0;
    assert!(close(simulate(&w, &p).unwrap().makespan_ms, 2000.0));
    // Reserved: two serial builds share 1.5 of 2 cores, 0.75 each.
    let w = independent(2, cpu(1000.0));
    let mut p = SimParams::new(2, 1, 2);
    p.background_reserved = 0.5;
    assert!(close(simulate(&w, &p).unwrap().makespan_ms, 1000.0 / 0.75));
}

#[test]
fn a_build_resumes_from_the_middle() {
    let w = wl(vec![
        JobSpec::new("a", vec![], cpu(1000.0)),
        JobSpec::new("b", vec![0], cpu(1000.0)),
        JobSpec::new("c", vec![], cpu(1000.0)),
    ]);
    let st = [
        JobState::Done,
        JobState::Running { elapsed_ms: 400.0 },
        JobState::Pending,
    ];
    let r = simulate_from(&w, &SimParams::new(1, 1, 1), &st).unwrap();
    assert!(close(r.makespan_ms, 1600.0), "{}", r.makespan_ms);
    assert!(r.timings[0].is_none());
    // Past its prediction: 10% of its elapsed time more.
    let st = [
        JobState::Done,
        JobState::Running { elapsed_ms: 5000.0 },
        JobState::Done,
    ];
    let r = simulate_from(&w, &SimParams::new(1, 1, 1), &st).unwrap();
    assert!(close(r.makespan_ms, 500.0), "{}", r.makespan_ms);
}

#[test]
fn bad_settings_are_rejected() {
    let w = wl(vec![JobSpec::new("a", vec![], cpu(1.0))]);
    assert!(simulate(&w, &SimParams::new(0, 1, 1)).is_err());
    assert!(simulate(&w, &SimParams::new(1, 1, 0)).is_err());
    let mut p = SimParams::new(1, 1, 1);
    p.hook_ms = f64::NAN;
    assert!(simulate(&w, &p).is_err());
    assert!(simulate_from(&w, &SimParams::new(1, 1, 1), &[]).is_err());
}

#[test]
fn an_empty_workload_takes_no_time() {
    let r = simulate(&wl(vec![]), &SimParams::new(1, 1, 1)).unwrap();
    assert_eq!(r.makespan_ms, 0.0);
    assert!(r.critical_chain.is_empty());
}
