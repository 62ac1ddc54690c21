//! The critical path: the longest chain of dependencies, each build taking its
//! uncontended duration at the given cores plus the loop's per-build cost. No setting
//! finishes the workload sooner, so it is both the limit `tune` shows and a lower bound
//! of the ETA.

use serde::{Deserialize, Serialize};

use super::sim::SimParams;
use super::workload::Workload;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriticalPath {
    /// Job indices, dependencies first.
    pub jobs: Vec<usize>,
    /// Length including `startup_ms` and the per-build loop costs.
    pub length_ms: f64,
}

/// The longest path through the DAG under `p.cores` on `p.host_cores`, over the jobs for
/// which `duration(i)` is known (the ETA passes the jobs not done yet, running ones
/// with what is left of them).
pub fn critical_path(
    w: &Workload,
    p: &SimParams,
    duration: impl Fn(usize) -> Option<f64>,
) -> CriticalPath {
    let n = w.len();
    let per_build = p.hook_ms + p.loop_ms_per_build;
    let mut finish = vec![0.0f64; n];
    let mut prev: Vec<Option<usize>> = vec![None; n];
    let mut included = vec![false; n];
    for &i in w.topo_order() {
        let Some(d) = duration(i) else { continue };
        included[i] = true;
        let mut start = 0.0;
        for &dep in &w.job(i).deps {
            if included[dep] && finish[dep] > start {
                start = finish[dep];
                prev[i] = Some(dep);
            }
        }
        finish[i] = start + d.max(0.0) + per_build;
    }
    let end = (0..n)
        .filter(|&i| included[i])
        .max_by(|&a, &b| finish[a].total_cmp(&finish[b]));
    let mut jobs = Vec::new();
    let mut cur = end;
    while let Some(i) = cur {
        jobs.push(i);
        cur = prev[i];
    }
    jobs.reverse();
    let length_ms = end.map(|i| finish[i]).unwrap_or(0.0) + p.startup_ms;
    CriticalPath { jobs, length_ms }
}

/// The critical path of the whole workload with uncontended durations.
pub fn whole(w: &Workload, p: &SimParams) -> CriticalPath {
    critical_path(w, p, |i| {
        Some(w.job(i).profile.duration_ms(p.cores, p.host_cores))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::model::Profile;
    use crate::tune::workload::JobSpec;

    #[test]
    fn the_longest_chain_wins() {
        let cpu = |ms| Profile::new(0.0, ms, 0.0, 0);
        let w = Workload::new(vec![
            JobSpec::new("a", vec![], cpu(100.0)),
            JobSpec::new("b", vec![0], cpu(100.0)),
            JobSpec::new("c", vec![], cpu(150.0)),
            JobSpec::new("top", vec![1, 2], cpu(10.0)),
        ])
        .unwrap();
        let mut p = SimParams::new(1, 1, 1);
        p.loop_ms_per_build = 1.0;
        let cp = whole(&w, &p);
        assert_eq!(cp.jobs, vec![0, 1, 3]);
        assert!((cp.length_ms - 213.0).abs() < 1e-9);
    }

    #[test]
    fn parallel_jobs_shorten_with_cores() {
        let w = Workload::new(vec![JobSpec::new(
            "p",
            vec![],
            Profile::new(0.0, 0.0, 400.0, 0),
        )])
        .unwrap();
        assert!((whole(&w, &SimParams::new(1, 4, 4)).length_ms - 100.0).abs() < 1e-9);
        assert!((whole(&w, &SimParams::new(1, 1, 4)).length_ms - 400.0).abs() < 1e-9);
    }
}
