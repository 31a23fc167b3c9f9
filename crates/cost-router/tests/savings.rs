#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The savings replay (examples/savings.rs) as a test: the mix is classified as written and
//! routing saves a measured share of the all-gpt-4.1 cost.

#[path = "../examples/savings.rs"]
#[allow(dead_code)]
mod savings;

use rampart_cost_router::Tier;

#[tokio::test]
async fn routing_saves_against_everything_on_gpt_4_1() {
    let r = savings::replay(2).await.unwrap();
    assert_eq!(r.requests, 200);
    for ((class, tier), n) in &r.confusion {
        assert_eq!(class.as_str(), tier, "{n} {class} prompts routed as {tier}");
    }
    assert_eq!(r.served["deepseek-v3.2"], 120);
    assert_eq!(r.served["gemini-2.5-flash"], 60);
    assert_eq!(r.served["gpt-4.1"], 20);
    assert!(r.saving() > 0.4, "saving {}", r.saving());
    let _ = Tier::Simple;
}
