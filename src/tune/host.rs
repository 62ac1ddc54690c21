//! The machine a recommendation is for: this one (its cores and RAM), or another one
//! given on the command line (`--host-cores`, `--memory`), and how much of its memory
//! builds may use together.

use serde::Serialize;

/// Cores and memory of the machine to tune for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Host {
    pub cores: u32,
    pub memory_bytes: u64,
    /// What the builds may use together: `memory_bytes` less a reserve.
    pub memory_budget_bytes: u64,
    /// Given on the command line rather than this machine's.
    pub projected: bool,
}

/// What Nix and the rest of the system need beside the builds: a sixteenth of the
/// memory, at least 128 MiB (Nix, the shells and coreutils around the builds) and at
/// most 2 GiB.
pub fn reserve(memory_bytes: u64) -> u64 {
    (memory_bytes / 16).clamp(128 << 20, 2 << 30)
}

impl Host {
    /// This machine, with what the command line overrides.
    pub fn new(cores: Option<u32>, memory_bytes: Option<u64>) -> Host {
        let (mut here_cores, mut here_memory) = (1, 0);
        if let Ok(mut sys) = sysinfo::System::new() {
            sys.refresh_memory_specifics(sysinfo::MemoryRefreshKind::nothing().with_ram());
            sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
            here_cores = (sys.cpus().len() as u32).max(1);
            here_memory = sys.total_memory();
        }
        if here_memory == 0 {
            here_memory = 1 << 30;
        }
        let memory = memory_bytes.unwrap_or(here_memory);
        Host {
            cores: cores.unwrap_or(here_cores).max(1),
            memory_bytes: memory,
            memory_budget_bytes: memory.saturating_sub(reserve(memory)),
            projected: cores.is_some() || memory_bytes.is_some(),
        }
    }
}

/// How many members the build users group `group` has in `/etc/group`: Nix runs at most
/// that many builds at once (it waits `build-poll-interval` for a free one), so the
/// sweep need not try more. `None` without build users or when the group is not there.
pub fn build_users(group: Option<&str>) -> Option<u32> {
    let group = group.filter(|g| !g.is_empty())?;
    let text = std::fs::read_to_string("/etc/group").ok()?;
    members(&text, group)
}

fn members(etc_group: &str, group: &str) -> Option<u32> {
    etc_group.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != group {
            return None;
        }
        let list = f.nth(2)?;
        let n = list.split(',').filter(|m| !m.trim().is_empty()).count() as u32;
        (n > 0).then_some(n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_grows_with_memory_within_bounds() {
        assert_eq!(reserve(1536 << 20), 128 << 20);
        assert_eq!(reserve(16 << 30), 1 << 30);
        assert_eq!(reserve(256 << 30), 2 << 30);
        let h = Host::new(Some(8), Some(16 << 30));
        assert_eq!(
            (h.cores, h.memory_budget_bytes, h.projected),
            (8, 15 << 30, true)
        );
        let here = Host::new(None, None);
        assert!(here.cores >= 1 && !here.projected && here.memory_budget_bytes > 0);
    }

    #[test]
    fn build_users_are_counted_from_the_group_file() {
        let text = "root:x:0:\nnixbld:x:30000:nixbld1,nixbld2,nixbld3\nempty:x:1:\n";
        assert_eq!(members(text, "nixbld"), Some(3));
        assert_eq!(members(text, "empty"), None);
        assert_eq!(members(text, "absent"), None);
        assert_eq!(build_users(Some("")), None);
    }
}
