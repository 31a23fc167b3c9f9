//! Answers of a fan-out: every success merged into one completion (`all`), or one error listing
//! each model's outcome.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use rampart_core::headers::{
    X_RAMPART_ATTEMPTS, X_RAMPART_CACHE, X_RAMPART_COST_USD, X_RAMPART_MODEL, X_RAMPART_PROVIDER,
};
use rampart_core::openai::{ChatCompletion, CompletionTokensDetails, PromptTokensDetails};
use rampart_core::pricing::format_usd;
use rampart_core::tap::tap_response;
use rampart_core::{Body, Error, ErrorKind, ResponseFacts, Target, Usage};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::fanout::{Failure, Outcome, Plan, Totals, decorate};

/// The extension field naming, on each merged choice, the model that wrote it.
pub const CHOICE_MODEL_FIELD: &str = "x_rampart_model";
/// The extension field listing, on a merged completion, every call and how it ended.
pub const CALLS_FIELD: &str = "x_rampart_fanout";

/// The most characters of one model's error message quoted in a combined error.
const MAX_QUOTED: usize = 300;

fn model_at(plan: &Plan, i: usize) -> &str {
    plan.models.get(i).map_or("?", |m| m)
}

/// The model that actually served an answer: what the inner stack says, else the one asked.
fn served_model(headers: &HeaderMap, facts: Option<&ResponseFacts>, asked: &str) -> String {
    headers
        .get(X_RAMPART_MODEL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| facts.map(|f| f.target.model.to_string()))
        .unwrap_or_else(|| asked.to_owned())
}

fn failure_entry(model: &str, f: &Failure) -> Value {
    json!({
        "model": model,
        "status": f.status.as_u16(),
        "error": { "code": f.code, "message": f.message },
    })
}

fn add_usage(acc: &mut Usage, u: &Usage) {
    acc.prompt_tokens += u.prompt_tokens;
    acc.completion_tokens += u.completion_tokens;
    acc.total_tokens += u.total_tokens;
    if u.cached_tokens() > 0 {
        let d = acc
            .prompt_tokens_details
            .get_or_insert_with(PromptTokensDetails::default);
        d.cached_tokens = Some(d.cached_tokens.unwrap_or(0) + u.cached_tokens());
    }
    if u.reasoning_tokens() > 0 {
        let d = acc
            .completion_tokens_details
            .get_or_insert_with(CompletionTokensDetails::default);
        d.reasoning_tokens = Some(d.reasoning_tokens.unwrap_or(0) + u.reasoning_tokens());
    }
}

/// `x-rampart-cache` of a merged answer: `hit` when every answer was, `miss` when any was.
fn cache_status(statuses: &[Option<String>]) -> Option<&'static str> {
    if statuses.is_empty() || statuses.iter().any(Option::is_none) {
        return None;
    }
    let all = |s: &str| statuses.iter().all(|x| x.as_deref() == Some(s));
    if all("hit") {
        Some("hit")
    } else if statuses.iter().any(|x| x.as_deref() == Some("miss")) {
        Some("miss")
    } else {
        Some("bypass")
    }
}

/// `all`: every success as separate choices, in the configured order, each labelled with its
/// model ([`CHOICE_MODEL_FIELD`]); usage summed; every call listed ([`CALLS_FIELD`]). Every call
/// failing is the combined error of [`all_failed`].
pub(crate) fn all(
    plan: &Plan,
    outcomes: &mut [Outcome],
    started: Instant,
) -> Result<Response<Body>, Error> {
    let totals = Totals::of(outcomes);
    let mut answers: Vec<(HeaderMap, String, ChatCompletion)> = Vec::new();
    let mut calls: Vec<Value> = Vec::new();
    for (i, slot) in outcomes.iter_mut().enumerate() {
        let model = model_at(plan, i);
        if !matches!(slot, Outcome::Success(_)) {
            match slot {
                Outcome::Failed(f) => calls.push(failure_entry(model, f)),
                Outcome::TimedOut(c) => calls.push(failure_entry(
                    model,
                    &Failure::timeout(plan.deadline).charged(*c),
                )),
                _ => calls.push(failure_entry(model, &Failure::timeout(plan.deadline))),
            }
            continue;
        }
        let Outcome::Success(resp) = std::mem::replace(slot, Outcome::Cancelled(0)) else {
            continue;
        };
        let (parts, body) = resp.into_parts();
        let facts = parts.extensions.get::<ResponseFacts>();
        let served = served_model(&parts.headers, facts, model);
        let parsed = body
            .as_bytes()
            .and_then(|b| serde_json::from_slice::<ChatCompletion>(b).ok());
        match parsed {
            Some(c) => {
                calls.push(json!({
                    "model": model,
                    "served_model": served,
                    "status": parts.status.as_u16(),
                    "cost_usd": crate::branch::reported_cost(&parts.headers).map(format_usd),
                }));
                answers.push((parts.headers, served, c));
            }
            None => {
                let f = Failure::broken(
                    "The answer is not a chat completion.".to_owned(),
                    &parts.headers,
                );
                calls.push(failure_entry(model, &f));
                *slot = Outcome::Failed(f);
            }
        }
    }
    let Some((first_headers, _, first)) = answers.first() else {
        return Err(all_failed(plan, outcomes));
    };
    let mut merged = ChatCompletion {
        id: first.id.clone(),
        object: "chat.completion".to_owned(),
        created: first.created,
        model: plan.name.to_string(),
        choices: Vec::new(),
        usage: None,
        extra: Map::new(),
    };
    let mut headers = first_headers.clone();
    let mut caches: Vec<Option<String>> = Vec::new();
    let mut usage: Option<Usage> = None;
    for (h, served, c) in &answers {
        caches.push(
            h.get(X_RAMPART_CACHE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        );
        for choice in &c.choices {
            let mut choice = choice.clone();
            choice.index = u32::try_from(merged.choices.len()).unwrap_or(u32::MAX);
            choice
                .extra
                .insert(CHOICE_MODEL_FIELD.to_owned(), Value::String(served.clone()));
            merged.choices.push(choice);
        }
        if let Some(u) = &c.usage {
            add_usage(usage.get_or_insert_with(Usage::default), u);
        }
    }
    merged.usage = usage;
    merged
        .extra
        .insert(CALLS_FIELD.to_owned(), Value::Array(calls));

    for name in [
        header::CONTENT_LENGTH,
        X_RAMPART_PROVIDER,
        X_RAMPART_COST_USD,
        X_RAMPART_ATTEMPTS,
        X_RAMPART_CACHE,
    ] {
        headers.remove(name);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&plan.name) {
        headers.insert(X_RAMPART_MODEL, v);
    }
    if let Some(c) = cache_status(&caches) {
        headers.insert(X_RAMPART_CACHE, HeaderValue::from_static(c));
    }
    decorate(&mut headers, plan, totals, true);
    let mut resp = Response::new(Body::json(&merged));
    *resp.headers_mut() = headers;
    let name: Arc<str> = plan.name.clone();
    Ok(tap_response(
        resp,
        Target::new("fanout", name.clone()),
        name,
        started,
        false,
    ))
}

fn quote(s: &str) -> &str {
    if s.len() <= MAX_QUOTED {
        return s;
    }
    let mut end = MAX_QUOTED;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Every call failed: one error listing each model's outcome. When every call failed the same
/// way (same status, code and source) that error's kind is kept (a 429 stays a 429 with its
/// source); otherwise it is `upstream_error` with status 502.
pub(crate) fn all_failed(plan: &Plan, outcomes: &[Outcome]) -> Error {
    let timeout = Failure::timeout(plan.deadline);
    let mut items: Vec<String> = Vec::new();
    let mut kinds: Vec<&ErrorKind> = Vec::new();
    let mut retry: Option<std::time::Duration> = None;
    for (i, o) in outcomes.iter().enumerate() {
        let model = model_at(plan, i);
        let f = match o {
            Outcome::Failed(f) => f,
            Outcome::TimedOut(_) => &timeout,
            Outcome::Cancelled(_) | Outcome::Success(_) => {
                items.push(format!("{model}: cancelled"));
                continue;
            }
        };
        kinds.push(&f.kind);
        if let Some(ra) = f.retry_after {
            retry = Some(retry.map_or(ra, |r| r.min(ra)));
        }
        items.push(format!(
            "{model}: {} {} ({})",
            f.status.as_u16(),
            f.code.as_deref().unwrap_or("error"),
            quote(f.message.trim_end_matches('.'))
        ));
    }
    let totals = Totals::of(outcomes);
    let same = kinds.first().filter(|k| kinds.iter().all(|x| x == *k));
    let kind = match same {
        Some(k) => (*k).clone(),
        None => ErrorKind::AllCandidatesFailed {
            status: StatusCode::BAD_GATEWAY,
            attempts: totals.attempts.unwrap_or(0),
        },
    };
    let mut err = Error::new(
        kind,
        format!("Every model of the fan-out failed: {}.", items.join("; ")),
    );
    if let Some(ra) = retry {
        err = err.with_retry_after(ra);
    }
    let mut headers = HeaderMap::new();
    decorate(&mut headers, plan, totals, true);
    if !headers.contains_key(X_RAMPART_COST_USD) {
        headers.insert(X_RAMPART_COST_USD, HeaderValue::from_static("0.000000"));
    }
    for (name, value) in &headers {
        err = err.with_header(name.clone(), value.clone());
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_status_of_a_merge() {
        let s = |v: &[&str]| v.iter().map(|x| Some((*x).to_owned())).collect::<Vec<_>>();
        assert_eq!(cache_status(&s(&["hit", "hit"])), Some("hit"));
        assert_eq!(cache_status(&s(&["hit", "miss"])), Some("miss"));
        assert_eq!(cache_status(&s(&["bypass", "hit"])), Some("bypass"));
        assert_eq!(cache_status(&[None]), None);
    }

    #[test]
    fn usage_sums_details() {
        let mut acc = Usage::default();
        let u = Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            total_tokens: 15,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: Some(4),
                ..Default::default()
            }),
            ..Default::default()
        };
        add_usage(&mut acc, &u);
        add_usage(&mut acc, &u);
        assert_eq!(acc.total_tokens, 30);
        assert_eq!(acc.cached_tokens(), 8);
        assert_eq!(acc.reasoning_tokens(), 0);
    }
}
