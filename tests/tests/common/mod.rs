//! Shared helpers: start a gateway on loopback, call it over HTTP.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use full_gateway::{Gateway, GatewayConfig};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;

pub struct TestGateway {
    pub addr: SocketAddr,
    pub mocks: std::collections::BTreeMap<String, rampart_mock::MockProvider>,
    pub breakers: rampart_circuit_breaker::BreakerHandle,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<()>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body failed part-way (the connection was cut).
    pub body_error: bool,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The embedded defaults without simulated latency (tests assert behaviour, not timing).
pub fn fast_defaults() -> String {
    full_gateway::config::EMBEDDED_DEFAULTS
        .lines()
        .filter(|l| !l.starts_with("mock = "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// [`fast_defaults`] without fallback chains: each model is served by its own target only.
pub fn no_fallbacks() -> String {
    fast_defaults()
        .lines()
        .filter(|l| !l.starts_with("fallbacks = "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One attempt per request, no fallback chains: each layer's own behaviour, unretried.
pub fn single_attempt() -> String {
    no_fallbacks().replace("max_attempts = 3", "max_attempts = 1")
}

impl TestGateway {
    pub async fn start(toml: &str) -> Self {
        let config = GatewayConfig::parse(toml, "test config").expect("valid config");
        Self::start_config(config).await
    }

    pub async fn start_config(config: GatewayConfig) -> Self {
        Self::start_with_secrets(config, &[]).await
    }

    /// Starts with provider keys given as (variable, value) instead of the environment.
    pub async fn start_with_secrets(config: GatewayConfig, secrets: &[(&str, &str)]) -> Self {
        let header_timeout = config.server.header_read_timeout;
        let grace = config.server.shutdown_grace;
        let secrets: Vec<(String, String)> = secrets
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let gateway: Gateway = full_gateway::build_with_secrets(config, |var| {
            secrets
                .iter()
                .find(|(k, _)| k == var)
                .map(|(_, v)| v.clone())
        })
        .expect("gateway builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let mocks = gateway.mocks.clone();
        let breakers = gateway.breakers.clone();
        let task = tokio::spawn(full_gateway::server::serve(
            listener,
            gateway.router,
            header_timeout,
            grace,
            async move {
                let _ = rx.await;
            },
        ));
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self {
            addr,
            mocks,
            breakers,
            shutdown: Some(tx),
            task: Some(task),
            client,
        }
    }

    pub fn mock(&self, name: &str) -> &rampart_mock::MockProvider {
        &self.mocks[name]
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn request(&self, req: Request<Full<Bytes>>) -> Reply {
        let resp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .expect("gateway answered in time")
            .expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut body = resp.into_body();
        let mut bytes = Vec::new();
        let mut body_error = false;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(d) = f.into_data() {
                        bytes.extend_from_slice(&d);
                    }
                }
                Err(_) => {
                    body_error = true;
                    break;
                }
            }
        }
        Reply {
            status,
            headers,
            body: Bytes::from(bytes),
            body_error,
        }
    }

    pub async fn post(
        &self,
        path: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut b = Request::post(self.url(path)).header("content-type", "application/json");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.request(b.body(Full::new(body.into())).unwrap()).await
    }

    pub async fn chat(&self, body: serde_json::Value) -> Reply {
        self.post("/v1/chat/completions", body.to_string(), &[])
            .await
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut b = Request::get(self.url(path));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.request(b.body(Full::new(Bytes::new())).unwrap()).await
    }

    /// Signals shutdown and returns the server task.
    pub fn begin_shutdown(&mut self) -> tokio::task::JoinHandle<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("not shut down yet")
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Parses an SSE body into its `data:` payloads.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|ev| {
            ev.lines()
                .find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                .map(str::to_owned)
        })
        .collect()
}

/// A one-shot raw HTTP responder on loopback: answers every connection with `response` bytes.
pub async fn raw_upstream(response: &'static str) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut seen = Vec::new();
                // Read until the end of the headers and the body (Content-Length).
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    seen.extend_from_slice(&buf[..n]);
                    if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if seen.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let _ = s.write_all(response.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A loopback address nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

pub const HELLO: &str =
    r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"Say hello to the gateway"}]}"#;
