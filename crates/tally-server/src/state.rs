//! What every handler shares.

use std::sync::Arc;

use tally_core::Catalog;
use tally_store::Store;
use tally_stripe::Verifier;

use crate::Config;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub catalog: Arc<Catalog>,
    pub verifier: Arc<Verifier>,
    pub api_key: Option<Arc<str>>,
}

impl AppState {
    pub fn new(config: Config, store: Store, webhook_secrets: &[String]) -> AppState {
        AppState {
            store,
            catalog: Arc::new(config.catalog),
            verifier: Arc::new(Verifier::new(webhook_secrets)),
            api_key: config.api_key.map(Arc::from),
        }
    }
}
