//! The Nix side: the maintenance job.

use serde_json::{json, Value};

use super::*;

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
