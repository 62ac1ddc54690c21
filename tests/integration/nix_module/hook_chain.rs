//! The Nix side: an existing post-build-hook.

use super::*;

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
