//! The Nix side: the maintenance job.

use serde_json::{json, Value};

use super::*;

#[test]
fn maintenance_is_on_by_default_and_runs_as_root() {
    let nixos = module("nixos", ENABLED);
    assert_eq!(nixos["service"]["serviceConfig"]["User"], "root");
    assert_eq!(nixos["timer"]["timerConfig"]["OnCalendar"], "daily");
    let darwin = module("darwin", ENABLED);
    assert_eq!(darwin["launchd"]["serviceConfig"]["UserName"], "root");
    for v in [&nixos, &darwin] {
        let script = str_of(v, "maintenanceScript");
        assert!(script.contains("HOME=~root"), "{script}");
        assert!(
            script.contains("\nnix-ledger maintain --rotate-bytes 16M\n"),
            "no retention unless asked: {script}"
        );
        assert!(
            script.contains(":/run/current-system/sw/bin:"),
            "Nix on PATH: {script}"
        );
    }
    let off = "{ services.nix-ledger = { enable = true; maintenance.enable = false; }; }";
    assert_eq!(module("nixos", off)["timer"], Value::Null);
    assert_eq!(module("nixos", off)["service"], Value::Null);
    assert_eq!(module("darwin", off)["launchd"], Value::Null);
}

#[test]
fn maintenance_user_must_be_a_plain_name() {
    let odd = module(
        "nixos",
        r#"{ services.nix-ledger = { enable = true; maintenance.user = "a b"; }; }"#,
    );
    assert!(assertions(&odd)[0].contains("plain user name"));
}

#[test]
fn retention_options_reach_the_job() {
    for platform in PLATFORMS {
        let v = module(
            platform,
            r#"{ services.nix-ledger = { enable = true; maintenance.rotateSize = "64M";
                 retention = { enable = true; keepGenerations = 5; keepSince = "2 weeks";
                               freeUntil = "50G"; keepCostlierThan = "10m"; schedule = "7d"; }; }; }"#,
        );
        assert_eq!(assertions(&v), Vec::<String>::new(), "{platform}");
        assert_eq!(v["warnings"], json!([]), "{platform}");
        let script = str_of(&v, "maintenanceScript");
        assert!(
            script.contains(
                "\nnix-ledger maintain --rotate-bytes 64M --retention --retention-every 7d \
                 --keep-generations 5 --keep-since '2 weeks' --free-until 50G --keep-costlier-than 10m\n"
            ),
            "{platform}: {script}"
        );
    }
}

#[test]
fn retention_needs_the_job_as_root() {
    for config in [
        r#"{ services.nix-ledger = { enable = true; maintenance.user = "alice"; retention.enable = true; }; }"#,
        r#"{ services.nix-ledger = { enable = true; maintenance.enable = false; retention.enable = true; }; }"#,
    ] {
        for platform in PLATFORMS {
            let failed = assertions(&module(platform, config));
            assert_eq!(failed.len(), 1, "{platform} {config}: {failed:?}");
            assert!(failed[0].contains(
                "services.nix-ledger.retention.enable needs the maintenance job as root"
            ));
        }
    }
}

#[test]
fn retention_beside_nix_gc_automatic_warns() {
    for platform in PLATFORMS {
        let both = module(
            platform,
            "{ services.nix-ledger = { enable = true; retention.enable = true; }; nix.gc.automatic = true; }",
        );
        let warnings = both["warnings"].as_array().expect("warnings");
        assert_eq!(warnings.len(), 1, "{platform}: {warnings:?}");
        let text = warnings[0].as_str().expect("text");
        assert!(text.contains("nix.gc.automatic"), "{text}");
        assert!(text.contains("Set nix.gc.automatic = false"), "{text}");
        // Either alone is fine.
        let gc_only = module(
            platform,
            "{ services.nix-ledger.enable = true; nix.gc.automatic = true; }",
        );
        assert_eq!(gc_only["warnings"], json!([]), "{platform}");
    }
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
fn maintenance_script_maintains_as_root_or_ingests_as_a_user_then_runs_extra_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let package = fake_package(
        dir.path(),
        &[("nix-ledger", r#"echo "nix-ledger $* HOME=$HOME" >> "$LOG""#)],
    );
    let home_of = |user: &str| {
        let out = Command::new("bash")
            .args(["-c", &format!("echo ~{user}")])
            .output()
            .expect("bash")
            .stdout;
        String::from_utf8(out)
            .expect("utf-8 home")
            .trim()
            .to_string()
    };
    let log_str = log.display().to_string();
    for (user, expected) in [
        ("root", "nix-ledger maintain --rotate-bytes 16M"),
        ("nobody", "nix-ledger ingest"),
    ] {
        let config = format!(
            r#"{{ services.nix-ledger = {{ enable = true; maintenance = {{ user = "{user}"; extraCommands = "nix-ledger doctor"; }}; }}; }}"#
        );
        let v = module_with_package("nixos", &config, &package);
        let _ = fs::remove_file(&log);
        let out = run_script(
            str_of(&v, "maintenanceScript"),
            dir.path(),
            &[("LOG", &log_str), ("HOME", "/elsewhere")],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let home = home_of(user);
        assert_eq!(
            fs::read_to_string(&log).expect("log"),
            format!("{expected} HOME={home}\nnix-ledger doctor HOME={home}\n"),
        );
    }

    // An unknown user stops the job before it touches any ledger.
    let v = module_with_package(
        "nixos",
        r#"{ services.nix-ledger = { enable = true; maintenance = { user = "no-such-user-nix-ledger"; }; }; }"#,
        &package,
    );
    let _ = fs::remove_file(&log);
    let out = run_script(
        str_of(&v, "maintenanceScript"),
        dir.path(),
        &[("LOG", &log_str)],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no home directory"));
    assert!(!log.exists());
}
