//! The simulator's state and events (see the parent module for what is modelled).
//! Continuous time, processor sharing: at each step every running build progresses at
//! the rate its CPU share allows until the earliest phase end or the end of the loop's
//! pass, whichever is first.

use std::collections::{BTreeSet, VecDeque};

use super::{JobState, JobTiming, SimParams};
use crate::tune::fleet::Fleet;
use crate::tune::model::{effective_cores, workers};
use crate::tune::share::allocate;
use crate::tune::workload::Workload;

/// Work below this is treated as finished (absorbs float drift).
pub(super) const EPS: f64 = 1e-9;

/// One phase of a job: the CPU threads it wants (0 = idle) and its work (CPU-ms, or ms
/// when idle).
#[derive(Debug, Clone, Copy)]
struct Phase {
    threads: f64,
    work: f64,
}

/// A build phase in progress.
#[derive(Debug, Clone, Copy)]
struct Run {
    job: usize,
    phase: usize,
    remaining: f64,
}

/// A build on a remote machine: it ends at a fixed time (nothing here slows it).
#[derive(Debug, Clone, Copy)]
struct RemoteRun {
    job: usize,
    machine: usize,
    end: f64,
}

/// Turns in a row without the clock or the count of handled builds moving, beyond one
/// per job, after which a simulation is taken to be stuck.
const STALLED_TURNS: usize = 10_000;

pub(super) struct Sim<'a> {
    w: &'a Workload,
    p: &'a SimParams,
    fleet: &'a Fleet,
    /// Whether any remote slot exists: without, the loop is the local one alone.
    remote: bool,
    /// Each job's phases in order: serial CPU, parallel CPU, idle. Configure/build/
    /// install in nixpkgs is serial-parallel-serial; the order matters only under
    /// contention.
    ph: Vec<[Phase; 3]>,
    pub(super) t: f64,
    running: Vec<Run>,
    /// Builders that exited but whose end the loop has not handled yet (a local one
    /// holds its slot until then).
    ended: Vec<usize>,
    /// The remote machine each job went to.
    machine_of: Vec<Option<usize>>,
    remote_running: Vec<RemoteRun>,
    /// Per machine: slots in use.
    remote_busy: Vec<u32>,
    /// Per machine: builds it ran.
    pub(super) remote_builds: Vec<u32>,
    /// Postponed goals (`waitingForAWhile`), by Nix's key, and when the poll wakes them.
    postponed: BTreeSet<(u32, usize)>,
    next_poll: Option<f64>,
    /// Goals of a pass that a remote dispatch interrupted (the loop waited for the
    /// connection), in the order the pass would have worked them.
    carry: VecDeque<usize>,
    /// The pass in progress: its jobs and when it ends.
    pass: Option<(Vec<usize>, f64)>,
    /// Goals in `wantingToBuild`, by Nix's key.
    waiting: BTreeSet<(u32, usize)>,
    /// Goals that just became ready: they come after `waiting`.
    fresh: Vec<usize>,
    startup_order: bool,
    deps_left: Vec<usize>,
    pub(super) timings: Vec<Option<JobTiming>>,
    rss_now: u64,
    /// Jobs whose end the loop has handled.
    pub(super) released: usize,
    pub(super) peak_rss: u64,
    pub(super) peak_running: u32,
    pub(super) cpu_ms: f64,
    rates: Vec<f64>,
    demands: Vec<f64>,
    scratch: Vec<usize>,
}

impl<'a> Sim<'a> {
    /// The simulation at time 0 of `state` (see [`super::simulate_from`]).
    pub(super) fn new(
        w: &'a Workload,
        p: &'a SimParams,
        fleet: &'a Fleet,
        state: &[JobState],
    ) -> Sim<'a> {
        let n = w.len();
        let fresh_start = state.iter().all(|s| matches!(s, JobState::Pending));
        let threads = f64::from(workers(p.cores, p.host_cores));
        let ph = w
            .jobs()
            .iter()
            .map(|j| {
                [
                    Phase {
                        threads: 1.0,
                        work: j.profile.serial_cpu_ms,
                    },
                    Phase {
                        threads,
                        work: j.profile.parallel_cpu_ms,
                    },
                    Phase {
                        threads: 0.0,
                        work: j.profile.idle_ms,
                    },
                ]
            })
            .collect();
        let t0 = if fresh_start { p.startup_ms } else { 0.0 };
        let machines = fleet.machines.len();
        let mut sim = Sim {
            w,
            p,
            fleet,
            remote: fleet.remote_slots() > 0,
            ph,
            t: t0,
            running: Vec::new(),
            ended: Vec::new(),
            machine_of: vec![None; n],
            remote_running: Vec::new(),
            remote_busy: vec![0; machines],
            remote_builds: vec![0; machines],
            postponed: BTreeSet::new(),
            next_poll: None,
            carry: VecDeque::new(),
            pass: None,
            waiting: BTreeSet::new(),
            fresh: Vec::new(),
            // Mid-build, every ready goal has been waiting: Nix's key order alone.
            startup_order: fresh_start,
            deps_left: vec![0; n],
            timings: vec![None; n],
            rss_now: 0,
            released: 0,
            peak_rss: 0,
            peak_running: 0,
            cpu_ms: 0.0,
            rates: Vec::new(),
            demands: Vec::new(),
            scratch: Vec::new(),
        };
        let blank = JobTiming {
            ready_ms: t0,
            start_ms: t0,
            end_ms: t0,
            done_ms: t0,
        };
        for (i, st) in state.iter().enumerate() {
            if !matches!(st, JobState::Done) {
                sim.timings[i] = Some(blank);
                sim.deps_left[i] = w
                    .job(i)
                    .deps
                    .iter()
                    .filter(|&&d| !matches!(state.get(d), Some(JobState::Done)))
                    .count();
            }
        }
        for (i, st) in state.iter().enumerate() {
            match *st {
                JobState::Running { elapsed_ms } => sim.place_running(i, elapsed_ms),
                JobState::Pending if sim.deps_left[i] == 0 => sim.fresh.push(i),
                _ => {}
            }
        }
        sim.peak_rss = sim.rss_now;
        sim.peak_running = sim.running.len() as u32;
        sim
    }

    /// Puts job `i`, started `elapsed_ms` ago, where it would be had it run alone.
    fn place_running(&mut self, i: usize, elapsed_ms: f64) {
        let eff = effective_cores(self.p.cores, self.p.host_cores);
        let rate_of = |ph: &Phase| {
            if ph.threads == 0.0 {
                1.0
            } else {
                ph.threads.min(eff)
            }
        };
        let mut left = elapsed_ms.max(0.0);
        let mut placed = false;
        for k in 0..3 {
            let ph = self.ph[i][k];
            if ph.work <= EPS {
                continue;
            }
            let rate = rate_of(&ph);
            let took = ph.work / rate;
            if left < took {
                self.running.push(Run {
                    job: i,
                    phase: k,
                    remaining: ph.work - left * rate,
                });
                placed = true;
                break;
            }
            left -= took;
        }
        if !placed {
            // Past its prediction: assume it ends after 10% more of its elapsed time.
            let extra = 0.1 * elapsed_ms.max(1.0);
            let k = (0..3)
                .rev()
                .find(|&k| self.ph[i][k].work > EPS)
                .unwrap_or(2);
            let rate = rate_of(&self.ph[i][k]);
            self.running.push(Run {
                job: i,
                phase: k,
                remaining: extra * rate,
            });
        }
        if let Some(t) = self.timings[i].as_mut() {
            t.start_ms = -elapsed_ms;
            t.ready_ms = -elapsed_ms;
        }
        self.rss_now = self
            .rss_now
            .saturating_add(self.w.job(i).profile.peak_rss_bytes);
    }

    /// Runs to the end: every job done.
    /// Runs to the end. Returns false when the clock stood still for
    /// [`STALLED_TURNS`] turns in a row: a fault of the model, reported rather than
    /// looped on.
    pub(super) fn run(&mut self) -> bool {
        let mut still = 0usize;
        loop {
            let before = (self.t, self.released);
            self.loop_turn();
            if self.running.is_empty()
                && self.remote_running.is_empty()
                && self.pass.is_none()
                && self.postponed.is_empty()
            {
                if self.ended.is_empty() {
                    return true;
                }
                continue;
            }
            self.step();
            if (self.t, self.released) == before {
                still += 1;
                if still > STALLED_TURNS + 4 * self.w.len() {
                    return false;
                }
            } else {
                still = 0;
            }
        }
    }

    fn first_phase_from(&self, job: usize, from: usize) -> Option<usize> {
        (from..3).find(|&k| self.ph[job][k].work > EPS)
    }

    /// Local slots taken: running local builds and local ones not yet handled.
    fn holding(&self) -> usize {
        let ended_local = if self.remote {
            self.ended
                .iter()
                .filter(|&&j| self.machine_of[j].is_none())
                .count()
        } else {
            self.ended.len()
        };
        self.running.len() + ended_local
    }

    fn start(&mut self, job: usize) {
        if let Some(t) = self.timings[job].as_mut() {
            t.start_ms = self.t;
        }
        self.rss_now = self
            .rss_now
            .saturating_add(self.w.job(job).profile.peak_rss_bytes);
        self.peak_rss = self.peak_rss.max(self.rss_now);
        match self.first_phase_from(job, 0) {
            Some(k) => self.running.push(Run {
                job,
                phase: k,
                remaining: self.ph[job][k].work,
            }),
            None => self.finish_builder(job),
        }
        self.peak_running = self.peak_running.max(self.holding() as u32);
    }

    fn finish_builder(&mut self, job: usize) {
        if let Some(t) = self.timings[job].as_mut() {
            t.end_ms = self.t;
        }
        self.rss_now = self
            .rss_now
            .saturating_sub(self.w.job(job).profile.peak_rss_bytes);
        self.ended.push(job);
    }

    /// Starts ready goals in Nix's order while slots are free.
    fn fill(&mut self) {
        if self.pass.is_some() {
            return;
        }
        let w = self.w;
        if self.startup_order {
            self.fresh.sort_by_key(|&i| (w.depth(i), w.rank(i)));
            self.startup_order = false;
        } else {
            self.fresh.sort_by_key(|&i| w.rank(i));
        }
        if self.remote {
            self.fill_with_remotes();
            return;
        }
        let slots = self.p.max_jobs as usize;
        while self.holding() < slots {
            let Some(first) = self.waiting.pop_first() else {
                break;
            };
            self.start(first.1);
        }
        for job in std::mem::take(&mut self.fresh) {
            if self.holding() < slots {
                self.start(job);
            } else {
                self.waiting.insert((w.rank(job), job));
            }
        }
    }

    /// [`Sim::fill`] with remote machines: every goal is offered to build-remote first
    /// (see [`crate::tune::fleet`]); declined, it builds here if this machine was
    /// willing (a local slot free when the pass began), else it is postponed.
    fn fill_with_remotes(&mut self) {
        let w = self.w;
        let slots = self.p.max_jobs as usize;
        let willing = self.holding() < slots;
        let mut order = std::mem::take(&mut self.carry);
        while let Some((_, job)) = self.waiting.pop_first() {
            order.push_back(job);
        }
        order.extend(std::mem::take(&mut self.fresh));
        while let Some(job) = order.pop_front() {
            if let Some(m) = self.fleet.choose(&self.remote_busy) {
                self.start_remote(job, m);
                let connect = self.fleet.machines[m].connect_ms;
                if connect > EPS {
                    // The loop waits for build-remote's connection: the rest of the pass
                    // goes on after it.
                    self.carry = order;
                    self.pass = Some((Vec::new(), self.t + connect));
                    return;
                }
            } else if willing {
                if self.holding() < slots {
                    self.start(job);
                } else {
                    self.waiting.insert((w.rank(job), job));
                }
            } else {
                if self.postponed.is_empty() && self.next_poll.is_none() {
                    self.next_poll = Some(self.t + self.fleet.poll_wait_ms());
                }
                self.postponed.insert((w.rank(job), job));
            }
        }
    }

    fn start_remote(&mut self, job: usize, m: usize) {
        if let Some(t) = self.timings[job].as_mut() {
            t.start_ms = self.t;
        }
        self.machine_of[job] = Some(m);
        self.remote_busy[m] += 1;
        self.remote_builds[m] += 1;
        let took = self
            .fleet
            .remote_ms(m, &self.w.job(job).profile, self.p.host_cores);
        self.remote_running.push(RemoteRun {
            job,
            machine: m,
            end: self.t + took,
        });
    }

    /// The poll wakes postponed goals: they are tried again with the waiting ones.
    fn wake_postponed(&mut self) {
        if let Some(at) = self.next_poll {
            if self.t + EPS >= at {
                self.next_poll = None;
                while let Some(goal) = self.postponed.pop_first() {
                    self.waiting.insert(goal);
                }
            }
        }
    }

    fn release(&mut self, jobs: &[usize], at: f64) {
        self.released += jobs.len();
        for &job in jobs {
            if let Some(t) = self.timings[job].as_mut() {
                t.done_ms = at;
            }
            for &k in self.w.dependents(job) {
                self.deps_left[k] = self.deps_left[k].saturating_sub(1);
                if self.deps_left[k] == 0 {
                    if let Some(t) = self.timings[k].as_mut() {
                        t.ready_ms = at;
                    }
                    self.fresh.push(k);
                }
            }
        }
    }

    /// Everything the loop does at the current time: end a pass, handle ended builders,
    /// start ready goals.
    fn loop_turn(&mut self) {
        loop {
            if let Some((_, until)) = &self.pass {
                if self.t + EPS < *until {
                    return;
                }
                if let Some((jobs, until)) = self.pass.take() {
                    self.release(&jobs, until);
                    self.fill();
                }
                // Filling may have dispatched a remote build: the loop waits again.
                if self.pass.is_some() {
                    continue;
                }
            }
            self.wake_postponed();
            if self.ended.is_empty() {
                self.fill();
                if self.pass.is_some() {
                    continue;
                }
                return;
            }
            let jobs = std::mem::take(&mut self.ended);
            let cost = (self.p.hook_ms + self.p.loop_ms_per_build) * jobs.len() as f64;
            if cost <= EPS {
                self.release(&jobs, self.t);
                continue;
            }
            self.pass = Some((jobs, self.t + cost));
            return;
        }
    }

    /// Progress per ms of running phase `i`: 1 when idle, its CPU share otherwise.
    fn speed(&self, i: usize) -> f64 {
        let r = &self.running[i];
        if self.ph[r.job][r.phase].threads == 0.0 {
            1.0
        } else {
            self.rates.get(i).copied().unwrap_or(0.0)
        }
    }

    /// Advances to the next event: a phase ends or the loop's pass ends.
    fn step(&mut self) {
        self.demands.clear();
        for r in &self.running {
            self.demands.push(self.ph[r.job][r.phase].threads);
        }
        if self.p.background_demand > 0.0 {
            self.demands.push(self.p.background_demand);
        }
        // Outside work never takes the whole host from the builds in this model: at
        // least 5% of a core is left, so that the simulation always progresses.
        let capacity = (f64::from(self.p.host_cores) - self.p.background_reserved).max(0.05);
        allocate(
            self.p.cpu_share,
            capacity,
            &self.demands,
            &mut self.rates,
            &mut self.scratch,
        );
        let mut dt = f64::INFINITY;
        for i in 0..self.running.len() {
            let s = self.speed(i);
            if s > 0.0 {
                dt = dt.min(self.running[i].remaining / s);
            }
        }
        if let Some((_, until)) = &self.pass {
            dt = dt.min((until - self.t).max(0.0));
        }
        for r in &self.remote_running {
            dt = dt.min((r.end - self.t).max(0.0));
        }
        // A poll due during a pass wakes its goals at the first turn after the pass
        // (`loop_turn` returns early until then): counting it here as still ahead would
        // stop the clock at it.
        if let (Some(at), false) = (self.next_poll, self.postponed.is_empty()) {
            if at > self.t + EPS {
                dt = dt.min(at - self.t);
            }
        }
        if !dt.is_finite() {
            // Nothing can progress (cannot happen with host_cores ≥ 1): stop cleanly.
            dt = 0.0;
        }
        let mut finished_phase = Vec::new();
        for i in 0..self.running.len() {
            let s = self.speed(i);
            let run = self.running[i];
            if self.ph[run.job][run.phase].threads > 0.0 {
                self.cpu_ms += s * dt;
            }
            let r = &mut self.running[i];
            r.remaining -= s * dt;
            if s > 0.0 && r.remaining / s <= EPS {
                r.remaining = 0.0;
                finished_phase.push(i);
            }
        }
        self.t += dt;
        // Remote builds that ended: their slot frees as build-remote exits; the loop
        // handles the end as a local build's.
        let mut i = 0;
        while i < self.remote_running.len() {
            let r = self.remote_running[i];
            if r.end <= self.t + EPS {
                self.remote_running.swap_remove(i);
                self.remote_busy[r.machine] = self.remote_busy[r.machine].saturating_sub(1);
                if let Some(t) = self.timings[r.job].as_mut() {
                    t.end_ms = self.t;
                }
                self.ended.push(r.job);
            } else {
                i += 1;
            }
        }
        // Move finished phases on; remove finished builds, highest index first.
        for &i in finished_phase.iter().rev() {
            let run = self.running[i];
            match self.first_phase_from(run.job, run.phase + 1) {
                Some(k) => {
                    self.running[i] = Run {
                        job: run.job,
                        phase: k,
                        remaining: self.ph[run.job][k].work,
                    };
                }
                None => {
                    self.running.swap_remove(i);
                    self.finish_builder(run.job);
                }
            }
        }
    }
}
