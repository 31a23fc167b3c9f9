//! Why a configuration was refused: [`ConfigError`].

/// A [`HedgeConfig`](crate::HedgeConfig) or [`FanOutConfig`](crate::FanOutConfig) that cannot
/// work. The message names the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    /// The key at fault, e.g. `hedge.models."gpt-4.1".max_hedges`.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}
