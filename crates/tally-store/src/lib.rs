//! tally's storage: one implementation of every query, on Postgres or embedded SQLite.
//!
//! Both backends speak the same SQL here (`$n` parameters, `on conflict`, `returning`),
//! so the queries are written once, over sqlx's `Any` driver. What differs lives in
//! [`postgres`] and [`sqlite`]: connection setup and the migrations. Exactly-once comes
//! from the database alone: a unique key inside the transaction of each effect, and the
//! account row locked (by an update) before it is read, so several tally processes can
//! share one Postgres.

// From the bottom up: SQL helpers; rows and views; the unit of work; one module a job
// kind (ingest, credits, holds); the writer, which schedules jobs; and the `Store`
// facade (lib.rs, reads, writes, audit, clock), the only thing the other crates see.
mod sql;

mod model;
mod rows;
mod views;

mod unit;

mod credits;
mod holds;
mod ingest;

mod writer;

mod audit;
mod clock;
mod handoffs;
mod health;
mod reads;
mod reconcile;
mod signatures;
mod writes;

mod error;
mod migrate;
pub mod postgres;
pub mod profiles;
pub mod sqlite;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::AnyPool;
use tally_core::Catalogue;

pub use audit::{Audit, Drift};
pub use clock::Granted;
pub use handoffs::Handoff;
pub use health::Waiting;
pub use profiles::ProfilesTable;
pub use reconcile::KeptSubscription;
pub use writer::Stats as WriteStats;
use writer::Writer;
pub use writer::register_metrics;

pub use error::StoreError;
pub use model::{
    Billing, Grant, IngestOutcome, LedgerRow, NewEvent, Outcome, Reservation, ReservationState, Reserve, Spend,
    StoredEvent, SubscriptionView, TriggerState,
};

/// What [`Store::ready`] found in a database that answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Its schema holds the newest migration this binary knows.
    Ready,
    /// Its schema lacks migration `expected` (`tally migrate` has not run, or the
    /// database is older than this binary); `found` is the newest it holds, if any.
    NotMigrated { expected: i64, found: Option<i64> },
}

/// Which database a [`Store`] is connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Where on Postgres tally keeps its tables, and what else it writes (SQLite is a file of
/// tally's own, so neither applies to it).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `TALLY_DB_SCHEMA`: the schema of tally's tables.
    pub schema: String,
    /// `TALLY_SYNC_PROFILES`: the app's table (`schema.table`) that also gets each
    /// changed account's tier, credits and Stripe customer.
    pub sync_profiles: Option<String>,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions { schema: postgres::DEFAULT_SCHEMA.to_owned(), sync_profiles: None }
    }
}

/// A connection pool to tally's database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Postgres: the schema of tally's tables.
    schema: Arc<str>,
    /// What the plans and packs are worth: the rules decide with it.
    catalogue: Arc<Catalogue>,
    /// Every webhook and spend is written through it, in batches.
    writer: Writer,
    /// Signature refusals not yet written to their hourly record.
    signature_failures: Arc<signatures::Pending>,
}

impl Store {
    /// Connects to `postgres://...` or `sqlite://...` (the file is created if missing);
    /// every credit rule this store applies uses `catalogue`.
    pub async fn connect(url: &str, catalogue: Arc<Catalogue>) -> Result<Store, StoreError> {
        Store::connect_with(url, catalogue, &StoreOptions::default()).await
    }

    /// [`Store::connect`], with tally's tables in `options.schema` on Postgres, and the
    /// app's profiles table (if any) checked and kept in step.
    pub async fn connect_with(
        url: &str,
        catalogue: Arc<Catalogue>,
        options: &StoreOptions,
    ) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (pool, backend) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (postgres::connect(url, &options.schema).await?, Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            if options.sync_profiles.is_some() {
                return Err(StoreError::Invalid("TALLY_SYNC_PROFILES needs a Postgres DATABASE_URL".into()));
            }
            (sqlite::connect(url).await?, Backend::Sqlite)
        } else {
            return Err(StoreError::BadUrl(url.to_owned()));
        };
        let profiles = match &options.sync_profiles {
            Some(name) => Some(Arc::new(ProfilesTable::find(&pool, name, &catalogue).await?)),
            None => None,
        };
        Ok(Store {
            writer: Writer::start(pool.clone(), catalogue.clone(), profiles),
            pool,
            backend,
            schema: Arc::from(options.schema.as_str()),
            catalogue,
            signature_failures: Arc::default(),
        })
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// Batches and jobs of this store's writer so far.
    pub fn write_stats(&self) -> &WriteStats {
        self.writer.stats()
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Brings the schema up to date.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Postgres => postgres::migrate(&self.pool, &self.schema).await,
            Backend::Sqlite => sqlite::migrate(&self.pool).await,
        }
    }

    /// Answers when the database does.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The newest migration this binary knows, on this store's backend.
    pub fn newest_migration(&self) -> i64 {
        let migrations = match self.backend {
            Backend::Postgres => postgres::MIGRATIONS,
            Backend::Sqlite => sqlite::MIGRATIONS,
        };
        migrations.last().map_or(0, |(version, _)| *version)
    }

    /// Whether the database can serve this binary: it answers (or this is an error,
    /// `Unavailable` for an outage) and its `schema_migrations` holds the newest
    /// migration this binary knows. What `GET /readyz` asks, for load balancers and
    /// rolling deploys.
    pub async fn ready(&self) -> Result<Readiness, StoreError> {
        let expected = self.newest_migration();
        let mut conn = self.pool.acquire().await?;
        // On Postgres the search_path is tally's schema: the table is looked for there.
        let has_table = match self.backend {
            Backend::Postgres => {
                "select count(*) from pg_catalog.pg_tables
                 where schemaname = current_schema() and tablename = 'schema_migrations'"
            }
            Backend::Sqlite => "select count(*) from sqlite_master where type = 'table' and name = 'schema_migrations'",
        };
        let tables: i64 = sqlx::query_scalar(has_table).fetch_one(&mut *conn).await?;
        if tables == 0 {
            return Ok(Readiness::NotMigrated { expected, found: None });
        }
        let (has_expected, found): (i64, Option<i64>) = sqlx::query_as(
            "select (select count(*) from schema_migrations where version = $1),
                    (select max(version) from schema_migrations)",
        )
        .bind(expected)
        .fetch_one(&mut *conn)
        .await?;
        Ok(match has_expected {
            0 => Readiness::NotMigrated { expected, found },
            _ => Readiness::Ready,
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A value kept in the database, such as the dev-mode webhook secret.
    pub async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let value = sqlx::query_scalar("select value from settings where key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(value)
    }

    /// Stores `value` under `key` unless one is there; returns the value that is kept.
    pub async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        sqlx::query("insert into settings (key, value) values ($1, $2) on conflict (key) do nothing")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(self.setting(key).await?.unwrap_or_else(|| value.to_owned()))
    }
}

/// Now, in unix seconds: the clock of the ledger, of holds and of signature checks.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
