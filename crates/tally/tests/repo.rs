//! What a newcomer looks for in the repository, checked so it cannot drift: a
//! `.env.example` naming every setting, a LICENSE matching Cargo.toml, and a README
//! that builds the binary once and then uses it.

use std::path::PathBuf;

fn repo_file(name: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The variables in the first column of the README's configuration table.
fn readme_variables() -> Vec<String> {
    let readme = repo_file("README.md");
    let section = readme.split("\n## Configuration\n").nth(1).expect("a Configuration section");
    let section = section.split("\n## ").next().unwrap();
    let names: Vec<String> = section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 20, "the table lists {names:?}");
    names
}

/// CONTRACT §2's variables: the names users and their deploy scripts rely on.
const CONTRACT_VARIABLES: &[&str] = &[
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_PRO_PRICE_ID",
    "STRIPE_ENTERPRISE_PRICE_ID",
    "STRIPE_TOPUP_PRICE_ID",
    "NEXT_PUBLIC_STRIPE_PUBLISHABLE_KEY",
    "DATABASE_URL",
    "STRIPE_API_BASE",
    "TALLY_BIND",
    "TALLY_PUBLIC_URL",
    "TALLY_API_KEY",
    "AUTH_JWT_SECRET",
    "AUTH_JWKS_URL",
    "AUTH_JWT_AUDIENCE",
    "AUTH_JWT_ISSUER",
    "TALLY_DEV_LOGIN",
    "TALLY_CONFIG",
    "TALLY_DB_SCHEMA",
    "TALLY_SYNC_PROFILES",
    "TALLY_LOG_FORMAT",
    "TALLY_METRICS_BIND",
    "TALLY_APP_NAME",
    "TALLY_APP_URL",
    "TALLY_BRAND_COLOR",
];

#[test]
fn env_example_names_every_variable_with_a_comment_and_sets_none() {
    let example = repo_file(".env.example");
    let lines: Vec<&str> = example.lines().collect();
    let mut wanted = readme_variables();
    wanted.extend(CONTRACT_VARIABLES.iter().map(|v| (*v).to_owned()));
    for name in &wanted {
        let at = lines
            .iter()
            .position(|l| l.starts_with(&format!("# {name}=")))
            .unwrap_or_else(|| panic!(".env.example does not list {name}"));
        let comment = at.checked_sub(1).map(|i| lines[i]).unwrap_or_default();
        let describes = comment.len() > 12 && comment.starts_with("# ") && !is_variable_line(comment);
        assert!(describes, "{name} has no one-line comment above it: {comment:?}");
    }
    // Copied to .env as it is, tally starts in dev mode: nothing is set.
    let set: Vec<&&str> = lines.iter().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).collect();
    assert!(set.is_empty(), "lines that set a value: {set:?}");
}

/// `# NAME=value`: a variable, commented out.
fn is_variable_line(line: &str) -> bool {
    let rest = line.trim_start_matches("# ");
    rest.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
}

#[test]
fn the_license_file_is_the_one_cargo_toml_names() {
    let manifest = repo_file("Cargo.toml");
    assert!(manifest.contains("license = \"MIT\""), "the workspace's license is MIT");
    let license = repo_file("LICENSE");
    assert!(license.starts_with("MIT License\n"), "LICENSE is the MIT text");
    assert!(license.contains("Permission is hereby granted, free of charge"));
}

/// The README builds the binary once (`cargo install`, with its cold build time said),
/// and every later command runs that binary: no `cargo run` in the debug profile, a
/// second build of about as long.
#[test]
fn the_readme_installs_one_binary_and_uses_it() {
    let readme = repo_file("README.md");
    let install = readme.find("cargo install --locked --path crates/tally").expect("the install command");
    assert!(readme.contains("about 14 minutes on 2 cores"), "the cold build time is stated");
    let first_serve = readme.find("\ntally serve").expect("`tally serve` as a command");
    assert!(install < first_serve, "installed before it is run");
    for (n, line) in readme.lines().enumerate() {
        if line.contains("cargo run") {
            assert!(line.contains("cargo run --release -p tally -- serve"), "README line {}: {line}", n + 1);
        }
    }
    let two_commands = readme.split("\n## Two commands\n").nth(1).unwrap().split("\n## ").next().unwrap();
    assert!(two_commands.contains("\ntally serve\n"), "the run-the-service command");
    assert!(two_commands.contains("\ncargo test --workspace\n"), "the test command");
    // The first curl is one the first run answers without any setting.
    let first_curl = readme.lines().find(|l| l.trim_start().starts_with("curl ")).unwrap();
    assert_eq!(first_curl.trim(), "curl localhost:3000/api/catalogue");
}

/// The deployment files cannot be run here (no Docker daemon, no systemd as init), so
/// what they must keep is checked: the build CI's install does, a non-root user, the
/// SQLite volume, healthchecks on `/readyz`, a stop grace above tally's 30 s, and the
/// unit's hardening.
#[test]
fn the_deployment_files_build_like_ci_and_check_readiness() {
    let dockerfile = repo_file("Dockerfile");
    assert!(dockerfile.contains("cargo build --release --locked"), "the Dockerfile builds as CI does");
    assert!(dockerfile.lines().any(|l| l.starts_with("USER ") && !l.contains("root")), "a non-root user");
    assert!(dockerfile.contains("VOLUME [\"/var/lib/tally\"]") && dockerfile.contains("sqlite:///var/lib/tally/"));
    assert!(dockerfile.contains("/readyz"), "the image's healthcheck is readiness");

    let compose = repo_file("deploy/compose.yaml");
    assert!(compose.contains("image: postgres:16"));
    assert_eq!(compose.matches("healthcheck:").count(), 2, "tally and Postgres both have one");
    assert!(compose.contains("http://127.0.0.1:3000/readyz"));
    assert!(compose.contains("condition: service_healthy"), "tally waits for a healthy Postgres");
    assert!(compose.contains("stop_grace_period: 35s"));

    let unit = repo_file("deploy/tally.service");
    for line in
        ["DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes", "StateDirectory=tally", "TimeoutStopSec=35"]
    {
        assert!(unit.lines().any(|l| l == line), "tally.service lacks {line}");
    }
    assert!(unit.contains("ExecStart=/usr/local/bin/tally serve"));
}
