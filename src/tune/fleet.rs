//! Remote builders as the simulator sees them, and how Nix 2.8 picks one for a build.
//!
//! From Nix 2.8's source (`src/build-remote/build-remote.cc`, `derivation-goal.cc`):
//!
//! * **Remote first.** A ready derivation is offered to the build hook (build-remote)
//!   before any local slot is considered; it builds here only when the hook declines.
//! * **The choice.** Among the machines that take the build (its system, its features)
//!   and have a free slot, build-remote takes the one with the least
//!   `load / speedFactor` (`load`: the machine's slots in use); ties go to the higher
//!   speed factor, then the lower load, then the machine listed first. Before Nix 2.20
//!   both are integers, so the division rounds down: a machine with speed factor 4 and 3
//!   builds running counts as idle.
//! * **No free machine.** When this machine has no free slot either (or `max-jobs` is
//!   0) the build is *postponed*: it is tried again only after `build-poll-interval`
//!   (5 s by default; no build's end wakes it). With a free local slot, it builds here.
//! * **Connecting blocks the loop.** build-remote opens the connection before it
//!   answers, while Nix's loop waits: 30–60 ms per build with ssh connection sharing,
//!   200–430 ms without (measured, research notes §1). The copies and the build itself
//!   run in build-remote's own process; the machine's slot is held until it exits, and
//!   Nix's loop handles the end as a local build's (post-build hook included).
//!
//! What a remote build costs is measured per machine ([`crate::ledger::builders`]): its
//! speed against this machine, and the copies (upload and download) per build.

use serde::{Deserialize, Serialize};

use super::error::TuneError;
use super::model::Profile;

/// One remote machine.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RemoteMachine {
    /// Builds it runs at once (the builders line's max-jobs).
    pub slots: u32,
    /// How much faster it builds than this machine: a build taking `d` here alone takes
    /// `d / speed` there.
    pub speed: f64,
    /// Nix's speed factor for it (what build-remote's choice divides by).
    pub speed_factor: f64,
    /// Copying inputs to it and outputs back, per build: inside its slot, not on the loop.
    pub transfer_ms: f64,
    /// Opening the connection, per build: Nix's loop waits for it.
    pub connect_ms: f64,
}

/// The remote machines that can take this workload's builds, and how Nix waits for them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    pub machines: Vec<RemoteMachine>,
    /// `build-poll-interval`: how long a postponed build waits before it is tried again.
    pub poll_interval_ms: f64,
    /// Nix before 2.20 keeps speed factors as whole numbers and divides them as such.
    pub whole_speed_factors: bool,
}

/// Nix's default `build-poll-interval`, 5 s.
pub const DEFAULT_POLL_INTERVAL_MS: f64 = 5000.0;

impl Fleet {
    /// No remote machine: every build is local.
    pub fn none() -> Fleet {
        Fleet {
            machines: Vec::new(),
            poll_interval_ms: DEFAULT_POLL_INTERVAL_MS,
            whole_speed_factors: true,
        }
    }

    /// Slots over all machines.
    pub fn remote_slots(&self) -> u32 {
        self.machines.iter().map(|m| m.slots).sum()
    }

    /// Rejects what cannot describe machines.
    pub fn check(&self) -> Result<(), TuneError> {
        if !(self.poll_interval_ms.is_finite() && self.poll_interval_ms >= 0.0) {
            return Err(TuneError::InvalidSetting(format!(
                "build-poll-interval must be finite and at least 0, not {} ms",
                self.poll_interval_ms
            )));
        }
        for (i, m) in self.machines.iter().enumerate() {
            let positive = |x: f64| x.is_finite() && x > 0.0;
            let non_negative = |x: f64| x.is_finite() && x >= 0.0;
            if !(positive(m.speed)
                && positive(m.speed_factor)
                && non_negative(m.transfer_ms)
                && non_negative(m.connect_ms))
            {
                return Err(TuneError::InvalidSetting(format!(
                    "remote machine {i}: speed and speed factor must be above 0, transfer and connect times at least 0"
                )));
            }
        }
        Ok(())
    }

    /// How long a postponed build waits: Nix's poll waits whole seconds, at least one.
    pub fn poll_wait_ms(&self) -> f64 {
        self.poll_interval_ms.max(1000.0)
    }

    /// build-remote's choice for a build, given each machine's slots in use: `None`
    /// when every machine is full.
    pub fn choose(&self, busy: &[u32]) -> Option<usize> {
        let factor = |m: &RemoteMachine| {
            if self.whole_speed_factors {
                m.speed_factor.floor().max(1.0)
            } else {
                m.speed_factor
            }
        };
        let weighed = |load: u32, f: f64| {
            let q = f64::from(load) / f;
            if self.whole_speed_factors {
                q.floor()
            } else {
                q
            }
        };
        let mut best: Option<(usize, u32, f64)> = None;
        for (i, m) in self.machines.iter().enumerate() {
            let load = busy.get(i).copied().unwrap_or(0);
            if load >= m.slots {
                continue;
            }
            let f = factor(m);
            let better = match best {
                None => true,
                Some((_, best_load, best_f)) => {
                    let (a, b) = (weighed(load, f), weighed(best_load, best_f));
                    a < b || a == b && (f > best_f || f == best_f && load < best_load)
                }
            };
            if better {
                best = Some((i, load, f));
            }
        }
        best.map(|(i, _, _)| i)
    }

    /// How long machine `m` holds its slot for a build of `profile`: the connection, the
    /// copies, and the build at the machine's speed, as this machine would build it alone
    /// with all of its `host_cores` (the builder's own `cores` applies there, not ours).
    pub fn remote_ms(&self, m: usize, profile: &Profile, host_cores: u32) -> f64 {
        match self.machines.get(m) {
            Some(r) => r.connect_ms + r.transfer_ms + profile.duration_ms(0, host_cores) / r.speed,
            None => profile.duration_ms(0, host_cores),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(slots: u32, speed_factor: f64) -> RemoteMachine {
        RemoteMachine {
            slots,
            speed: speed_factor,
            speed_factor,
            transfer_ms: 0.0,
            connect_ms: 0.0,
        }
    }

    fn fleet(machines: Vec<RemoteMachine>, whole: bool) -> Fleet {
        Fleet {
            machines,
            poll_interval_ms: 5000.0,
            whole_speed_factors: whole,
        }
    }

    #[test]
    fn the_least_loaded_per_speed_wins_as_in_build_remote() {
        let f = fleet(vec![machine(2, 1.0), machine(4, 3.0)], true);
        // Both idle: 0/1 = 0/3, the higher speed factor wins.
        assert_eq!(f.choose(&[0, 0]), Some(1));
        // Whole numbers: 2/3 rounds down to 0, still as idle as the other.
        assert_eq!(f.choose(&[0, 2]), Some(1));
        // 3/3 = 1 > 0: the slower idle machine.
        assert_eq!(f.choose(&[0, 3]), Some(0));
        // Full machines are skipped; all full: none.
        assert_eq!(f.choose(&[2, 3]), Some(1));
        assert_eq!(f.choose(&[2, 4]), None);
        // Nix 2.20 and later divide as real numbers: 1/3 > 0.
        let newer = fleet(f.machines.clone(), false);
        assert_eq!(newer.choose(&[0, 1]), Some(0));
        // Equal machines: the lower load, then the first listed.
        let same = fleet(vec![machine(2, 1.0), machine(2, 1.0)], true);
        assert_eq!(same.choose(&[1, 0]), Some(1));
        assert_eq!(same.choose(&[1, 1]), Some(0));
        // No slots at all.
        assert_eq!(fleet(vec![machine(0, 1.0)], true).choose(&[0]), None);
    }

    #[test]
    fn a_remote_build_takes_its_time_at_the_machines_speed_plus_its_copies() {
        let mut m = machine(1, 2.0);
        m.transfer_ms = 300.0;
        m.connect_ms = 50.0;
        let f = fleet(vec![m], true);
        // 1 s serial + 4 s parallel on 2 host cores: 3 s here with every core.
        let p = Profile::new(0.0, 1000.0, 4000.0, 0);
        assert!((f.remote_ms(0, &p, 2) - (50.0 + 300.0 + 1500.0)).abs() < 1e-9);
        assert!(f.check().is_ok());
        let mut bad = f.clone();
        bad.machines[0].speed = 0.0;
        assert!(bad.check().is_err());
        assert_eq!(f.poll_wait_ms(), 5000.0);
        let mut every = fleet(vec![], true);
        every.poll_interval_ms = 0.0;
        assert_eq!(
            every.poll_wait_ms(),
            1000.0,
            "Nix's poll waits a second at least"
        );
    }
}
