//! `sync --with-why`: the .drv snapshots and manifests `why` needs, on the hub once per
//! store path (immutable, so a path already there is left as it is).

use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::{literal, Hub, LOCK};
use crate::ledger::fleet::WhyRow;
use crate::Result;

impl Hub {
    /// Pushes snapshots and manifests first seen in ledger `ledger`.
    pub async fn push_why(&self, ledger: &str, rows: &[WhyRow]) -> Result<()> {
        let what = "pushing snapshots and manifests";
        self.run(what, self.client.batch_execute("BEGIN")).await?;
        let tx = &self.client;
        self.run(
            what,
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]),
        )
        .await?;
        self.run(
            what,
            tx.batch_execute(
                "CREATE TEMP TABLE stage_drv (drv_path text, aterm bytea, stored_ms bigint) ON COMMIT DROP;
                 CREATE TEMP TABLE stage_man (store_path text, kind text, normalised text,
                     entries bigint, total_bytes bigint, hash_ms bigint, stored_ms bigint,
                     digest bytea, files jsonb) ON COMMIT DROP;",
            ),
        )
        .await?;
        let sink = self
            .run(what, tx.copy_in("COPY stage_drv FROM STDIN BINARY"))
            .await?;
        let writer = BinaryCopyInWriter::new(sink, &[Type::TEXT, Type::BYTEA, Type::INT8]);
        pin_mut!(writer);
        let copy = async {
            for row in rows {
                if let WhyRow::Snapshot {
                    drv_path,
                    aterm,
                    stored_ms,
                } = row
                {
                    let values: [&(dyn ToSql + Sync); 3] = [drv_path, aterm, stored_ms];
                    writer.as_mut().write(&values).await?;
                }
            }
            writer.finish().await
        };
        self.run(what, copy).await?;
        let sink = self
            .run(what, tx.copy_in("COPY stage_man FROM STDIN BINARY"))
            .await?;
        let types = [
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::BYTEA,
            Type::JSONB,
        ];
        let writer = BinaryCopyInWriter::new(sink, &types);
        pin_mut!(writer);
        let copy = async {
            for row in rows {
                if let WhyRow::Manifest {
                    store_path,
                    kind,
                    normalised,
                    numbers,
                    digest,
                    files,
                } = row
                {
                    let values: [&(dyn ToSql + Sync); 9] = [
                        store_path,
                        kind,
                        normalised,
                        &numbers[0],
                        &numbers[1],
                        &numbers[2],
                        &numbers[3],
                        digest,
                        files,
                    ];
                    writer.as_mut().write(&values).await?;
                }
            }
            writer.finish().await
        };
        self.run(what, copy).await?;
        let me = literal(ledger);
        self.run(
            what,
            tx.batch_execute(&format!(
                "INSERT INTO nix_ledger.drv_snapshots (drv_path, aterm, stored_ms, ledger_id, seq)
                 SELECT drv_path, aterm, stored_ms, {me}, nextval('nix_ledger.seq') FROM stage_drv
                 ON CONFLICT (drv_path) DO NOTHING;
                 INSERT INTO nix_ledger.manifests (store_path, kind, normalised, entries, total_bytes,
                     hash_ms, stored_ms, digest, files, ledger_id, seq)
                 SELECT store_path, kind, normalised, entries, total_bytes, hash_ms, stored_ms,
                     digest, files, {me}, nextval('nix_ledger.seq') FROM stage_man
                 ON CONFLICT (store_path) DO NOTHING;"
            )),
        )
        .await?;
        self.run(what, tx.batch_execute("COMMIT")).await
    }

    /// Snapshots (`manifests` false) or manifests first pushed by other ledgers than
    /// `me`, after watermark `after`, up to `limit`.
    pub async fn pull_why(
        &self,
        me: &str,
        manifests: bool,
        after: i64,
        limit: usize,
    ) -> Result<(Vec<WhyRow>, i64)> {
        let me = literal(me);
        if !manifests {
            let query = format!(
                "SELECT seq, drv_path, aterm, stored_ms FROM nix_ledger.drv_snapshots
                 WHERE seq > {after} AND ledger_id <> {me} ORDER BY seq LIMIT {limit}"
            );
            return self
                .pull(
                    "pulling snapshots",
                    query,
                    &[Type::INT8, Type::TEXT, Type::BYTEA, Type::INT8],
                    |r| WhyRow::Snapshot {
                        drv_path: r.get(1),
                        aterm: r.get(2),
                        stored_ms: r.get(3),
                    },
                )
                .await;
        }
        let query = format!(
            "SELECT seq, store_path, kind, normalised, entries, total_bytes, hash_ms, stored_ms,
                    digest, files FROM nix_ledger.manifests
             WHERE seq > {after} AND ledger_id <> {me} ORDER BY seq LIMIT {limit}"
        );
        let types = [
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::BYTEA,
            Type::JSONB,
        ];
        self.pull("pulling manifests", query, &types, |r| WhyRow::Manifest {
            store_path: r.get(1),
            kind: r.get(2),
            normalised: r.get(3),
            numbers: [r.get(4), r.get(5), r.get(6), r.get(7)],
            digest: r.get(8),
            files: r.get(9),
        })
        .await
    }
}
