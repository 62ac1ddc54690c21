//! The Nix side: every file parses.

use super::*;

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
