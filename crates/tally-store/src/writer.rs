//! Group commit: one writer per process applies the webhooks and spends waiting at one
//! moment in one transaction, and answers each request once that transaction commits.
//!
//! A database's limit is its commits and its statements, not its rows: the direct
//! transaction of one event pays a BEGIN, a COMMIT and a flush for two rows. Here a
//! batch pays them once, and reads and writes each table in one statement for all its
//! jobs (see [`crate::unit`]). Exactly-once is unchanged: the same unique keys and row
//! locks, inside one transaction, and nothing is answered before it commits. Under no
//! load a batch is one job, so nothing waits for company.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::{AnyConnection, AnyPool};
use tally_core::{Account, Catalogue};
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;
use crate::credits::{Once, apply_link, apply_once};
use crate::holds::{Hold, HoldKey, apply_hold};
use crate::ingest::{Delivery, Inbox};
use crate::model::{Billing, IngestOutcome, Reservation, ReservationState};
use crate::profiles::ProfilesTable;
use crate::unit::Unit;
use crate::views::billing;

/// The most jobs in one transaction: enough to share a commit among all of a busy
/// server's requests, few enough that a batch stays a few milliseconds long.
const MAX_BATCH: usize = 64;

/// A job: one request's write.
pub(crate) enum Work {
    Ingest(Box<Delivery>),
    Once(Once),
    Hold(Hold),
    /// Checkout's link of a user to the Stripe customer it made.
    Link {
        user_id: String,
        customer: String,
    },
}

impl Work {
    fn delivery(&self) -> Option<&Delivery> {
        match self {
            Work::Ingest(d) => Some(d),
            _ => None,
        }
    }

    fn hold(&self) -> Option<&Hold> {
        match self {
            Work::Hold(hold) => Some(hold),
            _ => None,
        }
    }

    /// The account the job is about, when known before it runs.
    fn user_id(&self) -> Option<&str> {
        match self {
            Work::Once(once) => Some(&once.user_id),
            Work::Hold(hold) => hold.user_id(),
            Work::Link { user_id, .. } => Some(user_id),
            Work::Ingest(_) => None,
        }
    }

    /// The ledger references the job reads, so that the batch reads them in one query:
    /// the one it makes once, and the other kind's reference of the same key (a key is for
    /// one kind of request: a spend's `hold:{key}`, a hold's `spend:{key}`).
    fn references(&self) -> Vec<String> {
        match self {
            Work::Once(once) => {
                let hold = once.reference.strip_prefix("spend:").map(crate::holds::hold_reference);
                std::iter::once(once.reference.clone()).chain(hold).collect()
            }
            Work::Hold(hold) => hold.spend_reference().into_iter().collect(),
            Work::Ingest(_) | Work::Link { .. } => Vec::new(),
        }
    }
}

/// A job's answer.
pub(crate) enum Done {
    Ingested(IngestOutcome),
    Billing(Billing),
    Held(ReservationState),
    /// The Stripe customer kept for the user.
    Linked(String),
}

type Reply = oneshot::Sender<Result<Done, StoreError>>;

/// The handle requests send their writes through.
#[derive(Clone)]
pub(crate) struct Writer {
    queue: mpsc::Sender<(Work, Reply)>,
    stats: Arc<Stats>,
}

/// What this writer has done so far (also counted, process-wide, in the metrics).
#[derive(Debug, Default)]
pub struct Stats {
    pub batches: AtomicU64,
    pub jobs: AtomicU64,
    /// Batches that failed for a reason other than an outage, whose jobs were then
    /// written one by one.
    pub split: AtomicU64,
}

impl Writer {
    /// Starts the writer; it stops when the last handle is dropped.
    pub fn start(pool: AnyPool, catalogue: Arc<Catalogue>, profiles: Option<Arc<ProfilesTable>>) -> Writer {
        let (queue, waiting) = mpsc::channel(4 * MAX_BATCH);
        let stats = Arc::new(Stats::default());
        let rules = Arc::new(Rules { catalogue, profiles });
        tokio::spawn(run(pool, rules, waiting, stats.clone()));
        Writer { queue, stats }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub async fn submit(&self, work: Work) -> Result<Done, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((work, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// What every batch writes by: the catalogue the rules decide with, and the app's
/// profiles table to keep in step, if any.
struct Rules {
    catalogue: Arc<Catalogue>,
    profiles: Option<Arc<ProfilesTable>>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the writer stopped".into())
}

async fn run(pool: AnyPool, rules: Arc<Rules>, mut waiting: mpsc::Receiver<(Work, Reply)>, stats: Arc<Stats>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (jobs, replies): (Vec<Work>, Vec<Reply>) = std::mem::take(&mut batch).into_iter().unzip();
        // A batch runs as its own task so that a panic ends that batch (its requests see
        // the writer stopped) and not the writer.
        let _ = tokio::spawn(write_and_answer(pool.clone(), rules.clone(), jobs, replies, stats.clone())).await;
    }
}

async fn write_and_answer(pool: AnyPool, rules: Arc<Rules>, jobs: Vec<Work>, replies: Vec<Reply>, stats: Arc<Stats>) {
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.jobs.fetch_add(jobs.len() as u64, Ordering::Relaxed);
    match write(&pool, &rules, &jobs).await {
        Ok(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
        // The database cannot take writes now: every request hears so and retries.
        Err(StoreError::Unavailable(why)) => {
            for reply in replies {
                let _ = reply.send(Err(StoreError::Unavailable(why.clone())));
            }
        }
        // Anything else may be one job's doing: each alone, so only its request fails.
        // A unique key taken meanwhile by another process (an event it stored, a ledger
        // reference) is a conflict: a fresh transaction reads what it committed, so
        // even a batch of one is written again, once.
        Err(e) if jobs.len() > 1 || matches!(e, StoreError::Conflict(_)) => {
            tracing::warn!(error = %e, jobs = jobs.len(), "batch failed; writing its jobs one by one");
            stats.split.fetch_add(1, Ordering::Relaxed);
            for (job, reply) in jobs.into_iter().zip(replies) {
                let answer = write(&pool, &rules, std::slice::from_ref(&job)).await.and_then(|mut a| a.remove(0));
                let _ = reply.send(answer);
            }
        }
        Err(e) => {
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Err(e));
            }
        }
    }
}

/// How a batch can end: the `result` labels of `tally_write_batches_total`.
const BATCH_RESULTS: [&str; 4] = ["committed", "unavailable", "split", "failed"];

/// Describes the writer's metrics and registers each series at zero, so that
/// `/metrics` lists them before the first write (a rate over a series that appears
/// only on its first failure misses that failure).
pub fn register_metrics() {
    metrics::describe_counter!("tally_write_batches_total", "Write batches (transactions), by how they ended");
    metrics::describe_counter!("tally_write_jobs_total", "Jobs (webhooks, spends, holds, grants) written in batches");
    for result in BATCH_RESULTS {
        metrics::counter!("tally_write_batches_total", "result" => result).increment(0);
    }
    metrics::counter!("tally_write_jobs_total").increment(0);
}

/// Applies the jobs in one transaction; a job the rules refuse gets its own error.
async fn write(pool: &AnyPool, rules: &Rules, jobs: &[Work]) -> Result<Vec<Result<Done, StoreError>>, StoreError> {
    let start = std::time::Instant::now();
    let result = async {
        let mut tx = pool.begin().await?;
        let answers = apply(&mut tx, rules, jobs).await?;
        tx.commit().await?;
        Ok(answers)
    }
    .await;
    let ended = match &result {
        Ok(_) => "committed",
        Err(StoreError::Unavailable(_)) => "unavailable",
        // Its jobs are written again one by one.
        Err(e) if jobs.len() > 1 || matches!(e, StoreError::Conflict(_)) => "split",
        Err(_) => "failed",
    };
    // jobs_total / batches_total is the mean batch size.
    debug_assert!(BATCH_RESULTS.contains(&ended));
    metrics::counter!("tally_write_batches_total", "result" => ended).increment(1);
    metrics::counter!("tally_write_jobs_total").increment(jobs.len() as u64);
    tracing::debug!(jobs = jobs.len(), elapsed = ?start.elapsed(), ended, "batch");
    result
}

/// What a job leaves before the batch is written: the billings of spends and holds
/// still need their subscription, read once for the whole batch after the writes.
enum Pending {
    Ingested(IngestOutcome),
    Account(Account),
    Held(Reservation, Account),
    Linked(String),
}

impl Pending {
    fn account(&self) -> Option<&Account> {
        match self {
            Pending::Account(account) | Pending::Held(_, account) => Some(account),
            Pending::Ingested(_) | Pending::Linked(_) => None,
        }
    }
}

/// Runs each job in order on one unit of work (so each sees the jobs before it), then
/// writes what they changed. A job's own refusal is its answer; an error here is the
/// batch's.
async fn apply(
    conn: &mut AnyConnection,
    rules: &Rules,
    jobs: &[Work],
) -> Result<Vec<Result<Done, StoreError>>, StoreError> {
    let deliveries: Vec<&Delivery> = jobs.iter().filter_map(Work::delivery).collect();
    let mut inbox = Inbox::claim(conn, &deliveries).await?;
    let to_apply = inbox.to_apply(&deliveries);
    let mut unit = Unit::new(conn, &rules.catalogue).syncing(rules.profiles.as_deref());
    // Accounts known before the jobs run are locked together, up front.
    let users: Vec<&str> = jobs.iter().filter_map(Work::user_id).collect();
    let references: Vec<String> = jobs.iter().flat_map(Work::references).collect();
    let references: Vec<&str> = references.iter().map(String::as_str).collect();
    let holds: Vec<HoldKey> = jobs.iter().filter_map(Work::hold).map(Hold::reads).collect();
    unit.prefetch(&to_apply, &users, &references, &holds).await?;

    let mut pending = Vec::with_capacity(jobs.len());
    for job in jobs {
        pending.push(match job {
            Work::Ingest(d) => Ok(Pending::Ingested(inbox.deliver(&mut unit, d).await?)),
            Work::Once(once) => apply_once(&mut unit, once).await?.map(Pending::Account),
            Work::Hold(hold) => apply_hold(&mut unit, hold).await?.map(|(held, account)| Pending::Held(held, account)),
            Work::Link { user_id, customer } => apply_link(&mut unit, user_id, customer).await?.map(Pending::Linked),
        });
    }
    inbox.keep(&mut unit);
    unit.flush().await?;
    let shown: Vec<&str> = pending.iter().flatten().filter_map(Pending::account).map(|a| a.user_id.as_str()).collect();
    let views = unit.subscription_views(&shown).await?;
    let billing_of = |account: Account| {
        let view = views.get(&account.user_id).cloned();
        billing(account, view)
    };
    let done = |p: Pending| match p {
        Pending::Ingested(outcome) => Done::Ingested(outcome),
        Pending::Account(account) => Done::Billing(billing_of(account)),
        Pending::Held(reservation, account) => {
            Done::Held(ReservationState { reservation, billing: billing_of(account) })
        }
        Pending::Linked(customer) => Done::Linked(customer),
    };
    Ok(pending.into_iter().map(|p| p.map(done)).collect())
}
