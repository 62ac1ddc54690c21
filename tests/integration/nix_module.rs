//! The Nix side: flake.nix, nix-module/*.nix and the files under tests/nix.
//!
//! Everything here runs `nix-instantiate` (Debian's Nix 2.8 in CI is enough) and asserts
//! on its JSON output. nixpkgs is not available in CI, so the modules are evaluated with
//! a small stand-in module system (tests/nix/stub-lib.nix) that follows nixpkgs'
//! semantics for what the modules use. The `real_*` tests evaluate the same modules in
//! real NixOS and nix-darwin configurations when pointed at local checkouts:
//!
//! - `NIX_LEDGER_TEST_NIXPKGS`: a nixpkgs tree (NixOS test, and nixpkgs for nix-darwin);
//! - `NIX_LEDGER_TEST_NIX_DARWIN`: a nix-darwin tree;
//! - `NIX_LEDGER_TEST_NIXPKGS_LIB` (optional): a newer `lib` (e.g. nixpkgs.lib) for a
//!   nix-darwin newer than the nixpkgs tree.
//!
//! Without them those tests print "NOT RUN" and pass. Run with `--nocapture` to see the
//! evaluated values.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn nix_file(name: &str) -> String {
    repo().join("tests/nix").join(name).display().to_string()
}

/// An argument for the evaluated file: `--argstr` (a string) or `--arg` (a Nix expression).
enum Arg<'a> {
    Str(&'a str, &'a str),
    Expr(&'a str, &'a str),
}

fn nix_instantiate(file: &str, args: &[Arg]) -> Output {
    let mut cmd = Command::new("nix-instantiate");
    // --readonly-mode: evaluation only, nothing written to the store (CI may not own it).
    // An empty substituter list: no waiting on cache.nixos.org without a network.
    cmd.args(["--readonly-mode", "--eval", "--strict", "--json"])
        .args(["--option", "substituters", ""])
        .arg(file);
    for arg in args {
        match arg {
            Arg::Str(name, value) => cmd.args(["--argstr", name, value]),
            Arg::Expr(name, value) => cmd.args(["--arg", name, value]),
        };
    }
    cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run nix-instantiate ({e}); these tests need Nix \
             (skip them with `cargo test -- --skip nix_module`)"
        )
    })
}

/// Evaluates `file` and parses its JSON; panics with Nix's error otherwise.
fn eval(file: &str, args: &[Arg]) -> Value {
    expect_json(file, nix_instantiate(file, args))
}

fn expect_json(file: &str, out: Output) -> Value {
    assert!(
        out.status.success(),
        "nix-instantiate {file} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("nix-instantiate printed JSON")
}

/// Evaluates `file`, expecting failure; returns Nix's error message.
fn eval_error(file: &str, args: &[Arg]) -> String {
    expect_error(file, nix_instantiate(file, args))
}

fn expect_error(file: &str, out: Output) -> String {
    assert!(
        !out.status.success(),
        "expected nix-instantiate {file} to fail, it printed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The stub evaluation of nix-module/<platform>.nix with `config` (a Nix module).
fn module(platform: &str, config: &str) -> Value {
    eval(
        &nix_file("eval-module.nix"),
        &[
            Arg::Str("platform", platform),
            Arg::Expr("userConfig", config),
        ],
    )
}

fn module_with_package(platform: &str, config: &str, package_out: &Path) -> Value {
    eval(
        &nix_file("eval-module.nix"),
        &[
            Arg::Str("platform", platform),
            Arg::Expr("userConfig", config),
            Arg::Str("packageOut", &package_out.display().to_string()),
        ],
    )
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` is not a string in {v:#}"))
}

fn assertions(v: &Value) -> Vec<String> {
    v["failedAssertions"]
        .as_array()
        .unwrap_or_else(|| panic!("no failedAssertions in {v:#}"))
        .iter()
        .map(|m| m.as_str().expect("assertion message").to_string())
        .collect()
}

const ENABLED: &str = "{ services.nix-ledger.enable = true; }";
const PLATFORMS: [&str; 2] = ["nixos", "darwin"];

// --- every file parses ---------------------------------------------------------------

#[test]
fn every_nix_file_parses() {
    let mut files = Vec::new();
    let walk = walkdir::WalkDir::new(repo()).into_iter().filter_entry(|e| {
        let name = e.file_name().to_string_lossy();
        !(name == "target" || name == ".git" || name.starts_with("result"))
    });
    for entry in walk {
        let entry = entry.expect("readable directory entry");
        if entry.file_type().is_file() && entry.path().extension().is_some_and(|e| e == "nix") {
            files.push(entry.into_path());
        }
    }
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            f.strip_prefix(repo())
                .expect("under repo")
                .display()
                .to_string()
        })
        .collect();
    for expected in [
        "flake.nix",
        "default.nix",
        "nix-module/common.nix",
        "nix-module/nixos.nix",
        "nix-module/darwin.nix",
        "nix-module/package.nix",
        "tests/nix/stub-lib.nix",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    for file in &files {
        let out = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(file)
            .output()
            .expect("run nix-instantiate --parse");
        assert!(
            out.status.success(),
            "{} does not parse:\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// --- options and defaults ------------------------------------------------------------

#[test]
fn every_option_has_a_description() {
    for platform in PLATFORMS {
        let v = module(platform, ENABLED);
        let options = v["options"].as_array().expect("options list");
        let paths: Vec<&str> = options
            .iter()
            .map(|o| o["path"].as_str().expect("path"))
            .collect();
        for expected in [
            "services.nix-ledger.enable",
            "services.nix-ledger.package",
            "services.nix-ledger.shellAlias",
            "services.nix-ledger.spoolDir",
            "services.nix-ledger.hook.enable",
            "services.nix-ledger.hook.chain",
            "services.nix-ledger.hook.chainFailure",
            "services.nix-ledger.hook.program",
            "services.nix-ledger.maintenance.enable",
            "services.nix-ledger.maintenance.user",
            "services.nix-ledger.maintenance.extraCommands",
        ] {
            assert!(paths.contains(&expected), "{platform}: no {expected}");
        }
        let schedule = if platform == "nixos" {
            "services.nix-ledger.maintenance.dates"
        } else {
            "services.nix-ledger.maintenance.interval"
        };
        assert!(paths.contains(&schedule), "{platform}: no {schedule}");
        let undescribed: Vec<&Value> = options.iter().filter(|o| o["described"] != true).collect();
        assert!(
            undescribed.is_empty(),
            "{platform}: options without description: {undescribed:?}"
        );
    }
}

#[test]
fn enabled_module_sets_hook_alias_and_package() {
    for platform in PLATFORMS {
        let v = module(platform, ENABLED);
        assert_eq!(assertions(&v), Vec::<String>::new(), "{platform}");
        assert_eq!(v["warnings"], json!([]), "{platform}");
        let package = v["systemPackages"][0].as_str().expect("package path");
        assert!(
            package.ends_with("-nix-ledger-0.1.0"),
            "{platform}: {package}"
        );
        assert_eq!(
            str_of(&v, "postBuildHook"),
            format!("{package}/bin/nix-ledger-hook"),
            "{platform}"
        );
        assert_eq!(v["hookProgram"], v["postBuildHook"], "{platform}");
        assert_eq!(
            v["shellAliases"],
            json!({ "nb": "nix-ledger" }),
            "{platform}"
        );
        assert_eq!(v["chainScript"], Value::Null, "{platform}");
    }
}

#[test]
fn disabled_module_changes_nothing() {
    for platform in PLATFORMS {
        let v = module(platform, "{ }");
        assert_eq!(v["postBuildHook"], Value::Null, "{platform}");
        assert_eq!(v["shellAliases"], json!({}), "{platform}");
        assert_eq!(v["systemPackages"], json!([]), "{platform}");
    }
    assert_eq!(module("nixos", "{ }")["tmpfiles"], json!([]));
    assert_eq!(module("darwin", "{ }")["activation"], json!(""));
}

#[test]
fn shell_alias_can_be_renamed_or_dropped() {
    for platform in PLATFORMS {
        let renamed = module(
            platform,
            r#"{ services.nix-ledger = { enable = true; shellAlias = "ledger"; }; }"#,
        );
        assert_eq!(renamed["shellAliases"], json!({ "ledger": "nix-ledger" }));
        let none = module(
            platform,
            "{ services.nix-ledger = { enable = true; shellAlias = null; }; }",
        );
        assert_eq!(none["shellAliases"], json!({}));
    }
}

#[test]
fn hook_can_be_left_out_of_nix_conf() {
    for platform in PLATFORMS {
        let v = module(
            platform,
            "{ services.nix-ledger = { enable = true; hook.enable = false; }; }",
        );
        assert_eq!(v["postBuildHook"], Value::Null, "{platform}");
        // The rest of the module still applies.
        assert_eq!(v["shellAliases"]["nb"], "nix-ledger");
    }
}

// --- the system spool ---------------------------------------------------------------

#[test]
fn nixos_creates_spool_with_tmpfiles() {
    let v = module("nixos", ENABLED);
    assert_eq!(
        v["tmpfiles"],
        json!([
            "d /var/lib/nix-ledger 0755 root root -",
            "f /var/lib/nix-ledger/spool.jsonl 0644 root root -"
        ])
    );
}

#[test]
fn darwin_creates_spool_in_activation() {
    let v = module("darwin", ENABLED);
    let script = str_of(&v, "activation");
    for line in [
        "mkdir -p /var/lib/nix-ledger",
        "chown 0:0 /var/lib/nix-ledger",
        "chmod 0755 /var/lib/nix-ledger",
        "touch /var/lib/nix-ledger/spool.jsonl",
        "chown 0:0 /var/lib/nix-ledger/spool.jsonl",
        "chmod 0644 /var/lib/nix-ledger/spool.jsonl",
    ] {
        assert!(script.contains(line), "no `{line}` in:\n{script}");
    }
}

#[test]
fn darwin_activation_script_creates_the_spool_for_real() {
    // Run the activation fragment against a scratch directory instead of /var/lib.
    let v = module("darwin", ENABLED);
    let dir = tempfile::tempdir().expect("tempdir");
    let spool_dir = dir.path().join("var/lib/nix-ledger");
    let script = str_of(&v, "activation")
        .replace("/var/lib/nix-ledger", &spool_dir.display().to_string())
        // chown to root only works as root; the modes are what this checks.
        .replace("chown 0:0", "true");
    for _ in 0..2 {
        // Twice: activation runs on every switch and must be idempotent.
        let out = Command::new("bash")
            .args(["-euc", &script])
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mode = |p: &Path| fs::metadata(p).expect("exists").permissions().mode() & 0o7777;
    assert_eq!(mode(&spool_dir), 0o755);
    assert_eq!(mode(&spool_dir.join("spool.jsonl")), 0o644);
}

// --- the maintenance job ------------------------------------------------------------

#[test]
fn maintenance_is_off_by_default() {
    assert_eq!(module("nixos", ENABLED)["timer"], Value::Null);
    assert_eq!(module("nixos", ENABLED)["service"], Value::Null);
    assert_eq!(module("darwin", ENABLED)["launchd"], Value::Null);
}

#[test]
fn maintenance_needs_a_user() {
    for platform in PLATFORMS {
        let v = module(
            platform,
            "{ services.nix-ledger = { enable = true; maintenance.enable = true; }; }",
        );
        let failed = assertions(&v);
        assert_eq!(failed.len(), 1, "{platform}: {failed:?}");
        assert!(failed[0].contains("services.nix-ledger.maintenance.user"));
        assert!(failed[0].contains("root's ledger"));
    }
    let odd = module(
        "nixos",
        r#"{ services.nix-ledger = { enable = true; maintenance.enable = true; maintenance.user = "a b"; }; }"#,
    );
    assert!(assertions(&odd)[0].contains("plain user name"));
}

#[test]
fn nixos_maintenance_is_a_systemd_timer() {
    let v = module(
        "nixos",
        r#"{ services.nix-ledger = { enable = true; maintenance.enable = true; maintenance.user = "alice"; }; }"#,
    );
    assert_eq!(assertions(&v), Vec::<String>::new());
    assert_eq!(
        v["timer"],
        json!({
            "wantedBy": ["timers.target"],
            "timerConfig": { "OnCalendar": "daily", "Persistent": true, "RandomizedDelaySec": "15min" }
        })
    );
    let service = &v["service"]["serviceConfig"];
    assert_eq!(service["User"], "alice");
    assert_eq!(service["Type"], "oneshot");
    assert!(str_of(service, "ExecStart").ends_with("-nix-ledger-maintenance"));
    let script = str_of(&v, "maintenanceScript");
    assert!(script.contains("HOME=~alice"), "{script}");
    assert!(script.contains("\nnix-ledger ingest\n"), "{script}");

    let hourly = module(
        "nixos",
        r#"{ services.nix-ledger = { enable = true; maintenance = { enable = true; user = "alice"; dates = "hourly"; }; }; }"#,
    );
    assert_eq!(hourly["timer"]["timerConfig"]["OnCalendar"], "hourly");
}

#[test]
fn darwin_maintenance_is_a_launchd_daemon() {
    let v = module(
        "darwin",
        r#"{ services.nix-ledger = { enable = true; maintenance.enable = true; maintenance.user = "alice"; }; }"#,
    );
    assert_eq!(assertions(&v), Vec::<String>::new());
    let daemon = &v["launchd"];
    assert!(str_of(daemon, "command").ends_with("-nix-ledger-maintenance"));
    let config = &daemon["serviceConfig"];
    assert_eq!(config["UserName"], "alice");
    assert_eq!(
        config["StartCalendarInterval"],
        json!([{ "Hour": 3, "Minute": 45 }])
    );
    assert_eq!(config["RunAtLoad"], false);
    assert_eq!(
        config["StandardErrorPath"],
        "/var/log/nix-ledger-maintenance.log"
    );

    let hourly = module(
        "darwin",
        r#"{ services.nix-ledger = { enable = true; maintenance = { enable = true; user = "alice"; interval = [ { Minute = 0; } ]; }; }; }"#,
    );
    assert_eq!(
        hourly["launchd"]["serviceConfig"]["StartCalendarInterval"],
        json!([{ "Minute": 0 }])
    );
}

/// A directory standing in for the package's output, with executable scripts in bin/.
fn fake_package(dir: &Path, scripts: &[(&str, &str)]) -> PathBuf {
    let out = dir.join("nix-ledger-out");
    fs::create_dir_all(out.join("bin")).expect("mkdir bin");
    for (name, body) in scripts {
        write_executable(&out.join("bin").join(name), body);
    }
    out
}

fn write_executable(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn run_script(text: &str, dir: &Path, envs: &[(&str, &str)]) -> Output {
    let path = dir.join("script.sh");
    fs::write(&path, text).expect("write generated script");
    // bash explicitly: the shebang names the stub package set's (absent) bash.
    Command::new("bash")
        .arg(&path)
        .envs(envs.iter().copied())
        .output()
        .expect("run bash")
}

#[test]
fn maintenance_script_ingests_as_the_user_then_runs_extra_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let package = fake_package(
        dir.path(),
        &[("nix-ledger", r#"echo "nix-ledger $* HOME=$HOME" >> "$LOG""#)],
    );
    let user = String::from_utf8(
        Command::new("id")
            .arg("-un")
            .output()
            .expect("id -un")
            .stdout,
    )
    .expect("utf-8 user name");
    let user = user.trim();
    let home = String::from_utf8(
        Command::new("bash")
            .args(["-c", &format!("echo ~{user}")])
            .output()
            .expect("bash")
            .stdout,
    )
    .expect("utf-8 home");
    let config = format!(
        r#"{{ services.nix-ledger = {{ enable = true; maintenance = {{ enable = true; user = "{user}"; extraCommands = "nix-ledger gc --apply"; }}; }}; }}"#
    );
    let v = module_with_package("nixos", &config, &package);
    let script = str_of(&v, "maintenanceScript");
    let log_str = log.display().to_string();
    let out = run_script(
        script,
        dir.path(),
        &[("LOG", &log_str), ("HOME", "/nonexistent")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_to_string(&log).expect("log"),
        format!(
            "nix-ledger ingest HOME={home}\nnix-ledger gc --apply HOME={home}\n",
            home = home.trim()
        )
    );

    // An unknown user stops the job before it touches any ledger.
    let v = module_with_package(
        "nixos",
        r#"{ services.nix-ledger = { enable = true; maintenance = { enable = true; user = "no-such-user-nix-ledger"; }; }; }"#,
        &package,
    );
    fs::remove_file(&log).expect("rm log");
    let out = run_script(
        str_of(&v, "maintenanceScript"),
        dir.path(),
        &[("LOG", &log_str)],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no home directory"));
    assert!(!log.exists());
}

// --- an existing post-build-hook -----------------------------------------------------

#[test]
fn existing_hook_fails_evaluation_with_instructions() {
    for platform in PLATFORMS {
        for definition in [
            r#"nix.settings.post-build-hook = "/etc/nix/upload.sh";"#,
            // Lower priority than ours: would be dropped silently.
            r#"nix.settings.post-build-hook = lib.mkDefault "/etc/nix/upload.sh";"#,
            // Higher: would drop ours silently.
            r#"nix.settings.post-build-hook = lib.mkForce "/etc/nix/upload.sh";"#,
            r#"nix.settings = lib.mkIf true { post-build-hook = "/etc/nix/upload.sh"; };"#,
        ] {
            let v = module(
                platform,
                &format!("{{ lib, ... }}: {{ services.nix-ledger.enable = true; {definition} }}"),
            );
            let failed = assertions(&v);
            assert_eq!(failed.len(), 1, "{platform} {definition}: {failed:?}");
            let message = &failed[0];
            assert!(message.contains("/etc/nix/upload.sh"), "{message}");
            assert!(
                message.contains("services.nix-ledger.hook.chain = <the same path>;"),
                "{message}"
            );
            assert!(message.contains("lib.mkForce config.services.nix-ledger.hook.program"));
        }
        // A definition that is switched off is no conflict.
        let off = module(
            platform,
            r#"{ lib, ... }: { services.nix-ledger.enable = true; nix.settings.post-build-hook = lib.mkIf false "/etc/nix/upload.sh"; }"#,
        );
        assert_eq!(assertions(&off), Vec::<String>::new());
    }
}

#[test]
fn hook_in_extra_options_fails_evaluation() {
    let v = module(
        "nixos",
        r#"{ services.nix-ledger.enable = true; nix.extraOptions = "keep-outputs = true\n  post-build-hook = /etc/nix/upload.sh\n"; }"#,
    );
    let failed = assertions(&v);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("nix.extraOptions contains a post-build-hook line"));
}

#[test]
fn hook_set_by_an_uneditable_module_can_be_overridden() {
    for platform in PLATFORMS {
        let v = module(
            platform,
            r#"{ lib, config, ... }: {
                 imports = [ { nix.settings.post-build-hook = "/etc/nix/upload.sh"; } ];
                 services.nix-ledger = { enable = true; hook.chain = "/etc/nix/upload.sh"; };
                 nix.settings.post-build-hook = lib.mkForce config.services.nix-ledger.hook.program;
               }"#,
        );
        assert_eq!(assertions(&v), Vec::<String>::new(), "{platform}");
        assert_eq!(v["postBuildHook"], v["hookProgram"]);
        assert!(str_of(&v, "postBuildHook").ends_with("-nix-ledger-post-build-hook"));
    }
}

#[test]
fn chained_hook_goes_into_a_generated_script() {
    for platform in PLATFORMS {
        let v = module(
            platform,
            r#"{ services.nix-ledger = { enable = true; hook.chain = "/etc/nix/upload.sh"; }; }"#,
        );
        assert_eq!(assertions(&v), Vec::<String>::new());
        let hook = str_of(&v, "postBuildHook");
        assert!(hook.ends_with("-nix-ledger-post-build-hook"), "{hook}");
        let script = str_of(&v, "chainScript");
        assert!(script.starts_with("#!/"), "{script}");
        let ours = script
            .find("/bin/nix-ledger-hook")
            .expect("runs nix-ledger-hook");
        let theirs = script
            .find("\n/etc/nix/upload.sh")
            .expect("runs the chained hook");
        assert!(ours < theirs, "records before uploading:\n{script}");
    }
}

/// Runs the generated chain script with stand-ins for nix-ledger-hook and an upload hook.
/// Returns (exit code, stderr, log of the calls).
fn run_chain(chain_failure: &str, ledger_exit: u8, upload_exit: u8) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let package = fake_package(
        dir.path(),
        &[(
            "nix-ledger-hook",
            &format!(r#"echo "ledger $DRV_PATH" >> "$LOG"; exit {ledger_exit}"#),
        )],
    );
    let upload = dir.path().join("upload.sh");
    write_executable(
        &upload,
        &format!(r#"echo "upload $DRV_PATH $OUT_PATHS" >> "$LOG"; exit {upload_exit}"#),
    );
    let config = format!(
        r#"{{ services.nix-ledger = {{ enable = true; hook.chain = "{}"; hook.chainFailure = "{chain_failure}"; }}; }}"#,
        upload.display()
    );
    let v = module_with_package("nixos", &config, &package);
    let log_str = log.display().to_string();
    let out = run_script(
        str_of(&v, "chainScript"),
        dir.path(),
        &[
            ("LOG", log_str.as_str()),
            ("DRV_PATH", "/nix/store/aaaa-hello.drv"),
            ("OUT_PATHS", "/nix/store/bbbb-hello"),
        ],
    );
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        fs::read_to_string(&log).unwrap_or_default(),
    )
}

#[test]
fn chain_script_records_then_runs_the_chained_hook() {
    let (code, stderr, log) = run_chain("continue", 0, 0);
    assert_eq!(code, 0);
    assert_eq!(stderr, "");
    assert_eq!(
        log,
        "ledger /nix/store/aaaa-hello.drv\nupload /nix/store/aaaa-hello.drv /nix/store/bbbb-hello\n"
    );
}

#[test]
fn chain_script_contains_a_failing_upload_by_default() {
    let (code, stderr, log) = run_chain("continue", 0, 3);
    assert_eq!(code, 0, "Nix keeps building");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("failed (exit 3) for /nix/store/aaaa-hello.drv"),
        "{stderr}"
    );
    assert!(stderr.contains("builds continue"), "{stderr}");
    assert_eq!(log.lines().count(), 2);
}

#[test]
fn chain_script_can_propagate_a_failing_upload() {
    let (code, stderr, _) = run_chain("abort", 0, 3);
    assert_eq!(code, 3, "Nix sees the hook's failure");
    assert!(stderr.contains("Nix stops building"), "{stderr}");
}

#[test]
fn chain_script_uploads_even_if_recording_failed() {
    let (code, stderr, log) = run_chain("continue", 1, 0);
    assert_eq!(code, 0);
    assert!(
        stderr.contains("nix-ledger-hook exited with status 1"),
        "{stderr}"
    );
    assert!(log.contains("upload /nix/store/aaaa-hello.drv"), "{log}");
}

#[test]
fn unmanaged_nix_conf_gets_a_warning_with_the_line_to_add() {
    let v = module(
        "nixos",
        "{ services.nix-ledger.enable = true; nix.enable = false; }",
    );
    let warnings = v["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let warning = warnings[0].as_str().expect("warning text");
    assert!(
        warning.contains(&format!("post-build-hook = {}", str_of(&v, "hookProgram"))),
        "{warning}"
    );
}

// --- the flake ---------------------------------------------------------------------------

#[test]
fn flake_outputs_evaluate_with_stub_inputs() {
    for system in ["x86_64-linux", "aarch64-darwin"] {
        let v = eval(&nix_file("eval-flake.nix"), &[Arg::Str("system", system)]);
        assert_eq!(v["outputArguments"], json!(["nixpkgs", "self"]));
        assert_eq!(
            v["outputNames"],
            json!(["darwinModules", "nixosModules", "overlays", "packages"])
        );
        assert_eq!(
            v["packageSystems"],
            json!([
                "aarch64-darwin",
                "aarch64-linux",
                "x86_64-darwin",
                "x86_64-linux"
            ])
        );
        assert_eq!(v["packageNames"], json!(["default", "nix-ledger"]));
        let package = &v["package"];
        assert_eq!(package["pname"], "nix-ledger");
        assert_eq!(package["version"], "0.1.0");
        assert_eq!(package["lockFile"], "Cargo.lock");
        assert_eq!(package["srcIsRepositoryRoot"], true);
        assert_eq!(package["mainProgram"], "nix-ledger");
        assert_eq!(package["checkFlags"], json!(["--skip=nix_module"]));
        assert_eq!(package["sameAsNamed"], true);
        assert_eq!(
            package["srcKeeps"],
            json!({
                "src": true, "hook": true, "tests": true, "Cargo.toml": true, "Cargo.lock": true,
                "target": false, "nix-module": false, "docs": false, "flake.nix": false,
                "result": false, "result-bin": false
            })
        );
        let darwin_inputs = package["buildInputs"].as_array().expect("buildInputs");
        assert_eq!(darwin_inputs.len(), usize::from(system.ends_with("darwin")));
        assert_eq!(v["overlayPackage"], "nix-ledger");
        assert_eq!(v["overlayOutPath"], true);
        assert_eq!(v["nixosModule"], json!(["nix-module/nixos.nix"]));
        assert_eq!(v["darwinModule"], json!(["nix-module/darwin.nix"]));
        for platform in PLATFORMS {
            let m = &v[platform];
            assert_eq!(assertions(m), Vec::<String>::new());
            assert!(str_of(m, "postBuildHook").ends_with("/bin/nix-ledger-hook"));
        }
    }
}

#[test]
fn stub_module_system_rejects_what_nixpkgs_rejects() {
    // The harness is only worth something if it fails where the real one does.
    let undeclared = eval_error(
        &nix_file("eval-module.nix"),
        &[
            Arg::Str("platform", "nixos"),
            Arg::Expr("userConfig", "{ services.nix-ledger.enabel = true; }"),
        ],
    );
    assert!(
        undeclared.contains("`services.nix-ledger.enabel' does not exist"),
        "{undeclared}"
    );
    let mistyped = eval_error(
        &nix_file("eval-module.nix"),
        &[
            Arg::Str("platform", "nixos"),
            Arg::Expr("userConfig", r#"{ services.nix-ledger.enable = "yes"; }"#),
        ],
    );
    assert!(mistyped.contains("is not of type `bool'"), "{mistyped}");
    let read_only = eval_error(
        &nix_file("eval-module.nix"),
        &[
            Arg::Str("platform", "nixos"),
            Arg::Expr(
                "userConfig",
                r#"{ services.nix-ledger = { enable = true; spoolDir = "/tmp"; }; }"#,
            ),
        ],
    );
    assert!(read_only.contains("read-only"), "{read_only}");
}

// --- the real module systems -----------------------------------------------------------

fn checkout(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

/// Prints the values a reviewer wants to see from a real evaluation.
fn show(title: &str, v: &Value) {
    let mut shown = v.clone();
    if let Some(map) = shown.as_object_mut() {
        map.remove("options");
    }
    eprintln!(
        "=== {title}\n{}",
        serde_json::to_string_pretty(&shown).expect("JSON")
    );
}

#[test]
fn real_nixos_configuration() {
    let Some(nixpkgs) = checkout("NIX_LEDGER_TEST_NIXPKGS") else {
        crate::util::say_not_run(
            "real_nixos_configuration: set NIX_LEDGER_TEST_NIXPKGS to a nixpkgs \
             checkout to evaluate the module in a real NixOS configuration",
        );
        return;
    };
    let file = nix_file("real-nixos.nix");
    let real = |config: &str, toplevel: bool| {
        eval(
            &file,
            &[
                Arg::Str("nixpkgs", &nixpkgs),
                Arg::Expr("userConfig", config),
                Arg::Expr("toplevel", if toplevel { "true" } else { "false" }),
            ],
        )
    };

    let v = real(
        r#"{ services.nix-ledger = { enable = true; maintenance.enable = true; maintenance.user = "alice"; }; }"#,
        true,
    );
    show("NixOS: enable + maintenance (user alice)", &v);
    assert_eq!(assertions(&v), Vec::<String>::new());
    let package = v["systemPackages"][0]
        .as_str()
        .expect("package in systemPackages");
    let hook = format!("{package}/bin/nix-ledger-hook");
    assert_eq!(v["postBuildHook"], hook.as_str());
    assert!(str_of(&v, "nixConf").contains(&format!("\npost-build-hook = {hook}\n")));
    assert_eq!(v["shellAliases"]["nb"], "nix-ledger");
    assert_eq!(
        v["tmpfiles"],
        json!([
            "d /var/lib/nix-ledger 0755 root root -",
            "f /var/lib/nix-ledger/spool.jsonl 0644 root root -"
        ])
    );
    assert!(str_of(&v, "timerUnit").contains("OnCalendar=daily"));
    assert!(str_of(&v, "serviceUnit").contains("User=alice"));
    assert!(str_of(&v, "toplevel").ends_with(".drv"));
    assert!(str_of(&v, "package").ends_with("-nix-ledger-0.1.0.drv"));

    let chained = real(
        r#"{ services.nix-ledger = { enable = true; hook.chain = "/etc/nix/upload-to-cache.sh"; }; }"#,
        false,
    );
    show("NixOS: hook.chain = /etc/nix/upload-to-cache.sh", &chained);
    let hook = str_of(&chained, "postBuildHook");
    assert!(hook.ends_with("-nix-ledger-post-build-hook"));
    assert!(str_of(&chained, "nixConf").contains(&format!("\npost-build-hook = {hook}\n")));
    assert!(
        str_of(&chained, "chainScript").contains("\n'/etc/nix/upload-to-cache.sh' || status=$?")
    );

    let conflict = eval_error(
        &file,
        &[
            Arg::Str("nixpkgs", &nixpkgs),
            Arg::Expr(
                "userConfig",
                r#"{ services.nix-ledger.enable = true; nix.settings.post-build-hook = "/etc/nix/upload-to-cache.sh"; }"#,
            ),
            Arg::Expr("toplevel", "true"),
        ],
    );
    eprintln!("=== NixOS: nix.settings.post-build-hook set by the user\n{conflict}");
    assert!(conflict.contains("Failed assertions"), "{conflict}");
    assert!(conflict.contains("services.nix-ledger.hook.chain = <the same path>;"));

    let forced = real(
        r#"{ lib, config, ... }: {
             imports = [ { nix.settings.post-build-hook = "/etc/nix/upload-to-cache.sh"; } ];
             services.nix-ledger = { enable = true; hook.chain = "/etc/nix/upload-to-cache.sh"; };
             nix.settings.post-build-hook = lib.mkForce config.services.nix-ledger.hook.program;
           }"#,
        false,
    );
    assert_eq!(assertions(&forced), Vec::<String>::new());
    assert_eq!(forced["postBuildHook"], forced["hookProgram"]);
}

#[test]
fn real_nix_darwin_configuration() {
    let (Some(nix_darwin), Some(nixpkgs)) = (
        checkout("NIX_LEDGER_TEST_NIX_DARWIN"),
        checkout("NIX_LEDGER_TEST_NIXPKGS"),
    ) else {
        crate::util::say_not_run(
            "real_nix_darwin_configuration: set NIX_LEDGER_TEST_NIX_DARWIN and \
             NIX_LEDGER_TEST_NIXPKGS to checkouts to evaluate the module in a real \
             nix-darwin configuration",
        );
        return;
    };
    let lib = checkout("NIX_LEDGER_TEST_NIXPKGS_LIB").unwrap_or_default();
    let file = nix_file("real-darwin.nix");
    let run = |config: &str, toplevel: bool| {
        nix_instantiate(
            &file,
            &[
                Arg::Str("nixDarwin", &nix_darwin),
                Arg::Str("nixpkgs", &nixpkgs),
                Arg::Str("nixpkgsLib", &lib),
                Arg::Expr("userConfig", config),
                Arg::Expr("toplevel", if toplevel { "true" } else { "false" }),
            ],
        )
    };
    // Evaluating the whole system needs nix-darwin and nixpkgs of the same release,
    // which NIX_LEDGER_TEST_NIXPKGS_LIB says they are not.
    let whole_system = lib.is_empty();

    let v = expect_json(
        &file,
        run(
            r#"{ services.nix-ledger = { enable = true; maintenance.enable = true; maintenance.user = "alice"; }; }"#,
            whole_system,
        ),
    );
    show("nix-darwin: enable + maintenance (user alice)", &v);
    assert_eq!(assertions(&v), Vec::<String>::new());
    let package = v["systemPackages"][0]
        .as_str()
        .expect("package in systemPackages");
    let hook = format!("{package}/bin/nix-ledger-hook");
    assert_eq!(v["postBuildHook"], hook.as_str());
    assert!(str_of(&v, "nixConf").contains(&format!("\npost-build-hook = {hook}\n")));
    assert_eq!(v["shellAliases"]["nb"], "nix-ledger");
    assert!(str_of(&v, "activation").contains("chmod 0755 /var/lib/nix-ledger"));
    let daemon = &v["launchd"]["serviceConfig"];
    assert_eq!(daemon["UserName"], "alice");
    assert_eq!(daemon["Label"], "org.nixos.nix-ledger-maintenance");
    let plist = str_of(&v, "plist");
    assert!(
        plist.contains("<key>StartCalendarInterval</key>"),
        "{plist}"
    );
    assert!(plist.contains("<string>alice</string>"), "{plist}");
    if whole_system {
        assert!(str_of(&v, "toplevel").ends_with(".drv"));
    }

    let chained = expect_json(
        &file,
        run(
            r#"{ services.nix-ledger = { enable = true; hook.chain = "/etc/nix/upload-to-cache.sh"; }; }"#,
            false,
        ),
    );
    show(
        "nix-darwin: hook.chain = /etc/nix/upload-to-cache.sh",
        &chained,
    );
    let hook = str_of(&chained, "postBuildHook");
    assert!(hook.ends_with("-nix-ledger-post-build-hook"));
    assert!(str_of(&chained, "nixConf").contains(&format!("\npost-build-hook = {hook}\n")));

    let conflict = r#"{ services.nix-ledger.enable = true; nix.settings.post-build-hook = "/etc/nix/upload-to-cache.sh"; }"#;
    if whole_system {
        let message = expect_error(&file, run(conflict, true));
        eprintln!("=== nix-darwin: nix.settings.post-build-hook set by the user\n{message}");
        assert!(message.contains("Failed assertions"), "{message}");
        assert!(message.contains("services.nix-ledger.hook.chain = <the same path>;"));
    } else {
        let v = expect_json(&file, run(conflict, false));
        show(
            "nix-darwin: nix.settings.post-build-hook set by the user",
            &v,
        );
        assert!(assertions(&v)[0].contains("services.nix-ledger.hook.chain = <the same path>;"));
    }

    let unmanaged = expect_json(
        &file,
        run(
            "{ services.nix-ledger.enable = true; nix.enable = false; }",
            false,
        ),
    );
    show("nix-darwin: nix.enable = false", &unmanaged);
    let failed = assertions(&unmanaged);
    if failed.is_empty() {
        // nix-darwin with nix.enable: a warning with the line to add.
        let warning = unmanaged["warnings"][0].as_str().expect("a warning");
        assert!(warning.contains("post-build-hook = "), "{warning}");
    } else {
        // Older nix-darwin declared nix.enable as a removed option: setting it fails.
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].contains("nix.enable"), "{failed:?}");
    }
}
