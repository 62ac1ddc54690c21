//! What the JSON log says happened: running and finished builds, substitutions, the
//! progress counters Nix reports. Fed one event at a time; knows nothing of rendering
//! or the ledger.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::builddir::BuildRoots;
use super::events::{activity, result, Event, Field};
use remote::{RemoteTiming, Remotes, FORWARDED};

pub mod remote;
use super::sampler::Usage;
use crate::ledger::model::BuildStatus;
use crate::nix::store_path::path_name;

/// How many log lines of each build are kept for a failure report and the ledger.
pub const TAIL_LINES: usize = 25;
/// A stopped build not named by an error message within this long is taken as built
/// (Nix reports a builder's failure right after its activity stops).
pub const FAILURE_GRACE_MS: i64 = 1_000;

/// The last lines of a build's log, in a ring of reused buffers (no allocation per line
/// once full).
#[derive(Debug, Default, Clone)]
pub struct Tail {
    lines: VecDeque<String>,
}

impl Tail {
    pub fn push(&mut self, line: &str) {
        let mut slot = if self.lines.len() == TAIL_LINES {
            self.lines.pop_front().unwrap_or_default()
        } else {
            String::new()
        };
        slot.clear();
        slot.push_str(line);
        self.lines.push_back(slot);
    }

    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(String::as_str)
    }

    pub fn joined(&self) -> String {
        let mut text = String::new();
        for line in &self.lines {
            text.push_str(line);
            text.push('\n');
        }
        text
    }
}

/// A build that has started and not stopped.
#[derive(Debug, Clone)]
pub struct RunningBuild {
    pub drv_path: String,
    pub name: String,
    pub machine: Option<String>,
    pub started: Instant,
    pub started_ms: i64,
    pub log_lines: u64,
    pub tail: Tail,
    pub phase: Option<String>,
    /// The average duration of this name's earlier builds, from the ledger.
    pub expected_ms: Option<i64>,
    /// On a remote builder: what the log said of it there.
    pub remote: Option<RemoteTiming>,
}

impl RunningBuild {
    /// This build as stopped at `now_ms`.
    fn finished(
        self,
        now_ms: i64,
        status: BuildStatus,
        pending: bool,
        interrupted: bool,
    ) -> FinishedBuild {
        // A remote build's time is its build's on the builder, without the copies.
        let (started_ms, finished_ms) = match &self.remote {
            Some(r) => r.span(now_ms),
            None => (self.started_ms, now_ms),
        };
        FinishedBuild {
            drv_path: self.drv_path,
            name: self.name,
            machine: self.machine,
            remote: self.remote,
            started_ms,
            finished_ms,
            log_lines: self.log_lines,
            tail: self.tail,
            status,
            pending,
            interrupted,
            usage: None,
        }
    }
}

/// A build that stopped (or was cut off by the end of the stream).
#[derive(Debug, Clone)]
pub struct FinishedBuild {
    pub drv_path: String,
    pub name: String,
    pub machine: Option<String>,
    pub remote: Option<RemoteTiming>,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub log_lines: u64,
    pub tail: Tail,
    pub status: BuildStatus,
    /// Still waiting for a possible failure message (see [`FAILURE_GRACE_MS`]).
    pub pending: bool,
    /// Running when the wrapper was interrupted.
    pub interrupted: bool,
    pub usage: Option<Usage>,
}

impl FinishedBuild {
    pub fn duration_ms(&self) -> i64 {
        (self.finished_ms - self.started_ms).max(0)
    }
}

/// A substitution (a download from a binary cache).
#[derive(Debug, Clone)]
pub struct Substitution {
    pub path: String,
    pub started_ms: i64,
    pub finished_ms: i64,
}

/// Counters from Nix's own progress results: `[done, expected, running, failed]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub done: u64,
    pub expected: u64,
    pub running: u64,
    pub failed: u64,
}

/// Something the renderer should show now.
#[derive(Debug)]
pub enum Notice<'a> {
    Started(u64),
    LogLine { name: &'a str, line: &'a str },
    HookLine(&'a str),
    Message { level: u64, text: &'a str },
}

/// Everything the stream has said so far.
#[derive(Debug)]
pub struct State {
    /// Activity id → activity type, for routing results.
    activity_types: HashMap<u64, u64>,
    pub running: HashMap<u64, RunningBuild>,
    pub finished: Vec<FinishedBuild>,
    substituting: HashMap<u64, (String, i64)>,
    pub substituted: Vec<Substitution>,
    pub builds: Counts,
    pub downloads: Counts,
    transfer_bytes: HashMap<u64, u64>,
    copy_bytes: HashMap<u64, u64>,
    /// When the wrapper forwarded an interrupt; builds running then are not successes.
    pub interrupted_ms: Option<i64>,
    /// Indices into `finished` of builds whose outcome became known, for the renderer.
    pub settled: Vec<usize>,
    /// Indices into `finished` of builds that just stopped, for the sampler.
    pub stopped: Vec<usize>,
    /// Builds taken out of `running` by any sign of their end, to compare with Nix's
    /// done + failed counters.
    accounted: u64,
    /// Where Nix creates build directories.
    build_roots: BuildRoots,
    /// Which activities belong to builds on remote builders.
    remotes: Remotes,
}

impl State {
    /// Applies one event seen at `now_ms`.
    pub fn apply<'s>(
        &'s mut self,
        event: &'s Event<'_>,
        now: Instant,
        now_ms: i64,
    ) -> Option<Notice<'s>> {
        match event {
            Event::LogLine { id, ty, line } => self.line(*id, *ty, line),
            Event::Result { id, ty, fields } => self.result(*id, *ty, fields, now_ms),
            Event::Start {
                id,
                ty,
                fields,
                text,
                ..
            } => {
                self.activity_types.insert(*id, *ty);
                match *ty {
                    activity::BUILD => {
                        let drv = fields.first().and_then(Field::as_str)?;
                        let machine = fields
                            .get(1)
                            .and_then(Field::as_str)
                            .filter(|m| !m.is_empty())
                            .map(str::to_string);
                        let remote = match &machine {
                            Some(m) => Some(self.remotes.accepted(*id, drv, m, now_ms)),
                            None => match self.remotes.forwarded_of(drv) {
                                // The builder's own activity: it times the remote build,
                                // and is never a build (nor sampled) of its own.
                                Some(own) => {
                                    self.activity_types.insert(*id, *ty | FORWARDED);
                                    if let Some(t) =
                                        self.running.get_mut(&own).and_then(|b| b.remote.as_mut())
                                    {
                                        self.remotes.forward_started(*id, own, t, now_ms);
                                    }
                                    return None;
                                }
                                None => {
                                    self.remotes.dispatched();
                                    None
                                }
                            },
                        };
                        let drv_path = drv.to_string();
                        self.running.insert(
                            *id,
                            RunningBuild {
                                name: path_name(&drv_path).to_string(),
                                drv_path,
                                machine,
                                started: now,
                                started_ms: now_ms,
                                log_lines: 0,
                                tail: Tail::default(),
                                phase: None,
                                expected_ms: None,
                                remote,
                            },
                        );
                        Some(Notice::Started(*id))
                    }
                    activity::POST_BUILD_HOOK => {
                        // The hook runs only after a successful build: that build is done.
                        if let Some(drv) = fields.first().and_then(Field::as_str) {
                            if let Some(id) = self.running_id(drv) {
                                if let Some(t) =
                                    self.running.get_mut(&id).and_then(|b| b.remote.as_mut())
                                {
                                    remote::hook_started(t, now_ms);
                                }
                                self.finish(id, now_ms, BuildStatus::Built);
                                if let Some(b) = self.finished.last_mut() {
                                    b.pending = false;
                                    self.settled.push(self.finished.len() - 1);
                                }
                            }
                        }
                        None
                    }
                    activity::SUBSTITUTE => {
                        if let Some(path) = fields.first().and_then(Field::as_str) {
                            self.substituting.insert(*id, (path.to_string(), now_ms));
                        }
                        None
                    }
                    _ => {
                        self.remote_activity(*id, *ty, fields, text, now_ms);
                        None
                    }
                }
            }
            Event::Stop { id } => {
                self.activity_types.remove(id);
                if self.remotes.watching() {
                    self.remote_stop(*id, now_ms);
                }
                if let Some((path, started_ms)) = self.substituting.remove(id) {
                    self.substituted.push(Substitution {
                        path,
                        started_ms,
                        finished_ms: now_ms,
                    });
                }
                if self.running.contains_key(id) {
                    self.finish(*id, now_ms, BuildStatus::Built);
                }
                None
            }
            Event::Msg { level, msg } => {
                if *level == 0 {
                    self.mark_failures(msg, now_ms);
                }
                Some(Notice::Message {
                    level: *level,
                    text: msg,
                })
            }
            Event::Other => None,
        }
    }

    fn line<'s>(&'s mut self, id: u64, ty: u64, line: &'s str) -> Option<Notice<'s>> {
        if ty == result::POST_BUILD_LOG_LINE {
            return Some(Notice::HookLine(line));
        }
        let build = self.build_of(id)?;
        build.log_lines += 1;
        build.tail.push(line);
        Some(Notice::LogLine {
            name: &build.name,
            line,
        })
    }

    fn result<'s>(
        &'s mut self,
        id: u64,
        ty: u64,
        fields: &'s [Field<'_>],
        now_ms: i64,
    ) -> Option<Notice<'s>> {
        match ty {
            result::BUILD_LOG_LINE => {
                let line = fields.first().and_then(Field::as_str)?;
                let build = self.build_of(id)?;
                build.log_lines += 1;
                build.tail.push(line);
                Some(Notice::LogLine {
                    name: &build.name,
                    line,
                })
            }
            result::POST_BUILD_LOG_LINE => {
                fields.first().and_then(Field::as_str).map(Notice::HookLine)
            }
            result::SET_PHASE => {
                let phase = fields.first().and_then(Field::as_str)?;
                if let Some(build) = self.build_of(id) {
                    build.phase = Some(phase.to_string());
                }
                None
            }
            result::PROGRESS if self.activity_types.get(&id) == Some(&activity::BUILDS) => {
                let n = |i: usize| fields.get(i).and_then(Field::as_u64).unwrap_or(0);
                self.builds = Counts {
                    done: n(0),
                    expected: n(1),
                    running: n(2),
                    failed: n(3),
                };
                let ended = self.builds.done + self.builds.failed;
                if ended > self.accounted {
                    self.finish_vanished(ended - self.accounted, now_ms);
                }
                None
            }
            result::PROGRESS => {
                let n = |i: usize| fields.get(i).and_then(Field::as_u64).unwrap_or(0);
                let counts = Counts {
                    done: n(0),
                    expected: n(1),
                    running: n(2),
                    failed: n(3),
                };
                match self.activity_types.get(&id).copied() {
                    Some(activity::COPY_PATHS) => self.downloads = counts,
                    Some(activity::FILE_TRANSFER) => {
                        self.transfer_bytes.insert(id, counts.done);
                    }
                    Some(activity::COPY_PATH) => {
                        self.copy_bytes.insert(id, counts.done);
                    }
                    _ => {}
                }
                None
            }
            _ => None,
        }
    }

    /// An error message naming a build marks it failed (and ends it, if it was running).
    fn mark_failures(&mut self, msg: &str, now_ms: i64) {
        let running: Vec<u64> = self
            .running
            .iter()
            .filter(|(_, b)| msg.contains(b.drv_path.as_str()))
            .map(|(id, _)| *id)
            .collect();
        for id in running {
            self.finish(id, now_ms, BuildStatus::Built);
        }
        let mut settled = Vec::new();
        for (i, build) in self.finished.iter_mut().enumerate().rev().take(64) {
            if build.status == BuildStatus::Built && msg.contains(build.drv_path.as_str()) {
                build.status = BuildStatus::Failed;
                build.pending = false;
                settled.push(i);
            }
        }
        self.settled.extend(settled);
    }

    fn running_id(&self, drv_path: &str) -> Option<u64> {
        self.running
            .iter()
            .find(|(_, b)| b.drv_path == drv_path)
            .map(|(id, _)| *id)
    }

    /// Moves a running build to `finished` (pending its failure grace unless interrupted).
    fn finish(&mut self, id: u64, now_ms: i64, status: BuildStatus) {
        let Some(build) = self.running.remove(&id) else {
            return;
        };
        self.accounted += 1;
        if build.remote.is_some() {
            self.remotes.ended();
        }
        let interrupted = self.interrupted_ms.is_some();
        let index = self.finished.len();
        if interrupted {
            self.settled.push(index);
        }
        self.stopped.push(index);
        let status = if interrupted {
            BuildStatus::Failed
        } else {
            status
        };
        self.finished
            .push(build.finished(now_ms, status, !interrupted, interrupted));
    }

    /// Nix 2.8 stops a build's activity only when the whole command ends; that a build
    /// ended shows in the done/failed counters, not which one. Nix deletes a build's
    /// directory before counting it, so the `count` builds that ended are the running
    /// local builds whose directory is gone (oldest first), then the oldest remote ones,
    /// then the oldest others.
    fn finish_vanished(&mut self, count: u64, now_ms: i64) {
        if count as usize >= self.running.len() {
            // All of them ended: nothing to tell apart.
            let mut all: Vec<(Instant, u64)> = self
                .running
                .iter()
                .map(|(id, b)| (b.started, *id))
                .collect();
            all.sort();
            for (_, id) in all {
                self.finish(id, now_ms, BuildStatus::Built);
            }
            return;
        }
        let mut gone: Vec<(Instant, u64)> = Vec::new();
        let mut remote: Vec<(bool, Instant, u64)> = Vec::new();
        let mut still_there: Vec<(Instant, u64)> = Vec::new();
        for (id, b) in &self.running {
            if let Some(r) = &b.remote {
                // A build whose forwarded activity stopped has ended on the builder.
                remote.push((r.build_finished_ms.is_none(), b.started, *id));
            } else if !self
                .build_roots
                .dirs(&b.name, Some(b.started_ms))
                .is_empty()
            {
                // Another build of the same name (another Nix process) may hold a
                // directory of that name: only a last resort.
                still_there.push((b.started, *id));
            } else {
                gone.push((b.started, *id));
            }
        }
        gone.sort();
        remote.sort();
        still_there.sort();
        let ended: Vec<u64> = gone
            .into_iter()
            .chain(remote.into_iter().map(|(_, at, id)| (at, id)))
            .chain(still_there)
            .take(count as usize)
            .map(|(_, id)| id)
            .collect();
        for id in ended {
            self.finish(id, now_ms, BuildStatus::Built);
        }
    }

    /// Builds whose failure grace has passed by `now_ms` (or all, at the end) are taken
    /// as built and queued in [`State::settled`].
    pub fn settle(&mut self, now_ms: i64, all: bool) {
        for (i, build) in self.finished.iter_mut().enumerate() {
            if build.pending && (all || now_ms - build.finished_ms >= FAILURE_GRACE_MS) {
                build.pending = false;
                self.settled.push(i);
            }
        }
    }

    /// A state for a Nix that creates its build directories in `build_roots`.
    pub fn new(build_roots: BuildRoots) -> State {
        State {
            activity_types: HashMap::new(),
            running: HashMap::new(),
            finished: Vec::new(),
            substituting: HashMap::new(),
            substituted: Vec::new(),
            builds: Counts::default(),
            downloads: Counts::default(),
            transfer_bytes: HashMap::new(),
            copy_bytes: HashMap::new(),
            interrupted_ms: None,
            settled: Vec::new(),
            stopped: Vec::new(),
            accounted: 0,
            build_roots,
            remotes: Remotes::default(),
        }
    }

    /// Nix has stopped every activity it started, after building or downloading
    /// something, and nothing failed: what remains of the command is Nix's teardown.
    pub fn is_quiet_after_work(&self) -> bool {
        self.activity_types.is_empty()
            && self.running.is_empty()
            && !(self.finished.is_empty() && self.substituted.is_empty())
            && self.builds.failed == 0
            && self.finished.iter().all(|b| b.status == BuildStatus::Built)
    }

    /// Builds still running when the stream ended (Nix was killed): recorded as failed.
    pub fn cut_off(&mut self, now_ms: i64) {
        let interrupted = self.interrupted_ms.is_some();
        for (_, build) in self.running.drain() {
            self.settled.push(self.finished.len());
            self.finished
                .push(build.finished(now_ms, BuildStatus::Failed, false, interrupted));
        }
    }

    /// Bytes downloaded: what file transfers report, else the NAR bytes copied in.
    pub fn downloaded_bytes(&self) -> u64 {
        let transfers: u64 = self.transfer_bytes.values().sum();
        if transfers > 0 {
            transfers
        } else {
            self.copy_bytes.values().sum()
        }
    }
}

#[cfg(test)]
mod tests;
