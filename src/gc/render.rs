//! `nix-ledger store` and `gc` as text for people: the numbers first, then the detail.

use std::fmt::Write as _;

use super::cost::Basis;
use super::execute::Outcome;
use super::plan::Plan;
use super::report::StoreReport;
use crate::size::human_bytes;
use crate::time::human_duration_ms;

fn bytes(b: u64) -> String {
    human_bytes(i64::try_from(b).unwrap_or(i64::MAX))
}

/// A cost as people read it: `12.3s to rebuild`, `0.4s to download`, `unknown`.
pub fn cost(ms: Option<i64>, basis: Basis) -> String {
    match (ms, basis) {
        (_, Basis::Source) => "free (made again by evaluation)".into(),
        (None, _) => "unknown (counted as costly)".into(),
        (Some(ms), Basis::Download) => format!("{} to download", human_duration_ms(ms)),
        (Some(ms), Basis::Name) => {
            format!("~{} to rebuild (usual for its name)", human_duration_ms(ms))
        }
        (Some(ms), _) => format!("{} to rebuild", human_duration_ms(ms)),
    }
}

/// `nix-ledger store`.
pub fn store(r: &StoreReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "store {}: {} in {} paths",
        r.store_dir,
        bytes(r.store_bytes),
        r.paths
    );
    let kinds: Vec<String> = r
        .root_kinds
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    if kinds.is_empty() {
        let _ = writeln!(out, "roots: {}", r.roots);
    } else {
        let _ = writeln!(out, "roots: {} ({})", r.roots, kinds.join(", "));
    }
    let _ = writeln!(
        out,
        "live:  {:>7} paths  {:>10}",
        r.live_paths,
        bytes(r.live_bytes)
    );
    let _ = writeln!(
        out,
        "dead:  {:>7} paths  {:>10}",
        r.dead_paths,
        bytes(r.dead_bytes)
    );
    let _ = writeln!(
        out,
        "built here: {} paths, {}; substituted: {} paths, {}; other (.drv, sources): {} paths, {}",
        r.locally_built_paths,
        bytes(r.locally_built_bytes),
        r.substituted_paths,
        bytes(r.substituted_bytes),
        r.other_paths,
        bytes(r.other_bytes)
    );
    let _ = writeln!(
        out,
        "keep-outputs = {}, keep-derivations = {}",
        r.keep_outputs, r.keep_derivations
    );
    if !r.profiles.is_empty() {
        let _ = writeln!(out, "\nprofiles (generation: made, frees alone):");
        for p in &r.profiles {
            let _ = writeln!(out, "  {}", p.profile);
            for g in &p.generations {
                let _ = writeln!(
                    out,
                    "    {:>4}  {}  {:>10}{}",
                    g.number,
                    g.made_at.get(..16).unwrap_or(&g.made_at),
                    bytes(g.alone_bytes),
                    if g.current { "  (current)" } else { "" }
                );
            }
        }
    }
    let others: Vec<_> = r
        .root_list
        .iter()
        .filter(|x| x.kind != crate::nix::roots::RootKind::Profile)
        .collect();
    if !others.is_empty() {
        let _ = writeln!(out, "\nother roots (kind, frees alone, closure):");
        for x in others.iter().take(20) {
            let _ = writeln!(
                out,
                "  {:<8} {:>10} {:>10}  {}",
                x.kind.as_str(),
                bytes(x.alone_bytes),
                bytes(x.closure_bytes),
                x.link
            );
        }
        if others.len() > 20 {
            let _ = writeln!(out, "  … and {} more (--json lists all)", others.len() - 20);
        }
    }
    if !r.biggest_live_closures.is_empty() {
        let _ = writeln!(out, "\nbiggest live closures:");
        for x in &r.biggest_live_closures {
            let _ = writeln!(out, "  {:>10}  {}", bytes(x.closure_bytes), x.link);
        }
    }
    if !r.biggest_dead_builds.is_empty() {
        let _ = writeln!(out, "\nbiggest dead builds:");
        for b in &r.biggest_dead_builds {
            let _ = writeln!(
                out,
                "  {:>10}  {}  ({})",
                bytes(b.bytes),
                b.name,
                cost(b.cost_to_restore_ms, b.cost_basis)
            );
        }
    }
    let _ = writeln!(
        out,
        "\nwhat each policy would free, and the cost to get it back:"
    );
    for p in &r.policies {
        let unknown = if p.unknown_cost_builds > 0 {
            format!(" + {} builds of unknown cost", p.unknown_cost_builds)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {:>10} in {:>6} paths, {}{}  ← nix-ledger {}",
            bytes(p.frees_bytes),
            p.frees_paths,
            human_duration_ms(p.cost_to_restore_ms),
            unknown,
            p.command
        );
    }
    if !r.gc_runs.is_empty() {
        let _ = writeln!(out, "\ngarbage collections by nix-ledger:");
        for run in &r.gc_runs {
            let _ = writeln!(
                out,
                "  #{} {} {}: {} paths, {}, {} to get back{}",
                run.id,
                run.started_at.get(..16).unwrap_or(&run.started_at),
                run.status,
                run.deleted_paths,
                bytes(run.freed_bytes.max(0) as u64),
                human_duration_ms(run.cost_to_restore_ms),
                if run.refused_paths > 0 {
                    format!(", {} refused", run.refused_paths)
                } else {
                    String::new()
                }
            );
        }
    }
    for note in &r.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

/// A plan (what `--dry-run` prints, and what the prompt shows).
pub fn plan(p: &Plan, detail: bool) -> String {
    let mut out = String::new();
    for g in &p.generations {
        let _ = writeln!(
            out,
            "remove generation {} of {} ({})",
            g.generation, g.profile, g.path
        );
    }
    if detail {
        for b in &p.builds {
            let _ = writeln!(
                out,
                "delete {:>10}  {}  [{}; {}]",
                bytes(b.bytes),
                b.name,
                cost(b.cost_to_restore_ms, b.cost_basis),
                b.why
            );
            for path in &b.paths {
                let _ = writeln!(out, "         {}", path.path);
            }
        }
        for k in &p.kept {
            let _ = writeln!(
                out,
                "keep   {:>10}  {}  [{}: costlier than allowed, in no cache]",
                bytes(k.bytes),
                k.name,
                cost(k.cost_to_restore_ms, k.cost_basis)
            );
        }
    }
    let target = match p.target_bytes {
        Some(t) => format!(" (target {})", bytes(t)),
        None => String::new(),
    };
    let unknown = if p.unknown_cost_builds > 0 {
        format!(" and {} builds of unknown cost", p.unknown_cost_builds)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "{}: {} paths in {} builds, {}{target}; cost to get back: {}{unknown}",
        p.command,
        p.planned_paths,
        p.builds.len(),
        bytes(p.planned_bytes),
        human_duration_ms(p.cost_to_restore_ms)
    );
    if p.kept_builds > 0 {
        let _ = writeln!(
            out,
            "kept for their cost, with what they need: {} builds, {}",
            p.kept_builds,
            bytes(p.kept_bytes)
        );
    }
    for note in &p.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

/// What a run did.
pub fn outcome(o: &Outcome) -> String {
    let mut out = String::new();
    for g in &o.generations_removed {
        let _ = writeln!(out, "removed generation {} of {}", g.generation, g.profile);
    }
    for r in &o.refused {
        let _ = writeln!(out, "refused by Nix: {} ({})", r.path, r.reason);
    }
    if !o.kept_alive.is_empty() {
        let _ = writeln!(
            out,
            "kept {} planned paths that became live",
            o.kept_alive.len()
        );
    }
    for e in &o.errors {
        let _ = writeln!(out, "error: {e}");
    }
    let _ = writeln!(
        out,
        "gc run #{} {}: deleted {} paths, freed {}, cost to get back {}{}",
        o.run_id,
        o.status,
        o.deleted_paths,
        bytes(o.freed_bytes.max(0) as u64),
        human_duration_ms(o.cost_to_restore_ms),
        if o.unknown_cost_builds > 0 {
            format!(" + {} builds of unknown cost", o.unknown_cost_builds)
        } else {
            String::new()
        }
    );
    out
}
