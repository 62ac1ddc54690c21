//! The resource model of one derivation: how its build time and CPU demand change with
//! the `cores` it is given, fitted from what the ledger measured.
//!
//! A build is split into three parts (an Amdahl model with an idle term):
//!
//! * `idle_ms`: wall time that uses no CPU (sleeping, waiting on I/O or the network); it
//!   takes as long whatever the cores or the load;
//! * `serial_cpu_ms`: CPU work done by one thread at a time;
//! * `parallel_cpu_ms`: CPU work split over the `NIX_BUILD_CORES` workers.
//!
//! Alone on a host with `H` cores and given `cores = c` it starts `w` workers
//! ([`workers`]) and takes
//!
//! ```text
//! duration(c) = idle + serial + parallel / min(w, H)        cpu(c) = serial + parallel
//! ```
//!
//! The ledger gives, per build, `d` (duration, brought back to what it would have been
//! alone: [`Observation::uncontended_duration_ms`]), `u` (user + system CPU time), the
//! peak RSS and the cores setting of its session. From these:
//!
//! * builds of one name under at least two distinct effective cores: a least-squares fit
//!   of `d = A + P / c` (slope = parallel work, intercept `A = idle + serial`), with
//!   `serial = mean(u) − P` and `idle = A − serial`, each clamped to ≥ 0;
//! * builds under a single effective cores value `c` (medians of `d` and `u`): only the
//!   achieved parallelism `u / d` is identifiable. We take the *least parallel* reading
//!   consistent with it: `idle = max(0, d − u)`; what is left of `d` is CPU time, and the
//!   CPU time beyond one core's worth is parallel: `parallel = (u − (d − idle)) · c /
//!   (c − 1)` (0 when `c = 1`), `serial = u − parallel`. So a build seen only at
//!   `cores = 1` is predicted to gain nothing from more cores ([`Basis::SingleSetting`]
//!   says so).
//!
//! Peak RSS is the maximum observed, independent of cores: one setting cannot tell how
//! memory grows with workers, and the maximum errs on the safe side for the OOM check.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub use super::observe::{effective_cores, workers, CpuWindow, Observation};

/// What a derivation's build needs, independent of the cores it will be given.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Wall time with no CPU use (sleep, I/O).
    pub idle_ms: f64,
    /// CPU work of one thread.
    pub serial_cpu_ms: f64,
    /// CPU work split over the workers.
    pub parallel_cpu_ms: f64,
    /// Peak resident memory.
    pub peak_rss_bytes: u64,
}

impl Profile {
    /// A profile with every part clamped to be finite and non-negative, so that the
    /// simulator never has to guard against NaN or negative work.
    pub fn new(idle_ms: f64, serial_cpu_ms: f64, parallel_cpu_ms: f64, rss: u64) -> Self {
        Profile {
            idle_ms: non_negative(idle_ms),
            serial_cpu_ms: non_negative(serial_cpu_ms),
            parallel_cpu_ms: non_negative(parallel_cpu_ms),
            peak_rss_bytes: rss,
        }
    }

    /// Wall time alone on the host with `cores` (0 = all).
    pub fn duration_ms(&self, cores: u32, host_cores: u32) -> f64 {
        self.idle_ms
            + self.serial_cpu_ms
            + self.parallel_cpu_ms / effective_cores(cores, host_cores)
    }

    /// Total CPU time; the model takes it not to depend on cores.
    pub fn cpu_ms(&self) -> f64 {
        self.serial_cpu_ms + self.parallel_cpu_ms
    }

    /// The same build with its CPU work multiplied by `factor` and its idle time
    /// unchanged (the ETA's correction: load slows CPU work, not sleeps or downloads).
    pub fn scaled_cpu(&self, factor: f64) -> Self {
        let f = non_negative(factor);
        Profile::new(
            self.idle_ms,
            self.serial_cpu_ms * f,
            self.parallel_cpu_ms * f,
            self.peak_rss_bytes,
        )
    }
}

fn non_negative(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x
    } else {
        0.0
    }
}

/// Where a derivation's profile came from: the first two are measurements of this very
/// name; the others are estimates, which `tune` counts and reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Basis {
    /// Fitted from builds under at least two distinct effective cores values.
    Fitted {
        observations: usize,
        distinct_cores: usize,
    },
    /// Builds under one cores value only: serial and parallel split by the
    /// least-parallel reading (see the module docs).
    SingleSetting { observations: usize, cores: f64 },
    /// No measured build of this name; fitted from the builds of names that are the same
    /// once the version is stripped (`hello-2.12` for `hello-2.13`).
    SameName { pname: String, observations: usize },
    /// Only durations are known (builds the hook alone recorded, or too short for the
    /// wrapper's sampler): all of it taken as one core's work; the largest known peak
    /// RSS, or for builds under [`SHORT_MS`] a typical one.
    TimeOnly { observations: usize },
    /// Nothing known: the conservative default of [`DefaultPolicy`].
    Default,
}

impl Basis {
    /// True when the profile was not measured on this name itself.
    pub fn is_estimated(&self) -> bool {
        !matches!(self, Basis::Fitted { .. } | Basis::SingleSetting { .. })
    }
}

/// A profile and how much to trust it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub profile: Profile,
    pub basis: Basis,
}

/// Fits a profile to the builds of one derivation name; `None` when there are none.
pub fn fit(obs: &[Observation]) -> Option<(Profile, Basis)> {
    if obs.is_empty() {
        return None;
    }
    let rss = obs.iter().map(|o| o.peak_rss_bytes).max().unwrap_or(0);
    let mut cs: Vec<f64> = obs.iter().map(Observation::effective_cores).collect();
    cs.sort_by(f64::total_cmp);
    cs.dedup();
    if cs.len() >= 2 {
        let basis = Basis::Fitted {
            observations: obs.len(),
            distinct_cores: cs.len(),
        };
        return Some((fit_several(obs, rss), basis));
    }
    let c = cs.first().copied().unwrap_or(1.0);
    let d = median(obs.iter().map(Observation::uncontended_duration_ms));
    let u = median(obs.iter().map(|o| o.cpu_ms as f64));
    let basis = Basis::SingleSetting {
        observations: obs.len(),
        cores: c,
    };
    Some((fit_single(d, u, c, rss), basis))
}

/// The least-parallel reading of one (duration, CPU, cores) point; see the module docs.
fn fit_single(d: f64, u: f64, c: f64, rss: u64) -> Profile {
    let d = non_negative(d);
    // More CPU than c cores can give in d is measurement noise.
    let u = non_negative(u).min(d * c);
    let idle = (d - u).max(0.0);
    let parallel = if c > 1.0 {
        ((u - (d - idle)) * c / (c - 1.0)).max(0.0)
    } else {
        0.0
    };
    let serial = (u - parallel).max(0.0);
    Profile::new(idle, serial, parallel, rss)
}

/// Least squares of `d = A + P · (1/c)` over the observations.
fn fit_several(obs: &[Observation], rss: u64) -> Profile {
    let n = obs.len() as f64;
    let xs: Vec<f64> = obs.iter().map(|o| 1.0 / o.effective_cores()).collect();
    let ds: Vec<f64> = obs
        .iter()
        .map(Observation::uncontended_duration_ms)
        .collect();
    let mx = xs.iter().sum::<f64>() / n;
    let md = ds.iter().sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let sxd: f64 = xs.iter().zip(&ds).map(|(x, d)| (x - mx) * (d - md)).sum();
    let mean_u = obs.iter().map(|o| o.cpu_ms as f64).sum::<f64>() / n;
    let slope = if sxx > 0.0 { sxd / sxx } else { 0.0 };
    let parallel = slope.clamp(0.0, mean_u);
    let intercept = md - parallel * mx;
    let serial = (mean_u - parallel).max(0.0);
    let idle = (intercept - serial).max(0.0);
    Profile::new(idle, serial, parallel, rss)
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The name without its version, as Nix's `parseDrvName` splits it
/// ([`crate::nix::name`]): the history a derivation never measured borrows from.
/// `hello-2.12.1` → `hello`, `python3.11-requests-2.31.0` → `python3.11-requests`.
pub fn pname(name: &str) -> &str {
    crate::nix::name::parse_drv_name(name).name
}

/// Builds shorter than this whose memory nobody measured (the wrapper samples every
/// 200 ms) are charged a typical peak RSS rather than the largest known: charged the
/// largest, every config file and wrapper script of a system build would look like its
/// compiler to the OOM check, and make it refuse any parallelism.
pub const SHORT_MS: f64 = 1000.0;

/// The guess for a derivation nothing is known about. Conservative on both axes: slow
/// (a high percentile of known durations, all of it one core's work, so that it
/// competes for a core the whole time) and big (the largest peak RSS known).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DefaultPolicy {
    pub duration_ms: f64,
    pub peak_rss_bytes: u64,
    /// The upper quartile of known peak RSS: for short builds of unknown memory.
    pub typical_rss_bytes: u64,
}

impl DefaultPolicy {
    /// With an empty ledger: a minute of one core and 1 GiB.
    pub const EMPTY_LEDGER: DefaultPolicy = DefaultPolicy {
        duration_ms: 60_000.0,
        peak_rss_bytes: 1 << 30,
        typical_rss_bytes: 1 << 30,
    };

    /// The 75th percentile of known durations, the largest known peak RSS and its
    /// upper quartile.
    pub fn from_history(h: &History) -> DefaultPolicy {
        let mut ds: Vec<f64> = h
            .by_name
            .values()
            .flatten()
            .map(|o| o.duration_ms as f64)
            .chain(h.durations_only.values().flatten().map(|d| *d as f64))
            .collect();
        if ds.is_empty() {
            return DefaultPolicy::EMPTY_LEDGER;
        }
        ds.sort_by(f64::total_cmp);
        let mut rss: Vec<u64> = h
            .by_name
            .values()
            .flatten()
            .map(|o| o.peak_rss_bytes)
            .collect();
        rss.sort_unstable();
        let q3 = |n: usize| ((n.saturating_sub(1)) as f64 * 0.75).round() as usize;
        let empty = DefaultPolicy::EMPTY_LEDGER;
        DefaultPolicy {
            duration_ms: ds[q3(ds.len()).min(ds.len() - 1)],
            peak_rss_bytes: rss.last().copied().unwrap_or(empty.peak_rss_bytes),
            typical_rss_bytes: rss
                .get(q3(rss.len()))
                .copied()
                .unwrap_or(empty.typical_rss_bytes),
        }
    }

    pub fn profile(&self) -> Profile {
        Profile::new(0.0, self.duration_ms, 0.0, self.peak_rss_bytes)
    }
}

/// The ledger's builds grouped by derivation name, for fitting.
#[derive(Debug, Clone, Default)]
pub struct History {
    by_name: HashMap<String, Vec<Observation>>,
    /// Builds with a duration but no CPU time or memory (recorded by the hook alone).
    durations_only: HashMap<String, Vec<u64>>,
}

impl History {
    pub fn new() -> Self {
        History::default()
    }

    pub fn add(&mut self, name: &str, obs: Observation) {
        self.by_name.entry(name.to_owned()).or_default().push(obs);
    }

    /// A build of which only the duration is known.
    pub fn add_duration(&mut self, name: &str, duration_ms: u64) {
        self.durations_only
            .entry(name.to_owned())
            .or_default()
            .push(duration_ms);
    }

    pub fn observations(&self, name: &str) -> &[Observation] {
        self.by_name.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The profile of `name`: its own measured builds, else those of every name with the
    /// same version-stripped name, else its own durations, else `default`.
    pub fn estimate(&self, name: &str, default: &DefaultPolicy) -> Estimate {
        if let Some((profile, basis)) = fit(self.observations(name)) {
            return Estimate { profile, basis };
        }
        let p = pname(name);
        let pooled: Vec<Observation> = self
            .by_name
            .iter()
            .filter(|(n, _)| pname(n) == p)
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        if let Some((profile, _)) = fit(&pooled) {
            let basis = Basis::SameName {
                pname: p.to_owned(),
                observations: pooled.len(),
            };
            return Estimate { profile, basis };
        }
        if let Some(ds) = self.durations_only.get(name).filter(|d| !d.is_empty()) {
            let d = median(ds.iter().map(|d| *d as f64));
            let rss = if d < SHORT_MS {
                default.typical_rss_bytes
            } else {
                default.peak_rss_bytes
            };
            return Estimate {
                profile: Profile::new(0.0, d, 0.0, rss),
                basis: Basis::TimeOnly {
                    observations: ds.len(),
                },
            };
        }
        Estimate {
            profile: default.profile(),
            basis: Basis::Default,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(d: u64, u: u64, cores: u32) -> Observation {
        Observation {
            duration_ms: d,
            cpu_ms: u,
            peak_rss_bytes: 100,
            cores_given: cores,
            host_cores: 4,
            cpu_window: None,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6 * (1.0 + b.abs())
    }

    #[test]
    fn a_serial_build_at_one_core_is_all_serial() {
        let (p, basis) = fit(&[obs(1000, 1000, 1)]).unwrap();
        assert!(close(p.serial_cpu_ms, 1000.0));
        assert!(close(p.parallel_cpu_ms, 0.0) && close(p.idle_ms, 0.0));
        assert!(matches!(basis, Basis::SingleSetting { .. }));
        assert!(close(p.duration_ms(4, 4), 1000.0));
    }

    #[test]
    fn a_sleeping_build_is_idle() {
        let (p, _) = fit(&[obs(2000, 0, 4)]).unwrap();
        assert!(close(p.idle_ms, 2000.0) && close(p.cpu_ms(), 0.0));
        assert!(close(p.duration_ms(1, 4), 2000.0));
    }

    #[test]
    fn one_parallel_observation_round_trips() {
        // 500 ms serial + 2000 ms parallel over 4 cores: d = 1000, u = 2500.
        let (p, _) = fit(&[obs(1000, 2500, 4)]).unwrap();
        assert!(close(p.duration_ms(4, 4), 1000.0));
        assert!(close(p.cpu_ms(), 2500.0));
        // Least-parallel reading: P = (2500 - 1000) * 4/3 = 2000, S = 500.
        assert!(close(p.parallel_cpu_ms, 2000.0) && close(p.serial_cpu_ms, 500.0));
        assert!(close(p.duration_ms(1, 4), 2500.0));
        // cores = 0 is the host's cores.
        let (p, _) = fit(&[obs(1000, 2500, 0)]).unwrap();
        assert!(close(p.duration_ms(0, 4), 1000.0));
        assert!(close(p.duration_ms(4, 4), 1000.0));
    }

    #[test]
    fn several_settings_recover_amdahl() {
        let truth = Profile::new(300.0, 200.0, 1200.0, 100);
        let o: Vec<Observation> = [1u32, 2, 4]
            .iter()
            .map(|&c| obs(truth.duration_ms(c, 4).round() as u64, 1400, c))
            .collect();
        let (p, basis) = fit(&o).unwrap();
        assert!(matches!(
            basis,
            Basis::Fitted {
                distinct_cores: 3,
                ..
            }
        ));
        assert!((p.parallel_cpu_ms - 1200.0).abs() < 1.0, "{p:?}");
        assert!((p.serial_cpu_ms - 200.0).abs() < 1.0, "{p:?}");
        assert!((p.idle_ms - 300.0).abs() < 1.0, "{p:?}");
    }

    #[test]
    fn a_fit_is_never_negative() {
        // Noisy: more CPU than the cores allow, shorter at fewer cores.
        let (p, _) = fit(&[obs(1000, 9000, 2), obs(900, 100, 4)]).unwrap();
        assert!(p.idle_ms >= 0.0 && p.serial_cpu_ms >= 0.0 && p.parallel_cpu_ms >= 0.0);
        let p = Profile::new(f64::NAN, -1.0, f64::INFINITY, 0);
        assert_eq!(
            (p.idle_ms, p.serial_cpu_ms, p.parallel_cpu_ms),
            (0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn pname_strips_versions() {
        assert_eq!(pname("hello-2.12.1"), "hello");
        assert_eq!(pname("python3.11-requests-2.31.0"), "python3.11-requests");
        assert_eq!(pname("gcc-wrapper"), "gcc-wrapper");
        assert_eq!(pname("par-1"), "par");
        assert_eq!(pname("x"), "x");
        assert_eq!(pname("trailing-"), "trailing-");
    }

    #[test]
    fn history_falls_back_to_the_same_name_then_durations_then_the_default() {
        let mut h = History::new();
        h.add("hello-2.12", obs(1000, 1000, 1));
        h.add_duration("zlib-1.3", 700);
        h.add_duration("gcc-13", 90_000);
        let d = DefaultPolicy::from_history(&h);
        let e = h.estimate("hello-2.13", &d);
        assert!(matches!(e.basis, Basis::SameName { .. }));
        assert!(e.basis.is_estimated());
        let e = h.estimate("zlib-1.3", &d);
        assert_eq!(e.basis, Basis::TimeOnly { observations: 1 });
        assert!(close(e.profile.serial_cpu_ms, 700.0) && e.basis.is_estimated());
        // Too short to have been sampled: a typical memory; long: the largest.
        assert_eq!(e.profile.peak_rss_bytes, d.typical_rss_bytes);
        let e = h.estimate("gcc-13", &d);
        assert_eq!(e.profile.peak_rss_bytes, d.peak_rss_bytes);
        let e = h.estimate("bzip2-1.0", &d);
        assert_eq!(e.basis, Basis::Default);
        assert!(close(e.profile.serial_cpu_ms, d.duration_ms));
        assert!(!h.estimate("hello-2.12", &d).basis.is_estimated());
    }

    #[test]
    fn the_default_policy_is_conservative() {
        let mut h = History::new();
        for (i, d) in [100u64, 200, 300, 400, 5000].iter().enumerate() {
            let o = Observation {
                peak_rss_bytes: 10 * (i as u64 + 1),
                ..obs(*d, *d, 1)
            };
            h.add(&format!("p{i}"), o);
        }
        let d = DefaultPolicy::from_history(&h);
        assert!(d.duration_ms >= 400.0);
        assert_eq!((d.peak_rss_bytes, d.typical_rss_bytes), (50, 40));
        assert_eq!(
            DefaultPolicy::from_history(&History::new()),
            DefaultPolicy::EMPTY_LEDGER
        );
    }
}
