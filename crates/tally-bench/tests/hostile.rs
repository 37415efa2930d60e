//! The hostile-clients mode, small: tens of idle, slowloris and slow-body connections held
//! for a few seconds against a tally inside the tool (on tally_testdb's Postgres), while
//! /healthz and spends must pass.

use std::process::Command;

#[test]
fn hostile_smoke_run_on_postgres_holds_connections_while_healthz_and_spends_pass() {
    let mut tool = Command::new(env!("CARGO_BIN_EXE_tally-bench"));
    let output = tally_testdb::output_on_server(tool.args(["--hostile", "--smoke"]), "tally_bench_hostile");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tally-bench --hostile --smoke failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("hostile smoke run ok"), "{stdout}");
    assert!(stdout.contains("| idle | 20 |"), "{stdout}");
    assert!(stdout.contains("| GET /healthz | under attack |"), "{stdout}");
}
