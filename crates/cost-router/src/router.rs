//! The compiled configuration (what the layer swaps on reload) and the routing decision.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};

use http::StatusCode;
use rampart_core::openai::Usage;
use rampart_core::{ChatRequest, Error, MicroUsd};
use regex::Regex;

use crate::budget::ScopeLimit;
use crate::catalog::{Catalog, ModelInfo, Tier};
use crate::config::{BudgetAction, BudgetLimit, CostRouterConfig, RouteConfig, StoreFailure};
use crate::error::{ConfigError, context_too_long, over_max_price};
use crate::strategy::{
    Hints, LatencyTracker, OrderCtx, Priority, Sequence, Strategy, apply_latency_budget, order,
};

/// A route (`auto` or a group), compiled.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) name: Arc<str>,
    pub(crate) auto: bool,
    pub(crate) models: Vec<usize>,
    pub(crate) strategy: Strategy,
    pub(crate) classify: bool,
}

#[derive(Debug)]
pub(crate) struct Rule {
    pub(crate) matcher: Regex,
    pub(crate) route: Option<Arc<str>>,
    pub(crate) tier: Option<Tier>,
}

/// Limits of one scope, compiled.
#[derive(Debug, Clone)]
pub(crate) struct Limit {
    pub(crate) daily: Option<MicroUsd>,
    pub(crate) monthly: Option<MicroUsd>,
    pub(crate) action: BudgetAction,
    pub(crate) status: StatusCode,
}

#[derive(Debug, Default)]
pub(crate) struct Budgets {
    pub(crate) default: Option<Limit>,
    pub(crate) tenants: HashMap<String, Limit>,
    pub(crate) global: Option<Limit>,
    pub(crate) on_store_error: StoreFailure,
}

/// The scope key of the global budget.
pub(crate) const GLOBAL_SCOPE: &str = "global";

impl Budgets {
    /// The scopes limiting `tenant`, and the tenant's (else global) action and status.
    pub(crate) fn scopes(&self, tenant: &str) -> Option<(Vec<ScopeLimit>, &Limit)> {
        let own = self.tenants.get(tenant).or(self.default.as_ref());
        let mut scopes = Vec::new();
        if let Some(l) = own {
            scopes.push(ScopeLimit {
                scope: tenant_scope(tenant),
                daily: l.daily,
                monthly: l.monthly,
            });
        }
        if let Some(g) = &self.global {
            scopes.push(ScopeLimit {
                scope: GLOBAL_SCOPE.into(),
                daily: g.daily,
                monthly: g.monthly,
            });
        }
        let policy = own.or(self.global.as_ref())?;
        Some((scopes, policy))
    }
}

/// The scope key of a tenant's budget.
pub(crate) fn tenant_scope(tenant: &str) -> Arc<str> {
    format!("tenant:{tenant}").into()
}

/// The whole compiled configuration.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) source: CostRouterConfig,
    pub(crate) catalog: Catalog,
    routes: HashMap<Arc<str>, Route>,
    /// Models then routes, for not-found messages.
    names: Vec<String>,
    fallbacks: HashMap<usize, Vec<usize>>,
    pub(crate) rules: Vec<Rule>,
    weights: Vec<f64>,
    pub(crate) default_output_tokens: u64,
    pub(crate) cross_tier_fallback: bool,
    pub(crate) max_json_body_bytes: usize,
    pub(crate) budgets: Budgets,
}

/// What was asked for.
pub(crate) enum Requested<'a> {
    Model(usize),
    Route(&'a Route),
}

/// What a request needs from a model.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Needs {
    /// Prompt estimate.
    pub(crate) prompt_tokens: u64,
    /// Output allowance of one choice.
    pub(crate) output_tokens: u64,
    /// Choices (`n`).
    pub(crate) choices: u64,
    pub(crate) tools: bool,
    pub(crate) vision: bool,
    pub(crate) json_mode: bool,
}

/// The two content-part types that carry an image. Plain substring searches: a regex
/// alternation cost ~2,300 instructions a request on a short prompt.
static IMAGE_URL_PART: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(br#""image_url""#));
static INPUT_IMAGE_PART: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(br#""input_image""#));

fn has_image_part(messages: &[u8]) -> bool {
    IMAGE_URL_PART.find(messages).is_some() || INPUT_IMAGE_PART.find(messages).is_some()
}

impl Needs {
    pub(crate) fn of(chat: &ChatRequest, prompt_tokens: u64, default_output: u64) -> Self {
        let present = |k: &str| chat.member(k).is_some_and(|v| v != b"null");
        let json_mode = chat.member("response_format").is_some_and(|v| {
            let s = String::from_utf8_lossy(v);
            s.contains("json_object") || s.contains("json_schema")
        });
        Self {
            prompt_tokens,
            output_tokens: chat.max_output_tokens().unwrap_or(default_output),
            choices: chat.n().unwrap_or(1).max(1),
            tools: present("tools") && chat.member("tools") != Some(b"[]"),
            vision: has_image_part(chat.messages_raw()),
            json_mode,
        }
    }

    fn tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.output_tokens)
    }

    fn capable(&self, m: &ModelInfo) -> bool {
        (!self.tools || m.supports("tools"))
            && (!self.vision || m.supports("vision"))
            && (!self.json_mode || m.supports("json_mode"))
    }

    /// The estimated cost on `m`: prompt estimate at the input price plus the output allowance
    /// (× n) at the output price.
    pub(crate) fn estimate(&self, m: &ModelInfo) -> MicroUsd {
        m.price.cost(&Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.output_tokens.saturating_mul(self.choices),
            ..Usage::default()
        })
    }
}

/// A routing plan: candidates (catalog positions, best first) and the route label.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) models: Vec<usize>,
    pub(crate) route: String,
}

/// Shared, non-reloadable state ordering needs.
pub(crate) struct Runtime<'a> {
    pub(crate) latency: &'a LatencyTracker,
    pub(crate) seq: &'a Sequence,
}

fn micros(usd: f64) -> MicroUsd {
    (usd * 1e6).round() as MicroUsd
}

fn check_price(key: &str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(ConfigError::new(key, "must be a finite number ≥ 0"))
    }
}

fn compile_limit(key: &str, l: &BudgetLimit) -> Result<Limit, ConfigError> {
    for (k, v) in [("daily_usd", l.daily_usd), ("monthly_usd", l.monthly_usd)] {
        if let Some(v) = v {
            check_price(&format!("{key}.{k}"), v)?;
        }
    }
    let status = match l.status {
        429 => StatusCode::TOO_MANY_REQUESTS,
        402 => StatusCode::PAYMENT_REQUIRED,
        other => {
            return Err(ConfigError::new(
                format!("{key}.status"),
                format!("{other} is not 429 or 402"),
            ));
        }
    };
    Ok(Limit {
        daily: l.daily_usd.map(micros),
        monthly: l.monthly_usd.map(micros),
        action: l.action,
        status,
    })
}

const DEFAULT_PROVIDERS: [&str; 4] = ["deepseek", "gemini", "openai", "anthropic"];

impl Compiled {
    /// Compiles `config` over `base` (a catalog given to the builder) or the built-in one.
    pub(crate) fn compile_with(
        config: CostRouterConfig,
        base: Option<&Catalog>,
    ) -> Result<Self, ConfigError> {
        let mut catalog = match (base, config.default_catalog) {
            (Some(c), _) => c.clone(),
            (None, true) => Catalog::default(),
            (None, false) => Catalog::empty(),
        };
        for (from, to) in &config.providers {
            let known = catalog.models().iter().any(|m| m.provider() == from);
            if !known && !DEFAULT_PROVIDERS.contains(&from.as_str()) {
                return Err(ConfigError::new(
                    format!("providers.{from}"),
                    "no catalog model is served by this provider",
                ));
            }
            if to.trim().is_empty() {
                return Err(ConfigError::new(
                    format!("providers.{from}"),
                    "must not be empty",
                ));
            }
            catalog.rename_provider(from, to);
        }
        for (name, mc) in &config.models {
            let key = format!("models.\"{name}\"");
            if mc.enabled == Some(false) {
                catalog.remove(name);
                continue;
            }
            let mut m = match catalog.get(name) {
                Some(m) => m.clone(),
                None => {
                    let need = |field: &str| {
                        ConfigError::new(
                            format!("{key}.{field}"),
                            "required for a model that is not in the catalog",
                        )
                    };
                    let provider = mc.provider.as_deref().ok_or_else(|| need("provider"))?;
                    ModelInfo::new(
                        provider,
                        name,
                        mc.price.ok_or_else(|| need("price"))?,
                        mc.context_window.ok_or_else(|| need("context_window"))?,
                        mc.tier.ok_or_else(|| need("tier"))?,
                    )
                }
            };
            if let Some(p) = &mc.provider {
                m.target.provider = p.as_str().into();
            }
            if let Some(p) = mc.price {
                m.price = p;
            }
            if let Some(c) = mc.context_window {
                m.context_window = c;
            }
            if let Some(t) = mc.tier {
                m.tier = t;
            }
            if let Some(c) = &mc.capabilities {
                m.capabilities = c.iter().cloned().collect::<BTreeSet<_>>();
            }
            catalog.insert(m);
        }
        for m in catalog.models() {
            let key = format!("models.\"{}\"", m.name());
            if name_is_bad(m.name()) {
                return Err(ConfigError::new(key, "model names must not be empty"));
            }
            if m.provider().trim().is_empty() {
                return Err(ConfigError::new(
                    format!("{key}.provider"),
                    "must not be empty",
                ));
            }
            check_price(&format!("{key}.price.input"), m.price.input)?;
            check_price(&format!("{key}.price.output"), m.price.output)?;
            if let Some(c) = m.price.cached_input {
                check_price(&format!("{key}.price.cached_input"), c)?;
            }
            if m.context_window == 0 {
                return Err(ConfigError::new(
                    format!("{key}.context_window"),
                    "must be greater than 0",
                ));
            }
        }
        if catalog.is_empty() {
            return Err(ConfigError::new("models", "the catalog has no model"));
        }

        let model_idx = |key: String, name: &str| {
            catalog
                .position(name)
                .ok_or_else(|| ConfigError::new(key, format!("unknown model \"{name}\"")))
        };

        let mut fallbacks = HashMap::new();
        for (model, list) in &config.fallbacks {
            let key = format!("fallbacks.\"{model}\"");
            let from = model_idx(key.clone(), model)?;
            let mut out = Vec::new();
            for (i, f) in list.iter().enumerate() {
                let to = model_idx(format!("{key}[{i}]"), f)?;
                if to == from {
                    return Err(ConfigError::new(
                        format!("{key}[{i}]"),
                        "a model cannot fall back to itself",
                    ));
                }
                if !out.contains(&to) {
                    out.push(to);
                }
            }
            fallbacks.insert(from, out);
        }

        let strict_routes = config.routes != CostRouterConfig::default().routes;
        let mut routes = HashMap::new();
        let mut route_order: Vec<Arc<str>> = Vec::new();
        let auto = compile_route("auto", "auto", &config.auto, &catalog, true)?
            .ok_or_else(|| ConfigError::new("auto", "no model matches"))?;
        route_order.push(auto.name.clone());
        routes.insert(auto.name.clone(), auto);
        for (name, rc) in &config.routes {
            let key = format!("routes.{name}");
            if name_is_bad(name) {
                return Err(ConfigError::new(key, "route names must not be empty"));
            }
            if name == "auto" {
                return Err(ConfigError::new(
                    key,
                    "`auto` is built in: configure it under [auto]",
                ));
            }
            if catalog.get(name).is_some() {
                return Err(ConfigError::new(
                    key,
                    "a route cannot have the name of a model",
                ));
            }
            match compile_route(&key, name, rc, &catalog, false)? {
                Some(r) => {
                    route_order.push(r.name.clone());
                    routes.insert(r.name.clone(), r);
                }
                None if strict_routes => {
                    return Err(ConfigError::new(key, "no model of the catalog matches"));
                }
                // A default group the catalog has no model for is left out.
                None => {}
            }
        }

        let mut rules = Vec::new();
        for (i, r) in config.rules.iter().enumerate() {
            let key = format!("rules[{i}]");
            let pattern = match (&r.keyword, &r.regex) {
                (Some(k), None) if !k.is_empty() => format!("(?i){}", regex::escape(k)),
                (None, Some(re)) => re.clone(),
                _ => {
                    return Err(ConfigError::new(
                        key,
                        "set exactly one of `keyword` (non-empty) or `regex`",
                    ));
                }
            };
            let matcher = Regex::new(&pattern)
                .map_err(|e| ConfigError::new(format!("{key}.regex"), e.to_string()))?;
            if r.route.is_none() && r.tier.is_none() {
                return Err(ConfigError::new(key, "set `route`, `tier` or both"));
            }
            let route = match &r.route {
                Some(name) => match routes.get_key_value(name.as_str()) {
                    Some((k, _)) => Some(k.clone()),
                    None => {
                        return Err(ConfigError::new(
                            format!("{key}.route"),
                            format!("unknown route \"{name}\""),
                        ));
                    }
                },
                None => None,
            };
            rules.push(Rule {
                matcher,
                route,
                tier: r.tier,
            });
        }

        let mut weights = vec![1.0; catalog.len()];
        for (model, w) in &config.weights {
            let key = format!("weights.\"{model}\"");
            let i = model_idx(key.clone(), model)?;
            check_price(&key, *w)?;
            if let Some(slot) = weights.get_mut(i) {
                *slot = *w;
            }
        }
        if config.default_output_tokens == 0 {
            return Err(ConfigError::new(
                "default_output_tokens",
                "must be greater than 0",
            ));
        }
        if !(config.ewma_alpha > 0.0 && config.ewma_alpha <= 1.0) {
            return Err(ConfigError::new("ewma_alpha", "must be in (0, 1]"));
        }
        if config.max_json_body_bytes == 0 {
            return Err(ConfigError::new(
                "max_json_body_bytes",
                "must be greater than 0",
            ));
        }

        let b = &config.budgets;
        let mut budgets = Budgets {
            default: b
                .default
                .as_ref()
                .map(|l| compile_limit("budgets.default", l))
                .transpose()?,
            global: b
                .global
                .as_ref()
                .map(|l| compile_limit("budgets.global", l))
                .transpose()?,
            tenants: HashMap::new(),
            on_store_error: b.on_store_error,
        };
        for (tenant, l) in &b.tenants {
            budgets.tenants.insert(
                tenant.clone(),
                compile_limit(&format!("budgets.tenants.{tenant}"), l)?,
            );
        }

        let names = catalog
            .models()
            .iter()
            .map(|m| m.name().to_owned())
            .chain(route_order.iter().map(|r| r.to_string()))
            .collect();
        Ok(Self {
            catalog,
            routes,
            names,
            fallbacks,
            rules,
            weights,
            default_output_tokens: config.default_output_tokens,
            cross_tier_fallback: config.cross_tier_fallback,
            max_json_body_bytes: config.max_json_body_bytes,
            budgets,
            source: config,
        })
    }

    /// A router that knows nothing: every request is a 404.
    pub(crate) fn empty(source: CostRouterConfig) -> Self {
        Self {
            catalog: Catalog::empty(),
            routes: HashMap::new(),
            names: Vec::new(),
            fallbacks: HashMap::new(),
            rules: Vec::new(),
            weights: Vec::new(),
            default_output_tokens: source.default_output_tokens.max(1),
            cross_tier_fallback: source.cross_tier_fallback,
            max_json_body_bytes: source.max_json_body_bytes.max(1),
            budgets: Budgets::default(),
            source,
        }
    }

    /// Models and routes a client can ask for.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    pub(crate) fn route_names(&self) -> impl Iterator<Item = &str> {
        self.names
            .iter()
            .skip(self.catalog.len())
            .map(String::as_str)
    }

    /// What `model` names, or 404 `model_not_found` listing models and routes.
    pub(crate) fn lookup(&self, model: &str) -> Result<Requested<'_>, Error> {
        if let Some(i) = self.catalog.position(model) {
            return Ok(Requested::Model(i));
        }
        if let Some(r) = self.routes.get(model) {
            return Ok(Requested::Route(r));
        }
        Err(Error::model_not_found(
            model,
            self.names.iter().map(String::as_str),
        ))
    }

    pub(crate) fn route(&self, name: &str) -> Option<&Route> {
        self.routes.get(name)
    }

    fn model(&self, i: usize) -> Option<&ModelInfo> {
        self.catalog.at(i)
    }

    fn idx(&self, m: &ModelInfo) -> Option<usize> {
        self.catalog.position(m.name())
    }

    fn weight(&self, m: &ModelInfo) -> f64 {
        self.idx(m)
            .and_then(|i| self.weights.get(i).copied())
            .unwrap_or(1.0)
    }

    /// Drops models whose context window is too small, then those above the max price.
    fn filter<'a>(
        &'a self,
        requested: &str,
        models: impl Iterator<Item = &'a ModelInfo>,
        needs: &Needs,
        hints: &Hints,
    ) -> Result<Vec<&'a ModelInfo>, Error> {
        let all: Vec<&ModelInfo> = models.collect();
        let fits: Vec<&ModelInfo> = all
            .iter()
            .copied()
            .filter(|m| m.context_window >= needs.tokens())
            .collect();
        if fits.is_empty() {
            let largest = all.iter().map(|m| m.context_window).max().unwrap_or(0);
            return Err(context_too_long(requested, needs.tokens(), largest));
        }
        let Some(max) = hints.max_price else {
            return Ok(fits);
        };
        let within: Vec<&ModelInfo> = fits
            .iter()
            .copied()
            .filter(|m| m.price.output <= max)
            .collect();
        if within.is_empty() {
            let cheapest = fits
                .iter()
                .min_by(|a, b| a.price.output.total_cmp(&b.price.output))
                .map(|m| (m.name(), m.price.output));
            return Err(over_max_price(requested, max, cheapest));
        }
        Ok(within)
    }

    /// The plan for an explicit model: it, then its fallbacks (context window and max price
    /// applied).
    pub(crate) fn plan_model(&self, i: usize, needs: &Needs, hints: &Hints) -> Result<Plan, Error> {
        let Some(m) = self.model(i) else {
            return Err(Error::internal("catalog index out of range"));
        };
        let chain = std::iter::once(i)
            .chain(self.fallbacks.get(&i).into_iter().flatten().copied())
            .filter_map(|j| self.model(j));
        let models = self.filter(m.name(), chain, needs, hints)?;
        Ok(Plan {
            models: models.iter().filter_map(|m| self.idx(m)).collect(),
            route: "explicit".to_owned(),
        })
    }

    /// The plan for a route. `tier` is the classified tier (ignored for `low`/`high` priority
    /// and for routes that do not classify).
    pub(crate) fn plan_route(
        &self,
        route: &Route,
        tier: Option<Tier>,
        needs: &Needs,
        hints: &Hints,
        rt: &Runtime<'_>,
    ) -> Result<Plan, Error> {
        let models = self.filter(
            &route.name,
            route.models.iter().filter_map(|&i| self.model(i)),
            needs,
            hints,
        )?;
        // Capabilities are a soft filter: drop incapable models only when a capable one remains.
        let capable: Vec<&ModelInfo> = models
            .iter()
            .copied()
            .filter(|m| needs.capable(m))
            .collect();
        let models = if capable.is_empty() { models } else { capable };
        let weights = |m: &ModelInfo| self.weight(m);
        let ctx = OrderCtx {
            latency: rt.latency,
            weights: &weights,
            seq: rt.seq,
        };
        let (mut ordered, label_tier, strategy) = match (hints.priority, tier) {
            (Priority::Low, _) => {
                let mut all = models;
                order(&mut all, Strategy::Cheapest, &ctx);
                let t = all.first().map_or(Tier::Simple, |m| m.tier);
                (all, t, Strategy::Cheapest)
            }
            (Priority::High, _) => {
                let best = models.iter().map(|m| m.tier).max().unwrap_or(Tier::Complex);
                (
                    self.by_tier(models, best, Strategy::Strongest, &ctx),
                    best,
                    Strategy::Strongest,
                )
            }
            (Priority::Medium, Some(t)) if route.classify => (
                self.by_tier(models, t, route.strategy, &ctx),
                t,
                route.strategy,
            ),
            (Priority::Medium, _) => {
                let mut all = models;
                order(&mut all, route.strategy, &ctx);
                let t = all.first().map_or(Tier::Simple, |m| m.tier);
                (all, t, route.strategy)
            }
        };
        if let Some(budget) = hints.latency_budget {
            apply_latency_budget(&mut ordered, budget, rt.latency);
        }
        let label = if route.auto {
            format!("auto:{label_tier}:{strategy}")
        } else {
            format!("group:{}:{label_tier}:{strategy}", route.name)
        };
        Ok(Plan {
            models: ordered.iter().filter_map(|m| self.idx(m)).collect(),
            route: label,
        })
    }

    /// The tier's models ordered by `strategy`; when the tier has none, the nearest tier
    /// (stronger first) takes its place. With `cross_tier_fallback`, the other tiers follow.
    fn by_tier<'a>(
        &self,
        models: Vec<&'a ModelInfo>,
        tier: Tier,
        strategy: Strategy,
        ctx: &OrderCtx<'_>,
    ) -> Vec<&'a ModelInfo> {
        // Tiers by distance from `tier`, stronger before weaker at equal distance.
        let mut tiers = Tier::ALL;
        tiers.sort_by_key(|t| ((t.rank() - tier.rank()).abs(), -t.rank()));
        let mut out = Vec::with_capacity(models.len());
        for t in tiers {
            let mut group: Vec<&ModelInfo> =
                models.iter().copied().filter(|m| m.tier == t).collect();
            if group.is_empty() {
                continue;
            }
            order(&mut group, strategy, ctx);
            out.extend(group);
            if !self.cross_tier_fallback {
                break;
            }
        }
        out
    }

    /// Every catalog model allowed for the request (context window, max price, capabilities
    /// soft), by estimated cost, cheapest first: the downgrade candidates.
    pub(crate) fn downgrade_candidates(
        &self,
        needs: &Needs,
        hints: &Hints,
    ) -> Vec<(usize, MicroUsd)> {
        let models: Vec<&ModelInfo> = self
            .catalog
            .models()
            .iter()
            .filter(|m| m.context_window >= needs.tokens())
            .filter(|m| hints.max_price.is_none_or(|max| m.price.output <= max))
            .collect();
        let capable: Vec<&ModelInfo> = models
            .iter()
            .copied()
            .filter(|m| needs.capable(m))
            .collect();
        let models = if capable.is_empty() { models } else { capable };
        let mut out: Vec<(usize, MicroUsd)> = models
            .iter()
            .filter_map(|m| Some((self.idx(m)?, needs.estimate(m))))
            .collect();
        out.sort_by_key(|&(_, cost)| cost);
        out
    }
}

fn name_is_bad(name: &str) -> bool {
    name.trim().is_empty()
}

fn compile_route(
    key: &str,
    name: &str,
    rc: &RouteConfig,
    catalog: &Catalog,
    auto: bool,
) -> Result<Option<Route>, ConfigError> {
    let mut models = Vec::new();
    for (i, m) in rc.models.iter().enumerate() {
        let idx = catalog.position(m).ok_or_else(|| {
            ConfigError::new(
                format!("{key}.models[{i}]"),
                format!("unknown model \"{m}\""),
            )
        })?;
        if !models.contains(&idx) {
            models.push(idx);
        }
    }
    for (i, m) in catalog.models().iter().enumerate() {
        let all = rc.models.is_empty() && rc.tiers.is_empty();
        if (all || rc.tiers.contains(&m.tier)) && !models.contains(&i) {
            models.push(i);
        }
    }
    models.sort_unstable();
    if models.is_empty() {
        return Ok(None);
    }
    Ok(Some(Route {
        name: name.into(),
        auto,
        models,
        strategy: rc.strategy,
        classify: rc.classify,
    }))
}

/// Finds the first content rule matching the prompt's texts.
pub(crate) fn match_rule<'a>(
    rules: &'a [Rule],
    texts: &[std::borrow::Cow<'_, str>],
) -> Option<&'a Rule> {
    rules
        .iter()
        .find(|r| texts.iter().any(|t| r.matcher.is_match(t)))
}

#[cfg(test)]
mod tests {
    use super::has_image_part;

    #[test]
    fn image_parts_are_found_by_type_not_by_text() {
        assert!(has_image_part(
            br#"[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]"#
        ));
        assert!(has_image_part(
            br#"[{"role":"user","content":[{"type":"input_image","image_url":"x"}]}]"#
        ));
        // The words inside a text part are escaped quotes, not a part type.
        assert!(!has_image_part(
            br#"[{"role":"user","content":"what is an \"image_url\"?"}]"#
        ));
        assert!(!has_image_part(br#"[{"role":"user","content":"hi"}]"#));
    }
}
