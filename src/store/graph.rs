//! The whole store database in memory, on integer indices: every valid path (its name,
//! size, origin, deriver), its references, and each derivation's valid outputs. What
//! `nix-ledger store` and `gc` compute on, read in one read transaction (one consistent
//! snapshot of a database Nix may be writing).
//!
//! Built for 20,000+ paths in a few tens of milliseconds: the three tables are read in
//! bulk, rows borrowed (no `String` per row: names go into one arena), ids mapped to dense
//! indices, and edges kept as compressed adjacency lists. Paths are looked up by their
//! 32-character hash part, which names a store path uniquely.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::db::StoreDb;
use crate::nix::store_path::HASH_PART_LEN;
use crate::Result;

/// "No path" in index fields.
pub const NONE: u32 = u32::MAX;

/// Where a valid path came from, as the database tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Built on this machine (`ultimate`).
    Built,
    /// Fetched or copied in, with a known deriver: an output made elsewhere.
    Substituted,
    /// A `.drv` file.
    Derivation,
    /// Added by evaluation or `nix-store --add` (content-addressed, no deriver).
    Source,
    /// Copied in without a deriver or content address.
    Other,
}

/// Adjacency lists: the targets of node `i` are `targets[offsets[i]..offsets[i + 1]]`.
#[derive(Debug, Clone, Default)]
pub struct Csr {
    offsets: Vec<u32>,
    targets: Vec<u32>,
}

impl Csr {
    /// Builds the lists of `nodes` nodes from (from, to) pairs.
    pub fn from_pairs(nodes: usize, pairs: &[(u32, u32)]) -> Csr {
        let mut offsets = vec![0u32; nodes + 1];
        for &(from, _) in pairs {
            offsets[from as usize + 1] += 1;
        }
        for i in 0..nodes {
            offsets[i + 1] += offsets[i];
        }
        let mut fill = offsets.clone();
        let mut targets = vec![0u32; pairs.len()];
        for &(from, to) in pairs {
            let at = &mut fill[from as usize];
            targets[*at as usize] = to;
            *at += 1;
        }
        Csr { offsets, targets }
    }

    /// The targets of `node`.
    pub fn of(&self, node: u32) -> &[u32] {
        let i = node as usize;
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.targets[a as usize..b as usize],
            _ => &[],
        }
    }

    /// The same edges, reversed.
    pub fn reversed(&self) -> Csr {
        let nodes = self.offsets.len().saturating_sub(1);
        let mut pairs = Vec::with_capacity(self.targets.len());
        for from in 0..nodes as u32 {
            for &to in self.of(from) {
                pairs.push((to, from));
            }
        }
        Csr::from_pairs(nodes, &pairs)
    }
}

/// Hash parts are uniformly random: their first eight bytes are a good hash already.
#[derive(Default)]
struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for (i, &b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(b) << (i * 8);
        }
        self.0 = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_usize(&mut self, _: usize) {}
}

type HashIndex = HashMap<[u8; HASH_PART_LEN], u32, BuildHasherDefault<PrefixHasher>>;

/// The store's valid paths and edges. Index `i` is one valid path.
pub struct StoreGraph {
    store_dir: String,
    names: String,
    name_ends: Vec<u32>,
    deriver_names: String,
    deriver_ends: Vec<u32>,
    pub nar_size: Vec<u64>,
    /// Registration time, unix seconds.
    pub registered: Vec<i64>,
    pub origin: Vec<Origin>,
    /// The deriver's index when it is valid, else [`NONE`].
    pub deriver: Vec<u32>,
    /// References, without self-references.
    pub refs: Csr,
    /// For a `.drv`: its valid outputs as DerivationOutputs lists them.
    pub outputs: Csr,
    index: HashIndex,
}

fn key(base_name: &str) -> Option<[u8; HASH_PART_LEN]> {
    base_name.as_bytes().get(..HASH_PART_LEN)?.try_into().ok()
}

impl StoreGraph {
    /// Reads the whole database of `db`, whose paths live in `store_dir`.
    pub fn load(db: &StoreDb, store_dir: &str) -> Result<StoreGraph> {
        let prefix = format!("{}/", store_dir.trim_end_matches('/'));
        let conn = db.conn();
        let tx = conn.unchecked_transaction().map_err(|e| db.err(e))?;
        let count: i64 = tx
            .query_row("SELECT count(*) FROM ValidPaths", [], |r| r.get(0))
            .map_err(|e| db.err(e))?;
        let count = usize::try_from(count).unwrap_or(0);
        let mut g = StoreGraph {
            store_dir: prefix.trim_end_matches('/').to_string(),
            // Base names are ~60 bytes (hash, dash, name); a second allocation costs a copy.
            names: String::with_capacity(count * 72),
            name_ends: Vec::with_capacity(count),
            deriver_names: String::with_capacity(count * 56),
            deriver_ends: Vec::with_capacity(count),
            nar_size: Vec::with_capacity(count),
            registered: Vec::with_capacity(count),
            origin: Vec::with_capacity(count),
            deriver: Vec::new(),
            refs: Csr::default(),
            outputs: Csr::default(),
            index: HashIndex::with_capacity_and_hasher(count, Default::default()),
        };
        // Database ids → dense indices.
        let mut by_id: Vec<u32> = Vec::new();
        {
            let mut stmt = tx
                .prepare(
                    "SELECT id, path, deriver, narSize, ultimate, registrationTime, ca IS NOT NULL
                     FROM ValidPaths",
                )
                .map_err(|e| db.err(e))?;
            let mut rows = stmt.query([]).map_err(|e| db.err(e))?;
            while let Some(row) = rows.next().map_err(|e| db.err(e))? {
                let id = row
                    .get_ref(0)
                    .and_then(|v| Ok(v.as_i64()?))
                    .map_err(|e| db.err(e))?;
                let path = row
                    .get_ref(1)
                    .and_then(|v| Ok(v.as_str()?))
                    .map_err(|e| db.err(e))?;
                // A path of another store directory cannot be in this store's database;
                // skip rather than misname it.
                let Some(base) = path.strip_prefix(&prefix) else {
                    continue;
                };
                let deriver = row
                    .get_ref(2)
                    .and_then(|v| Ok(v.as_str_or_null()?))
                    .map_err(|e| db.err(e))?;
                let nar: Option<i64> = row.get(3).map_err(|e| db.err(e))?;
                let ultimate: Option<i64> = row.get(4).map_err(|e| db.err(e))?;
                let registered: Option<i64> = row.get(5).map_err(|e| db.err(e))?;
                let has_ca: bool = row.get(6).map_err(|e| db.err(e))?;
                let index = g.name_ends.len() as u32;
                let Some(k) = key(base) else { continue };
                g.names.push_str(base);
                g.name_ends.push(g.names.len() as u32);
                let deriver_base = deriver.and_then(|d| d.strip_prefix(&prefix)).unwrap_or("");
                g.deriver_names.push_str(deriver_base);
                g.deriver_ends.push(g.deriver_names.len() as u32);
                g.nar_size.push(nar.unwrap_or(0).max(0) as u64);
                g.registered.push(registered.unwrap_or(0));
                g.origin.push(if ultimate.unwrap_or(0) != 0 {
                    Origin::Built
                } else if base.ends_with(".drv") {
                    Origin::Derivation
                } else if deriver.is_some() {
                    Origin::Substituted
                } else if has_ca {
                    Origin::Source
                } else {
                    Origin::Other
                });
                g.index.insert(k, index);
                let id = usize::try_from(id).unwrap_or(usize::MAX);
                if id < 1 << 31 {
                    if by_id.len() <= id {
                        by_id.resize(id + 1, NONE);
                    }
                    by_id[id] = index;
                }
            }
        }
        let nodes = g.name_ends.len();
        let lookup = |id: i64| -> u32 {
            usize::try_from(id)
                .ok()
                .and_then(|i| by_id.get(i).copied())
                .unwrap_or(NONE)
        };
        {
            let mut stmt = tx
                .prepare("SELECT referrer, reference FROM Refs")
                .map_err(|e| db.err(e))?;
            let mut rows = stmt.query([]).map_err(|e| db.err(e))?;
            let mut pairs = Vec::with_capacity(nodes * 3);
            while let Some(row) = rows.next().map_err(|e| db.err(e))? {
                let (a, b): (i64, i64) = (
                    row.get(0).map_err(|e| db.err(e))?,
                    row.get(1).map_err(|e| db.err(e))?,
                );
                let (a, b) = (lookup(a), lookup(b));
                if a != NONE && b != NONE && a != b {
                    pairs.push((a, b));
                }
            }
            g.refs = Csr::from_pairs(nodes, &pairs);
        }
        {
            let mut stmt = tx
                .prepare("SELECT drv, path FROM DerivationOutputs")
                .map_err(|e| db.err(e))?;
            let mut rows = stmt.query([]).map_err(|e| db.err(e))?;
            let mut pairs = Vec::with_capacity(nodes / 2);
            while let Some(row) = rows.next().map_err(|e| db.err(e))? {
                let drv = lookup(row.get(0).map_err(|e| db.err(e))?);
                let path = row
                    .get_ref(1)
                    .and_then(|v| Ok(v.as_str()?))
                    .map_err(|e| db.err(e))?;
                let out = path
                    .strip_prefix(&prefix)
                    .and_then(|b| g.index_of_base(b))
                    .unwrap_or(NONE);
                if drv != NONE && out != NONE && drv != out {
                    pairs.push((drv, out));
                }
            }
            g.outputs = Csr::from_pairs(nodes, &pairs);
        }
        g.resolve_derivers();
        Ok(g)
    }

    /// Each path's valid deriver: first through DerivationOutputs (a .drv lists its
    /// outputs, so most derivers are found by comparing two names), then by lookup.
    fn resolve_derivers(&mut self) {
        let nodes = self.len();
        let mut deriver = vec![NONE; nodes];
        for drv in 0..nodes as u32 {
            for &out in self.outputs.of(drv) {
                if self.deriver_name(out) == self.base_name(drv) {
                    deriver[out as usize] = drv;
                }
            }
        }
        for (i, d) in deriver.iter_mut().enumerate() {
            if *d == NONE {
                let name = self.deriver_name(i as u32);
                if !name.is_empty() {
                    *d = self.index_of_base(name).unwrap_or(NONE);
                }
            }
        }
        self.deriver = deriver;
    }

    /// How many valid paths.
    pub fn len(&self) -> usize {
        self.name_ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.name_ends.is_empty()
    }

    /// The store directory, without a trailing `/`.
    pub fn store_dir(&self) -> &str {
        &self.store_dir
    }

    /// `<hash>-<name>` of path `i`.
    pub fn base_name(&self, i: u32) -> &str {
        let i = i as usize;
        let start = if i == 0 {
            0
        } else {
            self.name_ends[i - 1] as usize
        };
        &self.names[start..self.name_ends[i] as usize]
    }

    /// The full path of `i`.
    pub fn path(&self, i: u32) -> String {
        let base = self.base_name(i);
        let mut path = String::with_capacity(self.store_dir.len() + 1 + base.len());
        path.push_str(&self.store_dir);
        path.push('/');
        path.push_str(base);
        path
    }

    /// `<hash>-<name>.drv` of the deriver the database names for `i` (valid or not), or "".
    pub fn deriver_name(&self, i: u32) -> &str {
        let i = i as usize;
        let start = if i == 0 {
            0
        } else {
            self.deriver_ends[i - 1] as usize
        };
        &self.deriver_names[start..self.deriver_ends[i] as usize]
    }

    /// Whether `i` is a `.drv`.
    pub fn is_drv(&self, i: u32) -> bool {
        self.base_name(i).ends_with(".drv")
    }

    /// The index of the valid path with base name `base`.
    pub fn index_of_base(&self, base: &str) -> Option<u32> {
        let i = *self.index.get(&key(base)?)?;
        (self.base_name(i) == base).then_some(i)
    }

    /// The index of the valid path `path` (a full path in this store).
    pub fn index_of(&self, path: &str) -> Option<u32> {
        let base = path.strip_prefix(&self.store_dir)?.strip_prefix('/')?;
        self.index_of_base(base)
    }

    /// Whether some valid path has the hash part of `base` (for names like
    /// `<hash>-x.lock` that share a valid path's hash).
    pub fn has_hash_of(&self, base: &str) -> Option<u32> {
        key(base).and_then(|k| self.index.get(&k).copied())
    }

    /// Paths whose valid deriver does not list them in DerivationOutputs. Nix 2.8's GC
    /// answers for such paths depend on directory order (a .drv can then be both live
    /// and dead); nix-ledger counts them so that a report can say its answer may differ.
    pub fn anomalous_derivers(&self) -> usize {
        (0..self.len() as u32)
            .filter(|&i| {
                let d = self.deriver[i as usize];
                d != NONE && !self.outputs.of(d).contains(&i)
            })
            .count()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rusqlite::Connection;
    use std::path::{Path, PathBuf};

    /// A store database with Nix's schema. `paths`: (id, base name, deriver base name,
    /// narSize, ultimate, ca?); `refs`: (referrer id, reference id); `outputs`: (drv id,
    /// output base name).
    pub(crate) fn fake_db(
        dir: &Path,
        paths: &[(i64, &str, &str, i64, bool, bool)],
        refs: &[(i64, i64)],
        outputs: &[(i64, &str)],
    ) -> PathBuf {
        let path = dir.join("db.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE ValidPaths (id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT UNIQUE NOT NULL,
                 hash TEXT NOT NULL, registrationTime INTEGER NOT NULL, deriver TEXT,
                 narSize INTEGER, ultimate INTEGER, sigs TEXT, ca TEXT);
             CREATE TABLE Refs (referrer INTEGER NOT NULL, reference INTEGER NOT NULL,
                 PRIMARY KEY (referrer, reference));
             CREATE TABLE DerivationOutputs (drv INTEGER NOT NULL, id TEXT NOT NULL,
                 path TEXT NOT NULL, PRIMARY KEY (drv, id));",
        )
        .unwrap();
        for &(id, base, deriver, size, ultimate, ca) in paths {
            conn.execute(
                "INSERT INTO ValidPaths VALUES (?1, ?2, 'h', 100, ?3, ?4, ?5, NULL, ?6)",
                rusqlite::params![
                    id,
                    format!("/s/{base}"),
                    (!deriver.is_empty()).then(|| format!("/s/{deriver}")),
                    size,
                    ultimate.then_some(1),
                    ca.then_some("text:sha256:x"),
                ],
            )
            .unwrap();
        }
        for &(a, b) in refs {
            conn.execute("INSERT INTO Refs VALUES (?1, ?2)", [a, b])
                .unwrap();
        }
        for (n, &(drv, out)) in outputs.iter().enumerate() {
            conn.execute(
                "INSERT INTO DerivationOutputs VALUES (?1, ?2, ?3)",
                rusqlite::params![drv, format!("o{n}"), format!("/s/{out}")],
            )
            .unwrap();
        }
        path
    }

    pub(crate) fn h(c: char) -> String {
        c.to_string().repeat(HASH_PART_LEN)
    }

    #[test]
    fn the_database_is_read_into_indices() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, d) = (
            format!("{}-a", h('a')),
            format!("{}-b", h('b')),
            format!("{}-a.drv", h('d')),
        );
        let db = fake_db(
            dir.path(),
            &[
                (1, &a, &d, 10, true, false),
                (5, &b, "", 20, false, true),
                (7, &d, "", 3, false, true),
            ],
            &[(1, 5), (1, 1), (7, 5)],
            &[(7, &a)],
        );
        let g = StoreGraph::load(&StoreDb::open(&db).unwrap(), "/s").unwrap();
        assert_eq!(g.len(), 3);
        let (ia, ib, id) = (
            g.index_of(&format!("/s/{a}")).unwrap(),
            g.index_of(&format!("/s/{b}")).unwrap(),
            g.index_of(&format!("/s/{d}")).unwrap(),
        );
        assert_eq!(g.refs.of(ia), [ib], "self-references are dropped");
        assert_eq!(g.outputs.of(id), [ia]);
        assert_eq!(g.deriver[ia as usize], id);
        assert_eq!(g.origin[ia as usize], Origin::Built);
        assert_eq!(g.origin[ib as usize], Origin::Source);
        assert_eq!(g.origin[id as usize], Origin::Derivation);
        assert_eq!(g.nar_size[ib as usize], 20);
        assert_eq!(g.path(ib), format!("/s/{b}"));
        assert_eq!(g.refs.reversed().of(ib), [ia, id]);
        assert_eq!(g.anomalous_derivers(), 0);
        assert_eq!(g.index_of(&format!("/s/{}-zz", h('a'))), None);
    }
}
