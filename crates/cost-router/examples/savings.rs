//! Savings report: replays a fixed mix of requests (60 % simple, 30 % medium, 10 % complex
//! prompts) through the router and the simulated provider, once routed (`auto`) and once with
//! everything on `gpt-4.1`, and prints both costs as measured from the provider's usage.
//!
//! `cargo run -p rampart-cost-router --example savings`
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;

use http::Request;
use rampart_core::pricing::format_usd;
use rampart_core::{Body, BoxError, ChatRequest, MicroUsd, Tenant};
use rampart_cost_router::{CostRouterConfig, CostRouterLayer, Tier};
use rampart_mock::{MockConfig, MockProvider};
use rampart_upstream::{Timeouts, Upstream};
use tower::{Layer, ServiceExt};

const SIMPLE: [&str; 6] = [
    "What is the capital of Portugal?",
    "Translate 'good morning' to French.",
    "How many days are there in a leap year?",
    "Who was Ada Lovelace?",
    "Define photosynthesis in one sentence.",
    "When did the Berlin Wall fall?",
];
const MEDIUM: [&str; 3] = [
    "Write a Python function that removes duplicates from a list while keeping the order.",
    "Write a short poem about the first snow in the mountains.",
    "Write a product description for a reusable water bottle, with a catchy slogan.",
];
const COMPLEX: [&str; 1] = [
    "Prove step by step that there are infinitely many primes, then analyze how the proof \
     changes for primes of the form 4k+3.",
];

/// One replayed request: its intended class, prompt and output limit.
pub struct Item {
    /// The tier the prompt was written for.
    pub class: Tier,
    /// The prompt.
    pub prompt: String,
    /// `max_tokens`.
    pub max_tokens: u64,
}

/// The fixed mix: 100 requests per round, `rounds` rounds (60 simple, 30 medium, 10 complex).
pub fn mix(rounds: usize) -> Vec<Item> {
    let mut out = Vec::new();
    for r in 0..rounds {
        for i in 0..10 {
            for _ in 0..6 {
                let p = SIMPLE[(i + r) % SIMPLE.len()];
                out.push(Item {
                    class: Tier::Simple,
                    prompt: p.to_owned(),
                    max_tokens: 60,
                });
            }
            for _ in 0..3 {
                let p = MEDIUM[(i + r) % MEDIUM.len()];
                out.push(Item {
                    class: Tier::Medium,
                    prompt: p.to_owned(),
                    max_tokens: 300,
                });
            }
            out.push(Item {
                class: Tier::Complex,
                prompt: COMPLEX[0].to_owned(),
                max_tokens: 800,
            });
        }
    }
    out
}

/// What a replay measured.
pub struct Report {
    /// Requests replayed (per arm).
    pub requests: usize,
    /// Spend with `auto` routing, micro-USD.
    pub routed: MicroUsd,
    /// Spend with every request on gpt-4.1, micro-USD.
    pub baseline: MicroUsd,
    /// Served model counts with routing.
    pub served: BTreeMap<String, u64>,
    /// (intended class, routed tier) counts.
    pub confusion: BTreeMap<(Tier, String), u64>,
}

impl Report {
    /// The saving as a fraction of the baseline.
    pub fn saving(&self) -> f64 {
        1.0 - self.routed as f64 / self.baseline.max(1) as f64
    }
}

fn request(tenant: &str, model: &str, item: &Item) -> Result<Request<Body>, BoxError> {
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": item.prompt}],
        "max_tokens": item.max_tokens,
    })
    .to_string();
    let chat = std::sync::Arc::new(ChatRequest::parse(body.into())?);
    let mut req =
        Request::post("/v1/chat/completions").body(Body::from_bytes(chat.raw().clone()))?;
    req.extensions_mut().insert(chat);
    req.extensions_mut().insert(Tenant::new(tenant));
    Ok(req)
}

/// Replays `rounds` × 100 requests through router + upstream + simulated provider.
pub async fn replay(rounds: usize) -> Result<Report, BoxError> {
    let layer = CostRouterLayer::from_config(CostRouterConfig::default())?;
    let mock = MockProvider::new(MockConfig::default());
    let mut b = Upstream::builder();
    for m in layer.handle().catalog().models() {
        b = b.model(m.name(), m.provider(), None);
    }
    for p in ["deepseek", "gemini", "openai", "anthropic"] {
        b = b.service_provider(p, mock.service(), Timeouts::default());
    }
    let svc = layer.layer(b.build()?);
    let items = mix(rounds);
    let mut confusion = BTreeMap::new();
    let mut served = BTreeMap::new();
    for item in &items {
        let resp = svc
            .clone()
            .oneshot(request("routed", "auto", item)?)
            .await?;
        let route = resp.headers()["x-rampart-route"].to_str()?.to_owned();
        let model = resp.headers()["x-rampart-model"].to_str()?.to_owned();
        let tier = route.split(':').nth(1).unwrap_or("?").to_owned();
        *confusion.entry((item.class, tier)).or_insert(0) += 1;
        *served.entry(model).or_insert(0) += 1;
        resp.into_body().collect_limited(1 << 20).await?;
        let resp = svc
            .clone()
            .oneshot(request("baseline", "gpt-4.1", item)?)
            .await?;
        resp.into_body().collect_limited(1 << 20).await?;
    }
    let h = layer.handle();
    Ok(Report {
        requests: items.len(),
        routed: h.spend("routed"),
        baseline: h.spend("baseline"),
        served,
        confusion,
    })
}

#[allow(dead_code)]
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let r = replay(10).await?;
    println!(
        "Replayed {} requests (60 % simple, 30 % medium, 10 % complex prompts) per arm.",
        r.requests
    );
    println!();
    println!("| Arm | Cost (USD) |");
    println!("|---|---|");
    println!("| everything on gpt-4.1 | {} |", format_usd(r.baseline));
    println!("| routed (`auto`) | {} |", format_usd(r.routed));
    println!();
    println!("Saving: {:.1} %", r.saving() * 100.0);
    println!();
    println!("Served with routing: {:?}", r.served);
    println!("Intended class → routed tier: {:?}", r.confusion);
    Ok(())
}
