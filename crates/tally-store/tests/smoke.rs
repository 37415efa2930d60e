//! The store's queries run on both backends.

use tally_store::{Spend, Store};
use tally_testdb::TestDatabase;

/// A store on SQLite and one on Postgres (a database of its own, dropped with the
/// returned guard); without Postgres this panics, saying the test is skipped.
async fn each_backend() -> (Vec<Store>, TestDatabase) {
    let dir = std::env::temp_dir().join(format!("tally-store-smoke-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let postgres = TestDatabase::create();
    let stores = vec![
        Store::connect(&format!("sqlite://{}", dir.display()), Default::default()).await.unwrap(),
        Store::connect(&postgres.url, Default::default()).await.unwrap(),
    ];
    (stores, postgres)
}

#[tokio::test]
async fn migrations_spend_and_ledger_work_on_sqlite_and_postgres() {
    let (stores, _postgres) = each_backend().await;
    for store in stores {
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        let user = format!("smoke-{}", std::process::id());
        let spend = Spend { user_id: &user, amount: 30, idempotency_key: &format!("{user}-k"), reason: "test" };
        let billing = store.spend(spend).await.unwrap();
        assert_eq!(billing.credits, 70);
        let again = store.spend(spend).await.unwrap();
        assert_eq!(again.credits, 70);
        let ledger = store.ledger(&user, 10, None).await.unwrap();
        assert_eq!(ledger.len(), 2);
        assert!(store.unbalanced_accounts().await.unwrap().is_empty());
        assert_eq!(store.setting_or_insert("k", "v1").await.unwrap(), "v1");
        assert_eq!(store.setting_or_insert("k", "v2").await.unwrap(), "v1");
    }
}

#[tokio::test]
async fn a_value_the_database_refuses_is_not_an_outage_on_sqlite_or_postgres() {
    let (stores, _postgres) = each_backend().await;
    for store in stores {
        store.migrate().await.unwrap();
        // Postgres refuses a NUL byte in text (SQLSTATE 22021) every time: retrying
        // cannot help, so it must not read as "unavailable" (which answers 503).
        let spend = Spend { user_id: "nul\0user", amount: 1, idempotency_key: "nul-key", reason: "test" };
        match store.spend(spend).await {
            Ok(_) => assert_eq!(store.backend(), tally_store::Backend::Sqlite, "SQLite stores NUL in text"),
            Err(e) => assert!(!matches!(e, tally_store::StoreError::Unavailable(_)), "{e}"),
        }
    }
}

#[tokio::test]
async fn signature_failures_are_counted_an_hour_a_row_and_pruned_on_sqlite_and_postgres() {
    let (stores, _postgres) = each_backend().await;
    let now = tally_store::now();
    for store in stores {
        store.migrate().await.unwrap();
        store.record_signature_failures(4, now - 3 * 86_400).await.unwrap();
        assert_eq!(store.signature_failures_since(now - 4 * 86_400).await.unwrap(), (4, 1));
        store.record_signature_failures(2, now).await.unwrap();
        store.record_signature_failures(3, now).await.unwrap();
        // The old hour is gone; this hour is one row.
        assert_eq!(store.signature_failures_since(now - 24 * 3600).await.unwrap(), (5, 1));

        // A flood: counted in memory, written by one task at a time, never awaited.
        for _ in 0..1_000 {
            store.note_signature_failure();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (count, rows) = store.signature_failures_since(now - 24 * 3600).await.unwrap();
            assert!(rows <= 2, "one row an hour: {rows}");
            if count == 1_005 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "counted {count}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
