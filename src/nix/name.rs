//! Derivation names: Nix's own split into name and version (`builtins.parseDrvName`), and
//! the series key that `trends` groups builds by, so that `hello-2.12` and `hello-2.13`
//! are one series while `hello-2.12.tar.gz` (the fetched source) is another.
//!
//! Nix's rule (src/libstore/names.cc, `DrvName::DrvName`, unchanged since Nix 0.x): the
//! name is everything before the first `-` followed by a character that is not an ASCII
//! letter (`isalpha` in the C locale); the version is everything after that dash. A `-`
//! at the very end never splits; with no such dash the version is empty.

/// A derivation name split as `builtins.parseDrvName` splits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrvName<'a> {
    pub name: &'a str,
    pub version: &'a str,
}

/// Exactly `builtins.parseDrvName`. Works on bytes as Nix does: a store path name is
/// ASCII anyway, and a non-ASCII byte counts as "not a letter" (Nix in the C locale); a
/// split always falls on a `-`, so both halves are valid UTF-8.
pub fn parse_drv_name(s: &str) -> DrvName<'_> {
    let b = s.as_bytes();
    for i in 0..b.len() {
        if b[i] == b'-' && i + 1 < b.len() && !b[i + 1].is_ascii_alphabetic() {
            return DrvName {
                name: &s[..i],
                version: &s[i + 1..],
            };
        }
    }
    DrvName {
        name: s,
        version: "",
    }
}

/// The series of a derivation name: builds with the same key are one series over time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// e.g. `hello`, `hello-*.tar.gz`, `linux-*-modules`.
    pub key: String,
    /// The version in this name, without the qualifier or extension that went into the
    /// key (`2.12.1` for both `hello-2.12.1` and `hello-2.12.1.tar.gz`); empty if none.
    pub version: String,
}

/// Extensions that mark a fetched artifact (fetchurl, fetchpatch) rather than a package
/// build: its duration is download time and its output the archive, so it must not join
/// the package's series. Longest first, so that `.tar.gz` wins over `.gz`.
const ARTIFACT_EXTENSIONS: &[&str] = &[
    ".tar.gz",
    ".tar.xz",
    ".tar.bz2",
    ".tar.lz",
    ".tar.lzma",
    ".tar.zst",
    ".tar.z",
    ".tgz",
    ".tbz",
    ".tbz2",
    ".txz",
    ".tar",
    ".zip",
    ".gz",
    ".xz",
    ".bz2",
    ".lz",
    ".zst",
    ".7z",
    ".patch",
    ".diff",
    ".gem",
    ".whl",
    ".crate",
    ".jar",
    ".deb",
    ".rpm",
    ".dmg",
    ".pkg",
    ".iso",
    ".nupkg",
];

/// Trailing words that are part of a version (pre-releases, snapshots), so they stay in
/// it rather than go into the key.
const VERSION_WORDS: &[&str] = &[
    "pre", "rc", "alpha", "beta", "git", "dev", "unstable", "snapshot", "nightly", "final",
    "preview", "hg", "svn", "bzr", "darcs",
];

/// The series a derivation name belongs to: Nix's split, with two kinds of derivation
/// that the split alone would put into the package's series kept apart:
///
/// 1. fetched artifacts: a version ending in a known extension (`hello-2.12.1.tar.gz`)
///    gives the key `NAME-*EXT` (`hello-*.tar.gz`);
/// 2. derived packages: a version ending in `-`-separated letter-only words that are not
///    version words (`linux-6.1-modules`, `python3-3.11.7-env`) gives `NAME-*-WORDS`
///    (`linux-*-modules`), when what is left of the version still has a digit.
///
/// A name without a version is its own key (`source`, and `node-v18.0.0`: a version that
/// starts with a letter is not split, by Nix either).
pub fn series_of(full: &str) -> Series {
    let DrvName { name, version } = parse_drv_name(full);
    if version.is_empty() {
        return Series {
            key: full.to_string(),
            version: String::new(),
        };
    }
    let lower = version.to_ascii_lowercase();
    if let Some(ext) = ARTIFACT_EXTENSIONS
        .iter()
        .find(|ext| lower.len() > ext.len() && lower.ends_with(*ext))
    {
        let cut = version.len() - ext.len();
        return Series {
            key: format!("{name}-*{}", &version[cut..]),
            version: version[..cut].to_string(),
        };
    }
    let words: Vec<&str> = version.split('-').collect();
    let mut cut = words.len();
    while cut > 1 {
        let word = words[cut - 1];
        let letters_only = !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphabetic());
        if letters_only && !VERSION_WORDS.contains(&word.to_ascii_lowercase().as_str()) {
            cut -= 1;
        } else {
            break;
        }
    }
    if cut < words.len() {
        let rest = words[..cut].join("-");
        if rest.bytes().any(|b| b.is_ascii_digit()) {
            return Series {
                key: format!("{name}-*-{}", words[cut..].join("-")),
                version: rest,
            };
        }
    }
    Series {
        key: name.to_string(),
        version: version.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> (&str, &str) {
        let d = parse_drv_name(s);
        (d.name, d.version)
    }

    #[test]
    fn names_split_as_nix_splits_them() {
        // Each row was checked against `builtins.parseDrvName` of Nix 2.8 (the integration
        // test `trends::series_keys_follow_nixs_own_split` asks Nix again).
        for (full, name, version) in [
            ("hello-2.12.1", "hello", "2.12.1"),
            ("python3.11-foo-1.2", "python3.11-foo", "1.2"),
            ("linux-6.1-modules", "linux", "6.1-modules"),
            ("source", "source", ""),
            ("foo-unstable-2024-01-01", "foo-unstable", "2024-01-01"),
            (
                "name-that-ends-with-dash--1.0",
                "name-that-ends-with-dash",
                "-1.0",
            ),
            ("foo-", "foo-", ""),
            ("-1.0", "", "1.0"),
            ("node-v18.0.0", "node-v18.0.0", ""),
            ("foo-_bar", "foo", "_bar"),
            ("bash52-001", "bash52", "001"),
            ("", "", ""),
        ] {
            assert_eq!(split(full), (name, version), "{full}");
        }
    }

    #[test]
    fn versions_join_a_series_and_fetches_and_variants_stay_apart() {
        for (full, key, version) in [
            ("hello-2.12", "hello", "2.12"),
            ("hello-2.13", "hello", "2.13"),
            ("hello-2.12.1.tar.gz", "hello-*.tar.gz", "2.12.1"),
            ("hello-2.12.1.TAR.GZ", "hello-*.TAR.GZ", "2.12.1"),
            ("linux-6.1-modules", "linux-*-modules", "6.1"),
            (
                "linux-6.1.70-modules-shrunk",
                "linux-*-modules-shrunk",
                "6.1.70",
            ),
            ("python3-3.11.7-env", "python3-*-env", "3.11.7"),
            ("xcbuild-0.1.2-pre", "xcbuild", "0.1.2-pre"),
            (
                "kyua-0.13-unstable-2024-01-22",
                "kyua",
                "0.13-unstable-2024-01-22",
            ),
            ("source", "source", ""),
            ("foo--bar", "foo", "-bar"),
            ("boost_1_81_0.tar.bz2", "boost_1_81_0.tar.bz2", ""),
            (
                "sharutils-4.15.2-Fix-building-with-GCC-10.patch",
                "sharutils-*.patch",
                "4.15.2-Fix-building-with-GCC-10",
            ),
        ] {
            let s = series_of(full);
            assert_eq!(
                (s.key.as_str(), s.version.as_str()),
                (key, version),
                "{full}"
            );
        }
    }
}
