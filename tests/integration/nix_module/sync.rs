//! The Nix side: `services.nix-ledger.sync`, run by the maintenance job.

use super::*;

const HUB: &str = "postgres://ledger@db.example.org/fleet?sslmode=verify-full";

#[test]
fn sync_needs_a_url_and_the_maintenance_job_and_refuses_a_password_in_the_url() {
    for platform in PLATFORMS {
        let v = module(
            platform,
            "{ services.nix-ledger = { enable = true; sync.enable = true; }; }",
        );
        let failed = assertions(&v);
        assert_eq!(failed.len(), 1, "{platform}: {failed:?}");
        assert!(
            failed[0].contains("services.nix-ledger.sync.url"),
            "{failed:?}"
        );
        assert!(failed[0].contains("maintenance.enable"), "{failed:?}");
    }
    let with_password = module(
        "nixos",
        r#"{ services.nix-ledger = { enable = true; maintenance = { enable = true; user = "alice"; };
             sync = { enable = true; url = "postgres://ledger:hunter2@db/fleet"; }; }; }"#,
    );
    let failed = assertions(&with_password);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("passwordFile"), "{failed:?}");
    // Off by default: the job's script does not sync.
    let v = module(
        "nixos",
        r#"{ services.nix-ledger = { enable = true; maintenance = { enable = true; user = "alice"; }; }; }"#,
    );
    assert!(!str_of(&v, "maintenanceScript").contains("sync"));
}

/// The maintenance script with sync on and `user` as the job's user, run with a
/// stand-in `nix-ledger` that logs its arguments (and `NIX_LEDGER_HOME`) and whose `sync`
/// exits with `sync_exit`: (the log, the script's status).
fn run_job(user: &str, sync_exit: i32) -> (String, Option<i32>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let package = fake_package(
        dir.path(),
        &[(
            "nix-ledger",
            &format!(
                r#"echo "${{NIX_LEDGER_HOME:+NIX_LEDGER_HOME=$NIX_LEDGER_HOME }}nix-ledger $*" >> "$LOG"; [ "$1" != sync ] || exit {sync_exit}"#
            ),
        )],
    );
    let config = format!(
        r#"{{ services.nix-ledger = {{ enable = true;
             maintenance = {{ enable = true; user = "{}"; extraCommands = "nix-ledger gc --apply"; }};
             sync = {{ enable = true; url = "{HUB}"; passwordFile = "/run/secrets/hub pw"; }}; }}; }}"#,
        user
    );
    for platform in PLATFORMS {
        let v = module_with_package(platform, &config, &package);
        assert_eq!(assertions(&v), Vec::<String>::new(), "{platform}");
    }
    let v = module_with_package("nixos", &config, &package);
    let log_str = log.display().to_string();
    let out = run_script(
        str_of(&v, "maintenanceScript"),
        dir.path(),
        &[("LOG", &log_str)],
    );
    (fs::read_to_string(&log).expect("log"), out.status.code())
}

#[test]
fn the_maintenance_job_syncs_after_ingesting_with_the_password_file() {
    // A user's job ingests that user's ledger and shares it.
    let (log, status) = run_job("nobody", 0);
    assert_eq!(status, Some(0));
    assert_eq!(
        log,
        format!("nix-ledger ingest\nnix-ledger sync {HUB} --password-file /run/secrets/hub pw\nnix-ledger gc --apply\n")
    );
    // A hub that is down: the extra commands still run, then the job fails with it.
    let (log, status) = run_job("nobody", 4);
    assert_eq!(status, Some(4));
    assert!(log.ends_with("nix-ledger gc --apply\n"), "{log}");
}

#[test]
fn as_root_the_maintenance_job_shares_the_systems_ledger() {
    // Root's job keeps the system's ledger (every user's builds): that one is synced.
    let (log, status) = run_job("root", 0);
    assert_eq!(status, Some(0));
    assert_eq!(
        log,
        format!("nix-ledger maintain --rotate-bytes 16M\nNIX_LEDGER_HOME=/var/lib/nix-ledger nix-ledger sync {HUB} --password-file /run/secrets/hub pw\nnix-ledger gc --apply\n")
    );
}
