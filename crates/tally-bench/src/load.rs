//! The closed-loop runner: C workers, each sending its next operation as soon as the
//! previous one answered, until N operations are done. Latencies are kept whole (N is
//! small) and sorted for the percentiles; CPU is read from /proc around the run.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Run {
    pub workload: String,
    pub system: &'static str,
    pub concurrency: usize,
    pub ops: usize,
    pub errors: usize,
    pub first_errors: Vec<String>,
    pub elapsed: Duration,
    /// Sorted latencies in microseconds.
    pub latencies: Vec<u32>,
    pub cpu: Cpu,
    /// Results of the state checks done after the run (empty for none).
    pub checks: Vec<Check>,
    /// Requests per transaction of tally's writer over the run (group commit).
    pub per_commit: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Check {
        let ok = got == want;
        Check { what: what.to_owned(), ok, detail: format!("{got:?} (want {want:?})") }
    }
}

impl Run {
    pub fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at quantile `q`, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let rank = ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        f64::from(self.latencies[rank - 1]) / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latencies.last().map_or(0.0, |&l| f64::from(l) / 1000.0)
    }

    pub fn checks_ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
}

/// Runs `op(worker, i)` for i in 0..n with `c` workers (worker in 0..c).
pub async fn run<F, Fut>(workload: &str, system: &'static str, c: usize, n: usize, tally_pid: Option<u32>, op: F) -> Run
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let before = CpuTicks::read(tally_pid);
    let start = Instant::now();
    let workers: Vec<_> = (0..c)
        .map(|worker| {
            let op = op.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(n / c + 1);
                let mut errors = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let t = Instant::now();
                    let result = op(worker, i).await;
                    latencies.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    if let Err(e) = result {
                        errors.push(e);
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    let mut errors = Vec::new();
    for worker in workers {
        let (l, e) = worker.await.expect("a worker does not panic");
        latencies.extend(l);
        errors.extend(e);
    }
    let elapsed = start.elapsed();
    let cpu = CpuTicks::read(tally_pid).since(&before, n);
    latencies.sort_unstable();
    Run {
        workload: workload.to_owned(),
        system,
        concurrency: c,
        ops: n,
        errors: errors.len(),
        first_errors: errors.into_iter().take(3).collect(),
        elapsed,
        latencies,
        cpu,
        checks: Vec::new(),
        per_commit: None,
    }
}

/// CPU time per operation, in microseconds: tally's process, this tool, and the rest of
/// the machine (Postgres, and whatever else runs). Zero where unknown.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub tally_us: f64,
    pub client_us: f64,
    pub rest_us: f64,
    /// Busy share of all cores over the run, 0..=1.
    pub busy: f64,
}

/// Clock ticks (USER_HZ, 100 on Linux) from /proc.
#[derive(Debug, Clone, Copy, Default)]
struct CpuTicks {
    tally: u64,
    client: u64,
    busy: u64,
    total: u64,
}

const TICK_US: f64 = 10_000.0;

impl CpuTicks {
    fn read(tally_pid: Option<u32>) -> CpuTicks {
        let (busy, total) = machine_ticks().unwrap_or((0, 0));
        CpuTicks {
            tally: tally_pid.and_then(|pid| process_ticks(&format!("/proc/{pid}/stat"))).unwrap_or(0),
            client: process_ticks("/proc/self/stat").unwrap_or(0),
            busy,
            total,
        }
    }

    fn since(&self, before: &CpuTicks, ops: usize) -> Cpu {
        let per_op = |ticks: u64| ticks as f64 * TICK_US / ops.max(1) as f64;
        let tally = self.tally.saturating_sub(before.tally);
        let client = self.client.saturating_sub(before.client);
        let busy = self.busy.saturating_sub(before.busy);
        let total = self.total.saturating_sub(before.total);
        Cpu {
            tally_us: per_op(tally),
            client_us: per_op(client),
            rest_us: per_op(busy.saturating_sub(tally + client)),
            busy: if total == 0 { 0.0 } else { busy as f64 / total as f64 },
        }
    }
}

/// utime + stime of a process (fields 14 and 15 of /proc/PID/stat).
pub fn process_ticks(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces; the fields after it are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// (busy, total) ticks of all cores, from the first line of /proc/stat.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let values: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(latencies: Vec<u32>) -> Run {
        Run {
            workload: "w".into(),
            system: "tally",
            concurrency: 1,
            ops: latencies.len(),
            errors: 0,
            first_errors: Vec::new(),
            elapsed: Duration::from_secs(2),
            latencies,
            cpu: Cpu::default(),
            checks: Vec::new(),
            per_commit: None,
        }
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let run = run_with((1..=100).map(|ms| ms * 1000).collect());
        assert_eq!(run.quantile_ms(0.5), 50.0);
        assert_eq!(run.quantile_ms(0.99), 99.0);
        assert_eq!(run.max_ms(), 100.0);
        assert_eq!(run.throughput(), 50.0);
        assert_eq!(run_with(Vec::new()).quantile_ms(0.99), 0.0);
    }

    #[test]
    fn this_process_has_cpu_ticks() {
        assert!(process_ticks("/proc/self/stat").is_some());
        assert!(machine_ticks().is_some_and(|(busy, total)| busy <= total));
    }
}
