//! Reservations: hold before a metered call, commit or release after it.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;
use tally_stripe::fake::Shape;

use crate::helpers::{Customer, Db, TestApp, now, spawn_app};
use crate::on_both_backends_and_catalogues;

on_both_backends_and_catalogues!(
    reserve_then_commit_less_spends_the_committed_amount,
    reserve_then_release_spends_nothing,
    an_expired_hold_frees_itself,
    double_commit_and_commit_after_release_change_nothing_twice,
    held_credits_cannot_be_spent_or_reserved_twice,
    the_same_reserve_key_returns_the_same_reservation,
    committing_more_than_held_is_400,
    thirty_two_reservations_against_a_balance_for_ten,
    reservations_and_spends_racing_never_go_negative,
    a_refund_takes_only_credits_that_are_not_held,
    racing_commits_and_releases_of_one_hold_settle_it_once,
    settling_one_hold_leaves_the_others_held,
    reserve_and_commit_in_one_batch_see_each_other,
);

fn id(body: &Value) -> String {
    body["reservation_id"].as_str().unwrap_or_else(|| panic!("no reservation in {body}")).to_owned()
}

async fn credits(app: &TestApp, user: &str) -> (i64, i64) {
    let b = app.billing(user).await;
    (b["credits"].as_i64().unwrap(), b["reserved_credits"].as_i64().unwrap())
}

async fn reserve_then_commit_less_spends_the_committed_amount(db: Db) {
    let app = spawn_app(db).await;
    let free = app.shop.free;
    let (status, held) = app.reserve("ann", 8, "r1", 60).await;
    assert_eq!(status, StatusCode::OK, "{held}");
    assert_eq!(held["status"], "held");
    assert!(held["expires_at"].as_i64().unwrap() >= now() + 59);
    assert_eq!(credits(&app, "ann").await, (free, 8));
    let (status, done) = app.commit(&id(&held), 5).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!((done["status"].as_str(), done["committed"].as_i64()), (Some("committed"), Some(5)));
    assert_eq!(done["billing"]["credits"], free - 5);
    assert_eq!(credits(&app, "ann").await, (free - 5, 0));
    app.assert_books_balance().await;
}

async fn reserve_then_release_spends_nothing(db: Db) {
    let app = spawn_app(db).await;
    let (_, held) = app.reserve("ann", 8, "r1", 60).await;
    let (status, done) = app.release(&id(&held)).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "released");
    assert_eq!(credits(&app, "ann").await, (app.shop.free, 0));
    app.assert_books_balance().await;
}

async fn an_expired_hold_frees_itself(db: Db) {
    let app = spawn_app(db).await;
    let free = app.shop.free;
    let (_, held) = app.reserve("ann", free - 10, "r1", 2).await;
    assert_eq!(credits(&app, "ann").await, (free, free - 10));
    tokio::time::sleep(std::time::Duration::from_millis(3_100)).await;
    assert_eq!(credits(&app, "ann").await, (free, 0), "freed with no job");
    // All of it: what was held is free again.
    let (status, _) = app.spend("ann", free, "k1").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.commit(&id(&held), 10).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["status"], "expired");
    assert_eq!(credits(&app, "ann").await, (0, 0));
    app.assert_books_balance().await;
}

async fn double_commit_and_commit_after_release_change_nothing_twice(db: Db) {
    let app = spawn_app(db).await;
    let (_, a) = app.reserve("ann", 6, "a", 60).await;
    app.commit(&id(&a), 6).await;
    let (status, body) = app.commit(&id(&a), 6).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!((body["error"].as_str(), body["status"].as_str()), (Some("reservation_closed"), Some("committed")));
    let (_, b) = app.reserve("ann", 6, "b", 60).await;
    app.release(&id(&b)).await;
    let (status, body) = app.commit(&id(&b), 10).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::CONFLICT, Some("released")));
    let (status, _) = app.release(&id(&b)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = app.commit("res_nope", 1).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(credits(&app, "ann").await, (app.shop.free - 6, 0));
    app.assert_books_balance().await;
}

async fn held_credits_cannot_be_spent_or_reserved_twice(db: Db) {
    let app = spawn_app(db).await;
    // All but 5 held.
    app.reserve("ann", app.shop.free - 5, "r1", 60).await;
    let (status, body) = app.spend("ann", 6, "k1").await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(body["available"], 5);
    let (status, _) = app.reserve("ann", 6, "r2", 60).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    let (status, _) = app.spend("ann", 5, "k2").await;
    assert_eq!(status, StatusCode::OK);
}

async fn the_same_reserve_key_returns_the_same_reservation(db: Db) {
    let app = spawn_app(db).await;
    let (_, first) = app.reserve("ann", 10, "same", 60).await;
    let (status, second) = app.reserve("ann", 10, "same", 60).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(id(&first), id(&second));
    assert_eq!(credits(&app, "ann").await, (app.shop.free, 10));
    let (status, _) = app.reserve("bob", 10, "same", 60).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

async fn committing_more_than_held_is_400(db: Db) {
    let app = spawn_app(db).await;
    let (_, held) = app.reserve("ann", 10, "r1", 60).await;
    let (status, body) = app.commit(&id(&held), 11).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(credits(&app, "ann").await, (app.shop.free, 10), "still held");
    let (status, _) = app
        .post(&format!("/api/credits/reservations/{}/commit", id(&held)), &serde_json::json!({"amount": 1, "extra": 2}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn thirty_two_reservations_against_a_balance_for_ten(db: Db) {
    let app = spawn_app(db).await;
    app.spend("hot", app.shop.free - 10, "setup").await;
    let answers = join_all((0..32).map(|i| {
        let app = &app;
        async move { app.reserve("hot", 1, &format!("r{i}"), 60).await.0 }
    }))
    .await;
    let held = answers.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = answers.iter().filter(|s| **s == StatusCode::PAYMENT_REQUIRED).count();
    assert_eq!((held, refused), (10, 22), "{answers:?}");
    assert_eq!(credits(&app, "hot").await, (10, 10));
}

async fn reservations_and_spends_racing_never_go_negative(db: Db) {
    let app = spawn_app(db).await;
    let work = (0..40).map(|i| {
        let app = &app;
        async move {
            if i % 2 == 0 {
                let (status, body) = app.reserve("race", 7, &format!("r{i}"), 60).await;
                if status == StatusCode::OK {
                    app.commit(&id(&body), 5).await;
                }
            } else {
                app.spend("race", 6, &format!("s{i}")).await;
            }
        }
    });
    join_all(work).await;
    let (credits, reserved) = credits(&app, "race").await;
    assert!(credits >= 0 && reserved == 0, "credits {credits}, reserved {reserved}");
    app.assert_books_balance().await;
}

async fn a_refund_takes_only_credits_that_are_not_held(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("ann", Shape::V2026, s);
    app.deliver(&c.topup("checkout.session.completed", "cs_1", "pi_1", "paid", now()), "applied").await;
    // All but 50 held, so a full refund finds only 50 to take back.
    let hold = s.free + s.pack.credits - 50;
    app.reserve("ann", hold, "r1", 60).await;
    app.deliver(&c.refund("ch_1", "pi_1", s.pack.amount, now()), "applied").await;
    let b = app.billing("ann").await;
    assert_eq!((b["topup_credits"].as_i64(), b["reserved_credits"].as_i64()), (Some(s.pack.credits - 50), Some(hold)));
    let (_, rows) = app.get("/api/users/ann/ledger?limit=1").await;
    assert_eq!(rows[0]["reason"], "topup_refund_partial");
    app.assert_books_balance().await;
}

async fn racing_commits_and_releases_of_one_hold_settle_it_once(db: Db) {
    let app = spawn_app(db).await;
    let (_, held) = app.reserve("ann", 8, "r1", 60).await;
    let hold = id(&held);
    let answers = join_all((0..8).map(|i| {
        let (app, hold) = (&app, &hold);
        async move { if i % 2 == 0 { app.commit(hold, 6).await.0 } else { app.release(hold).await.0 } }
    }))
    .await;
    assert_eq!(answers.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{answers:?}");
    assert_eq!(answers.iter().filter(|s| **s == StatusCode::CONFLICT).count(), 7, "{answers:?}");
    let (credits, reserved) = credits(&app, "ann").await;
    let free = app.shop.free;
    assert!(credits == free - 6 || credits == free, "committed once or released: {credits}");
    assert_eq!(reserved, 0);
    app.assert_books_balance().await;
}

async fn settling_one_hold_leaves_the_others_held(db: Db) {
    let app = spawn_app(db).await;
    let free = app.shop.free;
    let (_, a) = app.reserve("ann", 8, "a", 60).await;
    let (_, b) = app.reserve("ann", 3, "b", 60).await;
    let (_, c) = app.reserve("ann", 2, "c", 60).await;
    let (status, done) = app.commit(&id(&a), 5).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    // The answer counts the holds still open, as the billing read does.
    assert_eq!(
        (done["billing"]["credits"].as_i64(), done["billing"]["reserved_credits"].as_i64()),
        (Some(free - 5), Some(5))
    );
    let (status, done) = app.release(&id(&b)).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["billing"]["reserved_credits"], 2);
    assert_eq!(credits(&app, "ann").await, (free - 5, 2));
    let (status, _) = app.commit(&id(&c), 2).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(credits(&app, "ann").await, (free - 7, 0));
    app.assert_books_balance().await;
}

/// Reserves and commits sent at once share the writer's batches: each sees what the
/// ones before it in its batch did (a commit finds its hold, a second reserve of one key
/// the first), and every hold is written once.
async fn reserve_and_commit_in_one_batch_see_each_other(db: Db) {
    let app = spawn_app(db).await;
    let free = app.shop.free;
    let holds = join_all((0..10).map(|i| {
        let app = &app;
        async move { app.reserve("ann", 1, &format!("k{}", i % 5), 60).await }
    }))
    .await;
    let mut ids: Vec<String> = holds
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, StatusCode::OK, "{body}");
            id(body)
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "one reservation per key");
    assert_eq!(credits(&app, "ann").await, (free, 5));
    let settled = join_all(ids.iter().map(|r| app.commit(r, 1))).await;
    assert!(settled.iter().all(|(status, _)| *status == StatusCode::OK), "{settled:?}");
    assert_eq!(credits(&app, "ann").await, (free - 5, 0));
    let again = join_all(ids.iter().map(|r| app.release(r))).await;
    assert!(again.iter().all(|(status, _)| *status == StatusCode::CONFLICT), "{again:?}");
    app.assert_books_balance().await;
}
