//! What `tune` needs of a build beyond its peak memory and CPU time, measured by the
//! sampler: how much the rest of the host competed with it, and its CPU time to the end.
//!
//! **Contention.** A build that shared the host ran slower than alone; `tune` takes the
//! slowdown out before fitting its model. In each sampler round in which a build's CPU
//! time grew, the round's length is added to the build's window and the CPU time the
//! rest of the host used in it (`/proc/stat`'s busy time less the build's own) to its
//! `others`. Rounds in which it did not use CPU (sleeping, waiting on I/O) do not
//! count: others filling the host then cost it nothing.
//!
//! **CPU time to the end.** Sampling every 200 ms misses what a build used after its last
//! sample: up to 200 ms of each core it kept busy (15% of a 1.3 s build). When Nix reaps
//! a builder, the builder's whole CPU time (its waited-for children's included) is added
//! to Nix's own `cutime`/`cstime`. So at a build's end, what Nix's children's time grew
//! by since the last round is that build's total, unless other builds were reaped in
//! between: the figure is used only when it is at least what was sampled, and capped at
//! what the build could have used since its last sample at its highest observed rate.
//! Under a daemon the builders are not our Nix's children; the figure stays 0 and the
//! sample stands.

use std::time::Instant;

/// What the sampler keeps of one build between rounds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Watch {
    /// The last round that measured it: when, the host's busy time then, its CPU time.
    prev: Option<(Instant, Option<u64>, u64)>,
    /// Its highest CPU rate between two rounds, in cores.
    max_rate: f64,
    pub window_ms: u64,
    pub others_cpu_ms: u64,
    /// Its final CPU time was already taken from Nix's children's time.
    settled: bool,
}

impl Watch {
    /// A round measured the build at `cpu_ms` (user + system) while the host's busy time
    /// was `host_busy_ms`; returns the CPU time it used since the previous round (all of
    /// it the first time).
    pub fn observe(&mut self, now: Instant, host_busy_ms: Option<u64>, cpu_ms: u64) -> u64 {
        let mut used = cpu_ms;
        if let Some((then, busy_then, cpu_then)) = self.prev {
            let dt = now.saturating_duration_since(then).as_millis() as u64;
            let own = cpu_ms.saturating_sub(cpu_then);
            used = own;
            if own > 0 && dt > 0 {
                self.max_rate = self.max_rate.max(own as f64 / dt as f64);
                if let (Some(busy), Some(busy_then)) = (host_busy_ms, busy_then) {
                    self.window_ms += dt;
                    self.others_cpu_ms += busy.saturating_sub(busy_then).saturating_sub(own);
                }
            }
        }
        self.prev = Some((now, host_busy_ms, cpu_ms));
        used
    }

    /// Whether a round has measured it.
    pub fn seen(&self) -> bool {
        self.prev.is_some()
    }

    /// The build's CPU time at its end, given `sampled_ms` (its CPU time at the last
    /// sample) and `reaped_ms`, what Nix's children's time grew by since the last round
    /// and was not given to another build. `None`: keep the sample. Once per build.
    pub fn settle(&mut self, sampled_ms: u64, reaped_ms: u64, now: Instant) -> Option<u64> {
        let (last, _, _) = self.prev?;
        if self.settled || reaped_ms <= sampled_ms {
            return None;
        }
        self.settled = true;
        let since = now.saturating_duration_since(last).as_millis() as f64;
        let cap = sampled_ms + (since * self.max_rate.max(1.0)).ceil() as u64;
        Some(reaped_ms.min(cap))
    }
}

/// Nix's children's CPU time (user, system ms) at the sampler's last round, and how much
/// of what it grew by since then builds ending have taken.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reaped {
    pub at_round: (u64, u64),
    pub taken: u64,
}

impl Reaped {
    /// What `now` shows was reaped since the round and not taken yet.
    pub fn available(&self, now: (u64, u64)) -> (u64, u64) {
        let user = now.0.saturating_sub(self.at_round.0);
        let system = now.1.saturating_sub(self.at_round.1);
        let left = (user + system).saturating_sub(self.taken);
        split(left, user, system)
    }
}

/// The load the rest of the host puts on it while a session builds, in cores: its busy
/// time less what the session's builds, Nix itself and the wrapper used, smoothed over a
/// few seconds of rounds. The
/// ETA simulates the rest of the build with it ([`crate::tune::live`]) rather than
/// waiting to learn it from builds that ran slow.
#[derive(Debug, Default, Clone, Copy)]
pub struct OutsideLoad {
    /// The last round: when, the host's busy time, and Nix's and the wrapper's own.
    last: Option<(Instant, u64, u64)>,
    cores: Option<f64>,
}

/// Weight of each round in [`OutsideLoad`]: a time constant of about ten rounds (2 s).
const OUTSIDE_WEIGHT: f64 = 0.1;

impl OutsideLoad {
    /// A round at `now`: the host was busy `host_busy_ms` and Nix and the wrapper used
    /// `ours_ms` (both cumulative), and the builds used `builds_ms` since the last round.
    pub fn round(&mut self, now: Instant, host_busy_ms: Option<u64>, ours_ms: u64, builds_ms: u64) {
        let Some(busy) = host_busy_ms else { return };
        if let Some((then, busy_then, ours_then)) = self.last {
            let dt = now.saturating_duration_since(then).as_secs_f64() * 1e3;
            if dt > 0.0 {
                let others = busy
                    .saturating_sub(busy_then)
                    .saturating_sub(builds_ms)
                    .saturating_sub(ours_ms.saturating_sub(ours_then))
                    as f64
                    / dt;
                self.cores = Some(match self.cores {
                    Some(c) => c + OUTSIDE_WEIGHT * (others - c),
                    None => others,
                });
            }
        }
        self.last = Some((now, busy, ours_ms));
    }

    pub fn cores(&self) -> Option<f64> {
        self.cores
    }
}

/// The host's busy CPU time (user, nice, system, irq, softirq, steal) from `/proc/stat`,
/// in ms.
pub fn host_busy_ms(tick_ms: f64) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_host_busy(&text, tick_ms)
}

fn parse_host_busy(text: &str, tick_ms: f64) -> Option<u64> {
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line
        .split_ascii_whitespace()
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let ticks: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| f.get(i).copied().unwrap_or(0))
        .sum();
    Some((ticks as f64 * tick_ms) as u64)
}

/// The CPU time (user, system ms) of the reaped children of process `pid`.
pub fn children_cpu_ms(pid: i32) -> Option<(u64, u64)> {
    let stat =
        super::sampler::parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let tick_ms = 1000.0 / crate::sys::clock_ticks_per_second();
    Some((
        (stat.cutime as f64 * tick_ms) as u64,
        (stat.cstime as f64 * tick_ms) as u64,
    ))
}

/// The CPU time (user + system ms) process `pid` used itself, all its threads.
pub fn own_cpu_ms(pid: i32) -> Option<u64> {
    let stat =
        super::sampler::parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    Some(((stat.utime + stat.stime) as f64 * 1000.0 / crate::sys::clock_ticks_per_second()) as u64)
}

/// Splits `total_ms` of CPU time like `user`:`system`.
pub fn split(total_ms: u64, user: u64, system: u64) -> (u64, u64) {
    let both = user + system;
    if both == 0 {
        return (total_ms, 0);
    }
    let u = (total_ms as f64 * user as f64 / both as f64).round() as u64;
    (u.min(total_ms), total_ms - u.min(total_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_rounds_with_cpu_count_and_the_build_itself_is_not_an_other() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut w = Watch::default();
        w.observe(at(0), Some(1_000), 0);
        // 200 ms, it used 150 ms, the host 350: others 200.
        w.observe(at(200), Some(1_350), 150);
        // Asleep for a round while the host was busy: not counted.
        w.observe(at(400), Some(1_750), 150);
        w.observe(at(600), Some(2_000), 250);
        assert_eq!((w.window_ms, w.others_cpu_ms), (400, 350));
        assert!((w.max_rate - 0.75).abs() < 1e-9);
    }

    #[test]
    fn the_end_is_taken_from_the_reaped_time_within_reason() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        assert_eq!(w.settle(100, 500, t0), None, "never measured");
        w.observe(t0, None, 0);
        w.observe(t0 + Duration::from_millis(200), None, 400);
        let end = t0 + Duration::from_millis(300);
        // 2 cores' worth: at most 200 ms more in the 100 ms since the last sample.
        assert_eq!(w.settle(400, 1_000, end), Some(600));
        assert_eq!(w.settle(400, 1_000, end), None, "once");
        let mut w2 = Watch::default();
        w2.observe(t0, None, 0);
        w2.observe(t0 + Duration::from_millis(200), None, 100);
        assert_eq!(w2.settle(100, 130, end), Some(130));
        assert_eq!(w2.settle(100, 50, end), None, "someone else's reaped time");
    }

    #[test]
    fn the_outside_load_is_what_the_builds_did_not_use() {
        let t0 = Instant::now();
        let mut load = OutsideLoad::default();
        load.round(t0, Some(10_000), 500, 0);
        assert_eq!(load.cores(), None);
        // 200 ms: the host was busy 350 ms, the builds 100, Nix and us 50: 1 core.
        load.round(t0 + Duration::from_millis(200), Some(10_350), 550, 100);
        assert!((load.cores().unwrap() - 1.0).abs() < 1e-9);
        // Then nobody else: it decays, slowly.
        load.round(t0 + Duration::from_millis(400), Some(10_450), 550, 100);
        assert!((load.cores().unwrap() - 0.9).abs() < 1e-9);
    }

    #[test]
    fn proc_stat_and_splits_read_right() {
        let text = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 1 2 3\n";
        assert_eq!(parse_host_busy(text, 10.0), Some(1_610));
        assert_eq!(parse_host_busy("intr 1 2\n", 10.0), None);
        assert_eq!(split(100, 3, 1), (75, 25));
        assert_eq!(split(100, 0, 0), (100, 0));
        let reaped = Reaped {
            at_round: (100, 50),
            taken: 30,
        };
        assert_eq!(reaped.available((200, 70)), (75, 15));
        assert_eq!(reaped.available((100, 50)), (0, 0));
    }
}
