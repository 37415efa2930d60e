//! The load tool's smoke mode: every workload at small N against a tally inside the
//! tool, on tally_testdb's Postgres (TEST_DATABASE_URL or a private one), with every
//! state check.

use std::process::Command;

#[test]
fn smoke_run_on_postgres_passes_its_state_checks() {
    let mut tool = Command::new(env!("CARGO_BIN_EXE_tally-bench"));
    let output = tally_testdb::output_on_server(tool.arg("--smoke"), "tally_bench_smoke");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tally-bench --smoke failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("smoke run ok"), "{stdout}");
    assert!(stdout.contains("| ingest | 4 |"), "{stdout}");
}
