//! [`CacheConfig`]: plain `Deserialize + Default` data, validated by
//! [`CacheLayer::from_config`](crate::CacheLayer::from_config) and the builder.
//!
//! ```toml
//! enabled = true
//! ttl = "10m"
//! max_ttl = "24h"
//! max_bytes = 67108864
//! cache_nondeterministic = false
//! flight_timeout = "30s"
//!
//! [models."gpt-4.1"]          # requests whose `model` (or route name) is gpt-4.1
//! ttl = "1h"
//!
//! [tenants."acme"]            # one tenant (wins over the model's rule)
//! enabled = false
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// Fields left out of the key by default: they identify the caller or ask the provider to keep
/// the request, but do not change the answer. `stream` and `stream_options` (transport) are
/// always left out and need not be listed.
pub const DEFAULT_IGNORED_FIELDS: &[&str] = &[
    "user",
    "safety_identifier",
    "metadata",
    "store",
    "prompt_cache_key",
];

/// The whole layer configuration. Every field is optional in TOML; durations are written
/// `"30s"`, `"10m"`, `"1h"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Whether requests are cached at all (per-model and per-tenant rules can switch it either
    /// way). Default `true`: adding the layer is the opt-in.
    pub enabled: bool,
    /// How long an entry lives. Default `10m`.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Largest TTL a client may ask for with `x-rampart-cache-ttl` (larger values are capped).
    /// Default `24h`.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Bound of the in-memory store in bytes (answers, canonical requests and overhead).
    /// Default 64 MiB.
    pub max_bytes: u64,
    /// Largest single entry stored, in bytes. Default 4 MiB.
    pub max_entry_bytes: u64,
    /// Cache requests whose sampling is not deterministic (`temperature` absent — OpenAI's
    /// default is 1 — or above 0). Default `false`: only `temperature: 0` is cached.
    pub cache_nondeterministic: bool,
    /// Share entries between all tenants under this namespace instead of isolating them per
    /// tenant. Default: none (per tenant).
    pub namespace: Option<String>,
    /// Top-level request members left out of the key. Default [`DEFAULT_IGNORED_FIELDS`].
    pub ignored_fields: Vec<String>,
    /// Concurrent identical misses make one upstream call. Default `true`.
    pub single_flight: bool,
    /// How long a request waits for an identical call in flight before going upstream itself.
    /// Default `30s`.
    #[serde(with = "humantime_serde")]
    pub flight_timeout: Duration,
    /// Rules by requested model (or route name), over the settings above.
    pub models: BTreeMap<String, CacheRule>,
    /// Rules by tenant id, over the model's rule and the settings above.
    pub tenants: BTreeMap<String, CacheRule>,
    /// Body limits when the layer must parse the request itself (used without the edge
    /// adapter).
    pub edge: EdgeLimits,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: Duration::from_secs(600),
            max_ttl: Duration::from_secs(24 * 3600),
            max_bytes: 64 * 1024 * 1024,
            max_entry_bytes: 4 * 1024 * 1024,
            cache_nondeterministic: false,
            namespace: None,
            ignored_fields: DEFAULT_IGNORED_FIELDS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            single_flight: true,
            flight_timeout: Duration::from_secs(30),
            models: BTreeMap::new(),
            tenants: BTreeMap::new(),
            edge: EdgeLimits::default(),
        }
    }
}

/// A rule for one model or tenant. Unset fields inherit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheRule {
    /// Cache these requests (or not).
    pub enabled: Option<bool>,
    /// Their TTL.
    #[serde(with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// Cache their nondeterministic requests too (or not).
    pub cache_nondeterministic: Option<bool>,
}

impl CacheRule {
    /// A rule that switches caching on.
    pub fn enabled() -> Self {
        Self {
            enabled: Some(true),
            ..Self::default()
        }
    }
    /// A rule that switches caching off.
    pub fn disabled() -> Self {
        Self {
            enabled: Some(false),
            ..Self::default()
        }
    }
    /// Sets the TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
    /// Sets whether nondeterministic requests are cached.
    pub fn cache_nondeterministic(mut self, yes: bool) -> Self {
        self.cache_nondeterministic = Some(yes);
        self
    }
}

/// Limits used to read the request body when no edge adapter parsed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeLimits {
    /// Largest body in bytes. Default 4 MiB.
    pub max_body_bytes: usize,
    /// Time allowed to receive it. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        let d = rampart_core::EdgeConfig::default();
        Self {
            max_body_bytes: d.max_body_bytes,
            body_timeout: d.body_timeout,
        }
    }
}

impl From<EdgeLimits> for rampart_core::EdgeConfig {
    fn from(l: EdgeLimits) -> Self {
        rampart_core::EdgeConfig {
            max_body_bytes: l.max_body_bytes,
            body_timeout: l.body_timeout,
        }
    }
}

/// A configuration the builder refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A duration that must be positive is zero.
    #[error("`{0}` must be longer than zero")]
    ZeroDuration(String),
    /// A byte bound of zero.
    #[error("`{0}` must be at least 1 byte")]
    ZeroBytes(&'static str),
    /// The shared namespace is empty.
    #[error("`namespace` must not be empty when set")]
    EmptyNamespace,
    /// A transport field in `ignored_fields` is fine, but an empty name is not.
    #[error("`ignored_fields` contains an empty name")]
    EmptyIgnoredField,
}

impl CacheConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let zero = |name: &str, d: Duration| {
            if d.is_zero() {
                Err(ConfigError::ZeroDuration(name.to_owned()))
            } else {
                Ok(())
            }
        };
        zero("ttl", self.ttl)?;
        zero("max_ttl", self.max_ttl)?;
        zero("flight_timeout", self.flight_timeout)?;
        for (name, rule) in self
            .models
            .iter()
            .map(|(k, r)| (format!("models.{k}"), r))
            .chain(
                self.tenants
                    .iter()
                    .map(|(k, r)| (format!("tenants.{k}"), r)),
            )
        {
            if let Some(t) = rule.ttl {
                zero(&format!("{name}.ttl"), t)?;
            }
        }
        if self.max_bytes == 0 {
            return Err(ConfigError::ZeroBytes("max_bytes"));
        }
        if self.max_entry_bytes == 0 {
            return Err(ConfigError::ZeroBytes("max_entry_bytes"));
        }
        if self.namespace.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::EmptyNamespace);
        }
        if self.ignored_fields.iter().any(String::is_empty) {
            return Err(ConfigError::EmptyIgnoredField);
        }
        Ok(())
    }
}
