//! The Nix side: options and defaults.

use serde_json::{json, Value};

use super::*;

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
            "services.nix-ledger.sync.enable",
            "services.nix-ledger.sync.url",
            "services.nix-ledger.sync.passwordFile",
            "services.nix-ledger.maintenance.rotateSize",
            "services.nix-ledger.retention.enable",
            "services.nix-ledger.retention.keepGenerations",
            "services.nix-ledger.retention.keepSince",
            "services.nix-ledger.retention.freeUntil",
            "services.nix-ledger.retention.keepCostlierThan",
            "services.nix-ledger.retention.schedule",
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
