//! A throwaway PostgreSQL server for tests and benches (feature `testing`).
//!
//! `cargo test -p driver-engine` must work on a fresh machine with only the
//! PostgreSQL server package installed, so the tests start their own
//! cluster: `initdb` in a temporary directory, `pg_ctl start` on a free port
//! of 127.0.0.1 with the socket in that directory, password authentication
//! for TCP. The server refuses to run as root, so when the tests run as root
//! every server command runs as the `postgres` user through `runuser`.
//!
//! Cleanup does not depend on destructors running: each server has a small
//! watchdog shell process reading a pipe from this process. When the pipe
//! closes (the server value is dropped, or the test process exits or dies in
//! any way), the watchdog stops the server and removes the directory. That
//! is what makes one server shared by a whole test binary (a `static`, never
//! dropped) safe to leave behind.
//!
//! By default the server runs with `fsync=off` and `full_page_writes=off`:
//! a crash of the server process (what the tests simulate with `pg_ctl stop
//! -m immediate`) loses nothing, since the WAL is in the operating system's
//! cache, but a machine crash could. Figures measured against it are the
//! cost of the protocol and the server, not of flushing a disk. Set
//! `PG_TEST_DURABLE=1` (or use [`PgServer::start_with`]) for a server that
//! flushes every commit, to compare with a local-disk driver that does.
//!
//! When `DATABASE_URL` is set, [`fresh_database_url`] uses that server
//! instead and starts nothing.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;

use crate::{Error, Result};

mod proxy;
pub use proxy::FaultProxy;

/// Password of the `postgres` superuser in servers started here.
pub const PASSWORD: &str = "vfs-test-password";

/// A test-server failure without an error of its own to carry.
fn harness(message: impl Into<String>) -> Error {
    Error::TestServer {
        message: message.into(),
        source: None,
    }
}

/// A test-server failure while doing `what`, caused by `source`.
pub(crate) fn failed(
    what: impl Into<String>,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::TestServer {
        message: what.into(),
        source: Some(source.into()),
    }
}

/// A PostgreSQL cluster in a temporary directory, stopped and removed when
/// dropped (or when the process exits).
#[derive(Debug)]
pub struct PgServer {
    root: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    /// Run server commands through `runuser -u postgres` (we are root).
    as_postgres: bool,
    /// Flush commits to disk (`fsync=on`).
    durable: bool,
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
}

impl PgServer {
    /// Creates a cluster and starts it on a free port, waiting (with a
    /// deadline) until it accepts connections. Durable only when the
    /// environment sets `PG_TEST_DURABLE=1`.
    pub fn start() -> Result<Self> {
        Self::start_with(std::env::var("PG_TEST_DURABLE").is_ok_and(|v| v == "1"))
    }

    /// [`PgServer::start`], flushing every commit to disk when `durable`.
    pub fn start_with(durable: bool) -> Result<Self> {
        let bin = find_bin_dir()?;
        let as_postgres = effective_uid()? == 0;
        let dir = tempfile::Builder::new()
            .prefix("driver-engine-pg-")
            .tempdir()
            .map_err(|e| failed("creating a temporary directory", e))?;
        let root = dir.keep();
        let mut server = PgServer {
            data: root.join("data"),
            root,
            bin,
            port: 0,
            as_postgres,
            durable,
            watchdog: Mutex::new(None),
        };
        // From here on, Drop cleans up whatever was created.
        server.arm_watchdog()?;
        server.init()?;
        let mut last_error = None;
        for _ in 0..3 {
            server.port = free_port()?;
            match server.start_again() {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| harness("the server did not start")))
    }

    /// TCP port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of database `dbname` as the `postgres` superuser.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{dbname}",
            self.port
        )
    }

    /// Stops the server at once, like a crash (`pg_ctl stop -m immediate`):
    /// connections are cut and the next start runs crash recovery.
    pub fn stop_immediate(&self) -> Result<()> {
        self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "60"])
    }

    /// Starts the (stopped) server again on the same port, waiting until it
    /// accepts connections (`pg_ctl -w`, bounded by a 60 s deadline).
    pub fn start_again(&self) -> Result<()> {
        let flush = if self.durable { "on" } else { "off" };
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 \
             -c fsync={flush} -c full_page_writes={flush}",
            self.port,
            self.root.display()
        );
        let log = self.root.join("server.log");
        self.pg_ctl(&[
            "start",
            "-w",
            "-t",
            "60",
            "-l",
            &log.display().to_string(),
            "-o",
            &options,
        ])
    }

    fn init(&self) -> Result<()> {
        let pwfile = self.root.join("pwfile");
        std::fs::write(&pwfile, PASSWORD)
            .map_err(|e| failed(format!("writing {}", pwfile.display()), e))?;
        if self.as_postgres {
            let (uid, gid) = postgres_ids()?;
            for path in [&self.root, &pwfile] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .map_err(|e| failed(format!("chown {}", path.display()), e))?;
            }
        }
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| failed(format!("chmod {}", self.root.display()), e))?;
        self.run(
            "initdb",
            &[
                "-D",
                &self.data.display().to_string(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        )
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<()> {
        let mut full = vec!["-D", self.data.to_str().unwrap_or_default()];
        full.extend_from_slice(args);
        self.run("pg_ctl", &full)
    }

    /// Runs a server program (as `postgres` when we are root), failing with
    /// its output.
    fn run(&self, program: &str, args: &[&str]) -> Result<()> {
        let exe = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let output = command
            .args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| failed(format!("running {}", exe.display()), e))?;
        if output.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
        Err(harness(format!(
            "{program} {} failed ({}): {}{}\nserver log tail: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            log.lines().rev().take(10).collect::<Vec<_>>().join(" | ")
        )))
    }

    /// Starts the watchdog that stops the server and removes the directory
    /// once our end of its pipe closes.
    fn arm_watchdog(&self) -> Result<()> {
        let pg_ctl = shell_quote(&self.bin.join("pg_ctl"));
        let data = shell_quote(&self.data);
        let stop = if self.as_postgres {
            format!("runuser -u postgres -- {pg_ctl} -D {data} stop -m immediate -w")
        } else {
            format!("{pg_ctl} -D {data} stop -m immediate -w")
        };
        let script = format!(
            "cat >/dev/null; [ -f {data}/postmaster.pid ] && {stop} >/dev/null 2>&1; rm -rf {}",
            shell_quote(&self.root)
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| failed("starting the cleanup watchdog", e))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| harness("the watchdog has no stdin"))?;
        *self.watchdog.lock() = Some((child, stdin));
        Ok(())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some((mut child, mut stdin)) = self.watchdog.lock().take() {
            // Closing the pipe is the signal; wait so the directory is gone
            // when drop returns.
            let _ = stdin.flush();
            drop(stdin);
            let _ = child.wait();
        }
    }
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// `PG_BIN_DIR`, else the newest `/usr/lib/postgresql/*/bin` with `initdb`.
fn find_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            failed(
                "PostgreSQL server binaries not found in /usr/lib/postgresql; \
                 install the `postgresql` package or set PG_BIN_DIR or DATABASE_URL",
                e,
            )
        })?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        harness("no /usr/lib/postgresql/*/bin/initdb; install the `postgresql` package")
    })
}

fn effective_uid() -> Result<u32> {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(|e| failed("reading /proc/self", e))
}

/// Uid and gid of the `postgres` user, from /etc/passwd.
fn postgres_ids() -> Result<(u32, u32)> {
    let passwd =
        std::fs::read_to_string("/etc/passwd").map_err(|e| failed("reading /etc/passwd", e))?;
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next()? == "postgres").then_some(())?;
            let uid = fields.nth(1)?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            Some((uid, gid))
        })
        .ok_or_else(|| harness("no `postgres` user; install the `postgresql` package"))
}

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| failed("finding a free port", e))
}

/// The server shared by every test of this process, started on first use
/// and removed when the process exits.
pub fn shared_server() -> Result<&'static PgServer> {
    static SHARED: OnceLock<std::result::Result<PgServer, std::sync::Arc<Error>>> = OnceLock::new();
    SHARED
        .get_or_init(|| PgServer::start().map_err(std::sync::Arc::new))
        .as_ref()
        .map_err(|e| failed("the shared server did not start", std::sync::Arc::clone(e)))
}

/// URL of a new, empty database: on the server of `DATABASE_URL` when that
/// is set, else on [`shared_server`]. Each call gets its own database, so
/// tests sharing a server do not see each other's actors.
pub async fn fresh_database_url() -> Result<String> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "vfs_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let admin = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => shared_server()?.url("postgres"),
    };
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .map_err(|e| failed(format!("connecting to {admin}"), e))?;
    let task = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .map_err(|e| failed(format!("CREATE DATABASE {name}"), e))?;
    drop(client);
    let _ = task.await;
    with_database(&admin, &name)
}

/// `url` with its database name replaced by `dbname`.
fn with_database(url: &str, dbname: &str) -> Result<String> {
    let scheme_end = url
        .find("://")
        .ok_or_else(|| harness("DATABASE_URL must be a postgres:// URL"))?
        + 3;
    let rest = &url[scheme_end..];
    let query_at = rest.find('?').unwrap_or(rest.len());
    let path_at = rest[..query_at].find('/').unwrap_or(query_at);
    Ok(format!(
        "{}{}/{dbname}{}",
        &url[..scheme_end],
        &rest[..path_at],
        &rest[query_at..]
    ))
}
