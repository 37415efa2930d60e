//! The OpenAPI document parses, lists every route the routers define, and every route
//! it lists answers.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{API_KEY, Db, spawn_app};

/// `(METHOD, path)` of every `.route("path", get(..).post(..))` in src/routes/.
fn routes_in_code() -> BTreeSet<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/routes");
    let mut routes = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let source = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for (start, _) in source.match_indices(".route(") {
            let call = balanced_call(&source[start + ".route".len()..]);
            let path = call.split('"').nth(1).unwrap();
            for method in ["get", "post", "put", "patch", "delete"] {
                if call.contains(&format!("{method}(")) {
                    routes.insert((method.to_uppercase(), path.to_owned()));
                }
            }
        }
    }
    routes
}

/// `(...)` at the start of `text`, up to its matching parenthesis.
fn balanced_call(text: &str) -> &str {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 1 => return &text[..=i],
            ')' => depth -= 1,
            _ => {}
        }
    }
    text
}

fn routes_in_document(doc: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.insert((method.to_uppercase(), path.clone()));
        }
    }
    routes
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_each_answers() {
    let app = spawn_app(Db::sqlite(&crate::helpers::GUIDE)).await;
    let response = app.client.get(format!("{}/openapi.json", app.address)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    let in_code = routes_in_code();
    assert!(in_code.len() >= 9, "found {in_code:?}");
    assert_eq!(routes_in_document(&doc), in_code, "openapi.json and src/routes/ disagree");

    for (method, path) in &in_code {
        let url = format!("{}{}", app.address, path.replace("{id}", "someone"));
        let response = app
            .client
            .request(Method::from_bytes(method.as_bytes()).unwrap(), url)
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
            || (status == StatusCode::NOT_FOUND && body.contains("route not found"));
        assert!(!unrouted, "{method} {path} is documented but not routed ({status})");
    }
}
