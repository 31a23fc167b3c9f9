//! [`RedisCacheStore`]: the response cache shared by every gateway replica.

/// Configuration of the Redis cache store.
#[derive(Debug, Clone, Default)]
pub struct RedisCacheConfig;

/// Cache entries in Redis.
#[derive(Debug, Clone)]
pub struct RedisCacheStore;
