//! The shared Redis connection every store uses: [`RedisState`].
//!
//! One multiplexed connection ([`redis::aio::ConnectionManager`], reconnecting in the background)
//! serves every store of a process. Each call runs under a short timeout and behind a small
//! circuit breaker of its own, so a slow or dead Redis costs a request at most the timeout, and
//! nothing at all while the breaker is open: calls then fail at once with
//! [`Unavailable`] and each store applies its [`OutagePolicy`](crate::OutagePolicy).
//!
//! The state is never silent: the gauge `rampart_redis_up` (1 healthy, 0 unavailable), the
//! gauge `rampart_store_degraded{store}` (1 while a registered store is serving without Redis),
//! the counter `rampart_redis_errors_total{reason}`, and one log line per transition.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Client, RedisError};
use serde::Deserialize;
use tokio::time::Instant;

/// How to reach Redis and how hard to try (`[state]` in the gateway's config).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db` (or `rediss://` for TLS when the client supports it).
    pub redis_url: String,
    /// Deadline of one Redis call, connection included. Default 50 ms.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failed calls that open the breaker. Default 3.
    pub breaker_failures: u32,
    /// How long the breaker stays open before one probe call is let through. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
    /// Prefix of every key; the schema version follows it (`rampart:v1:...`). Default `rampart`.
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            timeout: Duration::from_millis(50),
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(1),
            key_prefix: "rampart".to_owned(),
        }
    }
}

/// The version of the key schema; bumped when a stored layout changes, so that replicas of
/// different versions never read each other's entries.
pub const SCHEMA_VERSION: &str = "v1";

/// Redis could not answer in time (down, slow, breaker open, or a protocol error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("redis unavailable: {0}")]
pub struct Unavailable(pub Cow<'static, str>);

impl Unavailable {
    /// The reason given while the breaker is open.
    pub const BREAKER_OPEN: &'static str = "breaker open";

    /// Whether the call was refused before anything was sent to Redis (the breaker was open):
    /// a write that failed this way cannot have landed.
    pub fn never_sent(&self) -> bool {
        self.0 == Self::BREAKER_OPEN
    }
}

/// A configuration error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state: {0}")]
pub struct ConfigError(pub String);

/// The breaker while open (while closed, `Inner::up` is true and `Inner::failures` counts).
#[derive(Debug)]
enum Health {
    /// Calls go through.
    Closed,
    /// Calls fail at once until `until`; then one probe goes through.
    Open { until: Instant },
    /// One probe call is in flight; others fail at once.
    Probing,
}

struct Inner {
    conn: ConnectionManager,
    config: RedisConfig,
    health: Mutex<Health>,
    /// Mirror of "the breaker is closed", read without the lock on the hot path.
    up: AtomicBool,
    /// Consecutive failures while closed.
    failures: AtomicU32,
    stores: Mutex<Vec<&'static str>>,
}

/// A handle on the shared Redis connection; cheap to clone.
#[derive(Clone)]
pub struct RedisState {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisState")
            .field("key_prefix", &self.inner.config.key_prefix)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl RedisState {
    /// A state for `config`. Does not connect: the connection is made on first use and remade
    /// in the background after a failure, so a gateway starts while Redis is down (its stores
    /// then serve under their outage policies). Must be called inside a Tokio runtime.
    pub fn new(config: RedisConfig) -> Result<Self, ConfigError> {
        if config.timeout.is_zero() {
            return Err(ConfigError("timeout must be greater than zero".to_owned()));
        }
        if config.breaker_failures == 0 {
            return Err(ConfigError(
                "breaker_failures must be at least 1".to_owned(),
            ));
        }
        if config.key_prefix.is_empty()
            || !config
                .key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ConfigError(
                "key_prefix must be non-empty ASCII letters, digits, '_' or '-'".to_owned(),
            ));
        }
        let client = Client::open(config.redis_url.as_str())
            // The URL may carry a password: never echo it.
            .map_err(|e| {
                ConfigError(format!(
                    "redis_url: not a valid Redis URL ({})",
                    e.kind_name()
                ))
            })?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| ConfigError(format!("redis connection: {}", e.kind_name())))?;
        metrics::gauge!("rampart_redis_up").set(1.0);
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                config,
                health: Mutex::new(Health::Closed),
                up: AtomicBool::new(true),
                failures: AtomicU32::new(0),
                stores: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// `"<prefix>:v1"`: the start of every key.
    pub fn key_base(&self) -> String {
        format!("{}:{SCHEMA_VERSION}", self.inner.config.key_prefix)
    }

    /// Whether the breaker is closed (Redis believed reachable).
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    /// Registers a store by name, for the `rampart_store_degraded{store}` gauge: it reads 1 for
    /// every registered store while Redis is unavailable.
    pub fn register_store(&self, name: &'static str) {
        let mut stores = self
            .inner
            .stores
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !stores.contains(&name) {
            stores.push(name);
        }
        let degraded = if self.is_up() { 0.0 } else { 1.0 };
        metrics::gauge!("rampart_store_degraded", "store" => name).set(degraded);
    }

    /// Runs one Redis call `f` on the shared connection under the timeout and the breaker.
    ///
    /// Fails at once with [`Unavailable`] while the breaker is open. A call that errors or
    /// times out counts as a failure; `breaker_failures` in a row open the breaker for
    /// `breaker_cooldown`, after which one probe call decides whether it closes again.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        self.admit()?;
        let conn = self.inner.conn.clone();
        let result = match tokio::time::timeout(self.inner.config.timeout, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err("timeout"),
        };
        match result {
            Ok(v) => {
                self.on_success();
                Ok(v)
            }
            Err(reason) => {
                metrics::counter!("rampart_redis_errors_total", "reason" => reason).increment(1);
                self.on_failure(reason);
                Err(Unavailable(Cow::Borrowed(reason)))
            }
        }
    }

    /// Whether a call may go out now (and, when the cooldown is over, turns this call into the
    /// probe).
    fn admit(&self) -> Result<(), Unavailable> {
        if self.is_up() {
            return Ok(());
        }
        let mut health = self
            .inner
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match *health {
            Health::Closed => Ok(()),
            Health::Open { until } if Instant::now() >= until => {
                *health = Health::Probing;
                Ok(())
            }
            Health::Open { .. } | Health::Probing => {
                Err(Unavailable(Cow::Borrowed(Unavailable::BREAKER_OPEN)))
            }
        }
    }

    fn on_success(&self) {
        if self.is_up() {
            if self.inner.failures.load(Ordering::Relaxed) != 0 {
                self.inner.failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        let mut health = self
            .inner
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *health = Health::Closed;
        self.inner.failures.store(0, Ordering::Relaxed);
        drop(health);
        self.set_up(true, "probe succeeded");
    }

    fn on_failure(&self, reason: &'static str) {
        let until = Instant::now() + self.inner.config.breaker_cooldown;
        let mut health = self
            .inner
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let opened = match *health {
            Health::Closed => {
                let failures = self.inner.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failures >= self.inner.config.breaker_failures {
                    *health = Health::Open { until };
                    true
                } else {
                    false
                }
            }
            Health::Probing | Health::Open { .. } => {
                *health = Health::Open { until };
                false
            }
        };
        drop(health);
        if opened {
            self.set_up(false, reason);
        }
    }

    fn set_up(&self, up: bool, reason: &str) {
        if self.inner.up.swap(up, Ordering::AcqRel) == up {
            return;
        }
        let stores = self
            .inner
            .stores
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        metrics::gauge!("rampart_redis_up").set(if up { 1.0 } else { 0.0 });
        for store in &stores {
            metrics::gauge!("rampart_store_degraded", "store" => *store).set(if up {
                0.0
            } else {
                1.0
            });
        }
        if up {
            tracing::warn!(stores = ?stores, "redis available again; shared state restored");
        } else {
            tracing::error!(
                stores = ?stores,
                reason,
                cooldown = ?self.inner.config.breaker_cooldown,
                "redis unavailable; stores serve under their outage policy"
            );
        }
    }
}

/// A bounded label for a Redis error (never the message: it may echo a key or a URL).
fn describe(e: &RedisError) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connection_dropped() || e.is_io_error() {
        "connection"
    } else {
        "error"
    }
}

/// A short, secret-free name for a client-side error kind.
trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for RedisError {
    fn kind_name(&self) -> String {
        format!("{:?}", self.kind())
    }
}
