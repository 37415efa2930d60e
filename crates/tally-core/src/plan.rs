//! Plans, purchasable items and the catalog that maps Stripe prices to them.

use serde::{Deserialize, Serialize};

/// A subscription tier. Ordered by what it is worth, so `max` picks the better plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    Free,
    Pro,
    Enterprise,
}

impl Plan {
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Free => "free",
            Plan::Pro => "pro",
            Plan::Enterprise => "enterprise",
        }
    }

    pub fn parse(s: &str) -> Option<Plan> {
        match s {
            "free" => Some(Plan::Free),
            "pro" => Some(Plan::Pro),
            "enterprise" => Some(Plan::Enterprise),
            _ => None,
        }
    }
}

/// Something a user can buy through checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Item {
    Pro,
    Enterprise,
    Topup,
}

impl Item {
    pub fn as_str(self) -> &'static str {
        match self {
            Item::Pro => "pro",
            Item::Enterprise => "enterprise",
            Item::Topup => "topup",
        }
    }

    pub fn parse(s: &str) -> Option<Item> {
        match s {
            "pro" => Some(Item::Pro),
            "enterprise" => Some(Item::Enterprise),
            "topup" => Some(Item::Topup),
            _ => None,
        }
    }

    /// The plan a subscription item grants; `None` for the one-time top-up.
    pub fn plan(self) -> Option<Plan> {
        match self {
            Item::Pro => Some(Plan::Pro),
            Item::Enterprise => Some(Plan::Enterprise),
            Item::Topup => None,
        }
    }
}

/// A Stripe price and the credits it is worth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub price_id: Option<String>,
    pub credits: i64,
}

/// What each plan and the top-up are worth, and which Stripe prices they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    pub free_credits: i64,
    pub pro: Offer,
    pub enterprise: Offer,
    pub topup: Offer,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            free_credits: 100,
            pro: Offer { price_id: None, credits: 2_500 },
            enterprise: Offer { price_id: None, credits: 10_000 },
            topup: Offer { price_id: None, credits: 1_000 },
        }
    }
}

impl Catalog {
    /// The plan bucket a period of this plan is worth.
    pub fn allowance(&self, plan: Plan) -> i64 {
        match plan {
            Plan::Free => self.free_credits,
            Plan::Pro => self.pro.credits,
            Plan::Enterprise => self.enterprise.credits,
        }
    }

    pub fn offer(&self, item: Item) -> &Offer {
        match item {
            Item::Pro => &self.pro,
            Item::Enterprise => &self.enterprise,
            Item::Topup => &self.topup,
        }
    }

    /// The plan a subscription price belongs to, if it is one of ours.
    pub fn plan_for_price(&self, price_id: &str) -> Option<Plan> {
        [(Plan::Pro, &self.pro), (Plan::Enterprise, &self.enterprise)]
            .into_iter()
            .find(|(_, offer)| offer.price_id.as_deref() == Some(price_id))
            .map(|(plan, _)| plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_order_by_worth() {
        assert!(Plan::Enterprise > Plan::Pro && Plan::Pro > Plan::Free);
        assert_eq!(Plan::Pro.max(Plan::Enterprise), Plan::Enterprise);
    }

    #[test]
    fn prices_map_to_plans_only_when_configured() {
        let mut catalog = Catalog::default();
        assert_eq!(catalog.plan_for_price("price_pro"), None);
        catalog.pro.price_id = Some("price_pro".into());
        assert_eq!(catalog.plan_for_price("price_pro"), Some(Plan::Pro));
        assert_eq!(catalog.plan_for_price("price_other"), None);
    }
}
