//! What one client may hold (CONTRACT §5, issue 11 finding 2), on raw sockets: a header
//! sent a byte at a time and an idle connection are closed at the header deadline, a
//! slow body is answered 408, bodies past their limit 413, and a full server sheds its
//! idle connections before it answers 503. The deadlines are shortened here; the
//! defaults are in `tally_server::limits`.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{API_KEY, Db, TestApp, spawn_app_configured};
use crate::on_both_backends;

on_both_backends!(
    a_header_sent_a_byte_at_a_time_is_cut_off_at_the_header_deadline,
    an_idle_connection_is_closed_at_the_header_deadline,
    a_slow_body_is_answered_408_at_the_request_deadline,
    bodies_past_their_route_limit_are_413,
    a_full_server_sheds_idle_connections_first_and_refuses_only_when_all_are_busy,
);

const HEADER: Duration = Duration::from_millis(800);
const REQUEST: Duration = Duration::from_millis(1500);

async fn app_with(db: Db, max_connections: usize) -> TestApp {
    spawn_app_configured(db, &[], |config| {
        config.timeouts.header = HEADER;
        config.timeouts.request = REQUEST;
        config.max_connections = max_connections;
    })
    .await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap()
}

/// Everything the server sends until it closes the connection (or `within` passes).
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| String::from_utf8_lossy(&answer).into_owned())
}

async fn healthz(app: &TestApp) -> reqwest::StatusCode {
    reqwest::Client::new().get(format!("{}/healthz", app.address)).send().await.unwrap().status()
}

/// The probe held 300 such sockets for more than a minute.
async fn a_header_sent_a_byte_at_a_time_is_cut_off_at_the_header_deadline(db: Db) {
    let app = app_with(db, 64).await;
    let mut stream = connect(&app).await;
    let started = Instant::now();
    let request =
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed = false;
    for byte in request {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if started.elapsed() > HEADER * 4 {
            break;
        }
    }
    let rest = read_until_closed(&mut stream, HEADER * 2).await;
    assert!(closed || rest.is_some(), "still open after {:?}", started.elapsed());
    assert!(started.elapsed() < HEADER * 4, "closed after {:?}", started.elapsed());
    assert!(!rest.unwrap_or_default().contains("200 OK"), "a header that never ended was not served");
    assert_eq!(healthz(&app).await, reqwest::StatusCode::OK);
}

async fn an_idle_connection_is_closed_at_the_header_deadline(db: Db) {
    let app = app_with(db, 64).await;
    let mut silent = connect(&app).await;
    let started = Instant::now();
    assert_eq!(read_until_closed(&mut silent, HEADER * 3).await.as_deref(), Some(""), "closed without a word");
    assert!(started.elapsed() >= HEADER - Duration::from_millis(100), "{:?}", started.elapsed());

    // A kept-alive connection that has been served goes the same way once idle.
    let mut kept = connect(&app).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let answer = read_until_closed(&mut kept, HEADER * 3).await.expect("closed once idle");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// The probe's 200 slow 1 MiB bodies each held memory for as long as they liked.
async fn a_slow_body_is_answered_408_at_the_request_deadline(db: Db) {
    let app = app_with(db, 64).await;
    let mut stream = connect(&app).await;
    let head = format!(
        "POST /api/credits/spend HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {API_KEY}\r\n\
         content-type: application/json\r\ncontent-length: 2000\r\n\r\n{{\"user_id\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if stream.write_all(b" ").await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(REQUEST * 3, trickle).await;
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?} after {:?}", started.elapsed());
    assert!(answer.contains(r#""error":"request_timeout""#), "{answer}");
    assert!(started.elapsed() < REQUEST * 3);
    assert_eq!(app.ledger_rows("nobody").await, 0);
}

async fn bodies_past_their_route_limit_are_413(db: Db) {
    let app = app_with(db, 64).await;
    let client = reqwest::Client::new();
    let reason = "r".repeat(70 * 1024);
    let body = serde_json::json!({ "user_id": "u", "amount": 1, "idempotency_key": "k", "reason": reason });
    let response = client
        .post(format!("{}/api/credits/spend", app.address))
        .bearer_auth(API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "payload_too_large");
    // A webhook may be larger than a host-app body (here 70 KiB: 400 for its signature).
    let (status, answer) = app.post_webhook(vec![b' '; 70 * 1024], Some("t=1,v1=00"), "application/json").await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(app.ledger_rows("u").await, 0);
}

/// The probe's 1,100 idle sockets used up the descriptors, and /healthz timed out.
async fn a_full_server_sheds_idle_connections_first_and_refuses_only_when_all_are_busy(db: Db) {
    let app = app_with(db, 4).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(connect(&app).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The table is full of sockets that said nothing: a new client is served anyway.
    for _ in 0..3 {
        assert_eq!(healthz(&app).await, reqwest::StatusCode::OK);
    }
    let oldest = read_until_closed(&mut idle[0], Duration::from_millis(500)).await;
    assert_eq!(oldest.as_deref(), Some(""), "the oldest idle socket made room");

    // Four requests in progress (bodies still coming): nothing idle to shed, so 503.
    let mut busy = Vec::new();
    for _ in 0..4 {
        let mut stream = connect(&app).await;
        let head = format!(
            "POST /api/credits/spend HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {API_KEY}\r\n\
             content-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        busy.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = connect(&app).await;
    refused.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let answer = read_until_closed(&mut refused, Duration::from_secs(2)).await.expect("answered and closed");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too_many_connections") && answer.contains("retry-after: 1"), "{answer}");

    // Once the slow bodies meet their deadline, the server serves again.
    for stream in &mut busy {
        let answer = read_until_closed(stream, REQUEST * 2).await.unwrap_or_default();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    assert_eq!(healthz(&app).await, reqwest::StatusCode::OK);
}
