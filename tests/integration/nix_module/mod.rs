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
//! Without them those tests are ignored ("needs …"); `cargo test -- --ignored` runs them,
//! and then a missing checkout fails them. Run with `--nocapture` to see the evaluated
//! values.
//!
//! Modules by area: [`parses`] (every file), [`options`], [`spool`], [`maintenance`],
//! [`hook_chain`] (an existing post-build-hook), [`sync`] (the fleet hub), [`flake`], [`real`].

mod flake;
mod hook_chain;
mod maintenance;
mod options;
mod parses;
mod real;
mod spool;
mod sync;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::repo;

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
