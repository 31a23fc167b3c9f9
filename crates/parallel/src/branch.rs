//! What both layers share: building a branch's request, calling the inner service, deciding
//! when a branch has succeeded (a stream: at its first content chunk), headers and costs.

use std::sync::Arc;

use http::request::Parts;
use http::{HeaderValue, Request, Response};
use rampart_core::commit::{CommitConfig, commit_stream};
use rampart_core::error::find_error;
use rampart_core::headers::{X_RAMPART_ATTEMPTS, X_RAMPART_COST_USD};
use rampart_core::tap::is_event_stream;
use rampart_core::{Body, BoxError, ChatRequest, Error, MicroUsd, ResponseFacts};
use tower::ServiceExt;
use tower_service::Service;

use crate::headers::X_RAMPART_MODELS_CALLED;

/// A request for one branch: the same head and extensions, the parsed request with `model`,
/// the raw body bytes (the upstream serialises the rewritten extension).
pub(crate) fn branch_request(parts: &Parts, chat: &Arc<ChatRequest>, model: &str) -> Request<Body> {
    let mut parts = parts.clone();
    let chat = if chat.model() == model {
        chat.clone()
    } else {
        Arc::new(chat.with_model(model))
    };
    let body = Body::from_bytes(chat.raw().clone());
    parts.extensions.insert(chat);
    Request::from_parts(parts, body)
}

/// Calls `svc` (made ready first unless `ready`) and, for a 2xx stream, waits for its first
/// content chunk: the moment a branch has succeeded.
pub(crate) async fn call<S>(
    svc: S,
    ready: bool,
    req: Request<Body>,
    commit: CommitConfig,
) -> Result<Response<Body>, BoxError>
where
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let mut svc = svc;
    if !ready {
        ServiceExt::<Request<Body>>::ready(&mut svc)
            .await
            .map_err(Into::into)?;
    }
    let resp = svc.call(req).await.map_err(Into::into)?;
    if resp.status().is_success() && is_event_stream(resp.headers()) {
        return commit_stream(resp, commit)
            .await
            .map_err(|e| Box::new(e) as BoxError);
    }
    Ok(resp)
}

/// Whether a branch's result is a success (a 2xx answer).
pub(crate) fn is_success(r: &Result<Response<Body>, BoxError>) -> bool {
    matches!(r, Ok(resp) if resp.status().is_success())
}

/// Marks a response nobody will read, so observers see `Abandoned` rather than a client leaving.
pub(crate) fn abandon(resp: &Response<Body>) {
    if let Some(f) = resp.extensions().get::<ResponseFacts>() {
        f.completion.abandon();
    }
}

/// `m1,m2,...` for `x-rampart-models-called`.
pub(crate) fn models_value(models: &[Arc<str>]) -> Option<HeaderValue> {
    let joined = models.iter().map(|m| &**m).collect::<Vec<&str>>().join(",");
    HeaderValue::from_str(&joined).ok()
}

/// Adds `x-rampart-models-called` to a result (a response, or a core error; other errors are
/// returned unchanged).
pub(crate) fn with_models_called(
    result: Result<Response<Body>, BoxError>,
    models: &[Arc<str>],
) -> Result<Response<Body>, BoxError> {
    let Some(v) = models_value(models) else {
        return result;
    };
    match result {
        Ok(mut resp) => {
            resp.headers_mut().insert(X_RAMPART_MODELS_CALLED, v);
            Ok(resp)
        }
        Err(e) => match e.downcast::<Error>() {
            Ok(err) => Err(Box::new(err.with_header(X_RAMPART_MODELS_CALLED, v))),
            Err(e) => Err(e),
        },
    }
}

/// Parses a decimal USD amount (`x-rampart-cost-usd`, e.g. `0.000123`) into micro-dollars.
pub(crate) fn parse_usd(s: &str) -> Option<MicroUsd> {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || !all_digits(frac) {
        return None;
    }
    let whole: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut micros: u64 = 0;
    let mut digits = frac.bytes();
    for _ in 0..6 {
        let d = digits.next().map_or(0, |b| u64::from(b - b'0'));
        micros = micros * 10 + d;
    }
    // Anything beyond a micro-dollar rounds up, as the router does.
    if digits.any(|b| b != b'0') {
        micros += 1;
    }
    whole.checked_mul(1_000_000)?.checked_add(micros)
}

/// The cost a response reports (`x-rampart-cost-usd`).
pub(crate) fn reported_cost(headers: &http::HeaderMap) -> Option<MicroUsd> {
    headers
        .get(X_RAMPART_COST_USD)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_usd)
}

/// Upstream attempts a response or an error reports (`x-rampart-attempts`).
pub(crate) fn reported_attempts(headers: &http::HeaderMap) -> Option<u32> {
    headers
        .get(X_RAMPART_ATTEMPTS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The headers a core error carries, if the error is one.
pub(crate) fn error_headers(e: &BoxError) -> Option<&http::HeaderMap> {
    find_error(e).map(Error::headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_parses_to_micros() {
        assert_eq!(parse_usd("0.000123"), Some(123));
        assert_eq!(parse_usd("1.5"), Some(1_500_000));
        assert_eq!(parse_usd("2"), Some(2_000_000));
        assert_eq!(parse_usd("0.0000001"), Some(1));
        assert_eq!(parse_usd("0.0000000"), Some(0));
        assert_eq!(parse_usd(""), None);
        assert_eq!(parse_usd("-1"), None);
        assert_eq!(parse_usd("1e3"), None);
        assert_eq!(parse_usd("99999999999999999999"), None);
    }
}
