//! Typed errors and the single mapping to OpenAI-shaped JSON responses.
//!
//! Every refusal or failure a layer produces is an [`Error`] created at its source and carried as
//! a `BoxError`. [`error_response`] turns any `BoxError` into the response the client sees:
//! `{"error":{"message","type","param","code"}}`, the right status, `Retry-After` where it
//! applies and `x-rampart-error-source`. Edge adapters apply it; nothing else formats errors.

use std::borrow::Cow;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};

use crate::body::{Body, BoxError};
use crate::headers::X_RAMPART_ERROR_SOURCE;
use crate::openai::{ErrorBody, ErrorObject, RequestError};

/// Which part of the gateway produced an error (`x-rampart-error-source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorSource {
    /// A rate limit refused the request.
    RateLimit,
    /// An open circuit breaker refused the request.
    CircuitBreaker,
    /// A spend budget refused the request.
    Budget,
    /// The upstream provider failed or refused.
    Upstream,
    /// The gateway itself (bad input, auth, limits on the request).
    Gateway,
}

impl ErrorSource {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimit => "rate_limit",
            Self::CircuitBreaker => "circuit_breaker",
            Self::Budget => "budget",
            Self::Upstream => "upstream",
            Self::Gateway => "gateway",
        }
    }
}

/// What went wrong; decides the status, `type` and `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request is malformed (400). `code` is e.g. `invalid_json`, `missing_required_parameter`.
    InvalidRequest {
        /// The OpenAI error code.
        code: Cow<'static, str>,
    },
    /// Unknown model or route (404, `model_not_found`).
    ModelNotFound,
    /// Missing or unknown virtual key (401, `invalid_api_key`).
    InvalidApiKey,
    /// The body is over the limit (413, `request_too_large`).
    RequestTooLarge,
    /// The body did not arrive in time (408, `request_timeout`).
    RequestTimeout,
    /// A rate limit refused the request (429, `rate_limit_exceeded`).
    RateLimited {
        /// `requests` or `tokens` (OpenAI's error type for rate limits).
        limit_type: Cow<'static, str>,
        /// Which limiter refused: `tenant`, `target`, ... (for metrics and logs).
        scope: Cow<'static, str>,
    },
    /// A spend budget is exhausted (429 or 402, `budget_exceeded`).
    BudgetExceeded {
        /// The status to answer with.
        status: StatusCode,
    },
    /// The circuit breaker for the target is open (503, `upstream_unavailable`).
    CircuitOpen {
        /// The target whose breaker is open.
        target: String,
    },
    /// A shared state store is down under `fail_closed` (503, `state_store_unavailable`).
    StoreUnavailable {
        /// `RateLimit` or `Budget`.
        source: ErrorSource,
    },
    /// The upstream could not be reached (502, `upstream_error`).
    UpstreamConnect,
    /// The upstream did not answer in time (504, `upstream_timeout`).
    UpstreamTimeout,
    /// The upstream's answer broke before any content reached the client (502, `upstream_error`).
    UpstreamBroken,
    /// The upstream answered with an error status (its status; code sanitised).
    UpstreamStatus {
        /// The upstream's status.
        status: StatusCode,
        /// The upstream's error type, when it gave one.
        kind: Option<String>,
        /// The upstream's error code, when it gave one.
        code: Option<String>,
    },
    /// Every candidate failed (502 or the last upstream 5xx, `upstream_error`).
    AllCandidatesFailed {
        /// The status to answer with.
        status: StatusCode,
        /// Attempts made.
        attempts: u32,
    },
    /// A bug or an unexpected failure inside the gateway (500).
    Internal,
}

/// A typed gateway error. Created where the decision is made; mapped to a response by
/// [`Error::to_response`] / [`error_response`].
#[derive(Debug)]
pub struct Error(Box<Inner>);

#[derive(Debug)]
struct Inner {
    kind: ErrorKind,
    message: String,
    param: Option<String>,
    retry_after: Option<Duration>,
    headers: HeaderMap,
    cause: Option<BoxError>,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .cause
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl Error {
    /// An error of `kind` with a client-facing `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self(Box::new(Inner {
            kind,
            message: message.into(),
            param: None,
            retry_after: None,
            headers: HeaderMap::new(),
            cause: None,
        }))
    }

    /// A 400 with the given OpenAI code.
    pub fn invalid_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::InvalidRequest {
                code: Cow::Borrowed(code),
            },
            message,
        )
    }

    /// 404 `model_not_found`, listing what is available.
    pub fn model_not_found<'a>(model: &str, available: impl IntoIterator<Item = &'a str>) -> Self {
        let list: Vec<&str> = available.into_iter().collect();
        Self::new(
            ErrorKind::ModelNotFound,
            format!(
                "The model '{}' does not exist or you do not have access to it. Available models: {}.",
                truncate(model, 128),
                list.join(", ")
            ),
        )
        .with_param("model")
    }

    /// 401 `invalid_api_key`. The message never echoes the key.
    pub fn invalid_api_key(missing: bool) -> Self {
        Self::new(
            ErrorKind::InvalidApiKey,
            if missing {
                "Missing API key. Send it as 'Authorization: Bearer <key>'."
            } else {
                "Incorrect API key provided."
            },
        )
    }

    /// 429 `rate_limit_exceeded`.
    pub fn rate_limited(
        limit_type: &'static str,
        scope: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
        retry_after: Duration,
    ) -> Self {
        Self::new(
            ErrorKind::RateLimited {
                limit_type: Cow::Borrowed(limit_type),
                scope: scope.into(),
            },
            message,
        )
        .with_retry_after(retry_after)
    }

    /// 503 `upstream_unavailable` from an open breaker.
    pub fn circuit_open(target: impl Into<String>, retry_after: Duration) -> Self {
        let target = target.into();
        Self::new(
            ErrorKind::CircuitOpen {
                target: target.clone(),
            },
            format!("The upstream for '{target}' is unavailable (circuit open); retry later."),
        )
        .with_retry_after(retry_after)
    }

    /// 503 `upstream_unavailable` while a target cools down after the upstream's 429 (a
    /// refusal, like an open breaker, with its own wording).
    pub fn cooling_down(target: impl Into<String>, retry_after: Duration) -> Self {
        let target = target.into();
        Self::new(
            ErrorKind::CircuitOpen {
                target: target.clone(),
            },
            format!(
                "The upstream for '{target}' asked the gateway to slow down; retry after the indicated time."
            ),
        )
        .with_retry_after(retry_after)
    }

    /// 500 for an unexpected failure; the cause is kept for logs, never shown to the client.
    pub fn internal(cause: impl Into<BoxError>) -> Self {
        Self::new(ErrorKind::Internal, "The gateway hit an internal error.").with_cause(cause)
    }

    /// The parameter at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.0.param = Some(param.into());
        self
    }
    /// When the client may retry (sent as `Retry-After`, whole seconds rounded up).
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.0.retry_after = Some(after);
        self
    }
    /// An extra response header (e.g. `x-ratelimit-*`).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.append(name, value);
        self
    }
    /// The underlying cause (logged, not shown).
    pub fn with_cause(mut self, cause: impl Into<BoxError>) -> Self {
        self.0.cause = Some(cause.into());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }
    /// The client-facing message.
    pub fn message(&self) -> &str {
        &self.0.message
    }
    /// `Retry-After`, when set.
    pub fn retry_after(&self) -> Option<Duration> {
        self.0.retry_after
    }
    /// Extra headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.0.headers
    }

    /// Whether this is a refusal made by the gateway before any upstream call (rate limit,
    /// open breaker, budget, store down): a fallback skips such a candidate at no cost.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self.0.kind,
            ErrorKind::RateLimited { .. }
                | ErrorKind::CircuitOpen { .. }
                | ErrorKind::BudgetExceeded { .. }
                | ErrorKind::StoreUnavailable { .. }
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match &self.0.kind {
            ErrorKind::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ErrorKind::ModelNotFound => StatusCode::NOT_FOUND,
            ErrorKind::InvalidApiKey => StatusCode::UNAUTHORIZED,
            ErrorKind::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::BudgetExceeded { status } => *status,
            ErrorKind::CircuitOpen { .. } | ErrorKind::StoreUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorKind::UpstreamConnect | ErrorKind::UpstreamBroken => StatusCode::BAD_GATEWAY,
            ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::UpstreamStatus { status, .. } => *status,
            ErrorKind::AllCandidatesFailed { status, .. } => *status,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OpenAI `error.type`.
    pub fn error_type(&self) -> Cow<'_, str> {
        let s = match &self.0.kind {
            ErrorKind::InvalidRequest { .. }
            | ErrorKind::ModelNotFound
            | ErrorKind::InvalidApiKey
            | ErrorKind::RequestTooLarge
            | ErrorKind::RequestTimeout => "invalid_request_error",
            ErrorKind::RateLimited { limit_type, .. } => return Cow::Borrowed(limit_type),
            ErrorKind::BudgetExceeded { .. } => "insufficient_quota",
            ErrorKind::UpstreamStatus {
                kind: Some(kind), ..
            } => return Cow::Borrowed(kind),
            ErrorKind::UpstreamStatus { status, .. } if status.is_client_error() => {
                "invalid_request_error"
            }
            _ => "server_error",
        };
        Cow::Borrowed(s)
    }

    /// The OpenAI `error.code`.
    pub fn code(&self) -> Option<Cow<'_, str>> {
        let s = match &self.0.kind {
            ErrorKind::InvalidRequest { code } => return Some(Cow::Borrowed(code)),
            ErrorKind::ModelNotFound => "model_not_found",
            ErrorKind::InvalidApiKey => "invalid_api_key",
            ErrorKind::RequestTooLarge => "request_too_large",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::RateLimited { .. } => "rate_limit_exceeded",
            ErrorKind::BudgetExceeded { .. } => "budget_exceeded",
            ErrorKind::CircuitOpen { .. } => "upstream_unavailable",
            ErrorKind::StoreUnavailable { .. } => "state_store_unavailable",
            ErrorKind::UpstreamConnect
            | ErrorKind::UpstreamBroken
            | ErrorKind::AllCandidatesFailed { .. } => "upstream_error",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::UpstreamStatus { code, .. } => {
                return Some(
                    code.as_deref()
                        .map_or(Cow::Borrowed("upstream_error"), Cow::Borrowed),
                );
            }
            ErrorKind::Internal => "internal_error",
        };
        Some(Cow::Borrowed(s))
    }

    /// Which part of the gateway produced it.
    pub fn source_tag(&self) -> ErrorSource {
        match &self.0.kind {
            ErrorKind::RateLimited { .. } => ErrorSource::RateLimit,
            ErrorKind::CircuitOpen { .. } => ErrorSource::CircuitBreaker,
            ErrorKind::BudgetExceeded { .. } => ErrorSource::Budget,
            ErrorKind::StoreUnavailable { source } => *source,
            ErrorKind::UpstreamConnect
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamBroken
            | ErrorKind::UpstreamStatus { .. }
            | ErrorKind::AllCandidatesFailed { .. } => ErrorSource::Upstream,
            _ => ErrorSource::Gateway,
        }
    }

    /// The OpenAI error body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorObject {
                message: self.0.message.clone(),
                kind: self.error_type().into_owned(),
                param: self.0.param.clone(),
                code: self.code().map(Cow::into_owned),
            },
        }
    }

    /// The response the client sees.
    pub fn to_response(&self) -> Response<Body> {
        let mut resp = Response::new(Body::json(&self.body()));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            X_RAMPART_ERROR_SOURCE,
            HeaderValue::from_static(self.source_tag().as_str()),
        );
        if let Some(after) = self.0.retry_after {
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(after)),
            );
        }
        for (name, value) in &self.0.headers {
            h.append(name.clone(), value.clone());
        }
        resp
    }
}

/// Whole seconds for `Retry-After`, rounded up (at least 1 for any wait).
pub fn retry_after_secs(after: Duration) -> u64 {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    secs.max(u64::from(!after.is_zero()))
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl From<RequestError> for Error {
    fn from(e: RequestError) -> Self {
        let param = e.param().map(str::to_owned);
        let mut err = Error::invalid_request(e.code(), e.to_string());
        err.0.param = param;
        err
    }
}

/// Finds the [`Error`] in a `BoxError` (itself or one of its sources).
pub fn find_error(err: &BoxError) -> Option<&Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<Error>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

/// Maps any error from a service stack to the client's response. The one place errors become
/// responses: typed [`Error`]s map as they say; tower's timeout maps to 504; anything else is a
/// 500 whose details go to the log, never to the client.
pub fn error_response(err: &BoxError) -> Response<Body> {
    if let Some(e) = find_error(err) {
        if matches!(e.0.kind, ErrorKind::Internal) {
            tracing::error!(error = ?e.0.cause, "internal error");
        }
        return e.to_response();
    }
    if err.is::<tower::timeout::error::Elapsed>() {
        return Error::new(ErrorKind::UpstreamTimeout, "The request timed out.").to_response();
    }
    tracing::error!(error = %err, "unclassified error from the service stack");
    Error::new(ErrorKind::Internal, "The gateway hit an internal error.").to_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn json(resp: Response<Body>) -> serde_json::Value {
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&b).unwrap()
    }

    #[tokio::test]
    async fn rate_limit_maps_to_429_with_retry_after() {
        let e: BoxError = Error::rate_limited(
            "tokens",
            "tenant",
            "Too many tokens",
            Duration::from_millis(1200),
        )
        .with_header(
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderValue::from(0),
        )
        .into();
        let resp = error_response(&e);
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "2");
        assert_eq!(resp.headers()["x-ratelimit-remaining-tokens"], "0");
        assert_eq!(resp.headers()["x-rampart-error-source"], "rate_limit");
        let v = json(resp).await;
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        assert_eq!(v["error"]["type"], "tokens");
        assert_eq!(v["error"]["param"], serde_json::Value::Null);
    }

    #[tokio::test]
    async fn wrapped_and_unknown_errors() {
        #[derive(Debug, thiserror::Error)]
        #[error("wrapper")]
        struct Wrapper(#[source] Error);
        let e: BoxError = Box::new(Wrapper(Error::circuit_open("p/m", Duration::from_secs(3))));
        let resp = error_response(&e);
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["x-rampart-error-source"], "circuit_breaker");

        let e: BoxError = "secret https://internal.example/ failure".into();
        let resp = error_response(&e);
        assert_eq!(resp.status(), 500);
        let v = json(resp).await;
        assert!(!v.to_string().contains("internal.example"));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 0);
    }
}
