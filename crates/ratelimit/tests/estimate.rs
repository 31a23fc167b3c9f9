//! Prompt estimators.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use rampart_core::ChatRequest;
use rampart_ratelimit::{BytesEstimator, TokenEstimator};

fn chat(content: &str) -> ChatRequest {
    let body = serde_json::json!({
        "model": "gpt-4.1",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": content},
        ],
    });
    ChatRequest::parse(Bytes::from(body.to_string())).unwrap()
}

#[test]
fn bytes_estimator_is_the_core_estimate() {
    let c = chat("hello there");
    assert_eq!(BytesEstimator.prompt_tokens(&c), c.estimate_prompt_tokens());
}

#[test]
fn closures_are_estimators() {
    let e = |c: &ChatRequest| c.messages().unwrap().len() as u64 * 100;
    assert_eq!(e.prompt_tokens(&chat("x")), 200);
}

#[cfg(feature = "tiktoken")]
#[test]
fn tiktoken_counts_exactly() {
    let e = rampart_ratelimit::TiktokenEstimator::o200k().unwrap();
    // "hello" is one token in o200k_base; each message adds its role and 4 tokens, plus 3.
    let short = e.prompt_tokens(&chat("hello"));
    let long = e.prompt_tokens(&chat(&"hello ".repeat(100)));
    assert!(short < 20, "{short}");
    assert!(
        (100..=110).contains(&(long - short + 1)),
        "{long} vs {short}"
    );
}
