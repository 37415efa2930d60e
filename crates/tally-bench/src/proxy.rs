//! A TCP relay in front of Postgres that counts the client's round trips: each simple
//! `Query` (sqlx sends BEGIN and COMMIT so) and each `Sync` (the end of an
//! extended-protocol exchange) waits for the server once. A `Sync` with nothing before
//! it is a bare ping (sqlx's pool pings a connection when it is checked out and again
//! when it is returned). Each `Parse` is a statement prepared. Used with `sslmode=disable`, so the messages can be read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
pub struct Counts {
    /// Simple queries.
    pub queries: AtomicU64,
    /// Syncs that end a statement's Parse/Bind/Execute.
    pub statements: AtomicU64,
    /// Syncs alone: pings.
    pub pings: AtomicU64,
    /// Parse messages: statements prepared (sqlx prepares a statement the first time a
    /// connection meets its text, and again once its cache has let it go).
    pub parses: AtomicU64,
}

/// A reading of the counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    pub queries: u64,
    pub statements: u64,
    pub pings: u64,
    pub parses: u64,
}

impl Counts {
    pub fn read(&self) -> Reading {
        Reading {
            queries: self.queries.load(Ordering::Relaxed),
            statements: self.statements.load(Ordering::Relaxed),
            pings: self.pings.load(Ordering::Relaxed),
            parses: self.parses.load(Ordering::Relaxed),
        }
    }
}

impl Reading {
    pub fn since(&self, before: &Reading) -> Reading {
        Reading {
            queries: self.queries - before.queries,
            statements: self.statements - before.statements,
            pings: self.pings - before.pings,
            parses: self.parses - before.parses,
        }
    }

    pub fn round_trips(&self) -> u64 {
        self.queries + self.statements + self.pings
    }
}

/// Listens on a free local port and relays to `upstream`; returns that port.
pub async fn start(upstream: SocketAddr) -> anyhow::Result<(u16, Arc<Counts>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let counts = Arc::new(Counts::default());
    let shared = counts.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let counts = shared.clone();
            tokio::spawn(async move {
                if let Ok(server) = TcpStream::connect(upstream).await {
                    let _ = relay(client, server, counts).await;
                }
            });
        }
    });
    Ok((port, counts))
}

async fn relay(client: TcpStream, server: TcpStream, counts: Arc<Counts>) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let down = tokio::spawn(async move { tokio::io::copy(&mut server_read, &mut client_write).await });
    let mut pending: Vec<u8> = Vec::new();
    let mut started = false;
    let mut since_sync = 0u32;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = client_read.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        server_write.write_all(&chunk[..n]).await?;
        pending.extend_from_slice(&chunk[..n]);
        // Count every complete message in what has arrived.
        let mut at = 0;
        loop {
            if !started {
                // Untyped: SSLRequest / GSSENCRequest, then the StartupMessage.
                let Some(len) = length(&pending[at..], 0) else { break };
                if pending.len() - at < len {
                    break;
                }
                let code = u32::from_be_bytes(pending[at + 4..at + 8].try_into().expect("4 bytes"));
                started = code == 196_608 || code >> 16 == 3; // protocol 3.x: the startup itself
                at += len;
            } else {
                let Some(len) = length(&pending[at..], 1) else { break };
                if pending.len() - at < len + 1 {
                    break;
                }
                match pending[at] {
                    b'Q' => {
                        counts.queries.fetch_add(1, Ordering::Relaxed);
                        since_sync = 0;
                    }
                    b'S' if since_sync == 0 => {
                        counts.pings.fetch_add(1, Ordering::Relaxed);
                    }
                    b'S' => {
                        counts.statements.fetch_add(1, Ordering::Relaxed);
                        since_sync = 0;
                    }
                    b'P' => {
                        counts.parses.fetch_add(1, Ordering::Relaxed);
                        since_sync += 1;
                    }
                    _ => since_sync += 1,
                }
                at += len + 1;
            }
        }
        pending.drain(..at);
    }
    let _ = server_write.shutdown().await;
    let _ = down.await;
    Ok(())
}

/// The big-endian length at `offset` of the buffer, if that much has arrived.
fn length(buf: &[u8], offset: usize) -> Option<usize> {
    let bytes = buf.get(offset..offset + 4)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?) as usize)
}
