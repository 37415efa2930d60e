//! `GET /readyz` (CONTRACT §3): 200 when the database is reachable and migrated, 503
//! otherwise, and 200 again by itself once it is back, for load balancers and rolling
//! deploys.
//!
//! On Postgres the database is made unreachable by a relay between tally and the
//! server that the test cuts and restores, so the shared server is never touched. On
//! SQLite there is no such "unreachable": the database is tally's own file, held open by
//! its one connection, so removing or locking the file does not stop that connection
//! (a lock another process holds blocks writes, not reads, under WAL). There the tests
//! cover "not migrated" and a pool that is gone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::{AnyConnection, Connection};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::helpers::{Db, TestApp, spawn_app, spawn_app_with};
use crate::on_both_backends;

on_both_backends!(
    readyz_is_200_on_a_migrated_database,
    readyz_is_503_while_the_newest_migration_is_missing_and_200_once_it_is_there,
    a_database_never_migrated_is_not_ready,
    readyz_is_503_once_the_pool_is_closed,
);

async fn readyz(app: &TestApp) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let response = app.client.get(format!("{}/readyz", app.address)).send().await.unwrap();
    let status = response.status();
    let body = response.json().await.unwrap();
    (status, body, started.elapsed())
}

async fn readyz_is_200_on_a_migrated_database(db: Db) {
    let app = spawn_app(db).await;
    let (status, body, _) = readyz(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");
}

/// A database restored from before the newest migration (or one a new tally has not
/// migrated yet): it answers, but this tally cannot serve it.
async fn readyz_is_503_while_the_newest_migration_is_missing_and_200_once_it_is_there(db: Db) {
    let app = spawn_app(db).await;
    let newest = app.store.newest_migration();
    let mut conn = AnyConnection::connect(&app.tables_url()).await.unwrap();
    let applied_at: i64 = sqlx::query_scalar("select applied_at from schema_migrations where version = $1")
        .bind(newest)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    sqlx::query("delete from schema_migrations where version = $1").bind(newest).execute(&mut conn).await.unwrap();

    let (status, body, _) = readyz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "not_migrated");
    assert_eq!(body["expected_migration"], newest);
    assert!(body["found_migration"].as_i64().unwrap() < newest, "{body}");
    assert!(body["message"].as_str().unwrap().contains("tally migrate"), "{body}");
    let (health, _) = app.get("/healthz").await;
    assert_eq!(health, StatusCode::OK, "alive, only not ready");

    sqlx::query("insert into schema_migrations (version, applied_at) values ($1, $2)")
        .bind(newest)
        .bind(applied_at)
        .execute(&mut conn)
        .await
        .unwrap();
    let (status, body, _) = readyz(&app).await;
    assert_eq!(status, StatusCode::OK, "ready again by itself: {body}");
}

/// The store's own answer on a database no tally has migrated: no schema_migrations at
/// all (on Postgres, not even tally's schema).
async fn a_database_never_migrated_is_not_ready(db: Db) {
    let url = db.fresh().await;
    let catalogue = Arc::new(tally_core::Catalogue::default());
    let store = tally_store::Store::connect(&url, catalogue).await.unwrap();
    let expected = store.newest_migration();
    assert_eq!(store.ready().await.unwrap(), tally_store::Readiness::NotMigrated { expected, found: None });
    store.migrate().await.unwrap();
    assert_eq!(store.ready().await.unwrap(), tally_store::Readiness::Ready);
    store.close().await;
}

async fn readyz_is_503_once_the_pool_is_closed(db: Db) {
    let app = spawn_app(db).await;
    app.store.close().await;
    let (status, body, _) = readyz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "unavailable");
}

/// What the relay does with the connections through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Bytes flow.
    Up,
    /// Every connection is dropped and new ones are closed at once: a database that is
    /// down or a network that refuses.
    Cut,
    /// Connections are held open and nothing flows: a network that drops packets, where
    /// only a deadline ends the wait.
    Silent,
}

/// A TCP relay between tally and Postgres that the test can cut, silence and restore.
struct Relay {
    port: u16,
    link: watch::Sender<Link>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (link, _) = watch::channel(Link::Up);
        let links = link.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, links.subscribe()));
            }
        });
        Relay { port, link }
    }

    fn set(&self, link: Link) {
        self.link.send_replace(link);
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, mut link: watch::Receiver<Link>) {
    let now = *link.borrow_and_update();
    if now != Link::Up {
        if now == Link::Silent {
            let _ = link.wait_for(|l| *l != Link::Silent).await;
        }
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
    let silenced = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
        changed = link.wait_for(|l| *l != Link::Up) => changed.is_ok_and(|l| *l == Link::Silent),
    };
    if silenced {
        // Both sockets stay open, and nothing flows, until the link changes again.
        let _ = link.wait_for(|l| *l != Link::Silent).await;
    }
}

/// `host:port` of a `postgres://user@host:port/db` URL.
async fn postgres_address(url: &str) -> SocketAddr {
    let rest = url.split_once("://").unwrap().1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host_port = rest.split(['/', '?']).next().unwrap();
    let host_port = if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:5432") };
    tokio::net::lookup_host(host_port).await.unwrap().next().unwrap()
}

/// `url` with its host and port replaced by the relay's.
fn through(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (user, rest) = rest.rsplit_once('@').map_or(("", rest), |(u, r)| (u, r));
    let tail = &rest[rest.find(['/', '?']).unwrap_or(rest.len())..];
    let user = if user.is_empty() { String::new() } else { format!("{user}@") };
    format!("{scheme}://{user}127.0.0.1:{port}{tail}")
}

/// The Postgres database cut off, silent, then back: 503 each time it cannot answer
/// (within the 2 s bound while it is silent), and 200 again with nothing done but the
/// network coming back; a spend works again too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_readyz_is_503_while_the_database_is_unreachable_and_200_once_it_is_back() {
    let db = Db::postgres(&crate::helpers::GUIDE);
    let url = db.fresh().await;
    let relay = Relay::start(postgres_address(&url).await).await;
    let proxied = through(&url, relay.port);
    let app = spawn_app_with(db, &[("DATABASE_URL", proxied.as_str())]).await;
    let (status, body, _) = readyz(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    relay.set(Link::Cut);
    let (status, body, took) = readyz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "unavailable");
    assert!(took < Duration::from_secs(4), "took {took:?}");

    relay.set(Link::Up);
    let (status, body, _) = readyz(&app).await;
    assert_eq!(status, StatusCode::OK, "back by itself: {body}");

    relay.set(Link::Silent);
    let (status, body, took) = readyz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(4), "bounded at 2 s: took {took:?}");

    relay.set(Link::Up);
    let (status, body, _) = readyz(&app).await;
    assert_eq!(status, StatusCode::OK, "back by itself: {body}");
    let (status, body) = app.spend("rita", 1, "after-the-outage").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[test]
fn the_relay_url_keeps_the_user_database_and_parameters() {
    assert_eq!(
        through("postgres://postgres@127.0.0.1:5432/test?sslmode=disable", 7),
        "postgres://postgres@127.0.0.1:7/test?sslmode=disable"
    );
    assert_eq!(through("postgres://u:p@db.example/x", 9), "postgres://u:p@127.0.0.1:9/x");
}
