//! `nix-ledger switch | boot | test | build-system`: builds a NixOS or nix-darwin system
//! through the recorded `nix build` path of [`crate::wrapper`], then activates it the way
//! `nixos-rebuild` and `darwin-rebuild` do.
//!
//! Activation, as those tools do it today:
//! - NixOS: `switch` and `boot` point the system profile at the new system
//!   (`nix-env -p PROFILE --set PATH`); `switch`, `boot` and `test` then run
//!   `PATH/bin/switch-to-configuration ACTION`, inside a transient systemd unit when
//!   systemd runs (so a dropped terminal cannot cut an activation in half).
//! - nix-darwin: `switch` sets the profile, runs a legacy `activate-user` as the invoking
//!   user when the system still has a real one, then `PATH/activate`. It has no `boot` or
//!   `test`.
//!
//! Commands that change the system run through `sudo` when not root.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::ledger::model::SessionKind;
use crate::paths::Layout;
use crate::wrapper::{self, Outcome, Request};
use crate::{Error, Result};

/// The system profile both tools set.
pub const SYSTEM_PROFILE: &str = "/nix/var/nix/profiles/system";
/// Where `--profile-name NAME` profiles live (both tools).
pub const PROFILES_DIR: &str = "/nix/var/nix/profiles/system-profiles";
/// nix-darwin marks an `activate-user` that only exists for compatibility with this line.
const DEPRECATED_ACTIVATE_USER: &str = "# nix-darwin: deprecated";

/// Which kind of system this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    NixOs,
    Darwin,
}

/// What to do with the built system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Switch,
    Boot,
    Test,
    BuildSystem,
}

impl Action {
    /// The kind of session the build is recorded as.
    pub fn session_kind(self) -> SessionKind {
        match self {
            Action::Switch => SessionKind::Switch,
            Action::Boot => SessionKind::Boot,
            Action::Test => SessionKind::Test,
            Action::BuildSystem => SessionKind::BuildSystem,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Switch => "switch",
            Action::Boot => "boot",
            Action::Test => "test",
            Action::BuildSystem => "build-system",
        }
    }
}

/// One `nix-ledger switch`-family run.
#[derive(Debug, Clone)]
pub struct SwitchRequest {
    pub action: Action,
    /// `REF` or `REF#NAME`; `None`: `/etc/nixos` or `/etc/nix-darwin` when it has a
    /// flake.nix, else the classic `<nixpkgs/nixos>` / `<darwin>` entry points.
    pub flake: Option<String>,
    /// Overrides detection (for tests, and for building another platform's system).
    pub platform: Option<Platform>,
    pub dry_run: bool,
    /// `--profile-name NAME`: a profile under [`PROFILES_DIR`] instead of the system one.
    pub profile_name: Option<String>,
    /// Passed to `nix build` as they are.
    pub build_args: Vec<OsString>,
}

/// Detects the running system: NixOS by `/etc/NIXOS` or `/run/current-system/nixos-version`,
/// nix-darwin on macOS.
pub fn detect_platform() -> Option<Platform> {
    if Path::new("/etc/NIXOS").exists() || Path::new("/run/current-system/nixos-version").exists() {
        return Some(Platform::NixOs);
    }
    if cfg!(target_os = "macos") {
        return Some(Platform::Darwin);
    }
    None
}

/// The `nix build` arguments naming the system to build, and whether they are a flake
/// reference.
pub fn installable(platform: Platform, flake: Option<&str>, hostname: &str) -> Vec<String> {
    let default_flake = match platform {
        Platform::NixOs => "/etc/nixos",
        Platform::Darwin => "/etc/nix-darwin",
    };
    let flake = flake.map(str::to_string).or_else(|| {
        Path::new(default_flake)
            .join("flake.nix")
            .exists()
            .then(|| default_flake.to_string())
    });
    let Some(flake) = flake else {
        return match platform {
            Platform::NixOs => vec!["-f".into(), "<nixpkgs/nixos>".into(), "system".into()],
            Platform::Darwin => vec!["-f".into(), "<darwin>".into(), "system".into()],
        };
    };
    let (reference, name) = match flake.rsplit_once('#') {
        Some((reference, name)) if !name.is_empty() => (reference.to_string(), name.to_string()),
        Some((reference, _)) => (reference.to_string(), hostname.to_string()),
        None => (flake.clone(), hostname.to_string()),
    };
    let attr = match platform {
        Platform::NixOs => format!("nixosConfigurations.\"{name}\".config.system.build.toplevel"),
        Platform::Darwin => format!("darwinConfigurations.\"{name}\".system"),
    };
    vec![format!("{reference}#{attr}")]
}

/// What the activation needs to know of the machine and the built system.
#[derive(Debug, Clone)]
pub struct Activation<'a> {
    pub platform: Platform,
    pub action: Action,
    pub system: &'a str,
    pub profile: &'a str,
    pub is_root: bool,
    /// systemd is running (`/run/systemd/system`): NixOS activates in a transient unit.
    pub systemd: bool,
    /// nix-darwin: the system has a legacy, non-deprecated `activate-user`.
    pub activate_user: bool,
    /// nix-darwin: who ran sudo (`SUDO_USER`), for `activate-user`.
    pub sudo_user: Option<&'a str>,
}

/// The commands that activate a built system, in order.
pub fn activation_commands(a: &Activation<'_>) -> Result<Vec<Vec<String>>> {
    let sudo = |mut cmd: Vec<String>| {
        if !a.is_root {
            cmd.insert(0, "sudo".into());
        }
        cmd
    };
    let set_profile = || {
        sudo(vec![
            "nix-env".into(),
            "-p".into(),
            a.profile.into(),
            "--set".into(),
            a.system.into(),
        ])
    };
    let mut commands = Vec::new();
    match (a.platform, a.action) {
        (_, Action::BuildSystem) => {}
        (Platform::NixOs, action) => {
            if matches!(action, Action::Switch | Action::Boot) {
                commands.push(set_profile());
            }
            let mut run = Vec::new();
            if a.systemd {
                run.extend(
                    [
                        "systemd-run",
                        "-E",
                        "LOCALE_ARCHIVE",
                        "-E",
                        "NIXOS_INSTALL_BOOTLOADER",
                        "--collect",
                        "--no-ask-password",
                        "--pipe",
                        "--quiet",
                        "--same-dir",
                        "--service-type=exec",
                        "--unit=nixos-rebuild-switch-to-configuration",
                        "--wait",
                    ]
                    .map(String::from),
                );
            }
            run.push(format!("{}/bin/switch-to-configuration", a.system));
            run.push(action.as_str().into());
            commands.push(sudo(run));
        }
        (Platform::Darwin, Action::Switch) => {
            commands.push(set_profile());
            if a.activate_user {
                let user = a.sudo_user.ok_or_else(|| {
                    Error::Usage(format!(
                        "{}/activate-user must run as the invoking user, but SUDO_USER is not set",
                        a.system
                    ))
                })?;
                commands.push(vec![
                    "sudo".into(),
                    format!("--user={user}"),
                    "--set-home".into(),
                    "--".into(),
                    format!("{}/activate-user", a.system),
                ]);
            }
            commands.push(sudo(vec![format!("{}/activate", a.system)]));
        }
        (Platform::Darwin, action) => {
            return Err(Error::Usage(format!(
                "nix-darwin has no `{}`; use `switch` (or `build-system`)",
                action.as_str()
            )))
        }
    }
    Ok(commands)
}

/// Whether nix-darwin's `activate-user` in `system` is a real, non-deprecated script.
fn has_activate_user(system: &str) -> bool {
    let path = Path::new(system).join("activate-user");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return false;
    };
    !text.lines().any(|l| l == DEPRECATED_ACTIVATE_USER)
}

/// A command line as a shell would need it typed.
pub fn shell_words(cmd: &[String]) -> String {
    cmd.iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-./:=@%+,".contains(&b));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// How a switch ended.
#[derive(Debug)]
pub struct SwitchOutcome {
    pub build: Outcome,
    /// The built system, when the build succeeded.
    pub system: Option<String>,
    /// The activation commands (printed under `--dry-run`, else run).
    pub commands: Vec<Vec<String>>,
    /// The exit status to leave with.
    pub exit_code: i32,
    /// The activation command that failed, if one did.
    pub failed_command: Option<String>,
}

/// Builds the system through the wrapper and activates it (or prints how, `--dry-run`).
pub fn run(layout: &Layout, req: &SwitchRequest) -> Result<SwitchOutcome> {
    let platform = req.platform.or_else(detect_platform).ok_or_else(|| {
        Error::Usage(
            "this is neither NixOS (/etc/NIXOS) nor macOS; pass --nixos or --darwin".into(),
        )
    })?;
    if platform == Platform::Darwin && matches!(req.action, Action::Boot | Action::Test) {
        // Refused before building, not after.
        activation_commands(&Activation {
            platform,
            action: req.action,
            system: "",
            profile: "",
            is_root: true,
            systemd: false,
            activate_user: false,
            sudo_user: None,
        })?;
    }
    let profile = match &req.profile_name {
        None => SYSTEM_PROFILE.to_string(),
        Some(name) if name == "system" => SYSTEM_PROFILE.to_string(),
        Some(name) if !name.is_empty() && !name.contains('/') => format!("{PROFILES_DIR}/{name}"),
        Some(name) => {
            return Err(Error::Usage(format!(
                "--profile-name {name:?}: not a profile name"
            )))
        }
    };
    let hostname = sysinfo::System::host_name()
        .ok()
        .map(|h| h.split('.').next().unwrap_or(&h).to_string())
        .unwrap_or_else(|| "localhost".into());

    let link_dir = tempfile_dir()?;
    let out_link = link_dir.join("result");
    let mut args: Vec<OsString> = installable(platform, req.flake.as_deref(), &hostname)
        .into_iter()
        .map(OsString::from)
        .collect();
    if req.action != Action::BuildSystem {
        // As nixos-rebuild does: a private link keeps the system alive while it activates.
        args.push("--out-link".into());
        args.push(out_link.clone().into_os_string());
    }
    args.extend(req.build_args.iter().cloned());
    let build = wrapper::run(
        layout,
        &Request {
            kind: req.action.session_kind(),
            args,
        },
    );
    let system = std::fs::read_link(&out_link)
        .ok()
        .map(|p| p.display().to_string());
    let _ = std::fs::remove_dir_all(&link_dir);
    let build = build?;
    let mut outcome = SwitchOutcome {
        exit_code: build.exit_code,
        build,
        system,
        commands: Vec::new(),
        failed_command: None,
    };
    if outcome.exit_code != 0 || req.action == Action::BuildSystem {
        return Ok(outcome);
    }
    let Some(system) = outcome.system.clone() else {
        return Err(Error::Command {
            program: "nix build".into(),
            message: format!("left no link at {}", out_link.display()),
        });
    };
    if profile.starts_with(PROFILES_DIR) && !req.dry_run {
        std::fs::create_dir_all(PROFILES_DIR).map_err(|source| Error::Write {
            path: PathBuf::from(PROFILES_DIR),
            source,
        })?;
    }
    let is_root = crate::sys::is_root();
    let sudo_user = std::env::var("SUDO_USER").ok();
    outcome.commands = activation_commands(&Activation {
        platform,
        action: req.action,
        system: &system,
        profile: &profile,
        is_root,
        systemd: Path::new("/run/systemd/system").is_dir(),
        activate_user: platform == Platform::Darwin && has_activate_user(&system),
        sudo_user: sudo_user.as_deref(),
    })?;
    if req.dry_run {
        return Ok(outcome);
    }
    for cmd in &outcome.commands {
        let Some((program, rest)) = cmd.split_first() else {
            continue;
        };
        let status = Command::new(program)
            .args(rest)
            .status()
            .map_err(|source| Error::Spawn {
                program: program.clone(),
                source,
            })?;
        if !status.success() {
            outcome.exit_code = status.code().unwrap_or(1);
            outcome.failed_command = Some(shell_words(cmd));
            break;
        }
    }
    Ok(outcome)
}

/// A fresh private directory for the out-link.
fn tempfile_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let dir = base.join(format!(
            "nix-ledger-switch-{}-{}-{attempt}",
            std::process::id(),
            crate::time::now_ms()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(Error::Write { path: dir, source }),
        }
    }
    Err(Error::Write {
        path: base,
        source: std::io::Error::other("no free name for a temporary directory"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-h";

    fn activation(platform: Platform, action: Action) -> Activation<'static> {
        Activation {
            platform,
            action,
            system: SYS,
            profile: SYSTEM_PROFILE,
            is_root: true,
            systemd: false,
            activate_user: false,
            sudo_user: None,
        }
    }

    fn lines(a: &Activation<'_>) -> Vec<String> {
        activation_commands(a)
            .unwrap()
            .iter()
            .map(|c| shell_words(c))
            .collect()
    }

    #[test]
    fn nixos_activation_matches_nixos_rebuild() {
        let set = format!("nix-env -p /nix/var/nix/profiles/system --set {SYS}");
        assert_eq!(
            lines(&activation(Platform::NixOs, Action::Switch)),
            [
                set.clone(),
                format!("{SYS}/bin/switch-to-configuration switch")
            ]
        );
        assert_eq!(
            lines(&activation(Platform::NixOs, Action::Boot)),
            [set, format!("{SYS}/bin/switch-to-configuration boot")]
        );
        assert_eq!(
            lines(&activation(Platform::NixOs, Action::Test)),
            [format!("{SYS}/bin/switch-to-configuration test")]
        );
        assert!(lines(&activation(Platform::NixOs, Action::BuildSystem)).is_empty());
        let mut a = activation(Platform::NixOs, Action::Test);
        a.systemd = true;
        a.is_root = false;
        assert_eq!(
            lines(&a),
            [format!("sudo systemd-run -E LOCALE_ARCHIVE -E NIXOS_INSTALL_BOOTLOADER --collect --no-ask-password --pipe --quiet --same-dir --service-type=exec --unit=nixos-rebuild-switch-to-configuration --wait {SYS}/bin/switch-to-configuration test")]
        );
    }

    #[test]
    fn darwin_activation_matches_darwin_rebuild() {
        let mut a = activation(Platform::Darwin, Action::Switch);
        a.is_root = false;
        assert_eq!(
            lines(&a),
            [
                format!("sudo nix-env -p /nix/var/nix/profiles/system --set {SYS}"),
                format!("sudo {SYS}/activate")
            ]
        );
        a.activate_user = true;
        assert!(
            activation_commands(&a).is_err(),
            "activate-user needs SUDO_USER"
        );
        a.sudo_user = Some("alice");
        assert_eq!(
            lines(&a)[1],
            format!("sudo --user=alice --set-home -- {SYS}/activate-user")
        );
        let err = activation_commands(&activation(Platform::Darwin, Action::Boot))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nix-darwin has no `boot`"), "{err}");
    }

    #[test]
    fn installables_follow_the_rebuild_tools() {
        assert_eq!(
            installable(Platform::NixOs, Some("/src/sys#web"), "h"),
            ["/src/sys#nixosConfigurations.\"web\".config.system.build.toplevel"]
        );
        assert_eq!(
            installable(Platform::NixOs, Some("/src/sys"), "h"),
            ["/src/sys#nixosConfigurations.\"h\".config.system.build.toplevel"]
        );
        assert_eq!(
            installable(Platform::Darwin, Some("github:me/sys#"), "mac"),
            ["github:me/sys#darwinConfigurations.\"mac\".system"]
        );
    }

    #[test]
    fn shell_words_quote_what_needs_it() {
        let cmd = [
            "a b".to_string(),
            "it's".into(),
            "/plain/path".into(),
            "".into(),
        ];
        assert_eq!(shell_words(&cmd), "'a b' 'it'\\''s' /plain/path ''");
    }
}
