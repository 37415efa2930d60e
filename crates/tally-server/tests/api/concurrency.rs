//! Concurrent deliveries and spends, and a database that cannot commit.

use futures::future::join_all;
use reqwest::StatusCode;
use sqlx::{AssertSqlSafe, Connection, PgConnection, SqliteConnection};
use tally_stripe::fake::Shape;

use crate::helpers::{Customer, Db, TestApp, now, replace_database, spawn_app};
use crate::on_both_backends_and_catalogues;

on_both_backends_and_catalogues!(
    the_same_event_from_16_clients_is_applied_once,
    concurrent_checkout_and_first_invoice_grant_once,
    thirty_two_spends_of_one_on_a_balance_of_ten,
    an_unavailable_database_is_503_and_the_retry_applies_once,
    a_spend_while_the_database_is_down_is_503_and_the_retry_spends_once,
    a_hold_and_its_commit_while_the_database_is_down_are_503_and_the_retries_count_once,
);

async fn the_same_event_from_16_clients_is_applied_once(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("alice", Shape::V2026, s);
    let event = c.checkout("cs_1", "sub_1", s.low.id, "paid", now());
    let answers = join_all((0..16).map(|_| app.post_event(&event))).await;
    let outcomes: Vec<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, StatusCode::OK, "{body}");
            body["outcome"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(outcomes.iter().filter(|o| *o == "applied").count(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| *o == "duplicate").count(), 15, "{outcomes:?}");
    assert_eq!(app.balance("alice").await, (s.low.id.into(), s.low.credits, 0));
    assert_eq!(app.stored_count().await, 1);
    app.assert_books_balance().await;
}

async fn concurrent_checkout_and_first_invoice_grant_once(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    for round in 0..5 {
        let user = format!("user{round}");
        let c = Customer::new(&user, Shape::V2026, s);
        let t = now();
        let sub = format!("sub_{round}");
        let checkout = c.checkout(&format!("cs_{round}"), &sub, s.low.id, "paid", t);
        let mut invoice =
            c.invoice("invoice.paid", &format!("in_{round}"), &sub, s.low.price, "subscription_create", t, t);
        invoice["data"]["object"]["parent"]["subscription_details"]["metadata"]["user_id"] = user.clone().into();
        let (a, b) = tokio::join!(app.post_event(&checkout), app.post_event(&invoice));
        assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK));
        app.spend(&user, 1, &format!("k{round}")).await;
        assert_eq!(app.balance(&user).await, (s.low.id.into(), s.low.credits - 1, 0), "round {round}");
    }
    app.assert_books_balance().await;
}

async fn thirty_two_spends_of_one_on_a_balance_of_ten(db: Db) {
    let app = spawn_app(db).await;
    app.spend("hot", app.shop.free - 10, "setup").await;
    let answers = join_all((0..32).map(|i| {
        let app = &app;
        async move { app.spend("hot", 1, &format!("k{i}")).await.0 }
    }))
    .await;
    let ok = answers.iter().filter(|s| **s == StatusCode::OK).count();
    let short = answers.iter().filter(|s| **s == StatusCode::PAYMENT_REQUIRED).count();
    assert_eq!((ok, short), (10, 22), "{answers:?}");
    assert_eq!(app.balance("hot").await, ("free".into(), 0, 0));
    app.assert_books_balance().await;
}

/// Makes the app's database refuse work until the returned guard is released.
enum Outage {
    Sqlite(SqliteConnection),
    Postgres { admin: PgConnection, name: String },
}

impl Outage {
    async fn start(app: &TestApp) -> Outage {
        if let Some(path) = app.database_url.strip_prefix("sqlite://") {
            // Another process holding the write lock: tally's writes time out busy.
            let mut conn = SqliteConnection::connect(&format!("sqlite://{path}")).await.unwrap();
            sqlx::raw_sql("begin exclusive").execute(&mut conn).await.unwrap();
            Outage::Sqlite(conn)
        } else {
            // The database stops taking connections and drops the ones it has.
            let name = app.database_url.rsplit('/').next().unwrap().split('?').next().unwrap().to_owned();
            let mut admin = PgConnection::connect(&replace_database(&app.database_url, "postgres")).await.unwrap();
            let sql = format!(
                "alter database {name} allow_connections = false;
                 select pg_terminate_backend(pid) from pg_stat_activity where datname = '{name}';"
            );
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut admin).await.unwrap();
            Outage::Postgres { admin, name }
        }
    }

    async fn end(self) {
        match self {
            Outage::Sqlite(mut conn) => {
                sqlx::raw_sql("rollback").execute(&mut conn).await.unwrap();
            }
            Outage::Postgres { mut admin, name } => {
                let sql = format!("alter database {name} allow_connections = true");
                sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut admin).await.unwrap();
            }
        }
    }
}

async fn an_unavailable_database_is_503_and_the_retry_applies_once(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("alice", Shape::V2026, s);
    app.billing("alice").await;
    let event = c.checkout("cs_1", "sub_1", s.low.id, "paid", now());
    let outage = Outage::start(&app).await;
    let (status, body) = app.post_event(&event).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "unavailable");
    outage.end().await;
    assert!(app.stored(event["id"].as_str().unwrap()).await.is_none(), "nothing half-stored");
    app.deliver(&event, "applied").await;
    app.deliver(&event, "duplicate").await;
    assert_eq!(app.balance("alice").await, (s.low.id.into(), s.low.credits, 0));
    app.assert_books_balance().await;
}

async fn a_spend_while_the_database_is_down_is_503_and_the_retry_spends_once(db: Db) {
    let app = spawn_app(db).await;
    app.billing("carl").await;
    let outage = Outage::start(&app).await;
    let (status, body) = app.spend("carl", 10, "k1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    outage.end().await;
    assert_eq!(app.balance("carl").await, ("free".into(), app.shop.free, 0), "nothing spent");
    let (first, _) = app.spend("carl", 10, "k1").await;
    let (again, body) = app.spend("carl", 10, "k1").await;
    assert_eq!((first, again), (StatusCode::OK, StatusCode::OK));
    assert_eq!(body["credits"], app.shop.free - 10);
    app.assert_books_balance().await;
}

async fn a_hold_and_its_commit_while_the_database_is_down_are_503_and_the_retries_count_once(db: Db) {
    let app = spawn_app(db).await;
    app.billing("dora").await;
    let outage = Outage::start(&app).await;
    let (status, body) = app.reserve("dora", 15, "r1", 60).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    outage.end().await;
    let (first, held) = app.reserve("dora", 15, "r1", 60).await;
    let (again, same) = app.reserve("dora", 15, "r1", 60).await;
    assert_eq!((first, again), (StatusCode::OK, StatusCode::OK), "{held} {same}");
    assert_eq!(held["reservation_id"], same["reservation_id"], "one hold for the key");
    assert_eq!(held["billing"]["reserved_credits"], 15);
    let id = held["reservation_id"].as_str().unwrap();

    let outage = Outage::start(&app).await;
    let (status, body) = app.commit(id, 10).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    outage.end().await;
    assert_eq!(app.billing("dora").await["credits"], app.shop.free, "nothing taken while down");
    let (status, body) = app.commit(id, 10).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("committed")), "{body}");
    let (status, _) = app.commit(id, 10).await;
    assert_eq!(status, StatusCode::CONFLICT, "a retry after success commits nothing more");
    let billing = app.billing("dora").await;
    assert_eq!(
        (billing["credits"].as_i64(), billing["reserved_credits"].as_i64()),
        (Some(app.shop.free - 10), Some(0))
    );
    app.assert_books_balance().await;
}
