//! A unit of work: the rows a batch of writes touches, read (and locked) in a few
//! queries, changed in memory job after job, and written back in a few more.
//!
//! Every read goes through a cache that is filled in bulk before the jobs run
//! ([`Unit::prefetch`]) and, for whatever the prefetch could not foresee, one key at a
//! time. A row the batch has changed is never read again from the database, so each job
//! sees what the jobs before it did, as if each had its own transaction.
//!
//! One rule keeps this exactly-once when other processes write too (a second server,
//! `tally sync`): the state a job decides on (a subscription, its periods, a top-up,
//! holds, ledger references) is read only after the account it belongs to is locked.
//! Before the locks, only who owns what is read, which never changes once written.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::{AnyConnection, AssertSqlSafe};
use tally_core::rules::{Changes, Period, SubscriptionState, Topup, TopupKey};
use tally_core::{Account, Catalogue, Entry, EventKind};

use crate::holds::{HOLD_COLUMNS, HoldColumns, HoldKey, HoldRow};
use crate::ingest::Waits;
use crate::model::{IngestOutcome, SubscriptionView};
use crate::profiles::{Profile, ProfilesTable};
use crate::rows::{self, AccountRow, SUBSCRIPTION_COLUMNS, SubscriptionRow};
use crate::sql::{CHUNK, by_size, fetch_in, fetch_union, insert_rows, unique, value_rows};
use crate::{StoreError, views};

/// A locked account and whether the batch changed its row.
pub struct Held {
    pub account: Account,
    pub customer: Option<String>,
    dirty: bool,
}

/// A new event to store once the batch has applied it.
pub struct NewEventRow {
    pub id: String,
    pub event_type: String,
    pub created: i64,
    pub livemode: bool,
    pub payload: String,
    pub outcome: IngestOutcome,
    pub waits: Waits,
    pub attempts: i64,
}

pub struct Unit<'c> {
    conn: &'c mut AnyConnection,
    /// Names the free allowance of the accounts it opens, and is what the rules decide by.
    pub catalogue: &'c Catalogue,
    /// The app's profiles table, written with the accounts.
    profiles: Option<&'c ProfilesTable>,
    t: i64,
    accounts: HashMap<String, Held>,
    /// Accounts this unit opened (inserted), in order.
    opened: Vec<String>,
    subscriptions: HashMap<String, Option<SubscriptionState>>,
    periods: HashMap<String, BTreeMap<i64, Period>>,
    // Whose is each subscription, Stripe customer and payment intent: fixed once written,
    // so these may be read before any lock, to find the accounts to lock.
    subscription_users: HashMap<String, Option<String>>,
    customers: HashMap<String, Option<String>>,
    intent_users: HashMap<String, Option<String>>,
    reservation_users: HashMap<String, Option<String>>,
    topups: HashMap<String, Option<Topup>>,
    /// Payment intent -> the session of its top-up.
    topup_intents: HashMap<String, Option<String>>,
    /// Each user's held credits, and the time they were counted at.
    reserved: HashMap<String, (i64, i64)>,
    /// Reservations by id, and the id of each idempotency key.
    reservations: HashMap<String, Option<HoldRow>>,
    reservation_keys: HashMap<String, Option<String>>,
    /// Ledger reference -> who made it and what it moved.
    references: HashMap<String, Option<Used>>,
    // What to write at the end, in order.
    entries: Vec<(String, Entry)>,
    dirty_subscriptions: Vec<String>,
    dirty_periods: Vec<(String, i64)>,
    dirty_topups: Vec<String>,
    dirty_reservations: Vec<String>,
    pub events: Vec<NewEventRow>,
    /// `(event, owner, named)`: events applied to their customer's owner although their
    /// metadata names someone else.
    conflicts: Vec<(String, String, String)>,
    /// Stored events delivered again: the new outcome (and wait) if applied again, and
    /// the deliveries beyond the one `claim` counted.
    pub outcomes: Vec<(String, Option<Reapplied>, i64)>,
}

/// A stored event's new outcome, and what it waits for if it is still unmatched.
pub type Reapplied = (IngestOutcome, Waits);

/// The keys not yet in `known`, each once.
fn missing<'k, V>(keys: impl IntoIterator<Item = &'k str>, known: &HashMap<String, V>) -> Vec<&'k str> {
    let mut seen = HashSet::new();
    keys.into_iter().filter(|k| !known.contains_key(*k) && seen.insert(*k)).collect()
}

/// What an owner lookup reads: the user each key belongs to.
#[derive(Clone, Copy)]
enum Owned {
    Subscription,
    Customer,
    Intent,
    Reservation,
}

/// A ledger reference already made: by whom, and the sum of its rows' deltas (a spend's
/// key moved -amount, a grant's +amount), so that a key reused for something else is told
/// apart from a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Used {
    pub user_id: String,
    pub delta: i64,
}

impl Owned {
    const ALL: [Owned; 4] = [Owned::Subscription, Owned::Customer, Owned::Intent, Owned::Reservation];

    /// The tag its rows carry in the union, and the table and column of its keys.
    fn source(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Owned::Subscription => ("s", "subscriptions", "id"),
            Owned::Customer => ("c", "accounts", "stripe_customer_id"),
            Owned::Intent => ("i", "topups", "payment_intent"),
            Owned::Reservation => ("r", "reservations", "id"),
        }
    }

    /// A select of `(tag, key, user)` for the keys in `{keys}`, to be joined with the
    /// other kinds' by `union all`.
    fn sql(self) -> String {
        let (tag, table, column) = self.source();
        format!("select '{tag}', {column}, user_id from {table} where {column} in ({{keys}})")
    }

    /// The kind whose [`Owned::sql`] selects `tag` first.
    fn of_tag(tag: &str) -> Option<Owned> {
        Owned::ALL.into_iter().find(|kind| kind.source().0 == tag)
    }
}

impl<'c> Unit<'c> {
    pub fn new(conn: &'c mut AnyConnection, catalogue: &'c Catalogue) -> Unit<'c> {
        Unit {
            conn,
            catalogue,
            profiles: None,
            t: crate::now(),
            accounts: HashMap::new(),
            opened: Vec::new(),
            subscriptions: HashMap::new(),
            periods: HashMap::new(),
            subscription_users: HashMap::new(),
            customers: HashMap::new(),
            intent_users: HashMap::new(),
            reservation_users: HashMap::new(),
            topups: HashMap::new(),
            topup_intents: HashMap::new(),
            reserved: HashMap::new(),
            reservations: HashMap::new(),
            reservation_keys: HashMap::new(),
            references: HashMap::new(),
            entries: Vec::new(),
            dirty_subscriptions: Vec::new(),
            dirty_periods: Vec::new(),
            dirty_topups: Vec::new(),
            dirty_reservations: Vec::new(),
            events: Vec::new(),
            conflicts: Vec::new(),
            outcomes: Vec::new(),
        }
    }

    /// Also writes each changed account into the app's profiles table, when there is one.
    pub fn syncing(mut self, profiles: Option<&'c ProfilesTable>) -> Unit<'c> {
        self.profiles = profiles;
        self
    }

    #[cfg(test)]
    fn conn(&mut self) -> &mut AnyConnection {
        self.conn
    }

    /// Reads in bulk what these events, these users' spends and these holds will touch:
    /// whose they are, then (with those accounts locked) the state the rules decide on.
    pub async fn prefetch(
        &mut self,
        events: &[&EventKind],
        users: &[&str],
        references: &[&str],
        holds: &[HoldKey<'_>],
    ) -> Result<(), StoreError> {
        let settled = || holds.iter().filter_map(|h| h.id());
        self.load_owners(vec![
            (Owned::Subscription, events.iter().filter_map(|k| k.subscription_id()).collect()),
            (Owned::Customer, events.iter().filter_map(|k| k.owner()?.customer.as_deref()).collect()),
            (Owned::Intent, events.iter().filter_map(|k| k.payment_intent()).collect()),
            (Owned::Reservation, settled().collect()),
        ])
        .await?;
        let mut all_users: Vec<String> = users.iter().map(|u| (*u).to_owned()).collect();
        let settlers: Vec<String> = settled().filter_map(|id| self.reservation_users.get(id)?.clone()).collect();
        all_users.extend(settlers.iter().cloned());
        let located: Vec<&EventKind> = events.iter().copied().filter(|k| self.known_user(k).is_some()).collect();
        all_users.extend(located.iter().filter_map(|k| self.known_user(k)));
        self.lock_accounts(all_users.iter().map(String::as_str)).await?;

        self.load_subscriptions(located.iter().filter_map(|k| k.subscription_id())).await?;
        let sessions = located.iter().filter_map(|k| match tally_core::rules::topup_of(k) {
            Some(TopupKey::Session(s)) => Some(s),
            _ => None,
        });
        self.load_topups("session_id", sessions).await?;
        self.load_topups("payment_intent", located.iter().filter_map(|k| k.payment_intent())).await?;
        self.load_references(references.iter().copied()).await?;
        self.load_reservations(holds).await?;
        let refunds = located.iter().filter(|k| matches!(k, EventKind::ChargeRefunded(_)));
        let refund_users: Vec<String> = refunds.filter_map(|k| self.known_user(k)).collect();
        let holders = settlers.iter().chain(&refund_users).map(String::as_str);
        self.load_reserved(users.iter().copied().chain(holders)).await
    }

    // Owners

    fn owners(&mut self, kind: Owned) -> &mut HashMap<String, Option<String>> {
        match kind {
            Owned::Subscription => &mut self.subscription_users,
            Owned::Customer => &mut self.customers,
            Owned::Intent => &mut self.intent_users,
            Owned::Reservation => &mut self.reservation_users,
        }
    }

    /// Adds the owners of the keys of each kind not known yet (`None`: no one's yet),
    /// every kind in one query.
    async fn load_owners(&mut self, wanted: Vec<(Owned, Vec<&str>)>) -> Result<(), StoreError> {
        let wanted: Vec<(Owned, Vec<&str>)> = wanted
            .into_iter()
            .map(|(kind, keys)| (kind, missing(keys, self.owners(kind))))
            .filter(|(_, keys)| !keys.is_empty())
            .collect();
        let sqls: Vec<String> = wanted.iter().map(|(kind, _)| kind.sql()).collect();
        let parts: Vec<(&str, &[&str])> =
            sqls.iter().zip(&wanted).map(|(sql, (_, keys))| (sql.as_str(), keys.as_slice())).collect();
        let found: Vec<(String, String, String)> = fetch_union(self.conn, &parts).await?;
        for (kind, keys) in &wanted {
            self.owners(*kind).extend(keys.iter().map(|k| ((*k).to_owned(), None)));
        }
        for (tag, key, user) in found {
            let kind = Owned::of_tag(&tag).expect("a tag of Owned::sql");
            self.owners(kind).insert(key, Some(user));
        }
        Ok(())
    }

    // Accounts

    /// Locks the accounts not held yet, opening those that do not exist. The lock is an
    /// update, which both backends understand: Postgres locks the rows, SQLite the file.
    async fn lock_accounts<'k>(&mut self, users: impl IntoIterator<Item = &'k str>) -> Result<(), StoreError> {
        let want = missing(users, &self.accounts);
        if want.is_empty() {
            return Ok(());
        }
        self.lock_existing(&want).await?;
        let absent: Vec<&str> = want.iter().copied().filter(|u| !self.accounts.contains_key(*u)).collect();
        if absent.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "insert into accounts (user_id, tier, plan_credits, topup_credits, created_at, updated_at)
             values {} on conflict (user_id) do nothing returning user_id",
            value_rows(absent.len(), 6)
        );
        let mut query = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql));
        for user in &absent {
            query = query.bind(*user).bind(tally_core::FREE).bind(self.catalogue.free.credits).bind(0i64);
            query = query.bind(self.t).bind(self.t);
        }
        // A row inserted here is ours until commit: no one else can see it, let alone change it.
        for user in query.fetch_all(&mut *self.conn).await? {
            let account = Account::new_user(&user, self.catalogue);
            self.entries.push((user.clone(), account.opening_entry()));
            self.opened.push(user.clone());
            self.accounts.insert(user, Held { account, customer: None, dirty: false });
        }
        // Opened meanwhile by another transaction: wait for its lock like any other.
        let raced: Vec<&str> = absent.into_iter().filter(|u| !self.accounts.contains_key(*u)).collect();
        if !raced.is_empty() {
            self.lock_existing(&raced).await?;
            if let Some(user) = raced.iter().find(|u| !self.accounts.contains_key(**u)) {
                return Err(StoreError::NotFound(format!("account {user}")));
            }
        }
        Ok(())
    }

    async fn lock_existing(&mut self, users: &[&str]) -> Result<(), StoreError> {
        type Row = (String, String, i64, i64, Option<String>, i64, Option<String>);
        let sql = "update accounts set updated_at = $1 where user_id in ({keys})
                   returning user_id, tier, plan_credits, topup_credits, funded_by, funded_at, stripe_customer_id";
        let rows: Vec<Row> = fetch_in(self.conn, sql, Some(self.t), users).await?;
        for (user, tier, plan_credits, topup_credits, funded_by, funded_at, customer) in rows {
            let row: AccountRow = (tier, plan_credits, topup_credits, funded_by, funded_at);
            if let Some(c) = &customer {
                self.customers.insert(c.clone(), Some(user.clone()));
            }
            let account = rows::account(&user, row);
            self.accounts.insert(user, Held { account, customer, dirty: false });
        }
        Ok(())
    }

    /// The user's account, locked (and opened if new).
    pub async fn account(&mut self, user_id: &str) -> Result<&mut Held, StoreError> {
        self.lock_accounts([user_id]).await?;
        self.accounts.get_mut(user_id).ok_or_else(|| StoreError::NotFound(format!("account {user_id}")))
    }

    /// Takes the account's new balances and the entries that explain them.
    pub fn post(&mut self, ledger: tally_core::Ledger) {
        let user = ledger.account.user_id.clone();
        self.entries.extend(ledger.entries.into_iter().map(|e| (user.clone(), e)));
        if let Some(held) = self.accounts.get_mut(&user) {
            held.account = Account { reserved: held.account.reserved, ..ledger.account };
            held.dirty = true;
        }
    }

    /// Ties the Stripe customer to the user unless the account has one or another user
    /// has it; says whether it did.
    pub async fn link_customer(&mut self, user_id: &str, customer: &str) -> Result<bool, StoreError> {
        if self.account(user_id).await?.customer.is_some() {
            return Ok(false);
        }
        self.load_owners(vec![(Owned::Customer, vec![customer])]).await?;
        if self.customers.get(customer).is_some_and(Option::is_some) {
            return Ok(false);
        }
        self.customers.insert(customer.to_owned(), Some(user_id.to_owned()));
        let held = self.accounts.get_mut(user_id).expect("locked above");
        held.customer = Some(customer.to_owned());
        held.dirty = true;
        Ok(true)
    }

    /// The credits held by the user's live reservations.
    pub async fn reserved(&mut self, user_id: &str) -> Result<i64, StoreError> {
        Ok(self.reserved_as_of(user_id).await?.0)
    }

    /// The credits held by the user's live reservations, and the time they were counted
    /// at: the time a hold job judges expiry by, so that a hold is live exactly when the
    /// total counts it.
    pub async fn reserved_as_of(&mut self, user_id: &str) -> Result<(i64, i64), StoreError> {
        self.load_reserved([user_id]).await?;
        Ok(self.reserved[user_id])
    }

    /// The user's held total after a hold job changed it.
    pub fn set_reserved(&mut self, user_id: &str, held: i64) {
        if let Some(total) = self.reserved.get_mut(user_id) {
            total.0 = held;
        }
    }

    async fn load_reserved<'k>(&mut self, users: impl IntoIterator<Item = &'k str>) -> Result<(), StoreError> {
        let want = missing(users, &self.reserved);
        if want.is_empty() {
            return Ok(());
        }
        let sql = "select user_id, cast(coalesce(sum(amount), 0) as bigint) from reservations
                   where status = 'held' and expires_at > $1 and user_id in ({keys}) group by user_id";
        // Holds are counted at the time of reading, after the accounts are locked (a batch
        // may have waited for a lock while a hold expired).
        let t = crate::now();
        let held: Vec<(String, i64)> = fetch_in(self.conn, sql, Some(t), &want).await?;
        for user in &want {
            self.reserved.insert((*user).to_owned(), (0, t));
        }
        for (user, held) in held {
            self.reserved.insert(user, (held, t));
        }
        Ok(())
    }

    // Reservations

    /// Who made the reservation: fixed once written, so it is read before the locks.
    pub async fn reservation_owner(&mut self, id: &str) -> Result<Option<String>, StoreError> {
        self.load_owners(vec![(Owned::Reservation, vec![id])]).await?;
        Ok(self.reservation_users[id].clone())
    }

    /// The reservation of this id or idempotency key, as the batch left it. Read after
    /// its user's account is locked.
    pub async fn reservation(&mut self, key: HoldKey<'_>) -> Result<Option<HoldRow>, StoreError> {
        self.load_reservations(&[key]).await?;
        let id = match key {
            HoldKey::Id(id) => Some(id.to_owned()),
            HoldKey::Key(k) => self.reservation_keys[k].clone(),
        };
        Ok(id.and_then(|id| self.reservations.get(&id)?.clone()))
    }

    /// Keeps a new or changed reservation, written at the end.
    pub fn put_reservation(&mut self, row: HoldRow) {
        self.reservation_users.insert(row.id.clone(), Some(row.user_id.clone()));
        self.reservation_keys.insert(row.key.clone(), Some(row.id.clone()));
        self.dirty_reservations.push(row.id.clone());
        self.reservations.insert(row.id.clone(), Some(row));
    }

    /// Reads the reservations not known yet, by id and by key, in one query.
    async fn load_reservations(&mut self, keys: &[HoldKey<'_>]) -> Result<(), StoreError> {
        let ids = missing(keys.iter().filter_map(|k| k.id()), &self.reservations);
        let by_key = missing(keys.iter().filter_map(|k| k.key()), &self.reservation_keys);
        if ids.is_empty() && by_key.is_empty() {
            return Ok(());
        }
        // One list for both columns: a row found by the other column is kept all the same.
        let wanted: Vec<&str> = ids.iter().chain(&by_key).copied().collect();
        let sql =
            format!("select {HOLD_COLUMNS} from reservations where id in ({{keys}}) or idempotency_key in ({{keys}})");
        let found: Vec<HoldColumns> = fetch_in(self.conn, &sql, None, &wanted).await?;
        self.reservations.extend(ids.iter().map(|id| ((*id).to_owned(), None)));
        self.reservation_keys.extend(by_key.iter().map(|k| ((*k).to_owned(), None)));
        for row in found.into_iter().map(HoldRow::from) {
            if self.reservations.get(&row.id).is_some_and(Option::is_some) {
                continue; // the batch's own version
            }
            self.reservation_keys.insert(row.key.clone(), Some(row.id.clone()));
            self.reservation_users.insert(row.id.clone(), Some(row.user_id.clone()));
            self.reservations.insert(row.id.clone(), Some(row));
        }
        Ok(())
    }

    // Ledger references (idempotency of spends and grants)

    /// Who made this ledger reference and what it moved, if it is made.
    pub async fn reference(&mut self, reference: &str) -> Result<Option<Used>, StoreError> {
        self.load_references([reference]).await?;
        Ok(self.references[reference].clone())
    }

    pub fn remember_reference(&mut self, reference: &str, user_id: &str, delta: i64) {
        self.references.insert(reference.to_owned(), Some(Used { user_id: user_id.to_owned(), delta }));
    }

    async fn load_references<'k>(&mut self, keys: impl IntoIterator<Item = &'k str>) -> Result<(), StoreError> {
        let want = missing(keys, &self.references);
        if want.is_empty() {
            return Ok(());
        }
        let sql = "select reference, user_id, cast(sum(delta) as bigint) from ledger where reference in ({keys})
                   group by reference, user_id";
        let found: Vec<(String, String, i64)> = fetch_in(self.conn, sql, None, &want).await?;
        self.references.extend(want.iter().map(|k| ((*k).to_owned(), None)));
        for (reference, user_id, delta) in found {
            self.references.insert(reference, Some(Used { user_id, delta }));
        }
        Ok(())
    }

    // Subscriptions and their periods

    /// The subscription, the period starting at `period_start`, and the start of its
    /// newest granted period.
    pub async fn subscription_context(
        &mut self,
        id: &str,
        period_start: Option<i64>,
    ) -> Result<(Option<SubscriptionState>, Option<Period>, Option<i64>), StoreError> {
        self.load_subscriptions([id]).await?;
        let periods = self.periods.get(id);
        let period = period_start.and_then(|start| periods.and_then(|p| p.get(&start)).cloned());
        let latest = periods.and_then(|p| p.values().filter(|p| p.granted.is_some()).map(|p| p.start).max());
        Ok((self.subscriptions[id].clone(), period, latest))
    }

    /// The subscription and its newest granted period.
    pub async fn latest_granted_period(
        &mut self,
        id: &str,
    ) -> Result<(Option<SubscriptionState>, Option<Period>), StoreError> {
        let (subscription, _, latest) = self.subscription_context(id, None).await?;
        let period = latest.and_then(|start| self.periods.get(id)?.get(&start).cloned());
        Ok((subscription, period))
    }

    async fn load_subscriptions<'k>(&mut self, ids: impl IntoIterator<Item = &'k str>) -> Result<(), StoreError> {
        let want = missing(ids, &self.subscriptions);
        if want.is_empty() {
            return Ok(());
        }
        let sql = format!("select {SUBSCRIPTION_COLUMNS} from subscriptions where id in ({{keys}})");
        let found: Vec<SubscriptionRow> = fetch_in(self.conn, &sql, None, &want).await?;
        let sql = "select subscription_id, start, seen, granted from periods where subscription_id in ({keys})";
        let periods: Vec<(String, i64, Option<String>, Option<String>)> = fetch_in(self.conn, sql, None, &want).await?;
        for id in &want {
            self.subscriptions.insert((*id).to_owned(), None);
            self.periods.insert((*id).to_owned(), BTreeMap::new());
        }
        for row in found {
            let state = rows::subscription(row);
            self.subscriptions.insert(state.id.clone(), Some(state));
        }
        for (subscription_id, start, seen, granted) in periods {
            let period = Period { subscription_id: subscription_id.clone(), start, seen, granted };
            self.periods.entry(subscription_id).or_default().insert(start, period);
        }
        Ok(())
    }

    // Top-ups

    pub async fn topup(&mut self, key: TopupKey<'_>) -> Result<Option<Topup>, StoreError> {
        let session = match key {
            TopupKey::Session(id) => Some(id.to_owned()),
            TopupKey::PaymentIntent(pi) => {
                self.load_topups("payment_intent", [pi]).await?;
                self.topup_intents[pi].clone()
            }
        };
        let Some(session) = session else { return Ok(None) };
        self.load_topups("session_id", [session.as_str()]).await?;
        Ok(self.topups[&session].clone())
    }

    async fn load_topups<'k>(
        &mut self,
        column: &'static str,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Result<(), StoreError> {
        let by_session = column == "session_id";
        let want = if by_session { missing(keys, &self.topups) } else { missing(keys, &self.topup_intents) };
        if want.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "select session_id, user_id, payment_intent, credits, refunded_credits from topups where {column} in ({{keys}})"
        );
        let found: Vec<(String, String, Option<String>, i64, i64)> = fetch_in(self.conn, &sql, None, &want).await?;
        for k in &want {
            if by_session {
                self.topups.insert((*k).to_owned(), None);
            } else {
                self.topup_intents.insert((*k).to_owned(), None);
            }
        }
        for (session_id, user_id, payment_intent, credits, refunded_credits) in found {
            self.remember_topup(Topup { session_id, user_id, payment_intent, credits, refunded_credits });
        }
        Ok(())
    }

    fn remember_topup(&mut self, topup: Topup) {
        if let Some(pi) = &topup.payment_intent {
            self.intent_users.insert(pi.clone(), Some(topup.user_id.clone()));
            self.topup_intents.insert(pi.clone(), Some(topup.session_id.clone()));
        }
        self.topups.insert(topup.session_id.clone(), Some(topup));
    }

    // Finding the user an event is about

    /// The user an event is about. The first link wins (CONTRACT §1, "Who owns a Stripe
    /// customer"): the owner of its Stripe customer, subscription or (for refunds) its
    /// top-up's payment intent, as stored; only for objects tally has not linked yet,
    /// the user its metadata or `client_reference_id` names.
    pub async fn find_user(&mut self, kind: &EventKind) -> Result<Option<String>, StoreError> {
        let customer = kind.owner().and_then(|o| o.customer.as_deref());
        self.load_owners(vec![
            (Owned::Subscription, kind.subscription_id().into_iter().collect()),
            (Owned::Customer, customer.into_iter().collect()),
            (Owned::Intent, kind.payment_intent().into_iter().collect()),
        ])
        .await?;
        Ok(self.known_user(kind))
    }

    /// [`Unit::find_user`] from the owners loaded already.
    fn known_user(&self, kind: &EventKind) -> Option<String> {
        let owner = kind.owner();
        let of = |map: &HashMap<String, Option<String>>, key: Option<&str>| map.get(key?)?.clone();
        of(&self.customers, owner.and_then(|o| o.customer.as_deref()))
            .or_else(|| of(&self.subscription_users, kind.subscription_id()))
            .or_else(|| of(&self.intent_users, kind.payment_intent()))
            .or_else(|| owner.and_then(|o| o.user_id.clone()))
    }

    /// Keeps an event whose metadata names another user than the owner it was applied to.
    pub fn record_conflict(&mut self, event_id: &str, owner: &str, named: &str) {
        self.conflicts.push((event_id.to_owned(), owner.to_owned(), named.to_owned()));
    }

    /// Takes what the credit rules changed.
    pub fn record(&mut self, changes: Changes) {
        if !changes.ledger.entries.is_empty() || changes.period.is_some() {
            self.post(changes.ledger);
        }
        if let Some(s) = changes.subscription {
            self.subscription_users.insert(s.id.clone(), Some(s.user_id.clone()));
            self.dirty_subscriptions.push(s.id.clone());
            self.subscriptions.insert(s.id.clone(), Some(s));
        }
        if let Some(p) = changes.period {
            self.dirty_periods.push((p.subscription_id.clone(), p.start));
            self.periods.entry(p.subscription_id.clone()).or_default().insert(p.start, p);
        }
        if let Some(t) = changes.topup {
            self.dirty_topups.push(t.session_id.clone());
            self.remember_topup(t);
        }
    }

    // Writing back

    /// Writes every changed row, each table in as few statements as it takes.
    pub async fn flush(&mut self) -> Result<(), StoreError> {
        self.close_unused_openings().await?;
        self.write_accounts().await?;
        self.write_entries().await?;
        self.write_subscriptions().await?;
        self.write_periods().await?;
        self.write_topups().await?;
        self.write_reservations().await?;
        self.write_events().await?;
        self.write_conflicts().await?;
        self.write_outcomes().await
    }

    /// Takes back the accounts this unit opened for jobs that then changed nothing (a
    /// spend refused for want of credits, a reused idempotency key): a refused request
    /// leaves no account and no signup row, and the user is new again next time.
    async fn close_unused_openings(&mut self) -> Result<(), StoreError> {
        let mut used: HashSet<&str> = self.accounts.iter().filter(|(_, h)| h.dirty).map(|(u, _)| u.as_str()).collect();
        let subscriptions = self.dirty_subscriptions.iter().filter_map(|id| self.subscriptions.get(id)?.as_ref());
        used.extend(subscriptions.map(|s| s.user_id.as_str()));
        let topups = self.dirty_topups.iter().filter_map(|id| self.topups.get(id)?.as_ref());
        used.extend(topups.map(|t| t.user_id.as_str()));
        used.extend(self.conflicts.iter().map(|(_, owner, _)| owner.as_str()));
        let unused: Vec<String> = self.opened.iter().filter(|u| !used.contains(u.as_str())).cloned().collect();
        if unused.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = unused.iter().map(String::as_str).collect();
        let _: Vec<(String,)> =
            fetch_in(self.conn, "delete from accounts where user_id in ({keys}) returning user_id", None, &keys)
                .await?;
        let unused: HashSet<&str> = keys.into_iter().collect();
        self.entries.retain(|(user, _)| !unused.contains(user.as_str()));
        self.accounts.retain(|user, _| !unused.contains(user.as_str()));
        self.opened.retain(|user| !unused.contains(user.as_str()));
        Ok(())
    }

    async fn write_accounts(&mut self) -> Result<(), StoreError> {
        let t = self.t;
        let rows: Vec<&Held> = self.accounts.values().filter(|h| h.dirty).collect();
        let sql = "insert into accounts (user_id, tier, plan_credits, topup_credits, funded_by, funded_at,
                       stripe_customer_id, created_at, updated_at)
                   values {rows} on conflict (user_id) do update set tier = excluded.tier,
                       plan_credits = excluded.plan_credits, topup_credits = excluded.topup_credits,
                       funded_by = excluded.funded_by, funded_at = excluded.funded_at,
                       stripe_customer_id = excluded.stripe_customer_id, updated_at = excluded.updated_at";
        let chunks = rows.chunks(CHUNK);
        insert_rows(&mut *self.conn, sql, 9, chunks, |q, h| {
            let a = &h.account;
            q.bind(&a.user_id)
                .bind(a.tier.as_str())
                .bind(a.plan_credits)
                .bind(a.topup_credits)
                .bind(a.funded_by.as_deref())
                .bind(a.funded_at)
                .bind(h.customer.as_deref())
                .bind(t)
                .bind(t)
        })
        .await?;
        if let Some(profiles) = self.profiles {
            let rows: Vec<Profile> = rows
                .iter()
                .map(|h| Profile {
                    user_id: &h.account.user_id,
                    tier: h.account.tier.as_str(),
                    credits: h.account.plan_credits + h.account.topup_credits,
                    stripe_customer_id: h.customer.as_deref(),
                })
                .collect();
            profiles.write(&mut *self.conn, &rows).await?;
        }
        Ok(())
    }

    async fn write_entries(&mut self) -> Result<(), StoreError> {
        let t = self.t;
        let sql = "insert into ledger (user_id, bucket, delta, balance_after, reason, reference, created_at)
                   values {rows}";
        insert_rows(&mut *self.conn, sql, 7, self.entries.chunks(CHUNK), |q, (user, e)| {
            q.bind(user)
                .bind(e.bucket.as_str())
                .bind(e.delta)
                .bind(e.balance_after)
                .bind(&e.reason)
                .bind(&e.reference)
                .bind(t)
        })
        .await?;
        Ok(())
    }

    async fn write_subscriptions(&mut self) -> Result<(), StoreError> {
        let t = self.t;
        let rows: Vec<&SubscriptionState> =
            unique(&self.dirty_subscriptions).filter_map(|id| self.subscriptions.get(id.as_str())?.as_ref()).collect();
        let sql = "insert into subscriptions (id, user_id, status, plan, price_id, current_period_start,
                       current_period_end, cancel_at_period_end, state_at, updated_at)
                   values {rows} on conflict (id) do update set status = excluded.status, plan = excluded.plan,
                       price_id = excluded.price_id,
                       current_period_start = excluded.current_period_start,
                       current_period_end = excluded.current_period_end,
                       cancel_at_period_end = excluded.cancel_at_period_end,
                       state_at = excluded.state_at, updated_at = excluded.updated_at";
        insert_rows(&mut *self.conn, sql, 10, rows.chunks(CHUNK), |q, s| {
            q.bind(&s.id)
                .bind(&s.user_id)
                .bind(&s.status)
                .bind(s.plan.as_deref())
                .bind(s.price_id.as_deref())
                .bind(s.current_period_start)
                .bind(s.current_period_end)
                .bind(i64::from(s.cancel_at_period_end))
                .bind(s.state_at)
                .bind(t)
        })
        .await?;
        Ok(())
    }

    async fn write_periods(&mut self) -> Result<(), StoreError> {
        let rows: Vec<&Period> =
            unique(&self.dirty_periods).filter_map(|(id, start)| self.periods.get(id)?.get(start)).collect();
        let sql = "insert into periods (subscription_id, start, seen, granted) values {rows}
                   on conflict (subscription_id, start) do update set seen = excluded.seen, granted = excluded.granted";
        insert_rows(&mut *self.conn, sql, 4, rows.chunks(CHUNK), |q, p| {
            q.bind(&p.subscription_id).bind(p.start).bind(p.seen.as_deref()).bind(p.granted.as_deref())
        })
        .await?;
        Ok(())
    }

    async fn write_topups(&mut self) -> Result<(), StoreError> {
        let rows: Vec<&Topup> =
            unique(&self.dirty_topups).filter_map(|id| self.topups.get(id.as_str())?.as_ref()).collect();
        let sql = "insert into topups (session_id, user_id, payment_intent, credits, refunded_credits) values {rows}
                   on conflict (session_id) do update set refunded_credits = excluded.refunded_credits";
        insert_rows(&mut *self.conn, sql, 5, rows.chunks(CHUNK), |q, t| {
            q.bind(&t.session_id)
                .bind(&t.user_id)
                .bind(t.payment_intent.as_deref())
                .bind(t.credits)
                .bind(t.refunded_credits)
        })
        .await?;
        Ok(())
    }

    async fn write_reservations(&mut self) -> Result<(), StoreError> {
        let rows: Vec<&HoldRow> =
            unique(&self.dirty_reservations).filter_map(|id| self.reservations.get(id.as_str())?.as_ref()).collect();
        let sql = format!(
            "insert into reservations ({HOLD_COLUMNS}) values {{rows}}
             on conflict (id) do update set committed = excluded.committed, status = excluded.status,
                 updated_at = excluded.updated_at"
        );
        insert_rows(&mut *self.conn, &sql, 9, rows.chunks(CHUNK), |q, r| {
            q.bind(&r.id)
                .bind(&r.user_id)
                .bind(&r.key)
                .bind(r.amount)
                .bind(r.committed)
                .bind(&r.status)
                .bind(r.expires_at)
                .bind(r.created_at)
                .bind(r.updated_at)
        })
        .await?;
        Ok(())
    }

    /// Stores the batch's new events with their outcomes. An id that is stored already
    /// was stored by another process while this batch ran: the batch must not commit.
    async fn write_events(&mut self) -> Result<(), StoreError> {
        let t = self.t;
        let sql = "insert into events (id, type, created, livemode, payload, outcome, note, user_id, received_at,
                       attempts, waits_customer, waits_intent)
                   values {rows} on conflict (id) do nothing";
        let chunks = by_size(&self.events, |e| e.payload.len());
        let stored = insert_rows(&mut *self.conn, sql, 12, chunks, |q, e| {
            q.bind(&e.id)
                .bind(&e.event_type)
                .bind(e.created)
                .bind(i64::from(e.livemode))
                .bind(&e.payload)
                .bind(e.outcome.outcome.as_str())
                .bind(e.outcome.note.as_deref())
                .bind(e.outcome.user_id.as_deref())
                .bind(t)
                .bind(e.attempts)
                .bind(e.waits.customer.as_deref())
                .bind(e.waits.payment_intent.as_deref())
        })
        .await?;
        if stored != self.events.len() as u64 {
            return Err(StoreError::Conflict("an event was stored by another delivery meanwhile".into()));
        }
        Ok(())
    }

    async fn write_conflicts(&mut self) -> Result<(), StoreError> {
        let t = self.t;
        let sql = "insert into ownership_conflicts (event_id, owner, named, recorded_at) values {rows}
                   on conflict (event_id) do nothing";
        insert_rows(&mut *self.conn, sql, 4, self.conflicts.chunks(CHUNK), |q, (event, owner, named)| {
            q.bind(event).bind(owner).bind(named).bind(t)
        })
        .await?;
        Ok(())
    }

    /// New outcomes of stored events applied again (unmatched or failed before), and
    /// deliveries of stored events beyond the first in this batch.
    async fn write_outcomes(&mut self) -> Result<(), StoreError> {
        for (id, outcome, redeliveries) in &self.outcomes {
            let query = match outcome {
                Some((o, waits)) => sqlx::query(
                    "update events set outcome = $3, note = $4, user_id = $5, attempts = attempts + $2,
                                       waits_customer = $6, waits_intent = $7
                     where id = $1",
                )
                .bind(id)
                .bind(redeliveries)
                .bind(o.outcome.as_str())
                .bind(o.note.as_deref())
                .bind(o.user_id.as_deref())
                .bind(waits.customer.as_deref())
                .bind(waits.payment_intent.as_deref()),
                None => {
                    sqlx::query("update events set attempts = attempts + $2 where id = $1").bind(id).bind(redeliveries)
                }
            };
            query.execute(&mut *self.conn).await?;
        }
        Ok(())
    }

    /// The subscription each of these users' billing shows. Read after [`Unit::flush`],
    /// so it includes the batch's changes.
    pub async fn subscription_views(
        &mut self,
        users: &[&str],
    ) -> Result<HashMap<String, SubscriptionView>, StoreError> {
        let accounts = users.iter().filter_map(|u| self.accounts.get(*u)).map(|h| &h.account);
        views::subscription_views(&mut *self.conn, accounts).await
    }
}

#[cfg(test)]
mod tests {
    use sqlx::AnyPool;
    use tally_core::event::{Owner, Subscription};
    use tally_core::{Bucket, Ledger};

    use super::*;

    /// A fresh, migrated SQLite database of its own.
    async fn database() -> AnyPool {
        sqlx::any::install_default_drivers();
        let path = std::env::temp_dir().join(format!("tally-unit-{}-{}.db", std::process::id(), rand::random::<u64>()));
        let pool = crate::sqlite::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        crate::sqlite::migrate(&pool).await.unwrap();
        pool
    }

    async fn count(pool: &AnyPool, sql: &str) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(pool).await.unwrap()
    }

    fn subscription_event(customer: &str, named: Option<&str>) -> EventKind {
        EventKind::SubscriptionChanged(Subscription {
            id: "sub_1".into(),
            status: "active".into(),
            price_id: None,
            start_date: None,
            current_period_start: None,
            current_period_end: None,
            cancel_at_period_end: false,
            owner: Owner { user_id: named.map(str::to_owned), customer: Some(customer.into()) },
        })
    }

    #[tokio::test]
    async fn a_new_account_opens_once_with_its_signup_row() {
        let pool = database().await;
        let catalogue = Catalogue::default();
        let mut tx = pool.begin().await.unwrap();
        let mut unit = Unit::new(&mut tx, &catalogue);
        assert_eq!(unit.account("ann").await.unwrap().account.plan_credits, 100);
        unit.account("ann").await.unwrap();
        assert!(unit.link_customer("ann", "cus_ann").await.unwrap());
        unit.flush().await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(count(&pool, "select count(*) from accounts").await, 1);
        assert_eq!(count(&pool, "select count(*) from ledger where reference = 'signup:ann'").await, 1);
    }

    #[tokio::test]
    async fn an_account_opened_for_jobs_that_changed_nothing_is_not_kept() {
        let pool = database().await;
        let catalogue = Catalogue::default();
        let mut tx = pool.begin().await.unwrap();
        let mut unit = Unit::new(&mut tx, &catalogue);
        // Opened to lock it, as a spend does before the rules refuse it.
        let mut ledger = Ledger::new(unit.account("cy").await.unwrap().account.clone());
        assert!(ledger.spend(1_000, "too much", "spend:k").is_err());
        unit.flush().await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(count(&pool, "select count(*) from accounts").await, 0);
        assert_eq!(count(&pool, "select count(*) from ledger").await, 0);
    }

    #[tokio::test]
    async fn a_row_the_unit_changed_is_never_read_again_from_the_database() {
        let pool = database().await;
        let catalogue = Catalogue::default();
        let mut tx = pool.begin().await.unwrap();
        let mut unit = Unit::new(&mut tx, &catalogue);
        let mut ledger = Ledger::new(unit.account("bo").await.unwrap().account.clone());
        ledger.post(Bucket::Topup, 40, "test", "t:1".into());
        unit.post(ledger);
        // A later job of the batch sees the change before anything is written.
        assert_eq!(unit.account("bo").await.unwrap().account.topup_credits, 40);
        let stored = "select topup_credits from accounts where user_id = 'bo'";
        assert_eq!(count_in(unit.conn(), stored).await, 0, "the row opened, the change not written yet");
        unit.flush().await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(count(&pool, "select topup_credits from accounts where user_id = 'bo'").await, 40);
        assert_eq!(count(&pool, "select count(*) from ledger where user_id = 'bo'").await, 2);
    }

    async fn count_in(conn: &mut AnyConnection, sql: &str) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(conn).await.unwrap()
    }

    #[tokio::test]
    async fn the_first_link_of_a_customer_wins_over_metadata() {
        let pool = database().await;
        let catalogue = Catalogue::default();
        let mut tx = pool.begin().await.unwrap();
        let mut unit = Unit::new(&mut tx, &catalogue);
        assert!(unit.link_customer("owner", "cus_1").await.unwrap());
        assert!(!unit.link_customer("thief", "cus_1").await.unwrap(), "a customer has one owner");
        unit.flush().await.unwrap();
        tx.commit().await.unwrap();

        let mut tx = pool.begin().await.unwrap();
        let mut unit = Unit::new(&mut tx, &catalogue);
        let forged = subscription_event("cus_1", Some("thief"));
        assert_eq!(unit.find_user(&forged).await.unwrap().as_deref(), Some("owner"));
        let fresh = subscription_event("cus_new", Some("newcomer"));
        assert_eq!(unit.find_user(&fresh).await.unwrap().as_deref(), Some("newcomer"), "an unlinked customer");
    }

    #[test]
    fn each_owner_select_starts_with_its_own_tag() {
        for kind in Owned::ALL {
            let sql = kind.sql();
            let tag = sql.strip_prefix("select '").and_then(|rest| rest.split('\'').next()).unwrap();
            assert!(matches!(Owned::of_tag(tag), Some(k) if k.sql() == kind.sql()), "{tag}");
        }
    }

    #[tokio::test]
    async fn owners_of_every_kind_are_read_together_however_many_keys() {
        let pool = database().await;
        let rows = "insert into accounts (user_id, tier, plan_credits, topup_credits, stripe_customer_id, created_at,
                        updated_at) values ('ann', 'free', 0, 0, 'cus_ann', 0, 0);
                    insert into subscriptions (id, user_id, status, cancel_at_period_end, state_at, updated_at)
                        values ('sub_bo', 'bo', 'active', 0, 0, 0);
                    insert into topups (session_id, user_id, payment_intent, credits, refunded_credits)
                        values ('cs_cy', 'cy', 'pi_cy', 10, 0);
                    insert into reservations (id, user_id, idempotency_key, amount, status, expires_at, created_at,
                        updated_at) values ('res_di', 'di', 'k', 1, 'held', 0, 0, 0);";
        sqlx::raw_sql(rows).execute(&pool).await.unwrap();
        let catalogue = Catalogue::default();
        let mut tx = pool.begin().await.unwrap();
        let mut unit = Unit::new(&mut tx, &catalogue);
        // More keys than one statement takes, so the lists are sent in rounds.
        let unknown: Vec<String> = (0..700).map(|i| format!("x{i}")).collect();
        let with = |known: &'static str| -> Vec<&str> { unknown.iter().map(String::as_str).chain([known]).collect() };
        let wanted = vec![
            (Owned::Subscription, with("sub_bo")),
            (Owned::Customer, with("cus_ann")),
            (Owned::Intent, with("pi_cy")),
            (Owned::Reservation, with("res_di")),
        ];
        unit.load_owners(wanted).await.unwrap();
        assert_eq!(unit.customers["cus_ann"].as_deref(), Some("ann"));
        assert_eq!(unit.subscription_users["sub_bo"].as_deref(), Some("bo"));
        assert_eq!(unit.intent_users["pi_cy"].as_deref(), Some("cy"));
        assert_eq!(unit.reservation_users["res_di"].as_deref(), Some("di"));
        assert_eq!(unit.customers["x699"], None, "a key no one owns is known to be no one's");
        assert_eq!(unit.reservation_users.len(), 701);
    }

    #[tokio::test]
    async fn prefetch_locks_every_account_of_the_batch_in_one_go() {
        let pool = database().await;
        let catalogue = Catalogue::default();
        let mut tx = pool.begin().await.unwrap();
        let mut unit = Unit::new(&mut tx, &catalogue);
        let event = subscription_event("cus_9", Some("carl"));
        unit.prefetch(&[&event], &["dina", "eve"], &["spend:k"], &[HoldKey::Id("res_x")]).await.unwrap();
        assert_eq!(unit.accounts.len(), 3, "the event's user and the spenders");
        assert_eq!(unit.reference("spend:k").await.unwrap(), None);
        assert_eq!(unit.reserved("dina").await.unwrap(), 0);
        assert_eq!(unit.reservation_owner("res_x").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_hold_the_batch_made_is_found_by_its_key_and_written_once() {
        let pool = database().await;
        let catalogue = Catalogue::default();
        let mut tx = pool.begin().await.unwrap();
        let mut unit = Unit::new(&mut tx, &catalogue);
        unit.account("fay").await.unwrap();
        assert_eq!(unit.reserved("fay").await.unwrap(), 0);
        assert_eq!(unit.reservation(HoldKey::Key("k1")).await.unwrap().map(|r| r.id), None);
        let t = crate::now();
        let row = HoldRow {
            id: "r1".into(),
            user_id: "fay".into(),
            key: "k1".into(),
            amount: 30,
            committed: None,
            status: "held".into(),
            expires_at: t + 60,
            created_at: t,
            updated_at: t,
        };
        unit.put_reservation(row.clone());
        unit.set_reserved("fay", 30);
        assert_eq!(unit.reserved("fay").await.unwrap(), 30, "the batch's total, not the database's");
        assert_eq!(unit.reservation(HoldKey::Key("k1")).await.unwrap().map(|r| r.id).as_deref(), Some("r1"));
        unit.put_reservation(HoldRow { status: "committed".into(), committed: Some(20), ..row });
        unit.flush().await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            count(&pool, "select count(*) from reservations where status = 'committed' and committed = 20").await,
            1
        );
        assert_eq!(count(&pool, "select count(*) from reservations").await, 1);
    }
}
