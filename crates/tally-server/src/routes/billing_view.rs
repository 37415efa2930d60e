//! What the billing page shows, made from a user's state with no IO, so that each state
//! (free, each plan, past due, ending, top-ups only, a payment being confirmed, no
//! Stripe) is tested by rendering it. The handler in `pages.rs` gathers the inputs.

use askama::Template;
use tally_core::{Catalogue, Interval, Price};
use tally_store::{Billing, LedgerRow};

use crate::brand::Brand;

/// The host app's look, as the templates use it (`base.html`).
pub struct Look {
    pub app_name: Option<String>,
    pub app_url: Option<String>,
    /// CSS colours: the accent, text on it, and the accent as text on white.
    pub accent: String,
    pub on_accent: String,
    pub accent_text: String,
}

impl Look {
    pub fn of(brand: &Brand) -> Look {
        let (accent, on_accent) = brand.color.button();
        Look {
            app_name: brand.app_name.clone(),
            app_url: brand.app_url.clone(),
            accent: accent.css(),
            on_accent: on_accent.css(),
            accent_text: brand.color.as_text().css(),
        }
    }

    /// The page title: "Billing · App".
    pub fn title(&self) -> String {
        match &self.app_name {
            Some(name) => format!("Billing · {name}"),
            None => "Billing".to_owned(),
        }
    }
}

/// How the return from Checkout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Success {
    /// No return from Checkout.
    None,
    /// The purchase is in the user's balance.
    Confirmed,
    /// Stripe has not confirmed the payment yet; the page script asks this URL again.
    Pending { poll: String },
}

/// A problem of the last action, said on the page it returns to (`?error=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionError {
    StripeNotConfigured,
    StripeUnreachable,
}

impl ActionError {
    pub fn code(self) -> &'static str {
        match self {
            ActionError::StripeNotConfigured => "stripe_not_configured",
            ActionError::StripeUnreachable => "stripe_unreachable",
        }
    }

    /// Only tally's own codes: nothing from the address is shown on the page.
    pub fn parse(code: &str) -> Option<ActionError> {
        [ActionError::StripeNotConfigured, ActionError::StripeUnreachable].into_iter().find(|e| e.code() == code)
    }
}

/// Everything the page is made from.
pub struct PageInput<'a> {
    /// Whose account: the email, or else the user id.
    pub account: &'a str,
    pub billing: &'a Billing,
    pub catalogue: &'a Catalogue,
    /// The price the subscription is on, when tally knows it.
    pub price_id: Option<&'a str>,
    /// The user has a Stripe customer (invoices and payment methods in the portal).
    pub has_customer: bool,
    /// The newest ledger rows, newest first.
    pub ledger: &'a [LedgerRow],
    pub stripe_ready: bool,
    pub success: Success,
    pub canceled: bool,
    pub error: Option<ActionError>,
}

#[derive(Template)]
#[template(path = "billing.html")]
pub struct BillingPage {
    look: Look,
    account: String,
    banners: Vec<Banner>,
    /// Where the script asks for fresh numbers while a payment is being confirmed.
    poll: Option<String>,
    /// The past-due banner's button to the portal.
    past_due: bool,
    plan_name: String,
    plan_terms: String,
    /// "Renews on 2026-12-31", "Ends on 2026-12-31", or none (free).
    renewal: Option<String>,
    credits: String,
    bar: Bar,
    /// The free plan's card: its name, what it gives, and whether the user is on it.
    free_name: String,
    free_terms: String,
    on_free: bool,
    plans: Vec<PlanCard>,
    packs: Vec<PackCard>,
    subscribed: bool,
    has_customer: bool,
    stripe_ready: bool,
    history: Vec<HistoryRow>,
}

struct Banner {
    kind: &'static str,
    id: &'static str,
    text: String,
}

/// The credits bar: the plan credits left of the allowance, top-up credits, and what is
/// held; widths in percent of the whole bar.
struct Bar {
    label: String,
    plan_pct: String,
    topup_pct: String,
    held_pct: String,
    /// The legend, one line each.
    plan_line: String,
    topup_line: Option<String>,
    held_line: Option<String>,
}

struct PlanCard {
    id: String,
    name: String,
    credits: String,
    current: bool,
    /// One radio per price (monthly/yearly) when there are several, else a fixed price.
    prices: Vec<PriceChoice>,
    /// "Choose", "Upgrade to", "Switch to".
    action: String,
}

struct PriceChoice {
    interval: &'static str,
    label: String,
    note: Option<String>,
    checked: bool,
}

struct PackCard {
    id: String,
    name: String,
    credits: String,
    price: String,
}

struct HistoryRow {
    date: String,
    what: String,
    amount: String,
    positive: bool,
}

impl BillingPage {
    pub fn new(input: PageInput<'_>, look: Look) -> BillingPage {
        let PageInput { billing, catalogue, .. } = input;
        let live = billing.subscription.as_ref().filter(|s| s.is_live());
        let past_due = live.is_some_and(|s| matches!(s.status.as_str(), "past_due" | "unpaid"));
        let plan = catalogue.plan(&billing.tier);
        let plan_name = catalogue.tier_name(&billing.tier).to_owned();
        let allowance = catalogue.allowance(&billing.tier).unwrap_or(billing.plan_credits);

        let mut banners = Vec::new();
        let mut banner = |kind, id, text: String| banners.push(Banner { kind, id, text });
        match &input.success {
            Success::None => {}
            Success::Confirmed => banner("ok", "success", "Thank you! Your purchase is complete.".into()),
            Success::Pending { .. } => banner(
                "info",
                "pending",
                "Thank you! Stripe is confirming your payment; this page updates by itself.".into(),
            ),
        }
        if input.canceled {
            banner("info", "canceled", "Checkout was canceled; nothing was charged.".into());
        }
        match input.error {
            _ if !input.stripe_ready => banner(
                "warn",
                "stripe-off",
                "Stripe is not configured, so purchases are off. The administrator sets STRIPE_SECRET_KEY.".into(),
            ),
            Some(ActionError::StripeUnreachable) => banner(
                "error",
                "stripe-error",
                "Stripe could not be reached, so nothing was charged. Please try again in a minute.".into(),
            ),
            Some(ActionError::StripeNotConfigured) | None => {}
        }
        if let Some(sub) = live
            && sub.cancel_at_period_end
        {
            let when =
                sub.current_period_end.map_or("at the end of this period".into(), |end| format!("on {}", date(end)));
            let keep = if billing.topup_credits > 0 { " Your top-up credits stay yours." } else { "" };
            banner("info", "ending", format!("Your {plan_name} plan ends {when}; you then return to Free.{keep}"));
        }

        let renewal = live.and_then(|sub| {
            let end = date(sub.current_period_end?);
            Some(if sub.cancel_at_period_end { format!("Ends on {end}") } else { format!("Renews on {end}") })
        });
        let plan_terms = match plan {
            Some(plan) => {
                let price = input
                    .price_id
                    .and_then(|id| plan.prices.iter().find(|p| p.id.as_deref() == Some(id)))
                    .or(plan.prices.first());
                let credits = format!("{} credits a month", thousands(plan.credits));
                match price {
                    Some(price) => format!("{credits} · {}", price.label()),
                    None => credits,
                }
            }
            None => free_terms(catalogue),
        };

        let subscribed = live.is_some();
        let rank = catalogue.rank(&billing.tier).unwrap_or(0);
        let plans = catalogue
            .plans
            .iter()
            .map(|p| PlanCard {
                id: p.id.clone(),
                name: p.name.clone(),
                credits: format!("{} credits a month", thousands(p.credits)),
                current: p.id == billing.tier,
                prices: price_choices(&p.prices, input.price_id),
                action: match subscribed {
                    false => format!("Choose {}", p.name),
                    true if p.rank > rank => format!("Upgrade to {}", p.name),
                    true => format!("Switch to {}", p.name),
                },
            })
            .collect();
        let packs = catalogue
            .packs
            .iter()
            .flat_map(|p| {
                p.prices.iter().map(|price| PackCard {
                    id: p.id.clone(),
                    name: p.name.clone(),
                    credits: format!("{} credits", thousands(p.credits)),
                    price: price.label(),
                })
            })
            .collect();

        BillingPage {
            look,
            account: input.account.to_owned(),
            banners,
            poll: match input.success {
                Success::Pending { poll } => Some(poll),
                _ => None,
            },
            past_due,
            plan_name,
            plan_terms,
            renewal,
            credits: thousands(billing.credits),
            bar: bar(billing, allowance),
            free_name: catalogue.tier_name(tally_core::catalogue::FREE).to_owned(),
            free_terms: free_terms(catalogue),
            on_free: billing.tier == tally_core::catalogue::FREE,
            plans,
            packs,
            subscribed,
            has_customer: input.has_customer,
            stripe_ready: input.stripe_ready,
            history: input.ledger.iter().filter(|r| r.delta != 0).map(|r| history_row(r, catalogue)).collect(),
        }
    }
}

/// What the free plan gives, and whether it refills.
fn free_terms(catalogue: &Catalogue) -> String {
    let credits = thousands(catalogue.free.credits);
    match catalogue.free.monthly {
        true => format!("{credits} credits, refilled on the 1st of each month"),
        false => format!("{credits} credits to start with, not refilled"),
    }
}

/// A plan's prices to choose from; the one the user is on (else the first) is chosen.
fn price_choices(prices: &[Price], current: Option<&str>) -> Vec<PriceChoice> {
    let monthly = prices.iter().find(|p| p.interval == Some(Interval::Month));
    let chosen = prices.iter().position(|p| p.id.is_some() && p.id.as_deref() == current).unwrap_or(0);
    prices
        .iter()
        .enumerate()
        .map(|(i, price)| PriceChoice {
            interval: price.interval.map_or("", Interval::as_str),
            label: price.label(),
            note: monthly.filter(|m| m.currency == price.currency && m.amount > 0).and_then(|m| {
                let saved = 100 - price.amount * 100 / (m.amount * 12);
                (price.interval == Some(Interval::Year) && saved > 0).then(|| format!("save {saved}%"))
            }),
            checked: i == chosen,
        })
        .collect()
}

fn bar(billing: &Billing, allowance: i64) -> Bar {
    let plan = billing.plan_credits.max(0);
    let topup = billing.topup_credits.max(0);
    let held = billing.reserved_credits.clamp(0, plan + topup);
    let whole = (allowance.max(plan) + topup).max(1);
    // Held credits come out of the plan bucket first, as spending does.
    let held_from_plan = held.min(plan);
    let pct = |n: i64| format!("{:.1}", n as f64 * 100.0 / whole as f64);
    let used = (allowance - plan).max(0);
    let mut label = format!("{} of {} plan credits left", thousands(plan), thousands(allowance));
    if topup > 0 {
        label.push_str(&format!(", {} top-up credits", thousands(topup)));
    }
    if held > 0 {
        label.push_str(&format!(", {} held", thousands(held)));
    }
    Bar {
        label,
        plan_pct: pct(plan - held_from_plan),
        topup_pct: pct(topup - (held - held_from_plan)),
        held_pct: pct(held),
        plan_line: format!(
            "Plan credits: {} of {} left this month ({} used)",
            thousands(plan),
            thousands(allowance),
            thousands(used)
        ),
        topup_line: (topup > 0).then(|| format!("Top-up credits: {} (never expire)", thousands(topup))),
        held_line: (held > 0).then(|| format!("Held for calls in progress: {}", thousands(held))),
    }
}

/// The plan of a grant whose reference names a subscription's first period
/// (`period:{subscription}:{start}:{plan}`, the first period named 0 by the rules).
fn first_period_plan(reference: &str) -> Option<&str> {
    let mut parts = reference.strip_prefix("period:")?.rsplitn(3, ':');
    let plan = parts.next()?;
    (parts.next()? == tally_core::rules::FIRST_PERIOD.to_string()).then_some(plan)
}

/// A ledger row in plain words.
fn history_row(row: &LedgerRow, catalogue: &Catalogue) -> HistoryRow {
    let what = match row.reason.as_str() {
        "signup" => "Free credits at sign-up".to_owned(),
        "subscription_period" => match first_period_plan(&row.reference) {
            Some(plan) => format!("Subscribed to {}", catalogue.tier_name(plan)),
            None => "Monthly credits renewed".to_owned(),
        },
        "monthly_allowance" => "Monthly credits renewed".to_owned(),
        "free_month" => "Free credits renewed".to_owned(),
        "trial" => "Trial credits".to_owned(),
        "subscription_upgrade" => "Upgrade: more credits this month".to_owned(),
        "subscription_ended" => {
            format!("Subscription ended: back to {}", catalogue.tier_name(tally_core::catalogue::FREE))
        }
        "topup" => format!("Top-up: {} credits", thousands(row.delta)),
        "topup_refund" | "topup_refund_partial" => "Top-up refunded".to_owned(),
        reason if row.delta < 0 && reason.trim().is_empty() => "Used".to_owned(),
        reason if row.delta < 0 => format!("Used: {reason}"),
        reason => format!("Added: {reason}"),
    };
    let amount = match row.delta {
        d if d > 0 => format!("+{}", thousands(d)),
        d => format!("−{}", thousands(-d)),
    };
    HistoryRow { date: date(row.created_at), what, amount, positive: row.delta > 0 }
}

/// `2500` as `2,500`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `YYYY-MM-DD` of a unix time (UTC), from the days since 1970 (Howard Hinnant's algorithm).
pub fn date(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The page in each state, rendered: what a user reads there.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::brand::Color;
    use tally_store::SubscriptionView;

    const SHOP: &str = r#"
[free]
credits = 20
monthly = true

[plans.hobby]
name = "Hobby"
credits = 300
rank = 10
prices = [
  { id = "price_hobby_m", amount = 900, currency = "usd", interval = "month" },
  { id = "price_hobby_y", amount = 9000, currency = "usd", interval = "year" },
]

[plans.team]
name = "Team"
credits = 7000
rank = 30
prices = [{ id = "price_team_m", amount = 9900, currency = "usd", interval = "month" }]

[packs.boost]
name = "Boost"
credits = 2500
prices = [{ id = "price_boost", amount = 500, currency = "usd" }]
"#;

    /// 2026-12-31.
    const PERIOD_END: i64 = 1_798_675_200;

    fn billing(tier: &str, plan: i64, topup: i64, sub: Option<(&str, bool)>) -> Billing {
        Billing {
            user_id: "ann".into(),
            tier: tier.into(),
            credits: plan + topup,
            plan_credits: plan,
            topup_credits: topup,
            reserved_credits: 0,
            subscription: sub.map(|(status, ending)| SubscriptionView {
                id: "sub_1".into(),
                status: status.into(),
                plan: Some(tier.into()),
                current_period_end: Some(PERIOD_END),
                cancel_at_period_end: ending,
            }),
        }
    }

    fn row(id: i64, delta: i64, reason: &str) -> LedgerRow {
        LedgerRow {
            id,
            bucket: "plan".into(),
            delta,
            balance_after: 0,
            reason: reason.into(),
            reference: format!("r{id}"),
            created_at: PERIOD_END - 86_400,
        }
    }

    struct Case {
        billing: Billing,
        price_id: Option<&'static str>,
        ledger: Vec<LedgerRow>,
        stripe_ready: bool,
        success: Success,
        error: Option<ActionError>,
        brand: Brand,
    }

    impl Case {
        fn new(billing: Billing) -> Case {
            Case {
                billing,
                price_id: None,
                ledger: Vec::new(),
                stripe_ready: true,
                success: Success::None,
                error: None,
                brand: Brand::default(),
            }
        }

        fn html(&self) -> String {
            let catalogue = Catalogue::from_toml(SHOP).unwrap();
            let input = PageInput {
                account: "ann@example.com",
                billing: &self.billing,
                catalogue: &catalogue,
                price_id: self.price_id,
                has_customer: self.billing.subscription.is_some(),
                ledger: &self.ledger,
                stripe_ready: self.stripe_ready,
                success: self.success.clone(),
                canceled: false,
                error: self.error,
            };
            BillingPage::new(input, Look::of(&self.brand)).render().unwrap()
        }
    }

    fn has(html: &str, parts: &[&str]) {
        for part in parts {
            assert!(html.contains(part), "missing {part:?} in\n{html}");
        }
    }

    fn lacks(html: &str, parts: &[&str]) {
        for part in parts {
            assert!(!html.contains(part), "unexpected {part:?} in\n{html}");
        }
    }

    #[test]
    fn free_shows_its_credits_whether_they_refill_and_every_offer() {
        let mut case = Case::new(billing("free", 15, 0, None));
        case.ledger = vec![row(2, -5, "chat"), row(1, 20, "signup")];
        let html = case.html();
        has(
            &html,
            &[
                r#"Signed in as <strong id="account">ann@example.com</strong>"#,
                r#"action="/dashboard/sign-out""#,
                r#"<h2 id="tier">Free</h2>"#,
                "20 credits, refilled on the 1st of each month",
                r#"<span id="credits">15</span>"#,
                "Plan credits: 15 of 20 left this month (5 used)",
                r#"<h3>Free</h3><p class="muted">20 credits, refilled"#,
                "Current plan",
                "Choose Hobby",
                "Choose Team",
                // Monthly and yearly for Hobby, with what a year saves; one price for Team.
                r#"id="hobby-month" name="interval" value="month" checked>$9.00/month"#,
                r#"id="hobby-year" name="interval" value="year">$90.00/year<span class="save">save 17%</span>"#,
                r#"<input type="hidden" name="interval" value="month"><p class="price">$99.00/month</p>"#,
                "<p class=\"muted\">2,500 credits</p>",
                "Buy Boost",
                "Used: chat",
                "Free credits at sign-up",
                "−5",
                "+20",
            ],
        );
        lacks(&html, &["Renews on", "Manage subscription", "data-poll", "<script", "<button disabled"]);
    }

    #[test]
    fn each_plan_shows_its_allowance_price_and_renewal() {
        for (tier, price, terms, other) in [
            ("hobby", "price_hobby_y", "300 credits a month · $90.00/year", "Upgrade to Team"),
            ("team", "price_team_m", "7,000 credits a month · $99.00/month", "Switch to Hobby"),
        ] {
            let mut case = Case::new(billing(tier, 250, 0, Some(("active", false))));
            case.price_id = Some(price);
            let html = case.html();
            let name = if tier == "team" { "Team" } else { "Hobby" };
            has(
                &html,
                &[
                    &format!(r#"<h2 id="tier">{name}</h2>"#),
                    terms,
                    r#"<p class="renewal" id="renewal">Renews on 2026-12-31</p>"#,
                    &format!(r#"class="offer current" id="plan-{tier}""#),
                    &format!(r#"value="{}" checked>"#, if tier == "team" { "month" } else { "year" }),
                    other,
                    "Manage subscription",
                ],
            );
            lacks(&html, &["Ends on", "past-due", "Choose "]);
        }
    }

    #[test]
    fn the_first_period_reads_as_subscribing_and_later_ones_as_renewals() {
        let mut case = Case::new(billing("hobby", 300, 0, Some(("active", false))));
        let mut first = row(1, 300, "subscription_period");
        first.reference = "period:sub_1:0:hobby".into();
        let mut renewal = row(2, 280, "subscription_period");
        renewal.reference = "period:sub_1:1767225600:hobby".into();
        case.ledger = vec![renewal, first];
        let html = case.html();
        has(&html, &["Subscribed to Hobby", "Monthly credits renewed"]);
    }

    #[test]
    fn past_due_says_so_with_a_way_to_the_portal() {
        let html = Case::new(billing("hobby", 300, 0, Some(("past_due", false)))).html();
        has(
            &html,
            &["id=\"past-due\"", "Your last payment failed.", "keep Hobby", r#"action="/api/portal"><button >Update"#],
        );
    }

    #[test]
    fn a_plan_that_ends_says_ends_on_and_that_top_ups_stay() {
        let html = Case::new(billing("hobby", 300, 250, Some(("active", true)))).html();
        has(
            &html,
            &[
                r#"id="renewal">Ends on 2026-12-31</p>"#,
                "Your Hobby plan ends on 2026-12-31; you then return to Free. Your top-up credits stay yours.",
            ],
        );
        lacks(&html, &["Renews on"]);
    }

    #[test]
    fn a_canceled_subscription_neither_renews_nor_ends() {
        let html = Case::new(billing("free", 20, 0, Some(("canceled", false)))).html();
        lacks(&html, &["Renews on", "Ends on", "Manage subscription", "(canceled)"]);
        has(&html, &["Invoices and payment methods"]);
    }

    #[test]
    fn top_up_credits_only_fill_the_bar_beside_an_empty_plan() {
        let mut case = Case::new(billing("free", 0, 2_500, None));
        case.ledger = vec![row(3, 2_500, "topup")];
        let html = case.html();
        has(
            &html,
            &[
                r#"<span id="credits">2,500</span>"#,
                "Top-up credits: 2,500 (never expire)",
                "Plan credits: 0 of 20 left this month (20 used)",
                r#"class="seg plan" style="width: 0.0%""#,
                r#"class="seg topup" style="width: 99.2%""#,
                "Top-up: 2,500 credits",
            ],
        );
    }

    #[test]
    fn held_credits_show_in_the_bar_and_its_legend() {
        let mut held = billing("hobby", 300, 0, Some(("active", false)));
        held.reserved_credits = 30;
        let html = Case::new(held).html();
        has(&html, &["Held for calls in progress: 30", r#"class="seg held" style="width: 10.0%""#, ", 30 held"]);
    }

    #[test]
    fn a_pending_payment_polls_until_it_is_confirmed() {
        let mut case = Case::new(billing("free", 20, 0, None));
        case.success = Success::Pending { poll: "/dashboard/billing?success=true&session_id=cs_1&since=4".into() };
        let html = case.html();
        has(
            &html,
            &[
                r#"data-poll="/dashboard/billing?success=true&#38;session_id=cs_1&#38;since=4""#,
                "Stripe is confirming your payment; this page updates by itself.",
                r#"<script src="/dashboard/billing.js" defer></script>"#,
            ],
        );
        lacks(&html, &["id=\"success\""]);
        case.success = Success::Confirmed;
        let html = case.html();
        has(&html, &[r#"id="success">Thank you! Your purchase is complete."#]);
        lacks(&html, &["data-poll", "<script"]);
    }

    #[test]
    fn without_stripe_purchases_are_off_and_say_why() {
        let mut case = Case::new(billing("free", 20, 0, None));
        case.stripe_ready = false;
        let html = case.html();
        has(&html, &["Stripe is not configured, so purchases are off.", "<button disabled>Choose Hobby"]);
        case.stripe_ready = true;
        case.error = Some(ActionError::StripeUnreachable);
        has(&case.html(), &["Stripe could not be reached, so nothing was charged."]);
        assert_eq!(ActionError::parse("stripe_unreachable"), Some(ActionError::StripeUnreachable));
        assert_eq!(ActionError::parse("<script>"), None);
    }

    #[test]
    fn the_page_wears_the_host_apps_name_link_and_colour() {
        let mut case = Case::new(billing("free", 20, 0, None));
        case.brand = Brand {
            app_name: Some("Acme <Notes>".into()),
            app_url: Some("https://notes.example.com/".into()),
            color: Color::parse("#ffd400").unwrap(),
        };
        let html = case.html();
        has(
            &html,
            &[
                "<title>Billing · Acme &#60;Notes&#62;</title>",
                r#"<a class="app" href="https://notes.example.com/">← Back to Acme &#60;Notes&#62;</a>"#,
                "--accent: #ffd400; --on-accent: #1d2430;",
            ],
        );
        let plain = Case::new(billing("free", 20, 0, None)).html();
        has(&plain, &["<title>Billing</title>", r#"<span class="app">Billing</span>"#, "--accent: #2b59c3;"]);
    }

    #[test]
    fn numbers_have_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(-2_500), "-2,500");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn dates_are_utc_calendar_days() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_795_780_800), "2026-11-27");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(PERIOD_END), "2026-12-31");
    }
}
