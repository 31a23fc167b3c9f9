//! Shared test helpers: a scripted inner service that records every call.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use rampart_core::tap::tap_response;
use rampart_core::{
    Body, BoxError, Candidate, ChatRequest, Completion, ResponseFacts, RouteDecision, Target,
};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;

pub type Svc = BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;

/// What the scripted service answers.
pub enum Reply {
    /// 200 JSON answer naming the model.
    Ok,
    /// An error status with an OpenAI error body, optional `retry-after-ms`.
    Status(u16, Option<Duration>),
    /// A status with this JSON body.
    Body(u16, &'static str),
    /// An error instead of a response.
    Err(BoxError),
    /// Never answers.
    Pending,
}

/// One call the scripted service saw.
#[derive(Clone, Debug)]
pub struct Call {
    /// The model of the `Arc<ChatRequest>` extension.
    pub model: String,
    /// The `Target` extension.
    pub target: Option<Target>,
    /// When (tokio time).
    pub at: Instant,
    /// The completion handle of the response it gave (when a response).
    pub completion: Option<Completion>,
}

#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Call>>>);

impl Log {
    pub fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap().clone()
    }
    pub fn models(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.model).collect()
    }
    pub fn count(&self, model: &str) -> usize {
        self.calls().iter().filter(|c| c.model == model).count()
    }
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// A service answering by `script(model, n)`, `n` the index of the call for that model.
pub fn scripted(script: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) -> (Svc, Log) {
    let log = Log::default();
    let script = Arc::new(script);
    let l = log.clone();
    let svc = tower::service_fn(move |req: Request<Body>| {
        let log = l.clone();
        let script = script.clone();
        async move {
            let chat = rampart_core::chat_request(&req)
                .cloned()
                .expect("parsed request");
            let target = req.extensions().get::<Target>().cloned();
            let model = chat.model().to_owned();
            let n = log.count(&model);
            let idx = {
                let mut calls = log.0.lock().unwrap();
                calls.push(Call {
                    model: model.clone(),
                    target: target.clone(),
                    at: Instant::now(),
                    completion: None,
                });
                calls.len() - 1
            };
            let reply = script(&model, n);
            let resp = match reply {
                Reply::Ok => json_response(200, &answer(&model)),
                Reply::Status(s, ra) => {
                    let mut r = json_response(s, &error_json(s));
                    if let Some(ra) = ra {
                        r.headers_mut().insert(
                            "retry-after-ms",
                            ra.as_millis().to_string().parse().unwrap(),
                        );
                    }
                    r
                }
                Reply::Body(s, b) => json_response(s, b),
                Reply::Err(e) => return Err(e),
                Reply::Pending => std::future::pending().await,
            };
            let t = target.unwrap_or_else(|| Target::new("default", model.clone()));
            let resp = tap_response(resp, t, Arc::from(model.as_str()), Instant::now(), false);
            let facts = resp.extensions().get::<ResponseFacts>().cloned().unwrap();
            log.0.lock().unwrap()[idx].completion = Some(facts.completion);
            Ok::<_, BoxError>(resp)
        }
    });
    (BoxCloneSyncService::new(svc), log)
}

pub fn answer(model: &str) -> String {
    format!(
        r#"{{"id":"x","object":"chat.completion","created":1,"model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"hi from {model}"}},"finish_reason":"stop"}}]}}"#
    )
}

pub fn error_json(status: u16) -> String {
    format!(
        r#"{{"error":{{"message":"upstream said {status}","type":"server_error","param":null,"code":null}}}}"#
    )
}

pub fn json_response(status: u16, body: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json")
        .body(Body::from_bytes(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap()
}

/// A parsed chat request for `model` (as the edge adapter leaves it).
pub fn request(model: &str) -> Request<Body> {
    request_json(&format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"hello"}}]}}"#
    ))
}

pub fn stream_request(model: &str) -> Request<Body> {
    request_json(&format!(
        r#"{{"model":"{model}","stream":true,"messages":[{{"role":"user","content":"hello"}}]}}"#
    ))
}

pub fn request_json(body: &str) -> Request<Body> {
    let chat = Arc::new(ChatRequest::parse(Bytes::copy_from_slice(body.as_bytes())).unwrap());
    let mut req = Request::post("/v1/chat/completions")
        .body(Body::from_bytes(chat.raw().clone()))
        .unwrap();
    req.extensions_mut().insert(chat);
    req
}

/// A request carrying a router decision over `candidates` (provider `p`).
pub fn decided(model: &str, candidates: &[(&str, Option<u64>)]) -> Request<Body> {
    let mut req = request(model);
    let cands = candidates
        .iter()
        .map(|(m, w)| {
            let c = Candidate::new(Target::new("p", *m));
            match w {
                Some(w) => c.with_context_window(*w),
                None => c,
            }
        })
        .collect();
    req.extensions_mut()
        .insert(RouteDecision::new(cands, "test").unwrap());
    req
}

/// A resolver knowing `models` on provider `p`.
pub fn resolver(
    models: &'static [&'static str],
) -> impl Fn(&str) -> Option<Candidate> + Send + Sync + 'static {
    move |m: &str| {
        models
            .contains(&m)
            .then(|| Candidate::new(Target::new("p", m)))
    }
}

pub async fn body_string(resp: Response<Body>) -> String {
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(b.to_vec()).unwrap()
}

pub fn header<'a>(resp: &'a Response<Body>, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
}

/// A connect-style error from a foreign service.
pub fn io_error() -> BoxError {
    Box::new(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "reset by https://secret.internal.example/",
    ))
}
