//! Hot-path microbenchmarks of the core contract: parsing at the edge, rewriting for upstream,
//! and the response tap.
//!
//! `cargo bench -p rampart-core`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use rampart_core::tap::{TapOptions, tap_body};
use rampart_core::{Body, ChatRequest, Completion};

fn main() {
    divan::main();
}

fn request(content_bytes: usize) -> Bytes {
    let text = "lorem ipsum dolor sit amet ".repeat(content_bytes / 27 + 1);
    let text = &text[..content_bytes];
    Bytes::from(format!(
        r#"{{"model":"gpt-4.1","temperature":0,"max_tokens":256,"stream":false,"messages":[{{"role":"system","content":"You are terse."}},{{"role":"user","content":"{text}"}}],"metadata":{{"team":"search"}}}}"#
    ))
}

#[divan::bench(args = [1_000, 100_000])]
fn parse(bencher: divan::Bencher, size: usize) {
    let raw = request(size);
    bencher.bench(|| ChatRequest::parse(divan::black_box(raw.clone())).unwrap());
}

#[divan::bench(args = [1_000, 100_000])]
fn rewrite_model_and_serialise(bencher: divan::Bencher, size: usize) {
    let chat = ChatRequest::parse(request(size)).unwrap();
    bencher.bench(|| chat.with_model("gpt-4.1-2025-04-14").to_bytes());
}

const CHUNK: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"},\"finish_reason\":null}],\"usage\":null}\n\n";
const LAST: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\ndata: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4.1\",\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":25,\"total_tokens\":45}}\n\ndata: [DONE]\n\n";

fn stream_body() -> Body {
    let frames = (0..25)
        .map(|_| {
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(
                CHUNK.as_bytes(),
            )))
        })
        .chain(std::iter::once(Ok(http_body::Frame::data(
            Bytes::from_static(LAST.as_bytes()),
        ))));
    Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(
        frames,
    )))
}

/// The same stream without the tap: the baseline the tap's cost is read against.
#[divan::bench]
fn untapped_stream_25_chunks(bencher: divan::Bencher) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    bencher.bench(|| rt.block_on(stream_body().collect()).unwrap());
}

/// A 25-chunk stream through the tap (per stream; divide by 27 frames for per-chunk cost),
/// forwarding untouched and hiding the usage chunk.
#[divan::bench(args = [false, true])]
fn tap_stream_25_chunks(bencher: divan::Bencher, hide_usage: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    bencher.bench(|| {
        let frames = (0..25)
            .map(|_| {
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(
                    CHUNK.as_bytes(),
                )))
            })
            .chain(std::iter::once(Ok(http_body::Frame::data(
                Bytes::from_static(LAST.as_bytes()),
            ))));
        let body = Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )));
        let c = Completion::new();
        let tapped = tap_body(
            body,
            c.clone(),
            TapOptions {
                sse: true,
                status: StatusCode::OK,
                hide_usage_chunk: hide_usage,
            },
        );
        rt.block_on(tapped.collect()).unwrap();
        assert!(c.is_resolved());
    });
}
