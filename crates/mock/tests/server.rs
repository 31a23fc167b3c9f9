//! The loopback HTTP server answers as the in-process service does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{events, simple};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rampart_mock::{Fault, MockConfig, MockProvider, MockServer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn post(
    server: &MockServer,
    body: &Value,
) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
    let req = Request::post(format!("{}/chat/completions", server.base_url()))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-test")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    client().request(req).await
}

async fn in_process(mock: &MockProvider, body: &Value) -> Bytes {
    let req = common::chat(body);
    let resp = mock.service().oneshot(req).await.unwrap();
    resp.into_body().collect().await.unwrap().to_bytes()
}

fn without_ids(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("id");
        o.remove("created");
    }
    v
}

#[tokio::test]
async fn serves_json_like_the_service() {
    let mock = MockProvider::default();
    let server = mock.serve_local().await.unwrap();
    let port = server.addr().port();
    assert_eq!(server.base_url(), format!("http://127.0.0.1:{port}/v1"));
    assert!(server.addr().ip().is_loopback());

    let body = simple("mock-small", "over the wire");
    let resp = post(&server, &body).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(resp.headers().get("content-length").is_some());
    let wire: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let last = mock.last_request().unwrap();
    assert_eq!(last.body, body.to_string());
    assert_eq!(last.headers["authorization"], "Bearer sk-test");
    let local: Value = serde_json::from_slice(&in_process(&mock, &body).await).unwrap();
    assert_eq!(without_ids(wire), without_ids(local));
    assert_eq!(mock.calls("mock-small"), 2);
}

#[tokio::test]
async fn serves_streams_over_http() {
    let mock = MockProvider::default();
    let server = mock.serve_local().await.unwrap();
    let mut body = simple("m", "stream it");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = post(&server, &body).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let wire = resp.into_body().collect().await.unwrap().to_bytes();
    let local = in_process(&mock, &body).await;
    let strip = |b: &Bytes| -> Vec<Value> {
        events(b)
            .iter()
            .filter(|e| *e != "[DONE]")
            .map(|e| without_ids(serde_json::from_str(e).unwrap()))
            .collect()
    };
    assert_eq!(strip(&wire), strip(&local));
    assert_eq!(events(&wire).last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn other_routes_and_auth_over_http() {
    let mock = MockProvider::new(MockConfig {
        require_api_key: Some("sk-test".into()),
        ..Default::default()
    });
    let server = mock.serve_local().await.unwrap();
    let req = Request::get(format!("{}/models", server.base_url()))
        .header("authorization", "Bearer sk-test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let req = Request::get(format!("http://{}/nope", server.addr()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["error"]["message"], "Invalid URL (GET /nope)");
    // Authenticated chat works (post() sends the key).
    assert_eq!(
        post(&server, &simple("m", "x")).await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn faults_over_http() {
    let mock = MockProvider::default();
    let server = mock.serve_local().await.unwrap();
    mock.set_fault(None, Fault::rate_limited(Duration::from_millis(2500)));
    let resp = post(&server, &simple("m", "x")).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "3");
    assert_eq!(resp.headers()["retry-after-ms"], "2500");

    // A cut stream: the client sees a body error and no [DONE].
    mock.set_fault(None, Fault::cut_after(2));
    let mut body = simple("m", "x");
    body["stream"] = json!(true);
    let resp = post(&server, &body).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut b = resp.into_body();
    let mut got = Vec::new();
    let err = loop {
        match b.frame().await {
            Some(Ok(f)) => got.extend_from_slice(&f.into_data().unwrap()),
            Some(Err(e)) => break Some(e),
            None => break None,
        }
    };
    assert!(err.is_some(), "the body should fail");
    // The two events before the cut arrived, then nothing.
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("data: ").count(), 2, "{text}");
    assert!(!text.contains("[DONE]"));

    // A cut JSON body: half of it, then an error.
    let resp = post(&server, &simple("m", "x")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.into_body().collect().await.is_err());

    // A reset: the client gets an error, not a response.
    mock.set_fault(None, Fault::reset());
    assert!(post(&server, &simple("m", "x")).await.is_err());
}

#[tokio::test]
async fn reset_closes_the_connection_without_a_response() {
    let mock = MockProvider::default();
    mock.set_fault(None, Fault::reset());
    let server = mock.serve_local().await.unwrap();
    let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let body = simple("m", "x").to_string();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
        body.len(),
        body
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got))
        .await
        .expect("the server should close the connection");
    // Either a clean close or a reset, but never a byte of response.
    match read {
        Ok(n) => assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&got)),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
    assert!(got.is_empty());
    assert_eq!(mock.calls("m"), 1);
}

#[tokio::test]
async fn raw_http11_keep_alive_answers() {
    let mock = MockProvider::default();
    let server = mock.serve_local().await.unwrap();
    let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let body = simple("m", "x").to_string();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n{}",
        body.len(),
        body
    );
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..2 {
        tcp.write_all(req.as_bytes()).await.unwrap();
        let n = tcp.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("chat.completion"), "{text}");
    }
    assert_eq!(mock.calls("m"), 2);
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let mock = MockProvider::default();
    let server = mock.serve_local().await.unwrap();
    let addr = server.addr();
    assert_eq!(
        post(&server, &simple("m", "x")).await.unwrap().status(),
        200
    );
    server.shutdown_and_wait().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    // Dropping works too (the listener closes on the runtime shortly after).
    let server = mock.serve_local().await.unwrap();
    let addr = server.addr();
    drop(server);
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused);
}

#[tokio::test]
async fn serve_on_a_given_address() {
    let mock = MockProvider::default();
    let server = mock.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert_ne!(server.addr().port(), 0);
    // The port is taken now.
    assert!(mock.serve(server.addr()).await.is_err());
    server.shutdown();
}
