//! Group commit: concurrent webhooks and spends share transactions, and each still takes
//! effect once, on its own terms.

use std::sync::atomic::Ordering::Relaxed;

use futures::future::join_all;
use reqwest::StatusCode;
use sqlx::{Connection, PgConnection, SqliteConnection};
use tally_stripe::fake::Shape;

use crate::helpers::{Customer, Db, TestApp, now, spawn_app};
use crate::on_both_backends_and_catalogues;

on_both_backends_and_catalogues!(
    concurrent_topups_and_spends_of_many_users_each_count_once,
    a_write_the_database_refuses_fails_alone_and_its_batch_commits,
    two_processes_on_one_database_grant_a_period_once,
    a_redelivery_in_the_same_batch_applies_what_was_unmatched,
    one_event_through_two_processes_is_applied_once,
);

async fn concurrent_topups_and_spends_of_many_users_each_count_once(db: Db) {
    let app = spawn_app(db).await;
    let users: Vec<String> = (0..8).map(|i| format!("user{i}")).collect();
    let mut topups = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let c = Customer::new(user, if i % 2 == 0 { Shape::V2026 } else { Shape::V2023 }, app.shop);
        topups.push(c.topup("checkout.session.completed", &format!("cs_{i}"), &format!("pi_{i}"), "paid", now()));
    }
    // Each user: their top-up delivered three times, five spends of 1, and one more spend
    // sent twice with the same key, all at once and interleaved with everyone else's.
    let app = &app;
    let deliveries = topups.iter().flat_map(|t| [t, t, t]).map(|t| async move { (app.post_event(t).await, None) });
    let spends = users.iter().flat_map(|u| {
        let keys = (0..5).map(move |k| format!("{u}-k{k}")).chain([format!("{u}-again"), format!("{u}-again")]);
        keys.map(move |key| async move { (app.spend(u, 1, &key).await, Some(u)) })
    });
    let mut requests: Vec<_> = deliveries.map(futures::future::Either::Left).collect();
    requests.extend(spends.map(futures::future::Either::Right));
    let answers = join_all(requests).await;

    let mut outcomes = Vec::new();
    for ((status, body), spender) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        if spender.is_none() {
            outcomes.push(body["outcome"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(outcomes.iter().filter(|o| *o == "applied").count(), 8, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| *o == "duplicate").count(), 16, "{outcomes:?}");
    for user in &users {
        assert_eq!(app.balance(user).await, ("free".into(), app.shop.free - 6, app.shop.pack.credits), "{user}");
    }
    assert_eq!(app.stored_count().await, 8);
    app.assert_books_balance().await;
    let stats = app.store.write_stats();
    let (batches, jobs) = (stats.batches.load(Relaxed), stats.jobs.load(Relaxed));
    assert!(jobs > batches, "some requests shared a transaction: {jobs} jobs in {batches} batches");
}

/// Makes the database refuse (with an error that is not an outage) every ledger row of
/// the spend keyed `poison`, the way a constraint would.
async fn poison_spend_key(app: &TestApp) {
    if let Some(path) = app.database_url.strip_prefix("sqlite://") {
        let mut conn = SqliteConnection::connect(&format!("sqlite://{path}")).await.unwrap();
        let sql = "create trigger poison before insert on ledger when new.reference = 'spend:poison'
                   begin select raise(abort, 'poisoned'); end";
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = PgConnection::connect(&app.tables_url()).await.unwrap();
        let sql = "create function poison() returns trigger language plpgsql as $$
                   begin if new.reference = 'spend:poison' then raise exception 'poisoned'; end if; return new; end $$;
                   create trigger poison before insert on ledger for each row execute function poison();";
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    }
}

/// A connection that keeps the writer waiting (SQLite: the write lock; Postgres: the
/// user's account row) until it is released, so that requests queue and share a batch.
enum WriteBlock {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl WriteBlock {
    async fn hold(app: &TestApp, user: &str) -> WriteBlock {
        match app.database_url.strip_prefix("sqlite://") {
            Some(path) => {
                let mut conn = SqliteConnection::connect(&format!("sqlite://{path}")).await.unwrap();
                sqlx::raw_sql("begin immediate").execute(&mut conn).await.unwrap();
                WriteBlock::Sqlite(conn)
            }
            None => {
                let mut conn = PgConnection::connect(&app.tables_url()).await.unwrap();
                sqlx::raw_sql("begin").execute(&mut conn).await.unwrap();
                sqlx::query("select 1 from accounts where user_id = $1 for update")
                    .bind(user)
                    .execute(&mut conn)
                    .await
                    .unwrap();
                WriteBlock::Postgres(conn)
            }
        }
    }

    async fn release(self) {
        match self {
            WriteBlock::Sqlite(mut conn) => {
                sqlx::raw_sql("rollback").execute(&mut conn).await.unwrap();
            }
            WriteBlock::Postgres(mut conn) => {
                sqlx::raw_sql("rollback").execute(&mut conn).await.unwrap();
            }
        }
    }
}

/// How many of this app's batches failed and were written again one job at a time.
fn split_batches(app: &TestApp) -> u64 {
    app.store.write_stats().split.load(Relaxed)
}

async fn a_write_the_database_refuses_fails_alone_and_its_batch_commits(db: Db) {
    let app = spawn_app(db).await;
    poison_spend_key(&app).await;
    let c = Customer::new("bob", Shape::V2026, app.shop);
    app.deliver(&c.topup("checkout.session.completed", "cs_1", "pi_1", "paid", now()), "applied").await;
    let balance = app.shop.free + app.shop.pack.credits;
    // The writer is held while the round's requests arrive, so they queue and share a
    // batch once it is released. Until the poisoned spend has shared a batch with others
    // (almost always the first round), each round checks that it failed alone.
    let mut spent = 0;
    for round in 0..10 {
        let splits = split_batches(&app);
        let keys: Vec<String> = (0..15).map(|k| format!("r{round}-k{k}")).chain(["poison".to_owned()]).collect();
        let block = WriteBlock::hold(&app, "bob").await;
        let release = async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            block.release().await;
        };
        let (answers, ()) = tokio::join!(join_all(keys.iter().map(|key| app.spend("bob", 1, key))), release);
        for (key, (status, body)) in keys.iter().zip(&answers) {
            if key == "poison" {
                assert_eq!(*status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
            } else {
                assert_eq!(*status, StatusCode::OK, "{key}: {body}");
            }
        }
        spent += 15;
        assert_eq!(app.billing("bob").await["credits"], balance - spent, "round {round}");
        if split_batches(&app) > splits {
            app.assert_books_balance().await;
            return;
        }
    }
    panic!("the poisoned spend never shared a batch with another");
}

/// A second tally process (here: a second store with its own writer, as `tally sync`
/// would have) applying the first invoice while the server applies the checkout of the
/// same subscription. A third connection holds the account meanwhile, so both writers
/// have read what they can and wait for it: each must read the period only once it
/// holds the account, or the second would try to grant it again.
async fn two_processes_on_one_database_grant_a_period_once(db: Db) {
    let app = spawn_app(db).await;
    let other = app.second_store().await;
    let s = app.shop;
    for round in 0..4 {
        let user = format!("user{round}");
        app.spend(&user, 1, "opens-the-account").await;
        let c = Customer::new(&user, Shape::V2026, s);
        let (t, sub) = (now(), format!("sub_{round}"));
        let checkout = c.checkout(&format!("cs_{round}"), &sub, s.low.id, "paid", t);
        let mut invoice =
            c.invoice("invoice.paid", &format!("in_{round}"), &sub, s.low.price, "subscription_create", t, t);
        invoice["data"]["object"]["parent"]["subscription_details"]["metadata"]["user_id"] = user.clone().into();
        let payload = invoice.to_string();
        let parsed = tally_stripe::parse_event(payload.as_bytes()).unwrap();
        let release = Hold::start(&app, &user).await.end_after(200);
        let (by_app, by_other, ()) =
            tokio::join!(app.post_event(&checkout), tally_server::ingest_parsed(&other, &parsed, &payload), release);
        assert_eq!(by_app.0, StatusCode::OK, "{}", by_app.1);
        // The second writer must find the period granted (an error here is its attempt to
        // grant it again, refused by the ledger's unique reference).
        by_other.unwrap();
        assert_eq!(app.balance(&user).await, (s.low.id.into(), s.low.credits, 0), "round {round}");
    }
    let splits = app.store.write_stats().split.load(Relaxed) + other.write_stats().split.load(Relaxed);
    assert_eq!(splits, 0, "no writer ever tried to grant the period a second time");
    app.assert_books_balance().await;
}

/// Holds an account (Postgres: its row; SQLite: the whole file) from another connection,
/// so that the writer's next batch waits and the requests sent meanwhile queue up.
enum Hold {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl Hold {
    async fn start(app: &TestApp, user: &str) -> Hold {
        if let Some(path) = app.database_url.strip_prefix("sqlite://") {
            let mut conn = SqliteConnection::connect(&format!("sqlite://{path}")).await.unwrap();
            sqlx::raw_sql("begin exclusive").execute(&mut conn).await.unwrap();
            Hold::Sqlite(conn)
        } else {
            let mut conn = PgConnection::connect(&app.tables_url()).await.unwrap();
            sqlx::raw_sql("begin").execute(&mut conn).await.unwrap();
            sqlx::query("update accounts set updated_at = updated_at where user_id = $1")
                .bind(user)
                .execute(&mut conn)
                .await
                .unwrap();
            Hold::Postgres(conn)
        }
    }

    async fn end_after(self, ms: u64) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        match self {
            Hold::Sqlite(mut conn) => {
                sqlx::raw_sql("commit").execute(&mut conn).await.unwrap();
            }
            Hold::Postgres(mut conn) => {
                sqlx::raw_sql("commit").execute(&mut conn).await.unwrap();
            }
        }
    }
}

/// Sends `requests` in order, `gap_ms` apart, while the writer is stuck behind a held
/// account: they reach it as one batch, in that order.
async fn one_batch(app: &TestApp, requests: &[serde_json::Value]) -> Vec<(StatusCode, serde_json::Value)> {
    app.spend("blocker", 1, "opens-the-account").await;
    let hold = Hold::start(app, "blocker").await;
    let blocked = app.spend("blocker", 1, "waits-for-the-hold");
    let queued = join_all(requests.iter().enumerate().map(|(i, event)| async move {
        tokio::time::sleep(std::time::Duration::from_millis(50 * (i as u64 + 1))).await;
        app.post_event(event).await
    }));
    let release = hold.end_after(50 * (requests.len() as u64 + 2));
    let (blocked, answers, ()) = tokio::join!(blocked, queued, release);
    assert_eq!(blocked.0, StatusCode::OK, "{}", blocked.1);
    answers
}

async fn a_redelivery_in_the_same_batch_applies_what_was_unmatched(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("bob", Shape::V2026, app.shop);
    let t = now();
    app.spend("bob", 1, "known").await;
    let refund = c.refund("ch_1", "pi_1", app.shop.pack.amount, t + 10);
    let topup = c.topup("checkout.session.completed", "cs_1", "pi_1", "paid", t);
    let answers = one_batch(&app, &[refund.clone(), topup, refund.clone()]).await;
    let outcomes: Vec<&str> = answers.iter().map(|(_, body)| body["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["unmatched", "applied", "applied"], "the refund's second delivery takes the top-up back");
    assert_eq!(app.balance("bob").await, ("free".into(), app.shop.free - 1, 0));
    let stored = app.stored(refund["id"].as_str().unwrap()).await.unwrap();
    assert_eq!((stored.outcome.as_str(), stored.attempts), ("applied", 2));
    app.assert_books_balance().await;
}

async fn one_event_through_two_processes_is_applied_once(db: Db) {
    let app = spawn_app(db).await;
    let other = app.second_store().await;
    let c = Customer::new("carol", Shape::V2023, app.shop);
    app.spend("carol", 1, "opens-the-account").await;
    let topup = c.topup("checkout.session.completed", "cs_1", "pi_1", "paid", now());
    let payload = topup.to_string();
    let parsed = tally_stripe::parse_event(payload.as_bytes()).unwrap();
    let release = Hold::start(&app, "carol").await.end_after(200);
    let (by_app, by_other, ()) =
        tokio::join!(app.post_event(&topup), tally_server::ingest_parsed(&other, &parsed, &payload), release);
    assert_eq!(by_app.0, StatusCode::OK, "{}", by_app.1);
    let mut outcomes =
        [by_app.1["outcome"].as_str().unwrap().to_owned(), by_other.unwrap().outcome.as_str().to_owned()];
    outcomes.sort();
    assert_eq!(outcomes, ["applied", "duplicate"]);
    assert_eq!(app.balance("carol").await, ("free".into(), app.shop.free - 1, app.shop.pack.credits));
    assert_eq!(app.stored(topup["id"].as_str().unwrap()).await.unwrap().attempts, 2);
    app.assert_books_balance().await;
}
