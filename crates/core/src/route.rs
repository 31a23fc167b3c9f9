//! The routing decision a router hands to a fallback: ordered candidates and the reason.
//!
//! A router (`CostRouterLayer`) puts a [`RouteDecision`] in the request extensions; a fallback
//! (`FallbackLayer`) tries its candidates in order, setting the [`Target`] extension for each
//! attempt so the per-target layers (rate limit, circuit breaker) and the upstream see the
//! candidate being tried. Either layer works without the other: without a decision a fallback
//! uses its own static chains; without a fallback the first candidate is the target.

use std::sync::Arc;

use crate::facts::Target;

/// One target a request may be served by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// Provider and model (the catalog alias).
    pub target: Target,
    /// Context window in tokens, when known: a fallback that moves on `context_length_exceeded`
    /// only moves to a candidate with a larger one.
    pub context_window: Option<u64>,
}

impl Candidate {
    /// A candidate without a known context window.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            context_window: None,
        }
    }

    /// With a context window.
    pub fn with_context_window(mut self, tokens: u64) -> Self {
        self.context_window = Some(tokens);
        self
    }
}

/// The router's decision for one request (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDecision {
    /// Candidates, best first. Never empty.
    pub candidates: Arc<[Candidate]>,
    /// Why: the `x-rampart-route` value (`explicit`, `auto:<tier>:<strategy>`,
    /// `group:<name>:<tier>:<strategy>`, with `;downgraded=budget` when a budget forced it).
    pub route: Arc<str>,
}

impl RouteDecision {
    /// A decision; `None` when `candidates` is empty.
    pub fn new(candidates: Vec<Candidate>, route: impl Into<Arc<str>>) -> Option<Self> {
        (!candidates.is_empty()).then(|| Self {
            candidates: candidates.into(),
            route: route.into(),
        })
    }

    /// The first candidate.
    pub fn primary(&self) -> Option<&Candidate> {
        self.candidates.first()
    }
}
