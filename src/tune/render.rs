//! The text of `nix-ledger tune` (`--json` prints the [`Report`] itself).

use std::fmt::Write;

use super::builders::{BuilderAdvice, WithBuilders};
use super::inputs::Origin;
use super::report::{Report, Setting, WorkloadSummary};
use super::sweep::Level;
use crate::size::human_bytes;
use crate::time::human_duration_ms;

/// The report as people read it.
pub fn report(r: &Report) -> String {
    let mut out = String::new();
    if let Some(m) = &r.machine {
        let _ = writeln!(
            out,
            "Fleet machine {m}, from its sessions and builds pulled by nb sync."
        );
    }
    out.push_str(&workloads(&r.workloads));
    let h = &r.host;
    let fleet = r.machine.as_ref().map(|m| format!("fleet machine {m}"));
    let _ = writeln!(
        out,
        "{}: {} cores, {} (builds may use {} together)\n",
        match (&fleet, h.projected) {
            (Some(f), _) => f.as_str(),
            (None, true) => "projected onto",
            (None, false) => "this machine",
        },
        h.cores,
        human_bytes(h.memory_bytes as i64),
        human_bytes(h.memory_budget_bytes as i64),
    );
    let mut rows: Vec<(String, &Setting)> = Vec::new();
    if let Some(best) = &r.recommended {
        rows.push(("recommended".into(), best));
    }
    if let Some(current) = &r.current {
        let source = if r.machine.is_some() {
            "current (its last session)"
        } else {
            "current (nix show-config)"
        };
        rows.push((source.into(), current));
    }
    rows.push(("Nix's default".into(), &r.nix_default));
    rows.push(("NixOS's default (auto)".into(), &r.nixos_default));
    for c in &r.compared {
        rows.push((format!("compared: {}", c.label), &c.setting));
    }
    let width = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "  {:width$}  max-jobs  cores  predicted  peak memory",
        ""
    );
    for (label, s) in &rows {
        let risk = if s.oom_risk { "  OOM risk" } else { "" };
        let _ = writeln!(
            out,
            "  {label:width$}  {:>8}  {:>5}  {:>9}  {:>11}{risk}",
            s.max_jobs,
            s.cores,
            human_duration_ms(s.makespan_ms as i64),
            human_bytes(s.peak_memory_bytes as i64),
        );
    }
    out.push('\n');
    if let (Some(best), Some(current)) = (&r.recommended, &r.current) {
        if best.makespan_ms > 0 && current.makespan_ms > best.makespan_ms {
            let _ = writeln!(
                out,
                "The recommendation is predicted {:.2}× as fast as the current setting.",
                current.makespan_ms as f64 / best.makespan_ms as f64
            );
        }
    }
    if !r.critical_path.derivations.is_empty() {
        let _ = writeln!(
            out,
            "critical path: {} ({}): no setting builds it faster",
            human_duration_ms(r.critical_path.length_ms as i64),
            r.critical_path.derivations.join(" → ")
        );
    }
    for risk in &r.oom_risks_avoided {
        let who = if risk.derivations.is_empty() {
            "builds".to_string()
        } else {
            list(&risk.derivations)
        };
        let _ = writeln!(
            out,
            "OOM risk avoided: with max-jobs {} or more, {who} can run at once: {}, over the {} budget",
            risk.max_jobs,
            human_bytes(risk.bytes as i64),
            human_bytes(h.memory_budget_bytes as i64)
        );
    }
    let c = &r.confidence;
    let level = match c.level {
        Level::High => "high",
        Level::Medium => "medium",
        Level::Low => "low",
    };
    let _ = writeln!(
        out,
        "confidence: {level}: {} of {} derivations measured, {} estimated ({:.0}% of the build time)",
        c.total_jobs - c.estimated_jobs,
        c.total_jobs,
        c.estimated_jobs,
        c.estimated_share * 100.0
    );
    let remote = builders(&r.builders, r.with_builders.as_ref());
    match (&r.nix_conf, &r.nix_settings) {
        (Some(conf), Some(nixos)) => {
            out.push_str("\nnix.conf:\n");
            for line in conf.lines() {
                let _ = writeln!(out, "  {line}");
            }
            let _ = write!(out, "NixOS / nix-darwin configuration:\n  {nixos}");
        }
        _ => {
            let _ = writeln!(
                out,
                "\nNo setting is free of OOM risk: a single build needs more than the {} budget.",
                human_bytes(h.memory_budget_bytes as i64)
            );
        }
    }
    out.push_str(&remote);
    out
}

/// The remote builders' part: what was measured of each, the settings to use and the
/// lines to write.
fn builders(machines: &[BuilderAdvice], with: Option<&WithBuilders>) -> String {
    let mut out = String::new();
    if machines.is_empty() {
        return out;
    }
    out.push_str("\nWith the remote builders:\n");
    let names: Vec<&str> = machines
        .iter()
        .map(|m| crate::nix::machines::label(&m.uri))
        .collect();
    let width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(7);
    let _ = writeln!(
        out,
        "  {:width$}  builds  speed vs here          transfer/build  max-jobs  speed factor",
        "machine"
    );
    for (m, name) in machines.iter().zip(&names) {
        if !m.takes_builds {
            let _ = writeln!(
                out,
                "  {name:width$}  {:>6}  takes none of this machine's builds (system, mandatory features or max-jobs 0): not simulated",
                m.builds
            );
            continue;
        }
        let speed = match m.measured_speed {
            Some(s) => format!("{s:.2}× ({} names)", m.compared_names),
            None => "unknown (taken as 1×)".to_string(),
        };
        let transfer = m
            .transfer_ms_per_build
            .map_or("never used".to_string(), |ms| human_duration_ms(ms as i64));
        let factor = |f: f64| {
            if f.fract() == 0.0 {
                format!("{f:.0}")
            } else {
                format!("{f}")
            }
        };
        let _ = writeln!(
            out,
            "  {name:width$}  {:>6}  {speed:<21}  {transfer:>14}  {:>3} → {:<2}  {:>5} → {}",
            m.builds,
            m.current_max_jobs,
            m.max_jobs,
            factor(m.current_speed_factor),
            m.speed_factor,
        );
    }
    if machines.iter().any(|m| m.takes_builds && m.max_jobs == 0) {
        out.push_str(
            "  max-jobs 0: the builder gains nothing on these workloads: Nix sends a build to a \
             builder before using a free slot here, and each pays its copies.\n",
        );
    }
    let Some(w) = with else {
        out.push_str("  No builder takes this machine's builds: nothing to recommend for them.\n");
        return out;
    };
    let local = w.local_builds;
    let total: u32 = local + machines.iter().map(|m| m.predicted_builds).sum::<u32>();
    let change = |now: Option<u32>, to: u32| match now {
        Some(n) if n != to => format!("{n} → {to}"),
        _ => to.to_string(),
    };
    let _ = writeln!(
        out,
        "  this machine: max-jobs {}, cores {} ({local} of {total} builds here{})",
        change(w.current_max_jobs, w.max_jobs),
        change(w.current_cores, w.cores),
        if w.max_jobs == 0 {
            "; a build fails when no builder can be reached"
        } else {
            ""
        }
    );
    let now = w.current_makespan_ms.map_or(String::new(), |ms| {
        format!(", as configured now {}", human_duration_ms(ms as i64))
    });
    let alone = w.local_only_makespan_ms.map_or(String::new(), |ms| {
        format!(
            ", without the builders {} (the recommendation above)",
            human_duration_ms(ms as i64)
        )
    });
    let _ = writeln!(
        out,
        "  predicted: {}{now}{alone}{}",
        human_duration_ms(w.makespan_ms as i64),
        if w.oom_risk { " (OOM risk here)" } else { "" }
    );
    for a in &w.assumptions {
        let _ = writeln!(out, "  assumed: {a}");
    }
    out.push_str("nix.conf with the builders:\n");
    for line in w.nix_conf.lines() {
        let _ = writeln!(out, "  {line}");
    }
    out.push_str("NixOS / nix-darwin configuration with the builders:\n");
    for line in w.nix_build_machines.lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}

fn workloads(w: &[WorkloadSummary]) -> String {
    let total: usize = w.iter().map(|s| s.derivations).sum();
    let measured: usize = w.iter().map(|s| s.measured).sum();
    let unknown: usize = w.iter().map(|s| s.unknown_graph).sum();
    let what = match w {
        [WorkloadSummary {
            origin: Origin::Target { drv },
            ..
        }] => format!("what building {drv} would build"),
        [_] => "the last session".to_string(),
        _ => format!("the last {} sessions", w.len()),
    };
    let mut out = format!(
        "Tuned on {what}: {total} derivations, {measured} measured, {} estimated.\n",
        total - measured
    );
    if unknown > 0 {
        let _ = writeln!(
            out,
            "({unknown} derivations' .drv files are gone from the store and the ledger: their dependencies are unknown.)"
        );
    }
    out
}

/// `a`, `a and b`, `a, b and c`.
fn list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_naturally() {
        let s = |v: &[&str]| list(&v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(s(&[]), "");
        assert_eq!(s(&["a"]), "a");
        assert_eq!(s(&["a", "b", "c"]), "a, b and c");
    }
}
