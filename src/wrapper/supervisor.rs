//! The supervisor: one single-threaded tokio loop that reads Nix's stderr chunks
//! (stamped on arrival by [`super::reader`]), updates the state and the progress, starts
//! the early record once Nix goes quiet, and forwards SIGINT/SIGTERM to Nix's process
//! group, escalating when Nix does not stop in time.

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};

use super::args::{nix_command, ArgsInfo};
use super::builddir::BuildRoots;
use super::evaltime::EvalClock;
use super::events::{parse_line, Event, Line};
use super::progress::{self, Position, Progress, Style};
use super::reader::{read_in_chunks, Chunk};
use super::record::{self, Early, EarlyWork, Recording};
use super::sampler::Sampler;
use super::session;
use super::state::{Notice, State};
use super::{Outcome, Request};
use crate::ledger::model::SessionStatus;
use crate::ledger::sessions::{SessionClosing, SessionOpening};
use crate::ledger::Ledger;
use crate::nix::command::NixCommand;
use crate::paths::Layout;
use crate::time::now_ms;
use crate::{sys, Error, Result};

/// After forwarding an interrupt, how long Nix gets before the next, harsher signal.
const ESCALATE_AFTER: Duration = Duration::from_secs(5);

/// The supervisor's mutable parts.
struct Supervisor {
    state: State,
    /// When evaluation ended, from the same events.
    eval: EvalClock,
    progress: Progress,
    sampler: Sampler,
    /// The ledger and the session row, unless the ledger could not be opened or
    /// written: the build goes on then, unrecorded.
    recording: Option<Recording>,
    spools: Vec<std::path::PathBuf>,
    early: Early,
    pgid: i32,
    /// The first signal forwarded, and how far the escalation has gone.
    interrupted_by: Option<i32>,
    escalation: u8,
    escalate_at: Option<tokio::time::Instant>,
    /// The whole build's ETA; `None` when nothing is recorded (no history to read).
    eta: Option<crate::tune::live::Live>,
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
        match event {
            Event::Start { id, ty, .. } => self.eval.start(id, ty, now),
            Event::Stop { id } => self.eval.stop(id, now),
            _ => {}
        }
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
                if let Some(eta) = &mut self.eta {
                    eta.message(text);
                }
                self.progress.message(level, text);
                None
            }
            None => None,
        };
        if let Some(id) = started {
            if let Some(build) = self.state.running.get_mut(&id) {
                if let Some(eta) = &mut self.eta {
                    eta.started(&build.drv_path);
                }
                // A remote builder's processes are not on this machine.
                if build.machine.is_none() {
                    self.sampler.watch(&build.drv_path, build.started_ms);
                }
                // Only the live view shows it: a query per build otherwise for nothing.
                if let Some(recording) = self
                    .recording
                    .as_ref()
                    .filter(|_| self.progress.style().live)
                {
                    build.expected_ms = recording
                        .ledger
                        .expected_duration_ms(&build.name)
                        .ok()
                        .flatten();
                }
            }
            self.progress.tick(&self.state, now);
        }
        for index in std::mem::take(&mut self.state.stopped) {
            if let Some(build) = self.state.finished.get_mut(index) {
                build.usage = self.sampler.finish(&build.drv_path);
                if let Some(eta) = &mut self.eta {
                    eta.finished(&build.drv_path, build.duration_ms());
                }
            }
        }
        self.show_settled();
    }

    fn show_settled(&mut self) {
        if !self.state.settled.is_empty() {
            self.update_position(Instant::now());
        }
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
        let Some(recording) = &self.recording else {
            return;
        };
        if !matches!(self.early, Early::NotYet)
            || self.interrupted_by.is_some()
            || !self.state.is_quiet_after_work()
        {
            return;
        }
        let work = EarlyWork {
            ledger: recording.ledger.path().to_path_buf(),
            spools: self.spools.clone(),
            session_id: recording.session_id,
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

    /// Where the whole build is, for the progress: Nix's counters and the ETA.
    fn update_position(&mut self, now: Instant) {
        let b = self.state.builds;
        let eta_ms = self.eta.as_ref().and_then(|eta| eta.remaining_ms(now));
        self.progress.set_position(Position {
            done: b.done + b.failed,
            total: b.expected,
            eta_ms,
        });
    }

    fn tick(&mut self) {
        if let Some(eta) = &mut self.eta {
            let running = self
                .state
                .running
                .values()
                .map(|b| (b.drv_path.as_str(), b.started));
            eta.tick(running, self.sampler.outside_load(), Instant::now());
        }
        self.update_position(Instant::now());
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
        sys::signal_process_group(self.pgid, signal);
    }
}

/// Opens the ledger and the session's row: the recording of this build.
fn start_recording(
    layout: &Layout,
    req: &Request,
    nix: &NixCommand,
    started_ms: i64,
) -> Result<Recording> {
    let ledger = Ledger::open(&layout.ledger)?;
    let session_id = ledger.open_session(&SessionOpening {
        kind: req.kind,
        command: nix.argv(),
        cwd: std::env::current_dir()
            .ok()
            .map(|d| d.display().to_string()),
        started_ms,
        hostname: sysinfo::System::host_name().ok(),
        pid: std::process::id(),
    })?;
    Ok(Recording { ledger, session_id })
}

pub(super) async fn supervise(layout: &Layout, req: &Request) -> Result<Outcome> {
    let info = ArgsInfo::from_args(&req.args);
    let nix = nix_command(req, &info);
    let started = Instant::now();
    let started_ms = now_ms();
    // The promise is Nix's exit status, whatever happens to the ledger: a ledger that
    // cannot be opened or written (corrupt, full disk, read-only) costs the record of
    // this build, said once, never the build.
    let recording = match start_recording(layout, req, &nix, started_ms) {
        Ok(recording) => Some(recording),
        Err(e) => {
            eprintln!("nix-ledger: warning: {e}; building without recording");
            None
        }
    };
    // Spawning `nix --version` and `nix show-config` costs tens of milliseconds; they
    // run beside the build instead of before it.
    let state_dir = layout.state_dir.clone();
    let environment = std::thread::spawn(move || record::gather_environment(&state_dir));

    let mut command = nix.to_command();
    command
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .process_group(0);
    let spawned = Instant::now();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(source) => {
            // Close the session row rather than leave it `running` forever.
            if let Some(Recording {
                mut ledger,
                session_id,
            }) = recording
            {
                let closing = SessionClosing::new(now_ms(), SessionStatus::Failed, 127);
                if let Err(e) = session::finish(&mut ledger, session_id, &[], &[], &[], &closing) {
                    eprintln!("nix-ledger: warning: {e}");
                }
            }
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
    let eta = recording.as_ref().map(|r| {
        crate::tune::live::Live::new(crate::tune::live::Context {
            ledger: r.ledger.path().to_path_buf(),
            state_dir: layout.state_dir.clone(),
            nix_pid: pgid as u32,
            max_jobs: info.max_jobs,
            cores: info.cores,
            started: std::time::UNIX_EPOCH + Duration::from_millis(started_ms.max(0) as u64),
        })
    });
    let mut sup = Supervisor {
        state: State::new(build_roots.clone()),
        eval: EvalClock::default(),
        progress: Progress::new(Style::detect(info.print_build_logs, info.extra_verbosity)),
        sampler: Sampler::start(Some(pgid), build_roots),
        recording,
        spools: layout.spools.clone(),
        early: Early::NotYet,
        pgid,
        interrupted_by: None,
        escalation: 0,
        escalate_at: None,
        eta,
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
    let eval = sup.eval.finish(spawned, Instant::now());
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
    let Supervisor {
        state,
        progress,
        recording,
        early,
        interrupted_by,
        ..
    } = sup;
    Ok(record::record_end(
        record::Watched {
            state,
            progress,
            recording,
            early,
            interrupted_by,
        },
        record::Ending {
            layout,
            info: &info,
            exit_code,
            finished_ms,
            wall_ms,
            eval,
            environment,
        },
    ))
}
