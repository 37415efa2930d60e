//! tally in a database it shares with the app (Supabase): its tables in its own schema
//! (TALLY_DB_SCHEMA), the guide's `profiles` shape as a read-only view, and the app's own
//! `public.profiles` kept in step (TALLY_SYNC_PROFILES). Postgres only: SQLite is a file
//! of tally's own.

use sqlx::{Connection, PgConnection, Row};
use tally_stripe::fake::Shape;

use crate::helpers::{Customer, Db, GUIDE, TestApp, now, spawn_app_with};

/// Supabase's users are uuids; the app's profiles table has a row for this one.
const ANN: &str = "3f2b8c1e-5d4a-4e7b-9c1d-2a3b4c5d6e7f";
/// A uuid user with no profiles row, and a user whose id no uuid column can hold.
const BEA: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const CAL: &str = "cal";

/// The app's side of the database, as the guide makes it: its own `profiles` (a uuid id,
/// an integer credits column, a customer already linked) and a table of its own that
/// happens to share a name with one of tally's.
const APP_SCHEMA: &str = "
    create table public.profiles (
        id uuid primary key,
        full_name text,
        tier text not null default 'free',
        credits integer not null default 0,
        stripe_customer_id text,
        updated_at timestamptz not null default now()
    );
    create table public.accounts (id serial primary key, name text not null);
    insert into public.accounts (name) values ('the app''s own row');
";

/// A fresh database with the app's tables in it; the `Db` that drops it at the end.
async fn app_database() -> (Db, String, PgConnection) {
    let db = Db::postgres(&GUIDE);
    let url = db.fresh().await;
    let mut conn = PgConnection::connect(&url).await.expect("the test database");
    sqlx::raw_sql(APP_SCHEMA).execute(&mut conn).await.expect("the app's tables");
    sqlx::query(
        "insert into public.profiles (id, full_name, stripe_customer_id) values ($1::uuid, 'Ann', 'cus_app_ann')",
    )
    .bind(ANN)
    .execute(&mut conn)
    .await
    .unwrap();
    (db, url, conn)
}

async fn tally(url: &str, extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![("DATABASE_URL", url)];
    vars.extend_from_slice(extra);
    spawn_app_with(Db::postgres(&GUIDE), &vars).await
}

async fn tables_in(conn: &mut PgConnection, schema: &str) -> Vec<String> {
    sqlx::query_scalar("select table_name::text from information_schema.tables where table_schema = $1 order by 1")
        .bind(schema)
        .fetch_all(conn)
        .await
        .unwrap()
}

async fn profile(conn: &mut PgConnection, id: &str) -> (String, i32, Option<String>) {
    let row = sqlx::query("select tier, credits, stripe_customer_id from public.profiles where id = $1::uuid")
        .bind(id)
        .fetch_one(conn)
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn two_tallys_share_a_database_with_the_app_without_touching_its_tables() {
    let (_db, url, mut conn) = app_database().await;
    let first = tally(&url, &[("TALLY_SYNC_PROFILES", "public.profiles")]).await;
    let second = tally(&url, &[("TALLY_DB_SCHEMA", "tally_staging")]).await;

    first.spend(ANN, 30, "k1").await;
    second.spend(ANN, 5, "k1").await;
    assert_eq!(first.balance(ANN).await, ("free".into(), 70, 0));
    assert_eq!(second.balance(ANN).await, ("free".into(), 95, 0), "each tally its own books");

    // The app's tables are as the app left them, and nothing of tally's is in public.
    assert_eq!(tables_in(&mut conn, "public").await, ["accounts", "profiles"]);
    let names: Vec<String> = sqlx::query_scalar("select name from public.accounts").fetch_all(&mut conn).await.unwrap();
    assert_eq!(names, ["the app's own row"]);
    for schema in ["tally", "tally_staging"] {
        let tables = tables_in(&mut conn, schema).await;
        assert!(
            tables.contains(&"ledger".to_owned()) && tables.contains(&"profiles".to_owned()),
            "{schema}: {tables:?}"
        );
    }
    // Only the first syncs profiles; the customer the app had linked is kept.
    assert_eq!(profile(&mut conn, ANN).await, ("free".into(), 70, Some("cus_app_ann".into())));
    first.assert_books_balance().await;
    second.assert_books_balance().await;
}

#[tokio::test]
async fn profiles_follow_every_change_in_the_same_transaction() {
    let (_db, url, mut conn) = app_database().await;
    let app = tally(&url, &[("TALLY_SYNC_PROFILES", "public.profiles")]).await;
    let mut ann = Customer::new(ANN, Shape::V2026, &GUIDE);
    ann.customer = "cus_app_ann".into();
    let t = now();
    app.deliver(&ann.checkout("cs_1", "sub_1", "pro", "paid", t), "applied").await;
    assert_eq!(profile(&mut conn, ANN).await, ("pro".into(), 2_500, Some("cus_app_ann".into())));
    app.deliver(&ann.topup("checkout.session.completed", "cs_2", "pi_2", "paid", t + 1), "applied").await;
    app.spend(ANN, 500, "k1").await;
    assert_eq!(profile(&mut conn, ANN).await, ("pro".into(), 3_000, Some("cus_app_ann".into())));
    app.deliver(
        &ann.subscription("customer.subscription.deleted", "sub_1", GUIDE.low.price, "canceled", t, t, false, t + 2),
        "applied",
    )
    .await;
    assert_eq!(profile(&mut conn, ANN).await, ("free".into(), 1_100, Some("cus_app_ann".into())), "the pack is kept");

    // Users without a row there are billed as ever, and get no row.
    for user in [BEA, CAL] {
        let (status, body) = app.spend(user, 10, &format!("k-{user}")).await;
        assert_eq!(status, 200, "{user}: {body}");
    }
    let rows: i64 = sqlx::query_scalar("select count(*) from public.profiles").fetch_one(&mut conn).await.unwrap();
    assert_eq!(rows, 1);

    // The view in tally's schema has the same shape, and refuses writes.
    let row = sqlx::query(
        "select tier, credits, stripe_customer_id, updated_at is not null from tally.profiles where id = $1",
    )
    .bind(ANN)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((row.get::<String, _>(0), row.get::<i64, _>(1), row.get::<bool, _>(3)), ("free".into(), 1_100, true));
    let err =
        sqlx::query("update tally.profiles set credits = 1000000 where id = $1").bind(ANN).execute(&mut conn).await;
    assert!(err.unwrap_err().to_string().contains("read-only"));
    app.assert_books_balance().await;
}

#[tokio::test]
async fn a_profiles_table_tally_cannot_write_stops_the_start_naming_the_setting() {
    let (_db, url, mut conn) = app_database().await;
    sqlx::raw_sql(
        "create type public.plan as enum ('free', 'pro');
         create table public.members (id uuid primary key, tier public.plan, credits int, stripe_customer_id text);
         create table public.numbered (id bigint primary key, tier text, credits int, stripe_customer_id text);
         create table public.partial (id uuid primary key, tier text)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let config = |table: &str| {
        let lookup = [("DATABASE_URL", url.as_str()), ("TALLY_SYNC_PROFILES", table)];
        tally_server::Config::from_lookup(|name| lookup.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
            .unwrap()
    };
    for (table, why) in [
        ("public.missing", "no such table"),
        ("public.partial", "has no column credits"),
        ("public.numbered", "id is bigint"),
        ("public.members", "has no value \"enterprise\""),
    ] {
        let err = config(table).connect_store().await.err().expect(table).to_string();
        assert!(err.contains("TALLY_SYNC_PROFILES") && err.contains(why), "{table}: {err}");
    }
}

#[tokio::test]
async fn an_upgrade_moves_tables_made_in_public_into_tallys_schema() {
    // Without the app's tables: its `accounts` would clash with the old layout's.
    let db = Db::postgres(&GUIDE);
    let url = db.fresh().await;
    let mut conn = PgConnection::connect(&url).await.expect("the test database");
    // A tally from before TALLY_DB_SCHEMA kept its tables in public.
    let before = tally(&url, &[("TALLY_DB_SCHEMA", "public")]).await;
    before.spend(CAL, 40, "k1").await;
    before.store.close().await;
    assert!(tables_in(&mut conn, "public").await.contains(&"ledger".to_owned()));

    let after = tally(&url, &[]).await;
    assert_eq!(after.balance(CAL).await, ("free".into(), 60, 0), "the balance came along");
    let (status, _) = after.spend(CAL, 40, "k1").await;
    assert_eq!(status, 200);
    assert_eq!(after.balance(CAL).await, ("free".into(), 60, 0), "and so did the idempotency keys");
    assert_eq!(tables_in(&mut conn, "public").await, Vec::<String>::new());
    after.assert_books_balance().await;
}

/// The SQL block of docs/MIGRATING.md that exposes `tally.profiles` through Supabase.
fn documented_rls() -> &'static str {
    let doc = include_str!("../../../../docs/MIGRATING.md");
    let after = doc.split("<!-- rls").nth(1).expect("the marked block in MIGRATING.md");
    after.split("```sql").nth(1).and_then(|block| block.split("```").next()).expect("a sql block after the marker")
}

#[tokio::test]
async fn the_documented_row_level_security_shows_each_user_only_their_own_row() {
    let (_db, url, mut conn) = app_database().await;
    let app = tally(&url, &[]).await;
    app.spend(ANN, 1, "k1").await;
    app.spend(BEA, 2, "k2").await;
    // What Supabase has in every project: its roles, and auth.uid() from the request's JWT.
    sqlx::raw_sql(
        "do $$ begin create role authenticated nologin; exception when duplicate_object then null; end $$;
         do $$ begin create role anon nologin; exception when duplicate_object then null; end $$;
         create schema auth;
         create function auth.uid() returns uuid language sql stable
             as $$ select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
         grant usage on schema auth to authenticated, anon;",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::raw_sql(documented_rls()).execute(&mut conn).await.expect("the documented SQL runs");

    let mut tx = conn.begin().await.unwrap();
    sqlx::raw_sql("set local role authenticated").execute(&mut *tx).await.unwrap();
    sqlx::query("select set_config('request.jwt.claim.sub', $1, true)").bind(ANN).execute(&mut *tx).await.unwrap();
    let seen: Vec<(String, i64)> =
        sqlx::query_as("select id, credits from tally.profiles").fetch_all(&mut *tx).await.unwrap();
    assert_eq!(seen, [(ANN.to_owned(), 99)], "only the caller's own row");
    let ledger = sqlx::query("select * from tally.ledger").fetch_all(&mut *tx).await;
    assert!(ledger.unwrap_err().to_string().contains("permission denied"), "nothing else of tally's");
    tx.rollback().await.unwrap();

    let mut tx = conn.begin().await.unwrap();
    sqlx::raw_sql("set local role anon").execute(&mut *tx).await.unwrap();
    let anon = sqlx::query("select * from tally.profiles").fetch_all(&mut *tx).await;
    assert!(anon.unwrap_err().to_string().contains("permission denied"), "anon reads nothing");
    tx.rollback().await.unwrap();

    // tally, the owner, still sees and writes everyone.
    app.spend(BEA, 3, "k3").await;
    assert_eq!(app.balance(BEA).await, ("free".into(), 95, 0));
}

/// The copy is part of the change: when the app's table refuses it (here a check that
/// knows no `enterprise`), the event is not applied either and is answered with an
/// error Stripe retries; once the table takes it, the retry applies it once.
#[tokio::test]
async fn a_profiles_write_the_app_refuses_applies_nothing_until_the_retry() {
    let (_db, url, mut conn) = app_database().await;
    sqlx::raw_sql("alter table public.profiles add constraint known_tiers check (tier in ('free', 'pro'))")
        .execute(&mut conn)
        .await
        .unwrap();
    let app = tally(&url, &[("TALLY_SYNC_PROFILES", "public.profiles")]).await;
    let mut ann = Customer::new(ANN, Shape::V2026, &GUIDE);
    ann.customer = "cus_app_ann".into();
    let event = ann.checkout("cs_1", "sub_1", "enterprise", "paid", now());

    let (status, body) = app.post_event(&event).await;
    assert!(!status.is_success(), "{status} {body}");
    assert_eq!(app.balance(ANN).await, ("free".into(), 100, 0), "nothing applied");
    assert_eq!(profile(&mut conn, ANN).await, ("free".into(), 0, Some("cus_app_ann".into())));

    sqlx::raw_sql("alter table public.profiles drop constraint known_tiers").execute(&mut conn).await.unwrap();
    app.deliver(&event, "applied").await;
    app.deliver(&event, "duplicate").await;
    assert_eq!(app.balance(ANN).await, ("enterprise".into(), 10_000, 0));
    assert_eq!(profile(&mut conn, ANN).await, ("enterprise".into(), 10_000, Some("cus_app_ann".into())));
    app.assert_books_balance().await;
}
