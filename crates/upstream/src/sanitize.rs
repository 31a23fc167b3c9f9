//! Upstream error bodies, cleaned before a client sees them: no key, URL or host name.

use http::StatusCode;
use rampart_core::openai::{ErrorBody, ErrorObject};
use serde::Deserialize;

/// What must never leave the gateway for one provider.
pub(crate) struct Secrets<'a> {
    pub provider: &'a str,
    pub api_key: Option<&'a str>,
    pub base_url: &'a str,
    pub host: &'a str,
}

#[derive(Deserialize)]
struct Loose {
    error: Option<LooseError>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LooseError {
    Object {
        #[serde(default)]
        message: Option<String>,
        #[serde(default, rename = "type")]
        kind: Option<serde_json::Value>,
        #[serde(default)]
        param: Option<serde_json::Value>,
        #[serde(default)]
        code: Option<serde_json::Value>,
    },
    Text(String),
}

const MAX_MESSAGE: usize = 500;

fn as_text(v: Option<serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Builds the client-facing OpenAI error body for an upstream error response.
pub(crate) fn sanitize_error(status: StatusCode, body: &[u8], s: &Secrets<'_>) -> ErrorBody {
    let fallback = || {
        format!(
            "The upstream provider '{}' returned HTTP {}.",
            s.provider,
            status.as_u16()
        )
    };
    let (message, kind, param, code) = match serde_json::from_slice::<Loose>(body) {
        Ok(Loose {
            error:
                Some(LooseError::Object {
                    message,
                    kind,
                    param,
                    code,
                }),
        }) => (
            message.unwrap_or_else(fallback),
            as_text(kind),
            as_text(param),
            as_text(code),
        ),
        Ok(Loose {
            error: Some(LooseError::Text(m)),
        }) => (m, None, None, None),
        _ => (fallback(), None, None, None),
    };
    let kind = kind.unwrap_or_else(|| {
        if status.is_client_error() {
            "invalid_request_error".to_owned()
        } else {
            "server_error".to_owned()
        }
    });
    ErrorBody {
        error: ErrorObject {
            message: scrub(&message, s),
            kind: scrub(&kind, s),
            param: param.map(|p| scrub(&p, s)),
            code: code.map(|c| scrub(&c, s)),
        },
    }
}

/// Scrubs an already OpenAI-shaped error body (a translated provider error).
pub(crate) fn sanitize_body(body: ErrorBody, s: &Secrets<'_>) -> ErrorBody {
    let e = body.error;
    ErrorBody {
        error: ErrorObject {
            message: scrub(&e.message, s),
            kind: scrub(&e.kind, s),
            param: e.param.map(|p| scrub(&p, s)),
            code: e.code.map(|c| scrub(&c, s)),
        },
    }
}

/// Removes the key, the base URL, the host, any URL and anything shaped like an API key.
pub(crate) fn scrub(text: &str, s: &Secrets<'_>) -> String {
    let mut out = text.to_owned();
    if let Some(key) = s.api_key.filter(|k| !k.is_empty()) {
        out = out.replace(key, "[redacted]");
    }
    if !s.base_url.is_empty() {
        out = out.replace(s.base_url, "[upstream]");
    }
    if !s.host.is_empty() {
        out = out.replace(s.host, "[upstream]");
    }
    let mut words: Vec<String> = Vec::new();
    for word in out.split_inclusive(char::is_whitespace) {
        let trimmed = word.trim_end();
        let tail = &word[trimmed.len()..];
        let core = trimmed.trim_matches(|c: char| "\"'()[]<>,;".contains(c));
        let lower = core.to_ascii_lowercase();
        let secret_like = (lower.starts_with("sk-") || lower.starts_with("sk_")) && core.len() > 8;
        if lower.contains("://") || secret_like {
            words.push(format!(
                "{}{}",
                trimmed.replace(core, if secret_like { "[redacted]" } else { "[url]" }),
                tail
            ));
        } else {
            words.push(word.to_owned());
        }
    }
    let mut out = words.concat();
    if out.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Secrets<'static> = Secrets {
        provider: "openai",
        api_key: Some("sk-live-abcdefghijkl"),
        base_url: "https://api.internal.example/v1",
        host: "api.internal.example",
    };

    #[test]
    fn scrubs_keys_urls_hosts() {
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-live-abcdefghijkl at https://api.internal.example/v1/chat/completions (host api.internal.example). Also sk-other-123456789.","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        let e = sanitize_error(StatusCode::UNAUTHORIZED, body, &S);
        let m = &e.error.message;
        assert!(!m.contains("sk-live"), "{m}");
        assert!(!m.contains("sk-other"), "{m}");
        assert!(!m.contains("internal.example"), "{m}");
        assert!(!m.contains("https://"), "{m}");
        assert_eq!(e.error.code.as_deref(), Some("invalid_api_key"));
    }

    #[test]
    fn non_json_bodies_get_a_generic_message() {
        let e = sanitize_error(
            StatusCode::BAD_GATEWAY,
            b"<html>nginx at api.internal.example</html>",
            &S,
        );
        assert_eq!(
            e.error.message,
            "The upstream provider 'openai' returned HTTP 502."
        );
        assert_eq!(e.error.kind, "server_error");
    }
}
