//! What `tally sync` compares Stripe with: the subscriptions tally keeps with the periods
//! they have granted, which events are stored already (for `--dry-run`), and the cursor
//! an interrupted sync resumes from.

use std::collections::{BTreeSet, HashMap, HashSet};

use tally_core::rules::SubscriptionState;

use crate::rows::{self, SUBSCRIPTION_COLUMNS, SubscriptionRow};
use crate::sql::fetch_in;
use crate::{Store, StoreError};

/// A subscription as tally keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptSubscription {
    pub state: SubscriptionState,
    /// The starts of the periods that have granted (see `tally_core::rules`).
    pub granted: BTreeSet<i64>,
}

/// Where the subscriptions pass of an interrupted sync stopped.
const SYNC_CURSOR: &str = "sync_cursor";

impl Store {
    /// The subscriptions with these ids that tally keeps.
    pub async fn kept_subscriptions(&self, ids: &[&str]) -> Result<HashMap<String, KeptSubscription>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let sql = format!("select {SUBSCRIPTION_COLUMNS} from subscriptions where id in ({{keys}})");
        let found: Vec<SubscriptionRow> = fetch_in(&mut conn, &sql, None, ids).await?;
        let sql =
            "select subscription_id, start from periods where granted is not null and subscription_id in ({keys})";
        let granted: Vec<(String, i64)> = fetch_in(&mut conn, sql, None, ids).await?;
        let mut kept: HashMap<String, KeptSubscription> = found
            .into_iter()
            .map(|row| {
                let state = rows::subscription(row);
                (state.id.clone(), KeptSubscription { state, granted: BTreeSet::new() })
            })
            .collect();
        for (id, start) in granted {
            if let Some(sub) = kept.get_mut(&id) {
                sub.granted.insert(start);
            }
        }
        Ok(kept)
    }

    /// Which of these event ids the inbox holds.
    pub async fn stored_event_ids(&self, ids: &[&str]) -> Result<HashSet<String>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let found: Vec<(String,)> =
            fetch_in(&mut conn, "select id from events where id in ({keys})", None, ids).await?;
        Ok(found.into_iter().map(|(id,)| id).collect())
    }

    /// The last subscription an interrupted sync finished, if one was interrupted.
    pub async fn sync_cursor(&self) -> Result<Option<String>, StoreError> {
        self.setting(SYNC_CURSOR).await
    }

    /// Records that the sync has finished every subscription up to `after`; `None`
    /// when it has finished them all.
    pub async fn set_sync_cursor(&self, after: Option<&str>) -> Result<(), StoreError> {
        match after {
            Some(id) => {
                sqlx::query(
                    "insert into settings (key, value) values ($1, $2)
                     on conflict (key) do update set value = excluded.value",
                )
                .bind(SYNC_CURSOR)
                .bind(id)
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("delete from settings where key = $1").bind(SYNC_CURSOR).execute(&self.pool).await?;
            }
        }
        Ok(())
    }
}
