//! Plain configuration data for [`CostRouterLayer::from_config`](crate::CostRouterLayer::from_config)
//! and [`CostRouterHandle::reload`](crate::CostRouterHandle::reload).
//!
//! ```toml
//! default_catalog = true                      # start from DESIGN §5's four models
//! providers = { openai = "openai-sim", anthropic = "anthropic-sim", gemini = "gemini-sim", deepseek = "deepseek-sim" }
//! default_output_tokens = 256                 # output allowance when the client sends no max_tokens
//! seed = 7                                    # makes the weighted strategy deterministic
//!
//! [models."gpt-4.1"]                          # override a catalog figure (or add a model)
//! price = { input = 2.0, cached_input = 0.5, output = 8.0 }
//!
//! [models."llama-3.3-70b"]
//! provider = "groq"
//! price = { input = 0.59, output = 0.79 }
//! context_window = 131072
//! tier = "medium"
//! capabilities = ["tools"]
//!
//! [fallbacks]
//! "gpt-4.1" = ["claude-sonnet-4.5"]
//!
//! [auto]
//! strategy = "cheapest"
//!
//! [routes.cheap]
//! tiers = ["simple", "medium"]
//! strategy = "cheapest"
//!
//! [routes.support]
//! models = ["gemini-2.5-flash", "gpt-4.1"]
//! strategy = "weighted"
//!
//! [weights]
//! "gemini-2.5-flash" = 3.0
//! "gpt-4.1" = 1.0
//!
//! [[rules]]
//! keyword = "refund"
//! route = "support"
//!
//! [[rules]]
//! regex = "(?i)stack trace"
//! route = "smart"
//!
//! [budgets.default]
//! daily_usd = 10.0
//! monthly_usd = 200.0
//! action = "downgrade"
//!
//! [budgets.tenants.acme]
//! daily_usd = 50.0
//! action = "refuse"
//! status = 402
//!
//! [budgets.global]
//! monthly_usd = 5000.0
//! ```

use std::collections::BTreeMap;

use rampart_core::Price;
use serde::Deserialize;

use crate::catalog::Tier;
use crate::strategy::Strategy;

/// The whole router configuration. Every field is optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CostRouterConfig {
    /// Start from the built-in catalog (DESIGN §5). Default `true`.
    pub default_catalog: bool,
    /// Provider names for the built-in catalog's providers (`deepseek`, `gemini`, `openai`,
    /// `anthropic`), e.g. `{ openai = "openai-sim" }`.
    pub providers: BTreeMap<String, String>,
    /// Models added to the catalog, or figures overriding a catalog model's.
    pub models: BTreeMap<String, ModelConfig>,
    /// Next candidates after a concrete model, in order.
    pub fallbacks: BTreeMap<String, Vec<String>>,
    /// The built-in `auto` route (default: every model, `cheapest`).
    pub auto: RouteConfig,
    /// Named groups (`cheap`, `fast`, `smart` by default). Replaces the defaults when set.
    pub routes: BTreeMap<String, RouteConfig>,
    /// Content rules, checked in order before the classifier on routed requests.
    pub rules: Vec<RuleConfig>,
    /// Weights of the `weighted` strategy by model (default 1.0).
    pub weights: BTreeMap<String, f64>,
    /// Seed of the `weighted` strategy's generator (deterministic when set).
    pub seed: Option<u64>,
    /// Output tokens assumed when the client sends neither `max_completion_tokens` nor
    /// `max_tokens` (context-window check and budget estimate). Default 256.
    pub default_output_tokens: u64,
    /// Weight of the newest sample in the time-to-first-byte EWMA, in (0, 1]. Default 0.2.
    pub ewma_alpha: f64,
    /// After the chosen tier's models, append the route's other models as fallbacks (nearest
    /// tier first, stronger before weaker). Default `true`.
    pub cross_tier_fallback: bool,
    /// JSON responses up to this size are buffered to put `x-rampart-cost-usd` on them
    /// (larger ones pass through without it). Default 8 MiB.
    pub max_json_body_bytes: usize,
    /// Spend limits.
    pub budgets: BudgetsConfig,
}

impl Default for CostRouterConfig {
    fn default() -> Self {
        let mut routes = BTreeMap::new();
        routes.insert(
            "cheap".to_owned(),
            RouteConfig {
                tiers: vec![Tier::Simple, Tier::Medium],
                ..RouteConfig::default()
            },
        );
        routes.insert(
            "fast".to_owned(),
            RouteConfig {
                strategy: Strategy::LowestLatency,
                classify: false,
                ..RouteConfig::default()
            },
        );
        routes.insert(
            "smart".to_owned(),
            RouteConfig {
                tiers: vec![Tier::Complex],
                ..RouteConfig::default()
            },
        );
        Self {
            default_catalog: true,
            providers: BTreeMap::new(),
            models: BTreeMap::new(),
            fallbacks: BTreeMap::new(),
            auto: RouteConfig::default(),
            routes,
            rules: Vec::new(),
            weights: BTreeMap::new(),
            seed: None,
            default_output_tokens: 256,
            ewma_alpha: 0.2,
            cross_tier_fallback: true,
            max_json_body_bytes: 8 * 1024 * 1024,
            budgets: BudgetsConfig::default(),
        }
    }
}

/// A model to add, or figures overriding a catalog model's. Every field is required for a new
/// model except `capabilities`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// The provider's configured name.
    pub provider: Option<String>,
    /// USD per million input / cached input / output tokens.
    pub price: Option<Price>,
    /// Context window in tokens.
    pub context_window: Option<u64>,
    /// `simple`, `medium` or `complex`.
    pub tier: Option<Tier>,
    /// `tools`, `vision`, `json_mode`, ...
    pub capabilities: Option<Vec<String>>,
    /// `false` removes a catalog model. Default `true`.
    pub enabled: Option<bool>,
}

/// A route: `auto` or a named group.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// Models of the route.
    pub models: Vec<String>,
    /// Tiers whose models belong to the route (with `models`: the union; both empty: every
    /// model).
    pub tiers: Vec<Tier>,
    /// How the chosen tier's models are ordered. Default `cheapest`.
    pub strategy: Strategy,
    /// Classify the request into a tier (default `true`); `false` orders every model of the
    /// route by the strategy.
    pub classify: bool,
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            models: Vec::new(),
            tiers: Vec::new(),
            strategy: Strategy::Cheapest,
            classify: true,
        }
    }
}

/// A content rule: when a routed request's prompt matches, it goes to `route` (and/or `tier`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    /// A case-insensitive substring.
    pub keyword: Option<String>,
    /// A regular expression (`regex` crate syntax; add `(?i)` for case-insensitivity).
    pub regex: Option<String>,
    /// The route to use (`auto` or a group name).
    pub route: Option<String>,
    /// The tier to use instead of classifying.
    pub tier: Option<Tier>,
}

/// `[budgets]`: spend limits per tenant and globally.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetsConfig {
    /// Limits of every tenant without an entry in `tenants`.
    pub default: Option<BudgetLimit>,
    /// Limits by tenant id.
    pub tenants: BTreeMap<String, BudgetLimit>,
    /// Limits on the sum of every tenant's spend.
    pub global: Option<BudgetLimit>,
    /// What to do when the budget store fails. Default `fail_open`. A store with an outage
    /// policy of its own ([`BudgetStore::error_policy`](crate::BudgetStore::error_policy))
    /// overrides it.
    pub on_store_error: StoreFailure,
}

/// Spend limits of one scope (UTC calendar day and month).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetLimit {
    /// USD per UTC calendar day.
    pub daily_usd: Option<f64>,
    /// USD per UTC calendar month.
    pub monthly_usd: Option<f64>,
    /// At the limit: `refuse` (default) or `downgrade`.
    pub action: BudgetAction,
    /// Status of a refusal: 429 (default) or 402.
    pub status: u16,
}

impl Default for BudgetLimit {
    fn default() -> Self {
        Self {
            daily_usd: None,
            monthly_usd: None,
            action: BudgetAction::Refuse,
            status: 429,
        }
    }
}

impl BudgetLimit {
    /// A daily limit in USD.
    pub fn daily(usd: f64) -> Self {
        Self {
            daily_usd: Some(usd),
            ..Self::default()
        }
    }
    /// A monthly limit in USD.
    pub fn monthly(usd: f64) -> Self {
        Self {
            monthly_usd: Some(usd),
            ..Self::default()
        }
    }
    /// With this action.
    pub fn action(mut self, action: BudgetAction) -> Self {
        self.action = action;
        self
    }
    /// With this refusal status (429 or 402).
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
}

/// What happens when a request's estimate does not fit the remaining budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetAction {
    /// Answer `budget_exceeded` (429, or 402 when configured).
    #[default]
    Refuse,
    /// Serve the cheapest allowed model whose estimate fits what is left (route gets
    /// `;downgraded=budget`); refuse when none fits.
    Downgrade,
}

impl BudgetAction {
    /// `refuse` or `downgrade` (the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refuse => "refuse",
            Self::Downgrade => "downgrade",
        }
    }
}

/// What to do when the budget store cannot answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreFailure {
    /// Serve without a reservation (logged; spend totals still count).
    #[default]
    FailOpen,
    /// Refuse with 503 `state_store_unavailable`.
    FailClosed,
}
