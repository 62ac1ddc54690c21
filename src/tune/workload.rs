//! The workload: the derivations to build, their dependencies and profiles, checked
//! once (indices, cycles) so that the simulator and the OOM check can index without
//! checks.

use serde::{Deserialize, Serialize};

use super::error::TuneError;
use super::model::Profile;

/// One derivation to build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The derivation's name (`hello-2.12`).
    pub name: String,
    /// Indices of the jobs that must finish before this one starts. Dependencies that are
    /// already valid (built or substituted) are left out.
    pub deps: Vec<usize>,
    pub profile: Profile,
    /// The key Nix sorts ready goals by: `"<name>.drv$<drv path>"` in Nix 2.8
    /// (`DerivationGoal::key`). `None`: the name and `.drv`, which orders the same except
    /// between equal names.
    pub order_key: Option<String>,
}

impl JobSpec {
    pub fn new(name: impl Into<String>, deps: Vec<usize>, profile: Profile) -> Self {
        JobSpec {
            name: name.into(),
            deps,
            profile,
            order_key: None,
        }
    }
}

/// A checked DAG of jobs with what the simulator needs precomputed.
#[derive(Debug, Clone)]
pub struct Workload {
    jobs: Vec<JobSpec>,
    dependents: Vec<Vec<usize>>,
    topo: Vec<usize>,
    depth: Vec<u32>,
    rank: Vec<u32>,
}

impl Workload {
    /// Checks that every dependency exists and that there is no cycle.
    pub fn new(mut jobs: Vec<JobSpec>) -> Result<Self, TuneError> {
        let n = jobs.len();
        let mut dependents = vec![Vec::new(); n];
        let mut indegree = vec![0usize; n];
        for (i, j) in jobs.iter_mut().enumerate() {
            j.deps.sort_unstable();
            j.deps.dedup();
            for &d in &j.deps {
                if d >= n {
                    return Err(TuneError::UnknownDependency {
                        job: i,
                        name: j.name.clone(),
                        dep: d,
                        len: n,
                    });
                }
                dependents[d].push(i);
                indegree[i] += 1;
            }
        }
        // Kahn's algorithm; what is left over lies on a cycle.
        let mut topo = Vec::with_capacity(n);
        let mut stack: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
        while let Some(i) = stack.pop() {
            topo.push(i);
            for &k in &dependents[i] {
                indegree[k] -= 1;
                if indegree[k] == 0 {
                    stack.push(k);
                }
            }
        }
        if topo.len() != n {
            let name = (0..n)
                .find(|&i| indegree[i] > 0)
                .and_then(|i| jobs.get(i))
                .map(|j| j.name.clone())
                .unwrap_or_default();
            return Err(TuneError::Cycle { name });
        }
        // Depth below the targets (jobs nothing depends on): Nix creates goals
        // breadth-first from the targets, so shallower roots reach a slot first.
        let mut depth = vec![0u32; n];
        for &i in topo.iter().rev() {
            depth[i] = dependents[i]
                .iter()
                .map(|&k| depth[k] + 1)
                .min()
                .unwrap_or(0);
        }
        let mut keys: Vec<(String, usize)> = jobs
            .iter()
            .enumerate()
            .map(|(i, j)| {
                let key = j
                    .order_key
                    .clone()
                    .unwrap_or_else(|| format!("{}.drv", j.name));
                (key, i)
            })
            .collect();
        keys.sort();
        let mut rank = vec![0u32; n];
        for (r, (_, i)) in keys.iter().enumerate() {
            rank[*i] = r as u32;
        }
        Ok(Workload {
            jobs,
            dependents,
            topo,
            depth,
            rank,
        })
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    pub fn jobs(&self) -> &[JobSpec] {
        &self.jobs
    }

    /// Job `i`; `i` must be below [`Workload::len`].
    pub fn job(&self, i: usize) -> &JobSpec {
        &self.jobs[i]
    }

    /// Jobs that depend directly on job `i`.
    pub fn dependents(&self, i: usize) -> &[usize] {
        &self.dependents[i]
    }

    /// A topological order (dependencies first).
    pub fn topo_order(&self) -> &[usize] {
        &self.topo
    }

    /// Shortest distance from job `i` up to a target (0 for a target).
    pub fn depth(&self, i: usize) -> u32 {
        self.depth[i]
    }

    /// Position of job `i` in Nix's goal order (by `order_key`).
    pub fn rank(&self, i: usize) -> u32 {
        self.rank[i]
    }

    /// How many dependency edges the workload has.
    pub fn edges(&self) -> usize {
        self.jobs.iter().map(|j| j.deps.len()).sum()
    }

    /// The same DAG with every profile replaced by `f(i, profile)` (the ETA's
    /// correction).
    pub fn with_profiles(&self, f: impl Fn(usize, &Profile) -> Profile) -> Workload {
        let mut w = self.clone();
        for (i, j) in w.jobs.iter_mut().enumerate() {
            j.profile = f(i, &j.profile);
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Profile {
        Profile::new(0.0, 1.0, 0.0, 0)
    }

    #[test]
    fn an_unknown_dependency_is_rejected() {
        let e = Workload::new(vec![JobSpec::new("a", vec![3], p())]).unwrap_err();
        assert!(matches!(e, TuneError::UnknownDependency { dep: 3, .. }));
        assert!(e.to_string().contains("(a)"), "{e}");
    }

    #[test]
    fn a_cycle_is_rejected() {
        let e = Workload::new(vec![
            JobSpec::new("a", vec![1], p()),
            JobSpec::new("b", vec![0], p()),
        ])
        .unwrap_err();
        assert!(matches!(e, TuneError::Cycle { .. }));
    }

    #[test]
    fn depth_rank_and_order() {
        // top <- mid <- leaf, top <- aleaf
        let w = Workload::new(vec![
            JobSpec::new("top", vec![1, 3, 3], p()),
            JobSpec::new("mid", vec![2], p()),
            JobSpec::new("leaf", vec![], p()),
            JobSpec::new("aleaf", vec![], p()),
        ])
        .unwrap();
        assert_eq!(
            (w.depth(0), w.depth(1), w.depth(2), w.depth(3)),
            (0, 1, 2, 1)
        );
        assert_eq!((w.rank(3), w.rank(2)), (0, 1));
        assert_eq!(w.edges(), 3, "duplicates count once");
        let pos = |i: usize| w.topo_order().iter().position(|&x| x == i).unwrap();
        assert!(pos(2) < pos(1) && pos(1) < pos(0) && pos(3) < pos(0));
    }
}
