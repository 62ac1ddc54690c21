//! What the JSON log says happened: running and finished builds, substitutions, the
//! progress counters Nix reports. Fed one event at a time; knows nothing of rendering
//! or the ledger.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::builddir::BuildRoots;
use super::events::{activity, result, Event, Field};
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
        FinishedBuild {
            drv_path: self.drv_path,
            name: self.name,
            machine: self.machine,
            started_ms: self.started_ms,
            finished_ms: now_ms,
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
            Event::Start { id, ty, fields, .. } => {
                self.activity_types.insert(*id, *ty);
                match *ty {
                    activity::BUILD => {
                        let drv_path = fields.first().and_then(Field::as_str)?.to_string();
                        let machine = fields
                            .get(1)
                            .and_then(Field::as_str)
                            .filter(|m| !m.is_empty())
                            .map(str::to_string);
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
                            },
                        );
                        Some(Notice::Started(*id))
                    }
                    activity::POST_BUILD_HOOK => {
                        // The hook runs only after a successful build: that build is done.
                        if let Some(drv) = fields.first().and_then(Field::as_str) {
                            if let Some(id) = self.running_id(drv) {
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
                    _ => None,
                }
            }
            Event::Stop { id } => {
                self.activity_types.remove(id);
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
        let build = self.running.get_mut(&id)?;
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
                let build = self.running.get_mut(&id)?;
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
                if let Some(build) = self.running.get_mut(&id) {
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
        let mut remote: Vec<(Instant, u64)> = Vec::new();
        let mut still_there: Vec<(Instant, u64)> = Vec::new();
        for (id, b) in &self.running {
            if b.machine.is_some() {
                remote.push((b.started, *id));
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
            .chain(remote)
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
mod tests {
    use super::super::events::{parse_line, Line};
    use super::*;

    fn feed(state: &mut State, line: &str, t: i64) {
        let Line::Event(event) = parse_line(line.as_bytes()) else {
            panic!("{line}")
        };
        state.apply(&event, Instant::now(), t);
    }

    const DRV: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-t-a.drv";

    #[test]
    fn a_build_is_timed_from_start_to_stop_and_counts_its_log() {
        let mut s = State::new(BuildRoots::default());
        feed(
            &mut s,
            r#"@nix {"action":"start","id":1,"type":104,"fields":[],"text":"","level":0,"parent":0}"#,
            0,
        );
        feed(
            &mut s,
            &format!(
                r#"@nix {{"action":"start","id":2,"type":105,"fields":["{DRV}","ssh://b",1,1],"text":"","level":3,"parent":1}}"#
            ),
            1_000,
        );
        for i in 0..30 {
            feed(
                &mut s,
                &format!(r#"@nix {{"action":"result","id":2,"type":101,"fields":["line {i}"]}}"#),
                1_500,
            );
        }
        feed(
            &mut s,
            r#"@nix {"action":"result","id":1,"type":105,"fields":[1,3,0,0]}"#,
            1_900,
        );
        feed(&mut s, r#"@nix {"action":"stop","id":2}"#, 3_000);
        assert_eq!(
            s.builds,
            Counts {
                done: 1,
                expected: 3,
                running: 0,
                failed: 0
            }
        );
        // Nix 2.8 stops the activity only at the very end: the done counter says when
        // the (remote, so directory-less) build ended.
        let b = &s.finished[0];
        assert_eq!(
            (b.name.as_str(), b.duration_ms(), b.log_lines),
            ("t-a", 900, 30)
        );
        assert_eq!(b.machine.as_deref(), Some("ssh://b"));
        assert_eq!(b.tail.lines().count(), TAIL_LINES);
        assert_eq!(b.tail.lines().last(), Some("line 29"));
        assert!(b.pending);
        assert_eq!(s.finished.len(), 1);
        s.settle(2_500, false);
        assert!(s.settled.is_empty());
        s.settle(2_900, false);
        assert_eq!(s.settled, vec![0]);
        assert_eq!(s.finished[0].status, BuildStatus::Built);
    }

    #[test]
    fn a_build_whose_directory_still_exists_is_not_the_one_that_ended() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("nix-build-t-b.drv-0")).unwrap();
        let mut s = State::new(BuildRoots::new(vec![root.path().into()]));
        let b = DRV.replace("t-a", "t-b");
        feed(
            &mut s,
            r#"@nix {"action":"start","id":1,"type":104,"fields":[],"text":"","level":0,"parent":0}"#,
            0,
        );
        feed(
            &mut s,
            &format!(
                r#"@nix {{"action":"start","id":2,"type":105,"fields":["{DRV}","",1,1],"text":"","level":3,"parent":1}}"#
            ),
            0,
        );
        feed(
            &mut s,
            &format!(
                r#"@nix {{"action":"start","id":3,"type":105,"fields":["{b}","",1,1],"text":"","level":3,"parent":1}}"#
            ),
            0,
        );
        feed(
            &mut s,
            r#"@nix {"action":"result","id":1,"type":105,"fields":[1,2,1,0]}"#,
            500,
        );
        assert_eq!(s.finished.len(), 1);
        assert_eq!(s.finished[0].name, "t-a");
        assert_eq!(s.running.len(), 1);
        // The real stops at the end change nothing for the build already ended.
        feed(&mut s, r#"@nix {"action":"stop","id":2}"#, 9_000);
        feed(&mut s, r#"@nix {"action":"stop","id":3}"#, 9_000);
        assert_eq!(s.finished[0].finished_ms, 500);
        assert_eq!(s.finished[1].finished_ms, 9_000);
    }

    #[test]
    fn an_error_message_naming_a_stopped_build_marks_it_failed() {
        let mut s = State::new(BuildRoots::default());
        feed(
            &mut s,
            &format!(
                r#"@nix {{"action":"start","id":2,"type":105,"fields":["{DRV}","",1,1],"text":"","level":3,"parent":0}}"#
            ),
            0,
        );
        feed(&mut s, r#"@nix {"action":"stop","id":2}"#, 100);
        feed(
            &mut s,
            &format!(
                r#"@nix {{"action":"msg","level":0,"msg":"\u001b[31;1merror:\u001b[0m builder for '\u001b[35;1m{DRV}\u001b[0m' failed with exit code 3"}}"#
            ),
            120,
        );
        assert_eq!(s.finished[0].status, BuildStatus::Failed);
        assert_eq!(s.settled, vec![0]);
        s.settle(10_000, true);
        assert_eq!(s.settled, vec![0]);
    }

    #[test]
    fn substitutions_and_download_bytes_are_counted() {
        let mut s = State::new(BuildRoots::default());
        feed(
            &mut s,
            r#"@nix {"action":"start","id":7,"type":108,"fields":["/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-x","file:///c"],"text":"","level":4,"parent":0}"#,
            0,
        );
        feed(
            &mut s,
            r#"@nix {"action":"start","id":8,"type":100,"fields":["/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-x","file:///c","local"],"text":"","level":4,"parent":7}"#,
            0,
        );
        feed(
            &mut s,
            r#"@nix {"action":"result","id":8,"type":105,"fields":[4096,4096,0,0]}"#,
            5,
        );
        feed(&mut s, r#"@nix {"action":"stop","id":8}"#, 6);
        feed(&mut s, r#"@nix {"action":"stop","id":7}"#, 7);
        assert_eq!(s.substituted.len(), 1);
        assert_eq!(s.downloaded_bytes(), 4096);
    }
}
