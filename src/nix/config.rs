//! Nix's version and the settings nix-ledger decides by (`max-jobs`, `cores`, the
//! substituters, `keep-outputs`/`keep-derivations`, `builders`, `build-users-group`,
//! `post-build-hook`, `system`, `build-poll-interval`), as Nix itself resolves
//! them (`nix show-config`: nix.conf, `NIX_CONFIG`, `auto`). Cached in the state
//! directory: asking costs two `nix` processes (~35 ms of CPU), and the answers change
//! only when the `nix` binary or a nix.conf changes, which is what the cache is keyed on.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::command;

/// The cache's file name in the state directory.
pub const CACHE_FILE: &str = "nix-settings-cache.json";

/// What nix-ledger needs from Nix's configuration. Fields missing from an older cache
/// file read as unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NixSettings {
    pub nix_version: Option<String>,
    pub max_jobs: Option<i64>,
    pub cores: Option<i64>,
    /// `substituters`, in Nix's order (`extra-substituters` included).
    pub substituters: Vec<String>,
    /// `substitute`: whether Nix uses the substituters at all (`None`: unknown, which
    /// Nix's default makes true).
    pub substitute: Option<bool>,
    pub keep_outputs: Option<bool>,
    pub keep_derivations: Option<bool>,
    /// The `builders` setting as written (machines inline, or `@FILE`).
    pub builders: Option<String>,
    /// `build-users-group` (empty: builds run as the user running Nix).
    pub build_users_group: Option<String>,
    /// `post-build-hook` (empty: none): it blocks Nix's build loop up to Nix 2.34.
    pub post_build_hook: Option<String>,
    /// `system`: the platform this Nix builds for (a builder must list it to take its
    /// builds).
    pub system: Option<String>,
    /// `build-poll-interval` in seconds: how long a build waits when every builder slot
    /// and every local slot is taken (Nix's default 5).
    pub build_poll_interval: Option<i64>,
}

impl NixSettings {
    /// The binary caches Nix would fetch from: none when `substitute = false`.
    pub fn active_substituters(&self) -> &[String] {
        if self.substitute == Some(false) {
            &[]
        } else {
            &self.substituters
        }
    }

    /// `keep-outputs`, Nix's default (false) when unknown.
    pub fn keeps_outputs(&self) -> bool {
        self.keep_outputs.unwrap_or(false)
    }

    /// `keep-derivations`, Nix's default (true) when unknown.
    pub fn keeps_derivations(&self) -> bool {
        self.keep_derivations.unwrap_or(true)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Cached {
    key: String,
    settings: NixSettings,
}

/// What the answers depend on: the `nix` found on PATH and every place Nix reads its
/// configuration from, each with its modification time.
pub fn cache_key() -> String {
    // Which fields the cache holds: a cache written before a field was added would
    // otherwise answer "unknown" for it until nix.conf changes.
    let mut parts =
        vec!["fields: build-users-group, post-build-hook, system, build-poll-interval".to_string()];
    let stamp = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
    };
    if let Some(nix) = find_on_path("nix") {
        let real = std::fs::canonicalize(&nix).unwrap_or(nix);
        parts.push(format!("{}@{:?}", real.display(), stamp(&real)));
    }
    let conf_dir = std::env::var_os("NIX_CONF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/nix"));
    let mut files = vec![conf_dir.join("nix.conf")];
    if let Some(user) = std::env::var_os("NIX_USER_CONF_FILES") {
        files.extend(std::env::split_paths(&user));
    } else if let Some(config) = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
    {
        files.push(config.join("nix/nix.conf"));
    }
    for file in files {
        parts.push(format!("{}@{:?}", file.display(), stamp(&file)));
    }
    for var in ["NIX_CONFIG", "NIX_REMOTE"] {
        parts.push(format!("{var}={:?}", std::env::var_os(var)));
    }
    parts.join("\n")
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The settings, from the cache in `state_dir` when its key still matches, else from Nix
/// (and then cached; a cache that cannot be written is only slower).
pub fn settings(state_dir: &Path) -> NixSettings {
    let key = cache_key();
    let path = state_dir.join(CACHE_FILE);
    if let Some(cached) = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Cached>(&b).ok())
    {
        if cached.key == key {
            return cached.settings;
        }
    }
    let settings = ask_nix();
    if settings.nix_version.is_some() {
        if let Ok(bytes) = serde_json::to_vec(&Cached {
            key,
            settings: settings.clone(),
        }) {
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, bytes).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
        }
    }
    settings
}

fn ask_nix() -> NixSettings {
    let mut s = NixSettings {
        nix_version: command::nix_version().ok().map(|v| v.number()),
        ..NixSettings::default()
    };
    if let Ok(config) = command::show_config() {
        let value = |name| command::config_value(&config, name);
        s.max_jobs = value("max-jobs").and_then(|v| v.as_i64());
        s.cores = value("cores").and_then(|v| v.as_i64());
        s.substituters = value("substituters")
            .and_then(|v| v.as_array())
            .map(|list| {
                list.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        s.substitute = value("substitute").and_then(|v| v.as_bool());
        s.keep_outputs = value("keep-outputs").and_then(|v| v.as_bool());
        s.keep_derivations = value("keep-derivations").and_then(|v| v.as_bool());
        let text = |name| value(name).and_then(|v| v.as_str()).map(str::to_string);
        s.builders = text("builders");
        s.build_users_group = text("build-users-group");
        s.post_build_hook = text("post-build-hook");
        s.system = text("system");
        s.build_poll_interval = value("build-poll-interval").and_then(|v| v.as_i64());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_asked_once_and_then_read_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let first = settings(dir.path());
        assert!(
            first.nix_version.is_some(),
            "nix is on PATH in the test environment"
        );
        let cached: Cached =
            serde_json::from_slice(&std::fs::read(dir.path().join(CACHE_FILE)).unwrap()).unwrap();
        assert_eq!(cached.key, cache_key());
        // A cache whose key matches is believed as it is.
        let fake = Cached {
            key: cache_key(),
            settings: NixSettings {
                nix_version: Some("9.9.9".into()),
                max_jobs: Some(7),
                cores: Some(3),
                ..NixSettings::default()
            },
        };
        std::fs::write(
            dir.path().join(CACHE_FILE),
            serde_json::to_vec(&fake).unwrap(),
        )
        .unwrap();
        assert_eq!(settings(dir.path()).max_jobs, Some(7));
        // A stale key means asking Nix again.
        let stale = Cached {
            key: "another nix".into(),
            ..fake
        };
        std::fs::write(
            dir.path().join(CACHE_FILE),
            serde_json::to_vec(&stale).unwrap(),
        )
        .unwrap();
        assert_eq!(settings(dir.path()), first);
    }
}
