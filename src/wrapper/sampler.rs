//! Peak memory and CPU time of each running build's process tree.
//!
//! A build's processes are those of the build user that runs it, which is told by its
//! build directory ([`super::builddir`]): a build user runs one build at a time. That
//! holds in the sandbox too, where the builder's working directory reads `/build` from
//! outside, and on Nix 2.8 needs no privileges: anyone may `stat` the directory, see who
//! owns `/proc/<pid>` and read `/proc/<pid>/stat` (a build user's working directory is
//! readable only by root). The directory is looked up again in every sample, so once it
//! is gone (the build ended) the user's next build is not counted against this one.
//! Where the build user cannot be known (a root-only directory on a Nix with the
//! CVE-2024-38531 layout, seen by a user other than root; directories that do not carry
//! the derivation's name), nothing is recorded rather than a guess.
//!
//! Builds that run as the wrapper's own user (no build users configured) are found by
//! their working directory instead, the build directory, plus every descendant of
//! those processes, which may `cd` anywhere.
//!
//! On Linux this reads procfs itself rather than refreshing `sysinfo`: one read of
//! `/proc/<pid>/stat` gives the parent, RSS and all four CPU counters (sysinfo reads
//! several files per process and does not expose the reaped children's time); a working
//! directory is looked up once per new pid, and only when some build needs it. While no
//! watched build has a directory, a sample costs a few `stat`s. Elsewhere the sampler
//! records nothing (see `ProcTable::sample`).
//!
//! CPU time of a tree at one instant is Σ over its live processes of utime+stime plus
//! cutime+cstime: a reaped child's time moves into its parent's `c*time`, so every
//! CPU-second is counted exactly once; the maximum over samples is kept. What the last
//! sample missed, and the load the build competed with, are [`super::contention`]'s.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::builddir::BuildRoots;
use super::contention::{self, children_cpu_ms, own_cpu_ms, OutsideLoad, Reaped, Watch};
use crate::nix::store_path::path_name;
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
    /// Time it was seen using CPU, and the CPU the rest of the host used meanwhile
    /// ([`super::contention`]).
    pub cpu_window_ms: u64,
    pub others_cpu_ms: u64,
}

#[derive(Debug, Default)]
struct Tracked {
    /// The derivation's name: its build directories are `nix-build-<name>.drv-<n>`.
    name: String,
    /// When the build was seen to start (Unix ms).
    started_ms: i64,
    usage: Usage,
    watch: Watch,
}

impl Tracked {
    fn cpu_ms(&self) -> u64 {
        self.usage.cpu_user_ms + self.usage.cpu_system_ms
    }

    /// Takes the build's CPU time to the end from `reaped` (user, system ms of Nix's
    /// children not yet given to a build); returns how much of it was taken.
    fn settle(&mut self, reaped: (u64, u64), now: Instant) -> u64 {
        let sampled = self.cpu_ms();
        match self.watch.settle(sampled, reaped.0 + reaped.1, now) {
            Some(total) => {
                let (user, system) = contention::split(total, reaped.0, reaped.1);
                self.usage.cpu_user_ms = self.usage.cpu_user_ms.max(user);
                self.usage.cpu_system_ms = self.usage.cpu_system_ms.max(system);
                total
            }
            None => 0,
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    builds: HashMap<String, Tracked>,
    /// Nix's children's CPU time; `None` while unknown (no Nix pid, not readable).
    reaped: Option<Reaped>,
    outside: OutsideLoad,
    nix_pid: Option<i32>,
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
    /// Starts the sampling thread for the builds of the Nix process `nix_pid`, whose
    /// build directories are in one of `build_roots`.
    pub fn start(nix_pid: Option<i32>, build_roots: BuildRoots) -> Sampler {
        let shared = Arc::new(Mutex::new(Shared {
            nix_pid,
            ..Shared::default()
        }));
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("nix-ledger-sampler".into())
            .spawn(move || run(&for_thread, nix_pid, build_roots))
            .ok();
        Sampler { shared, thread }
    }

    /// Starts watching the build of `drv_path`, seen to start at `started_ms`.
    pub fn watch(&self, drv_path: &str, started_ms: i64) {
        if let Ok(mut shared) = self.shared.lock() {
            shared.builds.insert(
                drv_path.to_string(),
                Tracked {
                    name: path_name(drv_path).to_string(),
                    started_ms,
                    usage: Usage::default(),
                    watch: Watch::default(),
                },
            );
        }
    }

    /// Stops watching `drv_path` and returns what was measured (`None` if nothing was seen).
    pub fn finish(&self, drv_path: &str) -> Option<Usage> {
        let mut shared = self.shared.lock().ok()?;
        let mut tracked = shared.builds.remove(drv_path)?;
        // Its builder was reaped just before Nix said it ended: its whole CPU time is
        // in Nix's children's time now (see `contention`).
        let now = shared.nix_pid.and_then(children_cpu_ms);
        if let (Some(reaped), Some(now)) = (shared.reaped.as_mut(), now) {
            reaped.taken += tracked.settle(reaped.available(now), Instant::now());
        }
        (tracked.usage.samples > 0).then_some(tracked.usage)
    }

    /// The load, in cores, the rest of the host puts on it while builds run; `None` until
    /// two rounds have seen builds.
    pub fn outside_load(&self) -> Option<f64> {
        self.shared.lock().ok()?.outside.cores()
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

fn run(shared: &Mutex<Shared>, nix_pid: Option<i32>, build_roots: BuildRoots) {
    let mut procs = ProcTable {
        nix_pid,
        build_roots,
        ..ProcTable::default()
    };
    let tick_ms = 1000.0 / crate::sys::clock_ticks_per_second();
    loop {
        std::thread::park_timeout(INTERVAL);
        let watched: Vec<Watched> = match shared.lock() {
            Ok(s) if s.stop => return,
            Ok(s) => s
                .builds
                .iter()
                .map(|(drv, t)| Watched {
                    drv_path: drv.clone(),
                    name: t.name.clone(),
                    started_ms: t.started_ms,
                })
                .collect(),
            Err(_) => return,
        };
        if watched.is_empty() {
            continue;
        }
        let began = Instant::now();
        let measured = procs.sample(&watched);
        let host_busy = contention::host_busy_ms(tick_ms);
        let children = nix_pid.and_then(children_cpu_ms);
        let Ok(mut s) = shared.lock() else { return };
        let mut seen = HashSet::with_capacity(measured.len());
        let mut builds_ms = 0;
        for (drv, m) in measured {
            if let Some(t) = s.builds.get_mut(&drv) {
                t.usage.peak_rss_bytes = t.usage.peak_rss_bytes.max(m.peak_rss_bytes);
                t.usage.cpu_user_ms = t.usage.cpu_user_ms.max(m.cpu_user_ms);
                t.usage.cpu_system_ms = t.usage.cpu_system_ms.max(m.cpu_system_ms);
                t.usage.samples += 1;
                let cpu = t.cpu_ms();
                builds_ms += t.watch.observe(began, host_busy, cpu);
                t.usage.cpu_window_ms = t.watch.window_ms;
                t.usage.others_cpu_ms = t.watch.others_cpu_ms;
                seen.insert(drv);
            }
        }
        if let (Some(reaped), Some(now)) = (s.reaped, children) {
            // A build measured before and not now ended in this round: if it is the only
            // one, what Nix reaped meanwhile is its CPU time to the end.
            let mut gone = s
                .builds
                .iter_mut()
                .filter(|(drv, t)| t.watch.seen() && !seen.contains(*drv));
            if let (Some((_, t)), None) = (gone.next(), gone.next()) {
                t.settle(reaped.available(now), Instant::now());
            }
        }
        s.reaped = children.map(|at_round| Reaped { at_round, taken: 0 });
        let ours = [nix_pid, Some(std::process::id() as i32)]
            .into_iter()
            .flatten()
            .filter_map(own_cpu_ms)
            .sum();
        s.outside.round(began, host_busy, ours, builds_ms);
        s.busy += began.elapsed();
        s.rounds += 1;
    }
}

/// One process, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stat {
    ppid: i32,
    pub(super) utime: u64,
    pub(super) stime: u64,
    pub(super) cutime: u64,
    pub(super) cstime: u64,
    rss_pages: u64,
}

/// Parses the text of `/proc/<pid>/stat`. The command name may contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub(super) fn parse_stat(text: &str) -> Option<Stat> {
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
    /// Where Nix creates build directories.
    build_roots: BuildRoots,
}

/// A build the sampler is told about.
struct Watched {
    drv_path: String,
    name: String,
    started_ms: i64,
}

/// How to find a build's processes.
#[derive(Debug, PartialEq, Eq)]
enum Finder {
    /// The processes of these build users (those of its build directories).
    Users(Vec<u32>),
    /// Its build directory is ours: by working directory.
    WorkingDirectory,
    /// No build directory seen (not building here, yet or any more, or on a remote
    /// builder), or none whose build user can be known.
    Nothing,
}

/// How to find the processes of the build of `name` that started at `started_ms`, for a
/// sampler running as `me`.
fn finder(roots: &BuildRoots, name: &str, started_ms: i64, me: u32) -> Finder {
    let dirs = roots.dirs(name, Some(started_ms));
    let mut users: Vec<u32> = dirs.iter().filter_map(|d| d.build_user(me)).collect();
    users.sort_unstable();
    users.dedup();
    if !users.is_empty() {
        Finder::Users(users)
    } else if dirs.iter().any(|d| d.owner == me) {
        Finder::WorkingDirectory
    } else {
        Finder::Nothing
    }
}

/// The owner of `/proc/<pid>`: the process's effective user.
fn proc_owner(proc_dir: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    proc_dir.symlink_metadata().ok().map(|m| m.uid())
}

impl ProcTable {
    #[cfg(target_os = "linux")]
    fn sample(&mut self, builds: &[Watched]) -> Vec<(String, Usage)> {
        // SAFETY: geteuid cannot fail.
        let me = crate::sys::effective_uid();
        let finders: Vec<Finder> = builds
            .iter()
            .map(|b| finder(&self.build_roots, &b.name, b.started_ms, me))
            .collect();
        if finders.iter().all(|f| *f == Finder::Nothing) {
            return Vec::new();
        }
        let by_cwd = finders.contains(&Finder::WorkingDirectory);
        let by_user = finders.iter().any(|f| matches!(f, Finder::Users(_)));
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut seen = HashSet::new();
        let mut stats: HashMap<i32, Stat> = HashMap::new();
        let mut owners: HashMap<i32, u32> = HashMap::new();
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
            if by_user {
                if let Some(uid) = proc_owner(&entry.path()) {
                    owners.insert(pid, uid);
                }
            }
            if by_cwd {
                self.cwd_of.entry(pid).or_insert_with(|| {
                    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
                    let name = cwd.file_name()?.to_str()?;
                    name.starts_with("nix-build-").then(|| name.to_string())
                });
            }
        }
        // Forget exited pids so a reused pid is looked at afresh.
        self.cwd_of.retain(|pid, _| seen.contains(pid));

        let tick_ms = 1000.0 / crate::sys::clock_ticks_per_second();
        let page = crate::sys::page_size();
        let mut out = Vec::new();
        for (build, finder) in builds.iter().zip(&finders) {
            let mut stack: Vec<i32> = match finder {
                Finder::Nothing => continue,
                Finder::Users(users) => self.by_user(users, &owners, &stats),
                Finder::WorkingDirectory => self.by_working_directory(&build.name, &stats),
            };
            let mut members = HashSet::new();
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
                out.push((build.drv_path.clone(), usage));
            }
        }
        out
    }

    /// The processes of `users`. Two builds of the same name at once (from another Nix)
    /// have directories of the same prefix: in single-user mode our builders descend from
    /// our Nix (also in the sandbox), so only the users with such a process are kept if
    /// there are any. Under a daemon none does, and both are summed.
    #[cfg(target_os = "linux")]
    fn by_user(
        &self,
        users: &[u32],
        owners: &HashMap<i32, u32>,
        stats: &HashMap<i32, Stat>,
    ) -> Vec<i32> {
        let of = |users: &[u32]| -> Vec<i32> {
            owners
                .iter()
                .filter(|(_, uid)| users.contains(uid))
                .map(|(pid, _)| *pid)
                .collect()
        };
        let pids = of(users);
        let Some(nix) = self.nix_pid else {
            return pids;
        };
        let ours: Vec<u32> = users
            .iter()
            .copied()
            .filter(|uid| {
                pids.iter()
                    .any(|pid| owners.get(pid) == Some(uid) && descends_from(*pid, nix, stats))
            })
            .collect();
        if ours.is_empty() || ours.len() == users.len() {
            pids
        } else {
            of(&ours)
        }
    }

    /// The processes whose working directory is a build directory of `name`; of those,
    /// the ones descending from our Nix if there are any.
    #[cfg(target_os = "linux")]
    fn by_working_directory(&self, name: &str, stats: &HashMap<i32, Stat>) -> Vec<i32> {
        let prefix = format!("nix-build-{name}.drv");
        let in_dir: Vec<i32> = self
            .cwd_of
            .iter()
            .filter(|(_, dir)| dir.as_deref().is_some_and(|d| is_build_dir(d, &prefix)))
            .map(|(pid, _)| *pid)
            .collect();
        if let Some(nix) = self.nix_pid {
            let ours: Vec<i32> = in_dir
                .iter()
                .copied()
                .filter(|&pid| descends_from(pid, nix, stats))
                .collect();
            if !ours.is_empty() {
                return ours;
            }
        }
        in_dir
    }

    #[cfg(not(target_os = "linux"))]
    fn sample(&mut self, _builds: &[Watched]) -> Vec<(String, Usage)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A build of `name` that started a moment ago.
    fn watched(name: &str) -> Watched {
        Watched {
            drv_path: format!("/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-{name}.drv"),
            name: name.into(),
            started_ms: crate::time::now_ms() - 1_000,
        }
    }

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
        let builds = vec![watched("sampler-test")];
        let roots = BuildRoots::new(vec![dir.path().to_path_buf()]);
        let table = |nix_pid| ProcTable {
            nix_pid,
            build_roots: roots.clone(),
            ..ProcTable::default()
        };
        // Our own directory: found by working directory.
        let measured = table(None).sample(&builds);
        // Told that the builds descend from this process, it still finds the child...
        let mine = table(Some(std::process::id() as i32)).sample(&builds);
        // ...and when nothing in the directory descends from our Nix (a daemon built it),
        // the directory match alone is kept.
        let other = table(Some(i32::MAX)).sample(&builds);
        // Without the directory among the roots, the build is not running here.
        let elsewhere = ProcTable::default().sample(&builds);
        child.kill().unwrap();
        let _ = child.wait();
        for m in [&measured, &mine, &other] {
            assert_eq!(m.len(), 1);
            let rss = m[0].1.peak_rss_bytes;
            assert!((64 << 20..128 << 20).contains(&rss), "rss {rss}");
        }
        assert!(elsewhere.is_empty(), "{elsewhere:?}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    #[cfg_attr(
        not(root_tests),
        ignore = "needs root: it runs a process as another user"
    )]
    fn a_build_users_processes_are_measured_wherever_they_run() {
        use std::os::unix::process::CommandExt;
        // As Nix does: a directory owned by the build user, and the builder running as
        // that user with its working directory elsewhere (`/build` in the sandbox).
        let build_user = 65534; // nobody
        let dir = tempfile::tempdir().unwrap();
        let build_dir = dir.path().join("nix-build-sampler-user.drv-2");
        std::fs::create_dir(&build_dir).unwrap();
        std::os::unix::fs::chown(&build_dir, Some(build_user), None).unwrap();
        let mut child = std::process::Command::new("/usr/bin/python3")
            .args(["-c", "import time\nb = b'x' * (48 << 20)\ntime.sleep(5)"])
            .current_dir("/")
            .uid(build_user)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(800));
        let mut table = ProcTable {
            build_roots: BuildRoots::new(vec![dir.path().to_path_buf()]),
            ..ProcTable::default()
        };
        let builds = vec![watched("sampler-user")];
        let during = table.sample(&builds);
        // The directory gone (the build ended): the user's processes are no longer it.
        std::fs::remove_dir(&build_dir).unwrap();
        let after = table.sample(&builds);
        child.kill().unwrap();
        let _ = child.wait();
        assert_eq!(during.len(), 1, "{during:?}");
        let rss = during[0].1.peak_rss_bytes;
        assert!((48 << 20..96 << 20).contains(&rss), "rss {rss}");
        assert!(after.is_empty(), "{after:?}");
    }
}
