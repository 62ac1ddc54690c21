//! Throw-away servers the tests start and stop themselves: a loopback remote builder
//! (a private sshd on 127.0.0.1 and a chroot store) and a PostgreSQL cluster (initdb and
//! pg_ctl in a temporary directory). Nothing of the host's own is touched: no ~/.ssh, no
//! system sshd or postgres, no /nix/var/nix state shared with a test's remote daemon.
//! Each is stopped and its directory removed when dropped, also when a test panics.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on now (bound and released; a tiny race is accepted).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `cmd`, which must succeed.
fn must(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A remote builder on this machine: sshd on 127.0.0.1 (root logs in with a key of its
/// own) and, as its store, a chroot store in the builder's directory served by a
/// nix-daemon that builds as root (`build-users-group =`: with build users, a Nix with
/// its own state directory picks uids other builds on this machine use, and kills their
/// processes) and never asks a binary cache (`substituters =`: ssh-ng forwards no
/// settings). Nix reaches it through `NIX_SSHOPTS=-F <dir>/ssh_config`.
pub struct LoopbackBuilder {
    pub dir: tempfile::TempDir,
    sshd: Option<Child>,
    alias: String,
}

impl LoopbackBuilder {
    /// Starts one. Paths stay short: ssh's control socket path must fit in 108 bytes and
    /// NIX_SSHOPTS is split on spaces.
    pub fn start() -> LoopbackBuilder {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "no /usr/sbin/sshd: install openssh-server (.ci/run does)"
        );
        let dir = tempfile::Builder::new()
            .prefix("nlb-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let port = free_port();
        for key in ["host_key", "client_key"] {
            must(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(d.join(key))
                    .stdin(Stdio::null()),
            );
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        let p = d.display();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {p}/host_key\nPidFile {p}/sshd.pid\n\
                 AuthorizedKeysFile {p}/authorized_keys\nPermitRootLogin prohibit-password\n\
                 PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 UsePAM no\nStrictModes no\nUseDNS no\nPrintMotd no\nPrintLastLog no\n\
                 MaxStartups 100:30:200\nMaxSessions 50\n\
                 # bash skips ~/.bashrc when nested: root's may be slow or noisy.\nSetEnv SHLVL=1\n"
            ),
        )
        .unwrap();
        let alias = "nlbuilder".to_string();
        std::fs::write(
            d.join("ssh_config"),
            format!(
                "Host {alias}\n  HostName 127.0.0.1\n  Port {port}\n  User root\n  IdentityFile {p}/client_key\n\
                 \x20 IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n\
                 \x20 GlobalKnownHostsFile /dev/null\n  BatchMode yes\n  LogLevel ERROR\n  ConnectTimeout 5\n\
                 \x20 ControlMaster auto\n  ControlPath {p}/cm-%C\n  ControlPersist 120\n"
            ),
        )
        .unwrap();
        let rdaemon = d.join("rdaemon");
        std::fs::write(
            &rdaemon,
            "#!/bin/sh\nexport NIX_CONFIG=\"extra-sandbox-paths = /bin /usr /lib /lib64 /etc/alternatives\n\
             substituters =\nbuild-users-group =\"\nexec nix-daemon \"$@\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&rdaemon, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(d.join("rstore")).unwrap();
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();

        use std::os::unix::process::CommandExt;
        let child = Command::new(sshd)
            .args(["-D", "-f"])
            .arg(d.join("sshd_config"))
            .arg("-E")
            .arg(d.join("sshd.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut builder = LoopbackBuilder {
            dir,
            sshd: Some(child),
            alias,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !builder.ssh(&["true"]).status.success() {
            let log = std::fs::read_to_string(builder.dir.path().join("sshd.log"));
            assert!(Instant::now() < deadline, "sshd did not come up: {log:?}");
            if let Some(Ok(Some(status))) = builder.sshd.as_mut().map(Child::try_wait) {
                panic!("sshd exited with {status}: {log:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        builder
    }

    /// `ssh -F <config> <alias> ARGS`.
    pub fn ssh(&self, args: &[&str]) -> std::process::Output {
        Command::new("ssh")
            .arg("-F")
            .arg(self.dir.path().join("ssh_config"))
            .arg(&self.alias)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// The value of `NIX_SSHOPTS` for Nix to reach it.
    pub fn sshopts(&self) -> String {
        format!("-F {}", self.dir.path().join("ssh_config").display())
    }

    /// The store URI Nix names the machine by.
    pub fn uri(&self) -> String {
        let d = self.dir.path().display();
        format!(
            "ssh-ng://{}?remote-store=local?root={d}/rstore&remote-program={d}/rdaemon",
            self.alias
        )
    }

    /// A `builders` line offering it `slots` jobs for `system`.
    pub fn builders(&self, system: &str, slots: u32) -> String {
        format!("{} {system} - {slots}", self.uri())
    }

    /// The builder's own log of `drv`: its build's span on the builder (the log file's
    /// birth and last modification), if it built it.
    pub fn build_span_ms(&self, drv: &str) -> Option<i64> {
        let base = drv.rsplit('/').next()?;
        let log: PathBuf = self
            .dir
            .path()
            .join("rstore/nix/var/log/nix/drvs")
            .join(&base[..2])
            .join(format!("{}.bz2", &base[2..]));
        let out = Command::new("stat")
            .args(["-c", "%.9W %.9Y"])
            .arg(&log)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut parts = text.split_whitespace().map(|v| v.parse::<f64>().ok());
        let (birth, mtime) = (parts.next()??, parts.next()??);
        (out.status.success() && birth > 0.0).then_some(((mtime - birth) * 1000.0) as i64)
    }
}

impl Drop for LoopbackBuilder {
    fn drop(&mut self) {
        // The connection-sharing master first, then the listener (ours: we spawned it).
        let _ = Command::new("ssh")
            .arg("-F")
            .arg(self.dir.path().join("ssh_config"))
            .args(["-O", "exit", &self.alias])
            .stderr(Stdio::null())
            .status();
        if let Some(mut child) = self.sshd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The chroot store's paths are read-only: make them removable.
        let _ = Command::new("chmod")
            .args(["-R", "u+w"])
            .arg(self.dir.path())
            .status();
    }
}

/// A PostgreSQL cluster of its own: Debian's binaries (`/usr/lib/postgresql/*/bin`),
/// initdb'd into a temporary directory, listening on 127.0.0.1 and a socket in that
/// directory, password authentication (scram) for everything, with a role and a
/// database `ledger`. The server refuses to run as root: as root it runs as `postgres`
/// (the package's user), else as nobody.
pub struct TestPostgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub password: String,
    bin: PathBuf,
    user: Option<String>,
    running: bool,
}

impl TestPostgres {
    pub fn start() -> TestPostgres {
        TestPostgres::start_with(false)
    }

    /// As [`TestPostgres::start`], also accepting TLS with a self-signed certificate for
    /// 127.0.0.1, whose copy is [`TestPostgres::root_cert`] (made with the `openssl` tool).
    pub fn start_with_tls() -> TestPostgres {
        TestPostgres::start_with(true)
    }

    /// The server's log (connections are logged, with their TLS state).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The server's certificate, to verify it by.
    pub fn root_cert(&self) -> PathBuf {
        self.dir.path().join("root.crt")
    }

    fn start_with(tls: bool) -> TestPostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max_by_key(|b| {
                b.parent()
                    .and_then(|v| v.file_name())
                    .and_then(|v| v.to_str())
                    .and_then(|v| v.parse::<u32>().ok())
                    .unwrap_or(0)
            })
            .expect("no /usr/lib/postgresql/*/bin/initdb: install postgresql (.ci/run does)");
        let dir = tempfile::Builder::new()
            .prefix("nlpg-")
            .tempdir_in("/tmp")
            .unwrap();
        let user = is_root().then(|| {
            let has_postgres = Command::new("id")
                .args(["-u", "postgres"])
                .output()
                .is_ok_and(|o| o.status.success());
            if has_postgres { "postgres" } else { "nobody" }.to_string()
        });
        use std::os::unix::fs::PermissionsExt;
        if let Some(u) = &user {
            must(Command::new("chown").arg(u).arg(dir.path()));
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let mut pg = TestPostgres {
            port: free_port(),
            password: format!("pw{nanos:x}"),
            bin,
            user,
            running: false,
            dir,
        };
        let d = pg.dir.path().to_path_buf();
        let pwfile = d.join("superpw");
        std::fs::write(&pwfile, "super\n").unwrap();
        if let Some(u) = &pg.user {
            must(Command::new("chown").arg(u).arg(&pwfile));
        }
        let initdb = pg
            .as_server("initdb")
            .arg("-D")
            .arg(d.join("data"))
            .args([
                "-U",
                "nlsuper",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap();
        assert!(
            initdb.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(d.join("data/postgresql.conf"))
            .unwrap();
        use std::io::Write;
        writeln!(
            conf,
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 40\n\
             shared_buffers = 64MB\nmax_wal_size = 1GB\nlog_connections = on",
            pg.port,
            d.display()
        )
        .unwrap();
        if tls {
            // A CA of its own and a server certificate for 127.0.0.1 signed by it (rustls,
            // unlike OpenSSL, takes no CA certificate as a server's).
            let data = d.join("data");
            let ca = |f: &str| d.join(f);
            must(
                Command::new("openssl")
                    .args([
                        "req",
                        "-new",
                        "-x509",
                        "-days",
                        "2",
                        "-nodes",
                        "-subj",
                        "/CN=nix-ledger test CA",
                    ])
                    .arg("-keyout")
                    .arg(ca("root.key"))
                    .arg("-out")
                    .arg(ca("root.crt")),
            );
            must(
                Command::new("openssl")
                    .args(["req", "-new", "-nodes", "-subj", "/CN=127.0.0.1"])
                    .arg("-keyout")
                    .arg(data.join("server.key"))
                    .arg("-out")
                    .arg(ca("server.csr")),
            );
            std::fs::write(
                ca("ext.cnf"),
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
            )
            .unwrap();
            must(
                Command::new("openssl")
                    .args(["x509", "-req", "-days", "2", "-in"])
                    .arg(ca("server.csr"))
                    .arg("-CA")
                    .arg(ca("root.crt"))
                    .arg("-CAkey")
                    .arg(ca("root.key"))
                    .args(["-CAcreateserial", "-extfile"])
                    .arg(ca("ext.cnf"))
                    .arg("-out")
                    .arg(data.join("server.crt")),
            );
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            if let Some(u) = &pg.user {
                must(
                    Command::new("chown")
                        .arg(u)
                        .arg(data.join("server.key"))
                        .arg(data.join("server.crt")),
                );
            }
            writeln!(
                conf,
                "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'"
            )
            .unwrap();
        }
        drop(conf);
        pg.pg_ctl_start();
        pg.psql_super(
            "postgres",
            &format!("CREATE ROLE ledger LOGIN PASSWORD '{}'", pg.password),
        );
        pg.psql_super("postgres", "CREATE DATABASE ledger OWNER ledger");
        pg
    }

    /// A command of the server's binaries, run as the server's user, in its directory.
    fn as_server(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        let mut cmd = match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        cmd
    }

    fn pg_ctl_start(&mut self) {
        let out = self
            .as_server("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "30", "start"])
            .output()
            .unwrap();
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        assert!(out.status.success(), "pg_ctl start: {log}");
        self.running = true;
    }

    /// Stops the server (it can be started again with [`TestPostgres::restart`]).
    pub fn stop(&mut self) {
        if self.running {
            let _ = self
                .as_server("pg_ctl")
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-m", "immediate", "-w", "-t", "30", "stop"])
                .output();
            self.running = false;
        }
    }

    pub fn restart(&mut self) {
        self.pg_ctl_start();
    }

    /// Runs SQL as the superuser over the socket, in database `db`; its rows, unaligned.
    pub fn psql_super(&self, db: &str, sql: &str) -> String {
        self.try_psql_super(db, sql)
            .unwrap_or_else(|e| panic!("psql {sql}: {e}"))
    }

    /// As [`TestPostgres::psql_super`], the error as a value.
    pub fn try_psql_super(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "nlsuper",
                "-d",
                db,
                "-c",
                sql,
            ])
            .env("PGPASSWORD", "super")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        match out.status.success() {
            true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    }

    /// The hub's URL over TCP, without the password (libpq's default `sslmode=prefer`).
    pub fn url(&self) -> String {
        format!("postgres://ledger@127.0.0.1:{}/ledger", self.port)
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}
