//! What the binary's tests share: `tally` with a clean environment, ports and working
//! directories of their own.

#![allow(dead_code)] // Each test file uses its own part.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `tally` in `dir` on `database_url` and `port`, with none of the caller's Stripe,
/// tally or auth settings.
pub fn tally(dir: &Path, database_url: &str, port: u16, api_key: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
    cmd.current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("STRIPE_")
            || name.starts_with("TALLY_")
            || name.starts_with("AUTH_")
            || name == "DATABASE_URL"
            || name == "RUST_LOG"
        {
            cmd.env_remove(name);
        }
    }
    cmd.env("DATABASE_URL", database_url)
        .env("TALLY_BIND", format!("127.0.0.1:{port}"))
        .env("TALLY_API_KEY", api_key)
        .env("TALLY_LOG_FORMAT", "text");
    cmd
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A fresh directory under the system's temp folder, named for the test.
pub fn work_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let dir = std::env::temp_dir().join(format!("tally-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// SIGTERM, as an orchestrator stops a service.
pub fn terminate(pid: u32) {
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -TERM {pid}");
}
