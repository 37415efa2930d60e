//! tally's Stripe client against localstripe, a stateful fake Stripe written by others.
//! CI starts it (see .ci/run) and sets LOCALSTRIPE_URL; elsewhere this test is skipped.

use tally_stripe::{ClientOptions, StripeClient};

#[tokio::test]
async fn a_customer_created_with_metadata_reads_back() {
    let Some(url) = tally_testdb::localstripe_url("the localstripe test") else { return };
    let client = StripeClient::new(&url, "sk_test_localstripe", ClientOptions::default());
    let user = format!("user-{}", std::process::id());
    let created = client.create_customer(&user).await.expect("localstripe creates the customer");
    assert!(created.id.starts_with("cus_"), "{}", created.id);
    let fetched = client.retrieve_customer(&created.id).await.expect("and reads it back");
    assert_eq!(fetched["id"], created.id.as_str());
    assert_eq!(fetched["metadata"]["user_id"], user.as_str());
}
