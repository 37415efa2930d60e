//! A test database is on the server until its value is dropped, also when its test fails.

use sqlx::{Connection, PgConnection};
use tally_testdb::{TestDatabase, server_url};

fn exists(name: &str) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut conn = PgConnection::connect(server_url()).await.unwrap();
        let n: i64 = sqlx::query_scalar("select count(*) from pg_database where datname = $1")
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        n == 1
    })
}

#[test]
fn a_postgres_test_database_is_dropped_with_its_value() {
    let db = TestDatabase::create();
    let name = db.name.clone();
    assert!(exists(&name));
    drop(db);
    assert!(!exists(&name));
}

#[test]
fn a_postgres_test_database_is_dropped_when_its_test_panics() {
    let name = std::panic::catch_unwind(|| {
        let db = TestDatabase::create();
        std::panic::panic_any(db.name.clone());
    })
    .unwrap_err()
    .downcast::<String>()
    .unwrap();
    assert!(!exists(&name));
}
