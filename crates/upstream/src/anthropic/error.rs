//! Messages API errors → OpenAI error bodies.

use http::StatusCode;
use rampart_core::openai::{ErrorBody, ErrorObject};
use serde::Deserialize;

#[derive(Deserialize)]
struct AnthropicError {
    error: Detail,
}

#[derive(Deserialize)]
pub(crate) struct Detail {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) message: String,
}

/// The OpenAI error `type` and `code` for an Anthropic error `type` (and its message, which
/// tells a prompt that is too long from other invalid requests).
///
/// | Anthropic `error.type` | OpenAI `type` | `code` |
/// |---|---|---|
/// | `invalid_request_error` ("prompt is too long") | `invalid_request_error` | `context_length_exceeded` |
/// | `invalid_request_error` | `invalid_request_error` | `invalid_request_error` |
/// | `authentication_error` | `invalid_request_error` | `invalid_api_key` |
/// | `permission_error` | `invalid_request_error` | `permission_error` |
/// | `not_found_error` | `invalid_request_error` | `not_found_error` |
/// | `request_too_large` | `invalid_request_error` | `request_too_large` |
/// | `rate_limit_error` | `requests` | `rate_limit_exceeded` |
/// | `api_error`, `overloaded_error`, anything else | `server_error` | the Anthropic type |
pub fn error_shape(kind: &str, message: &str) -> (&'static str, String) {
    match kind {
        "invalid_request_error" if is_context_length(message) => {
            ("invalid_request_error", "context_length_exceeded".into())
        }
        "authentication_error" => ("invalid_request_error", "invalid_api_key".into()),
        "rate_limit_error" => ("requests", "rate_limit_exceeded".into()),
        "invalid_request_error" | "permission_error" | "not_found_error" | "request_too_large" => {
            ("invalid_request_error", kind.to_owned())
        }
        _ => ("server_error", kind.to_owned()),
    }
}

fn is_context_length(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("prompt is too long") || m.contains("context window") || m.contains("context length")
}

/// Translates an Anthropic error body (`{"type":"error","error":{"type","message"}}`) into an
/// OpenAI error body. `None` when the body is not one (an HTML page from a proxy, an OpenAI
/// body): the caller sanitises it as any upstream error. The status stays the upstream's: it
/// is what the breaker and the fallback classify (429 rate limited, 500/529 failures, other
/// 4xx the client's problem).
pub fn translate_error(status: StatusCode, body: &[u8]) -> Option<ErrorBody> {
    let parsed: AnthropicError = serde_json::from_slice(body).ok()?;
    Some(to_openai(status, parsed.error))
}

pub(crate) fn to_openai(status: StatusCode, d: Detail) -> ErrorBody {
    let (kind, code) = error_shape(&d.kind, &d.message);
    let message = if d.message.is_empty() {
        format!(
            "The upstream provider returned {} ({}).",
            d.kind,
            status.as_u16()
        )
    } else {
        d.message
    };
    ErrorBody {
        error: ErrorObject {
            message,
            kind: kind.to_owned(),
            param: None,
            code: Some(code),
        },
    }
}
