//! What one client may hold (CONTRACT §5), in one place: time to send a request's
//! header and its body, body sizes, and how many connections may be open at once.

use std::time::Duration;

/// A request's header must arrive within this, counted from the moment the connection
/// is ready for a request: on a kept-alive connection that is also how long it may sit
/// idle (hyper starts this one timer when a connection goes idle).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A request's body and its answer must be done within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `serve` waits, on SIGTERM or SIGINT, for the requests it has.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The connection deadlines, as [`HEADER_TIMEOUT`], [`REQUEST_TIMEOUT`] and
/// [`SHUTDOWN_GRACE`] say (tests shorten them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub header: Duration,
    pub request: Duration,
    pub shutdown: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts { header: HEADER_TIMEOUT, request: REQUEST_TIMEOUT, shutdown: SHUTDOWN_GRACE }
    }
}

/// The largest body of a host-app or user request (they are a few hundred bytes).
pub const API_BODY_BYTES: usize = 64 * 1024;

/// The largest webhook body; Stripe's own events stay far below it.
pub const WEBHOOK_BODY_BYTES: usize = 1024 * 1024;

/// The most bytes of a request's header section, buffered while it is read.
pub const HEADER_BYTES: usize = 64 * 1024;

/// File descriptors kept out of the connection cap for the process itself: the
/// database pool, SQLite's files, calls to Stripe, the listener, logs.
pub const RESERVED_FDS: usize = 100;

/// The default `TALLY_MAX_CONNECTIONS`: 1,024, or the open-file limit if it is lower,
/// minus what the process needs.
pub fn default_max_connections() -> usize {
    open_file_limit().unwrap_or(1024).min(1024).saturating_sub(RESERVED_FDS).max(16)
}

/// The soft limit on open files (`ulimit -n`), where the system tells it.
pub fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_room_for_the_process() {
        let cap = default_max_connections();
        assert!(cap + RESERVED_FDS <= 1024, "{cap}");
        if let Some(limit) = open_file_limit() {
            assert!(cap + RESERVED_FDS <= limit.max(16 + RESERVED_FDS), "{cap} under a limit of {limit}");
        }
    }
}
