//! The model catalog: per model its provider, prices, context window, tier and capabilities.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use rampart_core::{Price, Target};
use serde::Deserialize;

/// How demanding a request is, and which models are meant for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Short factual questions, chit-chat, simple rewrites.
    Simple,
    /// Code, creative writing, one reasoning step, medium-length prompts.
    Medium,
    /// Multi-step reasoning, code plus reasoning, long prompts.
    Complex,
}

impl Tier {
    /// Every tier, weakest first.
    pub const ALL: [Tier; 3] = [Tier::Simple, Tier::Medium, Tier::Complex];

    /// `simple`, `medium` or `complex`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Simple => "simple",
            Tier::Medium => "medium",
            Tier::Complex => "complex",
        }
    }

    /// Parses `simple`, `medium` or `complex` (ASCII case-insensitive).
    pub fn parse(s: &str) -> Option<Tier> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// 0, 1, 2.
    pub(crate) fn rank(self) -> i32 {
        match self {
            Tier::Simple => 0,
            Tier::Medium => 1,
            Tier::Complex => 2,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One model of the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Provider and model (the name clients use).
    pub target: Target,
    /// USD per million input, cached-input and output tokens.
    pub price: Price,
    /// Context window in tokens (prompt + output).
    pub context_window: u64,
    /// The tier the model serves.
    pub tier: Tier,
    /// What it supports: `tools`, `vision`, `json_mode`, ...
    pub capabilities: BTreeSet<String>,
}

impl ModelInfo {
    /// A model without capabilities.
    pub fn new(provider: &str, model: &str, price: Price, context_window: u64, tier: Tier) -> Self {
        Self {
            target: Target::new(provider, model),
            price,
            context_window,
            tier,
            capabilities: BTreeSet::new(),
        }
    }

    /// With these capabilities.
    pub fn with_capabilities<'a>(mut self, caps: impl IntoIterator<Item = &'a str>) -> Self {
        self.capabilities = caps.into_iter().map(str::to_owned).collect();
        self
    }

    /// The model name.
    pub fn name(&self) -> &str {
        &self.target.model
    }

    /// The provider name.
    pub fn provider(&self) -> &str {
        &self.target.provider
    }

    /// The price the `cheapest` strategy compares: input + output, USD per million tokens.
    pub fn blended_price(&self) -> f64 {
        self.price.input + self.price.output
    }

    /// Whether the model has capability `cap`.
    pub fn supports(&self, cap: &str) -> bool {
        self.capabilities.contains(cap)
    }
}

/// The models a router knows, in insertion order, indexed by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    models: Vec<ModelInfo>,
    index: HashMap<Arc<str>, usize>,
}

fn price(input: f64, cached_input: f64, output: f64) -> Price {
    Price {
        input,
        cached_input: Some(cached_input),
        output,
    }
}

impl Default for Catalog {
    /// DESIGN §5's catalog: `deepseek-v3.2` (provider `deepseek`), `gemini-2.5-flash`
    /// (`gemini`), `gpt-4.1` (`openai`), `claude-sonnet-4.5` (`anthropic`). Rename the providers
    /// with [`Catalog::rename_provider`] (or config `providers = { openai = "openai-sim" }`).
    fn default() -> Self {
        let mut c = Catalog::empty();
        c.insert(
            ModelInfo::new(
                "deepseek",
                "deepseek-v3.2",
                price(0.28, 0.028, 0.42),
                128_000,
                Tier::Simple,
            )
            .with_capabilities(["tools", "json_mode"]),
        );
        c.insert(
            ModelInfo::new(
                "gemini",
                "gemini-2.5-flash",
                price(0.30, 0.075, 2.50),
                1_000_000,
                Tier::Medium,
            )
            .with_capabilities(["tools", "vision", "json_mode"]),
        );
        c.insert(
            ModelInfo::new(
                "openai",
                "gpt-4.1",
                price(2.00, 0.50, 8.00),
                128_000,
                Tier::Complex,
            )
            .with_capabilities(["tools", "vision", "json_mode"]),
        );
        c.insert(
            ModelInfo::new(
                "anthropic",
                "claude-sonnet-4.5",
                price(3.00, 0.30, 15.00),
                200_000,
                Tier::Complex,
            )
            .with_capabilities(["tools", "vision"]),
        );
        c
    }
}

impl Catalog {
    /// No models.
    pub fn empty() -> Self {
        Self {
            models: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Adds a model, or replaces the one with the same name (keeping its position).
    pub fn insert(&mut self, model: ModelInfo) {
        match self.index.get(&model.target.model) {
            Some(&i) => {
                if let Some(slot) = self.models.get_mut(i) {
                    *slot = model;
                }
            }
            None => {
                self.index
                    .insert(model.target.model.clone(), self.models.len());
                self.models.push(model);
            }
        }
    }

    /// With a model added (builder style).
    pub fn with(mut self, model: ModelInfo) -> Self {
        self.insert(model);
        self
    }

    /// Removes a model.
    pub fn remove(&mut self, name: &str) -> Option<ModelInfo> {
        let i = self.index.remove(name)?;
        let removed = self.models.remove(i);
        self.reindex();
        Some(removed)
    }

    fn reindex(&mut self) {
        self.index = self
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.target.model.clone(), i))
            .collect();
    }

    /// Renames a provider on every model served by it.
    pub fn rename_provider(&mut self, from: &str, to: &str) {
        let to: Arc<str> = to.into();
        for m in &mut self.models {
            if &*m.target.provider == from {
                m.target.provider = to.clone();
            }
        }
    }

    /// A model by name.
    pub fn get(&self, name: &str) -> Option<&ModelInfo> {
        self.index.get(name).and_then(|&i| self.models.get(i))
    }

    /// The position of a model.
    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// A model by position.
    pub(crate) fn at(&self, i: usize) -> Option<&ModelInfo> {
        self.models.get(i)
    }

    /// Every model, in insertion order.
    pub fn models(&self) -> &[ModelInfo] {
        &self.models
    }

    /// Number of models.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether the catalog has no model.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The model with the lowest blended price (ties: insertion order).
    pub fn cheapest(&self) -> Option<&ModelInfo> {
        self.models
            .iter()
            .min_by(|a, b| a.blended_price().total_cmp(&b.blended_price()))
    }
}
