//! `nix-ledger switch | boot | test | build-system` on a flake fixture shaped like a NixOS
//! and a nix-darwin configuration (no nixpkgs), built with the real Nix.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::{ledger_bin, repo, TestEnv};

/// The fixture flake, copied into this test's home (so no lock file lands in the repo).
fn flake(env: &TestEnv) -> PathBuf {
    let dir = env.home().join("system-flake");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        repo().join("tests/fixtures/system-flake/flake.nix"),
        dir.join("flake.nix"),
    )
    .unwrap();
    dir
}

fn marker(env: &TestEnv) -> PathBuf {
    env.home().join("activations.txt")
}

fn system_cmd(env: &TestEnv, args: &[&str]) -> Output {
    let flake = format!("path:{}#testhost", flake(env).display());
    Command::new(ledger_bin())
        .args(args)
        .args([
            "--flake",
            &flake,
            "--",
            "--impure",
            "--option",
            "substituters",
            "",
        ])
        .env("NIX_LEDGER_HOME", env.home())
        .env("NIX_LEDGER_TEST_SALT", &env.salt)
        .env("NIX_LEDGER_TEST_MARKER", marker(env))
        .output()
        .unwrap()
}

fn stdout_lines(out: &Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The built system's store path, from the last word of the profile command.
fn system_path(line: &str) -> String {
    let path = line.rsplit(' ').next().unwrap().to_string();
    assert!(
        path.starts_with("/nix/store/") && Path::new(&path).is_dir(),
        "{line}"
    );
    path
}

/// The session of the one run, and its recorded build.
fn assert_recorded(env: &TestEnv, kind: &str, name: &str) {
    let rows = env.query(
        "SELECT s.kind, s.status, d.name, b.source, b.status AS build_status
         FROM sessions s JOIN builds b ON b.session_id = s.id JOIN derivations d USING (drv_path)",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["kind"], kind);
    assert_eq!(rows[0]["status"], "succeeded");
    assert_eq!(rows[0]["name"], name);
    assert_eq!(rows[0]["source"], "wrapper");
    assert_eq!(rows[0]["build_status"], "built");
}

#[test]
fn switch_dry_run_on_nixos_prints_what_nixos_rebuild_runs_after_a_recorded_build() {
    let env = TestEnv::new("switch-nixos");
    let lines = stdout_lines(&system_cmd(&env, &["switch", "--nixos", "--dry-run"]));
    assert_eq!(lines.len(), 2, "{lines:?}");
    let system = system_path(&lines[0]);
    assert!(system.ends_with("-nixos-system-testhost"));
    assert_eq!(
        lines,
        [
            format!("nix-env -p /nix/var/nix/profiles/system --set {system}"),
            format!("{system}/bin/switch-to-configuration switch"),
        ]
    );
    assert!(!marker(&env).exists(), "--dry-run must not activate");
    assert_recorded(&env, "switch", "nixos-system-testhost");

    // boot sets the profile too; test does not.
    let boot = stdout_lines(&system_cmd(&env, &["boot", "--nixos", "--dry-run"]));
    assert_eq!(
        boot[1],
        format!("{system}/bin/switch-to-configuration boot")
    );
    let test = stdout_lines(&system_cmd(&env, &["test", "--nixos", "--dry-run"]));
    assert_eq!(test, [format!("{system}/bin/switch-to-configuration test")]);
}

#[test]
fn switch_dry_run_on_darwin_prints_what_darwin_rebuild_runs_and_refuses_boot() {
    let env = TestEnv::new("switch-darwin");
    let lines = stdout_lines(&system_cmd(&env, &["switch", "--darwin", "--dry-run"]));
    let system = system_path(&lines[0]);
    assert!(system.ends_with("-darwin-system-testhost"));
    // The fixture's activate-user is nix-darwin's deprecated stub: not run.
    assert_eq!(
        lines,
        [
            format!("nix-env -p /nix/var/nix/profiles/system --set {system}"),
            format!("{system}/activate"),
        ]
    );
    assert_recorded(&env, "switch", "darwin-system-testhost");

    let boot = system_cmd(&env, &["boot", "--darwin", "--dry-run"]);
    assert_eq!(boot.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&boot.stderr);
    assert!(stderr.contains("nix-darwin has no `boot`"), "{stderr}");
}

#[test]
fn switch_on_nixos_sets_the_profile_and_runs_switch_to_configuration() {
    let env = TestEnv::new("switch-real");
    // A profile of this test's own, never the machine's system profile.
    let profile = format!("nix-ledger-test-{}", std::process::id());
    let out = system_cmd(&env, &["switch", "--nixos", "--profile-name", &profile]);
    let links: Vec<PathBuf> = std::fs::read_dir("/nix/var/nix/profiles/system-profiles")
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(&profile)
                })
                .collect()
        })
        .unwrap_or_default();
    let target = std::fs::canonicalize(format!("/nix/var/nix/profiles/system-profiles/{profile}"));
    for link in &links {
        let _ = std::fs::remove_file(link);
    }
    let _ = std::fs::remove_dir("/nix/var/nix/profiles/system-profiles");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target = target.unwrap().display().to_string();
    assert!(target.ends_with("-nixos-system-testhost"), "{target}");
    assert_eq!(
        std::fs::read_to_string(marker(&env)).unwrap(),
        "switch-to-configuration switch\n"
    );
    assert_recorded(&env, "switch", "nixos-system-testhost");
}
