//! Metrics for the gateway: the Prometheus recorder (installed once per process) and the
//! per-request observer around the chat route.
//!
//! Libraries record through the `metrics` facade (breaker state, rate-limit refusals, ...); the
//! binary owns the exporter and serves `GET /metrics`.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
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
#[derive(Debug, Clone, Copy, Default)]
pub struct ObserveLayer;

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner }
    }
}

/// The service of [`ObserveLayer`] (wraps the edge adapter, whose errors are responses).
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
}

fn label(resp: &Response<Body>, name: &http::HeaderName, none: &'static str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| none.to_owned(), |s| s.chars().take(64).collect())
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
        Box::pin(async move {
            let resp = fut.await?;
            let model = label(&resp, &X_RAMPART_MODEL, "none");
            let provider = label(&resp, &X_RAMPART_PROVIDER, "none");
            let route = label(&resp, &X_RAMPART_ROUTE, "explicit");
            let status = resp.status().as_u16().to_string();
            metrics::counter!("rampart_requests_total",
                "route" => route, "model" => model.clone(), "provider" => provider.clone(), "status" => status)
            .increment(1);
            match resp.extensions().get::<ResponseFacts>() {
                Some(facts) => {
                    metrics::histogram!("rampart_upstream_ttfb_seconds",
                        "model" => model.clone(), "provider" => provider.clone())
                    .record(facts.ttfb.as_secs_f64());
                    facts.completion.on_complete(move |report| {
                        metrics::histogram!("rampart_request_duration_seconds",
                            "model" => model.clone(), "provider" => provider.clone())
                        .record(started.elapsed().as_secs_f64());
                        if let Some(u) = &report.usage {
                            metrics::counter!("rampart_tokens_total", "kind" => "prompt")
                                .increment(u.prompt_tokens);
                            metrics::counter!("rampart_tokens_total", "kind" => "completion")
                                .increment(u.completion_tokens);
                            metrics::counter!("rampart_tokens_total", "kind" => "cached")
                                .increment(u.cached_tokens());
                        }
                    });
                }
                None => {
                    metrics::histogram!("rampart_request_duration_seconds",
                        "model" => model, "provider" => provider)
                    .record(started.elapsed().as_secs_f64());
                }
            }
            Ok(resp)
        })
    }
}
