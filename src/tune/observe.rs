//! One measured build as the model reads it, and how much slower it ran than it would
//! have alone on its host.
//!
//! A build that shared the host (with other builds of its session, or with anything
//! else) ran slower than alone. Read naively, the lost time looks like idle time, and the
//! model would then predict the build too slow at every setting. So each observation is
//! first brought back to its uncontended duration
//! ([`Observation::uncontended_duration_ms`]) from what the wrapper's sampler saw while
//! the build was using CPU: how long that was, and how much CPU the rest of the host used
//! meanwhile ([`CpuWindow`]). Only the moments the build wanted CPU count: a build that
//! sleeps while others fill the host loses nothing to them.

use serde::{Deserialize, Serialize};

/// One measured build of a derivation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Wall time of the build.
    pub duration_ms: u64,
    /// User + system CPU time of the build's process tree.
    pub cpu_ms: u64,
    /// Peak resident memory of the build's process tree.
    pub peak_rss_bytes: u64,
    /// The `cores` setting of its session (`NIX_BUILD_CORES`), 0 meaning all.
    pub cores_given: u32,
    /// Cores of the host the build ran on.
    pub host_cores: u32,
    /// What the sampler saw while the build used CPU; `None`: assume it had the host to
    /// itself.
    pub cpu_window: Option<CpuWindow>,
}

/// What the sampler saw in the samples in which a build's CPU time grew: their total
/// length, and the CPU time the rest of the host used in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuWindow {
    pub window_ms: u64,
    pub others_cpu_ms: u64,
}

/// Workers a builder starts for a `cores` setting: 0 means every core of the host
/// (stdenv replaces 0 by `nproc`; Nix ≥ 2.31 passes the detected count itself).
pub fn workers(cores: u32, host_cores: u32) -> u32 {
    if cores == 0 {
        host_cores.max(1)
    } else {
        cores
    }
}

/// The parallelism reachable alone on the host: `min(workers, host cores)`, at least 1.
pub fn effective_cores(cores: u32, host_cores: u32) -> f64 {
    f64::from(workers(cores, host_cores).min(host_cores.max(1)).max(1))
}

impl Observation {
    /// The parallelism the build could reach: the workers it was told to start, bounded
    /// by the host's cores.
    pub fn effective_cores(&self) -> f64 {
        effective_cores(self.cores_given, self.host_cores)
    }

    /// Cores the build could have had while it wanted CPU: the host minus the load the
    /// rest of the host put on it in those moments, never less than what the build
    /// itself used, never more than the host.
    pub fn available_cores(&self) -> f64 {
        let h = f64::from(self.host_cores.max(1));
        let d = self.duration_ms as f64;
        let u = self.cpu_ms as f64;
        let own = if d > 0.0 { u / d } else { 0.0 };
        match self.cpu_window.filter(|w| w.window_ms > 0) {
            Some(w) => {
                let window = w.window_ms as f64;
                let others = w.others_cpu_ms as f64 / window;
                let own_in_window = (u / window).min(h);
                (h - others).max(own_in_window).max(own).min(h)
            }
            None => h,
        }
    }

    /// The duration the build would have had alone on its host with the same cores. The
    /// CPU time is split by the least-parallel reading of [`super::model`], the serial
    /// part having run at `min(1, avail)` cores and the parallel part at
    /// `min(c, avail)`, where `avail` is [`Observation::available_cores`]; idle time is
    /// not stretched by contention.
    pub fn uncontended_duration_ms(&self) -> f64 {
        let d = self.duration_ms as f64;
        let c = self.effective_cores();
        let avail = self.available_cores();
        if avail >= c {
            return d;
        }
        let u = (self.cpu_ms as f64).min(d * avail);
        let r1 = avail.clamp(f64::MIN_POSITIVE, 1.0);
        let rc = avail.min(c).max(r1);
        let (idle, serial, parallel) = if u / r1 <= d || rc <= r1 {
            ((d - u / r1).max(0.0), u, 0.0)
        } else {
            let p = ((u / r1 - d) / (1.0 / r1 - 1.0 / rc)).clamp(0.0, u);
            (0.0, u - p, p)
        };
        idle + serial + parallel / c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(d: u64, u: u64, cores: u32, host: u32) -> Observation {
        Observation {
            duration_ms: d,
            cpu_ms: u,
            peak_rss_bytes: 100,
            cores_given: cores,
            host_cores: host,
            cpu_window: None,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6 * (1.0 + b.abs())
    }

    fn window(window_ms: u64, others_cpu_ms: u64) -> Option<CpuWindow> {
        Some(CpuWindow {
            window_ms,
            others_cpu_ms,
        })
    }

    #[test]
    fn cores_zero_means_every_core_of_the_host() {
        assert_eq!(workers(0, 8), 8);
        assert_eq!(workers(3, 8), 3);
        assert!(close(effective_cores(16, 8), 8.0));
        assert!(close(effective_cores(0, 0), 1.0));
    }

    #[test]
    fn contention_is_not_mistaken_for_idle() {
        // A serial 1000 ms build on 2 cores while others used 1.5 cores all along: it got
        // half a core and took 2000 ms.
        let o = Observation {
            cpu_window: window(2000, 3000),
            ..obs(2000, 1000, 1, 2)
        };
        assert!(close(o.available_cores(), 0.5));
        assert!(close(o.uncontended_duration_ms(), 1000.0));
        // Unknown load: the host was its own.
        let alone = Observation {
            cpu_window: None,
            ..o
        };
        assert!(close(alone.uncontended_duration_ms(), 2000.0));
    }

    #[test]
    fn an_idle_build_on_a_busy_host_stays_idle() {
        // 300 ms of CPU then 1500 ms of sleep while the others kept the host full. It got
        // 0.6 core in the 500 ms it wanted one; the sleep was not slowed.
        let o = Observation {
            cpu_window: window(500, 700),
            ..obs(2000, 300, 1, 2)
        };
        assert!(close(o.available_cores(), 0.6));
        assert!(close(o.uncontended_duration_ms(), 1800.0));
        // Pure sleep is never deflated.
        let sleep = Observation {
            cpu_window: window(0, 0),
            ..obs(2000, 0, 1, 2)
        };
        assert!(close(sleep.uncontended_duration_ms(), 2000.0));
    }

    #[test]
    fn a_contended_parallel_build() {
        // S = 500, P = 2000 on 2 workers; one competitor left it one core: 2500 ms.
        let o = Observation {
            cpu_window: window(2500, 2500),
            ..obs(2500, 2500, 2, 2)
        };
        assert!(close(o.available_cores(), 1.0));
        // At one available core nothing tells serial from parallel: least-parallel reading.
        assert!(close(o.uncontended_duration_ms(), 2500.0));
        // With 1.5 cores available: serial ran at 1, parallel at 1.5: 500 + 1333 = 1833.
        let o = Observation {
            cpu_window: window(1833, 917),
            ..obs(1833, 2500, 2, 2)
        };
        let d = o.uncontended_duration_ms();
        assert!((d - 1500.0).abs() < 5.0, "{d}");
    }
}
