//! Builds on remote builders, as Nix 2.8's JSON log shows them (measured with an ssh-ng
//! builder; docs/architecture.md "Remote builds").
//!
//! Nix starts its own build activity (type 105) with the machine in `fields[1]` when a
//! builder accepts a derivation; it stops only after the outputs were copied back and the
//! post-build-hook ran. The remote daemon's own activities are forwarded into the same
//! stream with fresh ids and no `parent` (2.8 writes none): a 105 for the same .drv with an
//! empty machine, which carries the build's log lines and lasts as long as the build on
//! the builder; and a 102/104/103 trio of its worker, with its own progress counters. So a
//! 105 with an empty machine for a .drv whose remote build is known is the forwarded one:
//! it times the build and is never a build of its own (nor sampled: the processes it
//! names are the builder's, or on a loopback builder anybody's of that uid).
//!
//! Nix's build loop dispatches the next derivation (spawning `build-remote`, ssh connect)
//! without reading the hook output of those already running, so a forwarded start can
//! arrive late by one dispatch. When some dispatch came between a build's acceptance and
//! the arrival of its forwarded start, its start is taken as the acceptance plus the
//! upload instead (measured within 0–65 ms of the builder's own log file, where the
//! arrival was up to 400 ms late).
//!
//! Copies (type 100, `[path, from, to]`) name the builder by its store URI without the
//! query string: uploads go to the remote build on that host whose build has not started,
//! downloads come from the one whose outputs they are.

use std::collections::HashMap;

use super::super::events::{activity, Field};
use super::{RunningBuild, State};
use crate::nix::machines::host_of;
use crate::nix::store_path::path_name;

/// Marks activity types of the builder's forwarded activities (and of copies to and from
/// it) in the state's id → type map, so that their progress counters are never taken for
/// this Nix's own.
pub const FORWARDED: u64 = 1 << 63;

/// What is known of a build dispatched to a remote builder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteTiming {
    /// The builder's store URI without its query string, as copies name it.
    host: String,
    /// When Nix's own activity started: the builder accepted the derivation.
    pub accepted_ms: i64,
    /// Nix's dispatch count at the acceptance, to tell a late arrival.
    dispatch_seq: u64,
    /// The build on the builder: its forwarded activity's start (or the estimate) and stop.
    pub build_started_ms: Option<i64>,
    pub build_finished_ms: Option<i64>,
    pub upload_ms: i64,
    pub download_ms: i64,
    /// The ssh connection Nix opened for it, just before the acceptance.
    pub connect_ms: Option<i64>,
    /// The first copy back or hook run: where the build ended when nothing was forwarded
    /// (the legacy `ssh://` protocol forwards no activities).
    end_hint_ms: Option<i64>,
}

impl RemoteTiming {
    /// The build's own span on the builder: (start, end), `now_ms` when nothing said.
    pub fn span(&self, now_ms: i64) -> (i64, i64) {
        let start = self
            .build_started_ms
            .unwrap_or(self.accepted_ms + self.upload_ms);
        let end = self
            .build_finished_ms
            .or(self.end_hint_ms)
            .unwrap_or(now_ms)
            .max(start);
        (start, end)
    }
}

/// Which way a copy goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Upload,
    Download,
}

/// The remote side of the state: which activities belong to which remote build.
#[derive(Debug, Default)]
pub struct Remotes {
    /// .drv → Nix's own activity id of its remote build. Kept after the build ends, so
    /// that a forwarded activity arriving after it is still never taken for a build.
    by_drv: HashMap<String, u64>,
    /// Remote builds not ended yet (a count, to skip all remote work when zero).
    open: usize,
    /// Forwarded build activity id → Nix's own activity id.
    forwarded: HashMap<u64, u64>,
    /// Copy activity id → (own activity id, started at, direction).
    copies: HashMap<u64, (u64, i64, Direction)>,
    /// Derivations dispatched so far (own builds started, connections, waits).
    dispatches: u64,
    /// The "connecting to" activity open now, and the last one's (stop, duration).
    connecting: Option<(u64, i64)>,
    last_connect: Option<(i64, i64)>,
}

impl Remotes {
    /// Whether any remote build is running: only then can an activity be forwarded.
    pub fn any_open(&self) -> bool {
        self.open > 0
    }

    /// Whether a stop may concern remote builds: one is running or a connection is open.
    pub fn watching(&self) -> bool {
        self.open > 0 || self.connecting.is_some()
    }

    /// Nix dispatched something (a build started, a connection, a wait for a machine).
    pub fn dispatched(&mut self) {
        self.dispatches += 1;
    }

    /// A "connecting to '…'" activity started.
    pub fn connecting(&mut self, id: u64, now_ms: i64) {
        self.dispatched();
        self.connecting = Some((id, now_ms));
    }

    /// Nix's own build activity `id` of `drv_path` on `machine` started at `now_ms`.
    pub fn accepted(
        &mut self,
        id: u64,
        drv_path: &str,
        machine: &str,
        now_ms: i64,
    ) -> RemoteTiming {
        self.dispatched();
        self.by_drv.insert(drv_path.to_string(), id);
        self.open += 1;
        // The connection that stopped right before belongs to this build: Nix's build
        // loop does nothing else between the hook's "connecting" and the acceptance.
        let connect_ms = self
            .last_connect
            .take()
            .filter(|(stop, _)| now_ms - stop <= 50)
            .map(|(_, ms)| ms);
        RemoteTiming {
            host: host_of(machine).to_string(),
            accepted_ms: now_ms,
            dispatch_seq: self.dispatches,
            connect_ms,
            ..RemoteTiming::default()
        }
    }

    /// A build activity with an empty machine for `drv_path` is forwarded when that .drv
    /// went to a builder in this session: Nix's own activity id for it, then.
    pub fn forwarded_of(&self, drv_path: &str) -> Option<u64> {
        self.by_drv.get(drv_path).copied()
    }

    /// The forwarded activity `id` of the remote build `timing` (Nix's own `own`) started.
    pub fn forward_started(&mut self, id: u64, own: u64, timing: &mut RemoteTiming, now_ms: i64) {
        self.forwarded.insert(id, own);
        let held = self.dispatches > timing.dispatch_seq;
        timing.build_started_ms = Some(if held {
            (timing.accepted_ms + timing.upload_ms).min(now_ms)
        } else {
            now_ms
        });
    }

    /// Nix's own activity that forwarded activity `id` belongs to. Every log line asks:
    /// without remote builds it costs no hashing.
    pub fn own_of(&self, id: u64) -> Option<u64> {
        if self.forwarded.is_empty() {
            return None;
        }
        self.forwarded.get(&id).copied()
    }

    /// A forwarded activity stopped: the Nix activity it belongs to, if it was one.
    pub fn forward_stopped(&mut self, id: u64) -> Option<u64> {
        self.forwarded.remove(&id)
    }

    /// A copy `[path, from, to]` started as activity `id`: if it goes to or from a
    /// running remote build, its own activity id (the copy is then timed for it).
    pub fn copy_started<'r>(
        &mut self,
        id: u64,
        fields: (&str, &str, &str),
        running: impl Iterator<Item = (&'r u64, &'r RemoteTiming, &'r str)>,
        now_ms: i64,
    ) -> Option<u64> {
        let (path, from, to) = fields;
        let (direction, host) = match (from, to) {
            ("local", "local") => return None,
            ("local", to) => (Direction::Upload, to),
            (from, "local") => (Direction::Download, from),
            _ => return None,
        };
        let mut best: Option<(i64, u64)> = None;
        for (own, timing, drv_name) in running {
            if timing.host != host {
                continue;
            }
            let fits = match direction {
                // Nix holds the builder's upload lock while it copies, one build at a time.
                Direction::Upload => timing.build_started_ms.is_none(),
                Direction::Download => path_name(path).starts_with(drv_name),
            };
            if fits && best.is_none_or(|(at, _)| timing.accepted_ms > at) {
                best = Some((timing.accepted_ms, *own));
            }
        }
        let own = best?.1;
        self.copies.insert(id, (own, now_ms, direction));
        Some(own)
    }

    /// Activity `id` stopped at `now_ms`: a copy adds its time to its build (returned
    /// with the timing to update), a connection is remembered for the next acceptance.
    pub fn stopped(&mut self, id: u64, now_ms: i64) -> Option<(u64, CopyTime)> {
        if let Some((cid, started)) = self.connecting {
            if cid == id {
                self.connecting = None;
                self.last_connect = Some((now_ms, now_ms - started));
                return None;
            }
        }
        let (own, started, direction) = self.copies.remove(&id)?;
        let ms = (now_ms - started).max(0);
        Some((
            own,
            match direction {
                Direction::Upload => CopyTime::Upload(ms),
                Direction::Download => CopyTime::Download(ms, started),
            },
        ))
    }

    /// A remote build ended (its drv stays known, see `by_drv`).
    pub fn ended(&mut self) {
        self.open = self.open.saturating_sub(1);
    }
}

/// The time of one copy, for [`CopyTime::apply`].
pub enum CopyTime {
    Upload(i64),
    /// Its duration and start.
    Download(i64, i64),
}

impl CopyTime {
    pub fn apply(self, timing: &mut RemoteTiming) {
        match self {
            CopyTime::Upload(ms) => timing.upload_ms += ms,
            CopyTime::Download(ms, started) => {
                timing.download_ms += ms;
                timing.end_hint_ms.get_or_insert(started);
            }
        }
    }
}

/// The post-build-hook started for a remote build: the build ended before it.
pub fn hook_started(timing: &mut RemoteTiming, now_ms: i64) {
    timing.end_hint_ms.get_or_insert(now_ms);
}

impl State {
    /// The running build activity `id` belongs to: its own, or the one on a builder it
    /// was forwarded for (one lookup per line; a second only while a builder forwards).
    pub(super) fn build_of(&mut self, id: u64) -> Option<&mut RunningBuild> {
        let own = self.remotes.own_of(id).unwrap_or(id);
        self.running.get_mut(&own)
    }

    /// Activities other than builds that matter to remote builds: Nix dispatching (a
    /// connection, a wait for a machine), the builder's forwarded worker activities, and
    /// copies to and from a builder.
    pub(super) fn remote_activity(
        &mut self,
        id: u64,
        ty: u64,
        fields: &[Field<'_>],
        text: &str,
        now_ms: i64,
    ) {
        match ty {
            0 if text.starts_with("connecting to '") => self.remotes.connecting(id, now_ms),
            activity::BUILD_WAITING => self.remotes.dispatched(),
            // Nix's own 102/104/103 come first, before any build; while a remote build
            // runs, new ones are its builder's (or its copies'), not ours.
            activity::REALISE | activity::BUILDS | activity::COPY_PATHS
                if self.remotes.any_open() =>
            {
                self.activity_types.insert(id, ty | FORWARDED);
            }
            activity::COPY_PATH if self.remotes.any_open() => {
                let s = |i: usize| fields.get(i).and_then(Field::as_str).unwrap_or("");
                let running = self
                    .running
                    .iter()
                    .filter_map(|(id, b)| Some((id, b.remote.as_ref()?, b.name.as_str())));
                let copy = (s(0), s(1), s(2));
                if self
                    .remotes
                    .copy_started(id, copy, running, now_ms)
                    .is_some()
                {
                    self.activity_types.insert(id, ty | FORWARDED);
                }
            }
            _ => {}
        }
    }

    pub(super) fn remote_stop(&mut self, id: u64, now_ms: i64) {
        if let Some(own) = self.remotes.forward_stopped(id) {
            if let Some(t) = self.running.get_mut(&own).and_then(|b| b.remote.as_mut()) {
                t.build_finished_ms = Some(now_ms);
            }
        } else if let Some((own, time)) = self.remotes.stopped(id, now_ms) {
            if let Some(t) = self.running.get_mut(&own).and_then(|b| b.remote.as_mut()) {
                time.apply(t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_forwarded_start_is_taken_from_the_acceptance_and_the_upload() {
        let mut r = Remotes::default();
        let mut t = r.accepted(1, "/nix/store/a-x.drv", "ssh-ng://b?q", 1_000);
        t.upload_ms = 30;
        // Nix dispatched another build before the forwarded start was read.
        r.dispatched();
        r.forward_started(9, 1, &mut t, 1_400);
        t.build_finished_ms = Some(2_050);
        assert_eq!(t.span(3_000), (1_030, 2_050));
        // Without a dispatch between, the arrival is the start.
        let mut u = r.accepted(2, "/nix/store/b-y.drv", "ssh-ng://b?q", 5_000);
        r.forward_started(10, 2, &mut u, 5_020);
        assert_eq!(u.build_started_ms, Some(5_020));
        assert_eq!(r.own_of(10), Some(2));
        assert_eq!(r.forwarded_of("/nix/store/b-y.drv"), Some(2));
        assert_eq!(r.forwarded_of("/nix/store/c-z.drv"), None);
    }

    #[test]
    fn the_connection_just_before_an_acceptance_is_its_own() {
        let mut r = Remotes::default();
        r.connecting(5, 100);
        assert!(r.stopped(5, 160).is_none());
        let t = r.accepted(6, "/nix/store/a-x.drv", "ssh-ng://b", 161);
        assert_eq!(t.connect_ms, Some(60));
        // A connection long before is not.
        r.connecting(7, 1_000);
        r.stopped(7, 1_010);
        let t = r.accepted(8, "/nix/store/b-x.drv", "ssh-ng://b", 2_000);
        assert_eq!(t.connect_ms, None);
    }
}
