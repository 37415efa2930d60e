//! Starting tally: `tally serve` as a child process (for start-up time, RSS and CPU), or
//! in this process (for the smoke run, which has no built binary to start).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tally_server::{Application, Config};

use crate::workload::{API_KEY, SECRET};

/// A `tally serve` process this tool started.
pub struct Serve {
    pub child: Child,
    pub addr: String,
    /// From exec to the first 200 of /healthz.
    pub startup: Duration,
}

impl Serve {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// (VmRSS, VmHWM) in KiB.
    pub fn memory(&self) -> (u64, u64) {
        memory(self.pid())
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bin serve` on a free port against `database_url`, with its output (the
/// request log included) appended to `log`, and waits for /healthz.
pub fn spawn(bin: &Path, database_url: &str, log: &Path, rust_log: Option<&str>) -> anyhow::Result<Serve> {
    spawn_with(bin, database_url, log, &Options { rust_log, ..Options::default() })
}

/// How `tally serve` is started beyond its database.
#[derive(Default)]
pub struct Options<'a> {
    pub rust_log: Option<&'a str>,
    /// The soft RLIMIT_NOFILE of the process (its hard limit stays this tool's).
    pub nofile: Option<u64>,
    /// More environment, (name, value).
    pub env: &'a [(String, String)],
}

/// `spawn` with `options`.
pub fn spawn_with(bin: &Path, database_url: &str, log: &Path, options: &Options) -> anyhow::Result<Serve> {
    let addr = free_addr()?;
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    // A directory of its own, so no .env of the caller is read.
    let dir = log.parent().unwrap_or(Path::new("/tmp"));
    let mut command = Command::new(bin);
    command
        .arg("serve")
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .env("TALLY_API_KEY", API_KEY)
        .env("TALLY_BIND", &addr)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    if let Some(level) = options.rust_log {
        command.env("RUST_LOG", level);
    }
    command.envs(options.env.iter().map(|(k, v)| (k, v)));
    if let Some(soft) = options.nofile {
        let (_, hard) = nofile()?;
        anyhow::ensure!(soft <= hard, "RLIMIT_NOFILE {soft} is above the hard limit {hard}");
        let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
        // SAFETY: setrlimit is async-signal-safe, and `limit` is a plain value copied in.
        unsafe {
            command.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let start = Instant::now();
    let mut child = command.spawn().with_context(|| format!("cannot start {}", bin.display()))?;
    loop {
        if healthz(&addr) {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!("tally serve exited with {status} before answering /healthz; see {}", log.display());
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            bail!("tally serve did not answer /healthz within 30 s; see {}", log.display());
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok(Serve { child, addr, startup: start.elapsed() })
}

fn free_addr() -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}

/// Whether GET /healthz answers 200 now.
fn healthz(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).is_ok() && answer.starts_with(b"HTTP/1.1 200")
}

/// This process's (soft, hard) RLIMIT_NOFILE.
pub fn nofile() -> anyhow::Result<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit; returns the new limit.
pub fn raise_nofile() -> anyhow::Result<u64> {
    let (_, hard) = nofile()?;
    let limit = libc::rlimit { rlim_cur: hard, rlim_max: hard };
    // SAFETY: setrlimit reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
    }
    Ok(hard)
}

/// The "Max open files" soft limit of a process, from /proc.
pub fn max_open_files(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// (VmRSS, VmHWM) of a process, in KiB.
pub fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A tally running inside this process on port 0.
pub async fn in_process(database_url: &str) -> anyhow::Result<String> {
    let vars = [
        ("DATABASE_URL", database_url),
        ("STRIPE_WEBHOOK_SECRET", SECRET),
        ("TALLY_API_KEY", API_KEY),
        ("TALLY_BIND", "127.0.0.1:0"),
    ];
    let config = Config::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))?;
    let app = Application::build(config).await?;
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run());
    Ok(base)
}

/// `postgres://user@host:port/old?params` with the database renamed.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, params) = url.split_once('?').map_or((url, None), |(b, p)| (b, Some(p)));
    let head = base.rsplit_once('/').map_or(base, |(head, _)| head);
    match params {
        Some(p) => format!("{head}/{name}?{p}"),
        None => format!("{head}/{name}"),
    }
}

/// Drops and creates database `name` on the server of `url`; returns its URL.
pub async fn fresh_database(url: &str, name: &str) -> anyhow::Result<String> {
    let mut admin = PgConnection::connect(url).await.with_context(|| format!("cannot connect to {url}"))?;
    sqlx::raw_sql(AssertSqlSafe(format!("drop database if exists {name} with (force)"))).execute(&mut admin).await?;
    sqlx::raw_sql(AssertSqlSafe(format!("create database {name}"))).execute(&mut admin).await?;
    admin.close().await?;
    Ok(with_database(url, name))
}

pub async fn drop_database(url: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(url).await?;
    sqlx::raw_sql(AssertSqlSafe(format!("drop database if exists {name} with (force)"))).execute(&mut admin).await?;
    admin.close().await?;
    Ok(())
}

/// A scratch directory under the system's temp dir.
pub fn scratch(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(name);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
