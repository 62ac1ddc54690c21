//! How the host's cores are shared between running builds that want more than it has.
//!
//! Linux's CFS shares CPU fairly between scheduling groups. Nix 2.8 starts every builder
//! with `setsid()`, and with `CONFIG_SCHED_AUTOGROUP` (on in Debian's and NixOS's
//! kernels) each session is its own group, as is each build's cgroup with `use-cgroups`
//! on newer Nix. So a build running 4 threads next to a single-threaded build gets the
//! same share of a saturated host, not four times as much: max-min fairness between
//! builds ([`CpuShare::PerBuild`]). Where groups are off, CFS is fair per thread and
//! shares are proportional to the threads that want a core ([`CpuShare::PerThread`]).

use serde::{Deserialize, Serialize};

/// The sharing rule, see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CpuShare {
    /// Max-min fair between builds (autogroup, cgroups): the default on Linux.
    #[default]
    PerBuild,
    /// Proportional to the threads each build wants.
    PerThread,
}

/// Fills `rates` with the cores each demand gets out of `capacity`. `demands[i]` is how
/// many cores group `i` could keep busy. Never gives a group more than it wants nor more
/// than `capacity` in total; a group with positive demand gets a positive rate when
/// `capacity` > 0. `scratch` is reused between calls.
pub fn allocate(
    mode: CpuShare,
    capacity: f64,
    demands: &[f64],
    rates: &mut Vec<f64>,
    scratch: &mut Vec<usize>,
) {
    rates.clear();
    let total: f64 = demands.iter().sum();
    if total <= capacity || total <= 0.0 {
        rates.extend_from_slice(demands);
        return;
    }
    match mode {
        CpuShare::PerThread => {
            let f = capacity / total;
            rates.extend(demands.iter().map(|d| d * f));
        }
        CpuShare::PerBuild => {
            // Water-filling: serve groups from the smallest demand up; each gets
            // min(demand, an equal share of what is left).
            rates.resize(demands.len(), 0.0);
            scratch.clear();
            scratch.extend((0..demands.len()).filter(|&i| demands[i] > 0.0));
            scratch.sort_by(|&a, &b| demands[a].total_cmp(&demands[b]));
            let mut left = capacity;
            let mut count = scratch.len();
            for &i in scratch.iter() {
                let fair = left / count as f64;
                let r = demands[i].min(fair);
                rates[i] = r;
                left -= r;
                count -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mode: CpuShare, cap: f64, d: &[f64]) -> Vec<f64> {
        let mut r = Vec::new();
        let mut s = Vec::new();
        allocate(mode, cap, d, &mut r, &mut s);
        r
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn under_capacity_everyone_gets_their_demand() {
        assert_eq!(
            run(CpuShare::PerBuild, 4.0, &[1.0, 2.0, 0.0]),
            vec![1.0, 2.0, 0.0]
        );
    }

    #[test]
    fn per_build_is_max_min_fair() {
        let r = run(CpuShare::PerBuild, 2.0, &[2.0, 1.0, 1.0]);
        assert!(r.iter().all(|x| close(*x, 2.0 / 3.0)), "{r:?}");
        let r = run(CpuShare::PerBuild, 2.0, &[0.5, 4.0, 4.0]);
        assert!(close(r[0], 0.5) && close(r[1], 0.75) && close(r[2], 0.75));
    }

    #[test]
    fn per_thread_is_proportional() {
        let r = run(CpuShare::PerThread, 2.0, &[2.0, 1.0, 1.0]);
        assert!(close(r[0], 1.0) && close(r[1], 0.5));
    }

    #[test]
    fn the_total_never_exceeds_capacity() {
        for mode in [CpuShare::PerBuild, CpuShare::PerThread] {
            let r = run(mode, 3.0, &[5.0, 0.1, 2.0, 7.0]);
            assert!(r.iter().sum::<f64>() <= 3.0 + 1e-9);
            assert!(r.iter().all(|&x| x > 0.0));
        }
    }
}
