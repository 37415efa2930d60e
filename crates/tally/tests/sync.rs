//! `tally sync` against localstripe (PyPI), a stateful fake Stripe written by others:
//! subscriptions made there while tally's webhook endpoint is down are found by the
//! subscriptions pass, the events pass then grants nothing twice, and a later sync
//! finds nothing to change. On SQLite and Postgres. CI starts localstripe and sets
//! LOCALSTRIPE_URL; elsewhere this test is skipped.

mod support;

use std::path::Path;
use std::process::Output;

use serde_json::Value;

const API_KEY: &str = "sync-test-api-key";

async fn post(client: &reqwest::Client, url: String, form: &[(&str, &str)]) -> Value {
    let response = client.post(&url).bearer_auth("sk_test_localstripe").form(form).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    assert!(status.is_success(), "{url}: {status} {body}");
    body
}

/// A customer of `user` on a new plan, subscribed with a card that pays: localstripe
/// makes the subscription active and its first invoice paid. Returns the subscription.
async fn subscribe(ls: &str, plan: &str, user: &str) -> String {
    let client = reqwest::Client::new();
    let plan_form =
        [("id", plan), ("amount", "4900"), ("currency", "usd"), ("interval", "month"), ("product[name]", "Pro")];
    post(&client, format!("{ls}/v1/plans"), &plan_form).await;
    let card = [
        ("card[number]", "4242424242424242"),
        ("card[exp_month]", "12"),
        ("card[exp_year]", "2030"),
        ("card[cvc]", "123"),
    ];
    let token = post(&client, format!("{ls}/v1/tokens"), &card).await;
    let source = token["id"].as_str().unwrap();
    let customer =
        post(&client, format!("{ls}/v1/customers"), &[("metadata[user_id]", user), ("source", source)]).await;
    let form = [("customer", customer["id"].as_str().unwrap()), ("items[0][plan]", plan), ("metadata[user_id]", user)];
    let subscription = post(&client, format!("{ls}/v1/subscriptions"), &form).await;
    assert_eq!(subscription["status"], "active", "{subscription}");
    subscription["id"].as_str().unwrap().to_owned()
}

fn tally(dir: &Path, db: &str, ls: &str, plan: &str, args: &[&str]) -> Output {
    let mut cmd = support::tally(dir, db, support::free_port(), API_KEY);
    cmd.env("STRIPE_SECRET_KEY", "sk_test_localstripe")
        .env("STRIPE_API_BASE", ls)
        .env("STRIPE_PRO_PRICE_ID", plan)
        .args(args);
    cmd.output().unwrap()
}

fn ok(output: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{what}: {:?}\n{stdout}\n{stderr}", output.status);
    stdout
}

/// (tier, plan_credits) from `tally credits show`.
fn balance(dir: &Path, db: &str, ls: &str, plan: &str, user: &str) -> (String, i64) {
    let out = ok(&tally(dir, db, ls, plan, &["credits", "show", user]), "credits show");
    let billing: Value = serde_json::Deserializer::from_str(&out).into_iter().next().unwrap().unwrap();
    (billing["tier"].as_str().unwrap().to_owned(), billing["plan_credits"].as_i64().unwrap())
}

async fn sync_matches_localstripe_and_a_second_sync_changes_nothing(backend: &str, dir: &Path, db: &str) {
    let Some(ls) = tally_testdb::localstripe_url("the localstripe sync test") else { return };
    // localstripe keeps what every run made: names of this run's own.
    let tag = format!("{backend}_{}_{}", tally_store::now(), std::process::id());
    let (plan, user) = (format!("plan_sync_pro_{tag}"), format!("sync-user-{tag}"));
    // tally is not running: no webhook reaches it.
    let sub = subscribe(&ls, &plan, &user).await;
    assert_eq!(balance(dir, db, &ls, &plan, &user), ("free".into(), 100));

    let dry = ok(&tally(dir, db, &ls, &plan, &["sync", "--skip-events", "--dry-run"]), "sync --dry-run");
    assert!(dry.contains(&format!("{sub}: subscription not kept -> active; current period not granted")), "{dry}");
    assert!(dry.contains(&format!("would apply customer.subscription.updated from {sub}")), "{dry}");
    assert!(dry.contains("would apply invoice.paid from in_"), "{dry}");
    assert!(dry.contains("dry run: nothing was changed"), "{dry}");
    assert_eq!(balance(dir, db, &ls, &plan, &user), ("free".into(), 100));

    let output = tally(dir, db, &ls, &plan, &["sync", "--skip-events"]);
    let repaired = ok(&output, "sync --skip-events");
    // Not a terminal: progress comes as plain lines, a line a page, on stderr.
    let progress = String::from_utf8_lossy(&output.stderr);
    assert!(progress.lines().any(|l| l.starts_with("checked ") && l.ends_with(" subscriptions")), "{progress}");
    assert!(repaired.contains(&format!("{sub} (user {user}): subscription not kept -> active")), "{repaired}");
    let outcome = |what: &str| repaired.lines().find(|l| l.contains(what)).map(|l| l.rsplit(": ").next().unwrap());
    assert_eq!(outcome(&format!("customer.subscription.updated from {sub}")), Some("applied"), "{repaired}");
    assert_eq!(outcome("invoice.paid from in_"), Some("applied"), "{repaired}");
    assert_eq!(balance(dir, db, &ls, &plan, &user), ("pro".into(), 2_500));

    // The events localstripe kept for it now arrive too: the period is granted already.
    let full = ok(&tally(dir, db, &ls, &plan, &["sync", "--days", "1"]), "sync");
    assert!(!full.contains(&sub), "nothing left to repair for {sub}:\n{full}");
    assert!(full.contains("tally matches Stripe"), "{full}");
    assert_eq!(balance(dir, db, &ls, &plan, &user), ("pro".into(), 2_500));

    let ledger = ok(&tally(dir, db, &ls, &plan, &["credits", "show", &user]), "credits show");
    let again = ok(&tally(dir, db, &ls, &plan, &["sync", "--days", "1"]), "second sync");
    assert!(again.contains(", 0 differ") && !again.contains(&sub), "{again}");
    let unchanged = ok(&tally(dir, db, &ls, &plan, &["credits", "show", &user]), "credits show");
    assert_eq!(unchanged, ledger, "a second sync changes nothing");
    ok(&tally(dir, db, &ls, &plan, &["audit"]), "audit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_matches_localstripe_on_sqlite_and_a_second_sync_changes_nothing() {
    let dir = support::work_dir("sync-ls");
    let db = format!("sqlite://{}", dir.join("tally.db").display());
    sync_matches_localstripe_and_a_second_sync_changes_nothing("sqlite", &dir, &db).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_matches_localstripe_on_postgres_and_a_second_sync_changes_nothing() {
    let db = tally_testdb::TestDatabase::create();
    let dir = support::work_dir("sync-ls");
    sync_matches_localstripe_and_a_second_sync_changes_nothing("postgres", &dir, &db.url).await;
    let _ = std::fs::remove_dir_all(&dir);
}
