//! The layers of docs/architecture.md, checked on the source: Nix readers (`nix`) → the
//! store (`store`) → the ledger (`ledger`) → features → the command line. A module may
//! use what is below it, never what is above; and no two top-level modules use each other
//! (directly or through others). The check reads `crate::…` paths in `src/`, comments
//! aside: a grep, as the architecture issue asked for, that fails on the first violation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::util::repo;

/// The layer of each top-level module of the library; higher numbers are higher layers.
fn layer(module: &str) -> Option<u8> {
    Some(match module {
        "error" | "time" | "size" | "paths" | "sys" | "spool" | "machine" => 0,
        "nix" => 1,
        "store" => 2,
        "ledger" => 3,
        "hook" | "wrapper" | "switch" | "why" | "report" | "doctor" | "tune" | "gc" | "trends"
        | "sync" | "remote" | "maintenance" => 4,
        _ => return None,
    })
}

/// The top-level module a file of `src/` belongs to (`src/ledger/record.rs` → `ledger`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules named by `crate::…` paths in one file's code (comments skipped).
fn uses(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    found.insert(name);
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                found.insert(name);
            }
        }
    }
    found
}

/// Every `.rs` file of the library (the binary's `cli` is above everything and may use
/// anything).
fn library_files() -> Vec<std::path::PathBuf> {
    let src = repo().join("src");
    walkdir::WalkDir::new(&src)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .filter(|p| !matches!(module_of(&src, p).as_str(), "main" | "lib" | "cli"))
        .collect()
}

#[test]
fn no_module_uses_a_module_of_a_higher_layer() {
    let src = repo().join("src");
    let mut violations = Vec::new();
    for file in library_files() {
        let module = module_of(&src, &file);
        let Some(own) = layer(&module) else {
            violations.push(format!(
                "{}: module {module} has no layer; add it to layers.rs and docs/architecture.md",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for used in uses(&text) {
            // The crate's error type names the error types of the layers it wraps.
            let allowed = match layer(&used) {
                Some(theirs) => theirs <= own || (module == "error" && theirs < 4),
                // `crate::Error`, `crate::Result`, `crate::exit`: re-exports of `error`.
                None => matches!(used.as_str(), "Error" | "Result" | "exit"),
            };
            if !allowed {
                violations.push(format!(
                    "{}: {module} (layer {own}) uses crate::{used}",
                    file.display()
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn no_two_top_level_modules_depend_on_each_other() {
    let src = repo().join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in library_files() {
        let module = module_of(&src, &file);
        let text = std::fs::read_to_string(&file).unwrap();
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(
            uses(&text)
                .into_iter()
                .filter(|u| layer(u).is_some() && *u != module),
        );
    }
    // A cycle exists when some module reaches itself.
    for start in graph.keys() {
        let mut stack: Vec<(&String, Vec<&String>)> = vec![(start, vec![start])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in graph.get(at).into_iter().flatten() {
                let mut longer = path.clone();
                longer.push(next);
                assert!(
                    next != start,
                    "a cycle between top-level modules: {}",
                    longer
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" → ")
                );
                if seen.insert(next) {
                    stack.push((next, longer));
                }
            }
        }
    }
}

#[test]
fn the_check_sees_uses_in_every_form() {
    let text = "use crate::ledger::Ledger;\nuse crate::{sys, Error};\n// crate::why in a comment\nlet x = crate::time::now_ms();";
    let found: Vec<String> = uses(text).into_iter().collect();
    assert_eq!(found, ["Error", "ledger", "sys", "time"]);
}

#[test]
fn unsafe_code_is_in_the_sys_module_only() {
    let src = repo().join("src");
    let mut found = Vec::new();
    for file in library_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let code_lines = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .filter(|l| {
                l.contains("unsafe {") || l.contains("unsafe fn") || l.contains("unsafe impl")
            });
        if module_of(&src, &file) != "sys" && code_lines.count() > 0 {
            found.push(file.display().to_string());
        }
    }
    assert!(found.is_empty(), "unsafe outside src/sys.rs: {found:?}");
}
