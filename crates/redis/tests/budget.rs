#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Redis budget store beyond the shared suite: replicas sharing one budget (never
//! overshooting it), idempotent settles across replicas, reservations of a dead replica
//! expiring, and the key layout (hash tag, hashed scope names, a TTL on every key).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use rampart_cost_router::{
    BudgetStore, Periods, ReservationId, ReserveOutcome, ScopeLimit, ScopeSpend,
};
use rampart_redis::testing::RedisServer;
use rampart_redis::{RedisBudgetConfig, RedisBudgetStore, RedisConfig, RedisState};

/// 2024-01-31T12:00:00Z.
const JAN_31: u64 = 1_706_702_400;

fn at() -> Periods {
    Periods::at(UNIX_EPOCH + Duration::from_secs(JAN_31))
}

fn replica(server: &RedisServer, config: RedisBudgetConfig) -> Arc<RedisBudgetStore> {
    let state = RedisState::new(RedisConfig {
        redis_url: server.url(),
        timeout: Duration::from_secs(2),
        ..RedisConfig::default()
    })
    .unwrap();
    Arc::new(RedisBudgetStore::new(state, config).unwrap())
}

fn limits(limit: u64) -> Vec<ScopeLimit> {
    vec![
        ScopeLimit {
            scope: "tenant:acme".into(),
            daily: Some(limit),
            monthly: None,
        },
        ScopeLimit {
            scope: "global".into(),
            daily: None,
            monthly: Some(limit * 10),
        },
    ]
}

fn scopes() -> Vec<Arc<str>> {
    vec!["tenant:acme".into(), "global".into()]
}

async fn spend(store: &RedisBudgetStore, scope: &str) -> ScopeSpend {
    store.spend(scope, at()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_overshoot_the_budget() {
    let server = RedisServer::start().await.unwrap();
    let replicas = [
        replica(&server, RedisBudgetConfig::default()),
        replica(&server, RedisBudgetConfig::default()),
    ];
    let limit = 50_000;
    let max_reserved = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let store = replicas[(t % 2) as usize].clone();
        let watcher = replicas[((t + 1) % 2) as usize].clone();
        let max_reserved = max_reserved.clone();
        tasks.push(tokio::spawn(async move {
            let mut spent = 0;
            let mut admitted = 0;
            for i in 0..40u64 {
                let estimate = 200 + (t * 31 + i * 17) % 800;
                let id = ReservationId::random();
                let reply = store
                    .reserve(id, &limits(limit), estimate, at())
                    .await
                    .unwrap();
                assert!(!reply.degraded);
                if reply.outcome != ReserveOutcome::Reserved {
                    continue;
                }
                admitted += 1;
                // Seen from the other replica while this one holds its reservation: spent +
                // reserved never passes the limit.
                let s = spend(&watcher, "tenant:acme").await;
                assert!(s.day_spent + s.day_reserved <= limit, "{s:?}");
                max_reserved.fetch_max(s.day_reserved, Ordering::SeqCst);
                // The real cost is at most the estimate.
                let actual = estimate - (i % 3) * 50;
                store.settle(id, &scopes(), at(), actual).await.unwrap();
                spent += actual;
            }
            (spent, admitted)
        }));
    }
    let (mut spent, mut admitted) = (0, 0);
    for t in tasks {
        let (s, a) = t.await.unwrap();
        spent += s;
        admitted += a;
    }
    let a = spend(&replicas[0], "tenant:acme").await;
    assert_eq!(a.day_spent, spent, "every settle counted once");
    assert_eq!(a.day_reserved, 0, "every reservation settled");
    assert!(spent <= limit, "{spent} > {limit}");
    assert!(spent > limit - 1000, "{spent}: the budget was not used up");
    assert!(admitted < 16 * 40, "some reservations were refused");
    assert!(
        max_reserved.load(Ordering::SeqCst) > 0,
        "reservations were in flight concurrently"
    );
    let g = spend(&replicas[1], "global").await;
    assert_eq!((g.month_spent, g.month_reserved), (spent, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overshoot_is_bounded_by_what_the_reservations_in_flight_underestimated() {
    let server = RedisServer::start().await.unwrap();
    let (a, b) = (
        replica(&server, RedisBudgetConfig::default()),
        replica(&server, RedisBudgetConfig::default()),
    );
    let limit = 10_000;
    // Ten requests estimated at 1000 each fill the budget exactly, five from each replica, all
    // in flight together; an eleventh is refused on either replica.
    let mut held = Vec::new();
    for i in 0..10 {
        let store = if i % 2 == 0 { &a } else { &b };
        let id = ReservationId::random();
        let reply = store.reserve(id, &limits(limit), 1000, at()).await.unwrap();
        assert_eq!(reply.outcome, ReserveOutcome::Reserved);
        held.push((store.clone(), id));
    }
    for store in [&a, &b] {
        let reply = store
            .reserve(ReservationId::random(), &limits(limit), 1, at())
            .await
            .unwrap();
        assert!(matches!(
            reply.outcome,
            ReserveOutcome::Refused { remaining: 0, .. }
        ));
    }
    // Each costs 1100: the overshoot is exactly what the ten in flight underestimated.
    for (store, id) in held {
        store.settle(id, &scopes(), at(), 1100).await.unwrap();
    }
    let s = spend(&a, "tenant:acme").await;
    assert_eq!((s.day_spent, s.day_reserved), (11_000, 0));
}

#[tokio::test]
async fn settles_are_idempotent_across_replicas() {
    let server = RedisServer::start().await.unwrap();
    let (a, b) = (
        replica(&server, RedisBudgetConfig::default()),
        replica(&server, RedisBudgetConfig::default()),
    );
    let id = ReservationId::random();
    let reply = a.reserve(id, &limits(10_000), 500, at()).await.unwrap();
    assert_eq!(reply.outcome, ReserveOutcome::Reserved);
    // A retried reserve of the same id (from any replica) holds nothing more.
    b.reserve(id, &limits(10_000), 500, at()).await.unwrap();
    assert_eq!(spend(&b, "tenant:acme").await.day_reserved, 500);
    a.settle(id, &scopes(), at(), 400).await.unwrap();
    let once = spend(&b, "tenant:acme").await;
    assert_eq!((once.day_spent, once.day_reserved), (400, 0));
    // The same settle again — a retry, from either replica, with any amount — changes nothing;
    // nor does a reserve of a settled id.
    b.settle(id, &scopes(), at(), 400).await.unwrap();
    a.settle(id, &scopes(), at(), 9_999).await.unwrap();
    b.reserve(id, &limits(10_000), 500, at()).await.unwrap();
    assert_eq!(spend(&a, "tenant:acme").await, once);
    assert_eq!(spend(&a, "global").await.month_spent, 400);
}

#[tokio::test]
async fn a_dead_replicas_reservations_expire() {
    let server = RedisServer::start().await.unwrap();
    let short = RedisBudgetConfig {
        reservation_ttl: Duration::from_secs(1),
        ..RedisBudgetConfig::default()
    };
    let survivor = replica(&server, RedisBudgetConfig::default());
    let id = {
        // A replica reserves most of the budget, then dies without settling.
        let doomed = replica(&server, short);
        let id = ReservationId::random();
        let reply = doomed.reserve(id, &limits(1000), 900, at()).await.unwrap();
        assert_eq!(reply.outcome, ReserveOutcome::Reserved);
        id
    };
    let reply = survivor
        .reserve(ReservationId::random(), &limits(1000), 200, at())
        .await
        .unwrap();
    assert!(matches!(
        reply.outcome,
        ReserveOutcome::Refused { remaining: 100, .. }
    ));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Expired on Redis time: released by the next script that touches the scope.
    let s = spend(&survivor, "tenant:acme").await;
    assert_eq!((s.day_spent, s.day_reserved), (0, 0));
    assert_eq!(spend(&survivor, "global").await.month_reserved, 0);
    let keep = ReservationId::random();
    let reply = survivor
        .reserve(keep, &limits(1000), 1000, at())
        .await
        .unwrap();
    assert_eq!(reply.outcome, ReserveOutcome::Reserved);
    // A settle that arrives after its reservation expired still counts its cost, once.
    survivor.settle(id, &scopes(), at(), 50).await.unwrap();
    survivor.settle(id, &scopes(), at(), 50).await.unwrap();
    let s = spend(&survivor, "tenant:acme").await;
    assert_eq!((s.day_spent, s.day_reserved), (50, 1000));
}

#[tokio::test]
async fn keys_share_one_hash_tag_hide_scope_names_and_all_expire() {
    let server = RedisServer::start().await.unwrap();
    let store = replica(&server, RedisBudgetConfig::default());
    let id = ReservationId::random();
    let tricky = vec![
        ScopeLimit {
            scope: "tenant:evil}:{x".into(),
            daily: Some(1000),
            monthly: Some(5000),
        },
        ScopeLimit {
            scope: "global".into(),
            daily: Some(10_000),
            monthly: None,
        },
    ];
    store.reserve(id, &tricky, 10, at()).await.unwrap();
    let open = ReservationId::random();
    store.reserve(open, &tricky, 10, at()).await.unwrap();
    store
        .settle(id, &["tenant:evil}:{x".into(), "global".into()], at(), 5)
        .await
        .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Two scopes × (hash + expiry set) + one tombstone.
    assert_eq!(keys.len(), 5, "{keys:?}");
    for k in &keys {
        assert!(k.starts_with("rampart:v1:budget:{budget}:"), "{k}");
        assert!(!k.contains("evil") && !k.contains("global"), "{k}");
        assert_eq!(k.matches('{').count(), 1, "{k}");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(k)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{k} has no TTL ({ttl})");
    }
}

#[tokio::test]
async fn a_reserve_lost_in_an_outage_is_cancelled_without_blocking_its_id() {
    let server = RedisServer::start().await.unwrap();
    let state = RedisState::new(RedisConfig {
        redis_url: server.url(),
        timeout: Duration::from_millis(100),
        breaker_failures: 5,
        breaker_cooldown: Duration::from_millis(200),
        ..RedisConfig::default()
    })
    .unwrap();
    // No local share: every reservation made while Redis is away is refused locally.
    let config = RedisBudgetConfig {
        local_fraction: 0.0,
        ..RedisBudgetConfig::default()
    };
    let store = RedisBudgetStore::new(state, config).unwrap();
    assert_eq!(
        store.spend("tenant:acme", at()).await.unwrap(),
        ScopeSpend::default()
    );
    server.pause().unwrap();
    let id = ReservationId::random();
    let reply = store.reserve(id, &limits(10_000), 500, at()).await.unwrap();
    assert!(reply.degraded);
    assert!(matches!(reply.outcome, ReserveOutcome::Refused { .. }));
    // The reserve may still run when Redis wakes up: a cancel is queued for it.
    assert_eq!(store.pending_settles(), 1);
    server.resume().unwrap();
    let mut drained = false;
    for _ in 0..100 {
        if store.pending_settles() == 0 {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(drained, "the cancel was sent");
    let s = spend(&store, "tenant:acme").await;
    assert_eq!(
        (s.day_spent, s.day_reserved),
        (0, 0),
        "the late reserve was released"
    );
    // The same id can still be reserved and settled for real (a downgrade retries its id).
    let reply = store.reserve(id, &limits(10_000), 300, at()).await.unwrap();
    assert_eq!(reply.outcome, ReserveOutcome::Reserved);
    store.settle(id, &scopes(), at(), 300).await.unwrap();
    let s = spend(&store, "tenant:acme").await;
    assert_eq!((s.day_spent, s.day_reserved), (300, 0));
}
