//! The billing page in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven over WebDriver), as a new user meets it: `tally serve` on a
//! catalogue of its own, with a local fake of the Stripe API, through dev sign-in, the
//! free plan, a yearly plan, the webhook (`tally trigger`) the page waits for, a pack,
//! a cancellation and a phone's width. Each state is saved as a PNG: in
//! `$SCREENSHOTS_DIR` when set (docs/screenshots/ is made so), else in the temp folder.
//! CI installs Chromium and must run this test; elsewhere it is skipped without one.

mod support;

// The same fake of Stripe as the server's scenario suite: it checks each parameter
// against Stripe's documented names and records what it was sent.
#[path = "../../tally-server/tests/api/fake_stripe.rs"]
#[allow(dead_code)]
mod fake_stripe;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use fake_stripe::FakeStripe;

const API_KEY: &str = "browser-test-api-key";
const WEBHOOK_SECRET: &str = "whsec_browser_test";

/// A catalogue unlike the default: other ids, monthly and yearly prices, two packs.
const CATALOGUE: &str = r#"
[free]
credits = 50
monthly = true

[plans.hobby]
name = "Hobby"
credits = 300
rank = 10
prices = [
  { id = "price_hobby_m", amount = 900, currency = "usd", interval = "month" },
  { id = "price_hobby_y", amount = 9000, currency = "usd", interval = "year" },
]

[plans.studio]
name = "Studio"
credits = 1500
rank = 20
prices = [
  { id = "price_studio_m", amount = 2900, currency = "usd", interval = "month" },
  { id = "price_studio_y", amount = 29000, currency = "usd", interval = "year" },
]

[plans.team]
name = "Team"
credits = 7000
rank = 30
prices = [{ id = "price_team_m", amount = 9900, currency = "usd", interval = "month" }]

[packs.boost]
name = "Boost"
credits = 250
prices = [{ id = "price_boost", amount = 500, currency = "usd" }]

[packs.bulk]
name = "Bulk"
credits = 5000
prices = [{ id = "price_bulk", amount = 8000, currency = "usd" }]
"#;

/// The programs the test drives, when this machine has them.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |n| dir.join(n))).find(|p| p.is_file())
    };
    match (find(&["chromium", "chromium-browser"]), find(&["chromedriver"])) {
        (Some(chromium), Some(driver)) => Some((chromium, driver)),
        _ if std::env::var_os("CI").is_some() => {
            panic!("chromium and chromedriver are not installed, but CI requires the browser test")
        }
        _ => {
            eprintln!("chromium or chromedriver is not installed: skipping the browser test");
            None
        }
    }
}

/// Children of this test, ended when it ends (passed or failed).
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Everything one run needs: tally's address and settings, and where pictures go.
struct Run {
    dir: PathBuf,
    db: String,
    port: u16,
    stripe: FakeStripe,
    shots: PathBuf,
}

impl Run {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `tally ARGS` with this run's settings.
    fn tally(&self, args: &[&str]) -> Command {
        let mut cmd = support::tally(&self.dir, &self.db, self.port, API_KEY);
        cmd.env("STRIPE_SECRET_KEY", "sk_test_browser")
            .env("STRIPE_API_BASE", &self.stripe.url)
            .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("TALLY_CONFIG", self.dir.join("tally.toml"))
            .env("TALLY_PUBLIC_URL", self.base())
            .env("TALLY_APP_NAME", "Acme Notes")
            .env("TALLY_APP_URL", "https://notes.example.com/")
            .env("TALLY_BRAND_COLOR", "#0f766e")
            .args(args);
        cmd
    }

    /// `tally trigger EVENT ...`: Stripe's webhook, signed, as the Stripe CLI would post it.
    fn trigger(&self, args: &[&str]) {
        let mut all = vec!["trigger"];
        all.extend_from_slice(args);
        let out = self.tally(&all).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "tally {all:?}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.lines().all(|l| l.contains("-> 200")), "{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_billing_page_in_a_real_browser() {
    let Some((chromium, driver)) = browser() else { return };
    // Bounded: a hung browser fails the test instead of holding CI.
    tokio::time::timeout(Duration::from_secs(100), journey(&chromium, &driver))
        .await
        .expect("the browser test took over 100 s");
}

async fn journey(chromium: &Path, driver: &Path) {
    let dir = support::work_dir("browser");
    std::fs::write(dir.join("tally.toml"), CATALOGUE).unwrap();
    let shots = std::env::var_os("SCREENSHOTS_DIR").map_or_else(|| dir.join("screenshots"), PathBuf::from);
    std::fs::create_dir_all(&shots).unwrap();
    let run = Run {
        db: format!("sqlite://{}", dir.join("tally.db").display()),
        dir,
        port: support::free_port(),
        stripe: FakeStripe::start().await,
        shots,
    };
    let mut children = Children(Vec::new());
    let serve = run.tally(&["serve"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    children.0.push(serve);
    let driver_port = support::free_port();
    let chromedriver = Command::new(driver)
        .arg(format!("--port={driver_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    children.0.push(chromedriver);
    wait_for_http(&format!("{}/healthz", run.base())).await;
    wait_for_http(&format!("http://127.0.0.1:{driver_port}/status")).await;

    let browser = connect(chromium, driver_port).await;
    let result = steps(&run, &browser).await;
    let _ = browser.close().await;
    drop(children);
    println!("screenshots in {}", run.shots.display());
    result.unwrap();
}

/// The page as a new user walks through it; each state's picture is saved.
async fn steps(run: &Run, b: &Client) -> Result<(), fantoccini::error::CmdError> {
    let base = run.base();
    // 1. Dev sign-in: the page says whose account it shows, and offers sign-out.
    b.goto(&format!("{base}/dev/login?user=ann")).await?;
    assert_eq!(b.current_url().await?.path(), "/dashboard/billing");
    assert_eq!(text(b, "#account").await, "ann");
    assert!(b.find(Locator::Css("form[action='/dashboard/sign-out'] button")).await.is_ok());
    assert_eq!(text(b, ".app").await, "← Back to Acme Notes");

    // 2. Free: its credits, that they refill, and the catalogue's offers.
    assert_eq!(text(b, "#tier").await, "Free");
    assert_eq!(text(b, "#credits").await, "50");
    assert!(text(b, "#plan-terms").await.contains("refilled on the 1st of each month"));
    assert_no_sideways_scroll(b).await;
    shot(run, b, "1-free", 1280).await;

    // 3. The yearly option of Studio, then its button: tally sends the browser to
    // Checkout (no network here: the page after it does not load) with the yearly price.
    b.find(Locator::Css("label[for='studio-year']")).await?.click().await?;
    b.find(Locator::Css("#plan-studio button")).await?.click().await?;
    let checkout = wait_for_url(b, "https://checkout.stripe.com/").await;
    assert!(checkout.starts_with("https://checkout.stripe.com/c/pay/cs_test_fake"), "{checkout}");
    let session = checkout.rsplit('/').next().unwrap().to_owned();
    let sent = run.stripe.seen("/v1/checkout/sessions");
    let sent = sent.last().expect("a Checkout Session was made");
    assert_eq!(sent.param("line_items[0][price]"), Some("price_studio_y"));
    assert_eq!(sent.param("mode"), Some("subscription"));
    assert_eq!(sent.param("metadata[item]"), Some("studio"));
    assert_eq!(
        sent.param("success_url"),
        Some(format!("{base}/dashboard/billing?success=true&session_id={{CHECKOUT_SESSION_ID}}").as_str())
    );

    // 4. Back from Checkout before Stripe has confirmed it (the fake's session is still
    // unpaid): the page says so, then the webhook arrives and the page updates by itself.
    b.goto(&format!("{base}/dashboard/billing?success=true&session_id={session}")).await?;
    assert!(text(b, "#pending").await.contains("Stripe is confirming your payment"));
    shot(run, b, "2-payment-pending", 1280).await;
    run.trigger(&["checkout.session.completed", "--user", "ann", "--item", "studio", "--interval", "year"]);
    wait_for_text(b, "#tier", "Studio").await;

    // 5. The success banner, the plan with its allowance and price, the history.
    assert_eq!(text(b, "#success").await, "Thank you! Your purchase is complete.");
    assert_eq!(text(b, "#credits").await, "1,500");
    assert_eq!(text(b, "#plan-terms").await, "1,500 credits a month · $290.00/year");
    assert!(text(b, "#renewal").await.starts_with("Renews on "));
    assert!(text(b, "#history").await.contains("Subscribed to Studio"));
    assert_eq!(text(b, "#plan-studio .badge").await, "Current plan");
    assert_eq!(text(b, "#plan-team button").await, "Upgrade to Team");
    assert!(b.find(Locator::Css("#banners[data-poll]")).await.is_err(), "it stopped asking");
    shot(run, b, "3-subscribed", 1280).await;

    // 6. A pack: paid at Stripe, and on return the page fulfils it through the session.
    b.find(Locator::Css("#pack-boost button")).await?.click().await?;
    let checkout = wait_for_url(b, "https://checkout.stripe.com/").await;
    let pack_session = checkout.rsplit('/').next().unwrap().to_owned();
    assert_eq!(
        run.stripe.seen("/v1/checkout/sessions").last().unwrap().param("line_items[0][price]"),
        Some("price_boost")
    );
    run.stripe.pay(&pack_session);
    b.goto(&format!("{base}/dashboard/billing?success=true&session_id={pack_session}")).await?;
    assert_eq!(text(b, "#credits").await, "1,750");
    assert_eq!(text(b, "#topup-credits").await, "Top-up credits: 250 (never expire)");
    assert!(text(b, "#history").await.contains("Top-up: 250 credits"));
    shot(run, b, "4-pack-bought", 1280).await;

    // 7. Cancel: "Manage subscription" leads to Stripe's portal; the subscription ends
    // there, and back on the page the user is on Free with the pack's credits kept.
    b.goto(&format!("{base}/dashboard/billing")).await?;
    b.find(Locator::Css("form.manage button")).await?.click().await?;
    assert!(wait_for_url(b, "https://billing.stripe.com/").await.starts_with("https://billing.stripe.com/p/session/"));
    run.trigger(&["customer.subscription.deleted", "--user", "ann"]);
    b.goto(&format!("{base}/dashboard/billing")).await?;
    assert_eq!(text(b, "#tier").await, "Free");
    assert_eq!(text(b, "#credits").await, "300");
    assert_eq!(text(b, "#topup-credits").await, "Top-up credits: 250 (never expire)");
    assert!(b.find(Locator::Css("#renewal")).await.is_err(), "a canceled plan neither renews nor ends");
    assert!(text(b, "#history").await.contains("Subscription ended: back to Free"));
    shot(run, b, "5-canceled", 1280).await;

    // 8. A phone's width: nothing scrolls sideways, and the plan's lines do not break.
    run.trigger(&["checkout.session.completed", "--user", "ann", "--item", "hobby", "--interval", "year"]);
    b.set_window_size(360, 800).await?;
    b.goto(&format!("{base}/dashboard/billing")).await?;
    assert_eq!(text(b, "#tier").await, "Hobby");
    assert_no_sideways_scroll(b).await;
    for one_line in ["#tier", "#renewal", "#credits"] {
        let lines = b
            .execute(
                "const e = document.querySelector(arguments[0]); const s = getComputedStyle(e);
                 return e.getBoundingClientRect().height / parseFloat(s.lineHeight);",
                vec![json!(one_line)],
            )
            .await?;
        assert!(lines.as_f64().unwrap() < 1.5, "{one_line} breaks over {lines} lines at 360 px");
    }
    shot(run, b, "6-phone", 360).await;
    Ok(())
}

async fn connect(chromium: &Path, port: u16) -> Client {
    let options = json!({
        "binary": chromium,
        "args": [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--window-size=1280,900",
            // Nothing leaves the machine: Stripe's hosts do not resolve, tally's does.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ],
    });
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".into(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("chromedriver starts Chromium")
}

/// Waits until `url` answers 200 (tally or chromedriver has started).
async fn wait_for_http(url: &str) {
    let client = reqwest::Client::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not answer within 30 s");
}

async fn text(b: &Client, css: &str) -> String {
    let element = b.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    element.text().await.unwrap().trim().to_owned()
}

/// Waits for the page, without reloading it, to show `want` in `css`.
async fn wait_for_text(b: &Client, css: &str, want: &str) {
    let start = Instant::now();
    let mut seen = String::new();
    while start.elapsed() < Duration::from_secs(15) {
        if let Ok(element) = b.find(Locator::Css(css)).await {
            seen = element.text().await.unwrap_or_default();
            if seen.trim() == want {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{css} still says {seen:?}, not {want:?}");
}

/// Waits for the browser to be sent to a URL starting with `prefix`; returns it.
async fn wait_for_url(b: &Client, prefix: &str) -> String {
    let start = Instant::now();
    let mut url = String::new();
    while start.elapsed() < Duration::from_secs(10) {
        url = b.current_url().await.map(|u| u.to_string()).unwrap_or_default();
        if url.starts_with(prefix) {
            return url;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the browser is at {url}, not {prefix}...");
}

async fn assert_no_sideways_scroll(b: &Client) {
    let widths: Value = b
        .execute("return [document.documentElement.scrollWidth, document.documentElement.clientWidth];", vec![])
        .await
        .unwrap();
    assert!(widths[0].as_f64() <= widths[1].as_f64(), "the page scrolls sideways: {widths}");
}

/// Saves the whole page at `width` as `NAME.png`: the window is made as tall as the page.
async fn shot(run: &Run, b: &Client, name: &str, width: u32) {
    b.set_window_size(width, 900).await.unwrap();
    // The window is a little taller than the page's viewport in it.
    let script = "return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight;";
    let height = b.execute(script, vec![]).await.unwrap();
    let height = height.as_u64().unwrap_or(900).clamp(400, 4000) as u32;
    b.set_window_size(width, height).await.unwrap();
    let png = b.screenshot().await.unwrap();
    std::fs::write(run.shots.join(format!("{name}.png")), png).unwrap();
}
