//! The mock's deterministic tokenizer and answers.
//!
//! **Tokenizer.** Prompt tokens = for every message, `ceil(chars / 4) + 4` (chars = Unicode scalar
//! values of the message's text, i.e. [`Message::text`]: the string content, or the `text` parts
//! joined by `\n`), plus 3 for the reply priming. Completion tokens = one per whitespace-separated
//! word of the answer, times the number of choices (`n`).
//!
//! **Answer.** Words drawn from [`VOCABULARY`] by a hash (FNV-1a, then SplitMix64 per word) of the
//! model and of every message's role and text, so the same request always gets the same answer.
//! Words are separated by single spaces and the last one ends with a full stop, so a stream's
//! content chunks are `"word "`, `"word "`, ..., `"word."`. Choice `i` of `n` uses its own words.
//!
//! **Length and finish reason.** The answer has exactly `max_completion_tokens` (else
//! `max_tokens`) words when the client sent one — capped at [`MAX_OUTPUT_TOKENS`] — and
//! `finish_reason` is then `"length"` (the answer was cut at the limit). Without a limit the answer
//! has the configured `output_tokens` (default [`DEFAULT_OUTPUT_TOKENS`]) words and
//! `finish_reason` is `"stop"`.

use rampart_core::ChatRequest;
use rampart_core::RequestError;
use rampart_core::openai::{CompletionTokensDetails, Message, PromptTokensDetails, Usage};
use serde_json::{Map, Value};

/// Answer length when the client sends no limit and the config sets none.
pub const DEFAULT_OUTPUT_TOKENS: u32 = 16;

/// The longest answer the mock produces, whatever `max_tokens` says.
pub const MAX_OUTPUT_TOKENS: u64 = 100_000;

/// The most choices (`n`) the mock accepts (as OpenAI).
pub const MAX_CHOICES: u64 = 128;

/// The words answers are made of (lowercase ASCII, nothing to escape in JSON).
pub const VOCABULARY: [&str; 64] = [
    "the",
    "gateway",
    "routes",
    "every",
    "request",
    "to",
    "a",
    "model",
    "that",
    "answers",
    "quickly",
    "and",
    "cheaply",
    "while",
    "limits",
    "keep",
    "traffic",
    "fair",
    "for",
    "each",
    "tenant",
    "breakers",
    "open",
    "when",
    "providers",
    "fail",
    "fallbacks",
    "retry",
    "with",
    "backoff",
    "caches",
    "replay",
    "streams",
    "budgets",
    "cap",
    "spend",
    "tokens",
    "flow",
    "through",
    "layers",
    "of",
    "tower",
    "services",
    "in",
    "order",
    "so",
    "latency",
    "stays",
    "low",
    "under",
    "load",
    "this",
    "simulated",
    "provider",
    "writes",
    "deterministic",
    "text",
    "from",
    "prompt",
    "hash",
    "across",
    "runs",
    "without",
    "network",
];

/// Prompt tokens of a request under the mock's tokenizer (see the [module docs](self)):
/// `sum over messages of (ceil(chars / 4) + 4) + 3`.
///
/// When `messages` cannot be typed, falls back to
/// [`ChatRequest::estimate_prompt_tokens`] (the mock answers such requests with a 400 anyway).
pub fn count_prompt_tokens(chat: &ChatRequest) -> u64 {
    match chat.messages() {
        Ok(messages) => messages.iter().map(message_tokens).sum::<u64>() + 3,
        Err(_) => chat.estimate_prompt_tokens(),
    }
}

fn message_tokens(m: &Message) -> u64 {
    (m.text().chars().count() as u64).div_ceil(4) + 4
}

/// The answer's seed and the prompt tokens of (role, text) messages.
fn seed_and_prompt<R, T>(model: &str, messages: impl IntoIterator<Item = (R, T)>) -> (u64, u64)
where
    R: AsRef<str>,
    T: AsRef<str>,
{
    let mut seed = fnv(FNV_OFFSET, model.as_bytes());
    let mut prompt_tokens = 3;
    for (role, text) in messages {
        let text = text.as_ref();
        seed = fnv(fnv(seed, &[0xff]), role.as_ref().as_bytes());
        seed = fnv(fnv(seed, &[0xfe]), text.as_bytes());
        prompt_tokens += text_tokens(text);
    }
    (seed, prompt_tokens)
}

/// Tokens of one message's text: `ceil(chars / 4) + 4`.
pub(crate) fn text_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4) + 4
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Everything the mock says in answer to one request: deterministic words, the token counts and
/// the finish reason. Tests use it to compute what the mock will answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    seed: u64,
    tokens: u64,
    choices: u32,
    prompt_tokens: u64,
    finish_reason: &'static str,
}

impl Answer {
    /// The answer to `chat`, with `default_tokens` words when the client sends no limit.
    ///
    /// Fails (a 400 from the mock) when `messages` is not a list of messages or `n` is above
    /// [`MAX_CHOICES`].
    pub fn for_request(chat: &ChatRequest, default_tokens: u32) -> Result<Self, RequestError> {
        let messages = chat.messages()?;
        let (seed, prompt_tokens) = seed_and_prompt(
            chat.model(),
            messages.iter().map(|m| (m.role.as_str(), m.text())),
        );
        let n = chat.n().unwrap_or(1);
        if n > MAX_CHOICES {
            return Err(RequestError::InvalidValue {
                field: "n".into(),
                reason: format!("{n} is greater than the maximum of {MAX_CHOICES}"),
            });
        }
        let (tokens, finish_reason) = match chat.max_output_tokens() {
            Some(limit) => (limit.min(MAX_OUTPUT_TOKENS), "length"),
            None => (u64::from(default_tokens).min(MAX_OUTPUT_TOKENS), "stop"),
        };
        Ok(Self {
            seed,
            tokens,
            // `n` is at least 1 (the parser refuses 0) and at most MAX_CHOICES.
            choices: u32::try_from(n.max(1)).unwrap_or(1),
            prompt_tokens,
            finish_reason,
        })
    }

    /// One answer (`n` = 1) of `tokens` words to `messages` given as (role, text) pairs,
    /// seeded and counted like [`Answer::for_request`].
    pub(crate) fn from_messages<R, T>(
        model: &str,
        messages: impl IntoIterator<Item = (R, T)>,
        tokens: u64,
        finish_reason: &'static str,
    ) -> Self
    where
        R: AsRef<str>,
        T: AsRef<str>,
    {
        let (seed, prompt_tokens) = seed_and_prompt(model, messages);
        Self {
            seed,
            tokens: tokens.min(MAX_OUTPUT_TOKENS),
            choices: 1,
            prompt_tokens,
            finish_reason,
        }
    }

    /// Words (tokens) per choice.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Number of choices (`n`).
    pub fn choices(&self) -> u32 {
        self.choices
    }

    /// Prompt tokens (as [`count_prompt_tokens`]).
    pub fn prompt_tokens(&self) -> u64 {
        self.prompt_tokens
    }

    /// Completion tokens: words × choices.
    pub fn completion_tokens(&self) -> u64 {
        self.tokens * u64::from(self.choices)
    }

    /// `"stop"` or `"length"`.
    pub fn finish_reason(&self) -> &'static str {
        self.finish_reason
    }

    /// The usage the mock reports, exactly as it appears on the wire: cached, reasoning, audio and
    /// prediction tokens are all 0.
    pub fn usage(&self) -> Usage {
        let zeros = |keys: &[&str]| -> Map<String, Value> {
            keys.iter()
                .map(|k| ((*k).to_owned(), Value::from(0)))
                .collect()
        };
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens(),
            total_tokens: self.prompt_tokens + self.completion_tokens(),
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: Some(0),
                extra: zeros(&["audio_tokens"]),
            }),
            completion_tokens_details: Some(CompletionTokensDetails {
                reasoning_tokens: Some(0),
                extra: zeros(&[
                    "audio_tokens",
                    "accepted_prediction_tokens",
                    "rejected_prediction_tokens",
                ]),
            }),
            extra: Map::new(),
        }
    }

    /// Word `i` of choice `choice` and what follows it (`" "`, or `"."` after the last word).
    pub fn token(&self, choice: u32, i: u64) -> (&'static str, &'static str) {
        let h = splitmix64(
            self.seed
                ^ u64::from(choice).wrapping_mul(0xa076_1d64_78bd_642f)
                ^ i.wrapping_mul(0xe703_7ed1_a0b4_28db),
        );
        let word = VOCABULARY[(h % VOCABULARY.len() as u64) as usize];
        let sep = if i + 1 == self.tokens { "." } else { " " };
        (word, sep)
    }

    /// The full text of choice `choice`.
    pub fn text(&self, choice: u32) -> String {
        let mut out = String::with_capacity(self.text_len_hint());
        for i in 0..self.tokens {
            let (w, s) = self.token(choice, i);
            out.push_str(w);
            out.push_str(s);
        }
        out
    }

    /// An upper bound of one choice's text length, for buffer sizing.
    pub(crate) fn text_len_hint(&self) -> usize {
        usize::try_from(self.tokens)
            .unwrap_or(usize::MAX / 16)
            .saturating_mul(14)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn chat(s: &str) -> ChatRequest {
        ChatRequest::parse(Bytes::from(s.to_owned())).unwrap()
    }

    #[test]
    fn vocabulary_needs_no_escaping_and_fits() {
        for w in VOCABULARY {
            assert!(w.bytes().all(|b| b.is_ascii_lowercase()), "{w}");
            assert!(w.len() < 14);
        }
    }

    #[test]
    fn deterministic_and_prompt_dependent() {
        let a = chat(r#"{"model":"m","messages":[{"role":"user","content":"hello"}]}"#);
        let b = chat(r#"{"model":"m","messages":[{"role":"user","content":"hello!"}]}"#);
        let x = Answer::for_request(&a, 16).unwrap();
        assert_eq!(x.text(0), Answer::for_request(&a, 16).unwrap().text(0));
        assert_ne!(x.text(0), Answer::for_request(&b, 16).unwrap().text(0));
        assert_eq!(x.text(0).split_whitespace().count(), 16);
        assert!(x.text(0).ends_with('.'));
        // "hello" = 5 chars -> 2 + 4 + 3
        assert_eq!(x.prompt_tokens(), 9);
        assert_eq!(count_prompt_tokens(&a), 9);
    }
}
