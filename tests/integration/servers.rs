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
