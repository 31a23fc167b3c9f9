//! Time for layers: a [`Clock`] trait over `tokio::time::Instant`, so tests run on paused time.

use tokio::time::Instant;

/// A source of the current instant. Closures `Fn() -> Instant` are clocks.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Instant;
}

/// Tokio's clock (pausable in tests with `tokio::time::pause`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

impl<F> Clock for F
where
    F: Fn() -> Instant + Send + Sync + 'static,
{
    fn now(&self) -> Instant {
        self()
    }
}
