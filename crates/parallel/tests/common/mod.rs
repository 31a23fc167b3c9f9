//! A scripted simulated provider that sees its connections close: per model, a latency, a
//! status, a stream shape and a reported cost; per model, calls started, completed and
//! cancelled (the caller dropped the call or its body before the end).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use rampart_core::tap::tap_response;
use rampart_core::{Body, BoxError, Candidate, ChatRequest, RouteDecision, Target};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;

pub type Svc = BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;

/// How one model behaves.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// Wait before the response head.
    pub head: Duration,
    /// Streams: wait after the role chunk before the first content chunk.
    pub first_token: Duration,
    /// Answer with this status (0: 200).
    pub status: u16,
    /// Never answer.
    pub stall: bool,
    /// Report this cost (`x-rampart-cost-usd`).
    pub cost: Option<&'static str>,
}

impl Behaviour {
    pub fn after(ms: u64) -> Self {
        Self {
            head: Duration::from_millis(ms),
            ..Self::default()
        }
    }
    pub fn failing(status: u16, ms: u64) -> Self {
        Self {
            head: Duration::from_millis(ms),
            status,
            ..Self::default()
        }
    }
    pub fn stalled() -> Self {
        Self {
            stall: true,
            ..Self::default()
        }
    }
    pub fn first_token(mut self, ms: u64) -> Self {
        self.first_token = Duration::from_millis(ms);
        self
    }
    pub fn cost(mut self, usd: &'static str) -> Self {
        self.cost = Some(usd);
        self
    }
}

#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub started: u64,
    pub completed: u64,
    pub cancelled: u64,
}

#[derive(Default)]
struct State {
    behaviour: HashMap<String, Behaviour>,
    counts: HashMap<String, Counts>,
    starts: Vec<(String, Instant)>,
}

#[derive(Clone, Default)]
pub struct Sim(Arc<Mutex<State>>);

/// One open connection: counted as cancelled when dropped before the answer ended.
struct Conn {
    sim: Sim,
    model: String,
    done: bool,
}

impl Conn {
    fn finish(&mut self) {
        self.done = true;
        self.sim.bump(&self.model, |c| c.completed += 1);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if !self.done {
            self.sim.bump(&self.model, |c| c.cancelled += 1);
        }
    }
}

impl Sim {
    pub fn new(models: &[(&str, Behaviour)]) -> Self {
        let sim = Sim::default();
        for (m, b) in models {
            sim.set(m, b.clone());
        }
        sim
    }

    pub fn set(&self, model: &str, b: Behaviour) {
        self.0.lock().unwrap().behaviour.insert(model.to_owned(), b);
    }

    fn bump(&self, model: &str, f: impl FnOnce(&mut Counts)) {
        let mut s = self.0.lock().unwrap();
        f(s.counts.entry(model.to_owned()).or_default());
    }

    pub fn counts(&self, model: &str) -> Counts {
        self.0
            .lock()
            .unwrap()
            .counts
            .get(model)
            .copied()
            .unwrap_or_default()
    }

    pub fn total_started(&self) -> u64 {
        self.0
            .lock()
            .unwrap()
            .counts
            .values()
            .map(|c| c.started)
            .sum()
    }

    /// (model, when) of every call, in order.
    pub fn starts(&self) -> Vec<(String, Instant)> {
        self.0.lock().unwrap().starts.clone()
    }

    pub fn service(&self) -> Svc {
        let sim = self.clone();
        BoxCloneSyncService::new(tower::service_fn(move |req: Request<Body>| {
            let sim = sim.clone();
            async move { sim.answer(req).await }
        }))
    }

    async fn answer(self, req: Request<Body>) -> Result<Response<Body>, BoxError> {
        let started = Instant::now();
        let chat = rampart_core::chat_request(&req)
            .cloned()
            .expect("a parsed request");
        let model = chat.model().to_owned();
        let target = req
            .extensions()
            .get::<Target>()
            .cloned()
            .unwrap_or_else(|| Target::new("sim", model.clone()));
        let b = {
            let mut s = self.0.lock().unwrap();
            s.starts.push((model.clone(), started));
            s.counts.entry(model.clone()).or_default().started += 1;
            s.behaviour.get(&model).cloned().unwrap_or_default()
        };
        let mut conn = Conn {
            sim: self.clone(),
            model: model.clone(),
            done: false,
        };
        if b.stall {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(b.head).await;
        let status = if b.status == 0 { 200 } else { b.status };
        let mut builder = Response::builder().status(StatusCode::from_u16(status).unwrap());
        if let Some(c) = b.cost {
            builder = builder.header("x-rampart-cost-usd", c);
        }
        if status == 429 {
            builder = builder.header("retry-after", "2");
        }
        let resp = if status != 200 {
            conn.finish();
            builder
                .header("content-type", "application/json")
                .body(Body::from(format!(
                    r#"{{"error":{{"message":"{model} failed","type":"server_error","param":null,"code":"sim_{status}"}}}}"#
                )))
                .unwrap()
        } else if chat.is_stream() {
            builder
                .header("content-type", "text/event-stream")
                .body(stream_body(conn, &model, b.first_token))
                .unwrap()
        } else {
            conn.finish();
            builder
                .header("content-type", "application/json")
                .body(Body::from(answer_json(&model)))
                .unwrap()
        };
        Ok(tap_response(
            resp,
            target,
            Arc::from(model.as_str()),
            started,
            false,
        ))
    }
}

pub fn answer_json(model: &str) -> String {
    format!(
        r#"{{"id":"id-{model}","object":"chat.completion","created":7,"model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"answer from {model}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}}}"#
    )
}

fn chunk(model: &str, delta: &str, finish: &str) -> Bytes {
    Bytes::from(format!(
        "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"{model}\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
    ))
}

/// A role chunk at once, the first content after `first_token`, a finish chunk, `[DONE]`; the
/// connection is complete only once `[DONE]` was read.
fn stream_body(conn: Conn, model: &str, first_token: Duration) -> Body {
    let model = model.to_owned();
    let stream = futures_util::stream::unfold((0u8, conn), move |(step, mut conn)| {
        let model = model.clone();
        async move {
            let data = match step {
                0 => chunk(&model, r#"{"role":"assistant","content":""}"#, "null"),
                1 => {
                    tokio::time::sleep(first_token).await;
                    chunk(&model, &format!(r#"{{"content":"from {model}"}}"#), "null")
                }
                2 => chunk(&model, "{}", "\"stop\""),
                3 => {
                    conn.finish();
                    Bytes::from_static(b"data: [DONE]\n\n")
                }
                _ => return None,
            };
            Some((Ok::<_, BoxError>(Frame::data(data)), (step + 1, conn)))
        }
    });
    Body::new(StreamBody::new(stream))
}

/// A parsed request for `model` (as the edge adapter leaves it).
pub fn request(model: &str, stream: bool) -> Request<Body> {
    let body = format!(
        r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"hello"}}]}}"#
    );
    let chat = Arc::new(ChatRequest::parse(Bytes::from(body)).unwrap());
    let mut req = Request::post("/v1/chat/completions")
        .body(Body::from_bytes(chat.raw().clone()))
        .unwrap();
    req.extensions_mut().insert(chat);
    req
}

/// A request as a router leaves it: the model rewritten to the first candidate, its target and
/// a decision over `models` (provider `p-<model>`).
pub fn routed(models: &[&str], stream: bool) -> Request<Body> {
    let mut req = request(models[0], stream);
    let cands: Vec<Candidate> = models
        .iter()
        .map(|m| Candidate::new(Target::new(format!("p-{m}"), *m)))
        .collect();
    req.extensions_mut().insert(cands[0].target.clone());
    req.extensions_mut()
        .insert(RouteDecision::new(cands, "explicit").unwrap());
    req
}

pub async fn body_string(resp: Response<Body>) -> String {
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(b.to_vec()).unwrap()
}

pub async fn body_json(resp: Response<Body>) -> serde_json::Value {
    serde_json::from_str(&body_string(resp).await).unwrap()
}

pub fn header<'a>(resp: &'a Response<Body>, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
}
