//! The Nix side: the system spool.

use serde_json::json;

use super::*;

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
