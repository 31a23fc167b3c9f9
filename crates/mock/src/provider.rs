//! [`MockProvider`]: the shared state (config, faults, latency, counters) behind the service and
//! the server.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Bytes;
use http::HeaderMap;

use crate::answer::DEFAULT_OUTPUT_TOKENS;
use crate::config::{Fault, Latency, MockApi, MockConfig};
use crate::server::MockServer;
use crate::service::MockService;

/// Models `GET /v1/models` always lists (every model name is accepted, listed or not).
pub const DEFAULT_MODELS: [&str; 3] = ["mock-small", "mock-medium", "mock-large"];

/// At most this many distinct model names get their own counter (a guard against clients that
/// invent names); later ones still count in [`MockProvider::total_calls`].
const MAX_TRACKED_MODELS: usize = 10_000;

/// The simulated prompt cache forgets everything when it holds this many prefixes.
const MAX_CACHED_PREFIXES: usize = 10_000;

/// The headers and body of a chat request the mock received.
#[derive(Clone, Debug, Default)]
pub struct RecordedRequest {
    /// The request headers.
    pub headers: HeaderMap,
    /// The body bytes as received (or, for an in-process request carrying a parsed
    /// `Arc<ChatRequest>` extension, that request's [`to_bytes`](rampart_core::ChatRequest::to_bytes)).
    pub body: Bytes,
}

impl RecordedRequest {
    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// A simulated OpenAI-compatible provider.
///
/// Cheap to clone (an `Arc`); every clone, every [`MockService`] and every [`MockServer`] made
/// from it share the same faults, latency and counters, which can be changed at any time.
#[derive(Clone, Debug)]
pub struct MockProvider {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Faults {
    global: Option<Fault>,
    per_model: HashMap<String, Fault>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) output_tokens: u32,
    pub(crate) require_api_key: Option<String>,
    pub(crate) api: MockApi,
    /// Anthropic mode: prompt prefixes already written to the simulated prompt cache.
    prompt_cache: Mutex<HashSet<u64>>,
    latency: RwLock<Latency>,
    /// Whether any fault is set (skips the lock on the hot path).
    any_fault: AtomicBool,
    faults: RwLock<Faults>,
    calls: RwLock<HashMap<Box<str>, AtomicU64>>,
    total: AtomicU64,
    next_id: AtomicU64,
    last: Mutex<Option<RecordedRequest>>,
}

impl Inner {
    pub(crate) fn latency(&self) -> Latency {
        *self.latency.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fault that applies to this request of `model`, dice rolled.
    pub(crate) fn fault_for(&self, model: &str) -> Option<Fault> {
        if !self.any_fault.load(Ordering::Acquire) {
            return None;
        }
        let faults = self.faults.read().unwrap_or_else(PoisonError::into_inner);
        let fault = faults.per_model.get(model).or(faults.global.as_ref())?;
        (fault.is_active() && fault.fires()).then(|| fault.clone())
    }

    pub(crate) fn count(&self, model: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        {
            let calls = self.calls.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = calls.get(model) {
                c.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut calls = self.calls.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = calls.get(model) {
            c.fetch_add(1, Ordering::Relaxed);
        } else if calls.len() < MAX_TRACKED_MODELS {
            calls.insert(Box::from(model), AtomicU64::new(1));
        }
    }

    pub(crate) fn record(&self, headers: &HeaderMap, body: Bytes) {
        let rec = RecordedRequest {
            headers: headers.clone(),
            body,
        };
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(rec);
    }

    /// Whether the prompt prefix `key` is in the simulated prompt cache; remembers it if not.
    pub(crate) fn prompt_cache_hit(&self, key: u64) -> bool {
        let mut cache = self
            .prompt_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if cache.contains(&key) {
            return true;
        }
        if cache.len() >= MAX_CACHED_PREFIXES {
            cache.clear();
        }
        cache.insert(key);
        false
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Models seen so far plus [`DEFAULT_MODELS`], sorted, without duplicates.
    pub(crate) fn models(&self) -> Vec<String> {
        let calls = self.calls.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<String> = DEFAULT_MODELS
            .iter()
            .map(|m| (*m).to_owned())
            .chain(calls.keys().map(|k| k.to_string()))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

impl Default for MockProvider {
    fn default() -> Self {
        Self::new(MockConfig::default())
    }
}

impl MockProvider {
    /// A provider with `config`.
    pub fn new(config: MockConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                output_tokens: config.output_tokens.unwrap_or(DEFAULT_OUTPUT_TOKENS),
                require_api_key: config.require_api_key,
                api: config.api,
                prompt_cache: Mutex::new(HashSet::new()),
                latency: RwLock::new(config.latency),
                any_fault: AtomicBool::new(false),
                faults: RwLock::new(Faults::default()),
                calls: RwLock::new(HashMap::new()),
                total: AtomicU64::new(0),
                next_id: AtomicU64::new(0),
                last: Mutex::new(None),
            }),
        }
    }

    /// The in-process service:
    /// `Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError>`,
    /// `Clone + Send + Sync + 'static`.
    pub fn service(&self) -> MockService {
        MockService::new(self.inner.clone())
    }

    /// Binds `addr` (use `127.0.0.1:0` for any free port, or [`MockProvider::serve_local`]) and
    /// serves the same service over HTTP/1.1 (and h2c with prior knowledge) until the returned
    /// [`MockServer`] is dropped or shut down.
    pub async fn serve(&self, addr: std::net::SocketAddr) -> std::io::Result<MockServer> {
        MockServer::start(self.service(), addr).await
    }

    /// [`serve`](MockProvider::serve) on `127.0.0.1:0`.
    pub async fn serve_local(&self) -> std::io::Result<MockServer> {
        self.serve(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
    }

    /// Injects `fault` for `model` (`None` = every model). A model's own fault wins over the
    /// global one (even when its dice say it does not fire this time). Replaces any previous
    /// fault of the same scope.
    pub fn set_fault(&self, model: Option<&str>, fault: Fault) {
        let mut faults = self
            .inner
            .faults
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match model {
            Some(m) => {
                faults.per_model.insert(m.to_owned(), fault);
            }
            None => faults.global = Some(fault),
        }
        self.inner.any_fault.store(true, Ordering::Release);
    }

    /// Removes the fault of one scope (`None` = the global fault).
    pub fn clear_fault(&self, model: Option<&str>) {
        let mut faults = self
            .inner
            .faults
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match model {
            Some(m) => {
                faults.per_model.remove(m);
            }
            None => faults.global = None,
        }
        let any = faults.global.is_some() || !faults.per_model.is_empty();
        self.inner.any_fault.store(any, Ordering::Release);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        let mut faults = self
            .inner
            .faults
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *faults = Faults::default();
        self.inner.any_fault.store(false, Ordering::Release);
    }

    /// Changes the simulated latency for requests that arrive from now on.
    pub fn set_latency(&self, latency: Latency) {
        *self
            .inner
            .latency
            .write()
            .unwrap_or_else(PoisonError::into_inner) = latency;
    }

    /// The current simulated latency.
    pub fn latency(&self) -> Latency {
        self.inner.latency()
    }

    /// Chat requests received for `model` (counted once the body parsed, before authentication
    /// and before any fault is applied).
    pub fn calls(&self, model: &str) -> u64 {
        self.inner
            .calls
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(model)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Chat requests received for every model.
    pub fn total_calls(&self) -> u64 {
        self.inner.total.load(Ordering::Relaxed)
    }

    /// The headers and body of the last chat request (recorded before parsing, so also for
    /// requests answered with a 400).
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.inner
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets every counter to zero and forgets the last request. Models already seen stay listed
    /// by `GET /v1/models`.
    pub fn reset_counters(&self) {
        let calls = self
            .inner
            .calls
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        for c in calls.values() {
            c.store(0, Ordering::Relaxed);
        }
        self.inner.total.store(0, Ordering::Relaxed);
        *self
            .inner
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}
