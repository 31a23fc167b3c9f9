//! Observability for the gateway: the Prometheus recorder (installed once per process), the
//! per-request observer around the chat route (metrics and one `tracing` span per request), and
//! the log / trace output (`[observability]`: text or JSON lines, optional OTLP export behind the
//! `otel` cargo feature).
//!
//! Libraries record through the `metrics` facade (breaker state, rate-limit refusals, ...); the
//! binary owns the exporter and serves `GET /metrics`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderName, Request, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use rampart_core::headers::{
    X_RAMPART_ATTEMPTS, X_RAMPART_CACHE, X_RAMPART_COST_USD, X_RAMPART_ERROR_SOURCE,
    X_RAMPART_MODEL, X_RAMPART_PROVIDER, X_RAMPART_ROUTE, X_REQUEST_ID,
};
use rampart_core::{Body, CompletionReport, Outcome, Price, ResponseFacts};
use serde::Deserialize;
use tokio::time::Instant;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::field::Empty;

/// Latency buckets in seconds: 50 µs to 120 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
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
                Ok(h) => {
                    describe();
                    Some(h)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed; /metrics is empty");
                    None
                }
            }
        })
        .clone()
}

/// `# HELP` texts for the families this module records.
fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        "rampart_requests_total",
        "Chat requests by route, served model, provider and HTTP status."
    );
    describe_histogram!(
        "rampart_request_duration_seconds",
        Unit::Seconds,
        "Total time of a chat request, from arrival to the end of the response body."
    );
    describe_histogram!(
        "rampart_upstream_ttfb_seconds",
        Unit::Seconds,
        "Time from the start of the served upstream call to its response headers."
    );
    describe_histogram!(
        "rampart_upstream_duration_seconds",
        Unit::Seconds,
        "Time from the start of the served upstream call to the end of its body."
    );
    describe_histogram!(
        "rampart_overhead_seconds",
        Unit::Seconds,
        "The gateway's own share of a request: total time minus the served upstream call \
         (refusals, cache hits and failed attempts count whole)."
    );
    describe_counter!(
        "rampart_tokens_total",
        "Tokens the providers reported, by kind (prompt, completion, cached)."
    );
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
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Logs and traces.

/// `[observability]`: how the gateway writes logs and exports traces.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObservabilityConfig {
    /// `text` (human-readable lines, the default) or `json` (one JSON object per line, with the
    /// request span's fields).
    pub log_format: LogFormat,
    /// The log filter (`tracing_subscriber` `EnvFilter` syntax, e.g. `"info,rampart=debug"`).
    /// `RUST_LOG`, when set, wins. Default `info`.
    pub log_filter: Option<String>,
    /// OTLP/HTTP (protobuf) endpoint to export request spans to, e.g. a local collector's
    /// `"http://127.0.0.1:4318/v1/traces"` (plain HTTP only). Needs the binary built with `--features otel`;
    /// without it the gateway warns at start and exports nothing.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported spans. Default `rampart`.
    pub service_name: String,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_filter: None,
            otlp_endpoint: None,
            service_name: "rampart".to_owned(),
        }
    }
}

impl ObservabilityConfig {
    /// Checks the filter and the endpoint; errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(f) = &self.log_filter {
            tracing_subscriber::EnvFilter::try_new(f)
                .map_err(|e| format!("observability.log_filter: {e}"))?;
        }
        if let Some(e) = &self.otlp_endpoint {
            let uri: http::Uri = e
                .parse()
                .map_err(|_| format!("observability.otlp_endpoint: '{e}' is not a URL"))?;
            // The exporter's HTTP client is built without TLS: a collector on the host or a
            // sidecar is the expected setup.
            if uri.scheme_str() != Some("http") || uri.host().is_none() {
                return Err(format!(
                    "observability.otlp_endpoint: '{e}' must be an http:// URL (a local collector; TLS export is not built in)"
                ));
            }
        }
        if self.service_name.trim().is_empty() {
            return Err("observability.service_name: must not be empty".into());
        }
        Ok(())
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines with the span's fields in braces.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields`, `target` and `span` (the
    /// request span's fields).
    Json,
}

/// The log output layer in `format`, writing to `writer` (stdout in the binary; a buffer in
/// tests). Text lines are coloured only when `ansi` is set (the binary sets it when stdout is a
/// terminal); JSON lines never are.
pub fn fmt_layer<S, W>(
    format: LogFormat,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync + 'static>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi && format == LogFormat::Text);
    match format {
        LogFormat::Text => Box::new(layer),
        LogFormat::Json => Box::new(
            layer
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .flatten_event(false),
        ),
    }
}

/// The log filter: `RUST_LOG` when set, else the configured one, else `info`.
pub fn env_filter(config: &ObservabilityConfig) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let f = config.log_filter.as_deref().unwrap_or("info");
        tracing_subscriber::EnvFilter::try_new(f)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    })
}

/// Keeps trace export alive; dropping it flushes the spans not yet exported.
#[derive(Default)]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("warning: trace export did not shut down cleanly: {e}");
        }
    }
}

/// Installs the process's global subscriber: the filter, the log layer (stdout, as before) and,
/// with the `otel` feature and an `otlp_endpoint`, the OpenTelemetry layer.
pub fn init(config: &ObservabilityConfig) -> Result<Telemetry, String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let registry = tracing_subscriber::registry()
        .with(env_filter(config))
        .with(fmt_layer(
            config.log_format,
            std::io::IsTerminal::is_terminal(&std::io::stdout()),
            std::io::stdout,
        ));
    #[cfg(feature = "otel")]
    {
        let mut telemetry = Telemetry::default();
        let otel = match &config.otlp_endpoint {
            Some(endpoint) => {
                let (layer, provider) = otel::layer(endpoint, &config.service_name)?;
                telemetry.provider = Some(provider);
                Some(layer)
            }
            None => None,
        };
        registry
            .with(otel)
            .try_init()
            .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
        if let Some(e) = &config.otlp_endpoint {
            tracing::info!(endpoint = %e, "exporting request spans over OTLP/HTTP");
        }
        Ok(telemetry)
    }
    #[cfg(not(feature = "otel"))]
    {
        registry
            .try_init()
            .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
        if config.otlp_endpoint.is_some() {
            tracing::warn!(
                "observability.otlp_endpoint is set but this binary was built without the `otel` feature: no spans are exported (build with `--features otel`)"
            );
        }
        Ok(Telemetry::default())
    }
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// The OpenTelemetry layer exporting spans over OTLP/HTTP (protobuf) in batches, from a
    /// background thread of the SDK's own.
    pub(super) fn layer<S>(
        endpoint: &str,
        service: &str,
    ) -> Result<
        (
            tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
            SdkTracerProvider,
        ),
        String,
    >
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| format!("observability.otlp_endpoint: {e}"))?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service.to_owned())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("rampart");
        Ok((tracing_opentelemetry::layer().with_tracer(tracer), provider))
    }
}

// ---------------------------------------------------------------------------------------------
// The per-request observer.

/// Looks up a served model's price (for the cost of a stream, known only at its end).
pub type PriceLookup = Arc<dyn Fn(&str) -> Option<Price> + Send + Sync>;

/// Records `rampart_requests_total`, `rampart_request_duration_seconds`,
/// `rampart_upstream_ttfb_seconds`, `rampart_upstream_duration_seconds`,
/// `rampart_overhead_seconds` and `rampart_tokens_total` for each chat request, and runs it in
/// one `request` span (INFO) whose fields are filled in as they become known: `request_id`,
/// `tenant` (by the auth layer), `route`, `model`, `provider`, `status`, `stream`, `cache`,
/// `attempts`, `error_source`, `prompt_tokens`, `completion_tokens`, `cached_tokens`,
/// `cost_usd`, `outcome`. A `request finished` event (with `duration_us`) closes it when the
/// body ends. No prompt text and no key is ever recorded.
///
/// Metric handles are resolved once per label set and kept (the label space is bounded by the
/// catalog: route × model × provider × status), so a request costs a map lookup and atomic
/// increments, not a registry lookup and label allocations per metric. When the span is
/// disabled by the log filter, the tracing work is skipped.
#[derive(Clone, Default)]
pub struct ObserveLayer {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    handles: RwLock<HashMap<String, Handles>>,
    prices: Option<PriceLookup>,
}

impl std::fmt::Debug for ObserveLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObserveLayer")
            .field("prices", &self.shared.prices.is_some())
            .finish_non_exhaustive()
    }
}

impl ObserveLayer {
    /// An observer without a price lookup (streams' cost is then not in the trace).
    pub fn new() -> Self {
        Self::default()
    }

    /// Prices streamed answers for the trace (a JSON answer's cost is its `x-rampart-cost-usd`).
    pub fn prices(prices: impl Fn(&str) -> Option<Price> + Send + Sync + 'static) -> Self {
        Self {
            shared: Arc::new(Shared {
                handles: RwLock::default(),
                prices: Some(Arc::new(prices)),
            }),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of [`ObserveLayer`] (wraps the edge adapter, whose errors are responses).
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Observe<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observe")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// At most this many label sets get cached handles (beyond it, handles are resolved per call).
const MAX_LABEL_SETS: usize = 10_000;

#[derive(Debug, Clone)]
struct Handles {
    requests: metrics::Counter,
    duration: metrics::Histogram,
    ttfb: metrics::Histogram,
    upstream: metrics::Histogram,
    overhead: metrics::Histogram,
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

fn header<'a>(resp: &'a Response<Body>, name: &HeaderName) -> Option<&'a str> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| &s[..s.len().min(64)])
}

fn label<'a>(resp: &'a Response<Body>, name: &HeaderName, none: &'static str) -> &'a str {
    header(resp, name).unwrap_or(none)
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
        upstream: metrics::histogram!("rampart_upstream_duration_seconds",
            "model" => model.to_owned(), "provider" => provider.to_owned()),
        overhead: metrics::histogram!("rampart_overhead_seconds",
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

/// The request span, with every field declared (recorded later as it becomes known).
fn request_span<B>(req: &Request<B>) -> tracing::Span {
    let span = tracing::info_span!(
        "request",
        request_id = Empty,
        tenant = Empty,
        route = Empty,
        model = Empty,
        provider = Empty,
        status = Empty,
        stream = Empty,
        cache = Empty,
        attempts = Empty,
        error_source = Empty,
        prompt_tokens = Empty,
        completion_tokens = Empty,
        cached_tokens = Empty,
        cost_usd = Empty,
        outcome = Empty,
    );
    if !span.is_disabled()
        && let Some(id) = req
            .headers()
            .get(&X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
    {
        span.record("request_id", &id[..id.len().min(64)]);
    }
    span
}

/// Records what the response headers tell: served model and provider, route, status, cache
/// status, attempts, error source and (JSON answers) cost.
fn record_response(span: &tracing::Span, resp: &Response<Body>) {
    span.record("status", resp.status().as_u16());
    for (field, name) in [
        ("route", &X_RAMPART_ROUTE),
        ("model", &X_RAMPART_MODEL),
        ("provider", &X_RAMPART_PROVIDER),
        ("cache", &X_RAMPART_CACHE),
        ("error_source", &X_RAMPART_ERROR_SOURCE),
    ] {
        if let Some(v) = header(resp, name) {
            span.record(field, v);
        }
    }
    if let Some(n) = header(resp, &X_RAMPART_ATTEMPTS).and_then(|v| v.parse::<u32>().ok()) {
        span.record("attempts", n);
    }
    if let Some(c) = header(resp, &X_RAMPART_COST_USD).and_then(|v| v.parse::<f64>().ok()) {
        span.record("cost_usd", c);
    }
}

fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Complete => "complete",
        Outcome::UpstreamError(_) => "upstream_error",
        Outcome::Cut => "cut",
        Outcome::ClientGone => "client_gone",
        Outcome::Abandoned => "abandoned",
    }
}

/// Records how the body ended (usage, outcome, a stream's cost) and closes with the
/// `request finished` event.
fn record_end(
    span: &tracing::Span,
    report: &CompletionReport,
    priced: Option<(&str, &PriceLookup)>,
    total: Duration,
) {
    span.record("outcome", outcome_name(&report.outcome));
    if let Some(u) = &report.usage {
        span.record("prompt_tokens", u.prompt_tokens);
        span.record("completion_tokens", u.completion_tokens);
        span.record("cached_tokens", u.cached_tokens());
        if let Some((model, prices)) = priced
            && let Some(price) = prices(model)
        {
            span.record("cost_usd", price.cost(u) as f64 / 1e6);
        }
    }
    finished(span, total);
}

fn finished(span: &tracing::Span, total: Duration) {
    let duration_us = u64::try_from(total.as_micros()).unwrap_or(u64::MAX);
    tracing::info!(parent: span, duration_us, "request finished");
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
        let span = request_span(&req);
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        let shared = self.shared.clone();
        let traced = (!span.is_disabled()).then(|| span.clone());
        Box::pin(
            async move {
                let resp = fut.await?;
                let h = handles_for(&shared.handles, &resp);
                h.requests.increment(1);
                if let Some(span) = &traced {
                    record_response(span, &resp);
                }
                match resp.extensions().get::<ResponseFacts>() {
                    Some(facts) => {
                        h.ttfb.record(facts.ttfb.as_secs_f64());
                        let priced = match &traced {
                            Some(span) => {
                                span.record("stream", facts.stream);
                                // A JSON answer's cost came in its header.
                                facts.stream.then(|| shared.prices.clone()).flatten()
                            }
                            None => None,
                        }
                        .map(|p| (facts.target.model.clone(), p));
                        facts.completion.on_complete(move |report| {
                            let total = started.elapsed();
                            h.duration.record(total.as_secs_f64());
                            h.upstream.record(report.elapsed.as_secs_f64());
                            h.overhead
                                .record(total.saturating_sub(report.elapsed).as_secs_f64());
                            if let Some(u) = &report.usage {
                                let t = token_counters();
                                t.prompt.increment(u.prompt_tokens);
                                t.completion.increment(u.completion_tokens);
                                t.cached.increment(u.cached_tokens());
                            }
                            if let Some(span) = &traced {
                                let priced = priced.as_ref().map(|(m, p)| (&**m, p));
                                record_end(span, report, priced, total);
                            }
                        });
                    }
                    None => {
                        let total = started.elapsed().as_secs_f64();
                        h.duration.record(total);
                        h.overhead.record(total);
                        if let Some(span) = &traced {
                            finished(span, started.elapsed());
                        }
                    }
                }
                Ok(resp)
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_and_validates() {
        let c: ObservabilityConfig = toml::from_str(
            "log_format = \"json\"\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\n",
        )
        .unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.service_name, "rampart");
        c.validate().unwrap();
        let bad = ObservabilityConfig {
            otlp_endpoint: Some("127.0.0.1:4318".into()),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("otlp_endpoint"));
        let bad = ObservabilityConfig {
            log_filter: Some("info,[[".into()),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("log_filter"));
        assert!(toml::from_str::<ObservabilityConfig>("log_format = \"xml\"\n").is_err());
    }
}
