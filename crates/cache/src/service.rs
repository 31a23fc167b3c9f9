//! The [`Cache`] service: policy, lookup, single-flight and replay.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use rampart_core::headers::{
    X_RAMPART_CACHE, X_RAMPART_CACHE_TTL, X_RAMPART_COST_USD, X_RAMPART_DEGRADED, X_RAMPART_MODEL,
    X_RAMPART_PROVIDER,
};
use rampart_core::{
    Body, BoxError, ChatRequest, SettleHooks, Target, Tenant, chat_request, ensure_chat_request,
};
use tower_service::Service;

use crate::entry::CacheEntry;
use crate::flight::{self, Fill, Join, Outcome};
use crate::key::CacheKey;
use crate::layer::Shared;
use crate::store::StoreFailure;

/// The service of [`CacheLayer`](crate::CacheLayer).
pub struct Cache<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for Cache<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Cache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Cache<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }
}

/// `x-rampart-cache` values and the metric's `status` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Hit,
    Miss,
    Bypass,
}

/// `rampart_cache_requests_total`, by status.
pub(crate) fn requests_counter() -> rampart_core::metric::LabelledCounter<3> {
    rampart_core::metric::LabelledCounter::new(
        "rampart_cache_requests_total",
        "status",
        ["hit", "miss", "bypass"],
    )
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Hit => "hit",
            Status::Miss => "miss",
            Status::Bypass => "bypass",
        }
    }
    fn count(self, shared: &Shared) {
        shared.requests.increment(self.as_str());
    }
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

/// The request's `Cache-Control` directives that matter here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CacheControl {
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) max_age: Option<Duration>,
}

impl CacheControl {
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut cc = Self::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for d in value.split(',') {
                let d = d.trim();
                let (name, arg) = match d.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (d, None),
                };
                if name.eq_ignore_ascii_case("no-store") {
                    cc.no_store = true;
                } else if name.eq_ignore_ascii_case("no-cache") {
                    cc.no_cache = true;
                } else if name.eq_ignore_ascii_case("max-age")
                    && let Some(secs) = arg.and_then(|a| a.parse::<u64>().ok())
                {
                    // Several max-age directives: the strictest wins.
                    let d = Duration::from_secs(secs);
                    cc.max_age = Some(cc.max_age.map_or(d, |m| m.min(d)));
                }
            }
        }
        cc
    }
}

/// What to do with a request.
enum Decision {
    Bypass,
    Cache(Plan),
}

struct Plan {
    key: CacheKey,
    canonical: Bytes,
    /// Look in the store (and join a flight).
    read: bool,
    max_age: Option<Duration>,
    /// Store the answer for this long (`None`: do not store).
    ttl: Option<Duration>,
}

impl Shared {
    fn decide(&self, req: &Request<Body>, chat: &ChatRequest) -> Decision {
        let tenant = req.extensions().get::<Tenant>();
        let policy = self.policy(chat.model(), tenant.map(Tenant::id));
        if !policy.enabled {
            return Decision::Bypass;
        }
        let cc = CacheControl::parse(req.headers());
        if cc.no_store {
            return Decision::Bypass;
        }
        // OpenAI's default temperature is 1: only an explicit 0 is deterministic.
        let deterministic = chat.temperature() == Some(0.0);
        if !deterministic && !policy.nondeterministic {
            return Decision::Bypass;
        }
        let ttl = match req
            .headers()
            .get(X_RAMPART_CACHE_TTL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(0) => None,
            Some(secs) => Some(Duration::from_secs(secs).min(self.max_ttl)),
            None => Some(policy.ttl),
        };
        let canonical = match self
            .rules
            .canonicalize(chat, req.extensions().get::<Target>())
        {
            // The routing hints pick the model for routed requests: part of the key.
            Ok(c) => c.with_context(&routing_hints(req.headers())),
            Err(e) => {
                tracing::debug!(error = %e, "not cached");
                return Decision::Bypass;
            }
        };
        let namespace: Arc<str> = match (&self.namespace, tenant) {
            (Some(ns), _) => ns.clone(),
            (None, Some(t)) => t.shared_id().clone(),
            (None, None) => Tenant::anonymous().shared_id().clone(),
        };
        Decision::Cache(Plan {
            key: canonical.key(namespace),
            canonical: canonical.bytes().clone(),
            read: !cc.no_cache,
            max_age: cc.max_age,
            ttl,
        })
    }

    /// Whether `entry` may answer `plan` now.
    fn usable(&self, entry: &CacheEntry, plan: &Plan) -> bool {
        let now = self.clock.now();
        entry.canonical() == &plan.canonical
            && entry.is_fresh(now)
            && plan.max_age.is_none_or(|m| entry.age(now) < m)
    }

    fn hit(&self, entry: &CacheEntry, req: &Request<Body>, chat: &ChatRequest) -> Response<Body> {
        if let Some(hooks) = req.extensions().get::<SettleHooks>() {
            hooks.settle_all(0);
        }
        Status::Hit.count(self);
        let (body, content_type) = if chat.is_stream() {
            (
                entry.sse(chat.wants_stream_usage()),
                HeaderValue::from_static("text/event-stream"),
            )
        } else {
            (
                entry.json().clone(),
                HeaderValue::from_static("application/json"),
            )
        };
        let mut resp = Response::new(Body::from_bytes(body));
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, content_type);
        if chat.is_stream() {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
        h.insert(X_RAMPART_CACHE, Status::Hit.header());
        h.insert(X_RAMPART_COST_USD, HeaderValue::from_static("0"));
        if let Some(m) = entry.model_header() {
            h.insert(X_RAMPART_MODEL, m.clone());
        }
        if let Some(p) = entry.provider_header() {
            h.insert(X_RAMPART_PROVIDER, p.clone());
        }
        if let Some(r) = entry.route_header() {
            h.insert(rampart_core::headers::X_RAMPART_ROUTE, r.clone());
        }
        h.insert(
            header::AGE,
            HeaderValue::from(entry.age(self.clock.now()).as_secs()),
        );
        resp
    }
}

impl<S> Service<Request<Body>> for Cache<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The readied service answers this request; the clone waits for the next one.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(handle(shared, inner, req))
    }
}

async fn handle<S>(
    shared: Arc<Shared>,
    mut inner: S,
    req: Request<Body>,
) -> Result<Response<Body>, BoxError>
where
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    S::Future: Send + 'static,
{
    let (req, chat) = match chat_request(&req).cloned() {
        Some(chat) => (req, chat),
        None => ensure_chat_request(req, shared.edge).await?,
    };
    let plan = match shared.decide(&req, &chat) {
        Decision::Bypass => {
            Status::Bypass.count(&shared);
            let mut resp = inner.call(req).await.map_err(Into::into)?;
            resp.headers_mut()
                .insert(X_RAMPART_CACHE, Status::Bypass.header());
            return Ok(resp);
        }
        Decision::Cache(plan) => plan,
    };

    let mut flight = None;
    // Answered without the store's shared state: said on the response, whatever it is.
    let mut degraded = false;
    if plan.read {
        match shared.store.get(&plan.key).await {
            Ok(lookup) => {
                degraded = lookup.degraded;
                match lookup.entry {
                    Some(entry) if shared.usable(&entry, &plan) => {
                        return Ok(mark(shared.hit(&entry, &req, &chat), degraded));
                    }
                    Some(entry) if !entry.is_fresh(shared.clock.now()) => {
                        let _ = shared.store.remove(&plan.key).await;
                    }
                    _ => {}
                }
            }
            Err(e) => {
                degraded = true;
                metrics::counter!("rampart_cache_store_errors_total").increment(1);
                if shared.store.error_policy() == StoreFailure::FailClosed {
                    tracing::debug!(error = %e, "cache store unavailable; bypassing (fail_closed)");
                    Status::Bypass.count(&shared);
                    let mut resp = inner.call(req).await.map_err(Into::into)?;
                    resp.headers_mut()
                        .insert(X_RAMPART_CACHE, Status::Bypass.header());
                    return Ok(mark(resp, true));
                }
                tracing::debug!(error = %e, "cache store unavailable; treating as a miss");
            }
        }
        if shared.single_flight {
            match shared.flights.join(&plan.key) {
                Join::Leader(guard) => flight = Some(guard),
                Join::Waiter(slot) => match flight::wait(slot, shared.flight_timeout).await {
                    Some(Outcome::Entry(entry))
                        if entry.canonical() == &plan.canonical
                            && plan
                                .max_age
                                .is_none_or(|m| entry.age(shared.clock.now()) < m) =>
                    {
                        return Ok(mark(shared.hit(&entry, &req, &chat), degraded));
                    }
                    // The leader's error is shared only within one tenant: in a shared
                    // namespace it may be another tenant's refusal (its budget, its limit) —
                    // then go upstream alone.
                    Some(Outcome::Error(reply)) if shared.namespace.is_none() => {
                        Status::Miss.count(&shared);
                        let mut resp = reply.response();
                        resp.headers_mut()
                            .insert(X_RAMPART_CACHE, Status::Miss.header());
                        return Ok(mark(resp, degraded));
                    }
                    // Timed out, the leader vanished, or a hash collision: go upstream alone.
                    _ => {}
                },
            }
        }
    }

    Status::Miss.count(&shared);
    let call = inner.call(req);
    let resp = flight::fill(
        call,
        Fill {
            shared: shared.clone(),
            key: plan.key,
            canonical: plan.canonical,
            ttl: plan.ttl,
            flight,
        },
    )
    .await?;
    Ok(mark(resp, degraded))
}

/// Adds `x-rampart-degraded: cache` when the cache answered without its shared state.
fn mark(mut resp: Response<Body>, degraded: bool) -> Response<Body> {
    if degraded {
        resp.headers_mut()
            .append(X_RAMPART_DEGRADED, HeaderValue::from_static("cache"));
    }
    resp
}

/// The request headers a router below reads to pick a model (DESIGN §4 request headers).
fn routing_hints(headers: &http::HeaderMap) -> [(&'static str, &str); 3] {
    use rampart_core::headers::{
        X_RAMPART_LATENCY_BUDGET_MS, X_RAMPART_MAX_PRICE, X_RAMPART_PRIORITY,
    };
    let get = |name: &http::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    [
        ("priority", get(&X_RAMPART_PRIORITY)),
        ("max-price", get(&X_RAMPART_MAX_PRICE)),
        ("latency-budget-ms", get(&X_RAMPART_LATENCY_BUDGET_MS)),
    ]
}
