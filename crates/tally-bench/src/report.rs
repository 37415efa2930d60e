//! The figures as Markdown tables.

use std::fmt::Write;
use std::time::Duration;

use crate::load::Run;

pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// One line per run, printed as it finishes.
pub fn progress(run: &Run) -> String {
    let mut line = format!(
        "{:<16} {:<22} C={:<3} {:>6} ops {:>8.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  errors {}  cpu/op: tally {:.0} µs, client {:.0} µs, rest {:.0} µs, busy {:.0}%",
        run.workload,
        run.system,
        run.concurrency,
        run.ops,
        run.throughput(),
        run.quantile_ms(0.50),
        run.quantile_ms(0.99),
        run.max_ms(),
        run.errors,
        run.cpu.tally_us,
        run.cpu.client_us,
        run.cpu.rest_us,
        run.cpu.busy * 100.0,
    );
    if let Some(n) = run.per_commit {
        let _ = write!(line, ", {n:.1} requests per commit");
    }
    for e in &run.first_errors {
        let _ = write!(line, "\n    error: {e}");
    }
    for c in &run.checks {
        let _ = write!(line, "\n    check {}: {} {}", c.what, if c.ok { "ok" } else { "FAILED" }, c.detail);
    }
    line
}

/// tally beside its ceiling, per workload and concurrency.
pub fn comparison(runs: &[Run]) -> String {
    let mut out = String::from(
        "| workload | C | tally ops/s | p50 ms | p99 ms | max ms | errors | ceiling ops/s | p50 ms | p99 ms | tally / ceiling | state checks |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for run in runs.iter().filter(|r| r.system == "tally") {
        let ceiling = runs
            .iter()
            .find(|r| r.system == "ceiling" && r.workload == run.workload && r.concurrency == run.concurrency);
        let (c_rate, c_p50, c_p99, ratio) = match ceiling {
            Some(c) => (
                format!("{:.0}", c.throughput()),
                format!("{:.2}", c.quantile_ms(0.5)),
                format!("{:.2}", c.quantile_ms(0.99)),
                format!("**{:.2}×**", run.throughput() / c.throughput()),
            ),
            None => ("–".into(), "–".into(), "–".into(), "–".into()),
        };
        let checks = if run.checks.is_empty() {
            "–".to_owned()
        } else if run.checks_ok() && ceiling.is_none_or(Run::checks_ok) {
            "ok".to_owned()
        } else {
            "**FAILED**".to_owned()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {} | {} | {} |",
            run.workload,
            run.concurrency,
            run.throughput(),
            run.quantile_ms(0.5),
            run.quantile_ms(0.99),
            run.max_ms(),
            run.errors,
            c_rate,
            c_p50,
            c_p99,
            ratio,
            checks
        );
    }
    out
}

/// Where the CPU went, per operation.
pub fn cpu(runs: &[Run]) -> String {
    let mut out = String::from(
        "| workload | C | system | ops/s | tally µs/op | client µs/op | rest (Postgres…) µs/op | machine busy | requests per commit |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in runs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0}% | {} |",
            r.workload,
            r.concurrency,
            r.system,
            r.throughput(),
            r.cpu.tally_us,
            r.cpu.client_us,
            r.cpu.rest_us,
            r.cpu.busy * 100.0,
            r.per_commit.map_or_else(|| "–".to_owned(), |n| format!("{n:.1}"))
        );
    }
    out
}

/// Other runs (variants), with their own latency columns.
pub fn plain(runs: &[Run]) -> String {
    let mut out = String::from(
        "| workload | C | system | ops/s | p50 ms | p99 ms | max ms | errors | tally µs/op |\n|---|---:|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in runs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {:.0} |",
            r.workload,
            r.concurrency,
            r.system,
            r.throughput(),
            r.quantile_ms(0.5),
            r.quantile_ms(0.99),
            r.max_ms(),
            r.errors,
            r.cpu.tally_us
        );
    }
    out
}

/// Ingest at each C: tally, pgbench's run of the ceiling transaction (ingest.sql) and
/// stripe-sync-engine, from the same run, with tally's ratio to each.
pub fn side_by_side(runs: &[Run], pgbench: &[(&str, usize, f64)]) -> String {
    let mut out = String::from(
        "| C | tally ops/s | tally p99 ms | tally max ms | pgbench tps | stripe-sync-engine ops/s | its p99 ms | its errors | tally / pgbench | tally / stripe-sync-engine |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let ingest = |system: &str, c: usize| {
        runs.iter().find(|r| r.system == system && r.workload == "ingest" && r.concurrency == c)
    };
    for tally in runs.iter().filter(|r| r.system == "tally" && r.workload == "ingest") {
        let c = tally.concurrency;
        let pg = pgbench.iter().find(|(script, pc, _)| *script == "ingest.sql" && *pc == c).map(|p| p.2);
        let sse = ingest(crate::rivals::SYNC_ENGINE, c);
        let ratio =
            |other: Option<f64>| other.map_or("–".to_owned(), |o| format!("**{:.2}×**", tally.throughput() / o));
        let _ = writeln!(
            out,
            "| {c} | {:.0} | {:.2} | {:.1} | {} | {} | {} | {} | {} | {} |",
            tally.throughput(),
            tally.quantile_ms(0.99),
            tally.max_ms(),
            pg.map_or("–".to_owned(), |v| format!("{v:.0}")),
            sse.map_or("–".to_owned(), |r| format!("{:.0}", r.throughput())),
            sse.map_or("–".to_owned(), |r| format!("{:.2}", r.quantile_ms(0.99))),
            sse.map_or("–".to_owned(), |r| r.errors.to_string()),
            ratio(pg),
            ratio(sse.map(Run::throughput)),
        );
    }
    out
}
