//! This machine's name in a fleet: what `nix-ledger sync` tags its rows with on the hub,
//! and what `history --machine` matches builds recorded here against.
//!
//! `NIX_LEDGER_MACHINE=NAME` sets it (tests; CI runners that should share one name);
//! otherwise it is the hostname and the first 8 characters of the systemd machine id
//! (`/etc/machine-id`, else D-Bus's copy), stable across reboots and distinct between
//! machines that share a hostname. Without a machine id, the hostname alone.
//!
//! The name is a label, not the key rows are told apart by on the hub: that is each
//! ledger's own random id, so ledgers sharing a name never take each other's rows.

use std::path::Path;

/// The variable that overrides the machine's name.
pub const ENV: &str = "NIX_LEDGER_MACHINE";

/// Where the machine id is looked for, in order.
const MACHINE_ID_FILES: &[&str] = &["/etc/machine-id", "/var/lib/dbus/machine-id"];

/// This machine's name.
pub fn this_machine() -> String {
    if let Some(name) = std::env::var(ENV).ok().filter(|n| !n.trim().is_empty()) {
        return name.trim().to_string();
    }
    let host = sysinfo::System::host_name().unwrap_or_else(|_| "localhost".to_string());
    let id = MACHINE_ID_FILES
        .iter()
        .find_map(|f| machine_id(Path::new(f)));
    name_of(&host, id.as_deref())
}

/// The machine id in `file`, if it holds one (32 hex digits; empty until first boot).
fn machine_id(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let id = text.trim();
    (id.len() >= 8 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| id.to_lowercase())
}

/// `host-<8 hex>` or `host`.
fn name_of(host: &str, machine_id: Option<&str>) -> String {
    let host = host
        .split('.')
        .next()
        .filter(|h| !h.is_empty())
        .unwrap_or(host);
    match machine_id {
        Some(id) => format!("{host}-{}", &id[..8]),
        None => host.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_the_short_hostname_and_the_machine_ids_start() {
        assert_eq!(
            name_of("ci1.example.org", Some("0123456789abcdef0123456789abcdef")),
            "ci1-01234567"
        );
        assert_eq!(name_of("box", None), "box");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("machine-id");
        std::fs::write(&file, "\n").unwrap();
        assert_eq!(machine_id(&file), None, "empty until the first boot");
        std::fs::write(&file, "0123456789ABCDEF0123456789abcdef\n").unwrap();
        assert_eq!(
            machine_id(&file).as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
    }
}
