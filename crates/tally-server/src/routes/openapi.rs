//! `GET /openapi.json`: the OpenAPI 3.1 document of every route, kept beside the code
//! and checked against the routers by a test. The file is catalogue-neutral; the
//! served document names this catalogue's tiers and items as enums, so a client
//! generated from it knows the app's own plans.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};
use tally_core::Catalogue;

use crate::AppState;

pub const DOCUMENT: &str = include_str!("../../openapi.json");

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(show_openapi))
}

async fn show_openapi(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], state.openapi_json)
}

/// The document with the catalogue's tier and item ids as enums.
pub fn document_for(catalogue: &Catalogue) -> Value {
    let mut doc: Value = serde_json::from_str(DOCUMENT).expect("openapi.json is JSON (checked by a test)");
    let plans: Vec<&str> = catalogue.plans.iter().map(|p| p.id.as_str()).collect();
    let items: Vec<&str> = plans.iter().copied().chain(catalogue.packs.iter().map(|p| p.id.as_str())).collect();
    let tiers: Vec<&str> = std::iter::once(tally_core::FREE).chain(plans.iter().copied()).collect();
    let schemas = &mut doc["components"]["schemas"];
    schemas["Billing"]["properties"]["tier"]["enum"] = json!(tiers);
    schemas["CheckoutRequest"]["properties"]["item"]["enum"] = json!(items);
    let mut plan_or_null: Vec<Value> = plans.iter().map(|p| json!(p)).collect();
    plan_or_null.push(Value::Null);
    schemas["Subscription"]["properties"]["plan"]["enum"] = Value::Array(plan_or_null);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_served_document_names_the_catalogues_ids() {
        let studio = Catalogue::from_toml(
            "[plans.hobby]\nname = \"Hobby\"\ncredits = 5\nrank = 1\n\
             prices = [{ id = \"p\", amount = 100, currency = \"usd\", interval = \"month\" }]\n\
             [packs.boost]\nname = \"Boost\"\ncredits = 5\nprices = [{ id = \"q\", amount = 100, currency = \"usd\" }]\n",
        )
        .unwrap();
        let doc = document_for(&studio);
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["Billing"]["properties"]["tier"]["enum"], json!(["free", "hobby"]));
        assert_eq!(schemas["CheckoutRequest"]["properties"]["item"]["enum"], json!(["hobby", "boost"]));
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
