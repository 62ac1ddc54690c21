//! OOM risk: can some order of ready builds put more peak RSS running at once than the
//! memory budget allows?
//!
//! Two builds can run at once only if neither depends (transitively) on the other: the
//! builds running at any instant form an *antichain* of the DAG, of at most `max_jobs`
//! builds. Which antichains occur depends on timing (durations vary from run to run, and
//! with them Nix's order), so a setting is called safe only if **every** antichain of at
//! most `max_jobs` builds fits:
//!
//! ```text
//! M(k) = max { Σ_{j∈A} rss_j : A an antichain, |A| ≤ k }      safe(k) ⇔ M(k) ≤ budget
//! ```
//!
//! Each build is charged its peak for its whole run (peaks taken to coincide), which
//! over-estimates: the check errs on the safe side twice.
//!
//! A cheap sound upper bound settles most cases at once:
//!
//! ```text
//! U(k) = max_j ( rss_j + the k−1 largest rss among builds that can overlap j )
//! ```
//!
//! `U(k) ≥ M(k)`, because any antichain through its heaviest member `j` is `j` and `k − 1`
//! builds that each can overlap `j`. If `U(k) ≤ budget` the setting is safe; if not, a
//! maximum-weight branch and bound (heaviest first, cut when the heaviest builds left
//! cannot beat the best found) either finds an antichain over the budget (risky, with it
//! as the witness), or completes with the exact `M(k) ≤ budget` (safe), or runs out of
//! work: then it is reported as unproven and treated as risky, never safe.

use serde::{Deserialize, Serialize};

use super::workload::Workload;

/// Which builds can run at the same time: pairs with no dependency path between them.
#[derive(Debug, Clone)]
pub struct Overlap {
    words: usize,
    /// Row `i`: the bitset of every job `i` depends on, transitively.
    anc: Vec<u64>,
}

impl Overlap {
    /// `O(n²/64)` memory and time: 0.5 MB for 2,000 jobs.
    pub fn new(w: &Workload) -> Overlap {
        let n = w.len();
        let words = n.div_ceil(64).max(1);
        let mut anc = vec![0u64; n * words];
        for &i in w.topo_order() {
            for &d in &w.job(i).deps {
                for k in 0..words {
                    let v = anc[d * words + k];
                    anc[i * words + k] |= v;
                }
                anc[i * words + d / 64] |= 1u64 << (d % 64);
            }
        }
        Overlap { words, anc }
    }

    fn depends(&self, i: usize, on: usize) -> bool {
        self.anc[i * self.words + on / 64] & (1u64 << (on % 64)) != 0
    }

    /// True when jobs `i` and `j` (distinct) can run at the same time.
    pub fn can_overlap(&self, i: usize, j: usize) -> bool {
        i != j && !self.depends(i, j) && !self.depends(j, i)
    }
}

/// The answer for one `max_jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum OomVerdict {
    /// Every antichain of at most `max_jobs` builds fits. `worst_bytes` is the largest
    /// such sum, or an upper bound of it (`exact` says which).
    Safe { worst_bytes: u64, exact: bool },
    /// These builds can run at once and together exceed the budget.
    Risky { witness: Vec<usize>, bytes: u64 },
    /// The search ran out of work before deciding: treated as risky.
    Unproven { upper_bound_bytes: u64 },
}

impl OomVerdict {
    pub fn is_safe(&self) -> bool {
        matches!(self, OomVerdict::Safe { .. })
    }

    /// The most memory builds may need at once under this setting, as far as known: the
    /// worst case when safe, the witness when risky, the bound when unproven.
    pub fn worst_bytes(&self) -> u64 {
        match self {
            OomVerdict::Safe { worst_bytes, .. } => *worst_bytes,
            OomVerdict::Risky { bytes, .. } => *bytes,
            OomVerdict::Unproven { upper_bound_bytes } => *upper_bound_bytes,
        }
    }
}

/// Precomputed per-job overlap lists for answering many `k` quickly.
#[derive(Debug, Clone)]
pub struct OomChecker {
    rss: Vec<u64>,
    /// Jobs with rss > 0, heaviest first.
    order: Vec<usize>,
    /// For each job in `order`, the rss of the heaviest jobs that can overlap it,
    /// heaviest first, at most `kmax − 1` of them.
    companions: Vec<Vec<u64>>,
    overlap: Overlap,
    kmax: usize,
}

/// Work units (candidate checks) the exact search may spend per question.
pub const SEARCH_BUDGET: usize = 2_000_000;

impl OomChecker {
    /// `rss[i]` is job `i`'s peak RSS; `kmax` the largest `max_jobs` that will be asked
    /// about.
    pub fn new(w: &Workload, rss: Vec<u64>, kmax: usize) -> OomChecker {
        let overlap = Overlap::new(w);
        let weight = |i: usize| rss.get(i).copied().unwrap_or(0);
        let mut order: Vec<usize> = (0..w.len()).filter(|&i| weight(i) > 0).collect();
        order.sort_by(|&a, &b| weight(b).cmp(&weight(a)).then(a.cmp(&b)));
        let keep = kmax.saturating_sub(1);
        let companions = order
            .iter()
            .map(|&j| {
                // `order` is heaviest first: the first `keep` that overlap are the top.
                order
                    .iter()
                    .filter(|&&i| overlap.can_overlap(i, j))
                    .take(keep)
                    .map(|&i| weight(i))
                    .collect()
            })
            .collect();
        OomChecker {
            rss,
            order,
            companions,
            overlap,
            kmax,
        }
    }

    fn weight(&self, i: usize) -> u64 {
        self.rss.get(i).copied().unwrap_or(0)
    }

    /// The sound upper bound `U(k)` of the module docs.
    pub fn upper_bound(&self, k: usize) -> u64 {
        if k == 0 {
            return 0;
        }
        let take = k.min(self.kmax).saturating_sub(1);
        self.order
            .iter()
            .zip(&self.companions)
            .map(|(&j, c)| {
                self.weight(j)
                    .saturating_add(c.iter().take(take).sum::<u64>())
            })
            .max()
            .unwrap_or(0)
    }

    /// Decides whether `max_jobs = k` can exceed `budget` bytes.
    pub fn verdict(&self, k: usize, budget: u64) -> OomVerdict {
        let ub = self.upper_bound(k);
        if ub <= budget {
            return OomVerdict::Safe {
                worst_bytes: ub,
                exact: false,
            };
        }
        let mut s = Search {
            c: self,
            k,
            budget,
            work: 0,
            chosen: Vec::new(),
            found: None,
            best: 0,
        };
        s.dfs(0, 0);
        match s.found {
            Some(witness) => {
                let bytes = witness.iter().map(|&j| self.weight(j)).sum();
                OomVerdict::Risky { witness, bytes }
            }
            None if s.work > SEARCH_BUDGET => OomVerdict::Unproven {
                upper_bound_bytes: ub,
            },
            None => OomVerdict::Safe {
                worst_bytes: s.best,
                exact: true,
            },
        }
    }
}

struct Search<'a> {
    c: &'a OomChecker,
    k: usize,
    budget: u64,
    work: usize,
    /// Positions in `order` of the antichain being extended.
    chosen: Vec<usize>,
    found: Option<Vec<usize>>,
    /// Largest sum of an antichain seen: the exact maximum when the search completes.
    best: u64,
}

impl Search<'_> {
    /// Branch and bound for the heaviest antichain of at most `k` jobs, extending
    /// `chosen` with jobs from `order[pos..]`. Stops at the first set over the budget.
    fn dfs(&mut self, pos: usize, sum: u64) {
        self.best = self.best.max(sum);
        if sum > self.budget {
            self.found = Some(self.chosen.iter().map(|&p| self.c.order[p]).collect());
            return;
        }
        let need = self.k - self.chosen.len();
        if need == 0 {
            return;
        }
        let order = &self.c.order;
        for p in pos..order.len() {
            if self.found.is_some() || self.work > SEARCH_BUDGET {
                return;
            }
            // Optimistic completion: this job and the next need−1 heaviest after it.
            // Sorted heaviest first, so once it cannot beat the best, no later start can.
            let optimistic: u64 = order[p..]
                .iter()
                .take(need)
                .map(|&j| self.c.weight(j))
                .sum();
            if sum.saturating_add(optimistic) <= self.best {
                return;
            }
            self.work += self.chosen.len() + 1;
            let j = order[p];
            if self
                .chosen
                .iter()
                .all(|&q| self.c.overlap.can_overlap(order[q], j))
            {
                self.chosen.push(p);
                self.dfs(p + 1, sum + self.c.weight(j));
                self.chosen.pop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::model::Profile;
    use crate::tune::workload::JobSpec;

    fn job(name: &str, deps: Vec<usize>) -> JobSpec {
        JobSpec::new(name, deps, Profile::new(1.0, 0.0, 0.0, 0))
    }

    /// Exhaustive M(k) for small graphs.
    fn brute(w: &Workload, rss: &[u64], k: usize) -> u64 {
        let o = Overlap::new(w);
        let n = w.len();
        let mut best = 0;
        for mask in 0u32..(1 << n) {
            let set: Vec<usize> = (0..n).filter(|&i| mask & (1 << i) != 0).collect();
            if set.len() > k {
                continue;
            }
            let antichain = set
                .iter()
                .all(|&a| set.iter().all(|&b| a == b || o.can_overlap(a, b)));
            if antichain {
                best = best.max(set.iter().map(|&i| rss[i]).sum());
            }
        }
        best
    }

    #[test]
    fn a_chain_never_overlaps() {
        let w =
            Workload::new(vec![job("a", vec![]), job("b", vec![0]), job("c", vec![1])]).unwrap();
        let c = OomChecker::new(&w, vec![600, 600, 600], 8);
        assert_eq!(c.upper_bound(8), 600);
        assert!(c.verdict(8, 600).is_safe());
    }

    #[test]
    fn independent_builds_add_up() {
        let w = Workload::new((0..4).map(|i| job(&format!("m{i}"), vec![])).collect()).unwrap();
        let c = OomChecker::new(&w, vec![600; 4], 8);
        assert!(c.verdict(2, 1300).is_safe());
        match c.verdict(4, 1300) {
            OomVerdict::Risky { witness, bytes } => {
                assert_eq!(witness.len(), 3);
                assert_eq!(bytes, 1800);
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn the_exact_search_beats_the_bound() {
        // b and c never overlap (c depends on b); a overlaps both: M(3) = a + b.
        let w = Workload::new(vec![job("a", vec![]), job("b", vec![]), job("c", vec![1])]).unwrap();
        let c = OomChecker::new(&w, vec![500, 500, 500], 8);
        assert_eq!(c.upper_bound(3), 1500);
        assert_eq!(
            c.verdict(3, 1200),
            OomVerdict::Safe {
                worst_bytes: 1000,
                exact: true
            }
        );
    }

    #[test]
    fn it_agrees_with_brute_force() {
        let mut seed = 12345u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for _ in 0..200 {
            let n = 2 + rnd() % 9;
            let jobs: Vec<JobSpec> = (0..n)
                .map(|i| {
                    let deps = (0..i).filter(|_| rnd() % 4 == 0).collect();
                    job(&format!("j{i}"), deps)
                })
                .collect();
            let w = Workload::new(jobs).unwrap();
            let rss: Vec<u64> = (0..n).map(|_| (rnd() % 8) as u64 * 100).collect();
            let c = OomChecker::new(&w, rss.clone(), 6);
            for k in 1..=6 {
                let m = brute(&w, &rss, k);
                assert!(c.upper_bound(k) >= m);
                for budget in [m.saturating_sub(1), m] {
                    let v = c.verdict(k, budget);
                    assert_eq!(
                        v.is_safe(),
                        m <= budget,
                        "k={k} budget={budget} m={m} {v:?}"
                    );
                    if let OomVerdict::Risky { witness, bytes } = &v {
                        assert!(witness.len() <= k && *bytes > budget);
                    }
                    if let OomVerdict::Safe {
                        worst_bytes,
                        exact: true,
                    } = v
                    {
                        assert_eq!(worst_bytes, m);
                    }
                }
            }
        }
    }
}
