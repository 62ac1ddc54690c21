//! Remote builders as Nix names them: a store URI from the `builders` setting
//! (`ssh-ng://user@host?remote-store=…`), and the shorter forms of it that copies and
//! people use; and the `builders` setting itself, parsed as Nix 2.8 reads it
//! (`src/libstore/machines.cc`) and written back.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// The URI without its query string: `ssh-ng://b?remote-store=…` → `ssh-ng://b`, what
/// Nix's copy activities name a builder by.
pub fn host_of(machine: &str) -> &str {
    machine.split('?').next().unwrap_or(machine)
}

/// What people call a builder: the host, without scheme, user, port or query
/// (`ssh-ng://root@10.0.0.2:2222?x=1` → `10.0.0.2`).
pub fn label(machine: &str) -> &str {
    let rest = host_of(machine);
    let rest = rest.split_once("://").map_or(rest, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let rest = rest.split('/').next().unwrap_or(rest);
    match rest.rsplit_once(':') {
        // An IPv6 address in brackets keeps its colons.
        Some((host, port))
            if port.chars().all(|c| c.is_ascii_digit()) && !host.ends_with(']')
                || host.starts_with('[') && host.ends_with(']') =>
        {
            host
        }
        _ => rest,
    }
}

/// Whether `name` names `machine`: its whole URI, the URI without the query, or its label.
pub fn names(machine: &str, name: &str) -> bool {
    machine == name || host_of(machine) == name || label(machine) == name
}

/// One machine of the `builders` setting: `URI [systems [ssh-key [max-jobs [speed-factor
/// [supported-features [mandatory-features [public-host-key]]]]]]]`, `-` or a missing
/// column meaning Nix's default.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MachineSpec {
    /// The store URI as Nix names the machine (and the ledger records it): a bare host
    /// gets `ssh://`, as Nix's `Machine` constructor does.
    pub uri: String,
    /// Platforms it builds for; empty: the column was unset, which Nix reads as its own
    /// `system`.
    pub systems: Vec<String>,
    pub ssh_key: Option<String>,
    /// Builds it runs at once (Nix's default 1; 0 gives it none).
    pub max_jobs: u32,
    /// Nix's `speedFactor`: what build-remote divides a machine's load by. Nix before
    /// 2.20 reads only whole numbers; 0 reads as 1.
    pub speed_factor: f64,
    pub supported_features: Vec<String>,
    pub mandatory_features: Vec<String>,
    /// Base64 of the host's public key.
    pub public_host_key: Option<String>,
}

/// Why a `builders` setting could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MachinesError {
    #[error("builders: `{line}`: no store URI in the first column")]
    NoUri { line: String },
    #[error("builders: `{line}`: {column} `{value}` is not a whole number")]
    NotCount {
        line: String,
        column: &'static str,
        value: String,
    },
    #[error("builders: `{line}`: speed-factor `{value}` is not a number of at least 0")]
    BadSpeed { line: String, value: String },
    #[error("builders: cannot read @{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("builders: @{}: machine files include each other more than {MAX_DEPTH} deep", path.display())]
    TooDeep { path: PathBuf },
}

/// How deep `@FILE`s may include each other (Nix has no limit, and loops on a cycle).
const MAX_DEPTH: usize = 16;

/// The machines of a `builders` value, reading `@FILE`s from the file system.
pub fn parse_builders(value: &str) -> Result<Vec<MachineSpec>, MachinesError> {
    parse_builders_with(value, &|p: &Path| std::fs::read_to_string(p))
}

/// As [`parse_builders`], reading `@FILE`s with `read`. As Nix 2.8's
/// `expandBuilderLines`: machines are separated by newlines or `;`, each trimmed, cut at
/// the first `#`; a line `@FILE` stands for the machines of FILE (a missing FILE for
/// none); columns are separated by blanks.
pub fn parse_builders_with(
    value: &str,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Vec<MachineSpec>, MachinesError> {
    let mut out = Vec::new();
    expand(value, read, 0, None, &mut out)?;
    Ok(out)
}

fn expand(
    value: &str,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
    depth: usize,
    from: Option<&Path>,
    out: &mut Vec<MachineSpec>,
) -> Result<(), MachinesError> {
    if depth > MAX_DEPTH {
        return Err(MachinesError::TooDeep {
            path: from.map(Path::to_path_buf).unwrap_or_default(),
        });
    }
    for raw in value.split(['\n', ';']) {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(file) = line.strip_prefix('@') {
            let path = PathBuf::from(file.trim());
            match read(&path) {
                Ok(text) => expand(&text, read, depth + 1, Some(&path), out)?,
                // Nix ignores a machines file that does not exist.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(MachinesError::Read { path, source }),
            }
            continue;
        }
        out.push(parse_line(line)?);
    }
    Ok(())
}

/// One machine's line (already trimmed, without comment).
fn parse_line(line: &str) -> Result<MachineSpec, MachinesError> {
    let cols: Vec<&str> = line
        .split([' ', '\t', '\r', '\n'])
        .filter(|c| !c.is_empty())
        .collect();
    let set = |i: usize| cols.get(i).copied().filter(|c| *c != "-");
    let list = |i: usize| -> Vec<String> {
        set(i)
            .map(|c| {
                c.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let uri = set(0).ok_or_else(|| MachinesError::NoUri { line: line.into() })?;
    let max_jobs = match set(3) {
        None => 1,
        Some(v) => v.parse::<u32>().map_err(|_| MachinesError::NotCount {
            line: line.into(),
            column: "max-jobs",
            value: v.into(),
        })?,
    };
    let speed_factor = match set(4) {
        None => 1.0,
        Some(v) => match v.parse::<f64>() {
            Ok(f) if f.is_finite() && f >= 0.0 => {
                if f == 0.0 {
                    1.0
                } else {
                    f
                }
            }
            _ => {
                return Err(MachinesError::BadSpeed {
                    line: line.into(),
                    value: v.into(),
                })
            }
        },
    };
    Ok(MachineSpec {
        uri: normalise_uri(uri),
        systems: list(1),
        ssh_key: set(2).map(str::to_string),
        max_jobs,
        speed_factor,
        supported_features: list(5),
        mandatory_features: list(6),
        public_host_key: set(7).map(str::to_string),
    })
}

/// The store URI Nix makes of a builders line's first column: a bare host name (no
/// `://`, no `/`, not one of Nix's store words) means `ssh://` to it.
pub fn normalise_uri(uri: &str) -> String {
    let store_word = ["auto", "daemon", "local"].contains(&uri)
        || ["auto?", "daemon?", "local?", "?"]
            .iter()
            .any(|p| uri.starts_with(p));
    if uri.contains("://") || uri.contains('/') || store_word {
        uri.to_string()
    } else {
        format!("ssh://{uri}")
    }
}

impl MachineSpec {
    /// The machine as a line of the `builders` setting (nix.conf), the columns Nix would
    /// default written as `-` and trailing ones left out. A whole speed factor is written
    /// without a fraction: Nix before 2.20 reads nothing else.
    pub fn builders_line(&self) -> String {
        let join = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(",")
            }
        };
        let mut cols = vec![
            self.uri.clone(),
            join(&self.systems),
            self.ssh_key.clone().unwrap_or_else(|| "-".into()),
            self.max_jobs.to_string(),
            number(self.speed_factor),
            join(&self.supported_features),
            join(&self.mandatory_features),
            self.public_host_key.clone().unwrap_or_else(|| "-".into()),
        ];
        while cols.len() > 1 && cols.last().is_some_and(|c| c == "-") {
            cols.pop();
        }
        cols.join(" ")
    }

    /// The machine as an element of NixOS's and nix-darwin's `nix.buildMachines` (whose
    /// `speedFactor` is an integer: rounded, at least 1). `this_system` stands for unset
    /// systems.
    pub fn nixos_build_machine(&self, this_system: &str) -> String {
        let q = nix_string;
        let list = |v: &[String]| v.iter().map(|s| q(s)).collect::<Vec<_>>().join(" ");
        let (protocol, user, host) = split_uri(&self.uri);
        let mut attrs = vec![format!("hostName = {};", q(host))];
        attrs.push(match protocol {
            Some(p) => format!("protocol = {};", q(p)),
            None => "protocol = null;".to_string(),
        });
        if let Some(u) = user {
            attrs.push(format!("sshUser = {};", q(u)));
        }
        // Unknown both ways: left out (an empty name would shift the machines file's
        // columns), for NixOS to write its placeholder.
        let systems = match (self.systems.is_empty(), this_system.is_empty()) {
            (false, _) => self.systems.clone(),
            (true, false) => vec![this_system.to_string()],
            (true, true) => Vec::new(),
        };
        if !systems.is_empty() {
            attrs.push(format!("systems = [ {} ];", list(&systems)));
        }
        if let Some(k) = &self.ssh_key {
            attrs.push(format!("sshKey = {};", q(k)));
        }
        attrs.push(format!("maxJobs = {};", self.max_jobs));
        attrs.push(format!(
            "speedFactor = {};",
            self.speed_factor.round().max(1.0) as u64
        ));
        if !self.supported_features.is_empty() {
            attrs.push(format!(
                "supportedFeatures = [ {} ];",
                list(&self.supported_features)
            ));
        }
        if !self.mandatory_features.is_empty() {
            attrs.push(format!(
                "mandatoryFeatures = [ {} ];",
                list(&self.mandatory_features)
            ));
        }
        if let Some(k) = &self.public_host_key {
            attrs.push(format!("publicHostKey = {};", q(k)));
        }
        format!("{{ {} }}", attrs.join(" "))
    }
}

/// `ssh-ng://root@host?x=1` → (`ssh-ng`, `root`, `host?x=1`): NixOS's `protocol`,
/// `sshUser` and `hostName`, which it joins back into the URI. Another scheme (or none)
/// has no `protocol`: the whole URI is the host name.
fn split_uri(uri: &str) -> (Option<&str>, Option<&str>, &str) {
    match uri.split_once("://") {
        Some((scheme @ ("ssh" | "ssh-ng"), rest)) => {
            let authority_end = rest.find(['?', '/']).unwrap_or(rest.len());
            match rest[..authority_end].rsplit_once('@') {
                Some((user, _)) => (Some(scheme), Some(user), &rest[user.len() + 1..]),
                None => (Some(scheme), None, rest),
            }
        }
        _ => (None, None, uri),
    }
}

/// `s` as a Nix string literal.
fn nix_string(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace("${", "\\${")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}

/// A number as nix.conf takes it: whole numbers without a fraction.
fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_builder_is_named_by_its_uri_its_host_uri_or_its_host() {
        let m = "ssh-ng://nlb?remote-store=local?root=/tmp/x&remote-program=/tmp/d";
        assert_eq!(host_of(m), "ssh-ng://nlb");
        assert_eq!(label(m), "nlb");
        assert_eq!(label("ssh://root@10.0.0.2:2222"), "10.0.0.2");
        assert_eq!(label("ssh-ng://[fe80::1]:22"), "[fe80::1]");
        assert_eq!(label("builder"), "builder");
        assert!(names(m, "nlb") && names(m, "ssh-ng://nlb") && names(m, m));
        assert!(!names(m, "nl"));
    }
    #[test]
    fn every_column_of_a_machine_is_read() {
        let m = parse_builders(
            "ssh-ng://root@big?remote-store=local x86_64-linux,aarch64-linux /k 8 2.5 kvm,big-parallel benchmark c3NoLWVkMjU1MTk=",
        )
        .unwrap();
        assert_eq!(
            m,
            vec![MachineSpec {
                uri: "ssh-ng://root@big?remote-store=local".into(),
                systems: vec!["x86_64-linux".into(), "aarch64-linux".into()],
                ssh_key: Some("/k".into()),
                max_jobs: 8,
                speed_factor: 2.5,
                supported_features: vec!["kvm".into(), "big-parallel".into()],
                mandatory_features: vec!["benchmark".into()],
                public_host_key: Some("c3NoLWVkMjU1MTk=".into()),
            }]
        );
    }

    #[test]
    fn dashes_and_missing_columns_are_nix_defaults_and_bare_hosts_get_ssh() {
        let m = parse_builders("builder - - - 0 -; local?root=/x\t-\t-\t3").unwrap();
        assert_eq!(m.len(), 2);
        let b = &m[0];
        assert_eq!(b.uri, "ssh://builder");
        assert!(b.systems.is_empty() && b.ssh_key.is_none() && b.supported_features.is_empty());
        assert_eq!((b.max_jobs, b.speed_factor), (1, 1.0), "speed 0 reads as 1");
        assert_eq!(m[1].uri, "local?root=/x");
        assert_eq!(m[1].max_jobs, 3);
        for (given, uri) in [
            ("daemon", "daemon"),
            ("auto?x=1", "auto?x=1"),
            ("/tmp/store", "/tmp/store"),
            ("ssh://h", "ssh://h"),
            ("root@h", "ssh://root@h"),
        ] {
            assert_eq!(normalise_uri(given), uri);
        }
    }

    #[test]
    fn comments_blank_lines_and_separators() {
        let text = "# all builders\n\n  a x86_64-linux - 2 # two jobs\n;;b x86_64-linux\n#c\n";
        let m = parse_builders(text).unwrap();
        let uris: Vec<&str> = m.iter().map(|m| m.uri.as_str()).collect();
        assert_eq!(uris, ["ssh://a", "ssh://b"]);
        assert_eq!(m[0].max_jobs, 2);
        assert!(parse_builders("").unwrap().is_empty());
        assert!(parse_builders("  # nothing\n").unwrap().is_empty());
    }

    #[test]
    fn machine_files_are_read_in_place_and_a_missing_one_is_empty() {
        let read = |p: &Path| -> std::io::Result<String> {
            match p.to_str() {
                Some("/etc/nix/machines") => Ok("a - - 4\n@/etc/nix/more\n".into()),
                Some("/etc/nix/more") => Ok("b - - 2 # from more\n".into()),
                Some("/etc/nix/loop") => Ok("@/etc/nix/loop".into()),
                Some("/etc/nix/secret") => Err(std::io::ErrorKind::PermissionDenied.into()),
                _ => Err(std::io::ErrorKind::NotFound.into()),
            }
        };
        let m =
            parse_builders_with("first; @/etc/nix/machines ; @/etc/nix/gone; last", &read).unwrap();
        let got: Vec<(&str, u32)> = m.iter().map(|m| (m.uri.as_str(), m.max_jobs)).collect();
        assert_eq!(
            got,
            [
                ("ssh://first", 1),
                ("ssh://a", 4),
                ("ssh://b", 2),
                ("ssh://last", 1)
            ]
        );
        let e = parse_builders_with("@/etc/nix/loop", &read).unwrap_err();
        assert!(e.to_string().contains("more than 16 deep"), "{e}");
        let e = parse_builders_with("@/etc/nix/secret", &read).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("builders: cannot read @/etc/nix/secret"),
            "{e}"
        );
        // Real files too.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("machines");
        std::fs::write(&file, "real x86_64-linux - 3 2\n").unwrap();
        let m = parse_builders(&format!("@{}", file.display())).unwrap();
        assert_eq!((m[0].uri.as_str(), m[0].max_jobs), ("ssh://real", 3));
    }

    #[test]
    fn bad_columns_are_named_in_one_line() {
        let e = parse_builders("h x86_64-linux - many").unwrap_err();
        assert_eq!(
            e.to_string(),
            "builders: `h x86_64-linux - many`: max-jobs `many` is not a whole number"
        );
        let e = parse_builders("h - - 1 -2").unwrap_err();
        assert!(e.to_string().contains("speed-factor `-2`"), "{e}");
        assert!(parse_builders("- x86_64-linux").is_err(), "no URI");
    }

    #[test]
    fn a_machine_is_written_back_as_nix_reads_it() {
        let line =
            "ssh-ng://root@big?remote-store=local x86_64-linux /k 8 2 kvm - c3NoLWVkMjU1MTk=";
        let m = &parse_builders(line).unwrap()[0];
        assert_eq!(m.builders_line(), line);
        assert_eq!(parse_builders(&m.builders_line()).unwrap()[0], *m);
        let plain = &parse_builders("b - - 2").unwrap()[0];
        assert_eq!(plain.builders_line(), "ssh://b - - 2 1");
        let fast = MachineSpec {
            speed_factor: 1.5,
            ..plain.clone()
        };
        assert_eq!(fast.builders_line(), "ssh://b - - 2 1.5");
        assert_eq!(
            m.nixos_build_machine("x86_64-linux"),
            "{ hostName = \"big?remote-store=local\"; protocol = \"ssh-ng\"; sshUser = \"root\"; \
             systems = [ \"x86_64-linux\" ]; sshKey = \"/k\"; maxJobs = 8; speedFactor = 2; \
             supportedFeatures = [ \"kvm\" ]; publicHostKey = \"c3NoLWVkMjU1MTk=\"; }"
        );
        assert_eq!(
            plain.nixos_build_machine("aarch64-linux"),
            "{ hostName = \"b\"; protocol = \"ssh\"; systems = [ \"aarch64-linux\" ]; maxJobs = 2; speedFactor = 1; }"
        );
        // Neither the machine's systems nor this one's known: no `systems` at all, never
        // an empty name that would shift the machines file's columns.
        assert_eq!(
            plain.nixos_build_machine(""),
            "{ hostName = \"b\"; protocol = \"ssh\"; maxJobs = 2; speedFactor = 1; }"
        );
        let local = &parse_builders("local?root=/x$y").unwrap()[0];
        assert!(local
            .nixos_build_machine("x")
            .starts_with("{ hostName = \"local?root=/x$y\"; protocol = null;"));
        assert_eq!(nix_string("a\"${b}"), "\"a\\\"\\${b}\"");
    }
}
