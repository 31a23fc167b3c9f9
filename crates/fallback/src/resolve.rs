//! [`Resolver`]: turns a model name into a [`Candidate`] (provider, model, context window).

use rampart_core::Candidate;

/// Resolves a model alias to the [`Candidate`] serving it; the gateway passes its catalog.
/// Closures `Fn(&str) -> Option<Candidate>` are resolvers.
///
/// Used for the requested model and every model of a static chain when the request carries no
/// [`RouteDecision`](rampart_core::RouteDecision). A model the resolver does not know is still
/// tried, without a [`Target`](rampart_core::Target) extension: the inner service resolves the
/// alias itself (the upstream by its model table) or reports its own error (e.g. `404`).
///
/// ```
/// use rampart_core::{Candidate, Target};
/// use rampart_fallback::FallbackLayer;
///
/// let layer = FallbackLayer::default().resolver(|model: &str| match model {
///     "gpt-4.1" => Some(Candidate::new(Target::new("openai", "gpt-4.1")).with_context_window(128_000)),
///     "claude-sonnet-4.5" => Some(Candidate::new(Target::new("anthropic", "claude-sonnet-4.5"))),
///     _ => None,
/// });
/// # let _ = layer;
/// ```
pub trait Resolver: Send + Sync + 'static {
    /// The candidate serving `model`, if known.
    fn resolve(&self, model: &str) -> Option<Candidate>;
}

impl<F> Resolver for F
where
    F: Fn(&str) -> Option<Candidate> + Send + Sync + 'static,
{
    fn resolve(&self, model: &str) -> Option<Candidate> {
        self(model)
    }
}

/// The default resolver: knows no model (every candidate is tried without a target).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoResolver;

impl Resolver for NoResolver {
    fn resolve(&self, _model: &str) -> Option<Candidate> {
        None
    }
}
