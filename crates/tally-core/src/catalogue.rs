//! The catalogue: the plans and credit packs an app sells, their Stripe prices, and
//! what each is worth. It is data (CONTRACT §1, "The catalogue file"): the rules take
//! it as an argument, and tiers and items are its ids.
//!
//! Without a file the catalogue is the guide's ([`Catalogue::default_with`]): Pro and
//! Enterprise monthly plans and a 1,000-credit top-up, priced from the environment.

mod file;

use serde::Serialize;

pub use file::CatalogueError;

/// The tier of a user without a paid plan.
pub const FREE: &str = "free";

/// How often a subscription price bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    Month,
    Year,
}

impl Interval {
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Month => "month",
            Interval::Year => "year",
        }
    }

    pub fn parse(s: &str) -> Option<Interval> {
        match s {
            "month" => Some(Interval::Month),
            "year" => Some(Interval::Year),
            _ => None,
        }
    }
}

/// A Stripe price of a plan or pack. `id` is `None` until `tally stripe-setup` has
/// created it (or the environment names it, for the default catalogue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Price {
    pub id: Option<String>,
    /// In the currency's smallest unit (cents).
    pub amount: i64,
    pub currency: String,
    /// `None` for a pack's one-time price.
    pub interval: Option<Interval>,
}

impl Price {
    /// The price as a person reads it: `$49.00/month`, `EUR 90.00/year`, `$20.00`.
    pub fn label(&self) -> String {
        let units = format!("{}.{:02}", self.amount / 100, self.amount % 100);
        let money = match self.currency.as_str() {
            "usd" => format!("${units}"),
            "eur" => format!("€{units}"),
            "gbp" => format!("£{units}"),
            other => format!("{} {units}", other.to_uppercase()),
        };
        match self.interval {
            Some(interval) => format!("{money}/{}", interval.as_str()),
            None => money,
        }
    }
}

/// The free tier: what a user has without a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Free {
    pub credits: i64,
    /// Also reset the plan bucket of free users to `credits` on the 1st of each month (UTC).
    pub monthly: bool,
}

/// A subscription plan: a tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub id: String,
    pub name: String,
    /// The plan bucket's allowance per month (yearly prices grant it monthly).
    pub credits: i64,
    /// Higher is better: decides upgrade against downgrade.
    pub rank: i64,
    /// Granted once while a subscription is trialing; `None` means `credits`.
    pub trial_credits: Option<i64>,
    /// On offer, first is the default.
    pub prices: Vec<Price>,
    /// Still honoured in webhooks, never offered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub legacy_prices: Vec<String>,
}

impl Plan {
    pub fn trial_allowance(&self) -> i64 {
        self.trial_credits.unwrap_or(self.credits)
    }
}

/// A one-time credit pack (a top-up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pack {
    pub id: String,
    pub name: String,
    pub credits: i64,
    pub prices: Vec<Price>,
}

/// What a price or an item id sells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product<'a> {
    Plan(&'a Plan),
    Pack(&'a Pack),
}

impl<'a> Product<'a> {
    pub fn id(self) -> &'a str {
        match self {
            Product::Plan(p) => &p.id,
            Product::Pack(p) => &p.id,
        }
    }

    pub fn name(self) -> &'a str {
        match self {
            Product::Plan(p) => &p.name,
            Product::Pack(p) => &p.name,
        }
    }

    /// The prices on offer (no legacy ones).
    pub fn prices(self) -> &'a [Price] {
        match self {
            Product::Plan(p) => &p.prices,
            Product::Pack(p) => &p.prices,
        }
    }

    /// The price checkout sells for `interval`, or the first listed without one.
    pub fn price_for(self, interval: Option<Interval>) -> Option<&'a Price> {
        match interval {
            None => self.prices().first(),
            Some(interval) => self.prices().iter().find(|p| p.interval == Some(interval)),
        }
    }
}

/// Every plan and pack on sale, and the free tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Catalogue {
    pub free: Free,
    /// In the file's order.
    pub plans: Vec<Plan>,
    pub packs: Vec<Pack>,
}

/// The ids of the default catalogue, as the guide and the environment variables name them.
pub mod defaults {
    pub const PRO: &str = "pro";
    pub const ENTERPRISE: &str = "enterprise";
    pub const TOPUP: &str = "topup";
}

impl Default for Catalogue {
    /// The guide's catalogue with no Stripe price ids.
    fn default() -> Self {
        Catalogue::default_with(None, None, None)
    }
}

impl Catalogue {
    /// The guide's catalogue (free 100; Pro $49/month 2,500; Enterprise $199/month
    /// 10,000; a $20 top-up of 1,000) with the given price ids.
    pub fn default_with(pro: Option<String>, enterprise: Option<String>, topup: Option<String>) -> Catalogue {
        let monthly = |id, amount| Price { id, amount, currency: "usd".into(), interval: Some(Interval::Month) };
        let plan = |id: &str, name: &str, credits, rank, price| Plan {
            id: id.into(),
            name: name.into(),
            credits,
            rank,
            trial_credits: None,
            prices: vec![price],
            legacy_prices: Vec::new(),
        };
        Catalogue {
            free: Free { credits: 100, monthly: false },
            plans: vec![
                plan(defaults::PRO, "Pro", 2_500, 1, monthly(pro, 4_900)),
                plan(defaults::ENTERPRISE, "Enterprise", 10_000, 2, monthly(enterprise, 19_900)),
            ],
            packs: vec![Pack {
                id: defaults::TOPUP.into(),
                name: "1,000 credits".into(),
                credits: 1_000,
                prices: vec![Price { id: topup, amount: 2_000, currency: "usd".into(), interval: None }],
            }],
        }
    }

    /// Reads and checks a catalogue file's text (see [`file`]).
    pub fn from_toml(text: &str) -> Result<Catalogue, CatalogueError> {
        file::parse(text)
    }

    /// What is on offer: the catalogue without its legacy prices, for pricing pages.
    pub fn offered(&self) -> Catalogue {
        let mut offered = self.clone();
        offered.plans.iter_mut().for_each(|p| p.legacy_prices.clear());
        offered
    }

    pub fn plan(&self, id: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.id == id)
    }

    pub fn pack(&self, id: &str) -> Option<&Pack> {
        self.packs.iter().find(|p| p.id == id)
    }

    /// The plan or pack with this id.
    pub fn item(&self, id: &str) -> Option<Product<'_>> {
        self.plan(id).map(Product::Plan).or_else(|| self.pack(id).map(Product::Pack))
    }

    /// What a Stripe price sells, including a plan's legacy prices.
    pub fn product_of_price(&self, price_id: &str) -> Option<Product<'_>> {
        let has = |prices: &[Price]| prices.iter().any(|p| p.id.as_deref() == Some(price_id));
        self.plans
            .iter()
            .find(|p| has(&p.prices) || p.legacy_prices.iter().any(|l| l == price_id))
            .map(Product::Plan)
            .or_else(|| self.packs.iter().find(|p| has(&p.prices)).map(Product::Pack))
    }

    /// The plan a subscription price belongs to, if it is one of ours.
    pub fn plan_of_price(&self, price_id: &str) -> Option<&Plan> {
        match self.product_of_price(price_id)? {
            Product::Plan(plan) => Some(plan),
            Product::Pack(_) => None,
        }
    }

    /// The plan bucket a month of this tier is worth; `None` for a tier the catalogue
    /// no longer has.
    pub fn allowance(&self, tier: &str) -> Option<i64> {
        if tier == FREE {
            return Some(self.free.credits);
        }
        self.plan(tier).map(|p| p.credits)
    }

    /// Where a tier stands: free below every plan; `None` for one the catalogue no
    /// longer has.
    pub fn rank(&self, tier: &str) -> Option<i64> {
        if tier == FREE {
            return Some(i64::MIN);
        }
        self.plan(tier).map(|p| p.rank)
    }

    /// Whether `a` is a better tier than `b`. A tier the catalogue does not know is
    /// never better nor worse: nothing is granted on a guess.
    pub fn better(&self, a: &str, b: &str) -> bool {
        matches!((self.rank(a), self.rank(b)), (Some(a), Some(b)) if a > b)
    }

    /// The name users see for a tier: the plan's name, "Free", or the id itself for a
    /// tier the catalogue no longer has.
    pub fn tier_name<'a>(&'a self, tier: &'a str) -> &'a str {
        match self.plan(tier) {
            Some(plan) => &plan.name,
            None if tier == FREE => "Free",
            None => tier,
        }
    }

    /// Whether the catalogue has this tier (a plan id, or free).
    pub fn knows_tier(&self, tier: &str) -> bool {
        self.allowance(tier).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_guides() {
        let c = Catalogue::default_with(Some("p_pro".into()), Some("p_ent".into()), Some("p_top".into()));
        assert_eq!(c.allowance("pro"), Some(2_500));
        assert_eq!(c.allowance("enterprise"), Some(10_000));
        assert_eq!(c.allowance(FREE), Some(100));
        assert_eq!(c.pack("topup").map(|p| p.credits), Some(1_000));
        assert!(c.better("enterprise", "pro") && c.better("pro", FREE) && !c.better("pro", "enterprise"));
        assert_eq!(c.plan_of_price("p_ent").map(|p| p.id.as_str()), Some("enterprise"));
        assert_eq!(c.product_of_price("p_top").map(Product::id), Some("topup"));
        assert!(c.plan_of_price("p_top").is_none());
    }

    #[test]
    fn prices_map_to_plans_only_when_configured() {
        let c = Catalogue::default();
        assert_eq!(c.product_of_price("price_pro"), None);
    }

    #[test]
    fn prices_read_as_people_write_them() {
        let c = Catalogue::default();
        assert_eq!(c.plans[0].prices[0].label(), "$49.00/month");
        assert_eq!(c.packs[0].prices[0].label(), "$20.00");
        let yen = Price { id: None, amount: 1_234_567, currency: "jpy".into(), interval: Some(Interval::Year) };
        assert_eq!(yen.label(), "JPY 12345.67/year");
    }

    #[test]
    fn unknown_tiers_are_neither_better_nor_worse() {
        let c = Catalogue::default();
        assert!(!c.better("gone", "pro") && !c.better("pro", "gone"));
        assert_eq!(c.allowance("gone"), None);
    }
}
