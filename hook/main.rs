//! `nix-ledger-hook`: the program named in nix.conf as `post-build-hook`.
//!
//! It always exits 0: a non-zero exit would abort the user's whole Nix command.

/// Set to make the hook panic, so tests can check that a panic still exits 0.
const PANIC_FOR_TEST: &str = "NIX_LEDGER_HOOK_PANIC_FOR_TEST";

fn main() {
    nix_ledger::hook::harden_process();
    // Nothing below is expected to panic; if something does, the build must still go on.
    let _ = std::panic::catch_unwind(|| {
        if std::env::var_os(PANIC_FOR_TEST).is_some() {
            panic!("{PANIC_FOR_TEST} is set");
        }
        nix_ledger::hook::run(&nix_ledger::hook::HookInput::from_env());
    });
    std::process::exit(0);
}
