//! What tally does to every webhook before the database: verify the Stripe-Signature
//! (HMAC-SHA256 over the raw body), then read the event into tally's type.
//!
//! Goals (docs/BENCHMARKS.md): at least 300k verifications per second per core on a
//! 3 KB body, and at least 100k verify + parse per second per core.
//!
//! Run: `cargo bench -p tally-stripe --bench webhook`

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tally_stripe::fake::{self, CheckoutSpec, InvoiceSpec, Shape, SubscriptionSpec};
use tally_stripe::{Verifier, parse_event, sign};

const SECRET: &str = "whsec_bench_0123456789abcdef0123456789abcdef";
const MONTH: i64 = 30 * 24 * 3600;

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The three events of the ingest load, in one API shape.
fn events(shape: Shape) -> Vec<(&'static str, String)> {
    let t = now();
    let invoice = fake::invoice(
        shape,
        &InvoiceSpec {
            id: "in_1PbenchInvoice000000000",
            subscription: "sub_1PbenchSubscription0000",
            customer: "cus_Pbench000000000",
            user: Some("user_42"),
            price: "price_tally_pro",
            billing_reason: "subscription_cycle",
            period_start: t,
            period_end: t + MONTH,
            amount: 4_900,
            status: "paid",
        },
    );
    let session = fake::checkout_session(
        shape,
        &CheckoutSpec {
            id: "cs_test_a1bench000000000000000000000000000000000000000000000000",
            user: "user_42",
            item: "pro",
            payment_status: "paid",
            customer: "cus_Pbench000000000",
            subscription: Some("sub_1PbenchSubscription0000"),
            payment_intent: None,
            amount: 4_900,
        },
    );
    let subscription = fake::subscription(
        shape,
        &SubscriptionSpec {
            id: "sub_1PbenchSubscription0000",
            customer: "cus_Pbench000000000",
            user: Some("user_42"),
            price: "price_tally_enterprise",
            status: "active",
            start_date: t,
            period_start: t,
            period_end: t + MONTH,
            cancel_at_period_end: false,
        },
    );
    [
        ("invoice.paid", invoice),
        ("checkout.session.completed", session),
        ("customer.subscription.updated", subscription),
    ]
    .into_iter()
    .map(|(kind, object)| (kind, fake::event(shape, kind, "evt_1PbenchEvent00000000000", t, object).to_string()))
    .collect()
}

/// A real event body made exactly `len` bytes long (trailing JSON whitespace, or cut).
fn body_of_len(len: usize) -> Vec<u8> {
    let (_, body) = events(Shape::V2026).swap_remove(0);
    let mut body = body.into_bytes();
    body.resize(len, b' ');
    body
}

fn signatures(c: &mut Criterion) {
    let verifier = Verifier::new(&[SECRET]);
    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(1));
    for len in [3 * 1024, 5 * 1024] {
        let body = body_of_len(len);
        let t = now();
        let header = sign(&body, SECRET, t);
        assert_eq!(verifier.verify(&body, Some(&header), t), Ok(t));
        group.bench_function(format!("{len}B"), |b| {
            b.iter(|| verifier.verify(black_box(&body), black_box(Some(header.as_str())), t))
        });
    }
    // During a secret rotation the wrong secret is tried first.
    let rotating = Verifier::new(&["whsec_old_secret_0000000000000000", SECRET]);
    let body = body_of_len(3 * 1024);
    let t = now();
    let header = sign(&body, SECRET, t);
    group.bench_function("3072B, second of two secrets", |b| {
        b.iter(|| rotating.verify(black_box(&body), black_box(Some(header.as_str())), t))
    });
    group.finish();
}

fn verify_and_parse(c: &mut Criterion) {
    let verifier = Verifier::new(&[SECRET]);
    let mut group = c.benchmark_group("verify+parse");
    group.throughput(Throughput::Elements(1));
    for (shape, name) in [(Shape::V2026, "2026"), (Shape::V2023, "2023")] {
        for (kind, body) in events(shape) {
            let t = now();
            let header = sign(body.as_bytes(), SECRET, t);
            let parsed = parse_event(body.as_bytes()).expect("a fake event parses");
            assert!(parsed.event.is_ok(), "{kind}: {:?}", parsed.event);
            group.bench_function(format!("{kind} {name} ({}B)", body.len()), |b| {
                b.iter(|| {
                    verifier.verify(black_box(body.as_bytes()), Some(header.as_str()), t).expect("valid");
                    parse_event(black_box(body.as_bytes())).expect("an event")
                })
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    for (kind, body) in events(Shape::V2026) {
        group.bench_function(format!("{kind} 2026 ({}B)", body.len()), |b| {
            b.iter(|| parse_event(black_box(body.as_bytes())).expect("an event"))
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = signatures, verify_and_parse }
criterion_main!(benches);
