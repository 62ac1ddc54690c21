//! Peak memory and CPU time of each running build's process tree.
//!
//! A build's processes are found by their working directory, which Nix sets to the
//! build's temporary directory `nix-build-<name>.drv-<n>` (builders run as `nixbld*`
//! users and call `setsid`, so neither the user nor the process group leads to them),
//! plus every descendant of those processes, which may `cd` anywhere.
//!
//! On Linux this reads procfs itself rather than refreshing `sysinfo`: one read of
//! `/proc/<pid>/stat` gives the parent, RSS and all four CPU counters (sysinfo reads
//! several files per process and does not expose the reaped children's time), and the
//! working directory is looked up once per new pid, so a sample of a quiet machine costs
//! one directory listing. Elsewhere the sampler records nothing (see `sample_once`).
//!
//! CPU time of a tree at one instant is Σ over its live processes of utime+stime plus
//! cutime+cstime: a reaped child's time moves into its parent's `c*time`, so every
//! CPU-second is counted exactly once; the maximum over samples is kept.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often running builds are sampled. The issue bounds it at 250 ms.
pub const INTERVAL: Duration = Duration::from_millis(200);

/// What was measured of one build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub peak_rss_bytes: u64,
    pub cpu_user_ms: u64,
    pub cpu_system_ms: u64,
    /// Samples in which at least one process of the build was seen.
    pub samples: u64,
}

#[derive(Debug, Default)]
struct Tracked {
    /// The build directory's file name without the trailing `-<n>`: `nix-build-x.drv`.
    dir_prefix: String,
    usage: Usage,
}

#[derive(Debug, Default)]
struct Shared {
    builds: HashMap<String, Tracked>,
    stop: bool,
    /// Total time spent sampling, for measuring the sampler's own cost.
    busy: Duration,
    rounds: u64,
}

/// A background thread sampling the builds it is told about.
pub struct Sampler {
    shared: Arc<Mutex<Shared>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    /// Starts the sampling thread for the builds of the Nix process `nix_pid`.
    pub fn start(nix_pid: Option<i32>) -> Sampler {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("nix-ledger-sampler".into())
            .spawn(move || run(&for_thread, nix_pid))
            .ok();
        Sampler { shared, thread }
    }

    /// Starts watching the build of `drv_path`.
    pub fn watch(&self, drv_path: &str) {
        let base = drv_path.rsplit('/').next().unwrap_or(drv_path);
        // Nix names the directory after the store path's name, without the hash.
        let name = match base.split_once('-') {
            Some((hash, rest)) if hash.len() == 32 => rest,
            _ => base,
        };
        if let Ok(mut shared) = self.shared.lock() {
            shared.builds.insert(
                drv_path.to_string(),
                Tracked {
                    dir_prefix: format!("nix-build-{name}"),
                    usage: Usage::default(),
                },
            );
        }
    }

    /// Stops watching `drv_path` and returns what was measured (`None` if nothing was seen).
    pub fn finish(&self, drv_path: &str) -> Option<Usage> {
        let tracked = self.shared.lock().ok()?.builds.remove(drv_path)?;
        (tracked.usage.samples > 0).then_some(tracked.usage)
    }

    /// The sampler's own cost so far: time spent sampling and the number of rounds.
    pub fn cost(&self) -> (Duration, u64) {
        self.shared
            .lock()
            .map(|s| (s.busy, s.rounds))
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        if let Ok(mut shared) = self.shared.lock() {
            shared.stop = true;
        }
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

fn run(shared: &Mutex<Shared>, nix_pid: Option<i32>) {
    let mut procs = ProcTable {
        nix_pid,
        ..ProcTable::default()
    };
    loop {
        std::thread::park_timeout(INTERVAL);
        let prefixes: Vec<(String, String)> = match shared.lock() {
            Ok(s) if s.stop => return,
            Ok(s) => s
                .builds
                .iter()
                .map(|(drv, t)| (drv.clone(), t.dir_prefix.clone()))
                .collect(),
            Err(_) => return,
        };
        if prefixes.is_empty() {
            continue;
        }
        let began = Instant::now();
        let measured = procs.sample(&prefixes);
        let Ok(mut s) = shared.lock() else { return };
        for (drv, m) in measured {
            if let Some(t) = s.builds.get_mut(&drv) {
                t.usage.peak_rss_bytes = t.usage.peak_rss_bytes.max(m.peak_rss_bytes);
                t.usage.cpu_user_ms = t.usage.cpu_user_ms.max(m.cpu_user_ms);
                t.usage.cpu_system_ms = t.usage.cpu_system_ms.max(m.cpu_system_ms);
                t.usage.samples += 1;
            }
        }
        s.busy += began.elapsed();
        s.rounds += 1;
    }
}

/// One process, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    ppid: i32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
    rss_pages: u64,
}

/// Parses the text of `/proc/<pid>/stat`. The command name may contain spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace();
    // Fields after the name, 0-based from `state` (field 3 in proc(5)).
    let mut nth = |skip: usize| f.nth(skip);
    let ppid = nth(1)?.parse().ok()?; // field 4
    let utime = nth(9)?.parse().ok()?; // field 14
    let stime = nth(0)?.parse().ok()?;
    let cutime = nth(0)?.parse().ok()?;
    let cstime = nth(0)?.parse().ok()?;
    let rss_pages = nth(6)?.parse().ok()?; // field 24
    Some(Stat {
        ppid,
        utime,
        stime,
        cutime,
        cstime,
        rss_pages,
    })
}

/// What is remembered of processes between samples: which build directory, if any, a pid's
/// working directory was in when first seen.
#[derive(Default)]
struct ProcTable {
    cwd_of: HashMap<i32, Option<String>>,
    /// Our Nix process. Another Nix building a derivation of the same name uses a
    /// directory of the same name (`-1` instead of `-0`); in single-user mode our
    /// builders descend from our Nix, which tells them apart. Under a daemon neither
    /// does, and same-name builds at the same time are summed.
    nix_pid: Option<i32>,
}

impl ProcTable {
    #[cfg(target_os = "linux")]
    fn sample(&mut self, builds: &[(String, String)]) -> Vec<(String, Usage)> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut seen = HashSet::new();
        let mut stats: HashMap<i32, Stat> = HashMap::new();
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            seen.insert(pid);
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            if let Some(stat) = parse_stat(&text) {
                children.entry(stat.ppid).or_default().push(pid);
                stats.insert(pid, stat);
            }
            self.cwd_of.entry(pid).or_insert_with(|| {
                let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
                let name = cwd.file_name()?.to_str()?;
                name.starts_with("nix-build-").then(|| name.to_string())
            });
        }
        // Forget exited pids so a reused pid is looked at afresh.
        self.cwd_of.retain(|pid, _| seen.contains(pid));

        let tick_ms = 1000.0 / clock_ticks_per_second();
        let page = page_size();
        let mut out = Vec::new();
        for (drv, prefix) in builds {
            let mut members = HashSet::new();
            let mut stack: Vec<i32> = self
                .cwd_of
                .iter()
                .filter(|(_, dir)| dir.as_deref().is_some_and(|d| is_build_dir(d, prefix)))
                .map(|(pid, _)| *pid)
                .collect();
            if let Some(nix) = self.nix_pid {
                let ours: Vec<i32> = stack
                    .iter()
                    .copied()
                    .filter(|&pid| descends_from(pid, nix, &stats))
                    .collect();
                if !ours.is_empty() {
                    stack = ours;
                }
            }
            while let Some(pid) = stack.pop() {
                if members.insert(pid) {
                    if let Some(kids) = children.get(&pid) {
                        stack.extend(kids);
                    }
                }
            }
            let mut usage = Usage::default();
            let (mut user, mut system) = (0u64, 0u64);
            for stat in members.iter().filter_map(|p| stats.get(p)) {
                usage.peak_rss_bytes += stat.rss_pages * page;
                user += stat.utime + stat.cutime;
                system += stat.stime + stat.cstime;
            }
            if !members.is_empty() {
                usage.cpu_user_ms = (user as f64 * tick_ms) as u64;
                usage.cpu_system_ms = (system as f64 * tick_ms) as u64;
                out.push((drv.clone(), usage));
            }
        }
        out
    }

    #[cfg(not(target_os = "linux"))]
    fn sample(&mut self, _builds: &[(String, String)]) -> Vec<(String, Usage)> {
        // macOS has no procfs and does not expose another user's working directory
        // without privileges; resources are not recorded there yet.
        let _ = &self.cwd_of;
        Vec::new()
    }
}

/// Whether `ancestor` is `pid` or one of its ancestors.
fn descends_from(mut pid: i32, ancestor: i32, stats: &HashMap<i32, Stat>) -> bool {
    // Bounded: a ppid loop cannot happen, but a racy snapshot should not hang us.
    for _ in 0..64 {
        if pid == ancestor {
            return true;
        }
        match stats.get(&pid) {
            Some(stat) if stat.ppid > 0 => pid = stat.ppid,
            _ => return false,
        }
    }
    false
}

/// `nix-build-x.drv-3` is a directory of the build whose prefix is `nix-build-x.drv`.
fn is_build_dir(dir: &str, prefix: &str) -> bool {
    dir.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let text = "4242 (sh) (x y)) S 4000 4242 4242 0 -1 4194560 500 0 0 0 120 30 7 3 20 0 1 0 99 12345678 2500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                ppid: 4000,
                utime: 120,
                stime: 30,
                cutime: 7,
                cstime: 3,
                rss_pages: 2500
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S"), None);
    }

    #[test]
    fn build_directories_match_only_their_own_build() {
        assert!(is_build_dir(
            "nix-build-hello-2.12.drv-0",
            "nix-build-hello-2.12.drv"
        ));
        assert!(is_build_dir(
            "nix-build-hello-2.12.drv-13",
            "nix-build-hello-2.12.drv"
        ));
        assert!(!is_build_dir(
            "nix-build-hello-2.12.drv-",
            "nix-build-hello-2.12.drv"
        ));
        assert!(!is_build_dir(
            "nix-build-hello-2.12.drv-0",
            "nix-build-hello-2.1"
        ));
        assert!(!is_build_dir(
            "nix-build-hello-2.12.drv-x",
            "nix-build-hello-2.12.drv"
        ));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_process_tree_in_a_build_directory_is_measured() {
        let dir = tempfile::tempdir().unwrap();
        let build_dir = dir.path().join("nix-build-sampler-test.drv-0");
        std::fs::create_dir(&build_dir).unwrap();
        // A child that touches ~64 MiB and then waits, started from the build directory.
        let mut child = std::process::Command::new("/usr/bin/python3")
            .args(["-c", "import time\nb = b'x' * (64 << 20)\ntime.sleep(5)"])
            .current_dir(&build_dir)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(800));
        let builds = vec![("d".to_string(), "nix-build-sampler-test.drv".to_string())];
        let measured = ProcTable::default().sample(&builds);
        // Told that the builds descend from this process, it still finds the child...
        let mine = ProcTable {
            nix_pid: Some(std::process::id() as i32),
            ..ProcTable::default()
        }
        .sample(&builds);
        // ...and when nothing in the directory descends from our Nix (a daemon built it),
        // the directory match alone is kept.
        let other = ProcTable {
            nix_pid: Some(i32::MAX),
            ..ProcTable::default()
        }
        .sample(&builds);
        child.kill().unwrap();
        let _ = child.wait();
        for m in [&measured, &mine, &other] {
            assert_eq!(m.len(), 1);
            let rss = m[0].1.peak_rss_bytes;
            assert!((64 << 20..128 << 20).contains(&rss), "rss {rss}");
        }
    }
}
