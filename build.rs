//! Build script: link libgcc's unwinder statically on GNU/Linux.
//!
//! Why: `nix-ledger-hook` is exec'd once per derivation while Nix's build loop waits for
//! it, and loading `libgcc_s.so` at every start is most of what a Rust program costs
//! over `/bin/true` (measured in docs/benchmarks.md). Rust's std asks the linker for
//! `-lgcc_s`; a linker script named `libgcc_s.a` in a directory searched first, pointing
//! at gcc's static unwinder `libgcc_eh.a`, links that in instead, which is what
//! `-static-libgcc` does for C programs. Panics still unwind (the hook relies on
//! `catch_unwind`). Where `libgcc_eh.a` cannot be found, or with
//! `NIX_LEDGER_DYNAMIC_LIBGCC` set, nothing changes.
//!
//! It also sets `cfg(root_tests)` when the build runs as root (as CI does), or when
//! `NIX_LEDGER_ROOT_TESTS=1`: tests that need root (another user's files, build users, a
//! nix-daemon) run then, and are reported as ignored ("needs root") otherwise, never
//! passed without testing.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=NIX_LEDGER_ROOT_TESTS");
    println!("cargo::rustc-check-cfg=cfg(root_tests)");
    if building_as_root() || env::var_os("NIX_LEDGER_ROOT_TESTS").is_some_and(|v| v == "1") {
        println!("cargo:rustc-cfg=root_tests");
    }
    println!("cargo:rerun-if-env-changed=NIX_LEDGER_DYNAMIC_LIBGCC");
    println!("cargo:rerun-if-env-changed=CC");
    let target = env::var("TARGET").unwrap_or_default();
    if !target.ends_with("-linux-gnu") || env::var_os("NIX_LEDGER_DYNAMIC_LIBGCC").is_some() {
        return;
    }
    let Some(libgcc_eh) = find_libgcc_eh() else {
        return;
    };
    let Some(out_dir) = env::var_os("OUT_DIR") else {
        return;
    };
    let dir = PathBuf::from(out_dir).join("static-libgcc");
    let script = format!("INPUT(\"{}\")\n", libgcc_eh.display());
    if std::fs::create_dir_all(&dir).is_ok()
        && std::fs::write(dir.join("libgcc_s.a"), script).is_ok()
    {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
}

/// gcc's static unwinder, as the C compiler that links for this target reports it.
fn find_libgcc_eh() -> Option<PathBuf> {
    let cc = env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let out = Command::new(cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    // Without the file, gcc echoes the bare name back.
    (path.is_absolute() && path.is_file() && !path.to_string_lossy().contains('"')).then_some(path)
}

/// Whether this build runs as root (`id -u` prints 0).
fn building_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"0")
}
