//! The verifier against headers made by Stripe's official SDK, and every way to fail.

use serde::Deserialize;
use tally_stripe::{SignatureError, Verifier, sign};

#[derive(Deserialize)]
struct Vectors {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    secret: String,
    timestamp: i64,
    payload: String,
    header: String,
}

fn sdk_vectors() -> Vec<Vector> {
    let text = include_str!("fixtures/signature_vectors.json");
    serde_json::from_str::<Vectors>(text).unwrap().vectors
}

const BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;
const NOW: i64 = 1_800_000_000;

#[test]
fn headers_made_by_stripes_sdk_are_accepted() {
    let vectors = sdk_vectors();
    assert!(vectors.len() >= 4);
    for v in vectors {
        let verifier = Verifier::new(&[v.secret.as_str()]);
        assert_eq!(verifier.verify(v.payload.as_bytes(), Some(&v.header), v.timestamp), Ok(v.timestamp));
        // and our signer produces exactly what the SDK does
        assert_eq!(sign(v.payload.as_bytes(), &v.secret, v.timestamp), v.header);
    }
}

#[test]
fn a_tampered_body_is_rejected() {
    for v in sdk_vectors() {
        let verifier = Verifier::new(&[v.secret.as_str()]);
        let tampered = format!("{} ", v.payload);
        assert_eq!(verifier.verify(tampered.as_bytes(), Some(&v.header), v.timestamp), Err(SignatureError::Mismatch));
    }
}

#[test]
fn a_wrong_secret_is_rejected() {
    let header = sign(BODY, "whsec_right", NOW);
    let verifier = Verifier::new(&["whsec_wrong"]);
    assert_eq!(verifier.verify(BODY, Some(&header), NOW), Err(SignatureError::Mismatch));
}

#[test]
fn timestamps_beyond_tolerance_either_way_are_rejected() {
    let verifier = Verifier::new(&["whsec_s"]);
    let old = sign(BODY, "whsec_s", NOW - 301);
    let future = sign(BODY, "whsec_s", NOW + 301);
    assert_eq!(verifier.verify(BODY, Some(&old), NOW), Err(SignatureError::OutsideTolerance(301)));
    assert_eq!(verifier.verify(BODY, Some(&future), NOW), Err(SignatureError::OutsideTolerance(-301)));
    let edge = sign(BODY, "whsec_s", NOW - 300);
    assert_eq!(verifier.verify(BODY, Some(&edge), NOW), Ok(NOW - 300));
}

#[test]
fn missing_and_malformed_headers_are_rejected() {
    let verifier = Verifier::new(&["whsec_s"]);
    assert_eq!(verifier.verify(BODY, None, NOW), Err(SignatureError::Missing));
    for bad in ["", "garbage", "t=abc,v1=00", "v1=00", "t=1,t=2,v1=00", "t=,v1=aa"] {
        assert_eq!(verifier.verify(BODY, Some(bad), NOW), Err(SignatureError::Malformed), "{bad:?}");
    }
    let no_v1 = format!("t={NOW},v0=abcdef");
    assert_eq!(verifier.verify(BODY, Some(&no_v1), NOW), Err(SignatureError::NoV1));
    let not_hex = format!("t={NOW},v1=zz");
    assert_eq!(verifier.verify(BODY, Some(&not_hex), NOW), Err(SignatureError::NoV1));
}

#[test]
fn a_second_configured_secret_is_accepted() {
    let verifier = Verifier::new(&["whsec_old", "whsec_new"]);
    for secret in ["whsec_old", "whsec_new"] {
        let header = sign(BODY, secret, NOW);
        assert_eq!(verifier.verify(BODY, Some(&header), NOW), Ok(NOW));
    }
}

#[test]
fn one_right_v1_among_several_is_enough() {
    let verifier = Verifier::new(&["whsec_s"]);
    let right = sign(BODY, "whsec_s", NOW);
    let right_sig = right.split_once(",v1=").unwrap().1;
    let wrong_sig = sign(BODY, "whsec_other", NOW).split_once(",v1=").unwrap().1.to_owned();
    let header = format!("t={NOW},v1={wrong_sig},v1={right_sig},v0=deadbeef");
    assert_eq!(verifier.verify(BODY, Some(&header), NOW), Ok(NOW));
    let only_wrong = format!("t={NOW},v1={wrong_sig}");
    assert_eq!(verifier.verify(BODY, Some(&only_wrong), NOW), Err(SignatureError::Mismatch));
}

#[test]
fn extreme_timestamps_are_refused_without_overflow() {
    let verifier = Verifier::new(&["whsec_test"]);
    let now = 1_700_000_000;
    for t in [i64::MIN, i64::MIN + 1, now - (1 << 62), now + (1 << 62), i64::MAX] {
        let header = format!("t={t},v1={}", "00".repeat(32));
        assert!(
            matches!(verifier.verify(b"{}", Some(&header), now), Err(SignatureError::OutsideTolerance(_))),
            "t={t}"
        );
    }
    let header = sign(b"{}", "whsec_test", i64::MIN);
    assert!(verifier.verify(b"{}", Some(&header), i64::MAX).is_err());
}
