//! Anthropic's native Messages API behind the chat-completions API.
//!
//! A provider of kind [`ProviderKind::Anthropic`](crate::ProviderKind::Anthropic) is called with
//! `POST {base_url}/messages`; [`Upstream`](crate::Upstream) translates on the way out and on the
//! way back, so clients and every layer above see an OpenAI-compatible provider: a
//! `chat.completion` JSON body, or a `chat.completion.chunk` stream ending with `data: [DONE]`,
//! with the same [`ResponseFacts`](rampart_core::ResponseFacts) and completion reporting.
//!
//! | chat completions | Messages API |
//! |---|---|
//! | `system` / `developer` messages | top-level `system` (text blocks, `cache_control` kept) |
//! | `user` text and `image_url` parts (`data:` URL or http(s)), `file` PDFs | `text`, `image` (base64 or url source), `document` blocks |
//! | assistant `tool_calls` | `tool_use` blocks (`arguments` parsed into `input`) |
//! | `tool` messages | `tool_result` blocks in a `user` turn |
//! | `tools`, `tool_choice` (`auto`, `none`, `required`, a function), `parallel_tool_calls: false` | `tools` with `input_schema`; `tool_choice` `auto`, `none`, `any`, `tool`; `disable_parallel_tool_use` |
//! | `max_completion_tokens` / `max_tokens` (else the provider's `default_max_tokens`) | `max_tokens` (always sent) |
//! | `temperature`, `top_p`, `top_k`, `stop`, `stream`, `user` | `temperature`, `top_p`, `top_k`, `stop_sequences`, `stream`, `metadata.user_id` |
//! | `n` > 1, unsupported content parts or tool types | a 400 before any call |
//! | any other member (`seed`, `logit_bias`, `response_format`, ...) | dropped, with a debug log |
//!
//! Back: `text` blocks become `message.content`, `tool_use` blocks `tool_calls`; `stop_reason`
//! becomes `finish_reason` (`end_turn`/`stop_sequence`/`pause_turn` → `stop`, `max_tokens` →
//! `length`, `tool_use` → `tool_calls`, `refusal` → `content_filter`); usage counts cache
//! writes and reads as prompt tokens and reports the reads as
//! `prompt_tokens_details.cached_tokens`, so cost is exact at the cached-input price. Error
//! bodies become OpenAI error bodies with the upstream's status (529 stays a failure for the
//! breaker and the fallback); an `error` event mid-stream becomes an OpenAI error chunk and ends
//! the stream without `[DONE]`, which the completion handle records as an upstream error.

mod error;
mod request;
mod response;
mod stream;

pub use error::{error_shape, translate_error};
pub use request::translate_request;
pub use response::{AnthropicUsage, InvalidResponse, finish_reason, translate_response};
pub use stream::StreamTranslator;

pub(crate) use response::JsonBody;
pub(crate) use stream::SseBody;

/// Unix seconds now (`created` of translated answers).
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
