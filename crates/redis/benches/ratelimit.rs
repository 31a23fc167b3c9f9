//! Rate-limit decision latency: the Redis store against a local redis-server vs the in-memory
//! store, in the same run.
fn main() {}
