//! Prompt token estimators: what is reserved for the prompt before the call.
//!
//! The default, [`BytesEstimator`], is [`ChatRequest::estimate_prompt_tokens`]: `messages` bytes
//! / 4 plus 4 per message plus 3 — cheap, and close enough since every reservation is settled to
//! the provider's real `usage` afterwards. With the `tiktoken` feature, `TiktokenEstimator`
//! counts exactly with OpenAI's `o200k_base` encoding. Any `Fn(&ChatRequest) -> u64` is an
//! estimator too.

use rampart_core::ChatRequest;

/// Estimates the prompt tokens of a request.
pub trait TokenEstimator: Send + Sync + 'static {
    /// Prompt tokens of `chat` (output tokens are added by the layer).
    fn prompt_tokens(&self, chat: &ChatRequest) -> u64;
}

impl<F> TokenEstimator for F
where
    F: Fn(&ChatRequest) -> u64 + Send + Sync + 'static,
{
    fn prompt_tokens(&self, chat: &ChatRequest) -> u64 {
        self(chat)
    }
}

/// The default estimator: [`ChatRequest::estimate_prompt_tokens`] (bytes / 4 + per-message
/// overhead).
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesEstimator;

impl TokenEstimator for BytesEstimator {
    fn prompt_tokens(&self, chat: &ChatRequest) -> u64 {
        chat.estimate_prompt_tokens()
    }
}

#[cfg(feature = "tiktoken")]
pub use tiktoken::TiktokenEstimator;

#[cfg(feature = "tiktoken")]
mod tiktoken {
    use std::sync::Arc;

    use rampart_core::ChatRequest;
    use tiktoken_rs::CoreBPE;

    use super::TokenEstimator;

    /// Exact counting with tiktoken (`o200k_base`, the GPT-4o / GPT-4.1 encoding): the text of
    /// every message, plus 4 tokens per message and 3 for the reply's priming, as OpenAI's
    /// cookbook counts chat prompts. Falls back to the byte estimate when `messages` cannot be
    /// typed. Needs the `tiktoken` feature.
    #[derive(Clone)]
    pub struct TiktokenEstimator {
        bpe: Arc<CoreBPE>,
    }

    impl std::fmt::Debug for TiktokenEstimator {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("TiktokenEstimator(o200k_base)")
        }
    }

    impl TiktokenEstimator {
        /// Loads `o200k_base` (embedded in the crate; no network).
        pub fn o200k() -> Result<Self, crate::BoxError> {
            let bpe = tiktoken_rs::o200k_base().map_err(|e| e.to_string())?;
            Ok(Self { bpe: Arc::new(bpe) })
        }

        /// Loads `cl100k_base` (GPT-4, GPT-3.5).
        pub fn cl100k() -> Result<Self, crate::BoxError> {
            let bpe = tiktoken_rs::cl100k_base().map_err(|e| e.to_string())?;
            Ok(Self { bpe: Arc::new(bpe) })
        }
    }

    impl TokenEstimator for TiktokenEstimator {
        fn prompt_tokens(&self, chat: &ChatRequest) -> u64 {
            match chat.messages() {
                Ok(messages) => {
                    let mut n = 3u64;
                    for m in messages {
                        n += 4;
                        n += self.bpe.encode_ordinary(&m.role).len() as u64;
                        n += self.bpe.encode_ordinary(&m.text()).len() as u64;
                        if let Some(name) = &m.name {
                            n += 1 + self.bpe.encode_ordinary(name).len() as u64;
                        }
                    }
                    n
                }
                Err(_) => chat.estimate_prompt_tokens(),
            }
        }
    }
}
