//! Errors: [`ConfigError`] for invalid configuration, and the refusals this layer returns, which
//! are core [`rampart_core::Error`]s (`429 rate_limit_exceeded`, `Error::is_refusal()` true).

use std::borrow::Cow;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use rampart_core::{Error, ErrorKind, ErrorSource};

use crate::store::{BucketStatus, LimitKind, Quota, Refusal, Snapshot};

/// A configuration the builder refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A limit of zero (would refuse everything; leave it out for "unlimited").
    #[error("{at}: `{field}` must be at least 1 (leave it out for no limit)")]
    Zero {
        /// Where: `limits`, `models.<name>`, `overrides.<key>`.
        at: String,
        /// The field.
        field: &'static str,
    },
    /// A burst without its rate.
    #[error("{at}: `{field}` is set but its per-minute rate is not")]
    BurstWithoutRate {
        /// Where.
        at: String,
        /// The field.
        field: &'static str,
    },
    /// The key header name is not a valid header name.
    #[error("key header `{0}` is not a valid header name")]
    BadHeader(String),
    /// The scope label is empty.
    #[error("scope must not be empty")]
    EmptyScope,
    /// Per-model limits with a key that does not include the model: every model would share one
    /// bucket per key, rescaled to whichever model came last.
    #[error(
        "models: per-model limits need a key that includes the model (key = \"tenant_model\" or \"target\")"
    )]
    ModelsNeedModelKey,
}

/// `x-ratelimit-limit-requests`.
pub const X_RATELIMIT_LIMIT_REQUESTS: HeaderName =
    HeaderName::from_static("x-ratelimit-limit-requests");
/// `x-ratelimit-remaining-requests`.
pub const X_RATELIMIT_REMAINING_REQUESTS: HeaderName =
    HeaderName::from_static("x-ratelimit-remaining-requests");
/// `x-ratelimit-reset-requests`.
pub const X_RATELIMIT_RESET_REQUESTS: HeaderName =
    HeaderName::from_static("x-ratelimit-reset-requests");
/// `x-ratelimit-limit-tokens`.
pub const X_RATELIMIT_LIMIT_TOKENS: HeaderName =
    HeaderName::from_static("x-ratelimit-limit-tokens");
/// `x-ratelimit-remaining-tokens`.
pub const X_RATELIMIT_REMAINING_TOKENS: HeaderName =
    HeaderName::from_static("x-ratelimit-remaining-tokens");
/// `x-ratelimit-reset-tokens`.
pub const X_RATELIMIT_RESET_TOKENS: HeaderName =
    HeaderName::from_static("x-ratelimit-reset-tokens");

/// Formats a reset time as OpenAI does (Go's duration notation): `"0s"`, `"20ms"`, `"1s"`,
/// `"1.5s"`, `"6m0s"`, `"1h0m0s"`. Rounded up to the millisecond.
pub fn format_reset(d: Duration) -> String {
    let mut out = String::new();
    let _ = write_reset(d, &mut out);
    out
}

fn write_reset(d: Duration, out: &mut impl std::fmt::Write) -> std::fmt::Result {
    let ms = d.as_millis() + u128::from(!d.as_nanos().is_multiple_of(1_000_000));
    if ms == 0 {
        return out.write_str("0s");
    }
    if ms < 1000 {
        write_int(out, ms)?;
        return out.write_str("ms");
    }
    let h = ms / 3_600_000;
    let m = (ms / 60_000) % 60;
    let s = (ms / 1000) % 60;
    let frac = ms % 1000;
    if h > 0 {
        write_int(out, h)?;
        out.write_str("h")?;
    }
    if h > 0 || m > 0 {
        write_int(out, m)?;
        out.write_str("m")?;
    }
    write_int(out, s)?;
    if frac > 0 {
        // Up to three decimals, trailing zeros dropped: 500 -> ".5", 50 -> ".05". The leading
        // 1 of "1ddd" pads them with zeros.
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(frac + 1000);
        out.write_str(".")?;
        out.write_str(digits[1..].trim_end_matches('0'))?;
    }
    out.write_str("s")
}

/// Writes `n` in decimal with `itoa` (this runs for every response of a limited request:
/// `write!` cost ~300 instructions a number).
fn write_int(out: &mut impl std::fmt::Write, n: u128) -> std::fmt::Result {
    out.write_str(itoa::Buffer::new().format(n))
}

/// A small stack buffer for header values.
struct Buf {
    bytes: [u8; 48],
    len: usize,
}

impl std::fmt::Write for Buf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn reset_value(d: Duration) -> Option<HeaderValue> {
    let mut buf = Buf {
        bytes: [0; 48],
        len: 0,
    };
    write_reset(d, &mut buf).ok()?;
    HeaderValue::from_bytes(&buf.bytes[..buf.len]).ok()
}

fn push_status(out: &mut Vec<(HeaderName, HeaderValue)>, s: &BucketStatus, names: [HeaderName; 3]) {
    let [limit, remaining, reset] = names;
    out.push((limit, HeaderValue::from(s.limit)));
    out.push((remaining, HeaderValue::from(s.remaining)));
    if let Some(v) = reset_value(s.reset) {
        out.push((reset, v));
    }
}

fn insert_status(headers: &mut HeaderMap, s: &BucketStatus, names: [HeaderName; 3]) {
    let [limit, remaining, reset] = names;
    headers.insert(limit, HeaderValue::from(s.limit));
    headers.insert(remaining, HeaderValue::from(s.remaining));
    if let Some(v) = reset_value(s.reset) {
        headers.insert(reset, v);
    }
}

/// The `x-ratelimit-*` headers for a snapshot (only for the limited dimensions).
pub fn ratelimit_headers(snapshot: &Snapshot) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(6);
    if let Some(s) = &snapshot.requests {
        push_status(
            &mut out,
            s,
            [
                X_RATELIMIT_LIMIT_REQUESTS,
                X_RATELIMIT_REMAINING_REQUESTS,
                X_RATELIMIT_RESET_REQUESTS,
            ],
        );
    }
    if let Some(s) = &snapshot.tokens {
        push_status(
            &mut out,
            s,
            [
                X_RATELIMIT_LIMIT_TOKENS,
                X_RATELIMIT_REMAINING_TOKENS,
                X_RATELIMIT_RESET_TOKENS,
            ],
        );
    }
    out
}

/// Sets the `x-ratelimit-*` headers of a snapshot on `headers` (replacing any present).
pub fn insert_ratelimit_headers(headers: &mut HeaderMap, snapshot: &Snapshot) {
    headers.reserve(6);
    if let Some(s) = &snapshot.requests {
        insert_status(
            headers,
            s,
            [
                X_RATELIMIT_LIMIT_REQUESTS,
                X_RATELIMIT_REMAINING_REQUESTS,
                X_RATELIMIT_RESET_REQUESTS,
            ],
        );
    }
    if let Some(s) = &snapshot.tokens {
        insert_status(
            headers,
            s,
            [
                X_RATELIMIT_LIMIT_TOKENS,
                X_RATELIMIT_REMAINING_TOKENS,
                X_RATELIMIT_RESET_TOKENS,
            ],
        );
    }
}

fn with_headers(mut e: Error, snapshot: &Snapshot) -> Error {
    for (k, v) in ratelimit_headers(snapshot) {
        e = e.with_header(k, v);
    }
    e
}

/// The 429 for a refusal.
pub(crate) fn refused(
    scope: &str,
    refusal: &Refusal,
    quota: &Quota,
    tokens: u64,
    concurrency_retry_after: Duration,
) -> Error {
    let after = refusal.retry_after.unwrap_or(concurrency_retry_after);
    let wait = format_reset(after);
    let message = match refusal.kind {
        LimitKind::Requests => {
            let (limit, remaining) = refusal
                .snapshot
                .requests
                .map_or((0, 0), |s| (s.limit, s.remaining));
            format!(
                "Rate limit reached for requests ({scope}): limit {limit} per minute, \
                 remaining {remaining}, requested 1. Please try again in {wait}."
            )
        }
        LimitKind::Tokens => {
            let (limit, remaining) = refusal
                .snapshot
                .tokens
                .map_or((0, 0), |s| (s.limit, s.remaining));
            format!(
                "Rate limit reached for tokens ({scope}): limit {limit} per minute, \
                 remaining {remaining}, requested {tokens}. Please try again in {wait}."
            )
        }
        LimitKind::Concurrency => {
            let limit = quota.concurrency.unwrap_or(0);
            format!(
                "Too many concurrent requests ({scope}): limit {limit}. Please try again in {wait}."
            )
        }
    };
    let e = Error::rate_limited(
        refusal.kind.error_type(),
        Cow::Owned(scope.to_owned()),
        message,
        after,
    );
    with_headers(e, &refusal.snapshot)
}

/// The 429 for a request whose own estimate is larger than the whole token burst: waiting would
/// never help, so it carries no `Retry-After`.
pub(crate) fn too_large(scope: &str, tokens: u64, burst: u64, snapshot: &Snapshot) -> Error {
    let e = Error::new(
        ErrorKind::RateLimited {
            limit_type: Cow::Borrowed("tokens"),
            scope: Cow::Owned(scope.to_owned()),
        },
        format!(
            "Request too large ({scope}): this request needs an estimated {tokens} tokens, more \
             than the limit of {burst} tokens per minute allows at once. Reduce the prompt or \
             max_tokens / max_completion_tokens."
        ),
    );
    with_headers(e, snapshot)
}

/// The 503 under `fail_closed`.
pub(crate) fn store_unavailable(cause: crate::store::StoreError) -> Error {
    Error::new(
        ErrorKind::StoreUnavailable {
            source: ErrorSource::RateLimit,
        },
        "The rate limit state store is unavailable; please retry later.",
    )
    .with_cause(cause)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_formats_like_openai() {
        assert_eq!(format_reset(Duration::ZERO), "0s");
        assert_eq!(format_reset(Duration::from_micros(1)), "1ms");
        assert_eq!(format_reset(Duration::from_millis(20)), "20ms");
        assert_eq!(format_reset(Duration::from_secs(1)), "1s");
        assert_eq!(format_reset(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_reset(Duration::from_millis(1250)), "1.25s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
        assert_eq!(format_reset(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format_reset(Duration::from_secs(3725)), "1h2m5s");
        assert_eq!(format_reset(Duration::from_millis(1050)), "1.05s");
        assert_eq!(format_reset(Duration::from_millis(1001)), "1.001s");
        assert_eq!(format_reset(Duration::from_millis(61_200)), "1m1.2s");
        assert_eq!(format_reset(Duration::from_millis(999)), "999ms");
        assert_eq!(format_reset(Duration::from_secs(100 * 3600)), "100h0m0s");
    }
}
