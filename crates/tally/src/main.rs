//! The `tally` command: run the service, migrate its database, and drive it offline.

mod admin;
mod catalogue;
mod credits;
mod doctor;
mod stripe_setup;
mod sync;
mod trigger;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tally_server::{Application, Config, LogFormat};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "tally", version, about = "Stripe plans and credits for apps that sell usage")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (migrates the database first).
    Serve,
    /// Bring the database schema up to date.
    Migrate,
    /// Print the effective catalogue: plans, packs and their prices.
    Catalogue(catalogue::Args),
    /// Sign a realistic Stripe event for a user and post it to tally, offline.
    Trigger(trigger::Args),
    /// Apply stored events again: one, or all unmatched or failed ones.
    Replay(admin::ReplayArgs),
    /// Check the invariants; exit 1 on a violation.
    Audit,
    /// Pull recent events from the Stripe API and apply what webhooks missed.
    Sync(sync::Args),
    /// Create the catalogue's missing products and prices in the Stripe account; write
    /// their ids into the catalogue file (or print the env lines without one).
    StripeSetup,
    /// Check the configuration, the database and the Stripe account; exit 1 on an error.
    Doctor(doctor::Args),
    /// Show or adjust a user's credits.
    #[command(subcommand)]
    Credits(credits::Command),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Configuration first: it says how to log (TALLY_LOG_FORMAT).
    let config = Config::from_env();
    init_logging(config.as_ref().map_or(LogFormat::Text, |c| c.log_format), matches!(cli.command, Command::Serve));
    let answer = match (cli.command, config) {
        // doctor reports a configuration mistake as one of its lines; the others stop at it.
        (Command::Doctor(args), config) => doctor::run(args, config).await,
        (_, Err(e)) => Err(e.into()),
        (command, Ok(config)) => run(command, config).await,
    };
    match answer {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tally: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Log lines go to stderr: for a person (colour only at a terminal), or one JSON
/// object per line for a log shipper: the line's own fields at the top level, the
/// request's (route, user_id, event_id) under `span`.
fn init_logging(format: LogFormat, serving: bool) {
    let default_level = if serving { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let lines = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => lines.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => lines.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let app = Application::build(config).await?;
            for line in app.start_up_notes() {
                println!("{line}");
            }
            app.run().await
        }
        Command::Migrate => {
            let store = config.connect_store().await?;
            store.migrate().await?;
            println!("database is up to date");
            Ok(())
        }
        Command::Catalogue(args) => catalogue::run(args, &config),
        Command::Trigger(args) => trigger::run(args, config).await,
        Command::Credits(command) => credits::run(command, config).await,
        Command::StripeSetup => stripe_setup::run(config).await,
        Command::Replay(args) => admin::replay(args, config).await,
        Command::Audit => admin::audit(config).await,
        Command::Sync(args) => sync::run(args, config).await,
        Command::Doctor(_) => unreachable!("doctor runs before the configuration is required"),
    }
}
