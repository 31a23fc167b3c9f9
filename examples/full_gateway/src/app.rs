//! Builds the gateway's router from its configuration.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post_service};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use rampart_cache::{CacheHandle, CacheLayer};
use rampart_circuit_breaker::{BreakerHandle, CircuitBreakerLayer};
use rampart_core::openai::{ErrorBody, ErrorObject, ModelList, ModelObject};
use rampart_core::tenant::AuthLayer;
use rampart_core::{Body, BoxChatService, Candidate, Edge, EdgeConfig, Tenant, VirtualKeys};
use rampart_cost_router::{CostRouterHandle, CostRouterLayer};
use rampart_fallback::FallbackLayer;
use rampart_mock::MockProvider;
use rampart_parallel::{FanOutLayer, HedgeLayer};
use rampart_ratelimit::RateLimitLayer;
use rampart_redis::{RedisBudgetStore, RedisCacheStore, RedisRateLimitStore, RedisState};
use rampart_upstream::{ProviderConfig, ProviderKind, Upstream};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::config::{GatewayConfig, ProviderKindEntry};

/// A built gateway: its router plus handles tests and operators use.
pub struct Gateway {
    /// The HTTP routes, with every layer applied.
    pub router: Router,
    /// The upstream service (providers and models).
    pub upstream: Upstream,
    /// The simulated providers by name (kind `mock`), for fault injection and call counts.
    pub mocks: BTreeMap<String, MockProvider>,
    /// The per-target circuit breakers (state, force open, reset).
    pub breakers: BreakerHandle,
    /// The response cache, when configured (purge, size).
    pub cache: Option<CacheHandle>,
    /// The cost router (hot reload of catalog, routes and budgets; spend totals).
    pub routing: CostRouterHandle,
    /// The configuration it was built from.
    pub config: GatewayConfig,
}

impl Gateway {
    /// Whether no virtual keys are configured (open development mode).
    pub fn dev_mode(&self) -> bool {
        self.config.virtual_keys.is_empty()
    }
}

#[derive(Clone)]
struct AppState {
    keys: VirtualKeys,
    models: Arc<ModelList>,
    cache: Option<CacheHandle>,
    router: CostRouterHandle,
}

/// Builds the gateway, reading provider keys from the environment. Errors name the
/// configuration key at fault.
pub fn build(config: GatewayConfig) -> Result<Gateway, String> {
    build_with_secrets(config, |var| std::env::var(var).ok())
}

/// Builds the gateway, reading provider keys through `secret` (variable name → value).
pub fn build_with_secrets(
    config: GatewayConfig,
    secret: impl Fn(&str) -> Option<String>,
) -> Result<Gateway, String> {
    let mut builder = Upstream::builder();
    let mut mocks = BTreeMap::new();
    for (i, p) in config.providers.iter().enumerate() {
        match p.kind {
            ProviderKindEntry::Openai | ProviderKindEntry::Anthropic => {
                if let Some(var) = &p.api_key_env {
                    let key = secret(var).ok_or_else(|| {
                        format!(
                            "providers[{i}] (name = \"{}\").api_key_env: environment variable {var} is not set",
                            p.name
                        )
                    })?;
                    builder = builder.api_key(&p.name, key);
                }
                builder = builder.provider(ProviderConfig {
                    name: p.name.clone(),
                    kind: if p.kind == ProviderKindEntry::Anthropic {
                        ProviderKind::Anthropic
                    } else {
                        ProviderKind::Openai
                    },
                    base_url: p.base_url.clone().unwrap_or_default(),
                    api_key_env: None,
                    timeouts: p.timeouts,
                    allow_link_local: p.allow_link_local,
                    anthropic: p.anthropic.clone().unwrap_or_default(),
                });
            }
            ProviderKindEntry::Mock => {
                let settings = p.mock.clone().unwrap_or_default();
                let api = settings.api;
                let mock = MockProvider::new(settings);
                builder = match api {
                    rampart_mock::MockApi::Anthropic => builder.anthropic_service_provider(
                        &p.name,
                        mock.service(),
                        p.timeouts,
                        p.anthropic.clone().unwrap_or_default(),
                    ),
                    rampart_mock::MockApi::Openai => {
                        builder.service_provider(&p.name, mock.service(), p.timeouts)
                    }
                };
                mocks.insert(p.name.clone(), mock);
            }
        }
    }
    for m in &config.models {
        builder = builder.model(&m.name, &m.provider, m.upstream_name.as_deref());
    }
    let edge_config = EdgeConfig {
        max_body_bytes: config.server.max_body_bytes,
        body_timeout: config.server.body_read_timeout,
    };
    let upstream = builder
        .edge_config(edge_config)
        .build()
        .map_err(|e| e.to_string())?;

    let keys = VirtualKeys::from_digests(
        config
            .virtual_keys
            .iter()
            .map(|k| (k.key_sha256.as_str(), Tenant::new(k.tenant.as_str()))),
    )
    .map_err(|e| format!("virtual_keys: {e}"))?;

    let breaker = CircuitBreakerLayer::from_config(config.circuit_breaker.clone())
        .map_err(|e| format!("circuit_breaker: {e}"))?;
    let breakers = breaker.handle();

    // The chat-completions stack, outer to inner. Later layers (rate limits, cache, router,
    // fallback) slot in between auth and the per-target layers.
    // Shared state: one Redis connection for every store; absent = all stores in memory.
    let redis = config
        .state
        .as_ref()
        .map(|s| {
            RedisState::new(s.redis())
                .map(|r| (r, s))
                .map_err(|e| format!("state: {e}"))
        })
        .transpose()?;
    // When the tenant limiter sets both header groups on every admitted answer, the target
    // limiter's headers (written first, then replaced) are skipped.
    let tenant_limits = config.tenant_limits();
    let tenant_sets_headers = tenant_limits.as_ref().is_some_and(|c| {
        c.limits.requests_per_minute.is_some() && c.limits.tokens_per_minute.is_some()
    });
    let limiter =
        |c: Option<rampart_ratelimit::RateLimitConfig>, at: &str, scope: &str, headers: bool| {
            let Some(c) = c else { return Ok(None) };
            let builder = RateLimitLayer::builder()
                .config(c)
                .response_headers(headers);
            let builder = match &redis {
                Some((state, s)) => builder.store(Arc::new(
                    RedisRateLimitStore::scoped(state.clone(), s.rate_limits.clone(), scope)
                        .map_err(|e| format!("state.rate_limits: {e}"))?,
                )),
                None => builder,
            };
            builder.build().map(Some).map_err(|e| format!("{at}: {e}"))
        };
    let tenant_limit = limiter(tenant_limits, "rate_limits.tenant", "tenant", true)?;
    let target_limit = limiter(
        config.target_limits(),
        "rate_limits.target",
        "target",
        !tenant_sets_headers,
    )?;
    // Candidates for a model: its catalog entry (provider, context window).
    let catalog: Arc<BTreeMap<String, Candidate>> = Arc::new(
        config
            .models
            .iter()
            .filter_map(|m| {
                let target = upstream.target(&m.name)?.clone();
                let c = Candidate::new(target);
                Some((
                    m.name.clone(),
                    match m.context_window {
                        Some(w) => c.with_context_window(w),
                        None => c,
                    },
                ))
            })
            .collect(),
    );
    let fallback = FallbackLayer::from_config(config.fallback_config())
        .map_err(|e| format!("fallback: {e}"))?
        .resolver(move |model: &str| catalog.get(model).cloned());
    let cache = match (config.cache.clone(), &redis) {
        (None, _) => None,
        (Some(c), None) => Some(CacheLayer::from_config(c).map_err(|e| format!("cache: {e}"))?),
        (Some(c), Some((state, s))) => {
            let store = RedisCacheStore::new(state.clone(), s.cache.clone())
                .map_err(|e| format!("state.cache: {e}"))?;
            Some(
                CacheLayer::builder()
                    .config(c)
                    .store(Arc::new(store))
                    .build()
                    .map_err(|e| format!("cache: {e}"))?,
            )
        }
    };
    let cache_handle = cache.as_ref().map(CacheLayer::handle);
    let router = CostRouterLayer::builder().config(config.router_config());
    let router = match &redis {
        Some((state, s)) => router.budget_store(Arc::new(
            RedisBudgetStore::new(state.clone(), s.budgets.clone())
                .map_err(|e| format!("state.budgets: {e}"))?,
        )),
        None => router,
    };
    let router = router.build().map_err(|e| format!("router: {e}"))?;
    let router_handle = router.handle();
    let (hedge, fan_out) = parallel_layers(&config)?;
    let stack = ServiceBuilder::new()
        .layer(AuthLayer::new(keys.clone()))
        // Each fan-out call is a request of its own through the tenant limit, cache and router.
        .option_layer(fan_out)
        .option_layer(tenant_limit)
        .option_layer(cache)
        .layer(router)
        // Hedges go to the router's next candidate, each through its own fallback.
        .option_layer(hedge)
        .layer(fallback)
        .option_layer(target_limit)
        .layer(breaker)
        .service(upstream.clone());
    let stack: BoxChatService = BoxCloneSyncService::new(stack);
    let chat = ServiceBuilder::new()
        .layer(crate::observe::ObserveLayer::prices({
            let routing = router_handle.clone();
            move |model: &str| routing.catalog().get(model).map(|m| m.price)
        }))
        .service(Edge::new(stack, edge_config));
    let metrics = crate::observe::prometheus();
    if let Some(h) = &metrics {
        crate::observe::spawn_upkeep(h.clone());
    }

    let models = Arc::new(ModelList {
        object: "list".to_owned(),
        data: config
            .models
            .iter()
            .map(|m| ModelObject {
                id: m.name.clone(),
                object: "model".to_owned(),
                created: 0,
                owned_by: m.provider.clone(),
            })
            .collect(),
    });
    let state = AppState {
        keys: keys.clone(),
        models,
        cache: cache_handle.clone(),
        router: router_handle.clone(),
    };

    let router = Router::new()
        .route(
            "/v1/chat/completions",
            post_service(chat).fallback(method_not_allowed),
        )
        .route("/v1/models", get(list_models).fallback(method_not_allowed))
        .route(
            "/v1/cache",
            axum::routing::delete(purge_cache).fallback(method_not_allowed),
        )
        .route("/v1/spend", get(spend).fallback(method_not_allowed))
        .route("/health", get(health))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { render_metrics(metrics) }
            }),
        )
        .fallback(not_found)
        .with_state(state);
    let router = with_outer_layers(router);
    Ok(Gateway {
        router,
        upstream,
        mocks,
        breakers,
        cache: cache_handle,
        routing: router_handle,
        config,
    })
}

/// The layers of `[parallel]`, each `None` unless configured: hedging (below the router) and
/// fan-out (above the tenant limit), fan-out routes and the header limited to the catalog.
fn parallel_layers(
    config: &GatewayConfig,
) -> Result<(Option<HedgeLayer>, Option<FanOutLayer>), String> {
    let hedge = config
        .parallel
        .hedge
        .clone()
        .map(HedgeLayer::from_config)
        .transpose()
        .map_err(|e| format!("parallel.hedge.{e}"))?;
    let fan_out = config
        .parallel
        .fan_out
        .clone()
        .map(|c| {
            FanOutLayer::from_config(c)?.known_models(config.models.iter().map(|m| m.name.clone()))
        })
        .transpose()
        .map_err(|e| format!("parallel.fan_out.{e}"))?;
    Ok((hedge, fan_out))
}

/// The layers around every route, outer to inner: mark secret headers sensitive (never logged),
/// set or keep `x-request-id` and echo it on every response, catch panics (an OpenAI-shaped 500),
/// trace.
fn with_outer_layers(router: Router) -> Router {
    let sensitive: Arc<[HeaderName]> = Arc::new([
        header::AUTHORIZATION,
        header::PROXY_AUTHORIZATION,
        header::COOKIE,
        header::SET_COOKIE,
        HeaderName::from_static("x-api-key"),
        HeaderName::from_static("api-key"),
    ]);
    router.layer(
        ServiceBuilder::new()
            .layer(SetSensitiveHeadersLayer::from_shared(sensitive))
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(TraceLayer::new_for_http()),
    )
}

/// An OpenAI-shaped error response for the routes outside the chat stack.
fn json_error(status: StatusCode, kind: &str, code: &str, message: String) -> Response {
    let body = ErrorBody {
        error: ErrorObject {
            message,
            kind: kind.to_owned(),
            param: None,
            code: Some(code.to_owned()),
        },
    };
    let mut resp = (status, axum::Json(body)).into_response();
    resp.headers_mut().insert(
        rampart_core::headers::X_RAMPART_ERROR_SOURCE,
        HeaderValue::from_static("gateway"),
    );
    resp
}

async fn not_found(uri: http::Uri) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "unknown_url",
        format!(
            "Unknown request URL: {}. Routes: POST /v1/chat/completions, GET /v1/models, GET /health.",
            uri.path().chars().take(200).collect::<String>()
        ),
    )
}

async fn method_not_allowed(method: http::Method) -> Response {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method_not_allowed",
        format!("Method {method} is not allowed on this route."),
    )
}

/// `GET /v1/spend`: the calling tenant's spend (never another tenant's): the total since start,
/// and today's and this month's budget windows, in USD.
async fn spend(State(state): State<AppState>, headers: HeaderMap) -> Response {
    use rampart_core::pricing::format_usd;
    let tenant = match state.keys.authenticate(headers.get(header::AUTHORIZATION)) {
        Ok(t) => t,
        Err(e) => return e.to_response().map(axum::body::Body::new),
    };
    let total = state.router.spend(tenant.id());
    let mut body = serde_json::json!({
        "tenant": tenant.id(),
        "total_usd": format_usd(total),
    });
    match state.router.budget(tenant.id()).await {
        Ok(b) => {
            body["today"] = serde_json::json!({
                "spent_usd": format_usd(b.day_spent),
                "reserved_usd": format_usd(b.day_reserved),
            });
            body["month"] = serde_json::json!({
                "spent_usd": format_usd(b.month_spent),
                "reserved_usd": format_usd(b.month_reserved),
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "budget store unavailable for /v1/spend");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "state_store_unavailable",
                "The budget store is unavailable; try again shortly.".to_owned(),
            );
        }
    }
    axum::Json(body).into_response()
}

/// `DELETE /v1/cache`: purges the calling tenant's cached answers (and only theirs).
async fn purge_cache(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let tenant = match state.keys.authenticate(headers.get(header::AUTHORIZATION)) {
        Ok(t) => t,
        Err(e) => return e.to_response().map(axum::body::Body::new),
    };
    let Some(cache) = state.cache else {
        return json_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "cache_disabled",
            "The response cache is not enabled on this gateway.".to_owned(),
        );
    };
    match cache.purge_tenant(tenant.id()).await {
        Ok(()) => {
            axum::Json(serde_json::json!({"purged": true, "tenant": tenant.id()})).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cache purge failed");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "state_store_unavailable",
                "The cache could not be purged; retry later.".to_owned(),
            )
        }
    }
}

fn render_metrics(handle: Option<metrics_exporter_prometheus::PrometheusHandle>) -> Response {
    let body = match handle {
        Some(h) => {
            h.run_upkeep();
            h.render()
        }
        None => "# metrics are recorded by the embedding application\n".to_owned(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn health() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn list_models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match state.keys.authenticate(headers.get(header::AUTHORIZATION)) {
        Ok(_) => axum::Json(&*state.models).into_response(),
        Err(e) => e.to_response().map(axum::body::Body::new),
    }
}

fn panic_response(_panic: Box<dyn std::any::Any + Send>) -> http::Response<Body> {
    tracing::error!("a request handler panicked");
    rampart_core::Error::new(
        rampart_core::ErrorKind::Internal,
        "The gateway hit an internal error.",
    )
    .to_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panic_becomes_an_openai_shaped_500() {
        async fn boom() -> &'static str {
            panic!("handler bug")
        }
        let router = with_outer_layers(Router::new().route("/boom", get(boom)));
        let resp = router
            .oneshot(
                http::Request::get("/boom")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 500);
        assert!(resp.headers().get("x-request-id").is_some());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "internal_error");
        assert!(!v.to_string().contains("handler bug"));
    }
}
