//! `nix-ledger store`: the store at a glance, and right. Size and path count; the roots
//! by kind with what each alone keeps alive; live and dead paths with their sizes
//! (exactly Nix's `--print-live`/`--print-dead`); the biggest dead builds and live
//! closures; locally built against substituted; the keep settings; what each retention
//! policy would free and what getting it back would cost; and the GC runs recorded.
//!
//! It reads, never asks the network: cache answers come from the ledger (what `gc` last
//! asked, for a day), so a build no cache was asked about is priced as a rebuild.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;

use super::cost::{Basis, Pricing};
use super::plan::{price, protect, unit_name};
use super::policy::{self, Policy};
use super::snapshot::{Snapshot, Timings};
use crate::ledger::retention::GcRunSummary;
use crate::ledger::Ledger;
use crate::nix::config::NixSettings;
use crate::nix::profiles;
use crate::nix::roots::RootKind;
use crate::store::graph::{Origin, NONE};
use crate::store::live::Walker;
use crate::store::reach;
use crate::time::{now_ms, rfc3339_ms};
use crate::Result;

/// How many of the biggest dead builds and live closures are listed.
const TOP: usize = 10;

/// One root.
#[derive(Debug, Clone, Serialize)]
pub struct RootReport {
    pub link: String,
    pub path: String,
    pub kind: RootKind,
    /// What removing just this link would free (nothing when another link or root
    /// keeps the path).
    pub alone_paths: u64,
    pub alone_bytes: u64,
    /// The path's closure (references only, as `nix path-info -S`).
    pub closure_paths: u64,
    pub closure_bytes: u64,
}

/// One generation of a profile.
#[derive(Debug, Clone, Serialize)]
pub struct GenerationReport {
    pub number: u64,
    pub made_at: String,
    pub current: bool,
    pub path: String,
    pub alone_bytes: u64,
}

/// One profile and its generations, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileReport {
    pub profile: String,
    pub generations: Vec<GenerationReport>,
}

/// A dead build.
#[derive(Debug, Clone, Serialize)]
pub struct DeadBuild {
    pub name: String,
    pub paths: usize,
    pub bytes: u64,
    pub cost_to_restore_ms: Option<i64>,
    pub cost_basis: Basis,
}

/// What one policy would free.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyOutcome {
    pub command: String,
    pub generations_removed: usize,
    pub frees_paths: usize,
    pub frees_bytes: u64,
    pub cost_to_restore_ms: i64,
    pub unknown_cost_builds: usize,
    pub kept_costly_builds: usize,
}

/// `nix-ledger store --json`.
#[derive(Debug, Clone, Serialize)]
pub struct StoreReport {
    pub store_dir: String,
    pub state_dir: String,
    pub store_bytes: u64,
    pub paths: usize,
    pub roots: usize,
    pub root_kinds: BTreeMap<String, usize>,
    pub live_paths: usize,
    pub live_bytes: u64,
    pub dead_paths: usize,
    pub dead_bytes: u64,
    pub invalid_entries: usize,
    pub junk_entries: usize,
    pub locally_built_paths: usize,
    pub locally_built_bytes: u64,
    pub substituted_paths: usize,
    pub substituted_bytes: u64,
    /// .drv files, sources and paths copied in without a deriver.
    pub other_paths: usize,
    pub other_bytes: u64,
    pub keep_outputs: bool,
    pub keep_derivations: bool,
    pub root_list: Vec<RootReport>,
    pub profiles: Vec<ProfileReport>,
    pub biggest_dead_builds: Vec<DeadBuild>,
    pub biggest_live_closures: Vec<RootReport>,
    pub policies: Vec<PolicyOutcome>,
    pub gc_runs: Vec<GcRunSummary>,
    pub notes: Vec<String>,
    /// With `--paths`: exactly what `nix-store --gc --print-live` prints (which, as Nix
    /// 2.8 does, includes entries that are no store path; the counts count those as dead).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead: Option<Vec<String>>,
    pub timings_ms: Timings,
    pub analysis_ms: u64,
}

/// What `nix-ledger store` is asked for.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// List every live and dead path.
    pub paths: bool,
    /// Also show what this policy would free.
    pub policy: Option<Policy>,
}

/// The policies every report prices, as `nix-ledger gc` flags.
fn standard_policies() -> Vec<Policy> {
    let day = 86_400_000;
    vec![
        Policy::default(),
        Policy {
            keep_costlier_than_ms: Some(600_000),
            ..Policy::default()
        },
        Policy {
            keep_generations: Some(1),
            ..Policy::default()
        },
        Policy {
            keep_generations: Some(3),
            ..Policy::default()
        },
        Policy {
            keep_since_ms: Some(30 * day),
            ..Policy::default()
        },
    ]
}

/// Analyses the store of `settings`' Nix.
pub fn analyse(
    ledger: &mut Ledger,
    settings: &NixSettings,
    opts: &StoreOptions,
) -> Result<StoreReport> {
    let snap = Snapshot::take(settings)?;
    let started = Instant::now();
    let g = &snap.graph;
    let n = g.len() as u32;
    let mut report = StoreReport {
        store_dir: snap.store_dir.clone(),
        state_dir: snap.state_dir.display().to_string(),
        store_bytes: g.nar_size.iter().sum(),
        paths: g.len(),
        roots: snap.roots.len(),
        root_kinds: BTreeMap::new(),
        live_paths: snap.live.live_invalid.len(),
        live_bytes: 0,
        dead_paths: snap.live.dead_invalid.len() + snap.live.junk.len(),
        dead_bytes: 0,
        invalid_entries: snap.dir.invalid.len(),
        junk_entries: snap.dir.junk.len(),
        locally_built_paths: 0,
        locally_built_bytes: 0,
        substituted_paths: 0,
        substituted_bytes: 0,
        other_paths: 0,
        other_bytes: 0,
        keep_outputs: snap.keep.outputs,
        keep_derivations: snap.keep.derivations,
        root_list: Vec::new(),
        profiles: Vec::new(),
        biggest_dead_builds: Vec::new(),
        biggest_live_closures: Vec::new(),
        policies: Vec::new(),
        gc_runs: ledger.recent_gc_runs(5)?,
        notes: Vec::new(),
        live: None,
        dead: None,
        timings_ms: snap.timings.clone(),
        analysis_ms: 0,
    };
    let mut dead = Vec::new();
    for i in 0..n {
        let size = g.nar_size[i as usize];
        if snap.live.live[i as usize] {
            report.live_paths += 1;
            report.live_bytes += size;
        } else if snap.is_dead(i) {
            report.dead_paths += 1;
            report.dead_bytes += size;
            dead.push(i);
        }
        let (count, bytes) = match g.origin[i as usize] {
            Origin::Built => (
                &mut report.locally_built_paths,
                &mut report.locally_built_bytes,
            ),
            Origin::Substituted => (&mut report.substituted_paths, &mut report.substituted_bytes),
            _ => (&mut report.other_paths, &mut report.other_bytes),
        };
        *count += 1;
        *bytes += size;
    }
    for r in &snap.roots {
        *report
            .root_kinds
            .entry(r.kind.as_str().to_string())
            .or_insert(0) += 1;
    }
    roots_and_profiles(&snap, &mut report);

    let pricing = Pricing::new(ledger, &snap, settings, &dead, false)?;
    let base = price(&snap, &snap.live, &pricing)?;
    let mut by_size: Vec<u32> = (0..base.units.len() as u32).collect();
    by_size.sort_by_key(|&u| std::cmp::Reverse(base.units.units[u as usize].bytes));
    report.biggest_dead_builds = by_size
        .iter()
        .take(TOP)
        .map(|&u| DeadBuild {
            name: unit_name(&snap, &base.units, u),
            paths: base.units.units[u as usize].paths.len(),
            bytes: base.units.units[u as usize].bytes,
            cost_to_restore_ms: base.costs[u as usize].ms,
            cost_basis: base.costs[u as usize].basis,
        })
        .collect();

    let mut policies = standard_policies();
    policies.extend(opts.policy.clone());
    let now = now_ms();
    let mut walker = Walker::new(g.len());
    for p in &policies {
        let removals = policy::removals(&snap, p, now);
        let removed: HashSet<&str> = removals.iter().map(|r| r.link.as_str()).collect();
        // Only removing generations changes what is dead; the rest reuses the base.
        let other = if removed.is_empty() {
            None
        } else {
            Some(price(
                &snap,
                &snap.live_without(&removed, &mut walker),
                &pricing,
            )?)
        };
        let priced = other.as_ref().unwrap_or(&base);
        let protection = protect(priced, p.keep_costlier_than_ms);
        let mut outcome = PolicyOutcome {
            command: p.describe(),
            generations_removed: removals.len(),
            frees_paths: 0,
            frees_bytes: 0,
            cost_to_restore_ms: 0,
            unknown_cost_builds: 0,
            kept_costly_builds: protection.costly.len(),
        };
        for (u, unit) in priced.units.units.iter().enumerate() {
            if protection.protected[u] {
                continue;
            }
            outcome.frees_paths += unit.paths.len() + usize::from(unit.invalid.is_some());
            outcome.frees_bytes += unit.bytes;
            match priced.costs[u].ms {
                Some(ms) => outcome.cost_to_restore_ms += ms,
                None => outcome.unknown_cost_builds += 1,
            }
        }
        report.policies.push(outcome);
    }

    if !pricing.rate_measured {
        report.notes.push(
            "no download rate measured yet (nix-ledger build records it): assuming 10 MiB/s".into(),
        );
    }
    if !settings.active_substituters().is_empty() {
        report.notes.push(
            "cache answers come from the ledger (nix-ledger gc asks the caches): paths no cache was asked about count as rebuilds"
                .into(),
        );
    }
    let anomalies = g.anomalous_derivers();
    if anomalies > 0 {
        report.notes.push(format!("{anomalies} paths name a deriver that does not list them: Nix's own answer for those .drv files depends on directory order"));
    }
    if opts.paths {
        let dir = &snap.store_dir;
        let mut live: Vec<String> = (0..n)
            .filter(|&i| snap.live.live[i as usize])
            .map(|i| g.path(i))
            .chain(snap.live.live_invalid.iter().map(|b| format!("{dir}/{b}")))
            // Nix 2.8 lists an entry that is no store path in --print-live too (it
            // deletes it, and collects what it deleted with what it found live).
            .chain(snap.live.junk.iter().map(|b| format!("{dir}/{b}")))
            .collect();
        live.sort_unstable();
        let mut dead_list: Vec<String> = dead
            .iter()
            .map(|&i| g.path(i))
            .chain(snap.live.dead_invalid.iter().map(|b| format!("{dir}/{b}")))
            .chain(snap.live.junk.iter().map(|b| format!("{dir}/{b}")))
            .collect();
        dead_list.sort_unstable();
        report.live = Some(live);
        report.dead = Some(dead_list);
    }
    report.analysis_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

/// Fills the root list (with what each keeps), the profiles and the biggest closures.
fn roots_and_profiles(snap: &Snapshot, report: &mut StoreReport) {
    let g = &snap.graph;
    let valid_roots: Vec<u32> = snap
        .root_index
        .iter()
        .copied()
        .filter(|&i| i != NONE)
        .collect();
    let alone = reach::alone(g, &valid_roots, snap.keep);
    let alone_of: HashMap<u32, reach::Alone> = valid_roots.iter().copied().zip(alone).collect();
    let links = snap.links_per_path();
    let mut walker = Walker::new(g.len());
    let mut closures: HashMap<u32, reach::Alone> = HashMap::new();
    for (root, &i) in snap.roots.iter().zip(&snap.root_index) {
        let mut entry = RootReport {
            link: root.link.clone(),
            path: root.path.clone(),
            kind: root.kind,
            alone_paths: 0,
            alone_bytes: 0,
            closure_paths: 0,
            closure_bytes: 0,
        };
        if i != NONE {
            // Another link to the same path keeps it when this one goes.
            if links.get(&i) == Some(&1) {
                let a = alone_of.get(&i).copied().unwrap_or_default();
                entry.alone_paths = a.paths;
                entry.alone_bytes = a.bytes;
            }
            let c = *closures
                .entry(i)
                .or_insert_with(|| reach::closure_size(g, i, &mut walker));
            entry.closure_paths = c.paths;
            entry.closure_bytes = c.bytes;
        }
        report.root_list.push(entry);
    }
    let alone_by_link: HashMap<&str, u64> = report
        .root_list
        .iter()
        .map(|r| (r.link.as_str(), r.alone_bytes))
        .collect();
    for (profile, gens) in policy::profiles(snap) {
        report.profiles.push(ProfileReport {
            profile: profile.display().to_string(),
            generations: gens
                .iter()
                .map(|gen: &profiles::Generation| GenerationReport {
                    number: gen.number,
                    made_at: rfc3339_ms(gen.time_ms),
                    current: gen.current,
                    path: gen.path.clone(),
                    alone_bytes: alone_by_link
                        .get(gen.link.to_string_lossy().as_ref())
                        .copied()
                        .unwrap_or(0),
                })
                .collect(),
        });
    }
    let mut seen = HashSet::new();
    let mut biggest: Vec<RootReport> = report
        .root_list
        .iter()
        .filter(|r| seen.insert(r.path.clone()))
        .cloned()
        .collect();
    biggest.sort_by_key(|r| std::cmp::Reverse(r.closure_bytes));
    biggest.truncate(TOP);
    report.biggest_live_closures = biggest;
}
