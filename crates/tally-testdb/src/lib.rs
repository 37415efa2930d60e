//! A Postgres for tests, shared by the crates' test suites (a dev-dependency only), and
//! where the other peer they use, localstripe, runs ([`localstripe_url`]).
//!
//! Why: a Postgres test that returns early when there is no server reports `ok` for
//! something that never ran, and databases a run leaves behind pile up on the server.
//! So here:
//!
//! - [`server_url`] is `TEST_DATABASE_URL` when it is set (CI sets it). Otherwise this
//!   process starts a private cluster on first use, with the `initdb` and `pg_ctl` of
//!   the Postgres installed on the machine (`pg_config --bindir`, Debian's
//!   `/usr/lib/postgresql/*/bin`, or `PATH`), in a temporary directory, on a free port
//!   of 127.0.0.1, run as the `postgres` OS user when the tests run as root (initdb
//!   refuses root). Every test of the binary shares it. libtest has no teardown, so a
//!   watchdog process stops the cluster (`pg_ctl stop -m immediate`) and removes its
//!   directory once the test process is gone, however it ended (even SIGKILL or ^C).
//! - When there is neither a URL nor a Postgres to start, it panics: libtest cannot
//!   mark a test skipped at runtime, and a test that did not run must not say `ok`. The
//!   message says the test was skipped and why; `cargo test -- --skip postgres --skip
//!   shared_database` leaves such tests out honestly (libtest counts them as filtered
//!   out): every test that needs Postgres has `postgres` in its name, except the api
//!   suite's `shared_database::` ones.
//! - [`TestDatabase`] is a database of a test's own on that server, dropped (`with
//!   (force)`) when the value is dropped: at the end of the test, passed or failed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// The server the tests run on, as a URL to a database there that may create others.
/// Panics, saying the test is skipped and why, when there is no Postgres to run on.
pub fn server_url() -> &'static str {
    static SERVER: LazyLock<Result<String, String>> = LazyLock::new(|| match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Ok(url),
        _ => private_cluster(),
    });
    match &*SERVER {
        Ok(url) => url,
        Err(why) => panic!(
            "SKIPPED, not passed (no Postgres): {why}. Install PostgreSQL (initdb, pg_ctl) or set \
             TEST_DATABASE_URL to a server where the user may create databases; \
             `cargo test -- --skip postgres --skip shared_database` leaves the Postgres tests out."
        ),
    }
}

/// A database of a test's own, `tally_test_<pid>_<n>`, dropped with the value.
#[derive(Debug)]
pub struct TestDatabase {
    /// Its name on the server.
    pub name: String,
    /// A URL to it.
    pub url: String,
    server: String,
}

impl TestDatabase {
    /// A fresh, empty database on [`server_url`]. Blocking; fine inside a Tokio runtime
    /// too (the statement runs on a thread of its own).
    pub fn create() -> TestDatabase {
        let server = server_url().to_owned();
        let name = format!("tally_test_{}_{}", std::process::id(), unique());
        admin(&server, format!("create database {name}")).expect("create the test database");
        TestDatabase { url: replace_database(&server, &name), name, server }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Never panics: this runs while a failed test unwinds too.
        if let Err(e) = drop_database(&self.server, &self.name) {
            eprintln!("tally-testdb: could not drop {}: {e}", self.name);
        }
    }
}

/// Runs a tool that makes its own databases, with TEST_DATABASE_URL set to the server;
/// then drops those it named `<prefix>…_<its pid>_…`, which it leaves when it fails.
pub fn output_on_server(command: &mut Command, prefix: &str) -> Output {
    let server = server_url();
    let child = command.env("TEST_DATABASE_URL", server).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let child = child.expect("the tool starts");
    let pattern = format!("{}%\\_{}\\_%", prefix.replace('_', "\\_"), child.id());
    let output = child.wait_with_output().expect("the tool's output");
    let names = on_server(server, async |conn| {
        sqlx::query_scalar::<_, String>("select datname::text from pg_database where datname like $1")
            .bind(&pattern)
            .fetch_all(conn)
            .await
    });
    for name in names.unwrap_or_default() {
        if let Err(e) = drop_database(server, &name) {
            eprintln!("tally-testdb: could not drop {name}: {e}");
        }
    }
    output
}

/// `drop database ... with (force)`, which ends the connections still open to it; a
/// few tries, as a pool may reconnect in between.
fn drop_database(server: &str, name: &str) -> Result<(), String> {
    let mut result = Ok(());
    for _ in 0..3 {
        result = admin(server, format!("drop database if exists \"{name}\" with (force)"));
        if result.is_ok() {
            break;
        }
    }
    result
}

/// `postgres://user@host:port/old?params` with the database renamed.
pub fn replace_database(url: &str, name: &str) -> String {
    let (base, params) = url.split_once('?').map_or((url, None), |(b, p)| (b, Some(p)));
    let head = base.rsplit_once('/').map_or(base, |(head, _)| head);
    match params {
        Some(p) => format!("{head}/{name}?{p}"),
        None => format!("{head}/{name}"),
    }
}

/// Runs one statement on the server.
fn admin(server: &str, sql: String) -> Result<(), String> {
    on_server(server, async |conn| sqlx::raw_sql(AssertSqlSafe(sql)).execute(conn).await.map(drop))
}

/// Runs `query` over a connection of its own, on a thread and runtime of its own: so it
/// works in sync tests, inside a test's runtime, and in `Drop`.
fn on_server<T: Send>(
    server: &str,
    query: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error> + Send,
) -> Result<T, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime =
                    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
                runtime.block_on(async {
                    let mut conn = PgConnection::connect(server).await.map_err(|e| format!("{server}: {e}"))?;
                    let result = query(&mut conn).await.map_err(|e| e.to_string());
                    let _ = conn.close().await;
                    result
                })
            })
            .join()
            .unwrap_or_else(|_| Err("the admin thread panicked".to_owned()))
    })
}

fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos() as u64;
    NEXT.fetch_add(1, Ordering::Relaxed) * 1_000_000_000 + nanos
}

/// Starts this process's private cluster, fast rather than durable (nothing of it
/// outlives the process); returns a URL to its `postgres` database, or why it cannot.
fn private_cluster() -> Result<String, String> {
    let cluster = Cluster::start(FAST)?;
    let url = cluster.url("postgres");
    // Shared by every test of the process; the watchdog stops it when the process ends.
    std::mem::forget(cluster);
    Ok(url)
}

/// A directory for a new cluster, watched so that it goes when the process does; the
/// tools to run it and the user they run as.
fn new_home() -> Result<(PathBuf, Runner, PathBuf, PathBuf), String> {
    let bin = bindir().ok_or("TEST_DATABASE_URL is not set and no initdb/pg_ctl was found")?;
    let runner = Runner::for_this_user()?;
    let dir = std::env::temp_dir().join(format!("tally-testdb-{}-{}", std::process::id(), unique()));
    let data = dir.join("data");
    watch(&runner, &bin, &dir, &data)?;
    Ok((bin, runner, dir, data))
}

/// Settings for a cluster whose data may be lost: no fsync, commits acknowledged
/// before their WAL is written.
const FAST: &str = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off";

/// Settings for a cluster that is crashed on purpose: a commit it acknowledged
/// survives `pg_ctl stop -m immediate` (the OS keeps what was written; fsync would
/// matter only if the machine itself went down).
const DURABLE: &str = "-c fsync=off -c synchronous_commit=on";

/// A Postgres cluster of this process's own, in a temporary directory, on a free port
/// of 127.0.0.1, run as the `postgres` OS user when the tests run as root. It can be
/// crashed and started again on the same port, which [`server_url`]'s shared cluster
/// must never be. Stopped and removed when dropped, or by a watchdog once the process
/// is gone.
pub struct Cluster {
    bin: PathBuf,
    runner: Runner,
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    settings: &'static str,
}

impl Cluster {
    /// A durable cluster for a test to crash: see [`Cluster::crash`].
    pub fn durable() -> Result<Cluster, String> {
        Cluster::start(DURABLE)
    }

    fn start(settings: &'static str) -> Result<Cluster, String> {
        let (bin, runner, dir, data) = new_home()?;
        // initdb makes the directory itself, so it belongs to the user it runs as.
        runner.run(
            &bin.join("initdb"),
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "--auth=trust".as_ref(),
                "--username=postgres".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        Cluster::launch(bin, runner, dir, data, settings)
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`), running: what a failover
    /// promotes. Durable, like the clusters a test crashes.
    pub fn standby_of(primary: &Cluster) -> Result<Cluster, String> {
        let (bin, runner, dir, data) = new_home()?;
        let port = primary.port.to_string();
        runner.run(
            &bin.join("pg_basebackup"),
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-h".as_ref(),
                "127.0.0.1".as_ref(),
                "-p".as_ref(),
                port.as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-X".as_ref(),
                "stream".as_ref(),
                "-R".as_ref(),
            ],
        )?;
        Cluster::launch(bin, runner, dir, data, DURABLE)
    }

    /// Makes every commit wait until a standby has it (`synchronous_standby_names`), so
    /// that a failover loses nothing that was acknowledged.
    pub fn wait_for_standbys(&self) -> Result<(), String> {
        admin(&self.url("postgres"), "alter system set synchronous_standby_names = '*'".into())?;
        admin(&self.url("postgres"), "select pg_reload_conf()".into())
    }

    /// Promotes a standby to primary (`pg_ctl promote`), waiting until it accepts writes.
    pub fn promote(&self) -> Result<(), String> {
        self.pg_ctl(&["promote", "-w"])
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn launch(
        bin: PathBuf,
        runner: Runner,
        dir: PathBuf,
        data: PathBuf,
        settings: &'static str,
    ) -> Result<Cluster, String> {
        let mut last = String::new();
        for _ in 0..3 {
            let runner = Runner { prefix: runner.prefix.clone() };
            let (bin, dir, data) = (bin.clone(), dir.clone(), data.clone());
            let cluster = Cluster { bin, runner, dir, data, port: free_port()?, settings };
            match cluster.resume() {
                Ok(()) => return Ok(cluster),
                // Most likely the port was taken meanwhile; the log says.
                Err(e) => {
                    last = e;
                    std::mem::forget(cluster);
                }
            }
        }
        Err(format!("the private Postgres in {} did not start: {last}", dir.display()))
    }

    /// A URL to `database` on this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Kills the server as a crash would (`pg_ctl stop -m immediate`): no checkpoint,
    /// every connection cut; the next start recovers from the WAL.
    pub fn crash(&self) -> Result<(), String> {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"])
    }

    /// Starts the server again, on the same port, and waits until it accepts connections.
    pub fn resume(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections=200 {}",
            self.port,
            self.data.display(),
            self.settings
        );
        let log = self.data.join("postmaster.log");
        let log_arg = log.display().to_string();
        self.pg_ctl(&["start", "-w", "-t", "60", "-l", &log_arg, "-o", &options])
            .map_err(|e| format!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default()))
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let mut all: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        all.extend(["-D".as_ref(), self.data.as_os_str()]);
        self.runner.run(&self.bin.join("pg_ctl"), &all)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.crash();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where initdb and pg_ctl are: `pg_config --bindir`, the newest of Debian's
/// `/usr/lib/postgresql/*/bin`, or a directory on PATH.
fn bindir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let pg_config = Command::new("pg_config").arg("--bindir").output().ok().filter(|o| o.status.success());
    let from_pg_config = pg_config.map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
        .collect();
    debian.sort();
    let on_path = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    from_pg_config.into_iter().chain(debian.into_iter().rev().map(|(_, dir)| dir)).chain(on_path).find(|d| has_tools(d))
}

/// How the cluster's commands run: as this user, or (as root) as `postgres`.
struct Runner {
    prefix: Vec<String>,
}

impl Runner {
    fn for_this_user() -> Result<Runner, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(Runner { prefix: Vec::new() });
        }
        let has_postgres_user = Command::new("id").arg("postgres").stdout(Stdio::null()).stderr(Stdio::null()).status();
        match has_postgres_user {
            Ok(status) if status.success() => {
                Ok(Runner { prefix: ["runuser", "-u", "postgres", "--"].map(str::to_owned).to_vec() })
            }
            _ => Err("the tests run as root (initdb refuses root) and there is no postgres user to run it as".into()),
        }
    }

    fn command(&self, program: &Path) -> Command {
        match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    fn run(&self, program: &Path, args: &[&std::ffi::OsStr]) -> Result<(), String> {
        let output = self.command(program).args(args).stdin(Stdio::null()).output();
        let output = output.map_err(|e| format!("{}: {e}", program.display()))?;
        match output.status.success() {
            true => Ok(()),
            false => Err(format!(
                "{} failed ({}): {}{}",
                program.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )),
        }
    }
}

/// A watchdog, in a process group of its own (so ^C does not reach it): once this
/// process is gone it stops the cluster and removes its directory.
fn watch(runner: &Runner, bin: &Path, dir: &Path, data: &Path) -> Result<(), String> {
    let script = r#"parent=$1; dir=$2; shift 2
        while kill -0 "$parent" 2>/dev/null; do sleep 0.2; done
        "$@"; rm -rf "$dir""#;
    let stop = runner.command(&bin.join("pg_ctl"));
    let mut command = Command::new("sh");
    command.arg("-c").arg(script).arg("tally-testdb-watchdog").arg(std::process::id().to_string()).arg(dir);
    command.arg(stop.get_program()).args(stop.get_args()).args(["stop", "-m", "immediate", "-w", "-D"]).arg(data);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    command.spawn().map(drop).map_err(|e| format!("the watchdog did not start: {e}"))
}

/// A port of 127.0.0.1 nobody listens on just now.
fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// Where localstripe (PyPI), the fake Stripe by others that CI starts, answers:
/// `LOCALSTRIPE_URL`. Without it the calling test is skipped (it says so and returns),
/// except under CI, which requires localstripe: there it panics.
pub fn localstripe_url(test: &str) -> Option<String> {
    match std::env::var("LOCALSTRIPE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!("LOCALSTRIPE_URL is not set, but CI requires localstripe"),
        _ => {
            eprintln!("LOCALSTRIPE_URL is not set: skipping {test}");
            None
        }
    }
}
