//! The short summary printed after every build: what was built and downloaded, how
//! long it took, the slowest derivations and the peak memory.

use serde::Serialize;

use super::state::State;
use crate::ledger::model::BuildStatus;
use crate::size::human_bytes;
use crate::time::human_duration_ms;

/// How many of the slowest builds are named.
const SLOWEST: usize = 3;

/// The numbers of one session.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub built: u64,
    pub failed: u64,
    pub substituted: u64,
    pub downloaded_bytes: u64,
    pub wall_ms: i64,
    /// (name, duration) of the slowest builds, slowest first.
    pub slowest: Vec<(String, i64)>,
    /// (name, bytes) of the build with the highest peak RSS.
    pub peak_memory: Option<(String, u64)>,
}

impl Summary {
    pub fn from_state(state: &State, wall_ms: i64) -> Summary {
        let mut summary = Summary {
            substituted: state.substituted.len() as u64,
            downloaded_bytes: state.downloaded_bytes(),
            wall_ms,
            ..Summary::default()
        };
        let mut by_time: Vec<(String, i64)> = Vec::new();
        for build in &state.finished {
            match build.status {
                BuildStatus::Built => summary.built += 1,
                BuildStatus::Failed => summary.failed += 1,
                BuildStatus::Substituted => summary.substituted += 1,
            }
            by_time.push((build.name.clone(), build.duration_ms()));
            if let Some(usage) = build.usage.filter(|u| u.peak_rss_bytes > 0) {
                if summary
                    .peak_memory
                    .as_ref()
                    .is_none_or(|(_, peak)| usage.peak_rss_bytes > *peak)
                {
                    summary.peak_memory = Some((build.name.clone(), usage.peak_rss_bytes));
                }
            }
        }
        by_time.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        by_time.truncate(SLOWEST);
        summary.slowest = by_time;
        summary
    }

    /// Two or three lines for stderr.
    pub fn render(&self) -> String {
        let mut text = format!(
            "nix-ledger: built {}, downloaded {} ({}){}, in {}\n",
            self.built,
            self.substituted,
            human_bytes(self.downloaded_bytes as i64),
            if self.failed > 0 {
                format!(", {} failed", self.failed)
            } else {
                String::new()
            },
            human_duration_ms(self.wall_ms)
        );
        if !self.slowest.is_empty() {
            let list: Vec<String> = self
                .slowest
                .iter()
                .map(|(name, ms)| format!("{name} {}", human_duration_ms(*ms)))
                .collect();
            text.push_str(&format!("  slowest: {}\n", list.join(", ")));
        }
        if let Some((name, bytes)) = &self.peak_memory {
            text.push_str(&format!(
                "  peak memory: {} ({name})\n",
                human_bytes(*bytes as i64)
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wrapper::sampler::Usage;
    use crate::wrapper::state::{FinishedBuild, Tail};

    fn build(name: &str, ms: i64, status: BuildStatus, rss: Option<u64>) -> FinishedBuild {
        FinishedBuild {
            drv_path: format!("/nix/store/x-{name}.drv"),
            name: name.into(),
            machine: None,
            remote: None,
            started_ms: 0,
            finished_ms: ms,
            log_lines: 0,
            tail: Tail::default(),
            status,
            pending: false,
            interrupted: false,
            usage: rss.map(|peak_rss_bytes| Usage {
                peak_rss_bytes,
                ..Usage::default()
            }),
        }
    }

    #[test]
    fn the_summary_counts_and_ranks_builds() {
        let mut state = State::new(crate::wrapper::builddir::BuildRoots::default());
        state.finished = vec![
            build("a", 100, BuildStatus::Built, Some(10 << 20)),
            build("b", 3_000, BuildStatus::Built, Some(300 << 20)),
            build("c", 2_000, BuildStatus::Failed, None),
            build("d", 50, BuildStatus::Built, None),
        ];
        let s = Summary::from_state(&state, 4_200);
        assert_eq!((s.built, s.failed, s.substituted), (3, 1, 0));
        assert_eq!(
            s.slowest,
            vec![("b".into(), 3_000), ("c".into(), 2_000), ("a".into(), 100)]
        );
        assert_eq!(s.peak_memory, Some(("b".into(), 300 << 20)));
        assert_eq!(
            s.render(),
            "nix-ledger: built 3, downloaded 0 (0 B), 1 failed, in 4.2s\n  slowest: b 3.0s, c 2.0s, a 100ms\n  peak memory: 300.0 MiB (b)\n"
        );
    }

    #[test]
    fn a_build_seen_only_after_it_exited_has_no_peak_memory() {
        // Its processes were zombies when sampled: CPU times, no memory left.
        let mut state = State::new(crate::wrapper::builddir::BuildRoots::default());
        state.finished = vec![build("z", 10, BuildStatus::Built, Some(0))];
        assert_eq!(Summary::from_state(&state, 100).peak_memory, None);
        let rec = crate::wrapper::session::build_record(1, &state.finished[0]);
        assert_eq!(rec.peak_rss_bytes, None);
        assert_eq!(rec.cpu_user_ms, Some(0));
    }
}
