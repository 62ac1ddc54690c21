//! A retention policy, as flags and module options give it, and which profile
//! generations it removes.
//!
//! Generations follow nh's `clean` (a generation stays when it is among the
//! `keep_generations` newest or younger than `keep_since`) with nix-env's safety: the
//! current generation always stays, and so do generations newer than the current one
//! (a rollback keeps what it rolled back from), as `nix-env --delete-generations +N`
//! does; the current one counts as one of the N.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::snapshot::Snapshot;
use crate::nix::profiles::{self, Generation};
use crate::size::{human_bytes, parse_size};
use crate::time::parse_duration;
use crate::{Error, Result};

/// What to keep and what to free.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Per profile, keep this many generations (the current one counts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_generations: Option<u32>,
    /// Per profile, keep the generations made in this period before now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_since_ms: Option<i64>,
    /// Stop once this many bytes are freed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_freed: Option<u64>,
    /// Stop once the store's file system has this many bytes free.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_until: Option<u64>,
    /// Never delete a build that no cache has and that cost more than this to build
    /// (or whose cost is unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_costlier_than_ms: Option<i64>,
}

/// The policy's flags as typed.
#[derive(Debug, Clone, Default)]
pub struct PolicyArgs<'a> {
    pub keep_generations: Option<u32>,
    pub keep_since: Option<&'a str>,
    pub max_freed: Option<&'a str>,
    pub free_until: Option<&'a str>,
    pub keep_costlier_than: Option<&'a str>,
}

impl Policy {
    /// Parses the flags; a bad duration or size is an error naming it.
    pub fn from_args(args: &PolicyArgs<'_>) -> Result<Policy> {
        if args.keep_generations == Some(0) {
            return Err(Error::Usage(
                "--keep-generations 0: the current generation always stays; give 1 or more".into(),
            ));
        }
        Ok(Policy {
            keep_generations: args.keep_generations,
            keep_since_ms: args.keep_since.map(parse_duration).transpose()?,
            max_freed: args.max_freed.map(parse_size).transpose()?,
            free_until: args.free_until.map(parse_size).transpose()?,
            keep_costlier_than_ms: args.keep_costlier_than.map(parse_duration).transpose()?,
        })
    }

    /// Whether it removes profile generations at all.
    pub fn touches_generations(&self) -> bool {
        self.keep_generations.is_some() || self.keep_since_ms.is_some()
    }

    /// The policy as `nix-ledger gc` flags (`gc` alone collects all that is dead).
    pub fn describe(&self) -> String {
        let mut words = vec!["gc".to_string()];
        if let Some(n) = self.keep_generations {
            words.push(format!("--keep-generations {n}"));
        }
        if let Some(ms) = self.keep_since_ms {
            words.push(format!("--keep-since {}", short_duration(ms)));
        }
        if let Some(b) = self.max_freed {
            words.push(format!("--max-freed {}", short_size(b)));
        }
        if let Some(b) = self.free_until {
            words.push(format!("--free-until {}", short_size(b)));
        }
        if let Some(ms) = self.keep_costlier_than_ms {
            words.push(format!("--keep-costlier-than {}", short_duration(ms)));
        }
        words.join(" ")
    }
}

/// A duration as a flag takes it: the largest whole unit (`30d`, `12h`, `10m`, `90s`).
fn short_duration(ms: i64) -> String {
    for (unit, len) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= len && ms % len == 0 {
            return format!("{}{unit}", ms / len);
        }
    }
    format!("{}ms", ms)
}

/// A size as a flag takes it: whole binary units (`40M`), else `human_bytes`.
fn short_size(bytes: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        let len = 1u64 << shift;
        if bytes >= len && bytes % len == 0 {
            return format!("{}{unit}", bytes / len);
        }
    }
    human_bytes(i64::try_from(bytes).unwrap_or(i64::MAX)).replace(' ', "")
}

/// Which of `gens` (one profile's, any order) the policy removes.
pub fn generations_to_remove(
    gens: &[Generation],
    keep_generations: Option<u32>,
    keep_since_ms: Option<i64>,
    now_ms: i64,
) -> Vec<u64> {
    if keep_generations.is_none() && keep_since_ms.is_none() {
        return Vec::new();
    }
    let current = gens.iter().find(|g| g.current).map(|g| g.number);
    let mut newest_first: Vec<&Generation> = gens.iter().collect();
    newest_first.sort_by_key(|g| std::cmp::Reverse(g.number));
    let mut kept_by_count = 0u32;
    let mut remove = Vec::new();
    for g in newest_first {
        let newer_than_current = current.is_some_and(|c| g.number > c);
        let mut keep = g.current || newer_than_current;
        if let Some(n) = keep_generations {
            // Generations newer than the current one do not count (nix-env's +N).
            if !newer_than_current && kept_by_count < n {
                kept_by_count += 1;
                keep = true;
            }
        }
        if let Some(since) = keep_since_ms {
            keep |= g.time_ms >= now_ms.saturating_sub(since);
        }
        if !keep {
            remove.push(g.number);
        }
    }
    remove.sort_unstable();
    remove
}

/// A generation a plan removes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerationRemoval {
    pub profile: String,
    pub generation: u64,
    pub path: String,
    pub made_ms: i64,
    pub link: String,
}

/// The profiles the snapshot's roots name, with all their generations.
pub fn profiles(snap: &Snapshot) -> BTreeMap<PathBuf, Vec<Generation>> {
    let mut found = BTreeMap::new();
    for root in &snap.roots {
        if let Some((profile, _)) = root.generation() {
            found
                .entry(profile)
                .or_insert_with_key(|p| profiles::generations(p).unwrap_or_default());
        }
    }
    found
}

/// The generations `policy` removes, over every profile of the snapshot.
pub fn removals(snap: &Snapshot, policy: &Policy, now_ms: i64) -> Vec<GenerationRemoval> {
    let mut out = Vec::new();
    if !policy.touches_generations() {
        return out;
    }
    for (profile, gens) in profiles(snap) {
        let remove =
            generations_to_remove(&gens, policy.keep_generations, policy.keep_since_ms, now_ms);
        for g in gens.iter().filter(|g| remove.contains(&g.number)) {
            out.push(GenerationRemoval {
                profile: profile.display().to_string(),
                generation: g.number,
                path: g.path.clone(),
                made_ms: g.time_ms,
                link: g.link.display().to_string(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn gens(current: u64, ages_h: &[i64], now: i64) -> Vec<Generation> {
        ages_h
            .iter()
            .enumerate()
            .map(|(i, &age)| Generation {
                number: i as u64 + 1,
                link: PathBuf::from(format!("/p/main-{}-link", i + 1)),
                time_ms: now - age * H,
                path: format!("/s/{i}"),
                current: i as u64 + 1 == current,
            })
            .collect()
    }

    #[test]
    fn keep_generations_keeps_the_current_and_the_newest_before_it() {
        let now = 1_000 * H;
        let six = gens(6, &[900, 500, 100, 0, 0, 0], now);
        assert_eq!(
            generations_to_remove(&six, Some(2), None, now),
            [1, 2, 3, 4]
        );
        assert_eq!(
            generations_to_remove(&six, Some(1), None, now),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(generations_to_remove(&six, None, Some(H), now), [1, 2, 3]);
        // Either keeps: the 2 newest, or anything younger than 200 h.
        assert_eq!(
            generations_to_remove(&six, Some(2), Some(200 * H), now),
            [1, 2]
        );
        assert!(generations_to_remove(&six, None, None, now).is_empty());
    }

    #[test]
    fn after_a_rollback_newer_generations_stay_and_do_not_count() {
        let now = 1_000 * H;
        let rolled_back = gens(2, &[30, 20, 10], now);
        assert!(generations_to_remove(&rolled_back, Some(2), None, now).is_empty());
        assert_eq!(generations_to_remove(&rolled_back, Some(1), None, now), [1]);
        assert_eq!(generations_to_remove(&rolled_back, None, Some(H), now), [1]);
    }

    #[test]
    fn flags_parse_and_describe_themselves() {
        let p = Policy::from_args(&PolicyArgs {
            keep_generations: Some(3),
            keep_since: Some("7d"),
            max_freed: Some("40M"),
            free_until: None,
            keep_costlier_than: Some("10m"),
        })
        .unwrap();
        assert_eq!(p.max_freed, Some(40 << 20));
        assert_eq!(p.keep_costlier_than_ms, Some(600_000));
        assert_eq!(
            p.describe(),
            "gc --keep-generations 3 --keep-since 7d --max-freed 40M --keep-costlier-than 10m"
        );
        assert!(Policy::from_args(&PolicyArgs {
            keep_generations: Some(0),
            ..Default::default()
        })
        .is_err());
        let err = Policy::from_args(&PolicyArgs {
            max_freed: Some("lots"),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("lots: not a size"), "{err}");
    }
}
