//! Where the hub is and how to log in, by libpq's conventions (which the `postgres`
//! crates do not follow): a `postgres://` URL or `key=value` string, the `PG*` variables
//! for what it leaves out, the password from the URL, `PGPASSWORD` or the password file
//! (`PGPASSFILE`, else `~/.pgpass`, ignored unless private: libpq's 0600 rule), and
//! `sslmode` with all six values. The password is never part of what is shown: errors and
//! output name the hub by [`ConnInfo::display`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Error, Result};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// Tried as `prefer`: TLS when the server offers it (libpq tries plain first).
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Result<SslMode> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(bad(format!("sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"))),
        })
    }
}

/// Everything needed to connect, resolved.
#[derive(Clone)]
pub struct ConnInfo {
    /// A host name, an IP address, or a Unix socket directory (starting with `/`).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    pub password: Option<String>,
    pub sslmode: SslMode,
    /// The root certificate to verify the server by (`sslrootcert`, `PGSSLROOTCERT`,
    /// `~/.postgresql/root.crt`), when one is named or exists.
    pub sslrootcert: Option<PathBuf>,
    /// Whether the root certificate was named (then `require` verifies as `verify-ca`).
    pub sslrootcert_named: bool,
    pub connect_timeout: Duration,
    pub application_name: String,
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

/// Without a `connect_timeout`, a connection attempt is given this long: libpq waits
/// forever, which a maintenance job must not.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn bad(message: String) -> Error {
    Error::Usage(format!("hub connection string: {message}"))
}

/// The parameters understood; libpq refuses unknown ones, and so does this.
const KNOWN: &[&str] = &[
    "host",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "sslmode",
    "sslrootcert",
    "connect_timeout",
    "application_name",
];

impl ConnInfo {
    /// Resolves `url` (or, when `None`, the `PG*` variables alone) with `env` as the
    /// environment and `home` as the home directory. The password: the URL's, else the
    /// first line of `password_file`, else `PGPASSWORD`, else the password file.
    pub fn resolve(
        url: Option<&str>,
        password_file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        home: Option<&Path>,
    ) -> Result<ConnInfo> {
        let given = match url {
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                parse_url(u)?
            }
            Some(u) => parse_keywords(u)?,
            None => BTreeMap::new(),
        };
        for key in given.keys() {
            if !KNOWN.contains(&key.as_str()) {
                return Err(bad(format!("unknown parameter {key:?}")));
            }
        }
        let pick = |key: &str, var: &str| -> Option<String> {
            given
                .get(key)
                .cloned()
                .or_else(|| env(var))
                .filter(|v| !v.is_empty())
        };
        let host = pick("host", "PGHOST").unwrap_or_else(|| "/var/run/postgresql".into());
        let port = match pick("port", "PGPORT") {
            Some(p) => p
                .parse()
                .map_err(|_| bad(format!("port {p:?} is not a number")))?,
            None => 5432,
        };
        let user = pick("user", "PGUSER")
            .or_else(|| env("USER"))
            .or_else(|| env("LOGNAME"))
            .unwrap_or_else(|| "postgres".into());
        let dbname = pick("dbname", "PGDATABASE").unwrap_or_else(|| user.clone());
        let sslmode = SslMode::parse(&pick("sslmode", "PGSSLMODE").unwrap_or("prefer".into()))?;
        let named_root = pick("sslrootcert", "PGSSLROOTCERT");
        if named_root.as_deref() == Some("system") {
            return Err(bad(
                "sslrootcert=system is not supported: name a file".into()
            ));
        }
        let sslrootcert = named_root.clone().map(PathBuf::from).or_else(|| {
            home.map(|h| h.join(".postgresql/root.crt"))
                .filter(|p| p.exists())
        });
        let connect_timeout = match pick("connect_timeout", "PGCONNECT_TIMEOUT") {
            Some(t) => {
                let secs: u64 = t.parse().map_err(|_| {
                    bad(format!("connect_timeout {t:?} is not a number of seconds"))
                })?;
                // libpq: 0 means wait forever; a bounded wait is kept, and at least 2 s.
                if secs == 0 {
                    DEFAULT_CONNECT_TIMEOUT
                } else {
                    Duration::from_secs(secs.max(2))
                }
            }
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        let mut info = ConnInfo {
            host,
            port,
            user,
            dbname,
            password: None,
            sslmode,
            sslrootcert,
            sslrootcert_named: named_root.is_some(),
            connect_timeout,
            application_name: pick("application_name", "PGAPPNAME")
                .unwrap_or_else(|| "nix-ledger".into()),
        };
        let from_file = match password_file {
            Some(file) => {
                let text = std::fs::read_to_string(file).map_err(|source| Error::Read {
                    path: file.to_path_buf(),
                    source,
                })?;
                Some(text.lines().next().unwrap_or("").to_string())
            }
            None => None,
        };
        info.password = match given
            .get("password")
            .cloned()
            .or(from_file)
            .or_else(|| env("PGPASSWORD"))
        {
            Some(p) => Some(p),
            None => {
                let file = pick("passfile", "PGPASSFILE")
                    .map(PathBuf::from)
                    .or_else(|| home.map(|h| h.join(".pgpass")));
                file.and_then(|f| passfile_lookup(&f, &info))
            }
        };
        Ok(info)
    }

    /// The hub as shown to people: `user@host:port/dbname`, never the password.
    pub fn display(&self) -> String {
        format!(
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, self.dbname
        )
    }

    /// Whether the host is a Unix socket directory.
    pub fn is_socket(&self) -> bool {
        self.host.starts_with('/')
    }
}

/// `%XX` decoding; `+` stays a plus, as in libpq.
fn percent_decode(text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad("invalid percent-encoding".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad("percent-encoding is not UTF-8".into()))
}

/// `postgres[ql]://[user[:password]@][host][:port][/dbname][?key=value&…]`.
fn parse_url(url: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if let Some(userinfo) = userinfo {
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        if !user.is_empty() {
            out.insert("user".into(), percent_decode(user)?);
        }
        if let Some(p) = password {
            out.insert("password".into(), percent_decode(p)?);
        }
    }
    if hostport.contains(',') {
        return Err(bad("more than one host is not supported".into()));
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unclosed [ in the host".into()))?;
        (h.to_string(), after.strip_prefix(':').map(str::to_string))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (percent_decode(h)?, Some(p.to_string())),
            None => (percent_decode(hostport)?, None),
        }
    };
    if !host.is_empty() {
        out.insert("host".into(), host);
    }
    if let Some(p) = port.filter(|p| !p.is_empty()) {
        out.insert("port".into(), p);
    }
    if !path.is_empty() {
        out.insert("dbname".into(), percent_decode(path)?);
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| bad(format!("query parameter {pair:?} has no value")))?;
        out.insert(percent_decode(k)?, percent_decode(v)?);
    }
    Ok(out)
}

/// `key=value key='quoted \' value'`.
fn parse_keywords(text: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(_) = chars.peek() else { break };
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_string();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(bad("expected key=value pairs or a postgres:// URL".into()));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(bad(format!("unterminated quote in {key:?}"))),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.insert(key, value);
    }
    Ok(out)
}

/// The password for `info` in a libpq password file: `host:port:db:user:password`
/// lines, `*` matching anything, `\:` and `\\` escaped. A file group or others may read
/// is ignored with a warning, as libpq does.
fn passfile_lookup(file: &Path, info: &ConnInfo) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        eprintln!(
            "nix-ledger: warning: password file {} has group or world access; permissions should be u=rw (0600) or less",
            file.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    // For the default socket directories libpq looks the host up as `localhost`.
    let hosts: Vec<&str> = if info.is_socket() {
        vec![info.host.as_str(), "localhost"]
    } else {
        vec![info.host.as_str()]
    };
    let port = info.port.to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_passfile_line(line);
        let [h, p, d, u, password] = fields.as_slice() else {
            continue;
        };
        let matches = |field: &str, value: &str| field == "*" || field == value;
        if hosts.iter().any(|host| matches(h, host))
            && matches(p, &port)
            && matches(d, &info.dbname)
            && matches(u, &info.user)
        {
            return Some(password.clone());
        }
    }
    None
}

fn split_passfile_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields
                .last_mut()
                .into_iter()
                .for_each(|f| f.extend(chars.next())),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().into_iter().for_each(|f| f.push(c)),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn a_url_gives_every_part_and_the_password_is_never_shown() {
        let info = ConnInfo::resolve(
            Some("postgres://ledger:s%40cret@db.example:6543/fleet?sslmode=require&connect_timeout=3"),
            None,
            &no_env,
            None,
        )
        .unwrap();
        assert_eq!(
            (
                info.host.as_str(),
                info.port,
                info.user.as_str(),
                info.dbname.as_str()
            ),
            ("db.example", 6543, "ledger", "fleet")
        );
        assert_eq!(info.password.as_deref(), Some("s@cret"));
        assert_eq!(info.sslmode, SslMode::Require);
        assert_eq!(info.connect_timeout, Duration::from_secs(3));
        assert!(!format!("{info:?} {}", info.display()).contains("s@cret"));
        // A socket directory as the host, percent-encoded.
        let info = ConnInfo::resolve(
            Some("postgresql://u@%2Ftmp%2Fpg:5433/d"),
            None,
            &no_env,
            None,
        )
        .unwrap();
        assert!(info.is_socket() && info.host == "/tmp/pg" && info.port == 5433);
        assert!(
            ConnInfo::resolve(Some("postgres://h/d?sslcompression=1"), None, &no_env, None)
                .is_err()
        );
        assert!(
            ConnInfo::resolve(Some("postgres://h/d?sslmode=maybe"), None, &no_env, None).is_err()
        );
    }

    #[test]
    fn what_the_url_leaves_out_comes_from_the_pg_variables() {
        let env = |k: &str| match k {
            "PGHOST" => Some("10.1.2.3".to_string()),
            "PGPORT" => Some("7000".into()),
            "PGUSER" => Some("ci".into()),
            "PGPASSWORD" => Some("pw".into()),
            "PGSSLMODE" => Some("verify-full".into()),
            _ => None,
        };
        let info = ConnInfo::resolve(Some("dbname=team host='db 1'"), None, &env, None).unwrap();
        assert_eq!(
            (
                info.host.as_str(),
                info.port,
                info.user.as_str(),
                info.dbname.as_str()
            ),
            ("db 1", 7000, "ci", "team")
        );
        assert_eq!(info.password.as_deref(), Some("pw"));
        assert_eq!(info.sslmode, SslMode::VerifyFull);
        let info = ConnInfo::resolve(None, None, &env, None).unwrap();
        assert_eq!(
            (info.host.as_str(), info.dbname.as_str()),
            ("10.1.2.3", "ci")
        );
    }

    #[test]
    fn the_password_file_is_read_only_when_private() {
        let home = tempfile::tempdir().unwrap();
        let file = home.path().join(".pgpass");
        std::fs::write(
            &file,
            "# comment\nother:*:*:*:nope\ndb\\:1:5432:*:ledger:pa\\:ss\nlocalhost:5432:ledger:ledger:sock\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let resolve = |url: &str| {
            ConnInfo::resolve(Some(url), None, &no_env, Some(home.path()))
                .unwrap()
                .password
        };
        assert_eq!(resolve("host=db:1 user=ledger").as_deref(), Some("pa:ss"));
        assert_eq!(
            resolve("host=/var/run/postgresql user=ledger").as_deref(),
            Some("sock")
        );
        assert_eq!(resolve("host=elsewhere user=ledger"), None);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(resolve("host=db:1 user=ledger"), None, "libpq's 0600 rule");
        // The order: the URL's, the --password-file's, PGPASSWORD, the password file.
        let secret = home.path().join("secret");
        std::fs::write(&secret, "from-file\nignored\n").unwrap();
        let env = |k: &str| (k == "PGPASSWORD").then(|| "from-env".to_string());
        let pw = |url: &str, file: Option<&Path>| {
            ConnInfo::resolve(Some(url), file, &env, Some(home.path()))
                .unwrap()
                .password
        };
        assert_eq!(
            pw("postgres://u:from-url@h/d", Some(&secret)).as_deref(),
            Some("from-url")
        );
        assert_eq!(
            pw("postgres://u@h/d", Some(&secret)).as_deref(),
            Some("from-file")
        );
        assert_eq!(pw("postgres://u@h/d", None).as_deref(), Some("from-env"));
    }
}
