//! [`CostRouterLayer`], its builder, and the [`CostRouterHandle`] (reload, spend).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderMap;
use rampart_core::{Candidate, ChatRequest, EdgeConfig, Error, MicroUsd, RouteDecision, Target};
use tower_layer::Layer;

use crate::budget::{
    BudgetStore, MemoryBudgetStore, Periods, ScopeSpend, StoreError, SystemClock, WallClock,
};
use crate::catalog::Catalog;
use crate::classify::{Classifier, HeuristicClassifier, Prompt};
use crate::config::CostRouterConfig;
use crate::error::ConfigError;
use crate::router::{Compiled, GLOBAL_SCOPE, Needs, Plan, tenant_scope};
use crate::service::CostRouter;
use crate::strategy::{Hints, LatencyTracker, Sequence};

/// Running spend totals (since start), in micro-dollars.
#[derive(Debug, Default)]
pub(crate) struct SpendTotals {
    tenants: RwLock<HashMap<Arc<str>, AtomicU64>>,
    models: RwLock<HashMap<Arc<str>, AtomicU64>>,
}

const MAX_SPEND_KEYS: usize = 100_000;

fn add(map: &RwLock<HashMap<Arc<str>, AtomicU64>>, key: &Arc<str>, micros: MicroUsd) {
    {
        let m = map.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = m.get(key) {
            c.fetch_add(micros, Ordering::Relaxed);
            return;
        }
    }
    let mut m = map.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(c) = m.get(key) {
        c.fetch_add(micros, Ordering::Relaxed);
    } else if m.len() < MAX_SPEND_KEYS {
        m.insert(key.clone(), AtomicU64::new(micros));
    }
}

fn snapshot(map: &RwLock<HashMap<Arc<str>, AtomicU64>>) -> BTreeMap<String, MicroUsd> {
    map.read()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed)))
        .collect()
}

impl SpendTotals {
    pub(crate) fn record(&self, tenant: &Arc<str>, model: &Arc<str>, micros: MicroUsd) {
        add(&self.tenants, tenant, micros);
        add(&self.models, model, micros);
    }
}

/// State shared by the layer, every service and the handle.
pub(crate) struct Shared {
    pub(crate) config: ArcSwap<Compiled>,
    pub(crate) base_catalog: Option<Catalog>,
    pub(crate) classifier: Arc<dyn Classifier>,
    pub(crate) store: Arc<dyn BudgetStore>,
    pub(crate) clock: Arc<dyn WallClock>,
    pub(crate) latency: LatencyTracker,
    pub(crate) seq: Sequence,
    pub(crate) spend: SpendTotals,
    pub(crate) edge: EdgeConfig,
}

/// Cost-aware routing with budgets and exact spend (see the crate docs).
///
/// Built once; every [`Layer::layer`] call and every clone shares the same state, including
/// the hot-reloadable configuration behind [`CostRouterLayer::handle`].
#[derive(Clone)]
pub struct CostRouterLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CostRouterLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CostRouterLayer")
            .field("names", &self.shared.config.load().names())
            .finish()
    }
}

impl CostRouterLayer {
    /// A router over `catalog` with the default configuration (routes `auto`, `cheap`, `fast`,
    /// `smart`; no budgets; heuristic classifier). An empty catalog gives a router that answers
    /// every request with 404 (the builder reports it as an error instead).
    pub fn new(catalog: Catalog) -> Self {
        match Self::builder().catalog(catalog.clone()).build() {
            Ok(l) => l,
            Err(_) => {
                // Only an empty catalog can fail with the default configuration.
                let mut fallback = Self::builder().catalog(Catalog::default()).build_parts();
                fallback.base_catalog = Some(catalog);
                let empty = Compiled::empty(fallback.config.load().source.clone());
                fallback.config.store(Arc::new(empty));
                Self {
                    shared: Arc::new(fallback),
                }
            }
        }
    }

    /// A builder, starting from [`CostRouterConfig::default`] and the built-in catalog.
    pub fn builder() -> CostRouterLayerBuilder {
        CostRouterLayerBuilder::default()
    }

    /// A layer from configuration (validated), with the heuristic classifier and in-memory
    /// budgets.
    pub fn from_config(config: CostRouterConfig) -> Result<Self, ConfigError> {
        Self::builder().config(config).build()
    }

    /// The handle: reload, spend, decisions.
    pub fn handle(&self) -> CostRouterHandle {
        CostRouterHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S> Layer<S> for CostRouterLayer {
    type Service = CostRouter<S>;
    fn layer(&self, inner: S) -> CostRouter<S> {
        CostRouter::new(inner, self.shared.clone())
    }
}

/// Builds a [`CostRouterLayer`].
pub struct CostRouterLayerBuilder {
    config: CostRouterConfig,
    catalog: Option<Catalog>,
    classifier: Arc<dyn Classifier>,
    store: Arc<dyn BudgetStore>,
    clock: Arc<dyn WallClock>,
    edge: EdgeConfig,
}

impl std::fmt::Debug for CostRouterLayerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CostRouterLayerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for CostRouterLayerBuilder {
    fn default() -> Self {
        Self {
            config: CostRouterConfig::default(),
            catalog: None,
            classifier: Arc::new(HeuristicClassifier),
            store: Arc::new(MemoryBudgetStore::new()),
            clock: Arc::new(SystemClock),
            edge: EdgeConfig::default(),
        }
    }
}

impl CostRouterLayerBuilder {
    /// The configuration (routes, rules, budgets, catalog overrides).
    pub fn config(mut self, config: CostRouterConfig) -> Self {
        self.config = config;
        self
    }

    /// The base catalog instead of the built-in one (config `models` still apply over it, on
    /// build and on every reload).
    pub fn catalog(mut self, catalog: Catalog) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// The classifier (default [`HeuristicClassifier`]).
    pub fn classifier(mut self, classifier: impl Classifier) -> Self {
        self.classifier = Arc::new(classifier);
        self
    }

    /// The budget store (default [`MemoryBudgetStore`]).
    pub fn budget_store(mut self, store: Arc<dyn BudgetStore>) -> Self {
        self.store = store;
        self
    }

    /// The wall clock for budget days and months (default [`SystemClock`]).
    pub fn wall_clock(mut self, clock: impl WallClock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Body limits when the layer must parse the request itself (without the edge adapter).
    pub fn edge_config(mut self, edge: EdgeConfig) -> Self {
        self.edge = edge;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<CostRouterLayer, ConfigError> {
        let compiled = Compiled::compile_with(self.config.clone(), self.catalog.as_ref())?;
        let mut shared = self.build_parts();
        shared.config = ArcSwap::from_pointee(compiled);
        Ok(CostRouterLayer {
            shared: Arc::new(shared),
        })
    }

    fn build_parts(self) -> Shared {
        let seed = self.config.seed;
        let alpha = self.config.ewma_alpha;
        let compiled = Compiled::empty(self.config);
        metrics::describe_counter!(
            "rampart_cost_microdollars_total",
            "Spend in micro-dollars (1e-6 USD) by tenant and served model."
        );
        metrics::describe_counter!(
            "rampart_budget_rejections_total",
            "Requests a budget refused or downgraded, by action."
        );
        Shared {
            config: ArcSwap::from_pointee(compiled),
            base_catalog: self.catalog,
            classifier: self.classifier,
            store: self.store,
            clock: self.clock,
            latency: LatencyTracker::new(alpha),
            seq: Sequence::new(seed),
            spend: SpendTotals::default(),
            edge: self.edge,
        }
    }
}

/// A cloneable handle on a running router: hot reload, spend totals, budget state and
/// decisions. The gateway calls [`CostRouterHandle::reload`] on `SIGHUP`.
#[derive(Clone)]
pub struct CostRouterHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CostRouterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CostRouterHandle").finish_non_exhaustive()
    }
}

impl CostRouterHandle {
    /// Validates `config` and swaps it in for every later request (requests in flight finish
    /// with the config they started with). On error nothing changes and the error names the
    /// key. Latency observations, spend totals and budget state are kept.
    pub fn reload(&self, config: CostRouterConfig) -> Result<(), ConfigError> {
        let seed = config.seed;
        let alpha = config.ewma_alpha;
        let compiled = Compiled::compile_with(config, self.shared.base_catalog.as_ref())?;
        let old_seed = self.shared.config.load().source.seed;
        self.shared.config.store(Arc::new(compiled));
        self.shared.latency.set_alpha(alpha);
        if let Some(s) = seed
            && old_seed != seed
        {
            self.shared.seq.reseed(s);
        }
        tracing::info!("cost router configuration reloaded");
        Ok(())
    }

    /// The running configuration.
    pub fn config(&self) -> CostRouterConfig {
        self.shared.config.load().source.clone()
    }

    /// The running catalog.
    pub fn catalog(&self) -> Catalog {
        self.shared.config.load().catalog.clone()
    }

    /// Models then routes clients can ask for.
    pub fn names(&self) -> Vec<String> {
        self.shared.config.load().names().to_vec()
    }

    /// The route names (`auto` first).
    pub fn routes(&self) -> Vec<String> {
        self.shared
            .config
            .load()
            .route_names()
            .map(str::to_owned)
            .collect()
    }

    /// Total spend of `tenant` since start, in micro-dollars.
    pub fn spend(&self, tenant: &str) -> MicroUsd {
        self.shared
            .spend
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Total spend by tenant since start, in micro-dollars.
    pub fn spend_by_tenant(&self) -> BTreeMap<String, MicroUsd> {
        snapshot(&self.shared.spend.tenants)
    }

    /// Total spend by served model since start, in micro-dollars.
    pub fn spend_by_model(&self) -> BTreeMap<String, MicroUsd> {
        snapshot(&self.shared.spend.models)
    }

    /// Today's and this month's budget state of `tenant` (spent and reserved in flight).
    pub async fn budget(&self, tenant: &str) -> Result<ScopeSpend, StoreError> {
        let at = Periods::at(self.shared.clock.now());
        self.shared.store.spend(&tenant_scope(tenant), at).await
    }

    /// Today's and this month's global budget state.
    pub async fn global_budget(&self) -> Result<ScopeSpend, StoreError> {
        let at = Periods::at(self.shared.clock.now());
        self.shared.store.spend(GLOBAL_SCOPE, at).await
    }

    /// The EWMA of the time to first byte observed for `target`.
    pub fn latency(&self, target: &Target) -> Option<Duration> {
        self.shared
            .latency
            .ewma_ms(target)
            .map(|ms| Duration::from_secs_f64(ms / 1000.0))
    }

    /// Records an observed time to first byte (what the layer does for every response).
    pub fn observe_latency(&self, target: &Target, ttfb: Duration) {
        self.shared.latency.observe(target, ttfb);
    }

    /// The routing decision for a request, without budgets: what the layer would put in the
    /// request extensions. Completes at once with a synchronous classifier.
    pub async fn decide(
        &self,
        chat: &Arc<ChatRequest>,
        headers: &HeaderMap,
    ) -> Result<RouteDecision, Error> {
        let cfg = self.shared.config.load_full();
        let hints = Hints::from_headers(headers)?;
        let prompt = Prompt::new(chat);
        let needs = Needs::of(chat, prompt.estimated_tokens(), cfg.default_output_tokens);
        let plan = crate::service::decide(&self.shared, &cfg, &prompt, &needs, &hints).await?;
        decision(&cfg, &plan)
    }
}

/// The request extension for a plan.
pub(crate) fn decision(cfg: &Compiled, plan: &Plan) -> Result<RouteDecision, Error> {
    let candidates: Vec<Candidate> = plan
        .models
        .iter()
        .filter_map(|&i| cfg.catalog.at(i))
        .map(|m| Candidate::new(m.target.clone()).with_context_window(m.context_window))
        .collect();
    RouteDecision::new(candidates, plan.route.as_str())
        .ok_or_else(|| Error::internal("the router produced no candidate"))
}
