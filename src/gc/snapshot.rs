//! One look at the store: the roots from Nix, the database, the store directory, and
//! the liveness they give, taken together. The root scan (a `nix-store` process) runs
//! while the database is read and the directory listed, so a snapshot costs about as
//! long as the slowest of the three.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::nix::config::NixSettings;
use crate::nix::dirs;
use crate::nix::roots::{self, Root, RootKind};
use crate::nix::store_path::HASH_PART_LEN;
use crate::store::db::StoreDb;
use crate::store::graph::{StoreGraph, NONE};
use crate::store::live::{list_store_dir, KeepEdges, Liveness, StoreDir, Walker};
use crate::{Error, Result};

/// How long each part of taking a snapshot took, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub roots_ms: u64,
    pub database_ms: u64,
    pub store_dir_ms: u64,
    pub liveness_ms: u64,
}

/// The store, looked at once.
pub struct Snapshot {
    pub store_dir: String,
    pub state_dir: PathBuf,
    pub graph: StoreGraph,
    pub dir: StoreDir,
    pub roots: Vec<Root>,
    /// Per root: its path's index, or [`NONE`] when the path is not valid.
    pub root_index: Vec<u32>,
    /// Hash parts of the temporary roots.
    pub temp_hashes: HashSet<String>,
    pub keep: KeepEdges,
    pub live: Liveness,
    pub timings: Timings,
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Snapshot {
    /// Looks at the store this machine's Nix uses (`NIX_STORE_DIR`, `NIX_STATE_DIR`),
    /// with the keep settings of `settings`.
    pub fn take(settings: &NixSettings) -> Result<Snapshot> {
        let store_dir = dirs::store_dir();
        let state_dir = dirs::state_dir();
        let keep = KeepEdges {
            outputs: settings.keeps_outputs(),
            derivations: settings.keeps_derivations(),
        };
        let started = Instant::now();
        let scan = roots::spawn()?;
        let real_dir = PathBuf::from(&store_dir);
        let (graph, listed, database_ms) = std::thread::scope(|scope| {
            let lister = scope.spawn(|| {
                let t = Instant::now();
                list_store_dir(&real_dir).map(|names| (names, elapsed_ms(t)))
            });
            let t = Instant::now();
            let graph =
                StoreDb::open(&dirs::store_db()).and_then(|db| StoreGraph::load(&db, &store_dir));
            let database_ms = elapsed_ms(t);
            let listed = lister
                .join()
                .unwrap_or(Err(Error::Panicked("listing the store directory")));
            (graph, listed, database_ms)
        });
        let graph = graph?;
        let (names, store_dir_ms) = listed?;
        let dir = StoreDir::classify(names, &graph);
        let roots = roots::collect(scan, &store_dir, &state_dir)?;
        let roots_ms = elapsed_ms(started);
        let t = Instant::now();
        let root_index: Vec<u32> = roots
            .iter()
            .map(|r| graph.index_of(&r.path).unwrap_or(NONE))
            .collect();
        let temp_hashes: HashSet<String> = roots
            .iter()
            .filter(|r| r.kind == RootKind::Temp)
            .filter_map(|r| {
                let base = r.path.rsplit('/').next()?;
                base.get(..HASH_PART_LEN).map(str::to_string)
            })
            .collect();
        let valid_roots: Vec<u32> = root_index.iter().copied().filter(|&i| i != NONE).collect();
        let mut walker = Walker::new(graph.len());
        let live = Liveness::compute(&graph, &dir, &valid_roots, &temp_hashes, keep, &mut walker);
        let timings = Timings {
            roots_ms,
            database_ms,
            store_dir_ms,
            liveness_ms: elapsed_ms(t),
        };
        Ok(Snapshot {
            store_dir,
            state_dir,
            graph,
            dir,
            roots,
            root_index,
            temp_hashes,
            keep,
            live,
            timings,
        })
    }

    /// Liveness as it would be without the roots whose links are in `removed` (e.g. the
    /// generations a policy removes).
    pub fn live_without(&self, removed: &HashSet<&str>, walker: &mut Walker) -> Liveness {
        let roots: Vec<u32> = self
            .roots
            .iter()
            .zip(&self.root_index)
            .filter(|(r, &i)| i != NONE && !removed.contains(r.link.as_str()))
            .map(|(_, &i)| i)
            .collect();
        Liveness::compute(
            &self.graph,
            &self.dir,
            &roots,
            &self.temp_hashes,
            self.keep,
            walker,
        )
    }

    /// How many links name each valid root path.
    pub fn links_per_path(&self) -> HashMap<u32, usize> {
        let mut count = HashMap::new();
        for &i in &self.root_index {
            if i != NONE {
                *count.entry(i).or_insert(0) += 1;
            }
        }
        count
    }

    /// Whether the valid path `i` is dead now.
    pub fn is_dead(&self, i: u32) -> bool {
        self.live.is_dead(&self.dir, i)
    }
}
