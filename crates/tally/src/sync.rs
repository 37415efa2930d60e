//! `tally sync [--days N] [--dry-run]`: pull recent events and every subscription from
//! the Stripe API and repair what webhooks missed (see `tally_server::sync`).

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tally_server::Config;
use tally_server::sync::{Difference, Observer, SyncOptions, SyncReport};
use tally_stripe::StripeClient;

#[derive(clap::Args)]
pub struct Args {
    /// How far back to pull events, in days (Stripe keeps 30).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=30))]
    days: u16,
    /// Print the differences and what would repair them; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Compare subscriptions only, without pulling events first (quicker; a period
    /// whose webhooks were lost longer ago than `--days` is still repaired).
    #[arg(long)]
    skip_events: bool,
}

pub async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let key = config.stripe_secret_key.as_deref().context("STRIPE_SECRET_KEY: needed to read Stripe's records")?;
    let store = config.connect_store().await?;
    store.migrate().await?;
    let client = StripeClient::new(&config.stripe_api_base, key, config.stripe_client.clone());
    let since = (!args.skip_events).then(|| tally_store::now() - i64::from(args.days) * 24 * 3600);
    let options = SyncOptions { since, dry_run: args.dry_run };
    let mut progress = Progress::new(std::io::stderr().is_terminal());
    let result = tally_server::sync::sync(&client, &store, options, &mut progress).await;
    progress.finish();
    let report = result.map_err(|e| match args.dry_run {
        true => anyhow::anyhow!("sync stopped: {e}"),
        false => anyhow::anyhow!("sync stopped: {e}; run it again to resume after the last page it finished"),
    })?;
    print_summary(&report, &args);
    Ok(())
}

/// A spinner with counts on a terminal; a line per page elsewhere (logs, CI).
struct Progress {
    bar: Option<ProgressBar>,
    events_said: usize,
}

impl Progress {
    fn new(terminal: bool) -> Progress {
        let bar = terminal.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("a valid template"));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar.set_message("asking Stripe");
            bar
        });
        Progress { bar, events_said: 0 }
    }

    fn say(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => println!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Observer for Progress {
    fn events_listed(&mut self, total: usize) {
        match &self.bar {
            Some(bar) => bar.set_message(format!("listing events: {total}")),
            None if total >= self.events_said + 100 => {
                self.events_said = total;
                eprintln!("listed {total} events");
            }
            None => {}
        }
    }

    fn subscriptions_checked(&mut self, total: usize) {
        match &self.bar {
            Some(bar) => bar.set_message(format!("checking subscriptions: {total}")),
            None => eprintln!("checked {total} subscriptions"),
        }
    }

    fn difference(&mut self, difference: &Difference) {
        self.say(describe(difference));
    }
}

/// `sub_1 (user u1): status past_due -> active; ...`, then a line per repair.
fn describe(d: &Difference) -> String {
    let mut parts: Vec<String> = d.fields.iter().map(|f| format!("{} {} -> {}", f.field, f.tally, f.stripe)).collect();
    if d.period_unpaid {
        parts.push("current period not granted".into());
    }
    let user = d.user_id.as_deref().map(|u| format!(" (user {u})")).unwrap_or_default();
    let mut text = format!("{}{user}: {}", d.subscription, parts.join("; "));
    for r in &d.repairs {
        let what = format!("{} from {} ({})", r.event_type, r.object, r.event_id);
        text.push_str(&match (r.outcome, &r.note) {
            (None, _) => format!("\n  would apply {what}"),
            (Some(outcome), Some(note)) => format!("\n  {what}: {outcome}, {note}"),
            (Some(outcome), None) => format!("\n  {what}: {outcome}"),
        });
    }
    if let Some(why) = &d.unrepaired {
        text.push_str(&format!("\n  not repaired: {why}"));
    }
    text
}

fn print_summary(report: &SyncReport, args: &Args) {
    if let Some(after) = &report.resumed_after {
        println!("resumed after {after}, where an interrupted sync stopped");
    }
    if !args.skip_events {
        let events: usize = report.events.values().sum();
        let outcomes: Vec<String> = report.events.iter().map(|(outcome, n)| format!("{n} {outcome}")).collect();
        println!(
            "events of the last {} day(s): {events}{}",
            args.days,
            if outcomes.is_empty() { String::new() } else { format!(" ({})", outcomes.join(", ")) }
        );
    }
    let skipped = match report.skipped {
        0 => String::new(),
        n => format!(", {n} not on a catalogue plan"),
    };
    println!("subscriptions: {} checked, {} differ{skipped}", report.checked, report.differences.len());
    if args.dry_run {
        println!("dry run: nothing was changed");
    } else if report.differences.is_empty() {
        println!("tally matches Stripe");
    }
}
