//! `nix-ledger build`: runs `nix build` with Nix's JSON log on stderr, shows live
//! progress, samples each build's memory and CPU, and records the session and every
//! build in the ledger.
//!
//! The supervisor is a single-threaded tokio loop: it reads Nix's stderr (stamping each
//! event on arrival, as the stream carries no times), forwards SIGINT/SIGTERM to Nix's
//! process group and redraws the progress. The sampler is its own thread so that reading
//! procfs never delays the stream. Nothing is written to the ledger per line: the session
//! row is opened before Nix starts; the builds are written in one transaction, on a
//! thread of their own, as soon as Nix has stopped all its activities (at the end it then
//! only tears down, for tens of milliseconds), or else at the end, also after an
//! interrupt; the session row is closed at the end.
//!
//! - [`events`]: parsing the JSON log.
//! - [`builddir`]: where Nix builds, and which build user runs a build.
//! - [`state`]: what the log says happened.
//! - [`progress`]: rendering on stderr.
//! - [`nixenv`]: Nix's version and settings for the session, cached.
//! - [`sampler`]: memory and CPU of running builds.
//! - [`session`]: the session's rows in the ledger.
//! - [`summary`]: the summary after every build.

pub mod builddir;
pub mod events;
pub mod nixenv;
pub mod progress;
pub mod sampler;
pub mod session;
pub mod state;
pub mod summary;

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};

use crate::ledger::record::Status;
use crate::ledger::{ingest, now_ms, Ledger};
use crate::nix::command::NixCommand;
use crate::nix::store_db::StoreDb;
use crate::paths::Layout;
use crate::{Error, Result};
use builddir::BuildRoots;
use events::{parse_line, Line};
use progress::{Progress, Style};
use sampler::Sampler;
use state::{Notice, State, Substitution};
use summary::Summary;

/// After forwarding an interrupt, how long Nix gets before the next, harsher signal.
const ESCALATE_AFTER: Duration = Duration::from_secs(5);

/// One wrapped `nix build`.
#[derive(Debug, Clone)]
pub struct Request {
    /// The session kind recorded: `build`, `switch`, `boot`, `test`, `build-system`.
    pub kind: String,
    /// The arguments after `nix build`, passed through unchanged.
    pub args: Vec<OsString>,
}

/// How a wrapped build ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The exit status to leave with: Nix's, or 130 after SIGINT (143 after SIGTERM).
    pub exit_code: i32,
    pub interrupted: bool,
    pub session_id: i64,
    pub summary: Summary,
    /// Why what was built before rebuilt ([`crate::why::summary_after_session`]): the
    /// text, `None` when nothing was rebuilt, or why it could not be told.
    pub rebuild_causes: std::result::Result<Option<String>, String>,
}

/// What the arguments say about the settings and the display.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArgsInfo {
    pub print_build_logs: bool,
    pub extra_verbosity: u64,
    pub max_jobs: Option<i64>,
    pub cores: Option<i64>,
    /// The installables are flake references (no `--file`/`--expr`).
    pub flake_refs: bool,
}

impl ArgsInfo {
    /// Reads the options the wrapper cares about; everything is still passed to Nix.
    pub fn from_args(args: &[OsString]) -> ArgsInfo {
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut info = ArgsInfo {
            flake_refs: true,
            ..ArgsInfo::default()
        };
        let number = |v: Option<&String>| -> Option<i64> { v?.parse().ok() };
        let mut i = 0;
        while i < args.len() {
            let a = args[i].as_str();
            match a {
                "--" => break,
                "-L" | "--print-build-logs" => info.print_build_logs = true,
                "--verbose" => info.extra_verbosity += 1,
                "-f" | "--file" | "--expr" => info.flake_refs = false,
                "-j" | "--max-jobs" => {
                    info.max_jobs = number(args.get(i + 1)).or(info.max_jobs);
                    i += 1;
                }
                "--cores" => {
                    info.cores = number(args.get(i + 1)).or(info.cores);
                    i += 1;
                }
                "--option" => {
                    match args.get(i + 1).map(String::as_str) {
                        Some("max-jobs") => info.max_jobs = number(args.get(i + 2)),
                        Some("cores") => info.cores = number(args.get(i + 2)),
                        _ => {}
                    }
                    i += 2;
                }
                _ if a.starts_with("--file=") || a.starts_with("--expr=") => {
                    info.flake_refs = false
                }
                _ if a.starts_with('-') && !a.starts_with("--") => {
                    // Bundled short flags: -vvL, -j4.
                    let flags = &a[1..];
                    if let Some(n) = flags.strip_prefix('j') {
                        if !n.is_empty() {
                            info.max_jobs = n.parse().ok();
                        }
                    } else {
                        for c in flags.chars() {
                            match c {
                                'v' => info.extra_verbosity += 1,
                                'L' => info.print_build_logs = true,
                                'f' => info.flake_refs = false,
                                _ => {}
                            }
                        }
                    }
                }
                _ => {}
            }
            i += 1;
        }
        info
    }
}

/// The full `nix` command line for a request. The JSON log options come after the
/// user's (but before a `--`), because Nix's `-L` switches the log format to its own
/// progress bar and the last format given wins.
pub fn nix_command(req: &Request, info: &ArgsInfo) -> NixCommand {
    let mut cmd = NixCommand::nix();
    if info.flake_refs {
        cmd = cmd.args(["--extra-experimental-features", "flakes"]);
    }
    let split = req
        .args
        .iter()
        .position(|a| a == "--")
        .unwrap_or(req.args.len());
    cmd.arg("build")
        .args(&req.args[..split])
        // Not `-v`: the wrapper needs only what Nix sends at its default verbosity
        // (activities, results, errors), and on Nix 2.8 `-v` alone made a
        // 200-derivation build 1.4% slower (docs/benchmarks.md).
        .args(["--log-format", "internal-json"])
        .args(&req.args[split..])
}

/// Runs the request to the end and records it. Errors are only those before Nix runs or
/// when the ledger cannot be written; Nix's own failure is an [`Outcome`].
pub fn run(layout: &Layout, req: &Request) -> Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(supervise(layout, req))
}

/// Facts about this machine and Nix, gathered while Nix builds.
#[derive(Debug, Default)]
struct Environment {
    nix: nixenv::NixSettings,
    host_cores: Option<i64>,
    host_memory_bytes: Option<i64>,
}

fn gather_environment(state_dir: &std::path::Path) -> Environment {
    let mut env = Environment {
        nix: nixenv::settings(state_dir),
        ..Environment::default()
    };
    if let Ok(mut sys) = sysinfo::System::new() {
        sys.refresh_memory_specifics(sysinfo::MemoryRefreshKind::nothing().with_ram());
        sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
        env.host_cores = Some(sys.cpus().len() as i64).filter(|n| *n > 0);
        env.host_memory_bytes = Some(sys.total_memory() as i64).filter(|n| *n > 0);
    }
    env
}

/// What was recorded before Nix exited (see [`Supervisor::record_early_if_quiet`]).
enum Early {
    NotYet,
    /// On its own thread and connection, so that the stream is read on meanwhile.
    Running(std::thread::JoinHandle<Result<EarlyRecord>>),
}

struct EarlyRecord {
    /// The row and the status recorded of each of the first `rows.len()` finished builds.
    rows: Vec<(i64, Status)>,
    /// How many substitutions were recorded, and their NAR bytes.
    substitutions: usize,
    nar_bytes: u64,
    rebuild_causes: std::result::Result<Option<String>, String>,
}

/// What the early record is given: the builds and substitutions so far.
struct EarlyWork {
    ledger: std::path::PathBuf,
    spools: Vec<std::path::PathBuf>,
    session_id: i64,
    finished: Vec<state::FinishedBuild>,
    substitutions: Vec<Substitution>,
}

impl EarlyWork {
    fn run(self) -> Result<EarlyRecord> {
        let mut ledger = Ledger::open(&self.ledger)?;
        // The hook's records first, so that each build merges with its hook twin.
        ingest::ingest_all(&mut ledger, &self.spools)?;
        let (substituted, nar_bytes) = substituted_derivations(&self.substitutions);
        let ids = session::record(&mut ledger, self.session_id, &self.finished, &substituted)?;
        let rows = ids
            .into_iter()
            .zip(self.finished.iter().map(|b| b.status))
            .collect();
        // Caught: a panic here, after the builds were committed, must not make the end
        // record them a second time (a failed early record means nothing was recorded).
        let rebuild_causes = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::why::summary_after_session(&ledger, self.session_id)
        }))
        .map_err(|_| "the rebuild summary panicked".to_string())
        .and_then(|summary| summary.map_err(|e| e.to_string()));
        Ok(EarlyRecord {
            rows,
            substitutions: self.substitutions.len(),
            nar_bytes,
            rebuild_causes,
        })
    }
}

/// The supervisor's mutable parts.
struct Supervisor {
    state: State,
    progress: Progress,
    sampler: Sampler,
    ledger: Ledger,
    session_id: i64,
    spools: Vec<std::path::PathBuf>,
    early: Early,
    pgid: i32,
    /// The first signal forwarded, and how far the escalation has gone.
    interrupted_by: Option<i32>,
    escalation: u8,
    escalate_at: Option<tokio::time::Instant>,
}

impl Supervisor {
    /// Handles the whole lines of a chunk read from Nix's stderr (prefixed by the
    /// unfinished line of the previous chunk), all stamped with the chunk's arrival.
    fn handle_chunk(&mut self, partial: &mut Vec<u8>, chunk: &Chunk) {
        let (now, now_ms) = (chunk.read_at, chunk.read_at_ms);
        let mut rest = chunk.bytes.as_slice();
        if !partial.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    partial.extend_from_slice(&rest[..end]);
                    let line = std::mem::take(partial);
                    self.handle_line(&line, now, now_ms);
                    rest = &rest[end + 1..];
                }
                None => {
                    partial.extend_from_slice(rest);
                    return;
                }
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.handle_line(&rest[..end], now, now_ms);
            rest = &rest[end + 1..];
        }
        partial.extend_from_slice(rest);
        self.progress.flush();
    }

    fn handle_line(&mut self, line: &[u8], now: Instant, now_ms: i64) {
        let event = match parse_line(line) {
            Line::Event(event) => event,
            Line::Plain | Line::Malformed => {
                if !line.is_empty() {
                    self.progress.raw(line);
                }
                return;
            }
        };
        let notice = self.state.apply(&event, now, now_ms);
        let started = match notice {
            Some(Notice::LogLine { name, line }) => {
                self.progress.log_line(name, line);
                None
            }
            Some(Notice::Started(id)) => Some(id),
            Some(Notice::HookLine(line)) => {
                self.progress.hook_line(line);
                None
            }
            Some(Notice::Message { level, text }) => {
                self.progress.message(level, text);
                None
            }
            None => None,
        };
        if let Some(id) = started {
            if let Some(build) = self.state.running.get_mut(&id) {
                // A remote builder's processes are not on this machine.
                if build.machine.is_none() {
                    self.sampler.watch(&build.drv_path, build.started_ms);
                }
                // Only the live view shows it: a query per build otherwise for nothing.
                if self.progress.style().live {
                    build.expected_ms = session::expected_ms(&self.ledger, &build.name);
                }
            }
            self.progress.tick(&self.state, now);
        }
        for index in std::mem::take(&mut self.state.stopped) {
            if let Some(build) = self.state.finished.get_mut(index) {
                build.usage = self.sampler.finish(&build.drv_path);
            }
        }
        self.show_settled();
    }

    fn show_settled(&mut self) {
        for index in std::mem::take(&mut self.state.settled) {
            if let Some(build) = self.state.finished.get(index) {
                self.progress.finished(build);
            }
        }
    }

    /// Once Nix has stopped every activity after building or downloading something,
    /// what is left of the command is its own teardown, in which it prints nothing: ~30 ms
    /// after the 200-derivation graph, 5 ms after 20. Recording the builds and telling
    /// the rebuild causes then takes that work off the wall time. Whatever the stream
    /// says afterwards (more builds, an error naming a recorded one) is recorded at the
    /// end.
    ///
    /// Nix may also go quiet in the middle, after an import-from-derivation build while
    /// it evaluates on; the work runs on its own thread, so events are still read and
    /// stamped on time and signals forwarded meanwhile.
    fn record_early_if_quiet(&mut self) {
        if !matches!(self.early, Early::NotYet)
            || self.interrupted_by.is_some()
            || !self.state.is_quiet_after_work()
        {
            return;
        }
        let work = EarlyWork {
            ledger: self.ledger.path().to_path_buf(),
            spools: self.spools.clone(),
            session_id: self.session_id,
            finished: self.state.finished.clone(),
            substitutions: self.state.substituted.clone(),
        };
        // Without a thread, everything is recorded at the end.
        if let Ok(handle) = std::thread::Builder::new()
            .name("nix-ledger-early".into())
            .spawn(move || work.run())
        {
            self.early = Early::Running(handle);
        }
    }

    fn tick(&mut self) {
        self.state.settle(now_ms(), false);
        self.show_settled();
        self.progress.tick(&self.state, Instant::now());
        self.progress.flush();
    }

    /// A signal for Nix: the first is forwarded as is, repeats (or Nix not stopping in
    /// time) escalate to SIGTERM, then SIGKILL.
    fn interrupt(&mut self, signal: i32) {
        if self.interrupted_by.is_none() {
            self.interrupted_by = Some(signal);
            self.state.interrupted_ms = Some(now_ms());
            self.send(signal);
            self.escalate_at = Some(tokio::time::Instant::now() + ESCALATE_AFTER);
        } else {
            self.escalate();
        }
    }

    fn escalate(&mut self) {
        let signal = match self.escalation {
            0 => libc::SIGTERM,
            _ => libc::SIGKILL,
        };
        self.escalation = self.escalation.saturating_add(1);
        self.send(signal);
        self.escalate_at = Some(tokio::time::Instant::now() + ESCALATE_AFTER);
    }

    fn send(&self, signal: i32) {
        // SAFETY: kill(2) with a negative pid signals the process group Nix leads.
        unsafe {
            libc::kill(-self.pgid, signal);
        }
    }
}

async fn supervise(layout: &Layout, req: &Request) -> Result<Outcome> {
    let info = ArgsInfo::from_args(&req.args);
    let nix = nix_command(req, &info);
    let ledger = Ledger::open(&layout.ledger)?;
    let started = Instant::now();
    let started_ms = now_ms();
    let session_id = session::open(
        &ledger,
        &session::Opening {
            kind: req.kind.clone(),
            command: nix.argv(),
            cwd: std::env::current_dir()
                .ok()
                .map(|d| d.display().to_string()),
            started_ms,
            hostname: sysinfo::System::host_name().ok(),
        },
    )?;
    // Spawning `nix --version` and `nix show-config` costs tens of milliseconds; they
    // run beside the build instead of before it.
    let state_dir = layout.state_dir.clone();
    let environment = std::thread::spawn(move || gather_environment(&state_dir));

    let mut command = nix.to_command();
    command
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(source) => {
            // Close the session row rather than leave it `running` forever.
            let closing = session::Closing {
                finished_ms: now_ms(),
                status: "failed",
                exit_code: 127,
                ..session::Closing::default()
            };
            let mut ledger = ledger;
            session::finish(&mut ledger, session_id, &[], &[], &[], &closing)?;
            return Err(Error::Spawn {
                program: "nix".into(),
                source,
            });
        }
    };
    let pgid = child.id() as i32;
    let stderr = child.stderr.take().ok_or_else(|| Error::Command {
        program: "nix".into(),
        message: "no stderr pipe".into(),
    })?;
    let mut chunks = read_in_chunks(stderr);
    // The exit status is awaited off the loop; it is taken only after stderr's end so
    // that every line is read first.
    let mut waiter = tokio::task::spawn_blocking(move || child.wait());
    let build_roots = BuildRoots::of_this_machine();
    let mut sup = Supervisor {
        state: State::new(build_roots.clone()),
        progress: Progress::new(Style::detect(info.print_build_logs, info.extra_verbosity)),
        sampler: Sampler::start(Some(pgid), build_roots),
        ledger,
        session_id,
        spools: layout.spools.clone(),
        early: Early::NotYet,
        pgid,
        interrupted_by: None,
        escalation: 0,
        escalate_at: None,
    };
    let mut sigint = signal(SignalKind::interrupt()).map_err(Error::Runtime)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(Error::Runtime)?;
    let mut ticker = tokio::time::interval(progress::REDRAW);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    // Bytes of an unfinished last line, kept for the next chunk.
    let mut partial: Vec<u8> = Vec::new();
    let mut eof = false;
    let status = loop {
        let escalate_at = sup.escalate_at;
        let escalation = async move {
            match escalate_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = sigint.recv() => sup.interrupt(libc::SIGINT),
            _ = sigterm.recv() => sup.interrupt(libc::SIGTERM),
            _ = escalation => sup.escalate(),
            _ = ticker.tick() => sup.tick(),
            status = &mut waiter, if eof => break status.ok().and_then(Result::ok),
            chunk = chunks.recv(), if !eof => match chunk {
                Some(chunk) => {
                    sup.handle_chunk(&mut partial, &chunk);
                    sup.record_early_if_quiet();
                }
                None => {
                    if !partial.is_empty() {
                        let rest = std::mem::take(&mut partial);
                        sup.handle_line(&rest, Instant::now(), now_ms());
                    }
                    sup.progress.flush();
                    eof = true;
                }
            },
        }
    };
    let finished_ms = now_ms();
    let wall_ms = started.elapsed().as_millis() as i64;
    sup.state.cut_off(finished_ms);
    for build in sup.state.finished.iter_mut().filter(|b| b.usage.is_none()) {
        build.usage = sup.sampler.finish(&build.drv_path);
    }
    sup.state.settle(finished_ms, true);
    sup.show_settled();
    sup.progress.erase_status();

    let nix_code = match status {
        Some(s) => s
            .code()
            .or_else(|| std::os::unix::process::ExitStatusExt::signal(&s).map(|n| 128 + n))
            .unwrap_or(1),
        None => 1,
    };
    let exit_code = match sup.interrupted_by {
        Some(signal) => 128 + signal,
        None => nix_code,
    };
    let early = match std::mem::replace(&mut sup.early, Early::NotYet) {
        Early::Running(handle) => handle.join().ok().and_then(Result::ok),
        Early::NotYet => None,
    };
    // If the early record failed, everything is recorded now.
    let (rows, substitutions_recorded, early_nar_bytes, early_causes) = match early {
        Some(r) => (r.rows, r.substitutions, r.nar_bytes, Some(r.rebuild_causes)),
        None => (Vec::new(), 0, 0, None),
    };
    let mut summary = Summary::from_state(&sup.state, wall_ms);
    let (substituted, nar_bytes) =
        substituted_derivations(&sup.state.substituted[substitutions_recorded..]);
    if summary.downloaded_bytes == 0 {
        // Nix reports no byte progress for small paths or local caches.
        summary.downloaded_bytes = early_nar_bytes + nar_bytes;
    }
    let environment = environment.join().unwrap_or_default();
    let Supervisor {
        state,
        mut progress,
        mut ledger,
        ..
    } = sup;

    // The hook's records of this session's builds are in its spool now: ingesting them
    // first lets each wrapper record merge into its hook twin.
    if let Err(e) = ingest::ingest_all(&mut ledger, &layout.spools) {
        progress.message(
            1,
            &format!("nix-ledger: warning: ingesting the hook's spool: {e}"),
        );
    }
    // What changed since the early record, if there was one; else everything.
    let restated: Vec<(i64, &state::FinishedBuild)> = rows
        .iter()
        .zip(&state.finished)
        .filter(|((_, recorded), build)| build.status != *recorded)
        .map(|((row, _), build)| (*row, build))
        .collect();
    let new_builds = &state.finished[rows.len()..];
    let changed = !restated.is_empty() || !new_builds.is_empty() || !substituted.is_empty();
    let closing = session::Closing {
        finished_ms,
        status: match (sup.interrupted_by, exit_code) {
            (Some(_), _) => "interrupted",
            (None, 0) => "succeeded",
            _ => "failed",
        },
        exit_code,
        nix_version: environment.nix.nix_version,
        max_jobs: info.max_jobs.or(environment.nix.max_jobs),
        cores: info.cores.or(environment.nix.cores),
        host_cores: environment.host_cores,
        host_memory_bytes: environment.host_memory_bytes,
        built: summary.built as i64,
        substituted: summary.substituted as i64,
        failed: summary.failed as i64,
        downloaded_bytes: summary.downloaded_bytes as i64,
    };
    session::finish(
        &mut ledger,
        session_id,
        &restated,
        new_builds,
        &substituted,
        &closing,
    )?;
    progress.flush();
    let rebuild_causes = match early_causes {
        Some(causes) if !changed => causes,
        _ => crate::why::summary_after_session(&ledger, session_id).map_err(|e| e.to_string()),
    };
    Ok(Outcome {
        exit_code,
        interrupted: sup.interrupted_by.is_some(),
        session_id,
        summary,
        rebuild_causes,
    })
}

/// How much Nix's stderr pipe may hold: a large pipe lets Nix write on while the wrapper
/// is between reads. Linux lets any process raise it to 1 MiB.
const PIPE_SIZE: i32 = 1 << 20;
/// After a read this small, the reader waits a moment so the next read gets many lines
/// at once: a chatty build otherwise costs a read and a wake-up per line.
const SMALL_READ: usize = 16 << 10;
/// How long that moment is. Every read wakes the reader and then the supervisor, and on a
/// machine whose cores are all building those wake-ups are build time: on the
/// 200-derivation benchmark (2 cores, -j 2, 25 pairs) the wrapper cost 1.085-1.099x plain
/// `nix build` at 1 ms, 1.055-1.057x at 10 ms, 1.059x at 25 ms. Events are stamped on
/// arrival, so they may be stamped up to this much late.
const COALESCE: Duration = Duration::from_millis(10);

/// Bytes read from Nix's stderr, and when: the reader stamps them, so that the events
/// in them are timed by their arrival even if the supervisor is busy.
struct Chunk {
    read_at: Instant,
    read_at_ms: i64,
    bytes: Vec<u8>,
}

/// Reads Nix's stderr on its own thread, in large chunks, into a bounded channel (a
/// full channel makes Nix wait rather than the wrapper grow).
fn read_in_chunks(mut stderr: std::process::ChildStderr) -> tokio::sync::mpsc::Receiver<Chunk> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: F_SETPIPE_SZ on a pipe we own; failure just leaves the default size.
        unsafe {
            libc::fcntl(stderr.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    // Without a reader thread the channel closes at once and the wrapper just waits
    // for Nix, which is still recorded.
    let _ = std::thread::Builder::new()
        .name("nix-ledger-read".into())
        .spawn(move || {
            let mut buf = vec![0u8; PIPE_SIZE as usize];
            loop {
                match std::io::Read::read(&mut stderr, &mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        let chunk = Chunk {
                            read_at: Instant::now(),
                            read_at_ms: now_ms(),
                            bytes: buf[..n].to_vec(),
                        };
                        if tx.blocking_send(chunk).is_err() {
                            return;
                        }
                        if n < SMALL_READ {
                            std::thread::sleep(COALESCE);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                }
            }
        });
    rx
}

/// Substituted paths with their derivers from the store database (a path whose deriver
/// is unknown is counted in the session but has no build row), and their total NAR size.
fn substituted_derivations(substitutions: &[Substitution]) -> (Vec<session::SubstitutedDrv>, u64) {
    if substitutions.is_empty() {
        return (Vec::new(), 0);
    }
    let Some(store) = StoreDb::open_default() else {
        return (Vec::new(), 0);
    };
    let mut nar_bytes = 0u64;
    let drvs = substitutions
        .iter()
        .filter_map(|s| {
            let info = store.path_infos(&[s.path.as_str()]).into_iter().next()?;
            nar_bytes += info.nar_size.unwrap_or(0).max(0) as u64;
            Some(session::SubstitutedDrv {
                drv_path: info.deriver?,
                started_ms: s.started_ms,
                finished_ms: s.finished_ms,
            })
        })
        .collect();
    (drvs, nar_bytes)
}

/// `OsStr` helper for callers building requests.
pub fn os_args<I, S>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    args.into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_options_that_matter_are_read_from_the_passed_through_arguments() {
        let info = ArgsInfo::from_args(&os_args([
            "-f", "x.nix", "-vvL", "-j4", "--option", "cores", "3", "--argstr", "salt", "-j",
        ]));
        assert_eq!(
            info,
            ArgsInfo {
                print_build_logs: true,
                extra_verbosity: 2,
                max_jobs: Some(4),
                cores: Some(3),
                flake_refs: false,
            }
        );
        let info = ArgsInfo::from_args(&os_args([
            ".#hello",
            "--max-jobs",
            "2",
            "--print-build-logs",
        ]));
        assert!(info.flake_refs && info.print_build_logs);
        assert_eq!(info.max_jobs, Some(2));
    }

    #[test]
    fn the_nix_command_keeps_the_arguments_in_order_and_adds_the_json_log() {
        let req = Request {
            kind: "build".into(),
            args: os_args(["-f", "x.nix", "--json"]),
        };
        let argv = nix_command(&req, &ArgsInfo::from_args(&req.args)).argv();
        assert_eq!(
            argv,
            [
                "nix",
                "--extra-experimental-features",
                "nix-command",
                "build",
                "-f",
                "x.nix",
                "--json",
                "--log-format",
                "internal-json",
            ]
        );
    }
}
