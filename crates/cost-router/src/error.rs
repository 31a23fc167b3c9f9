//! Configuration errors and the request errors the router produces.

use rampart_core::Error;

/// A configuration problem, naming the key at fault (e.g. `routes.cheap.models[1]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The key at fault, as written in TOML (`models."gpt-4.1".price.input`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error at `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// 400 `context_length_exceeded`: no candidate's context window holds the request.
pub(crate) fn context_too_long(requested: &str, needed: u64, largest: u64) -> Error {
    Error::invalid_request(
        "context_length_exceeded",
        format!(
            "The request needs about {needed} tokens (prompt estimate plus output allowance), more \
             than any model for '{requested}' can hold (largest context window: {largest} tokens)."
        ),
    )
    .with_param("messages")
}

/// 400 `no_model_within_max_price`: `x-rampart-max-price` excluded every candidate.
pub(crate) fn over_max_price(requested: &str, max: f64, cheapest: Option<(&str, f64)>) -> Error {
    let tail = match cheapest {
        Some((m, p)) => {
            format!(" The cheapest candidate is '{m}' at ${p} per million output tokens.")
        }
        None => String::new(),
    };
    Error::invalid_request(
        "no_model_within_max_price",
        format!(
            "No model for '{requested}' costs at most ${max} per million output tokens \
             (x-rampart-max-price).{tail}"
        ),
    )
    .with_param("x-rampart-max-price")
}

/// 400 `invalid_header`: a routing hint header has a bad value.
pub(crate) fn bad_hint(header: &str, expected: &str) -> Error {
    Error::invalid_request(
        "invalid_header",
        format!("Invalid value for the '{header}' header: expected {expected}."),
    )
    .with_param(header.to_owned())
}
