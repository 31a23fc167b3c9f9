//! What a store does while Redis is unavailable: [`OutagePolicy`].

use serde::Deserialize;

/// A store's behaviour while Redis is unavailable (down, too slow, or its breaker open).
/// Explicit per store in the configuration; recovery is automatic when Redis answers again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutagePolicy {
    /// Serve from a per-replica in-memory store: limits at a configured fraction of their
    /// configured values (each replica enforces its share), budgets and cache entries local to
    /// the replica. The default for rate limits.
    #[default]
    LocalFallback,
    /// Admit (limits, budgets) or miss (cache), marking the response degraded.
    FailOpen,
    /// Refuse with 503 `store_unavailable` (limits, budgets) or bypass (cache).
    FailClosed,
}

impl OutagePolicy {
    /// `local_fallback`, `fail_open` or `fail_closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LocalFallback => "local_fallback",
            Self::FailOpen => "fail_open",
            Self::FailClosed => "fail_closed",
        }
    }
}
