//! Parallel calls through `full_gateway` over loopback: hedged requests and fan-out, wired by
//! `[parallel]`, off by default; every call seen by the limits, budgets and spend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{TestGateway, fast_defaults, single_attempt};
use http::StatusCode;
use rampart_core::pricing::format_usd;
use rampart_mock::{Fault, Stall};
use serde_json::json;

fn usd(s: &str) -> u64 {
    let (int, frac) = s.split_once('.').unwrap();
    int.parse::<u64>().unwrap() * 1_000_000 + format!("{frac:0<6}")[..6].parse::<u64>().unwrap()
}

async fn spend_total(gw: &TestGateway) -> u64 {
    usd(gw.get("/v1/spend", &[]).await.json()["total_usd"]
        .as_str()
        .unwrap())
}

const PANEL: &str = r#"
[parallel.fan_out]
deadline = "20s"
routes.panel = { models = ["gpt-4.1", "claude-sonnet-4.5", "deepseek-v3.2"], strategy = "all" }
routes.quick = { models = ["gpt-4.1", "claude-sonnet-4.5"], strategy = "fastest" }
header = { enabled = true, max_models = 2 }
"#;

#[tokio::test]
async fn a_stalled_primary_is_hedged_and_the_cancelled_call_is_charged_its_prompt() {
    let gw = TestGateway::start(&format!(
        "{}\n[parallel.hedge]\nmodels.\"gpt-4.1\" = {{ delay = \"50ms\" }}\n",
        fast_defaults()
    ))
    .await;
    let openai = gw.mock("openai-sim");
    openai.set_fault(Some("gpt-4.1"), Fault::stalled(Stall::BeforeHeaders));
    let r = gw.post("/v1/chat/completions", common::HELLO, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-rampart-model"), Some("claude-sonnet-4.5"));
    assert_eq!(
        r.header("x-rampart-models-called"),
        Some("gpt-4.1,claude-sonnet-4.5")
    );
    assert_eq!(openai.calls("gpt-4.1"), 1);
    assert_eq!(gw.mock("anthropic-sim").calls("claude-sonnet-4.5"), 1);
    let cost = usd(r.header("x-rampart-cost-usd").unwrap());
    assert!(cost > 0);
    assert_eq!(spend_total(&gw).await, cost);
    // The same answer asked of claude directly costs less: the hedged request also pays the
    // cancelled gpt-4.1 call's prompt estimate at gpt-4.1's input price.
    let direct = gw
        .post(
            "/v1/chat/completions",
            common::HELLO.replace("gpt-4.1", "claude-sonnet-4.5"),
            &[],
        )
        .await;
    assert_eq!(direct.status, StatusCode::OK, "{}", direct.text());
    let alone = usd(direct.header("x-rampart-cost-usd").unwrap());
    assert!(alone > 0 && cost > alone, "hedged {cost}, alone {alone}");
    assert_eq!(spend_total(&gw).await, cost + alone);

    // A stream is hedged the same way and ends cleanly.
    let r = gw
        .chat(json!({"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"Stream please"}]}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-rampart-model"), Some("claude-sonnet-4.5"));
    assert!(r.text().ends_with("data: [DONE]\n\n"), "{}", r.text());
    assert_eq!(openai.calls("gpt-4.1"), 2);
}

#[tokio::test]
async fn fan_out_all_merges_answers_and_charges_every_call() {
    let gw = TestGateway::start(&format!("{}\n{PANEL}", single_attempt())).await;
    gw.mock("deepseek-sim").set_fault(
        Some("deepseek-v3.2"),
        Fault::status_code(StatusCode::INTERNAL_SERVER_ERROR),
    );
    let r = gw
        .chat(json!({"model":"panel","max_tokens":12,"messages":[{"role":"user","content":"Compare two sorting algorithms."}]}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.header("x-rampart-models-called"),
        Some("gpt-4.1,claude-sonnet-4.5,deepseek-v3.2")
    );
    assert_eq!(r.header("x-rampart-route"), Some("fanout:panel:all"));
    let v = r.json();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!(choices[0]["x_rampart_model"], "gpt-4.1");
    assert_eq!(choices[1]["x_rampart_model"], "claude-sonnet-4.5");
    assert_eq!(v["usage"]["completion_tokens"], 24);
    let calls = v["x_rampart_fanout"].as_array().unwrap();
    assert_eq!(calls[2]["model"], "deepseek-v3.2");
    assert_eq!(calls[2]["status"], 500);
    // Every call's cost is in the header and in the spend.
    let sum: u64 = calls[..2]
        .iter()
        .map(|c| usd(c["cost_usd"].as_str().unwrap()))
        .sum();
    assert!(sum > 0);
    assert_eq!(
        r.header("x-rampart-cost-usd"),
        Some(format_usd(sum).as_str())
    );
    assert_eq!(spend_total(&gw).await, sum);
    for (mock, model) in [
        ("openai-sim", "gpt-4.1"),
        ("anthropic-sim", "claude-sonnet-4.5"),
        ("deepseek-sim", "deepseek-v3.2"),
    ] {
        assert_eq!(gw.mock(mock).calls(model), 1, "{model}");
    }
}

#[tokio::test]
async fn each_fan_out_call_counts_against_the_tenant_rate_limit() {
    let config = format!("{}\n{PANEL}", single_attempt())
        .replace("requests_per_minute = 600,", "requests_per_minute = 2,");
    assert!(config.contains("requests_per_minute = 2,"));
    let gw = TestGateway::start(&config).await;
    let r = gw
        .chat(json!({"model":"panel","messages":[{"role":"user","content":"hi"}]}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    let refused: Vec<_> = v["x_rampart_fanout"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == 429)
        .collect();
    assert_eq!(refused.len(), 1, "{v}");
    assert_eq!(refused[0]["error"]["code"], "rate_limit_exceeded");
    // The tenant's two requests are spent: every call refused, one error listing them all.
    let r = gw
        .chat(json!({"model":"quick","messages":[{"role":"user","content":"hi"}]}))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("x-rampart-error-source"), Some("rate_limit"));
    assert_eq!(
        r.header("x-rampart-models-called"),
        Some("gpt-4.1,claude-sonnet-4.5")
    );
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("gpt-4.1: 429") && msg.contains("claude-sonnet-4.5: 429"),
        "{msg}"
    );
}

#[tokio::test]
async fn the_header_fans_out_and_cheapest_picks_the_cheaper_answer() {
    let gw = TestGateway::start(&format!("{}\n{PANEL}", fast_defaults())).await;
    let r = gw
        .post(
            "/v1/chat/completions",
            json!({"model":"gpt-4.1","max_tokens":10,"messages":[{"role":"user","content":"hi"}]})
                .to_string(),
            &[
                ("x-rampart-fanout", "claude-sonnet-4.5, deepseek-v3.2"),
                ("x-rampart-fanout-strategy", "cheapest"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-rampart-model"), Some("deepseek-v3.2"));
    assert_eq!(r.header("x-rampart-route"), Some("fanout:header:cheapest"));
    let cost = usd(r.header("x-rampart-cost-usd").unwrap());
    assert_eq!(spend_total(&gw).await, cost);
    assert_eq!(gw.mock("anthropic-sim").calls("claude-sonnet-4.5"), 1);
    assert_eq!(gw.mock("openai-sim").calls("gpt-4.1"), 0);

    // Too many models, an unknown one, a strategy that cannot stream.
    let r = gw
        .post(
            "/v1/chat/completions",
            common::HELLO,
            &[(
                "x-rampart-fanout",
                "gpt-4.1,claude-sonnet-4.5,deepseek-v3.2",
            )],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["code"], "invalid_header");
    let r = gw
        .post(
            "/v1/chat/completions",
            common::HELLO,
            &[("x-rampart-fanout", "gpt-4.1,gpt-5-secret")],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = gw
        .chat(json!({"model":"panel","stream":true,"messages":[{"role":"user","content":"hi"}]}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.header("x-rampart-error-source"), Some("gateway"));
    assert_eq!(r.json()["error"]["code"], "unsupported_value");
}

#[tokio::test]
async fn a_streamed_fastest_fan_out_streams_one_answer() {
    let gw = TestGateway::start(&format!("{}\n{PANEL}", fast_defaults())).await;
    gw.mock("openai-sim")
        .set_fault(Some("gpt-4.1"), Fault::stalled(Stall::BeforeHeaders));
    let r = gw
        .chat(json!({"model":"quick","stream":true,"messages":[{"role":"user","content":"hi"}]}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-rampart-model"), Some("claude-sonnet-4.5"));
    assert_eq!(r.header("x-rampart-route"), Some("fanout:quick:fastest"));
    let text = r.text();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(text.matches("[DONE]").count(), 1);
}

#[tokio::test]
async fn off_by_default_and_validated_when_configured() {
    let gw = TestGateway::start(&fast_defaults()).await;
    let r = gw
        .chat(json!({"model":"panel","messages":[{"role":"user","content":"hi"}]}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = gw
        .post(
            "/v1/chat/completions",
            common::HELLO,
            &[("x-rampart-fanout", "claude-sonnet-4.5,deepseek-v3.2")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-rampart-model"), Some("gpt-4.1"));
    assert!(r.header("x-rampart-models-called").is_none());

    let parse = |extra: &str| {
        full_gateway::GatewayConfig::parse(&format!("{}\n{extra}", fast_defaults()), "t.toml")
            .unwrap_err()
            .to_string()
    };
    let e = parse("[parallel.fan_out]\nroutes.p = { models = [\"gpt-4.1\", \"gpt-9\"] }");
    assert!(e.contains("parallel.fan_out.routes.p.models[1]"), "{e}");
    let e =
        parse("[parallel.fan_out]\nroutes.auto = { models = [\"gpt-4.1\", \"deepseek-v3.2\"] }");
    assert!(e.contains("parallel.fan_out.routes.auto"), "{e}");
    let e = parse("[parallel.hedge]\nmodels.\"gpt-9\" = { delay = \"1s\" }");
    assert!(e.contains("parallel.hedge.models.\"gpt-9\""), "{e}");
    let e = parse("[parallel.hedge]\ndefault = { delay = \"1s\", max_hedges = 4 }");
    assert!(e.contains("parallel.hedge.default.max_hedges"), "{e}");
}
