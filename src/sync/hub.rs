//! The hub: a PostgreSQL database holding every machine's rows (schema `nix_ledger`),
//! brought up to date by its own numbered migrations (`sync/migrations/`).
//!
//! Every wait is bounded: the connection (TCP, TLS and login together) by
//! `connect_timeout`, every statement and every COPY batch by the operation timeout,
//! client side, so a server that accepts and then says nothing cannot hang a sync; the
//! server's own `statement_timeout` is set to the same.
//!
//! Rows go in with binary COPY into a temporary table, then one `INSERT … ON CONFLICT`
//! keyed by (ledger id, local id), under one advisory lock for all writers: every row
//! written takes the next `seq`, so seq order is commit order and a puller's watermark
//! (the highest seq it stored) never skips a row that was still committing.

use std::future::Future;
use std::time::Duration;

use futures_util::{pin_mut, StreamExt};
use serde_json::Value;
use tokio_postgres::binary_copy::{BinaryCopyInWriter, BinaryCopyOutStream};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config};

use super::conninfo::{ConnInfo, SslMode};
use crate::ledger::fleet::{BuildRow, Pulled, SessionRow, BUILD_NUMBERS, SESSION_NUMBERS};
use crate::{Error, Result};

/// The hub's migrations; index + 1 is the version each produces.
const MIGRATIONS: &[&str] = &[include_str!("migrations/0001_init.sql")];

/// The advisory lock every writer holds until it commits (and migrations too).
const LOCK: i64 = 0x6e69_785f_6c65_6467; // "nix_ledg"

/// An open connection to the hub.
pub struct Hub {
    client: Client,
    shown: String,
    timeout: Duration,
}

/// What a failed hub operation says: the hub (no password), and the cause chain on one
/// line (tokio-postgres's own message is only "db error" or "error connecting").
fn hub_error(shown: &str, what: &str, e: &tokio_postgres::Error) -> Error {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    Error::Hub(format!("hub {shown}: {what}: {}", text.replace('\n', " ")))
}

impl Hub {
    /// Connects and brings the hub's schema up to date.
    pub async fn connect(info: &ConnInfo, timeout: Duration) -> Result<Hub> {
        let shown = info.display();
        let mut config = Config::new();
        config
            .host(&info.host)
            .port(info.port)
            .user(&info.user)
            .dbname(&info.dbname)
            .application_name(&info.application_name)
            .connect_timeout(info.connect_timeout)
            .keepalives_idle(Duration::from_secs(30));
        if let Some(p) = &info.password {
            config.password(p);
        }
        config.ssl_mode(match info.sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let attempt = async {
            match super::tls::client_config(info)? {
                Some(tls) => {
                    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
                    let (client, conn) = config
                        .connect(tls)
                        .await
                        .map_err(|e| hub_error(&shown, "cannot connect", &e))?;
                    tokio::spawn(conn);
                    Ok(client)
                }
                None => {
                    let (client, conn) = config
                        .connect(tokio_postgres::NoTls)
                        .await
                        .map_err(|e| hub_error(&shown, "cannot connect", &e))?;
                    tokio::spawn(conn);
                    Ok(client)
                }
            }
        };
        let client = match tokio::time::timeout(info.connect_timeout, attempt).await {
            Ok(client) => client?,
            Err(_) => {
                return Err(Error::Hub(format!(
                    "hub {shown}: cannot connect: no answer within {} s",
                    info.connect_timeout.as_secs()
                )))
            }
        };
        let hub = Hub {
            client,
            shown,
            timeout,
        };
        hub.run(
            "setting the statement timeout",
            hub.client
                .batch_execute(&format!("SET statement_timeout = {}", timeout.as_millis())),
        )
        .await?;
        hub.migrate().await?;
        Ok(hub)
    }

    /// Awaits `op`, at most the operation timeout.
    async fn run<T>(
        &self,
        what: &str,
        op: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(r) => r.map_err(|e| hub_error(&self.shown, what, &e)),
            Err(_) => Err(Error::Hub(format!(
                "hub {}: {what}: no answer within {} s",
                self.shown,
                self.timeout.as_secs()
            ))),
        }
    }

    async fn migrate(&self) -> Result<()> {
        let what = "migrating the hub's schema";
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
                "CREATE SCHEMA IF NOT EXISTS nix_ledger;
                 CREATE TABLE IF NOT EXISTS nix_ledger.schema_version (version integer NOT NULL);",
            ),
        )
        .await?;
        let row = self
            .run(
                what,
                tx.query_opt("SELECT version FROM nix_ledger.schema_version", &[]),
            )
            .await?;
        let current: i32 = row.map(|r| r.get(0)).unwrap_or(0);
        if current as usize > MIGRATIONS.len() {
            return Err(Error::Hub(format!(
                "hub {}: schema version {current} is newer than this nix-ledger knows ({}); upgrade nix-ledger",
                self.shown,
                MIGRATIONS.len()
            )));
        }
        for sql in &MIGRATIONS[current as usize..] {
            self.run(what, tx.batch_execute(sql)).await?;
        }
        let version = MIGRATIONS.len() as i32;
        self.run(
            what,
            tx.execute("DELETE FROM nix_ledger.schema_version", &[]),
        )
        .await?;
        self.run(
            what,
            tx.execute(
                "INSERT INTO nix_ledger.schema_version VALUES ($1)",
                &[&version],
            ),
        )
        .await?;
        self.run(what, tx.batch_execute("COMMIT")).await
    }

    /// The hub's random id, and records `ledger` (this ledger's id) as `machine`'s.
    pub async fn register(&self, ledger: &str, machine: &str) -> Result<String> {
        let what = "registering this ledger";
        self.run(
            what,
            self.client.execute(
                "INSERT INTO nix_ledger.ledgers (ledger_id, machine) VALUES ($1, $2)
                 ON CONFLICT (ledger_id) DO UPDATE SET machine = excluded.machine, last_sync = now()",
                &[&ledger, &machine],
            ),
        )
        .await?;
        let row = self
            .run(
                what,
                self.client
                    .query_one("SELECT id FROM nix_ledger.hub LIMIT 1", &[]),
            )
            .await?;
        Ok(row.get(0))
    }

    /// Pushes sessions of `ledger` (machine `machine`): a newer revision replaces an
    /// older one, the same or an older one changes nothing.
    pub async fn push_sessions(
        &self,
        ledger: &str,
        machine: &str,
        rows: &[SessionRow],
    ) -> Result<()> {
        let mut columns = vec![
            "ledger_id",
            "local_id",
            "machine",
            "rev",
            "kind",
            "command",
            "cwd",
            "started_ms",
            "finished_ms",
            "status",
            "nix_version",
            "hostname",
        ];
        columns.extend(SESSION_NUMBERS);
        let mut types = vec![
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
        ];
        types.extend([Type::INT8; 9]);
        self.upsert("sessions", &columns, &types, rows.len(), |i| {
            let s = &rows[i];
            let mut v: Vec<&(dyn ToSql + Sync)> = vec![
                &ledger,
                &s.local_id,
                &machine,
                &s.rev,
                &s.kind,
                &s.command,
                &s.cwd,
                &s.started_ms,
                &s.finished_ms,
                &s.status,
                &s.nix_version,
                &s.hostname,
            ];
            v.extend(s.numbers.iter().map(|n| n as &(dyn ToSql + Sync)));
            v
        })
        .await
    }

    /// Pushes builds of `ledger`, as [`Hub::push_sessions`].
    pub async fn push_builds(&self, ledger: &str, machine: &str, rows: &[BuildRow]) -> Result<()> {
        let mut columns = vec![
            "ledger_id",
            "local_id",
            "machine",
            "rev",
            "drv_path",
            "name",
            "system",
            "session_local_id",
            "source",
            "status",
            "finished_ms",
            "timing_source",
            "builder",
            "log_tail",
            "outputs",
        ];
        columns.extend(&BUILD_NUMBERS[..10]);
        let mut types = vec![
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::JSONB,
        ];
        types.extend([Type::INT8; 10]);
        self.upsert("builds", &columns, &types, rows.len(), |i| {
            let b = &rows[i];
            let mut v: Vec<&(dyn ToSql + Sync)> = vec![
                &ledger,
                &b.local_id,
                &machine,
                &b.rev,
                &b.drv_path,
                &b.name,
                &b.system,
                &b.session_local_id,
                &b.source,
                &b.status,
                &b.finished_ms,
                &b.timing_source,
                &b.builder,
                &b.log_tail,
                &b.outputs,
            ];
            v.extend(b.numbers[..10].iter().map(|n| n as &(dyn ToSql + Sync)));
            v
        })
        .await
    }

    /// COPYs `count` rows (`row(i)` gives the values of row i) into a temporary table
    /// and upserts them into `nix_ledger.<table>` keyed by (ledger_id, local_id), in one
    /// transaction.
    async fn upsert<'r>(
        &self,
        table: &str,
        columns: &[&str],
        types: &[Type],
        count: usize,
        row: impl Fn(usize) -> Vec<&'r (dyn ToSql + Sync)>,
    ) -> Result<()> {
        let what = format!("pushing {table}");
        let list = columns.join(", ");
        let set = columns[2..]
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.run(&what, self.client.batch_execute("BEGIN")).await?;
        let tx = &self.client;
        self.run(
            &what,
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]),
        )
        .await?;
        self.run(
            &what,
            tx.batch_execute(&format!(
                "CREATE TEMP TABLE stage (LIKE nix_ledger.{table}) ON COMMIT DROP;
                 ALTER TABLE stage ALTER COLUMN seq DROP NOT NULL"
            )),
        )
        .await?;
        let sink = self
            .run(
                &what,
                tx.copy_in(&format!("COPY stage ({list}) FROM STDIN BINARY")),
            )
            .await?;
        let writer = BinaryCopyInWriter::new(sink, types);
        pin_mut!(writer);
        let copy = async {
            for i in 0..count {
                writer.as_mut().write(&row(i)).await?;
            }
            writer.finish().await
        };
        self.run(&what, copy).await?;
        self.run(
            &what,
            tx.execute(
                &format!(
                    "INSERT INTO nix_ledger.{table} ({list}, seq)
                     SELECT {list}, nextval('nix_ledger.seq') FROM stage ORDER BY local_id
                     ON CONFLICT (ledger_id, local_id) DO UPDATE SET {set},
                         seq = nextval('nix_ledger.seq')
                     WHERE nix_ledger.{table}.rev < excluded.rev"
                ),
                &[],
            ),
        )
        .await?;
        self.run(&what, tx.batch_execute("COMMIT")).await
    }

    /// COPYs out up to `limit` rows of `query` (which must select `seq` first), returning
    /// them with the highest seq.
    async fn pull<T>(
        &self,
        what: &str,
        query: String,
        types: &[Type],
        read: impl Fn(&tokio_postgres::binary_copy::BinaryCopyOutRow) -> T,
    ) -> Result<(Vec<T>, i64)> {
        let stream = self
            .run(
                what,
                self.client
                    .copy_out(&format!("COPY ({query}) TO STDOUT BINARY")),
            )
            .await?;
        let rows = BinaryCopyOutStream::new(stream, types);
        pin_mut!(rows);
        let collect = async {
            let mut out = Vec::new();
            let mut top = 0i64;
            while let Some(row) = rows.next().await {
                let row = row?;
                top = top.max(row.get::<i64>(0));
                out.push(read(&row));
            }
            Ok((out, top))
        };
        self.run(what, collect).await
    }

    /// Sessions of other ledgers than `me` after watermark `after`, up to `limit`.
    pub async fn pull_sessions(
        &self,
        me: &str,
        after: i64,
        limit: usize,
    ) -> Result<(Vec<Pulled<SessionRow>>, i64)> {
        let query = format!(
            "SELECT seq, ledger_id, machine, local_id, rev, kind, command, cwd, started_ms, finished_ms,
                    status, nix_version, hostname, {}
             FROM nix_ledger.sessions WHERE seq > {after} AND ledger_id <> {}
             ORDER BY seq LIMIT {limit}",
            SESSION_NUMBERS.join(", "),
            literal(me)
        );
        let mut types = vec![
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
        ];
        types.extend([Type::INT8; 9]);
        self.pull("pulling sessions", query, &types, |r| {
            let mut numbers = [None; 9];
            for (i, n) in numbers.iter_mut().enumerate() {
                *n = r.get(13 + i);
            }
            Pulled {
                ledger_id: r.get(1),
                machine: r.get(2),
                row: SessionRow {
                    local_id: r.get(3),
                    rev: r.get(4),
                    kind: r.get(5),
                    command: r.get(6),
                    cwd: r.get(7),
                    started_ms: r.get(8),
                    finished_ms: r.get(9),
                    status: r.get(10),
                    nix_version: r.get(11),
                    hostname: r.get(12),
                    numbers,
                },
            }
        })
        .await
    }

    /// Builds of other ledgers than `me` after watermark `after`, up to `limit`.
    pub async fn pull_builds(
        &self,
        me: &str,
        after: i64,
        limit: usize,
    ) -> Result<(Vec<Pulled<BuildRow>>, i64)> {
        let query = format!(
            "SELECT seq, ledger_id, machine, local_id, rev, drv_path, name, system, session_local_id,
                    source, status, finished_ms, timing_source, builder, log_tail, outputs, {}
             FROM nix_ledger.builds WHERE seq > {after} AND ledger_id <> {}
             ORDER BY seq LIMIT {limit}",
            BUILD_NUMBERS[..10].join(", "),
            literal(me)
        );
        let mut types = vec![
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::JSONB,
        ];
        types.extend([Type::INT8; 10]);
        self.pull("pulling builds", query, &types, |r| {
            let mut numbers = [None; 11];
            for (i, n) in numbers.iter_mut().take(10).enumerate() {
                *n = r.get(16 + i);
            }
            let session_local_id = r.get(8);
            numbers[10] = session_local_id;
            Pulled {
                ledger_id: r.get(1),
                machine: r.get(2),
                row: BuildRow {
                    local_id: r.get(3),
                    rev: r.get(4),
                    drv_path: r.get(5),
                    name: r.get(6),
                    system: r.get(7),
                    session_local_id,
                    source: r.get(9),
                    status: r.get(10),
                    finished_ms: r.get(11),
                    timing_source: r.get(12),
                    builder: r.get(13),
                    log_tail: r.get(14),
                    outputs: r.get::<Value>(15),
                    numbers,
                },
            }
        })
        .await
    }
}

/// `text` as an SQL string literal (COPY takes no parameters); ledger ids are hex.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

pub mod why;
