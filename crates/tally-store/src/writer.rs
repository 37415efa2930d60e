//! Group commit: one writer per process applies the webhooks and spends waiting at one
//! moment in one transaction, and answers each request once that transaction commits.
//!
//! A database's limit is its commits and its statements, not its rows: the direct
//! transaction of one event pays a BEGIN, a COMMIT and a flush for two rows. Here a
//! batch pays them once, and reads and writes each table in one statement for all its
//! jobs (see [`crate::unit`]). Exactly-once is unchanged: the same unique keys and row
//! locks, inside one transaction, and nothing is answered before it commits. Under no
//! load a batch is one job, so nothing waits for company.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::{AnyConnection, AnyPool};
use tally_core::{Account, Catalogue, EventKind};
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;
use crate::credits::{Once, apply_once, billing};
use crate::ingest::{Delivered, Delivery, apply_event, claim};
use crate::model::{Billing, IngestOutcome, Outcome};
use crate::unit::Unit;

/// The most jobs in one transaction: enough to share a commit among all of a busy
/// server's requests, few enough that a batch stays a few milliseconds long.
const MAX_BATCH: usize = 64;

pub(crate) enum Work {
    Ingest(Box<Delivery>),
    Once(Once),
}

pub(crate) enum Done {
    Ingested(IngestOutcome),
    Billing(Billing),
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
    pub fn start(pool: AnyPool, catalogue: Arc<Catalogue>) -> Writer {
        let (queue, waiting) = mpsc::channel(4 * MAX_BATCH);
        let stats = Arc::new(Stats::default());
        tokio::spawn(run(pool, catalogue, waiting, stats.clone()));
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

fn stopped() -> StoreError {
    StoreError::Unavailable("the writer stopped".into())
}

async fn run(pool: AnyPool, catalogue: Arc<Catalogue>, mut waiting: mpsc::Receiver<(Work, Reply)>, stats: Arc<Stats>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (jobs, replies): (Vec<Work>, Vec<Reply>) = std::mem::take(&mut batch).into_iter().unzip();
        // A batch runs as its own task so that a panic ends that batch (its requests see
        // the writer stopped) and not the writer.
        let _ = tokio::spawn(write_and_answer(pool.clone(), catalogue.clone(), jobs, replies, stats.clone())).await;
    }
}

async fn write_and_answer(
    pool: AnyPool,
    catalogue: Arc<Catalogue>,
    jobs: Vec<Work>,
    replies: Vec<Reply>,
    stats: Arc<Stats>,
) {
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.jobs.fetch_add(jobs.len() as u64, Ordering::Relaxed);
    match write(&pool, &catalogue, &jobs).await {
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
                let answer = write(&pool, &catalogue, std::slice::from_ref(&job)).await.and_then(|mut a| a.remove(0));
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

/// Applies the jobs in one transaction; a job the rules refuse gets its own error.
async fn write(
    pool: &AnyPool,
    catalogue: &Catalogue,
    jobs: &[Work],
) -> Result<Vec<Result<Done, StoreError>>, StoreError> {
    let start = std::time::Instant::now();
    let result = async {
        let mut tx = pool.begin().await?;
        let answers = apply(&mut tx, catalogue, jobs).await?;
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
    metrics::counter!("tally_write_batches_total", "result" => ended).increment(1);
    metrics::counter!("tally_write_jobs_total").increment(jobs.len() as u64);
    tracing::debug!(jobs = jobs.len(), elapsed = ?start.elapsed(), ended, "batch");
    result
}

/// What a job leaves before the batch is written: a spend's billing still needs the
/// subscription, read once for the whole batch after the writes.
enum Pending {
    Ingested(IngestOutcome),
    Account(Account),
}

async fn apply(
    conn: &mut AnyConnection,
    catalogue: &Catalogue,
    jobs: &[Work],
) -> Result<Vec<Result<Done, StoreError>>, StoreError> {
    let deliveries: Vec<&Delivery> = jobs
        .iter()
        .filter_map(|j| match j {
            Work::Ingest(d) => Some(&**d),
            Work::Once(_) => None,
        })
        .collect();
    let onces: Vec<&Once> = jobs
        .iter()
        .filter_map(|j| match j {
            Work::Once(o) => Some(o),
            Work::Ingest(_) => None,
        })
        .collect();
    let stored = claim(conn, deliveries.iter().map(|d| d.id.as_str())).await?;
    let mut unit = Unit::new(conn, catalogue);
    let to_apply: Vec<&EventKind> = deliveries
        .iter()
        .filter(|d| stored.get(&d.id).is_none_or(|o| Outcome::retryable(o)))
        .filter_map(|d| d.event.as_ref().ok().map(|e| &e.kind))
        .collect();
    let users: Vec<&str> = onces.iter().map(|o| o.user_id.as_str()).collect();
    let references: Vec<&str> = onces.iter().map(|o| o.reference.as_str()).collect();
    unit.prefetch(&to_apply, &users, &references).await?;

    let mut pending = Vec::with_capacity(jobs.len());
    let mut inbox: Vec<Delivered> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for job in jobs {
        match job {
            Work::Ingest(d) => {
                // A second delivery of an id within the batch is a redelivery like any
                // other: applied again if the first left it unmatched or failed.
                let i = match index.get(d.id.as_str()) {
                    Some(&i) => {
                        inbox[i].redeliveries += 1;
                        i
                    }
                    None => {
                        index.insert(&d.id, inbox.len());
                        inbox.push(Delivered {
                            delivery: Some(d),
                            stored: stored.get(&d.id).cloned(),
                            ..Delivered::default()
                        });
                        inbox.len() - 1
                    }
                };
                if inbox[i].outcome_so_far().is_some_and(|o| !Outcome::retryable(o)) {
                    let duplicate = IngestOutcome { outcome: Outcome::Duplicate, user_id: None, note: None };
                    pending.push(Ok(Pending::Ingested(duplicate)));
                    continue;
                }
                let outcome = match &d.event {
                    Ok(event) => apply_event(&mut unit, event).await?,
                    Err(reason) => {
                        IngestOutcome { outcome: Outcome::Failed, user_id: None, note: Some(reason.clone()) }
                    }
                };
                inbox[i].outcome = Some(outcome.clone());
                pending.push(Ok(Pending::Ingested(outcome)));
            }
            Work::Once(once) => pending.push(apply_once(&mut unit, once).await?.map(Pending::Account)),
        }
    }
    for delivered in inbox {
        delivered.keep(&mut unit);
    }
    unit.flush().await?;
    let views = unit.subscription_views(&users).await?;
    let done = |p: Pending| match p {
        Pending::Ingested(outcome) => Done::Ingested(outcome),
        Pending::Account(account) => {
            let view = views.get(&account.user_id).cloned();
            Done::Billing(billing(account, view))
        }
    };
    Ok(pending.into_iter().map(|p| p.map(done)).collect())
}
