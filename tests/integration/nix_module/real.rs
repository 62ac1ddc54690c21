//! The Nix side: the real module systems.

use serde_json::{json, Value};

use super::*;

/// The checkout named by `var`; a test that needs one is ignored by default, so a
/// missing one when it is run anyway is a failure that says what to set.
fn checkout(var: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("set {var} to a checkout to run this test"))
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
#[ignore = "needs NIX_LEDGER_TEST_NIXPKGS: a nixpkgs checkout"]
fn real_nixos_configuration() {
    let nixpkgs = checkout("NIX_LEDGER_TEST_NIXPKGS");
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

    // The maintenance job exists by default, as root; retention reaches it, and beside
    // nix.gc.automatic it warns.
    let default = real("{ services.nix-ledger.enable = true; }", false);
    show("NixOS: enable (maintenance by default)", &default);
    assert!(str_of(&default, "timerUnit").contains("OnCalendar=daily"));
    assert!(str_of(&default, "serviceUnit").contains("User=root"));
    assert!(str_of(&default, "maintenanceScript")
        .contains("\nnix-ledger maintain --rotate-bytes 16M\n"));
    let retention = real(RETENTION_WITH_NIX_GC, false);
    show("NixOS: retention beside nix.gc.automatic", &retention);
    check_retention(&retention);
}

const RETENTION_WITH_NIX_GC: &str = r#"{ services.nix-ledger = { enable = true;
    retention = { enable = true; keepGenerations = 5; keepCostlierThan = "10m"; }; };
    nix.gc.automatic = true; }"#;

fn check_retention(v: &Value) {
    assert_eq!(assertions(v), Vec::<String>::new());
    assert!(
        str_of(v, "maintenanceScript").contains(
            "\nnix-ledger maintain --rotate-bytes 16M --retention --retention-every 1d \
             --keep-generations 5 --keep-costlier-than 10m\n"
        ),
        "{v}"
    );
    let warned = v["warnings"].as_array().expect("warnings").iter().any(|w| {
        w.as_str()
            .is_some_and(|w| w.contains("Set nix.gc.automatic = false"))
    });
    assert!(warned, "{v}");
}

#[test]
#[ignore = "needs NIX_LEDGER_TEST_NIX_DARWIN and NIX_LEDGER_TEST_NIXPKGS: checkouts"]
fn real_nix_darwin_configuration() {
    let nix_darwin = checkout("NIX_LEDGER_TEST_NIX_DARWIN");
    let nixpkgs = checkout("NIX_LEDGER_TEST_NIXPKGS");
    let lib = std::env::var("NIX_LEDGER_TEST_NIXPKGS_LIB").unwrap_or_default();
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
    let default = expect_json(&file, run("{ services.nix-ledger.enable = true; }", false));
    show("nix-darwin: enable (maintenance by default)", &default);
    assert_eq!(default["launchd"]["serviceConfig"]["UserName"], "root");
    assert!(str_of(&default, "plist").contains("<string>root</string>"));
    let retention = expect_json(&file, run(RETENTION_WITH_NIX_GC, false));
    show("nix-darwin: retention beside nix.gc.automatic", &retention);
    check_retention(&retention);

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
