//! The command line as a shell user meets it: completions for `nix-ledger` and its alias
//! `nb`, the man pages, `nb build --help`, and `history`'s defaults.

use std::process::Command;

use crate::util::{ledger_bin, run_ok, TestEnv};

/// What bash completes for `WORDS` (the last one being completed), after sourcing the
/// completions that `nix-ledger completions bash` prints.
fn bash_completes(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    // The function bash calls for this program, as `complete -p` tells it.
    let program = format!(
        "source {script}
         function=$(complete -p {cmd} | sed -n 's/.*-F \\([^ ]*\\).*/\\1/p')
         COMP_WORDS=({line}); COMP_CWORD={cword}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}
         \"$function\" {cmd} '{cur}' '{prev}'
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script = script.display(),
        cword = words.len() - 1,
        cmd = words[0],
        cur = words[words.len() - 1],
        prev = words[words.len() - 2],
    );
    let out = run_ok(Command::new("bash").args(["-c", &program]));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn completions_load_in_bash_for_the_program_and_its_alias() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("nix-ledger.bash");
    let out = run_ok(Command::new(ledger_bin()).args(["completions", "bash"]));
    std::fs::write(&script, &out.stdout).unwrap();
    let out = run_ok(Command::new("bash").arg("-c").arg(format!(
        "source {}; complete -p nb; complete -p nix-ledger",
        script.display()
    )));
    let registered = String::from_utf8(out.stdout).unwrap();
    assert!(registered.contains(" nb\n"), "{registered}");
    assert!(registered.contains(" nix-ledger\n"), "{registered}");
    for program in ["nb", "nix-ledger"] {
        let words = bash_completes(&script, &[program, "hist"]);
        assert_eq!(words, ["history"], "{program} hist<TAB>");
        let words = bash_completes(&script, &[program, "history", "--li"]);
        assert_eq!(words, ["--limit"], "{program} history --li<TAB>");
    }
    for shell in ["zsh", "fish"] {
        let out = run_ok(Command::new(ledger_bin()).args(["completions", shell, "--name", "nb"]));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("history"),
            "{shell}"
        );
    }
}

#[test]
fn the_man_pages_render() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        Command::new(ledger_bin())
            .args(["man", "--dir"])
            .arg(dir.path()),
    );
    for page in ["nix-ledger.1", "nix-ledger-history.1", "nix-ledger-why.1"] {
        let out = run_ok(
            Command::new("man")
                .arg("-l")
                .arg(dir.path().join(page))
                .env("MANPAGER", "cat")
                .env("COLUMNS", "100"),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("NAME"), "{page}: {text}");
        assert!(text.contains("nix-ledger"), "{page}: {text}");
    }
    let out = run_ok(Command::new(ledger_bin()).arg("man"));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(".ie"));
}

#[test]
fn build_help_shows_nbs_own_help_then_nix_builds() {
    let out = run_ok(Command::new(ledger_bin()).args(["build", "--help"]));
    let text = String::from_utf8_lossy(&out.stdout);
    let ours = text
        .find("Usage: nix-ledger build")
        .expect("nb's own usage");
    let rest = text.find("The rest is `nix build`'s").expect("the bridge");
    let nix = text
        .find("nix build - build a derivation")
        .expect("nix's manual");
    assert!(ours < rest && rest < nix, "{text}");
}

#[test]
fn history_shows_the_newest_fifty_unless_told_and_refuses_nonsense() {
    let env = TestEnv::new("cli-history");
    let mut spool = String::new();
    for i in 0..60 {
        let hash = crate::util::fake_hash(&format!("history-{i}"));
        spool.push_str(&format!(
            "{{\"v\":1,\"t\":{},\"drv\":\"/nix/store/{hash}-history-{i}.drv\",\"outputs\":[]}}\n",
            1_700_000_000_000u64 + i
        ));
    }
    std::fs::write(env.spool(), spool).unwrap();
    let text = env.ledger_ok(&["history"]);
    assert_eq!(text.lines().filter(|l| l.contains(" history-")).count(), 50);
    assert!(text.contains("the newest 50 shown"), "{text}");
    let all = env.ledger_ok(&["history", "--all"]);
    assert_eq!(all.lines().filter(|l| l.contains(" history-")).count(), 60);
    let json: serde_json::Value =
        serde_json::from_str(&env.ledger_ok(&["history", "--json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 50);
    assert_eq!(env.history().len(), 60);
    let none = env.ledger_ok(&["history", "--name", "no-such-name"]);
    assert!(
        none.contains("no builds recorded of a name containing"),
        "{none}"
    );
    for bad in [
        &["history", "--limit", "0"][..],
        &["history", "--name", ""],
        &["query", ""],
    ] {
        let out = env.ledger(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("API misuse"), "{bad:?}: {stderr}");
    }
}
