//! The gateway's configuration file: one TOML document, no secrets in it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rampart_cache::CacheConfig;
use rampart_circuit_breaker::CircuitBreakerConfig;
use rampart_core::Price;
use rampart_cost_router::CostRouterConfig;
use rampart_fallback::FallbackConfig;
use rampart_mock::MockConfig;
use rampart_ratelimit::{KeySource, Limits, RateLimitConfig};
use rampart_upstream::Timeouts;
use serde::Deserialize;

/// The context window assumed for a model that declares none (large enough never to drop it).
pub const UNKNOWN_CONTEXT_WINDOW: u64 = 100_000_000;

/// The configuration the binary runs with when given no `--config`.
pub const EMBEDDED_DEFAULTS: &str = include_str!("../default.toml");

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Listener and request limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// Providers.
    #[serde(default)]
    pub providers: Vec<ProviderEntry>,
    /// Models clients can ask for.
    #[serde(default)]
    pub models: Vec<ModelEntry>,
    /// Virtual keys; none = open development mode (one tenant, no auth).
    #[serde(default)]
    pub virtual_keys: Vec<VirtualKeyEntry>,
    /// The per-target circuit breakers (one per provider/model, these settings for all).
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
    /// Rate limits per tenant and per target.
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
    /// Retries and fallbacks (deadline, attempts, backoff, retry budget, stream commit); each
    /// model's chain is its `[[models]] fallbacks`.
    #[serde(default)]
    pub fallback: FallbackConfig,
    /// The response cache; absent = no cache layer.
    #[serde(default)]
    pub cache: Option<CacheConfig>,
    /// Routing (`auto` and named routes, strategies, content rules) and budgets. The catalog is
    /// the `[[models]]` list (prices, tiers, context windows, fallbacks).
    #[serde(default)]
    pub router: CostRouterConfig,
    /// Parallel calls: hedged requests (`[parallel.hedge]`) and fan-out (`[parallel.fan_out]`);
    /// each off unless present.
    #[serde(default)]
    pub parallel: rampart_parallel::ParallelConfig,
    /// Logs and traces: text or JSON lines, the log filter, OTLP export (`otel` feature).
    #[serde(default)]
    pub observability: crate::observe::ObservabilityConfig,
    /// Shared state in Redis (rate limits, budgets, cache across replicas); absent = every
    /// store in process memory.
    #[serde(default)]
    pub state: Option<StateConfig>,
}

/// `[state]`: Redis-backed stores shared by every replica, and what each does while Redis is
/// unavailable.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// `redis://host:port/db`.
    pub redis_url: String,
    /// Deadline of one Redis call. Default 50 ms.
    #[serde(default = "defaults::redis_timeout", with = "humantime_serde")]
    pub timeout: std::time::Duration,
    /// Consecutive failed Redis calls that open the Redis breaker. Default 3.
    #[serde(default = "defaults::breaker_failures")]
    pub breaker_failures: u32,
    /// How long the Redis breaker stays open before a probe. Default 1 s.
    #[serde(default = "defaults::breaker_cooldown", with = "humantime_serde")]
    pub breaker_cooldown: std::time::Duration,
    /// Key prefix (replicas sharing state must use the same). Default `rampart`.
    #[serde(default = "defaults::key_prefix")]
    pub key_prefix: String,
    /// `[state.rate_limits]`: the rate-limit store (outage policy default `local_fallback`).
    #[serde(default)]
    pub rate_limits: rampart_redis::RedisRateLimitConfig,
    /// `[state.budgets]`: the budget store (outage policy default `local_fallback`).
    #[serde(default)]
    pub budgets: rampart_redis::RedisBudgetConfig,
    /// `[state.cache]`: the cache store (outage policy default `fail_open`).
    #[serde(default)]
    pub cache: rampart_redis::RedisCacheConfig,
}

impl StateConfig {
    /// The connection settings.
    pub fn redis(&self) -> rampart_redis::RedisConfig {
        rampart_redis::RedisConfig {
            redis_url: self.redis_url.clone(),
            timeout: self.timeout,
            breaker_failures: self.breaker_failures,
            breaker_cooldown: self.breaker_cooldown,
            key_prefix: self.key_prefix.clone(),
        }
    }
}

mod defaults {
    use std::time::Duration;

    fn base() -> rampart_redis::RedisConfig {
        rampart_redis::RedisConfig::default()
    }
    pub(super) fn redis_timeout() -> Duration {
        base().timeout
    }
    pub(super) fn breaker_failures() -> u32 {
        base().breaker_failures
    }
    pub(super) fn breaker_cooldown() -> Duration {
        base().breaker_cooldown
    }
    pub(super) fn key_prefix() -> String {
        base().key_prefix
    }
}

/// `[rate_limits]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// `[rate_limits.tenant]`: limits per tenant, checked first (absent: no tenant limit).
    pub tenant: Option<RateLimitConfig>,
    /// `[rate_limits.target]`: settings of the per-target limiter (queue mode, output
    /// estimates, defaults for every model); each model's own limits are `[[models]] limits`.
    pub target: Option<RateLimitConfig>,
}

impl GatewayConfig {
    /// The per-tenant limiter's configuration, if any (scope `tenant`, keyed by tenant unless
    /// configured otherwise).
    pub fn tenant_limits(&self) -> Option<RateLimitConfig> {
        self.rate_limits.tenant.clone()
    }

    /// The router's configuration: `[router]` with the catalog built from `[[models]]`.
    pub fn router_config(&self) -> CostRouterConfig {
        use rampart_cost_router::{ModelConfig, Tier};
        let mut c = self.router.clone();
        c.default_catalog = false;
        c.providers.clear();
        c.models = self
            .models
            .iter()
            .map(|m| {
                let tier = m.tier.as_deref().and_then(|t| match t {
                    "simple" => Some(Tier::Simple),
                    "medium" => Some(Tier::Medium),
                    "complex" => Some(Tier::Complex),
                    _ => None,
                });
                let config = ModelConfig {
                    provider: Some(m.provider.clone()),
                    // A model without a price (a local server, say) costs nothing; the gateway
                    // warns about it at start.
                    price: Some(m.price.unwrap_or_default()),
                    // Unknown window: never dropped for size (the provider decides).
                    context_window: Some(m.context_window.unwrap_or(UNKNOWN_CONTEXT_WINDOW)),
                    tier: Some(tier.unwrap_or(Tier::Medium)),
                    capabilities: m.capabilities.clone(),
                    enabled: None,
                };
                (m.name.clone(), config)
            })
            .collect();
        c.fallbacks = self
            .models
            .iter()
            .filter(|m| !m.fallbacks.is_empty())
            .map(|m| (m.name.clone(), m.fallbacks.clone()))
            .collect();
        c
    }

    /// The fallback configuration: `[fallback]` with each model's `fallbacks` as its chain.
    pub fn fallback_config(&self) -> FallbackConfig {
        let mut c = self.fallback.clone();
        for m in &self.models {
            if !m.fallbacks.is_empty() {
                c.chains.insert(m.name.clone(), m.fallbacks.clone());
            }
        }
        c
    }

    /// The per-target limiter's configuration: `[rate_limits.target]` with scope `target`, keyed
    /// by target, and every `[[models]] limits` entry. `None` when no limit is set anywhere.
    pub fn target_limits(&self) -> Option<RateLimitConfig> {
        let mut c = self.rate_limits.target.clone().unwrap_or_default();
        c.scope = "target".to_owned();
        c.key = KeySource::Target;
        for m in &self.models {
            if let Some(l) = m.limits {
                c.models.insert(m.name.clone(), l);
            }
        }
        let any = c.limits != Limits::default() || !c.models.is_empty() || !c.overrides.is_empty();
        any.then_some(c)
    }
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address (`--listen` wins).
    pub listen: SocketAddr,
    /// Largest request body in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Time for a client to send complete request headers (the connection is closed after it).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time for a client to send the body once headers are in (408 after it).
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// How long in-flight requests (streams included) may run after SIGTERM / Ctrl-C.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 4 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// How a provider is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKindEntry {
    /// Any OpenAI-compatible HTTP API.
    Openai,
    /// Anthropic's native Messages API (requests and answers translated).
    Anthropic,
    /// The simulated provider, in-process.
    Mock,
}

/// `[[providers]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderEntry {
    /// Name (shown in `x-rampart-provider`).
    pub name: String,
    /// `openai`, `anthropic` or `mock`.
    pub kind: ProviderKindEntry,
    /// Base URL (kinds `openai` and `anthropic`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Environment variable holding the API key (kinds `openai` and `anthropic`).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Allow link-local / metadata addresses in `base_url`.
    #[serde(default)]
    pub allow_link_local: bool,
    /// Simulated provider settings (kind `mock`).
    #[serde(default)]
    pub mock: Option<MockConfig>,
    /// Messages API settings (`version`, `default_max_tokens`): kind `anthropic`, or a mock with
    /// `api = "anthropic"`.
    #[serde(default)]
    pub anthropic: Option<rampart_upstream::AnthropicConfig>,
}

/// `[[models]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The name clients use.
    pub name: String,
    /// The provider serving it.
    pub provider: String,
    /// The provider's name for it (default: `name`).
    #[serde(default)]
    pub upstream_name: Option<String>,
    /// Prices, USD per million tokens.
    #[serde(default)]
    pub price: Option<Price>,
    /// Context window in tokens.
    #[serde(default)]
    pub context_window: Option<u64>,
    /// `simple`, `medium` or `complex`.
    #[serde(default)]
    pub tier: Option<String>,
    /// This target's rate limits (mirror the provider's, to shed load before it answers 429).
    #[serde(default)]
    pub limits: Option<Limits>,
    /// Models to try next, in order, when this one fails (a retryable failure only).
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// What the model can do (`tools`, `vision`, `json_mode`): routed requests that need a
    /// capability prefer models that have it.
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
}

/// `[[virtual_keys]]`: a key's SHA-256 (hex) and its tenant. Make one with
/// `full_gateway --hash-key <key>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualKeyEntry {
    /// The tenant id (used in limits, budgets, metrics).
    pub tenant: String,
    /// SHA-256 of the key, 64 hex characters.
    pub key_sha256: String,
}

/// A configuration problem, naming where it is.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct ConfigError {
    /// The file, or "embedded defaults".
    pub origin: String,
    /// The key and what is wrong.
    pub message: String,
}

impl GatewayConfig {
    /// The embedded defaults.
    pub fn embedded() -> Result<Self, ConfigError> {
        Self::parse(EMBEDDED_DEFAULTS, "embedded defaults")
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let origin = format!("config file {}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            message: format!("cannot read it: {e}"),
        })?;
        Self::parse(&text, &origin)
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: GatewayConfig = toml::from_str(text).map_err(|e| ConfigError {
            origin: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        cfg.validate().map_err(|message| ConfigError {
            origin: origin.to_owned(),
            message,
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        rampart_circuit_breaker::CircuitBreakerLayer::from_config(self.circuit_breaker.clone())
            .map_err(|e| format!("circuit_breaker: {e}"))?;
        if let Some(c) = self.tenant_limits() {
            rampart_ratelimit::RateLimitLayer::from_config(c)
                .map_err(|e| format!("rate_limits.tenant: {e}"))?;
        }
        if let Some(t) = &self.rate_limits.target {
            if !t.models.is_empty() {
                return Err(
                    "rate_limits.target.models: set each model's limits in its [[models]] entry (`limits = {..}`)"
                        .into(),
                );
            }
            let scope_ok = t.scope == RateLimitConfig::default().scope || t.scope == "target";
            let key_ok = t.key == KeySource::default() || t.key == KeySource::Target;
            if !(scope_ok && key_ok) {
                return Err(
                    "rate_limits.target: `scope` and `key` are fixed (\"target\") for the per-target limiter"
                        .into(),
                );
            }
        }
        let defaults = CostRouterConfig::default();
        if !self.router.models.is_empty()
            || !self.router.fallbacks.is_empty()
            || !self.router.providers.is_empty()
            || self.router.default_catalog != defaults.default_catalog
        {
            return Err(
                "router: the catalog is the [[models]] list; set models, providers and fallbacks there".into(),
            );
        }
        rampart_cost_router::CostRouterLayer::from_config(self.router_config())
            .map_err(|e| format!("router: {e}"))?;
        if let Some(c) = &self.cache {
            rampart_cache::CacheLayer::from_config(c.clone()).map_err(|e| format!("cache: {e}"))?;
        }
        if !self.fallback.chains.is_empty() {
            return Err("fallback.chains: set each model's chain in its [[models]] entry (`fallbacks = [..]`)".into());
        }
        rampart_fallback::FallbackLayer::from_config(self.fallback_config())
            .map_err(|e| format!("fallback: {e}"))?;
        // Fan-out routes and hedge policies name catalog models; a fan-out route takes no name
        // a model or a router route has.
        let taken = rampart_cost_router::CostRouterLayer::from_config(self.router_config())
            .map(|r| r.handle().names())
            .unwrap_or_default();
        let models: Vec<String> = self.models.iter().map(|m| m.name.clone()).collect();
        self.parallel
            .validate_names(&models, &taken)
            .map_err(|e| format!("parallel.{e}"))?;
        if let Some(c) = self.target_limits() {
            rampart_ratelimit::RateLimitLayer::from_config(c)
                .map_err(|e| format!("rate_limits.target / [[models]] limits: {e}"))?;
        }
        self.observability.validate()?;
        if self.server.max_body_bytes == 0 {
            return Err("server.max_body_bytes: must be greater than 0".into());
        }
        for (i, p) in self.providers.iter().enumerate() {
            let at = format!("providers[{i}] (name = \"{}\")", p.name);
            if p.name.trim().is_empty() {
                return Err(format!("providers[{i}].name: must not be empty"));
            }
            if self.providers[..i].iter().any(|q| q.name == p.name) {
                return Err(format!("{at}.name: defined twice"));
            }
            match p.kind {
                ProviderKindEntry::Openai | ProviderKindEntry::Anthropic => {
                    if p.base_url.is_none() {
                        return Err(format!(
                            "{at}.base_url: required for kind = \"openai\" and \"anthropic\""
                        ));
                    }
                    if p.mock.is_some() {
                        return Err(format!("{at}.mock: only allowed with kind = \"mock\""));
                    }
                }
                ProviderKindEntry::Mock => {
                    if p.base_url.is_some() || p.api_key_env.is_some() {
                        return Err(format!(
                            "{at}: base_url and api_key_env do not apply to kind = \"mock\""
                        ));
                    }
                }
            }
            let speaks_anthropic = p.kind == ProviderKindEntry::Anthropic
                || p.mock
                    .as_ref()
                    .is_some_and(|m| m.api == rampart_mock::MockApi::Anthropic);
            if let Some(a) = &p.anthropic {
                if !speaks_anthropic {
                    return Err(format!(
                        "{at}.anthropic: only allowed with kind = \"anthropic\" or a mock with api = \"anthropic\""
                    ));
                }
                if a.default_max_tokens == 0 {
                    return Err(format!(
                        "{at}.anthropic.default_max_tokens: must be greater than 0"
                    ));
                }
            }
            let t = &p.timeouts;
            for (field, d) in [
                ("connect", t.connect),
                ("first_byte", t.first_byte),
                ("idle", t.idle),
                ("total", t.total),
            ] {
                if d.is_zero() {
                    return Err(format!("{at}.timeouts.{field}: must be greater than 0"));
                }
            }
        }
        if self.models.is_empty() {
            return Err("models: at least one [[models]] entry is required".into());
        }
        for (i, m) in self.models.iter().enumerate() {
            let at = format!("models[{i}] (name = \"{}\")", m.name);
            if m.name.trim().is_empty() {
                return Err(format!("models[{i}].name: must not be empty"));
            }
            if self.models[..i].iter().any(|q| q.name == m.name) {
                return Err(format!("{at}.name: defined twice"));
            }
            if !self.providers.iter().any(|p| p.name == m.provider) {
                return Err(format!(
                    "{at}.provider: unknown provider \"{}\" (known: {})",
                    m.provider,
                    self.providers
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if let Some(p) = &m.price {
                let cached = p.cached_input.unwrap_or(0.0);
                let valid = |x: f64| x.is_finite() && x >= 0.0;
                if !(valid(p.input) && valid(p.output) && valid(cached)) {
                    return Err(format!(
                        "{at}.price: prices must be finite and not negative"
                    ));
                }
            }
            if let Some(t) = &m.tier
                && !matches!(t.as_str(), "simple" | "medium" | "complex")
            {
                return Err(format!(
                    "{at}.tier: \"{t}\" is not one of simple, medium, complex"
                ));
            }
        }
        for (i, k) in self.virtual_keys.iter().enumerate() {
            if k.tenant.trim().is_empty() {
                return Err(format!("virtual_keys[{i}].tenant: must not be empty"));
            }
            let ok =
                k.key_sha256.len() == 64 && k.key_sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !ok {
                return Err(format!(
                    "virtual_keys[{i}].key_sha256: expected 64 hex characters (SHA-256 of the key; `full_gateway --hash-key KEY` prints it)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_are_valid() {
        let c = GatewayConfig::embedded().unwrap();
        let names: Vec<&str> = c.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "deepseek-v3.2",
                "gemini-2.5-flash",
                "gpt-4.1",
                "claude-sonnet-4.5"
            ]
        );
        assert!(c.virtual_keys.is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        let e = GatewayConfig::parse("[server]\nlisten = 5\n", "f.toml").unwrap_err();
        assert!(e.to_string().starts_with("f.toml: "), "{e}");
        assert!(e.to_string().contains("listen"), "{e}");
        let e = GatewayConfig::parse(
            "[[providers]]\nname='p'\nkind='mock'\n[[models]]\nname='m'\nprovider='q'\n",
            "f.toml",
        )
        .unwrap_err();
        assert!(e.message.contains("models[0]"), "{e}");
        assert!(e.message.contains("unknown provider \"q\""), "{e}");
        let e = GatewayConfig::parse("[server]\nlisten_addr = '1'\n", "f.toml").unwrap_err();
        assert!(e.message.contains("listen_addr"), "{e}");
    }

    #[test]
    fn the_readme_config_reference_parses() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("```toml\n[server]")
            .expect("the reference block");
        let block = &readme[start + "```toml\n".len()..];
        let block = &block[..block.find("```").unwrap()];
        let block = block.replace(
            "key_sha256 = \"…\"",
            &format!("key_sha256 = \"{}\"", "ab".repeat(32)),
        );
        let c = GatewayConfig::parse(&block, "README").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.models[0].name, "gpt-4.1");
        assert!(c.tenant_limits().is_some());
        assert!(c.parallel.hedge.is_some() && c.parallel.fan_out.is_some());
        assert_eq!(
            c.target_limits().unwrap().models["gpt-4.1"].requests_per_minute,
            Some(500)
        );
    }
}
