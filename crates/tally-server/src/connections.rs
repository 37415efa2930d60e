//! Accepting connections (CONTRACT §5): HTTP/1 through hyper with its own header timeout,
//! a cap on open connections, and graceful shutdown.
//!
//! The cap keeps tally from running out of file descriptors. When it is reached, a new
//! connection takes the place of the oldest one that has no request in progress (a client
//! that connected and sent nothing, a slow header, an idle keep-alive): such a client
//! holds a slot without being served, and shedding it keeps `/healthz` and spends
//! answering while hostile sockets pile up. Only when every slot is serving a request is
//! the new connection answered 503.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tower::ServiceExt;

use crate::limits::{self, Timeouts};

/// What a connection past the cap is told before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
connection: close\r\nretry-after: 1\r\ncontent-length: 78\r\n\r\n\
{\"error\":\"too_many_connections\",\"message\":\"the server is busy; retry shortly\"}";

/// At most this many refusals are being written at once; past it a connection is closed
/// without one, so refusing costs bounded memory too.
const MAX_REFUSING: usize = 64;

/// Serves `app` on `listener` until `shutdown` resolves, then lets the requests in
/// progress finish for at most `timeouts.shutdown`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()>,
) {
    let open = Arc::new(Open::new(max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let (stop, stopping) = watch::channel(false);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .max_buf_size(limits::HEADER_BYTES)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors (or a connection reset before it was taken):
                    // wait for some to close instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let Some(slot) = open.admit() else {
            metrics::counter!("tally_connections_refused_total").increment(1);
            if let Ok(permit) = refusing.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(permit);
                });
            }
            continue;
        };
        tokio::spawn(serve_connection(stream, slot, app.clone(), http.clone(), stopping.clone()));
    }
    drop(listener);
    let _ = stop.send(true);
    if tokio::time::timeout(timeouts.shutdown, open.all_closed()).await.is_err() {
        tracing::warn!(open = open.count(), "shutdown: requests still running after the grace period were dropped");
    }
}

async fn serve_connection(
    stream: TcpStream,
    slot: Slot,
    app: Router,
    http: http1::Builder,
    mut stopping: watch::Receiver<bool>,
) {
    let busy = slot.busy.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let in_progress = InProgress::start(&busy);
        let app = app.clone();
        // Boxed, so that the connection is Unpin and its socket can be taken back below.
        Box::pin(async move {
            let response = app.oneshot(request.map(Body::new)).await;
            drop(in_progress);
            Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
        })
    });
    let mut connection = http.serve_connection(TokioIo::new(stream), service);
    // The arms only say what happened: the stop signal's guard must not be held across
    // the await that follows.
    let event = tokio::select! {
        done = std::future::poll_fn(|cx| connection.poll_without_shutdown(cx)) => Event::Done(done),
        () = slot.shed.notified() => Event::Shed,
        _ = stopping.wait_for(|stop| *stop) => Event::Stopping,
    };
    let done = match event {
        Event::Done(done) => done,
        Event::Shed if slot.busy.load(Ordering::Acquire) == 0 => {
            metrics::counter!("tally_connections_shed_total").increment(1);
            return;
        }
        Event::Shed | Event::Stopping => finish(&mut connection).await,
    };
    if done.is_ok() {
        linger(connection.into_parts().io.into_inner()).await;
    }
}

/// What ends a connection's first wait.
enum Event {
    Done(hyper::Result<()>),
    Shed,
    Stopping,
}

/// Finishes the request in progress, then ends the connection.
async fn finish<S>(connection: &mut http1::Connection<TokioIo<TcpStream>, S>) -> hyper::Result<()>
where
    S: hyper::service::HttpService<Incoming, ResBody = Body> + Unpin,
    S::Future: Unpin,
{
    std::pin::Pin::new(&mut *connection).graceful_shutdown();
    std::future::poll_fn(|cx| connection.poll_without_shutdown(cx)).await
}

/// Closes a connection hyper is done with, after reading what the client is still
/// sending (for at most a second and 4 MiB): closing a socket with unread data resets it,
/// and a client still sending a body past its limit would see "connection reset"
/// instead of the 413 it was answered.
async fn linger(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.shutdown().await?;
        let mut sink = [0u8; 16 * 1024];
        let mut left = 4usize << 20;
        while left > 0 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Tells a client past the cap to come back, reads what it sent (closing a socket with
/// unread data resets it, and the client would never see the 503), then closes.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(REFUSAL).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// The open connections, oldest first.
struct Open {
    max: usize,
    state: Mutex<OpenState>,
    closed: Notify,
}

#[derive(Default)]
struct OpenState {
    next_id: u64,
    connections: BTreeMap<u64, Handle>,
}

/// What the cap knows of one connection: whether it is serving a request, and how to
/// ask it to go.
struct Handle {
    busy: Arc<AtomicUsize>,
    shed: Arc<Notify>,
}

impl Open {
    fn new(max: usize) -> Arc<Open> {
        Arc::new(Open { max: max.max(1), state: Mutex::default(), closed: Notify::new() })
    }

    /// A slot for a new connection: free, or taken from the oldest idle one.
    fn admit(self: &Arc<Open>) -> Option<Slot> {
        let mut state = self.state.lock().expect("the connection table is never poisoned");
        if state.connections.len() >= self.max {
            let idle =
                state.connections.iter().find(|(_, c)| c.busy.load(Ordering::Acquire) == 0).map(|(id, _)| *id)?;
            let shed = state.connections.remove(&idle).expect("found just now");
            shed.shed.notify_one();
        }
        let id = state.next_id;
        state.next_id += 1;
        let busy = Arc::new(AtomicUsize::new(0));
        let shed = Arc::new(Notify::new());
        state.connections.insert(id, Handle { busy: busy.clone(), shed: shed.clone() });
        metrics::gauge!("tally_connections_open").set(state.connections.len() as f64);
        Some(Slot { id, open: self.clone(), busy, shed })
    }

    fn count(&self) -> usize {
        self.state.lock().expect("the connection table is never poisoned").connections.len()
    }

    async fn all_closed(&self) {
        loop {
            let closed = self.closed.notified();
            if self.count() == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// A connection's place under the cap, given back when the connection ends.
struct Slot {
    id: u64,
    open: Arc<Open>,
    busy: Arc<AtomicUsize>,
    shed: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.open.state.lock().expect("the connection table is never poisoned");
        state.connections.remove(&self.id);
        metrics::gauge!("tally_connections_open").set(state.connections.len() as f64);
        if state.connections.is_empty() {
            self.open.closed.notify_waiters();
        }
    }
}

/// Marks a connection as serving a request for as long as it lives.
struct InProgress(Arc<AtomicUsize>);

impl InProgress {
    fn start(busy: &Arc<AtomicUsize>) -> InProgress {
        busy.fetch_add(1, Ordering::AcqRel);
        InProgress(busy.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_sheds_its_oldest_idle_connection_and_refuses_when_all_are_busy() {
        let open = Open::new(2);
        let first = open.admit().unwrap();
        let second = open.admit().unwrap();
        let _serving = InProgress::start(&first.busy);
        let third = open.admit().expect("the second is idle, so it makes room");
        assert_eq!(open.count(), 2);
        let _also_serving = InProgress::start(&third.busy);
        assert!(open.admit().is_none(), "every slot serves a request: refused");
        drop(second);
        assert_eq!(open.count(), 2, "the shed connection's slot was already given away");
        drop(first);
        assert!(open.admit().is_some());
    }

    #[test]
    fn the_refusal_is_a_well_formed_http_answer() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "too_many_connections");
    }
}
