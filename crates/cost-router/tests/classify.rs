#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The heuristic classifier (one test per rule, plus edge cases), closures as classifiers, and the
//! LLM classifier against a scripted service and the simulated provider.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use http::Response;
use rampart_core::{Body, BoxError, ChatRequest, Target};
use rampart_cost_router::classify::parse_tier_answer;
use rampart_cost_router::{
    Classification, Classifier, CostRouterConfig, CostRouterLayer, HeuristicClassifier,
    LlmClassifier, Prompt, Signals, Tier,
};
use rampart_mock::{MockConfig, MockProvider};

fn signals_of(chat: &Arc<ChatRequest>) -> Signals {
    HeuristicClassifier.signals(&Prompt::new(chat))
}

fn signals(content: &str) -> Signals {
    signals_of(&parse(&body("auto", content, None)))
}

fn tier(content: &str) -> Tier {
    signals(content).tier()
}

#[test]
fn rule_short_chat_is_simple() {
    let s = signals("Hi there, how are you today?");
    assert_eq!(s.score, 0);
    assert_eq!(s.tier(), Tier::Simple);
}

#[test]
fn rule_factual_question_lowers_the_score() {
    let s = signals("What is the capital of France?");
    assert!(s.factual);
    assert_eq!(s.score, -1);
    assert_eq!(s.tier(), Tier::Simple);
    // Not when code or reasoning is involved.
    let s = signals("What is wrong with this python function?");
    assert!(s.factual && s.code);
    assert_eq!(s.score, 2);
}

#[test]
fn rule_code_is_medium() {
    let s = signals("Write a Python function that reverses a list.");
    assert!(s.code);
    assert_eq!(s.score, 2);
    assert_eq!(s.tier(), Tier::Medium);
    assert!(signals("```\nlet x = 1;\n```").code);
    assert!(signals("#include <stdio.h>").code);
    assert!(signals("const f = (a) => a + 1").code);
}

#[test]
fn rule_creative_is_medium() {
    let s = signals("Write a poem about autumn leaves.");
    assert!(s.creative);
    assert_eq!(s.tier(), Tier::Medium);
    assert_eq!(tier("Brainstorm a slogan for a bakery"), Tier::Medium);
}

#[test]
fn rule_one_reasoning_cue_is_medium_two_are_complex() {
    let s = signals("Compare REST and gRPC.");
    assert_eq!(s.reasoning_cues, 1);
    assert_eq!(s.tier(), Tier::Medium);
    let s = signals("Prove, step by step, that there are infinitely many primes.");
    assert_eq!(s.reasoning_cues, 2);
    assert_eq!(s.score, 4);
    assert_eq!(s.tier(), Tier::Complex);
    // The same cue twice counts once; spelling variants are one cue.
    let s = signals("step by step, then step-by-step again");
    assert_eq!(s.reasoning_cues, 1);
}

#[test]
fn rule_code_plus_reasoning_is_complex() {
    let s = signals("Debug this Rust code and explain why it deadlocks: fn main() {}");
    assert!(s.code);
    assert!(s.reasoning_cues >= 1);
    assert_eq!(s.tier(), Tier::Complex);
}

#[test]
fn rule_length() {
    // ~600 tokens of neutral text: +1.
    let s = signals(&"lorem ipsum ".repeat(200));
    assert!((500..2000).contains(&s.tokens), "{}", s.tokens);
    assert_eq!(s.score, 1);
    assert_eq!(s.tier(), Tier::Simple);
    // ~3,000 tokens: +2, medium.
    let s = signals(&"lorem ipsum ".repeat(1000));
    assert_eq!(s.score, 2);
    assert_eq!(s.tier(), Tier::Medium);
    // ≥ 8,000 tokens: +4, complex by length alone.
    let s = signals(&"lorem ipsum ".repeat(3000));
    assert!(s.tokens >= 8000);
    assert_eq!(s.tier(), Tier::Complex);
}

#[test]
fn rule_conversation_depth() {
    let mut messages = Vec::new();
    for i in 0..10 {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(serde_json::json!({"role": role, "content": "ok"}));
    }
    let mk = |n: usize| {
        parse(&serde_json::json!({"model": "auto", "messages": &messages[..n]}).to_string())
    };
    assert_eq!(signals_of(&mk(4)).score, 0);
    assert_eq!(signals_of(&mk(5)).score, 1);
    assert_eq!(signals_of(&mk(10)).score, 2);
    // System messages do not count as turns.
    let with_system = parse(
        &serde_json::json!({"model": "auto", "messages": [
            {"role": "system", "content": "be brief"}, {"role": "user", "content": "ok"}
        ]})
        .to_string(),
    );
    assert_eq!(signals_of(&with_system).turns, 1);
}

#[test]
fn rule_tools_add_a_point() {
    let chat = parse(
        &serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": "hello"}],
            "tools": [{"type": "function", "function": {"name": "f"}}]})
        .to_string(),
    );
    let s = signals_of(&chat);
    assert!(s.tools);
    assert_eq!(s.score, 1);
}

#[test]
fn edge_cases() {
    // Word boundaries: "classification" is not "class", "trust" is not "rust".
    let s = signals("I trust the classification.");
    assert!(!s.code);
    // Case-insensitive.
    assert!(signals("WRITE A STORY").creative);
    // Content parts are read.
    let chat = parse(
        &serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Write a poem"}]}]})
        .to_string(),
    );
    assert_eq!(signals_of(&chat).tier(), Tier::Medium);
    // Assistant tool-call messages without content.
    let chat = parse(
        &serde_json::json!({"model": "auto", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": []}]})
        .to_string(),
    );
    assert_eq!(signals_of(&chat).tier(), Tier::Simple);
    // Deterministic.
    assert_eq!(
        signals("Prove it step by step"),
        signals("Prove it step by step")
    );
    // Non-ASCII text is fine.
    assert_eq!(tier("¿Qué hora es? 日本語のテキスト"), Tier::Simple);
}

#[tokio::test]
async fn closures_are_classifiers() {
    let layer = CostRouterLayer::builder()
        .classifier(|_: &Prompt<'_>| Tier::Complex)
        .build()
        .unwrap();
    let d = decide(&layer.handle(), &body("auto", "hi", None), &[])
        .await
        .unwrap();
    assert_eq!(&*d.route, "auto:complex:cheapest");
}

#[test]
fn tier_answers_parse() {
    assert_eq!(parse_tier_answer("Complex."), Some(Tier::Complex));
    assert_eq!(parse_tier_answer(" medium"), Some(Tier::Medium));
    assert_eq!(parse_tier_answer("simple, not complex"), Some(Tier::Simple));
    assert_eq!(parse_tier_answer("no idea"), None);
}

/// A scripted chat service answering `answer`, counting calls and checking the request.
fn scripted(
    answer: &'static str,
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<
    http::Request<Body>,
    Response = Response<Body>,
    Error = BoxError,
    Future = impl Send,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |req: http::Request<Body>| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            let chat = rampart_core::chat_request(&req).unwrap().clone();
            assert_eq!(chat.model(), "deepseek-v3.2");
            assert_eq!(chat.max_output_tokens(), Some(3));
            assert_eq!(
                req.extensions().get::<Target>().unwrap(),
                &Target::new("deepseek", "deepseek-v3.2")
            );
            let b = serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}]});
            Ok::<_, BoxError>(Response::new(Body::from(b.to_string())))
        }
    })
}

#[tokio::test]
async fn llm_classifier_asks_and_caches() {
    let calls = Arc::new(AtomicUsize::new(0));
    let llm = LlmClassifier::cheapest(
        scripted("complex", calls.clone()),
        &rampart_cost_router::Catalog::default(),
    )
    .unwrap()
    .capacity(2);
    assert_eq!(llm.target().model.as_ref(), "deepseek-v3.2");
    let chat = parse(&body("auto", "hi", None));
    let c = llm.classify(&Prompt::new(&chat));
    assert!(matches!(c, Classification::Pending(_)));
    assert_eq!(c.resolve().await, Tier::Complex);
    // Cached: ready at once, no call.
    let c = llm.classify(&Prompt::new(&chat));
    assert!(matches!(c, Classification::Ready(Tier::Complex)));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Bounded: the oldest entry goes.
    for i in 0..3 {
        let chat = parse(&body("auto", &format!("q{i}"), None));
        llm.classify(&Prompt::new(&chat)).resolve().await;
    }
    assert_eq!(llm.cached(), 2);
    assert!(matches!(
        llm.classify(&Prompt::new(&chat)),
        Classification::Pending(_)
    ));
}

#[tokio::test]
async fn llm_classifier_in_the_layer() {
    let calls = Arc::new(AtomicUsize::new(0));
    let llm = LlmClassifier::new(
        scripted("medium", calls.clone()),
        Target::new("deepseek", "deepseek-v3.2"),
    );
    let layer = CostRouterLayer::builder().classifier(llm).build().unwrap();
    let d = decide(&layer.handle(), &body("auto", "What is 2+2?", None), &[])
        .await
        .unwrap();
    assert_eq!(&*d.route, "auto:medium:cheapest");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Explicit models never ask.
    decide(&layer.handle(), &body("gpt-4.1", "x", None), &[])
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn llm_classifier_with_the_simulated_provider_falls_back_to_the_heuristic() {
    // The simulated provider answers words from its vocabulary, never a tier: the heuristic's
    // tier is used and nothing is cached, but the cheap model was asked.
    let mock = MockProvider::new(MockConfig::default());
    let up = upstream(&mock);
    let llm = LlmClassifier::cheapest(up, &rampart_cost_router::Catalog::default()).unwrap();
    let layer = CostRouterLayer::builder()
        .config(CostRouterConfig::default())
        .classifier(llm.clone())
        .build()
        .unwrap();
    let d = decide(
        &layer.handle(),
        &body("auto", "Write a poem about the sea", None),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(&*d.route, "auto:medium:cheapest");
    assert_eq!(mock.calls("deepseek-v3.2"), 1);
    assert_eq!(llm.cached(), 0);
    let req = mock.last_request().unwrap().json().unwrap();
    assert_eq!(req["max_tokens"], 3);
    assert_eq!(req["messages"][1]["content"], "Write a poem about the sea");
}

#[tokio::test(start_paused = true)]
async fn llm_classifier_times_out_to_the_heuristic() {
    let slow = tower::service_fn(|_req: http::Request<Body>| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, BoxError>(Response::new(Body::empty()))
    });
    let llm = LlmClassifier::new(slow, Target::new("deepseek", "deepseek-v3.2"))
        .timeout(Duration::from_millis(100));
    let chat = parse(&body("auto", "Prove it step by step", None));
    assert_eq!(
        llm.classify(&Prompt::new(&chat)).resolve().await,
        Tier::Complex
    );
}
