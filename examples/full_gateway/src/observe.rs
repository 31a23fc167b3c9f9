//! Metrics for the gateway: the Prometheus recorder (installed once per process) and the
//! per-request observer around the chat route.
//!
//! Libraries record through the `metrics` facade (breaker state, rate-limit refusals, ...); the
//! binary owns the exporter and serves `GET /metrics`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll};

use http::{Request, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use rampart_core::headers::{X_RAMPART_MODEL, X_RAMPART_PROVIDER, X_RAMPART_ROUTE};
use rampart_core::{Body, ResponseFacts};
use tokio::time::Instant;
use tower::{Layer, Service};

/// Latency buckets in seconds: 100 µs to 120 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The process's Prometheus handle, installing the recorder on first use. `None` when another
/// global recorder was installed first (the embedding application owns metrics then).
pub fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed; /metrics is empty");
                    None
                }
            }
        })
        .clone()
}

/// Records `rampart_requests_total`, `rampart_request_duration_seconds`,
/// `rampart_upstream_ttfb_seconds` and `rampart_tokens_total` for each chat request.
///
/// Metric handles are resolved once per label set and kept (the label space is bounded by the
/// catalog: route × model × provider × status), so a request costs a map lookup and atomic
/// increments, not a registry lookup and label allocations per metric.
#[derive(Debug, Clone, Default)]
pub struct ObserveLayer {
    handles: Arc<RwLock<HashMap<String, Handles>>>,
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            handles: self.handles.clone(),
        }
    }
}

/// The service of [`ObserveLayer`] (wraps the edge adapter, whose errors are responses).
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    handles: Arc<RwLock<HashMap<String, Handles>>>,
}

/// At most this many label sets get cached handles (beyond it, handles are resolved per call).
const MAX_LABEL_SETS: usize = 10_000;

#[derive(Debug, Clone)]
struct Handles {
    requests: metrics::Counter,
    duration: metrics::Histogram,
    ttfb: metrics::Histogram,
}

struct TokenCounters {
    prompt: metrics::Counter,
    completion: metrics::Counter,
    cached: metrics::Counter,
}

fn token_counters() -> &'static TokenCounters {
    static TOKENS: OnceLock<TokenCounters> = OnceLock::new();
    TOKENS.get_or_init(|| TokenCounters {
        prompt: metrics::counter!("rampart_tokens_total", "kind" => "prompt"),
        completion: metrics::counter!("rampart_tokens_total", "kind" => "completion"),
        cached: metrics::counter!("rampart_tokens_total", "kind" => "cached"),
    })
}

fn label<'a>(resp: &'a Response<Body>, name: &http::HeaderName, none: &'static str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map_or(none, |s| &s[..s.len().min(64)])
}

fn resolve(route: &str, model: &str, provider: &str, status: u16) -> Handles {
    Handles {
        requests: metrics::counter!("rampart_requests_total",
            "route" => route.to_owned(), "model" => model.to_owned(),
            "provider" => provider.to_owned(), "status" => status.to_string()),
        duration: metrics::histogram!("rampart_request_duration_seconds",
            "model" => model.to_owned(), "provider" => provider.to_owned()),
        ttfb: metrics::histogram!("rampart_upstream_ttfb_seconds",
            "model" => model.to_owned(), "provider" => provider.to_owned()),
    }
}

fn handles_for(cache: &RwLock<HashMap<String, Handles>>, resp: &Response<Body>) -> Handles {
    let model = label(resp, &X_RAMPART_MODEL, "none");
    let provider = label(resp, &X_RAMPART_PROVIDER, "none");
    let route = label(resp, &X_RAMPART_ROUTE, "explicit");
    let status = resp.status().as_u16();
    let mut key = String::with_capacity(route.len() + model.len() + provider.len() + 8);
    for part in [route, model, provider] {
        key.push_str(part);
        key.push('\u{1f}');
    }
    key.push_str(resp.status().as_str());
    if let Some(h) = cache
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return h.clone();
    }
    let h = resolve(route, model, provider, status);
    let mut map = cache.write().unwrap_or_else(PoisonError::into_inner);
    if map.len() < MAX_LABEL_SETS {
        map.insert(key, h.clone());
    }
    h
}

impl<S, B> Service<Request<B>> for Observe<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let fut = self.inner.call(req);
        let cache = self.handles.clone();
        Box::pin(async move {
            let resp = fut.await?;
            let h = handles_for(&cache, &resp);
            h.requests.increment(1);
            match resp.extensions().get::<ResponseFacts>() {
                Some(facts) => {
                    h.ttfb.record(facts.ttfb.as_secs_f64());
                    facts.completion.on_complete(move |report| {
                        h.duration.record(started.elapsed().as_secs_f64());
                        if let Some(u) = &report.usage {
                            let t = token_counters();
                            t.prompt.increment(u.prompt_tokens);
                            t.completion.increment(u.completion_tokens);
                            t.cached.increment(u.cached_tokens());
                        }
                    });
                }
                None => h.duration.record(started.elapsed().as_secs_f64()),
            }
            Ok(resp)
        })
    }
}

/// Runs the exporter's upkeep (draining histogram samples into their buckets) every few seconds,
/// so memory stays flat between scrapes. Call once per process from inside a Tokio runtime.
pub fn spawn_upkeep(handle: PrometheusHandle) {
    static STARTED: OnceLock<()> = OnceLock::new();
    if STARTED.set(()).is_err() {
        return;
    }
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        });
    }
}
