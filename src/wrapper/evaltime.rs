//! How long Nix evaluated before it built or downloaded anything, from the order of the
//! JSON log's activities (Nix 2.8 writes no timestamps and no `parent` field; the events
//! are stamped on arrival).
//!
//! Every `buildPaths` call of Nix starts a `realise` activity (type 102), so a
//! realisation *episode* begins with a 102 while none is open (or with the top-level
//! "querying info about missing paths", type 0, that `nix-build` prints just before it)
//! and ends when the last open 102 stops. Every episode but the last is an
//! import-from-derivation build that evaluation waited for; evaluation ends where the
//! last episode begins. A download (type 101) while no 102 is open is made by evaluation
//! (fetchurl, fetchTarball, flake inputs), and counts as evaluation time.
//!
//! Measured against evaluations of known wall-clock length (docs/trends.md): +1 % to
//! +4 % for a 2 s `builtins.exec` sleep, +2 % to +9 % for an import-from-derivation that
//! sleeps 2 s (Nix's own start-up is the difference). An already-built target still gets
//! a (momentary) episode, so the teardown after it is not counted.
//!
//! The supervisor feeds it the start and stop events it parses anyway: a match and, for a
//! stop, a look through the (at most two or three) open realisations.

use std::time::Instant;

use super::events::activity;

/// The rule's state while the log is read.
#[derive(Debug, Default)]
pub struct EvalClock {
    /// Ids of the realise activities open now.
    open_realise: Vec<u64>,
    /// A top-level "querying info about missing paths" that may begin the next episode.
    pending_query: Option<Instant>,
    /// (start, end) of each episode so far.
    episodes: Vec<(Instant, Option<Instant>)>,
    eval_fetches: u64,
}

/// What the rule found, in milliseconds since Nix was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EvalTiming {
    /// Until the last realisation began (or until Nix exited, when none did).
    pub eval_ms: i64,
    /// Of which in import-from-derivation builds.
    pub ifd_ms: i64,
    /// Downloads made while evaluating.
    pub eval_fetches: u64,
    /// Whether a realisation began at all (not after an evaluation error).
    pub realised: bool,
}

impl EvalClock {
    /// A `start` of activity `ty`, seen at `at`.
    pub fn start(&mut self, id: u64, ty: u64, at: Instant) {
        if self.open_realise.is_empty() {
            match ty {
                activity::REALISE => {
                    let begun = self.pending_query.take().unwrap_or(at);
                    self.episodes.push((begun, None));
                }
                activity::UNKNOWN => {
                    self.pending_query.get_or_insert(at);
                }
                activity::FILE_TRANSFER => self.eval_fetches += 1,
                _ => {}
            }
        }
        if ty == activity::REALISE {
            self.open_realise.push(id);
        }
    }

    /// A `stop` of activity `id`, seen at `at`.
    pub fn stop(&mut self, id: u64, at: Instant) {
        if let Some(i) = self.open_realise.iter().position(|&open| open == id) {
            self.open_realise.swap_remove(i);
            if self.open_realise.is_empty() {
                if let Some(episode) = self.episodes.last_mut() {
                    episode.1 = Some(at);
                }
            }
        }
    }

    /// The evaluation time of a Nix started at `spawned` that exited at `exited`.
    pub fn finish(&self, spawned: Instant, exited: Instant) -> EvalTiming {
        let ms = |at: Instant| at.saturating_duration_since(spawned).as_millis() as i64;
        let (eval_end, realised, ifd): (Instant, bool, &[(Instant, Option<Instant>)]) =
            match self.episodes.split_last() {
                Some((last, earlier)) => (last.0, true, earlier),
                // `nix-build --dry-run` asks what is missing and realises nothing.
                None => match self.pending_query {
                    Some(query) => (query, true, &[]),
                    None => (exited, false, &[]),
                },
            };
        let ifd_ms = ifd
            .iter()
            .map(|(start, end)| {
                end.unwrap_or(exited)
                    .saturating_duration_since(*start)
                    .as_millis() as i64
            })
            .sum();
        EvalTiming {
            eval_ms: ms(eval_end),
            ifd_ms,
            eval_fetches: self.eval_fetches,
            realised,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Feeds (ms after spawn, start id type | stop id) and finishes at `exit_ms`.
    fn run(events: &[(u64, &str, u64, u64)], exit_ms: u64) -> EvalTiming {
        let spawned = Instant::now();
        let at = |ms: u64| spawned + Duration::from_millis(ms);
        let mut clock = EvalClock::default();
        for &(ms, action, id, ty) in events {
            match action {
                "start" => clock.start(id, ty, at(ms)),
                _ => clock.stop(id, at(ms)),
            }
        }
        clock.finish(spawned, at(exit_ms))
    }

    #[test]
    fn nix_builds_query_before_realising_begins_the_episode() {
        // nix-build: "querying info about missing paths", then realise, builds, copies.
        let t = run(
            &[
                (2140, "start", 1, 0),
                (2140, "stop", 1, 0),
                (2141, "start", 2, 102),
                (2141, "start", 3, 104),
                (3257, "stop", 3, 0),
                (3257, "stop", 2, 0),
            ],
            3296,
        );
        assert_eq!((t.eval_ms, t.ifd_ms, t.realised), (2140, 0, true));
    }

    #[test]
    fn an_import_from_derivation_is_evaluation_time() {
        let t = run(
            &[
                (27, "start", 1, 102),
                (28, "start", 2, 0),
                (28, "stop", 2, 0),
                (57, "start", 3, 105),
                (2073, "stop", 3, 0),
                (2073, "stop", 1, 0),
                (7977, "start", 4, 0),
                (7977, "stop", 4, 0),
                (7977, "start", 5, 102),
                (9402, "stop", 5, 0),
            ],
            9545,
        );
        assert_eq!((t.eval_ms, t.ifd_ms), (7977, 2073 - 27));
    }

    #[test]
    fn downloads_while_evaluating_are_counted_and_no_realisation_means_the_lifetime() {
        let t = run(
            &[
                (19, "start", 1, 101),
                (21, "stop", 1, 0),
                (22, "start", 3, 102),
                (900, "stop", 3, 0),
            ],
            950,
        );
        assert_eq!((t.eval_ms, t.eval_fetches), (22, 1));
        let failed = run(&[(5, "start", 1, 101)], 812);
        assert_eq!((failed.eval_ms, failed.realised), (812, false));
    }
}
