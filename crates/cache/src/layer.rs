//! [`CacheLayer`], its builder and the purge [`CacheHandle`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rampart_core::{Clock, EdgeConfig, TokioClock};
use tower_layer::Layer;

use crate::config::{CacheConfig, CacheRule, ConfigError};
use crate::flight::Flights;
use crate::key::KeyRules;
use crate::service::Cache;
use crate::store::{CacheStore, MemoryStore, StoreError};

/// An exact-match response cache for chat completions (see the crate docs).
///
/// Built once; every [`Layer::layer`] call and every clone of the layer or its services shares
/// the same store and flights (`Arc`).
#[derive(Clone)]
pub struct CacheLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLayer")
            .field("enabled", &self.shared.enabled)
            .field("ttl", &self.shared.ttl)
            .field("namespace", &self.shared.namespace)
            .finish_non_exhaustive()
    }
}

/// The resolved policy for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    pub(crate) enabled: bool,
    pub(crate) ttl: Duration,
    pub(crate) nondeterministic: bool,
}

impl Policy {
    fn apply(mut self, rule: Option<&CacheRule>) -> Self {
        if let Some(r) = rule {
            self.enabled = r.enabled.unwrap_or(self.enabled);
            self.ttl = r.ttl.unwrap_or(self.ttl);
            self.nondeterministic = r.cache_nondeterministic.unwrap_or(self.nondeterministic);
        }
        self
    }
}

/// State shared by the layer, its services, the fill tasks and the handle.
pub(crate) struct Shared {
    pub(crate) enabled: bool,
    pub(crate) ttl: Duration,
    pub(crate) max_ttl: Duration,
    pub(crate) max_entry_bytes: u64,
    pub(crate) nondeterministic: bool,
    pub(crate) namespace: Option<Arc<str>>,
    pub(crate) single_flight: bool,
    pub(crate) flight_timeout: Duration,
    pub(crate) models: HashMap<Box<str>, CacheRule>,
    pub(crate) tenants: HashMap<Box<str>, CacheRule>,
    pub(crate) rules: KeyRules,
    pub(crate) store: Arc<dyn CacheStore>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) flights: Arc<Flights>,
    pub(crate) edge: EdgeConfig,
    /// `rampart_cache_requests_total{status}`.
    pub(crate) requests: rampart_core::metric::LabelledCounter<3>,
}

impl Shared {
    /// Global settings, then the model's rule, then the tenant's.
    pub(crate) fn policy(&self, model: &str, tenant: Option<&str>) -> Policy {
        let base = Policy {
            enabled: self.enabled,
            ttl: self.ttl,
            nondeterministic: self.nondeterministic,
        };
        if self.models.is_empty() && self.tenants.is_empty() {
            return base;
        }
        base.apply(self.models.get(model))
            .apply(tenant.and_then(|t| self.tenants.get(t)))
    }
}

impl Default for CacheLayer {
    fn default() -> Self {
        Self::from_valid(CacheConfig::default(), None, None)
    }
}

impl CacheLayer {
    /// A cache with the default configuration and entries living `ttl` (at least 1 ms).
    pub fn new(ttl: Duration) -> Self {
        let config = CacheConfig {
            ttl: ttl.max(Duration::from_millis(1)),
            ..CacheConfig::default()
        };
        Self::from_valid(config, None, None)
    }

    /// A builder, starting from the default configuration.
    pub fn builder() -> CacheLayerBuilder {
        CacheLayerBuilder::default()
    }

    /// A cache from configuration (validated).
    pub fn from_config(config: CacheConfig) -> Result<Self, ConfigError> {
        Self::builder().config(config).build()
    }

    /// The handle to purge entries and read the store's size (for an admin endpoint).
    pub fn handle(&self) -> CacheHandle {
        CacheHandle {
            shared: self.shared.clone(),
        }
    }

    fn from_valid(
        config: CacheConfig,
        store: Option<Arc<dyn CacheStore>>,
        clock: Option<Arc<dyn Clock>>,
    ) -> Self {
        let longest = config
            .models
            .values()
            .chain(config.tenants.values())
            .filter_map(|r| r.ttl)
            .fold(config.ttl.max(config.max_ttl), Duration::max);
        let store = store.unwrap_or_else(|| Arc::new(MemoryStore::new(config.max_bytes, longest)));
        let shared = Shared {
            requests: crate::service::requests_counter(),
            enabled: config.enabled,
            ttl: config.ttl,
            max_ttl: config.max_ttl,
            max_entry_bytes: config.max_entry_bytes,
            nondeterministic: config.cache_nondeterministic,
            namespace: config.namespace.as_deref().map(Arc::from),
            single_flight: config.single_flight,
            flight_timeout: config.flight_timeout,
            models: config
                .models
                .iter()
                .map(|(k, v)| (Box::from(k.as_str()), *v))
                .collect(),
            tenants: config
                .tenants
                .iter()
                .map(|(k, v)| (Box::from(k.as_str()), *v))
                .collect(),
            rules: KeyRules::new(config.ignored_fields.iter().map(String::as_str)),
            store,
            clock: clock.unwrap_or_else(|| Arc::new(TokioClock)),
            flights: Arc::new(Flights::default()),
            edge: config.edge.into(),
        };
        Self {
            shared: Arc::new(shared),
        }
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;
    fn layer(&self, inner: S) -> Cache<S> {
        Cache::new(inner, self.shared.clone())
    }
}

/// Builds a [`CacheLayer`]; [`CacheLayerBuilder::build`] validates.
#[derive(Default)]
pub struct CacheLayerBuilder {
    config: CacheConfig,
    store: Option<Arc<dyn CacheStore>>,
    clock: Option<Arc<dyn Clock>>,
}

impl std::fmt::Debug for CacheLayerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLayerBuilder")
            .field("config", &self.config)
            .field("custom_store", &self.store.is_some())
            .finish_non_exhaustive()
    }
}

impl CacheLayerBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: CacheConfig) -> Self {
        self.config = config;
        self
    }
    /// Caches requests at all (see [`CacheConfig::enabled`]).
    pub fn enabled(mut self, yes: bool) -> Self {
        self.config.enabled = yes;
        self
    }
    /// Default TTL of entries.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = ttl;
        self
    }
    /// Cap of the per-request `x-rampart-cache-ttl`.
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.config.max_ttl = ttl;
        self
    }
    /// Bound of the in-memory store in bytes.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.config.max_bytes = bytes;
        self
    }
    /// Largest single entry in bytes.
    pub fn max_entry_bytes(mut self, bytes: u64) -> Self {
        self.config.max_entry_bytes = bytes;
        self
    }
    /// Caches nondeterministic requests too.
    pub fn cache_nondeterministic(mut self, yes: bool) -> Self {
        self.config.cache_nondeterministic = yes;
        self
    }
    /// Shares entries between all tenants under `namespace`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = Some(namespace.into());
        self
    }
    /// Top-level members left out of the key (replacing the default list).
    pub fn ignored_fields<I, T>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.config.ignored_fields = fields.into_iter().map(Into::into).collect();
        self
    }
    /// Coalesces concurrent identical misses.
    pub fn single_flight(mut self, yes: bool) -> Self {
        self.config.single_flight = yes;
        self
    }
    /// How long a waiter waits for the call in flight.
    pub fn flight_timeout(mut self, timeout: Duration) -> Self {
        self.config.flight_timeout = timeout;
        self
    }
    /// A rule for requests of `model`.
    pub fn model(mut self, model: impl Into<String>, rule: CacheRule) -> Self {
        self.config.models.insert(model.into(), rule);
        self
    }
    /// A rule for `tenant`.
    pub fn tenant(mut self, tenant: impl Into<String>, rule: CacheRule) -> Self {
        self.config.tenants.insert(tenant.into(), rule);
        self
    }
    /// Another store than the in-memory one (`max_bytes` then does not apply).
    pub fn store(mut self, store: Arc<dyn CacheStore>) -> Self {
        self.store = Some(store);
        self
    }
    /// The clock for entry ages (default: tokio's).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }
    /// Validates and builds.
    pub fn build(self) -> Result<CacheLayer, ConfigError> {
        self.config.validate()?;
        Ok(CacheLayer::from_valid(self.config, self.store, self.clock))
    }
}

/// Purges entries and reports the store's size; cheap to clone.
#[derive(Clone)]
pub struct CacheHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheHandle")
            .field("stats", &self.shared.store.stats())
            .finish()
    }
}

impl CacheHandle {
    /// Removes every entry of `tenant` (its id). With a shared namespace configured, entries
    /// are not per tenant: purge that namespace (or everything) instead.
    pub async fn purge_tenant(&self, tenant: &str) -> Result<(), StoreError> {
        self.shared.store.purge_namespace(tenant).await
    }
    /// Removes every entry of `namespace` (a tenant id or the shared namespace).
    pub async fn purge_namespace(&self, namespace: &str) -> Result<(), StoreError> {
        self.shared.store.purge_namespace(namespace).await
    }
    /// Removes every entry.
    pub async fn purge_all(&self) -> Result<(), StoreError> {
        self.shared.store.purge_all().await
    }
    /// Entries held.
    pub fn len(&self) -> u64 {
        self.shared.store.stats().entries
    }
    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Total weight of the entries in bytes.
    pub fn weighted_size(&self) -> u64 {
        self.shared.store.stats().weighted_size
    }
    /// Identical misses in flight right now.
    pub fn flights(&self) -> usize {
        self.shared.flights.len()
    }
}
