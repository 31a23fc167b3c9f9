//! The behavioural suite every [`CacheStore`] must pass (feature `testing`): one suite, run
//! against the in-memory store here and against shared stores (Redis) in their own crates.
//!
//! Each case takes a fresh, empty store and panics on a failed expectation. Cases run on real
//! time (a shared store lives in another process), with waits of a few hundred milliseconds at
//! most. [`cache_store_suite!`](crate::cache_store_suite) expands to one `#[tokio::test]` per
//! case:
//!
//! ```ignore
//! async fn make() -> (Arc<dyn CacheStore>, ()) {
//!     (Arc::new(MemoryStore::new(1 << 20, Duration::from_secs(60))), ())
//! }
//! rampart_cache::cache_store_suite!(make);
//! ```
//!
//! The factory returns the store and a guard kept alive for the case (e.g. a test server).
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;
use rampart_core::openai::ChatCompletion;
use rampart_core::{Body, BoxError, Tenant};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

use crate::entry::CacheEntry;
use crate::key::CacheKey;
use crate::layer::CacheLayer;
use crate::store::CacheStore;

/// A complete JSON answer whose content is `text`.
pub fn answer(text: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "id": "chatcmpl-suite",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "m1",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        })
        .to_string(),
    )
}

/// An entry for the request `canonical`, answered with `text`, living `ttl` from now.
pub fn entry(canonical: &str, text: &str, ttl: Duration) -> Arc<CacheEntry> {
    let json = answer(text);
    let completion: ChatCompletion = serde_json::from_slice(&json).unwrap();
    Arc::new(
        CacheEntry::new(
            Bytes::from(canonical.to_owned()),
            completion,
            json,
            Instant::now(),
            ttl,
        )
        .with_served_by(
            Some(HeaderValue::from_static("m1")),
            Some(HeaderValue::from_static("sim")),
        )
        .with_route(Some(HeaderValue::from_static("explicit"))),
    )
}

/// A key in `namespace` for the request `canonical`.
pub fn key(namespace: &str, canonical: &str) -> CacheKey {
    CacheKey::new(namespace, *blake3::hash(canonical.as_bytes()).as_bytes())
}

async fn get(store: &dyn CacheStore, key: &CacheKey) -> Option<Arc<CacheEntry>> {
    let lookup = store.get(key).await.unwrap();
    assert!(
        !lookup.degraded,
        "a healthy store answers from its shared state"
    );
    lookup.entry
}

fn text(e: &CacheEntry) -> String {
    e.completion().choices[0].message.text().into_owned()
}

const MINUTE: Duration = Duration::from_secs(60);

/// A key never written is a miss; a written one returns the entry whole.
pub async fn put_then_get_returns_the_entry(store: Arc<dyn CacheStore>) {
    let store = &*store;
    let k = key("acme", "q1");
    assert!(get(store, &k).await.is_none());
    let e = entry("q1", "hello", MINUTE);
    store.put(k.clone(), e.clone()).await.unwrap();
    let got = get(store, &k).await.expect("the entry just written");
    assert_eq!(got.canonical(), e.canonical());
    assert_eq!(got.json(), e.json());
    assert_eq!(got.completion(), e.completion());
    assert_eq!(got.model_header(), e.model_header());
    assert_eq!(got.provider_header(), e.provider_header());
    assert_eq!(got.route_header(), e.route_header());
    assert_eq!(got.ttl(), e.ttl());
    let now = Instant::now();
    assert!(got.is_fresh(now));
    assert!(got.age(now) < Duration::from_secs(1), "{:?}", got.age(now));
    let drift = got.expires().max(e.expires()) - got.expires().min(e.expires());
    assert!(
        drift < Duration::from_millis(100),
        "expiry moved by {drift:?}"
    );
    // Another request in the same namespace is still a miss.
    assert!(get(store, &key("acme", "q2")).await.is_none());
}

/// A put replaces the entry under its key; a remove removes only that key.
pub async fn put_replaces_and_remove_removes(store: Arc<dyn CacheStore>) {
    let store = &*store;
    let (k1, k2) = (key("acme", "q1"), key("acme", "q2"));
    store
        .put(k1.clone(), entry("q1", "first", MINUTE))
        .await
        .unwrap();
    store
        .put(k1.clone(), entry("q1", "second", MINUTE))
        .await
        .unwrap();
    store
        .put(k2.clone(), entry("q2", "other", MINUTE))
        .await
        .unwrap();
    assert_eq!(text(&get(store, &k1).await.unwrap()), "second");
    store.remove(&k1).await.unwrap();
    assert!(get(store, &k1).await.is_none());
    assert_eq!(text(&get(store, &k2).await.unwrap()), "other");
    // Removing what is not there is fine.
    store.remove(&k1).await.unwrap();
}

/// The same request in different namespaces is different entries; purging a namespace leaves
/// the others, whatever their names look like.
pub async fn namespaces_are_isolated_and_purged_alone(store: Arc<dyn CacheStore>) {
    let store = &*store;
    let names = [
        "acme", "acme:", "acme}", "acme}:x", "{acme}", "acme*", "ac?me", "äcme", "", "default",
    ];
    for ns in names {
        store
            .put(key(ns, "q"), entry("q", &format!("for {ns}"), MINUTE))
            .await
            .unwrap();
    }
    for ns in names {
        let e = get(store, &key(ns, "q")).await.expect(ns);
        assert_eq!(text(&e), format!("for {ns}"));
    }
    store.purge_namespace("acme}").await.unwrap();
    store.purge_namespace("acme").await.unwrap();
    for ns in names {
        let gone = ns == "acme" || ns == "acme}";
        assert_eq!(
            get(store, &key(ns, "q")).await.is_none(),
            gone,
            "namespace {ns:?}"
        );
    }
    // Purging an unknown namespace is fine; a purged namespace takes new entries.
    store.purge_namespace("nobody").await.unwrap();
    store
        .put(key("acme", "q"), entry("q", "again", MINUTE))
        .await
        .unwrap();
    assert_eq!(text(&get(store, &key("acme", "q")).await.unwrap()), "again");
}

/// `purge_all` removes every entry of every namespace; the store keeps working after it.
pub async fn purge_all_removes_everything(store: Arc<dyn CacheStore>) {
    let store = &*store;
    for ns in ["a", "b", "c"] {
        for q in ["q1", "q2"] {
            store.put(key(ns, q), entry(q, "x", MINUTE)).await.unwrap();
        }
    }
    store.purge_all().await.unwrap();
    for ns in ["a", "b", "c"] {
        for q in ["q1", "q2"] {
            assert!(get(store, &key(ns, q)).await.is_none(), "{ns}/{q}");
        }
    }
    store
        .put(key("a", "q1"), entry("q1", "back", MINUTE))
        .await
        .unwrap();
    assert_eq!(text(&get(store, &key("a", "q1")).await.unwrap()), "back");
    store.purge_all().await.unwrap();
    store.purge_all().await.unwrap();
}

/// An entry read later is as old as the time since it was written, and expires when written.
pub async fn entries_keep_their_age_and_expire(store: Arc<dyn CacheStore>) {
    let store = &*store;
    let k = key("acme", "aged");
    store
        .put(k.clone(), entry("aged", "x", Duration::from_secs(30)))
        .await
        .unwrap();
    let short = key("acme", "short");
    store
        .put(
            short.clone(),
            entry("short", "x", Duration::from_millis(250)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let now = Instant::now();
    let e = get(store, &k).await.unwrap();
    let age = e.age(now);
    assert!(
        age >= Duration::from_millis(350) && age < Duration::from_secs(3),
        "age {age:?}"
    );
    assert!(e.is_fresh(now));
    let left = e.remaining(now);
    assert!(
        left <= Duration::from_millis(29_650) && left > Duration::from_secs(27),
        "left {left:?}"
    );
    // Expired: gone, or returned stale (the layer checks freshness on every read).
    if let Some(e) = get(store, &short).await {
        assert!(!e.is_fresh(Instant::now()), "served past its TTL");
    }
}

/// Through the layer: a filled answer is a hit for the next identical request (JSON and SSE),
/// carries its age, and a purge through the handle makes it a miss again.
pub async fn layer_serves_hits_from_the_store(store: Arc<dyn CacheStore>) {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let inner = tower::service_fn(move |_req: Request<Body>| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async {
            let mut resp = Response::new(Body::from(answer("from upstream")));
            resp.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            Ok::<_, BoxError>(resp)
        }
    });
    let layer = CacheLayer::builder()
        .ttl(MINUTE)
        .store(store.clone())
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(inner);
    let request = |stream: bool| {
        let body = format!(
            r#"{{"model":"m1","messages":[{{"role":"user","content":"suite"}}],"temperature":0,"stream":{stream}}}"#
        );
        let mut req = Request::post("/v1/chat/completions")
            .body(Body::from(body))
            .unwrap();
        req.extensions_mut().insert(Tenant::new("suite-tenant"));
        req
    };
    let first = svc.clone().oneshot(request(false)).await.unwrap();
    assert_eq!(first.headers()["x-rampart-cache"], "miss");
    assert!(first.headers().get("x-rampart-degraded").is_none());
    let _ = first.into_body().collect().await.unwrap();
    // The fill stores the answer once its body has ended: wait for it (bounded).
    let mut hit = None;
    for _ in 0..100 {
        let resp = svc.clone().oneshot(request(false)).await.unwrap();
        if resp.headers()["x-rampart-cache"] == "hit" {
            hit = Some(resp);
            break;
        }
        let _ = resp.into_body().collect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hit = hit.expect("the answer was stored");
    assert_eq!(hit.headers()["x-rampart-cost-usd"], "0");
    let age: u64 = hit.headers()["age"].to_str().unwrap().parse().unwrap();
    assert!(age <= 2, "age {age}");
    assert!(hit.headers().get("x-rampart-degraded").is_none());
    let body = hit.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, answer("from upstream"));
    let upstream_calls = calls.load(std::sync::atomic::Ordering::SeqCst);
    // The same question streamed: replayed as SSE from the same entry.
    let sse = svc.clone().oneshot(request(true)).await.unwrap();
    assert_eq!(sse.headers()["x-rampart-cache"], "hit");
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let body = sse.into_body().collect().await.unwrap().to_bytes();
    let body = std::str::from_utf8(&body).unwrap();
    assert!(body.contains("from upstream") && body.ends_with("data: [DONE]\n\n"));
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        upstream_calls
    );
    // Purged: a miss again.
    handle.purge_tenant("suite-tenant").await.unwrap();
    let again = svc.clone().oneshot(request(false)).await.unwrap();
    assert_eq!(again.headers()["x-rampart-cache"], "miss");
    let _ = again.into_body().collect().await.unwrap();
}

/// Expands to one `#[tokio::test]` per case of the suite; `$make` is an async function
/// returning `(Arc<dyn CacheStore>, guard)` — a fresh, empty store for each case.
#[macro_export]
macro_rules! cache_store_suite {
    ($make:path) => {
        $crate::cache_store_suite!(@cases $make;
            put_then_get_returns_the_entry,
            put_replaces_and_remove_removes,
            namespaces_are_isolated_and_purged_alone,
            purge_all_removes_everything,
            entries_keep_their_age_and_expire,
            layer_serves_hits_from_the_store,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = $make().await;
                $crate::testing::$case(store).await;
            }
        )*
    };
}
