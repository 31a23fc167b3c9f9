//! The shared outcome classifier: what counts as success, failure, rate limiting, or nothing.
//!
//! The circuit breaker and the fallback both decide from these functions, so they always agree.
//!
//! | Observation | Verdict |
//! |---|---|
//! | 2xx headers, then a body that ends `Complete` | `Success` |
//! | connect/TLS errors, timeouts, 500/502/503/504/529 | `Failure` |
//! | a stream that breaks mid-way (`UpstreamError`, `Cut`) | `Failure` (recorded at body end) |
//! | 429 | `RateLimited` (with the upstream's `Retry-After`) |
//! | other 4xx, client cancellations, abandoned attempts, the gateway's own refusals | `Ignored` |

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode, header};

use crate::body::BoxError;
use crate::error::{ErrorKind, find_error};
use crate::facts::{CompletionReport, Outcome};
use crate::headers::RETRY_AFTER_MS;

/// How an attempt went, for health tracking and retry decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It worked.
    Success,
    /// The upstream is unhealthy.
    Failure,
    /// The upstream asked us to slow down.
    RateLimited {
        /// Its `Retry-After` / `retry-after-ms`, when given.
        retry_after: Option<Duration>,
    },
    /// Says nothing about the upstream's health (client error, cancellation, local refusal).
    Ignored,
}

/// Whether a status means the upstream is unhealthy.
pub fn is_failure_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504 | 529)
}

/// Classifies response headers (the body's end is classified by [`classify_report`]).
pub fn classify_status(status: StatusCode, headers: &HeaderMap) -> Verdict {
    if status == StatusCode::TOO_MANY_REQUESTS {
        Verdict::RateLimited {
            retry_after: retry_after(headers),
        }
    } else if is_failure_status(status) {
        Verdict::Failure
    } else if status.is_success() {
        Verdict::Success
    } else {
        Verdict::Ignored
    }
}

/// Classifies an error returned instead of a response.
pub fn classify_error(err: &BoxError) -> Verdict {
    if let Some(e) = find_error(err) {
        return match e.kind() {
            ErrorKind::UpstreamConnect | ErrorKind::UpstreamTimeout | ErrorKind::UpstreamBroken => {
                Verdict::Failure
            }
            ErrorKind::UpstreamStatus { status, .. }
                if *status == StatusCode::TOO_MANY_REQUESTS =>
            {
                Verdict::RateLimited {
                    retry_after: e.retry_after(),
                }
            }
            ErrorKind::UpstreamStatus { status, .. } if is_failure_status(*status) => {
                Verdict::Failure
            }
            ErrorKind::AllCandidatesFailed { .. } => Verdict::Failure,
            _ => Verdict::Ignored,
        };
    }
    // tower's load-shed refusal is local: it says nothing about the upstream.
    if err.is::<tower::load_shed::error::Overloaded>() {
        return Verdict::Ignored;
    }
    // Errors from a foreign inner service: timeouts, I/O, hyper and TLS errors all mean the
    // upstream could not be used.
    Verdict::Failure
}

/// Classifies how a body ended.
pub fn classify_report(report: &CompletionReport) -> Verdict {
    match report.outcome {
        Outcome::Complete => Verdict::Success,
        Outcome::UpstreamError(_) | Outcome::Cut => Verdict::Failure,
        Outcome::ClientGone | Outcome::Abandoned => Verdict::Ignored,
    }
}

/// The delay an upstream asked for: `retry-after-ms`, else `Retry-After` as seconds or an
/// HTTP date. Capped at one day; unparsable values are ignored.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    const CAP: Duration = Duration::from_secs(86_400);
    if let Some(ms) = headers
        .get(RETRY_AFTER_MS)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        // Clamp before converting: a huge value must not overflow Duration.
        return Some(Duration::from_secs_f64(
            (ms / 1000.0).min(CAP.as_secs_f64()),
        ));
    }
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs.min(CAP.as_secs_f64())));
        }
        return None;
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(CAP),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use http::HeaderValue;

    #[test]
    fn statuses() {
        let h = HeaderMap::new();
        for s in [500, 502, 503, 504, 529] {
            assert_eq!(
                classify_status(StatusCode::from_u16(s).unwrap(), &h),
                Verdict::Failure
            );
        }
        for s in [400, 401, 404, 413, 422] {
            assert_eq!(
                classify_status(StatusCode::from_u16(s).unwrap(), &h),
                Verdict::Ignored
            );
        }
        assert_eq!(classify_status(StatusCode::OK, &h), Verdict::Success);
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(
            classify_status(StatusCode::TOO_MANY_REQUESTS, &h),
            Verdict::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        h.remove("retry-after-ms");
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        let future = SystemTime::now() + Duration::from_secs(120);
        h.insert(
            "retry-after",
            HeaderValue::from_str(&httpdate::fmt_http_date(future)).unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
        // Absurd values from a provider are capped, never a panic.
        h.insert("retry-after-ms", HeaderValue::from_static("1e30"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(86_400)));
        h.remove("retry-after-ms");
        h.insert("retry-after", HeaderValue::from_static("1e300"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(86_400)));
    }

    #[test]
    fn errors() {
        let refusal: BoxError =
            Error::rate_limited("requests", "target", "slow down", Duration::from_secs(1)).into();
        assert_eq!(classify_error(&refusal), Verdict::Ignored);
        let open: BoxError = Error::circuit_open("p/m", Duration::from_secs(1)).into();
        assert_eq!(classify_error(&open), Verdict::Ignored);
        let connect: BoxError = Error::new(ErrorKind::UpstreamConnect, "no").into();
        assert_eq!(classify_error(&connect), Verdict::Failure);
        let io: BoxError = Box::new(std::io::Error::other("reset"));
        assert_eq!(classify_error(&io), Verdict::Failure);
        let bad: BoxError = Error::invalid_request("invalid_json", "x").into();
        assert_eq!(classify_error(&bad), Verdict::Ignored);
        let shed: BoxError = Box::new(tower::load_shed::error::Overloaded::new());
        assert_eq!(classify_error(&shed), Verdict::Ignored);
    }

    #[test]
    fn reports() {
        for (o, v) in [
            (Outcome::Complete, Verdict::Success),
            (Outcome::Cut, Verdict::Failure),
            (Outcome::UpstreamError("x".into()), Verdict::Failure),
            (Outcome::ClientGone, Verdict::Ignored),
            (Outcome::Abandoned, Verdict::Ignored),
        ] {
            assert_eq!(classify_report(&CompletionReport::bare(o)), v);
        }
    }
}
