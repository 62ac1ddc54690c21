//! The plan: which profile generations go, and which dead builds, in which order, each
//! with its size, what getting it back would cost and why it goes. Built first, then
//! printed (`--dry-run`) or carried out ([`super::execute`]).
//!
//! Order: least cost to get back per byte first. A build can only go with everything dead
//! that refers to it (Nix refuses otherwise), so the choice is among *groups*: a build
//! with its dead referrers not yet chosen. With a byte target (`--max-freed`,
//! `--free-until`) the cheapest group per byte is taken until the target is met, then
//! groups that turned out unnecessary are put back, costliest first. Without a target
//! everything dead goes, referrers first, cheapest first among those free to go.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};

use serde::{Deserialize, Serialize};

use super::cost::{Basis, Cost, Pricing};
use super::policy::{self, GenerationRemoval, Policy};
use super::snapshot::Snapshot;
use crate::ledger::Ledger;
use crate::nix::config::NixSettings;
use crate::nix::store_path::path_name;
use crate::store::graph::Origin;
use crate::store::live::{Liveness, Walker};
use crate::store::units::Units;
use crate::Result;

/// One store path of a planned build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedPath {
    pub path: String,
    /// Its narSize (invalid leftovers: 0, unknown).
    pub bytes: u64,
}

/// One build (or other unit) the plan deletes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedBuild {
    /// Builds of one step go in the same `nix-store --delete`.
    pub step: usize,
    pub name: String,
    pub paths: Vec<PlannedPath>,
    pub bytes: u64,
    /// `None`: unknown (treated as costly).
    pub cost_to_restore_ms: Option<i64>,
    pub cost_basis: Basis,
    pub why: String,
}

/// A build `--keep-costlier-than` keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeptBuild {
    pub name: String,
    pub bytes: u64,
    pub cost_to_restore_ms: Option<i64>,
    pub cost_basis: Basis,
}

/// What a policy would do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub policy: Policy,
    pub command: String,
    pub store_dir: String,
    pub keep_outputs: bool,
    pub keep_derivations: bool,
    pub generations: Vec<GenerationRemoval>,
    pub builds: Vec<PlannedBuild>,
    /// The costliest builds kept by `--keep-costlier-than` (at most 20 listed).
    pub kept: Vec<KeptBuild>,
    pub kept_builds: usize,
    pub kept_bytes: u64,
    pub target_bytes: Option<u64>,
    pub free_bytes_before: Option<u64>,
    pub planned_paths: usize,
    pub planned_bytes: u64,
    pub cost_to_restore_ms: i64,
    pub unknown_cost_builds: usize,
    /// Bytes per second assumed for downloads, and whether the ledger measured it.
    pub download_rate: f64,
    pub download_rate_measured: bool,
    pub notes: Vec<String>,
}

/// Sort key of a group: known costs by ms per byte; unknown costs after all known ones,
/// bigger first.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Key {
    unknown: bool,
    per_byte: f64,
}

impl Key {
    fn of(cost_ms: i64, unknown: bool, bytes: u64) -> Key {
        let bytes = bytes.max(1) as f64;
        Key {
            unknown,
            per_byte: if unknown {
                1.0 / bytes
            } else {
                cost_ms as f64 / bytes
            },
        }
    }
}

impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.unknown
            .cmp(&other.unknown)
            .then(self.per_byte.total_cmp(&other.per_byte))
    }
}

/// A min-heap entry.
#[derive(PartialEq, Eq)]
struct Entry(Key, u32);
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.cmp(&self.0).then(other.1.cmp(&self.1))
    }
}

/// The dead units with their costs, for one liveness.
pub struct Priced {
    pub units: Units,
    pub costs: Vec<Cost>,
}

/// What `--keep-costlier-than` keeps.
#[derive(Debug, Clone, Default)]
pub struct Protection {
    /// Per unit: kept (directly for its cost, or because a kept one needs it).
    pub protected: Vec<bool>,
    /// Units kept directly for their cost.
    pub costly: Vec<u32>,
}

/// Groups the dead paths of `live` and prices them.
pub fn price(snap: &Snapshot, live: &Liveness, pricing: &Pricing<'_>) -> Result<Priced> {
    let units = Units::group(&snap.graph, &snap.dir, live, snap.keep);
    let costs = units
        .units
        .iter()
        .map(|u| pricing.unit_cost(snap, u))
        .collect::<Result<Vec<Cost>>>()?;
    Ok(Priced { units, costs })
}

/// The units `keep_costlier_than_ms` keeps: builds no cache has that cost more (or an
/// unknown amount), and everything they need (a kept build keeps what it refers to and,
/// with the keep settings, its .drv).
pub fn protect(priced: &Priced, keep_costlier_than_ms: Option<i64>) -> Protection {
    let units = &priced.units;
    let mut p = Protection {
        protected: vec![false; units.len()],
        costly: Vec::new(),
    };
    let Some(limit) = keep_costlier_than_ms else {
        return p;
    };
    p.costly = (0..units.len() as u32)
        .filter(|&u| {
            let c = &priced.costs[u as usize];
            c.basis != Basis::Source && c.is_rebuild() && c.exceeds(limit)
        })
        .collect();
    let mut walker = Walker::new(units.len());
    let protected = &mut p.protected;
    walker.walk(
        p.costly.iter().copied(),
        |u, push| {
            for &v in units.references.of(u) {
                push(v)
            }
        },
        |_| false,
        |u| protected[u as usize] = true,
    );
    p
}

/// The group of `u`: `u` and every unit not yet taken that must go with it.
fn group(units: &Units, taken: &[bool], u: u32, walker: &mut Walker) -> Vec<u32> {
    let mut members = Vec::new();
    walker.walk(
        [u],
        |x, push| {
            for &r in units.referrers.of(x) {
                push(r)
            }
        },
        |x| taken[x as usize],
        |x| members.push(x),
    );
    members
}

fn group_key(priced: &Priced, members: &[u32]) -> (Key, u64, i64) {
    let (mut bytes, mut ms, mut unknown) = (0u64, 0i64, false);
    for &m in members {
        bytes += priced.units.units[m as usize].bytes;
        match priced.costs[m as usize].ms {
            Some(c) => ms += c,
            None => unknown = true,
        }
    }
    (Key::of(ms, unknown, bytes), bytes, ms)
}

/// The steps (groups of units, in order) that delete the candidates, or just enough of
/// them to free `target` bytes.
pub fn select(priced: &Priced, protection: &Protection, target: Option<u64>) -> Vec<Vec<u32>> {
    let n = priced.units.len();
    let candidate: Vec<bool> = protection.protected.iter().map(|p| !p).collect();
    let own_key = |u: u32| {
        let c = &priced.costs[u as usize];
        Key::of(
            c.ms.unwrap_or(0),
            c.ms.is_none(),
            priced.units.units[u as usize].bytes,
        )
    };
    let Some(target) = target else {
        // Everything: referrers first, cheapest first among those free to go.
        let mut waiting: Vec<usize> = (0..n as u32)
            .map(|u| {
                priced
                    .units
                    .referrers
                    .of(u)
                    .iter()
                    .filter(|&&r| candidate[r as usize])
                    .count()
            })
            .collect();
        let mut heap: BinaryHeap<Entry> = (0..n as u32)
            .filter(|&u| candidate[u as usize] && waiting[u as usize] == 0)
            .map(|u| Entry(own_key(u), u))
            .collect();
        let mut steps = Vec::new();
        while let Some(Entry(_, u)) = heap.pop() {
            steps.push(vec![u]);
            for &v in priced.units.references.of(u) {
                if candidate[v as usize] {
                    waiting[v as usize] -= 1;
                    if waiting[v as usize] == 0 {
                        heap.push(Entry(own_key(v), v));
                    }
                }
            }
        }
        return steps;
    };
    let mut taken: Vec<bool> = candidate.iter().map(|c| !c).collect();
    let mut walker = Walker::new(n);
    let mut heap: BinaryHeap<Entry> = (0..n as u32)
        .filter(|&u| candidate[u as usize])
        .map(|u| {
            Entry(
                group_key(priced, &group(&priced.units, &taken, u, &mut walker)).0,
                u,
            )
        })
        .collect();
    let mut steps: Vec<(Vec<u32>, u64, i64)> = Vec::new();
    let mut freed = 0u64;
    while freed < target {
        let Some(Entry(key, u)) = heap.pop() else {
            break;
        };
        if taken[u as usize] {
            continue;
        }
        let members = group(&priced.units, &taken, u, &mut walker);
        let (now, bytes, ms) = group_key(priced, &members);
        // Others taken since made this group smaller: if it is now worse than the next
        // best, look again later.
        if now > key && heap.peek().is_some_and(|Entry(next, _)| *next < now) {
            heap.push(Entry(now, u));
            continue;
        }
        for &m in &members {
            taken[m as usize] = true;
        }
        freed += bytes;
        steps.push((members, bytes, ms));
    }
    // Put back what the target did not need, costliest first, when nothing chosen
    // still needs it gone.
    let mut step_of = vec![usize::MAX; n];
    for (s, (members, _, _)) in steps.iter().enumerate() {
        for &m in members {
            step_of[m as usize] = s;
        }
    }
    let mut by_cost: Vec<usize> = (0..steps.len()).collect();
    by_cost.sort_by(|&a, &b| steps[b].2.cmp(&steps[a].2));
    let mut dropped = vec![false; steps.len()];
    for s in by_cost {
        let (members, bytes, _) = &steps[s];
        if freed.saturating_sub(*bytes) < target {
            continue;
        }
        let needed = members.iter().any(|&m| {
            priced.units.references.of(m).iter().any(|&v| {
                let t = step_of[v as usize];
                t != usize::MAX && t != s && !dropped[t]
            })
        });
        if !needed {
            dropped[s] = true;
            freed -= bytes;
        }
    }
    steps
        .into_iter()
        .zip(dropped)
        .filter(|(_, d)| !d)
        .map(|((members, _, _), _)| members)
        .collect()
}

/// A unit's name for people: its derivation's name, else its first path's name.
pub fn unit_name(snap: &Snapshot, units: &Units, u: u32) -> String {
    let unit = &units.units[u as usize];
    if let Some(name) = &unit.invalid {
        return path_name(name).to_string();
    }
    let g = &snap.graph;
    let pick = unit
        .paths
        .iter()
        .find(|&&i| g.origin[i as usize] == Origin::Derivation)
        .or_else(|| unit.paths.first());
    pick.map(|&i| path_name(g.base_name(i)).to_string())
        .unwrap_or_default()
}

/// Plans `policy` on the store of `snap`.
pub fn plan(
    ledger: &mut Ledger,
    snap: &Snapshot,
    settings: &NixSettings,
    policy: &Policy,
    ask_caches: bool,
    now_ms: i64,
) -> Result<Plan> {
    let generations = policy::removals(snap, policy, now_ms);
    let removed: HashSet<&str> = generations.iter().map(|g| g.link.as_str()).collect();
    let mut walker = Walker::new(snap.graph.len());
    let simulated = (!removed.is_empty()).then(|| snap.live_without(&removed, &mut walker));
    let live = simulated.as_ref().unwrap_or(&snap.live);
    let dead: Vec<u32> = (0..snap.graph.len() as u32)
        .filter(|&i| live.is_dead(&snap.dir, i))
        .collect();
    let pricing = Pricing::new(ledger, snap, settings, &dead, ask_caches)?;
    let priced = price(snap, live, &pricing)?;
    let protection = protect(&priced, policy.keep_costlier_than_ms);

    let free_bytes_before = crate::sys::free_space(std::path::Path::new(&snap.store_dir));
    let wanted = policy
        .free_until
        .map(|goal| goal.saturating_sub(free_bytes_before.unwrap_or(0)));
    let target_bytes = match (policy.max_freed, wanted) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let steps = if target_bytes == Some(0) {
        Vec::new()
    } else {
        select(&priced, &protection, target_bytes)
    };

    let mut notes = Vec::new();
    for u in &pricing.unreachable {
        notes.push(format!("cache not asked, its paths count as rebuilds: {u}"));
    }
    if !pricing.rate_measured {
        notes.push(
            "no download rate measured yet (nix-ledger build records it): assuming 10 MiB/s".into(),
        );
    }
    if !live.junk.is_empty() {
        notes.push(format!(
            "{} entries in the store directory are no store path (nix-store --gc removes them; nix-ledger leaves them)",
            live.junk.len()
        ));
    }
    let anomalies = snap.graph.anomalous_derivers();
    if anomalies > 0 {
        notes.push(format!("{anomalies} paths name a deriver that does not list them: Nix's own answer for those .drv files depends on directory order"));
    }

    let mut builds = Vec::new();
    let (mut planned_paths, mut planned_bytes, mut cost, mut unknown) =
        (0usize, 0u64, 0i64, 0usize);
    for (step, members) in steps.iter().enumerate() {
        for &u in members {
            let unit = &priced.units.units[u as usize];
            let c = priced.costs[u as usize];
            let newly_dead = unit.paths.iter().any(|&i| snap.live.live[i as usize]);
            let why = if unit.invalid.is_some() {
                "an invalid leftover (an interrupted or failed build)".to_string()
            } else if newly_dead {
                "kept only by the generations this plan removes".to_string()
            } else {
                "no root keeps it".to_string()
            };
            let mut paths: Vec<PlannedPath> = unit
                .paths
                .iter()
                .map(|&i| PlannedPath {
                    path: snap.graph.path(i),
                    bytes: snap.graph.nar_size[i as usize],
                })
                .collect();
            if let Some(name) = &unit.invalid {
                paths.push(PlannedPath {
                    path: format!("{}/{name}", snap.store_dir),
                    bytes: 0,
                });
            }
            paths.sort_by(|a, b| a.path.cmp(&b.path));
            planned_paths += paths.len();
            planned_bytes += unit.bytes;
            match c.ms {
                Some(ms) => cost += ms,
                None => unknown += 1,
            }
            builds.push(PlannedBuild {
                step: step + 1,
                name: unit_name(snap, &priced.units, u),
                paths,
                bytes: unit.bytes,
                cost_to_restore_ms: c.ms,
                cost_basis: c.basis,
                why,
            });
        }
    }
    let mut costly: Vec<u32> = protection.costly.clone();
    costly.sort_by_key(|&u| std::cmp::Reverse(priced.costs[u as usize].ms.unwrap_or(i64::MAX)));
    let kept = costly
        .iter()
        .take(20)
        .map(|&u| KeptBuild {
            name: unit_name(snap, &priced.units, u),
            bytes: priced.units.units[u as usize].bytes,
            cost_to_restore_ms: priced.costs[u as usize].ms,
            cost_basis: priced.costs[u as usize].basis,
        })
        .collect();
    let kept_units: Vec<usize> = (0..priced.units.len())
        .filter(|&u| protection.protected[u])
        .collect();
    Ok(Plan {
        policy: policy.clone(),
        command: policy.describe(),
        store_dir: snap.store_dir.clone(),
        keep_outputs: snap.keep.outputs,
        keep_derivations: snap.keep.derivations,
        generations,
        builds,
        kept,
        kept_builds: kept_units.len(),
        kept_bytes: kept_units
            .iter()
            .map(|&u| priced.units.units[u].bytes)
            .sum(),
        target_bytes,
        free_bytes_before,
        planned_paths,
        planned_bytes,
        cost_to_restore_ms: cost,
        unknown_cost_builds: unknown,
        download_rate: pricing.rate,
        download_rate_measured: pricing.rate_measured,
        notes,
    })
}
