//! `nix-ledger tune --builders` against a real remote builder (the loopback builder of
//! [`crate::servers::LoopbackBuilder`]): the same derivation names built here and on
//! the builder give its measured speed, and tune recommends a builders line for it.
//! Only what does not depend on timing is asserted beyond the speed's plausible range.

use std::process::Command;

use serde_json::Value;

use crate::remote::{build_salted, fixture, system};
use crate::servers::LoopbackBuilder;
use crate::util::{hook_bin, ledger_bin, run_ok, TestEnv};

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
#[cfg_attr(
    not(root_tests),
    ignore = "needs root: sshd and a root login for the builder"
)]
fn tune_recommends_a_builders_line_for_the_builder_from_its_measurements() {
    let env = TestEnv::new("builders-tune");
    let builder = LoopbackBuilder::start();
    // The fixture's seven `sleep 1` derivations here, without builders...
    run_ok(
        Command::new(ledger_bin())
            .arg("build")
            .arg("-f")
            .arg(fixture())
            .arg("graph")
            .args(["--argstr", "salt", &format!("{}-here", env.salt)])
            .args(["--no-link", "-j", "4", "--option", "substituters", ""])
            .args(["--option", "builders", ""])
            .args(["--option", "post-build-hook", hook_bin()])
            .env("NIX_LEDGER_HOME", env.home()),
    );
    // ...and the same names (another salt) all on the builder.
    let there = format!("{}-there", env.salt);
    run_ok(&mut build_salted(&env, &there, &builder, "graph", "0"));
    let remote =
        env.query("SELECT count(*) AS n FROM builds WHERE machine IS NOT NULL AND machine != ''");
    assert_eq!(remote[0]["n"], 7, "-j 0 builds everything remotely");

    let spec = builder.builders(&system(), 2);
    let report = env.ledger_json(&["tune", "--builders", &spec]);
    // Both sessions are workloads, the remote builds included.
    let workloads = report["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), 2, "{report:#}");
    assert!(
        workloads.iter().all(|w| u(&w["derivations"]) == 7),
        "{workloads:#?}"
    );
    // The local-only recommendation is still there.
    assert!(report["recommended"].is_object() && report["candidates"].is_array());

    let machines = report["builders"].as_array().unwrap();
    assert_eq!(machines.len(), 1, "{report:#}");
    let b = &machines[0];
    assert_eq!(b["uri"], builder.uri().as_str(), "{b}");
    assert_eq!(u(&b["builds"]), 7, "{b}");
    assert_eq!(b["takes_builds"], true);
    // The builder is this machine: every name took ~1 s in both places.
    assert_eq!(u(&b["compared_names"]), 7, "{b}");
    let speed = b["measured_speed"].as_f64().unwrap();
    assert!((0.7..=1.4).contains(&speed), "{b}");
    assert_eq!(u(&b["speed_factor"]), 1, "{b}");
    assert!(b["transfer_ms_per_build"].is_u64(), "{b}");
    assert_eq!(u(&b["current_max_jobs"]), 2);
    assert!(u(&b["slots_considered"]) >= 2, "{b}");
    // Sleeps run side by side here as well as there, and Nix sends a build to the
    // builder before using a free slot here: each would pay its copies for nothing.
    assert_eq!(u(&b["max_jobs"]), 0, "{b}");
    assert_eq!(u(&b["predicted_builds"]), 0, "{b}");
    let w = &report["with_builders"];
    check_lines(w, &builder, 0);
    assert_eq!(u(&w["local_builds"]), 14, "{w}");
    let text = env.ledger_ok(&["tune", "--builders", &spec]);
    eprintln!("{text}");
    assert!(text.contains("With the remote builders:"), "{text}");
    assert!(
        text.contains("max-jobs 0: the builder gains nothing"),
        "{text}"
    );
    assert!(text.contains("nix.buildMachines = ["), "{text}");

    // Nix 2.8 postpones a build the builder declines until the poll (5 s), so even with
    // one local slot the builder costs more than it gives for this graph; but on a
    // machine without memory for a single build here (128 MiB: all kept back), every
    // local setting risks an OOM and the builder takes everything.
    let report = env.ledger_json(&["tune", "--builders", &spec, "--memory", "128M"]);
    let b = &report["builders"][0];
    let w = &report["with_builders"];
    assert_eq!(u(&w["max_jobs"]), 0, "{report:#}");
    assert_eq!(w["oom_risk"], false, "{w}");
    assert_eq!(u(&w["local_builds"]), 0, "{w}");
    let slots = u(&b["max_jobs"]);
    assert!(
        (1..=u(&b["slots_considered"])).contains(&slots),
        "{report:#}"
    );
    assert_eq!(u(&b["predicted_builds"]), 14, "{b}");
    check_lines(w, &builder, slots);
    let text = env.ledger_ok(&["tune", "--builders", &spec, "--memory", "128M"]);
    assert!(text.contains("max-jobs = 0"), "{text}");

    // A builder of another system takes nothing: listed, not simulated.
    let other = format!("{} riscv64-none - 2", builder.uri());
    let report = env.ledger_json(&["tune", "--builders", &other]);
    assert_eq!(report["builders"][0]["takes_builds"], false, "{report:#}");
    assert!(report["with_builders"].is_null());
    // A bad line is a usage error naming it.
    let out = env.ledger(&["tune", "--builders", "h x86_64-linux - many"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max-jobs `many`"), "{stderr}");
}

/// The builders line and the NixOS snippet of `w` name `builder` with `slots` slots and
/// speed factor 1.
fn check_lines(w: &Value, builder: &LoopbackBuilder, slots: u64) {
    let line = format!("{} {} - {slots} 1", builder.uri(), system());
    assert_eq!(w["builders_line"], line.as_str(), "{w:#}");
    let conf = w["nix_conf"].as_str().unwrap();
    assert!(conf.contains(&format!("\nbuilders = {line}\n")), "{conf}");
    assert!(
        conf.starts_with(&format!("max-jobs = {}\n", u(&w["max_jobs"]))),
        "{conf}"
    );
    let nixos = w["nix_build_machines"].as_str().unwrap();
    assert!(
        nixos.contains("hostName = \"nlbuilder?remote-store=local?root=")
            && nixos.contains("protocol = \"ssh-ng\";")
            && nixos.contains(&format!("maxJobs = {slots}; speedFactor = 1;")),
        "{nixos}"
    );
    assert!(u(&w["makespan_ms"]) > 0, "{w}");
}
