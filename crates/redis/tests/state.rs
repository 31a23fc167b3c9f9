#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The shared connection: timeouts, the breaker, and recovery, against a real redis-server.

use std::time::Duration;

use rampart_redis::testing::RedisServer;
use rampart_redis::{RedisConfig, RedisState};
use tokio::time::Instant;

fn config(url: String) -> RedisConfig {
    RedisConfig {
        redis_url: url,
        timeout: Duration::from_millis(100),
        breaker_failures: 2,
        breaker_cooldown: Duration::from_millis(300),
        key_prefix: "t".to_owned(),
    }
}

async fn ping(state: &RedisState) -> Result<String, rampart_redis::Unavailable> {
    state
        .call(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
        .await
}

#[tokio::test]
async fn paused_redis_costs_at_most_the_timeout_then_the_breaker_fails_fast_and_recovers() {
    let server = RedisServer::start().await.unwrap();
    let state = RedisState::new(config(server.url())).unwrap();
    assert_eq!(ping(&state).await.unwrap(), "PONG");
    assert!(state.is_up());

    server.pause().unwrap();
    for _ in 0..2 {
        let t = Instant::now();
        assert!(ping(&state).await.is_err());
        let took = t.elapsed();
        assert!(took < Duration::from_millis(400), "call took {took:?}");
    }
    assert!(!state.is_up(), "two failures open the breaker");
    // Open: fails without touching Redis.
    let t = Instant::now();
    let err = ping(&state).await.unwrap_err();
    assert!(t.elapsed() < Duration::from_millis(20));
    assert_eq!(err.0, "breaker open");

    server.resume().unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    // The probe goes through and closes the breaker.
    let mut ok = false;
    for _ in 0..20 {
        if ping(&state).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "recovered after resume");
    assert!(state.is_up());
}

#[tokio::test]
async fn killed_redis_fails_fast_and_a_restart_is_picked_up() {
    let mut server = RedisServer::start().await.unwrap();
    let state = RedisState::new(config(server.url())).unwrap();
    assert!(ping(&state).await.is_ok());
    server.kill().unwrap();
    let t = Instant::now();
    assert!(ping(&state).await.is_err());
    assert!(ping(&state).await.is_err());
    assert!(t.elapsed() < Duration::from_millis(500));
    assert!(!state.is_up());
    server.restart().await.unwrap();
    let mut ok = false;
    for _ in 0..30 {
        if ping(&state).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "reconnected after restart");
    assert!(state.is_up());
}

#[tokio::test]
async fn starts_while_redis_is_down_and_rejects_bad_config() {
    let state = RedisState::new(config("redis://127.0.0.1:1/".to_owned())).unwrap();
    assert!(ping(&state).await.is_err());
    let err = RedisState::new(config("http://user:s3cret@host/".to_owned())).unwrap_err();
    assert!(!err.to_string().contains("s3cret"), "{err}");
    let mut bad = config("redis://127.0.0.1:1/".to_owned());
    bad.key_prefix = "a b".to_owned();
    assert!(RedisState::new(bad).is_err());
}
