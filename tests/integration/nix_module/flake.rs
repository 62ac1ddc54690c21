//! The Nix side: the flake.

use serde_json::json;

use super::*;

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
        // Completions for both names and the man pages, from the built binary.
        let post_install = str_of(package, "postInstall");
        for piece in [
            "for name in nix-ledger nb",
            "completions bash --name",
            "completions zsh --name",
            "completions fish --name",
            "man --dir man",
            "installManPage",
        ] {
            assert!(post_install.contains(piece), "{piece}: {post_install}");
        }
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
