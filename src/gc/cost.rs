//! What getting a deleted build back would cost.
//!
//! - A build a configured binary cache has: downloading it, its size ÷ the download rate
//!   the wrapper's sessions measured (10 MiB/s when none did; said so).
//! - Otherwise rebuilding it: what the ledger recorded for the build that produced it,
//!   else what builds of the same name usually take, else unknown, which is treated as
//!   costly (it sorts last and `--keep-costlier-than` keeps it).
//! - `.drv` files, sources (added by evaluation) and invalid leftovers: nothing; the next
//!   evaluation makes them again.
//!
//! Which paths the caches have is asked once per cache for all paths at once, bounded in
//! time (an unreachable cache makes the answer "unknown", i.e. "rebuild"), and the
//! answers are kept in the ledger for a day.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::snapshot::Snapshot;
use crate::ledger::Ledger;
use crate::nix::config::NixSettings;
use crate::nix::store_path::path_name;
use crate::nix::substituters;
use crate::store::graph::Origin;
use crate::store::units::Unit;
use crate::time::now_ms;
use crate::Result;

/// The download rate assumed when the ledger measured none: 10 MiB/s.
pub const DEFAULT_DOWNLOAD_RATE: f64 = 10.0 * 1024.0 * 1024.0;
/// How long a cache's answer is believed.
pub const CACHE_ANSWER_TTL_MS: i64 = 24 * 3600 * 1000;
/// How long asking all caches may take in all.
pub const CACHE_QUERY_LIMIT: Duration = Duration::from_secs(60);

/// What a cost is based on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Basis {
    /// The ledger's record of the build that produced it.
    Build,
    /// What builds of the same name usually take.
    Name,
    /// A binary cache has it: the download time.
    Download,
    /// A .drv, a source or a leftover: made again by evaluation, for nothing.
    Source,
    /// Nothing known: treated as costly.
    Unknown,
}

impl Basis {
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Build => "build",
            Basis::Name => "name",
            Basis::Download => "download",
            Basis::Source => "source",
            Basis::Unknown => "unknown",
        }
    }
}

/// The cost of getting one unit back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cost {
    /// Milliseconds; `None` when unknown.
    pub ms: Option<i64>,
    pub basis: Basis,
}

impl Cost {
    /// Whether this cost counts as more than `limit_ms`: unknown always does.
    pub fn exceeds(&self, limit_ms: i64) -> bool {
        self.ms.is_none_or(|ms| ms > limit_ms)
    }

    /// Whether it cannot be fetched back (it would be rebuilt).
    pub fn is_rebuild(&self) -> bool {
        matches!(self.basis, Basis::Build | Basis::Name | Basis::Unknown)
    }
}

/// Prices units against the ledger and the caches' answers.
pub struct Pricing<'l> {
    ledger: &'l Ledger,
    /// Bytes per second.
    pub rate: f64,
    pub rate_measured: bool,
    /// Paths some cache has.
    cached: HashSet<String>,
    /// Whether the ledger has any build at all (else no lookup can answer).
    has_builds: bool,
    by_output: RefCell<HashMap<u32, Option<i64>>>,
    by_name: RefCell<HashMap<String, Option<i64>>>,
    /// Caches that could not be asked, with why.
    pub unreachable: Vec<String>,
}

impl<'l> Pricing<'l> {
    /// Prices for `candidates` (valid path indices): their caches' answers from the
    /// ledger, and when `ask` from the caches themselves for what the ledger does not
    /// know (then remembered).
    pub fn new(
        ledger: &'l mut Ledger,
        snap: &Snapshot,
        settings: &NixSettings,
        candidates: &[u32],
        ask: bool,
    ) -> Result<Pricing<'l>> {
        let wanted: Vec<String> = candidates
            .iter()
            .filter(|&&i| {
                !matches!(
                    snap.graph.origin[i as usize],
                    Origin::Derivation | Origin::Source
                )
            })
            .map(|&i| snap.graph.path(i))
            .collect();
        let refs: Vec<&str> = wanted.iter().map(String::as_str).collect();
        let mut cached = HashSet::new();
        let mut unreachable = Vec::new();
        let deadline = std::time::Instant::now() + CACHE_QUERY_LIMIT;
        for url in settings.active_substituters() {
            let known = ledger.cache_answers(url, &refs, now_ms() - CACHE_ANSWER_TTL_MS)?;
            cached.extend(known.iter().filter(|(_, &has)| has).map(|(p, _)| p.clone()));
            if !ask {
                continue;
            }
            let missing: Vec<&str> = refs
                .iter()
                .copied()
                .filter(|p| !known.contains_key(*p))
                .collect();
            if missing.is_empty() {
                continue;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let answers = substituters::query(url, &missing, left);
            cached.extend(
                answers
                    .has
                    .iter()
                    .filter(|(_, &has)| has)
                    .map(|(p, _)| p.clone()),
            );
            ledger.store_cache_answers(url, &answers.has)?;
            if let Some(e) = answers.stopped {
                unreachable.push(format!(
                    "{url}: {e} ({} of {} paths answered)",
                    answers.has.len(),
                    missing.len()
                ));
            }
        }
        let measured = ledger.download_rate()?;
        let has_builds = ledger.has_builds()?;
        Ok(Pricing {
            ledger,
            rate: measured.unwrap_or(DEFAULT_DOWNLOAD_RATE),
            rate_measured: measured.is_some(),
            cached,
            has_builds,
            by_output: RefCell::new(HashMap::new()),
            by_name: RefCell::new(HashMap::new()),
            unreachable,
        })
    }

    /// Whether some cache has valid path `i`.
    pub fn substitutable(&self, snap: &Snapshot, i: u32) -> bool {
        !self.cached.is_empty() && self.cached.contains(&snap.graph.path(i))
    }

    fn output_ms(&self, snap: &Snapshot, i: u32) -> Result<Option<i64>> {
        if let Some(&known) = self.by_output.borrow().get(&i) {
            return Ok(known);
        }
        let ms = if self.has_builds {
            self.ledger.output_build_ms(&snap.graph.path(i))?
        } else {
            None
        };
        self.by_output.borrow_mut().insert(i, ms);
        Ok(ms)
    }

    fn name_ms(&self, name: &str) -> Result<Option<i64>> {
        if let Some(&known) = self.by_name.borrow().get(name) {
            return Ok(known);
        }
        let ms = if self.has_builds {
            self.ledger.expected_duration_ms(name)?
        } else {
            None
        };
        self.by_name.borrow_mut().insert(name.to_string(), ms);
        Ok(ms)
    }

    /// What getting `unit` back costs.
    pub fn unit_cost(&self, snap: &Snapshot, unit: &Unit) -> Result<Cost> {
        let g = &snap.graph;
        let outputs: Vec<u32> = unit
            .paths
            .iter()
            .copied()
            .filter(|&i| !matches!(g.origin[i as usize], Origin::Derivation | Origin::Source))
            .collect();
        if outputs.is_empty() {
            return Ok(Cost {
                ms: Some(0),
                basis: Basis::Source,
            });
        }
        if outputs.iter().all(|&i| self.substitutable(snap, i)) {
            let bytes: u64 = outputs.iter().map(|&i| g.nar_size[i as usize]).sum();
            let ms = (bytes as f64 / self.rate * 1000.0).ceil() as i64;
            return Ok(Cost {
                ms: Some(ms),
                basis: Basis::Download,
            });
        }
        // One build makes all of a unit's outputs: its cost is the longest recorded.
        let mut recorded: Option<i64> = None;
        for &i in &outputs {
            if let Some(ms) = self.output_ms(snap, i)? {
                recorded = Some(recorded.map_or(ms, |r: i64| r.max(ms)));
            }
        }
        if recorded.is_none() && self.has_builds {
            for &i in &unit.paths {
                if g.origin[i as usize] == Origin::Derivation {
                    if let Some(ms) = self.ledger.drv_build_ms(&g.path(i))? {
                        recorded = Some(recorded.map_or(ms, |r: i64| r.max(ms)));
                    }
                }
            }
        }
        if let Some(ms) = recorded {
            return Ok(Cost {
                ms: Some(ms),
                basis: Basis::Build,
            });
        }
        for &i in &outputs {
            let deriver = g.deriver_name(i);
            if deriver.is_empty() {
                continue;
            }
            if let Some(ms) = self.name_ms(path_name(deriver))? {
                return Ok(Cost {
                    ms: Some(ms),
                    basis: Basis::Name,
                });
            }
        }
        Ok(Cost {
            ms: None,
            basis: Basis::Unknown,
        })
    }
}
