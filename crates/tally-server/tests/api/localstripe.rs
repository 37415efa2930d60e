//! Real signed deliveries from localstripe (PyPI), a stateful fake Stripe written by
//! others: a subscription created there reaches tally as its own webhooks, in
//! localstripe's order and its 2017 API shape (legacy plans), and grants once.
//! CI starts localstripe and sets LOCALSTRIPE_URL; elsewhere this test is skipped.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{Db, SECRET, now, spawn_app_with};

async fn post(client: &reqwest::Client, url: String, form: &[(&str, &str)]) -> Value {
    let response = client.post(&url).bearer_auth("sk_test_localstripe").form(form).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    assert!(status.is_success(), "{url}: {status} {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localstripes_signed_deliveries_grant_the_plan_once() {
    let Some(ls) = tally_testdb::localstripe_url("the localstripe webhooks test") else { return };
    let n = now();
    let plan = format!("plan_tally_pro_{n}_{}", std::process::id());
    let user = format!("ls-user-{n}-{}", std::process::id());
    let app = spawn_app_with(Db::sqlite(&crate::helpers::GUIDE), &[("STRIPE_PRO_PRICE_ID", plan.as_str())]).await;
    let client = reqwest::Client::new();
    let hook = format!("{ls}/_config/webhooks/tally_{n}_{}", std::process::id());
    let endpoint = format!("{}/api/webhooks/stripe", app.address);
    post(&client, hook, &[("url", endpoint.as_str()), ("secret", SECRET)]).await;
    let plan_form = [
        ("id", plan.as_str()),
        ("amount", "4900"),
        ("currency", "usd"),
        ("interval", "month"),
        ("product[name]", "Pro"),
    ];
    post(&client, format!("{ls}/v1/plans"), &plan_form).await;
    let card = [
        ("card[number]", "4242424242424242"),
        ("card[exp_month]", "12"),
        ("card[exp_year]", "2030"),
        ("card[cvc]", "123"),
    ];
    let token = post(&client, format!("{ls}/v1/tokens"), &card).await;
    let token = token["id"].as_str().unwrap();
    let customer =
        post(&client, format!("{ls}/v1/customers"), &[("metadata[user_id]", user.as_str()), ("source", token)]).await;
    let customer = customer["id"].as_str().unwrap();
    let subscription =
        [("customer", customer), ("items[0][plan]", plan.as_str()), ("metadata[user_id]", user.as_str())];
    let created = post(&client, format!("{ls}/v1/subscriptions"), &subscription).await;
    assert_eq!(created["status"], "active");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (tier, plan_credits, _) = app.balance(&user).await;
        if tier == "pro" {
            assert_eq!(plan_credits, 2_500);
            break;
        }
        assert!(Instant::now() < deadline, "localstripe's webhooks did not make {user} pro");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every delivery was verified and stored once; none is left unmatched or failed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app.store.events_with_outcome("unmatched").await.unwrap().is_empty());
    assert!(app.store.events_with_outcome("failed").await.unwrap().is_empty());
    assert_eq!(app.store.stripe_customer(&user).await.unwrap().as_deref(), Some(customer));
    assert_eq!(app.balance(&user).await, ("pro".into(), 2_500, 0));
    app.assert_books_balance().await;
}
