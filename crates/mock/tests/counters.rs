//! Call counters and the recorded last request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use common::{call, chat, simple};
use http::StatusCode;
use rampart_mock::{Fault, MockProvider};

#[tokio::test]
async fn counts_per_model_and_in_total() {
    let mock = MockProvider::default();
    assert_eq!(mock.calls("a"), 0);
    assert_eq!(mock.total_calls(), 0);
    for _ in 0..3 {
        call(&mock, chat(&simple("a", "x"))).await.unwrap();
    }
    call(&mock, chat(&simple("b", "x"))).await.unwrap();
    // Faulted requests are counted too.
    mock.set_fault(
        Some("b"),
        Fault::status_code(StatusCode::INTERNAL_SERVER_ERROR),
    );
    call(&mock, chat(&simple("b", "x"))).await.unwrap();
    mock.set_fault(Some("b"), Fault::reset());
    call(&mock, chat(&simple("b", "x"))).await.unwrap_err();
    assert_eq!(mock.calls("a"), 3);
    assert_eq!(mock.calls("b"), 3);
    assert_eq!(mock.calls("c"), 0);
    assert_eq!(mock.total_calls(), 6);

    // Clones share the counters.
    let clone = mock.clone();
    call(&clone, chat(&simple("a", "x"))).await.unwrap();
    assert_eq!(mock.calls("a"), 4);

    mock.reset_counters();
    assert_eq!(mock.calls("a"), 0);
    assert_eq!(mock.calls("b"), 0);
    assert_eq!(mock.total_calls(), 0);
    assert!(mock.last_request().is_none());
    call(&mock, chat(&simple("a", "x"))).await.unwrap();
    assert_eq!(mock.calls("a"), 1);
    assert_eq!(mock.total_calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_exact_under_concurrency() {
    let mock = MockProvider::default();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let mock = mock.clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    let model = if t % 2 == 0 { "even" } else { "odd" };
                    call(&mock, chat(&simple(model, "x"))).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(mock.calls("even"), 400);
    assert_eq!(mock.calls("odd"), 400);
    assert_eq!(mock.total_calls(), 800);
}

#[tokio::test]
async fn last_request_has_headers_and_body() {
    let mock = MockProvider::default();
    assert!(mock.last_request().is_none());
    let body = simple("m", "first");
    call(&mock, chat(&body)).await.unwrap();
    let mut req = chat(&simple("m", "second"));
    req.headers_mut().insert("x-custom", "yes".parse().unwrap());
    req.headers_mut()
        .insert("authorization", "Bearer sk-up".parse().unwrap());
    call(&mock, req).await.unwrap();
    let last = mock.last_request().unwrap();
    assert_eq!(last.headers["x-custom"], "yes");
    assert_eq!(last.headers["authorization"], "Bearer sk-up");
    assert_eq!(last.headers["content-type"], "application/json");
    assert_eq!(last.body, simple("m", "second").to_string());
    assert_eq!(last.json().unwrap()["messages"][0]["content"], "second");
}
